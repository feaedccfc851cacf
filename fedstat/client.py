"""The analyst's Python API: submit jobs, follow them, fetch results as files or DataFrames.

>>> from fedstat.client import Client
>>> from fedstat.jobs import JobSpec
>>> with Client.from_profile("W/analyst.toml") as c:
...     job = c.submit(JobSpec(analyses=("freq", "hardy"), out_name="run1"))
...     job = c.wait(job.job_id, progress=print)
...     files = c.fetch_results(job.job_id, "results")
"""

from __future__ import annotations

import gzip
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import grpc

from fedstat.config import AnalystProfile, load_analyst_profile
from fedstat.errors import AuthError, InputError, JobFailed, PrivacyError, ProtocolError, SiteUnavailable
from fedstat.jobs import JobSpec
from fedstat.net import error_from_rpc, secure_channel, server_certificate
from fedstat.pki import RevocationList, sign_statement
from fedstat.privacy.modes import get_mode
from fedstat.privacy.paillier import PUBLIC_KEY_OPTION, AnalystDecryptor
from fedstat.privacy.paillier_crypto import DEFAULT_KEY_BITS, PaillierDecryptor, generate_keypair, public_key_to_bytes
from fedstat.protocol import contribution_from_pb, spec_to_pb
from fedstat.wire import analyst_pb2, analyst_pb2_grpc

if TYPE_CHECKING:
    import pandas as pd

JobStatus = analyst_pb2.JobStatus
FINISHED_STATES = ("DONE", "FAILED", "CANCELLED")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class Client:
    """A mutual-TLS connection to the coordinator's analyst API."""

    def __init__(self, profile: AnalystProfile, *, timeout: float = 30.0):
        self.profile = profile
        self.timeout = timeout
        self._channel = secure_channel(profile.coordinator, profile.tls)
        self._stub = analyst_pb2_grpc.AnalystStub(self._channel)
        self._decryptors: dict[str, AnalystDecryptor] = {}  # --privacy paillier: private keys, by job
        # with a CRL in the profile: revoked coordinators and sites are refused (a stale CRL fails closed)
        self._revocations = RevocationList(profile.tls.crl, profile.tls.ca) if profile.tls.crl is not None else None
        if self._revocations is not None:
            self._check_coordinator(self._revocations)

    def _check_coordinator(self, revocations: RevocationList) -> None:
        """Refuse a coordinator whose certificate the consortium revoked before sending it anything."""
        import ssl  # noqa: PLC0415

        try:
            pem = server_certificate(self.profile.coordinator, self.profile.tls)
        except (OSError, ssl.SSLError) as exc:
            self._channel.close()
            raise SiteUnavailable(f"TLS handshake with {self.profile.coordinator} failed: {exc}") from exc
        if revocations.is_revoked_pem(pem):
            self._channel.close()
            raise AuthError(f"the coordinator at {self.profile.coordinator} presents a revoked certificate")

    @classmethod
    def from_profile(cls, path: str | Path) -> Client:
        return cls(load_analyst_profile(Path(path)))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(self, fn: grpc.UnaryUnaryMultiCallable[_Request, _Response], request: _Request) -> _Response:
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, address=self.profile.coordinator) from exc

    def submit(self, spec: JobSpec, *, paillier_bits: int = DEFAULT_KEY_BITS) -> JobStatus:
        """Submit a job; returns its first status (QUEUED) with the job id.

        With ``privacy="paillier"`` (or ``"paillier,dp"``) this client generates the job's key pair
        (``paillier_bits``: 2048 or 3072), sends only the public key, and keeps the private key in
        memory: the job needs this client's :meth:`wait` (or :meth:`run`) to decrypt its totals.
        """
        decryptor = None
        if get_mode(spec.privacy).needs_public_key and not spec.options.get(PUBLIC_KEY_OPTION):
            public_key, private_key = generate_keypair(paillier_bits)
            options = {**spec.options, PUBLIC_KEY_OPTION: public_key_to_bytes(public_key).decode()}
            spec = replace(spec, options=options)
            decryptor = PaillierDecryptor(private_key)
        spec = spec.validated()  # what the coordinator stores and every site sees: signed as such
        request = analyst_pb2.SubmitRequest(spec=spec_to_pb(spec), spec_signature=self._sign(spec))
        status = self._call(self._stub.Submit, request)
        if decryptor is not None:
            ca_pem, _, _ = self.profile.tls.load()
            self._decryptors[status.job_id] = AnalystDecryptor(
                status.job_id,
                decryptor,
                ca_pem=ca_pem,  # each site's signed contribution is checked against the consortium CA
                sites=spec.sites,  # and the participants against the sites this analyst signed, if named
                revoked=self._revocations.is_revoked if self._revocations is not None else None,
            )
        return status

    def _sign(self, spec: JobSpec) -> bytes:
        """This analyst's signature of the job spec: sites run only jobs their analyst signed."""
        _, _, key_pem = self.profile.tls.load()
        return sign_statement(key_pem, spec.signing_bytes())

    def _serve_decryption(self, decryptor: AnalystDecryptor, stop: threading.Event) -> None:
        """Answer the coordinator's decryption requests for one job until the job ends; attach
        again when the stream breaks (a coordinator restart) while the job goes on."""
        while not stop.is_set():
            self._decryption_stream(decryptor, stop)
            stop.wait(1.0)

    def _decryption_stream(self, decryptor: AnalystDecryptor, stop: threading.Event) -> None:
        replies: queue.Queue[analyst_pb2.DecryptReply | None] = queue.Queue()
        replies.put(analyst_pb2.DecryptReply(job_id=decryptor.job_id))
        call = self._stub.Decrypt(iter(replies.get, None))
        ended = threading.Event()

        def cancel_when_done() -> None:
            _first_set(stop, ended)
            call.cancel()

        threading.Thread(target=cancel_when_done, daemon=True).start()
        try:
            for req in call:
                reply = analyst_pb2.DecryptReply(
                    job_id=req.job_id, round=req.round, attempt=req.attempt, name=req.name, first=req.first
                )
                try:
                    words = decryptor.decrypt(
                        job_id=req.job_id,
                        round_no=req.round,
                        attempt=req.attempt,
                        name=req.name,
                        first=req.first,
                        summands=req.summands,
                        data=req.ciphertexts,
                        contributions=[contribution_from_pb(c) for c in req.contributions],
                    )
                    reply.words = words.astype("<u8", copy=False).tobytes()
                except PrivacyError as exc:
                    reply.error = str(exc)
                replies.put(reply)
        except grpc.RpcError:
            pass  # the job ended, the client stopped waiting, or the coordinator went away
        finally:
            replies.put(None)
            ended.set()

    def get(self, job_id: str) -> JobStatus:
        return self._call(self._stub.GetJob, analyst_pb2.GetJobRequest(job_id=job_id))

    def list_jobs(self, limit: int = 50, *, all_analysts: bool = False, state: str = "") -> list[JobStatus]:
        """Your jobs, newest first (every analyst's with ``all_analysts``: role view-all)."""
        request = analyst_pb2.ListJobsRequest(limit=limit, all_analysts=all_analysts, state=state)
        return list(self._call(self._stub.ListJobs, request).jobs)

    def status(self) -> analyst_pb2.StatusResponse:
        """The coordinator's sites, jobs by state and round latencies (role admin)."""
        return self._call(self._stub.Status, analyst_pb2.StatusRequest())

    def whoami(self) -> analyst_pb2.WhoAmIResponse:
        return self._call(self._stub.WhoAmI, analyst_pb2.WhoAmIRequest())

    # --- scheduled reports ----------------------------------------------------------------

    def add_schedule(self, name: str, cron: str, spec: JobSpec) -> analyst_pb2.Schedule:
        """Run ``spec`` as a job at every slot of ``cron`` (UTC, e.g. ``"0 6 * * MON"``), as you."""
        spec = spec.validated()
        request = analyst_pb2.AddScheduleRequest(
            name=name, cron=cron, spec=spec_to_pb(spec), spec_signature=self._sign(spec)
        )
        return self._call(self._stub.AddSchedule, request)

    def schedules(self, *, all_analysts: bool = False) -> list[analyst_pb2.Schedule]:
        request = analyst_pb2.ListSchedulesRequest(all_analysts=all_analysts)
        return list(self._call(self._stub.ListSchedules, request).schedules)

    def remove_schedule(self, schedule: str) -> analyst_pb2.Schedule:
        """Remove a schedule (name or id); its reports stay."""
        return self._call(self._stub.RemoveSchedule, analyst_pb2.ScheduleRef(schedule=schedule))

    def run_schedule_now(self, schedule: str) -> analyst_pb2.Report:
        """Start a run of a schedule (name or id) now; returns the pending report (its job id)."""
        return self._call(self._stub.RunScheduleNow, analyst_pb2.ScheduleRef(schedule=schedule))

    def reports(self, *, schedule: str = "", all_analysts: bool = False, limit: int = 50) -> list[analyst_pb2.Report]:
        """Reports newest first, with a one-line summary each (the text with :meth:`report`)."""
        request = analyst_pb2.ListReportsRequest(schedule=schedule, all_analysts=all_analysts, limit=limit)
        return list(self._call(self._stub.ListReports, request).reports)

    def report(self, report_id: str) -> analyst_pb2.Report:
        """One report, with its text and its JSON document (``json.loads(r.json)``)."""
        return self._call(self._stub.GetReport, analyst_pb2.GetReportRequest(report_id=report_id))

    def cancel(self, job_id: str) -> JobStatus:
        return self._call(self._stub.CancelJob, analyst_pb2.CancelJobRequest(job_id=job_id))

    def sites(self) -> list[analyst_pb2.ConnectedSite]:
        return list(self._call(self._stub.ListSites, analyst_pb2.ListSitesRequest()).sites)

    def policies(self, dataset: str = "") -> analyst_pb2.SitePoliciesResponse:
        """Each connected site's disclosure-control settings (for ``dataset``; default: each
        site's default dataset) and the strictest combination, which a job over all of them meets."""
        return self._call(self._stub.SitePolicies, analyst_pb2.SitePoliciesRequest(dataset=dataset))

    def watch(self, job_id: str, *, reconnect_s: float = 300.0) -> Iterator[JobStatus]:
        """Every change of the job's status, until it finishes. If the coordinator goes away (a
        restart), keep trying for ``reconnect_s`` seconds: the job resumes when it is back."""
        down_since: float | None = None
        while True:
            try:
                for status in self._stub.WatchJob(analyst_pb2.GetJobRequest(job_id=job_id)):
                    down_since = None
                    yield status
                    if status.state in FINISHED_STATES:
                        return
                return
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # too many open watches: poll
                    yield from self._poll(job_id)
                    return
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise error_from_rpc(exc, address=self.profile.coordinator) from exc
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > reconnect_s:
                    raise error_from_rpc(exc, address=self.profile.coordinator) from exc
                time.sleep(1.0)

    def _poll(self, job_id: str, every_s: float = 1.0) -> Iterator[JobStatus]:
        last = None
        while True:
            status = self.get(job_id)
            if last is None or status.updated_at != last.updated_at or status.state != last.state:
                yield status
            last = status
            if status.state in FINISHED_STATES:
                return
            time.sleep(every_s)

    def wait(
        self, job_id: str, *, progress: Callable[[JobStatus], None] | None = None, raise_on_failure: bool = True
    ) -> JobStatus:
        """Block until the job finishes; raises JobFailed with the reason if it did not succeed.

        For a Paillier job submitted by this client, also decrypts its round totals meanwhile.
        """
        status = None
        decryptor = self._decryptors.get(job_id)
        stop = threading.Event()
        if decryptor is not None:
            threading.Thread(
                target=self._serve_decryption, args=(decryptor, stop), name=f"decrypt-{job_id}", daemon=True
            ).start()
        try:
            for status in self.watch(job_id):
                if progress is not None:
                    progress(status)
        finally:
            stop.set()
        if decryptor is not None and status is not None and status.state in ("DONE", "FAILED", "CANCELLED"):
            self._decryptors.pop(job_id, None)  # the job is over: forget its private key
        if status is None:
            status = self.get(job_id)
        if raise_on_failure and status.state != "DONE":
            raise JobFailed(f"job {job_id} {status.state}: {status.error or 'no reason recorded'}")
        return status

    def fetch_results(self, job_id: str, out_dir: str | Path) -> list[Path]:
        """Download a finished job's files into ``out_dir``; each file is written whole or not at all."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        current = ""  # the file being written ("" before the first: no file is named "")
        handle = None
        try:
            for chunk in self._stub.FetchResults(analyst_pb2.GetJobRequest(job_id=job_id)):
                name = Path(chunk.file_name).name
                if name != chunk.file_name or name in ("", ".", ".."):
                    raise ProtocolError(f"the coordinator sent an unsafe file name {chunk.file_name!r}")
                if current != name:
                    if handle is not None:
                        raise ProtocolError(f"result file {current} ended early")
                    current = name
                    handle = (out_dir / (name + ".part")).open("wb")
                assert handle is not None
                handle.write(chunk.data)
                if chunk.last:
                    handle.close()
                    handle = None
                    (out_dir / (name + ".part")).replace(out_dir / name)
                    written.append(out_dir / name)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, address=self.profile.coordinator) from exc
        finally:
            if handle is not None:
                handle.close()
                (out_dir / (current + ".part")).unlink(missing_ok=True)
        return written

    def run(
        self,
        spec: JobSpec,
        out_dir: str | Path,
        *,
        progress: Callable[[JobStatus], None] | None = None,
        paillier_bits: int = DEFAULT_KEY_BITS,
    ) -> Results:
        """Submit, wait (calling ``progress`` on every change), fetch the files: the notebook one-liner.

        >>> res = client.run(JobSpec(analyses=("glm",), pheno_names=("QT",), covar_names=("AGE",), out_name="g"), "out")
        >>> res.table("QT.glm.linear").nsmallest(5, "P")
        """
        status = self.wait(self.submit(spec.validated(), paillier_bits=paillier_bits).job_id, progress=progress)
        return Results(status=status, files=self.fetch_results(status.job_id, out_dir))


def _first_set(a: threading.Event, b: threading.Event) -> None:
    while not (a.wait(0.2) or b.is_set()):
        pass


@dataclass(frozen=True)
class Results:
    """A finished job's files, with its tables as pandas DataFrames."""

    status: JobStatus
    files: list[Path]

    @property
    def job_id(self) -> str:
        return self.status.job_id

    def file(self, suffix: str) -> Path:
        """The result file whose name ends with ``suffix`` (e.g. ``"afreq"``, ``"QT.glm.linear"``)."""
        matches = [f for f in self.files if f.name.endswith("." + suffix.lstrip("."))]
        if len(matches) != 1:
            names = ", ".join(f.name for f in self.files)
            raise InputError(f"{len(matches)} result files end with {suffix!r}; files: {names}")
        return matches[0]

    def table(self, suffix: str) -> pd.DataFrame:
        """A plink2- or PLINK 1.9-format table as a DataFrame (``NA``/``nan`` as missing)."""
        return read_table(self.file(suffix))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a result table: plink2's tab-separated files, PLINK 1.9's space-aligned ones, GWAS-SSF."""
    import pandas as pd  # noqa: PLC0415 - only analysts need it

    path = Path(path)
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
        header = f.readline()
    if "\t" in header:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "nan", "#NA"], keep_default_na=True)
    else:
        df = pd.read_csv(path, sep=r"\s+", na_values=["NA", "nan"])
    return df.rename(columns={"#CHROM": "CHROM"})
