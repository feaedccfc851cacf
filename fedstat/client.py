"""The analyst's Python API: submit jobs, follow them, fetch results as files or DataFrames.

>>> from fedstat.client import Client
>>> from fedstat.jobs import JobSpec
>>> with Client.from_profile("W/analyst.toml") as c:
...     job = c.submit(JobSpec(analyses=("freq", "hardy"), out_name="run1"))
...     job = c.wait(job.job_id, progress=print)
...     files = c.fetch_results(job.job_id, "results")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import grpc

from fedstat.config import AnalystProfile, load_analyst_profile
from fedstat.errors import JobFailed, ProtocolError
from fedstat.jobs import JobSpec
from fedstat.net import error_from_rpc, secure_channel
from fedstat.protocol import spec_to_pb
from fedstat.wire import analyst_pb2, analyst_pb2_grpc

JobStatus = analyst_pb2.JobStatus


class Client:
    """A mutual-TLS connection to the coordinator's analyst API."""

    def __init__(self, profile: AnalystProfile, *, timeout: float = 30.0):
        self.profile = profile
        self.timeout = timeout
        self._channel = secure_channel(profile.coordinator, profile.tls)
        self._stub = analyst_pb2_grpc.AnalystStub(self._channel)

    @classmethod
    def from_profile(cls, path: str | Path) -> Client:
        return cls(load_analyst_profile(Path(path)))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(self, fn: Callable, request: object, **kw: object):  # type: ignore[no-untyped-def]
        try:
            return fn(request, timeout=kw.pop("timeout", self.timeout), **kw)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, address=self.profile.coordinator) from exc

    def submit(self, spec: JobSpec) -> JobStatus:
        """Submit a job; returns its first status (QUEUED) with the job id."""
        return self._call(self._stub.Submit, analyst_pb2.SubmitRequest(spec=spec_to_pb(spec)))

    def get(self, job_id: str) -> JobStatus:
        return self._call(self._stub.GetJob, analyst_pb2.GetJobRequest(job_id=job_id))

    def list(self, limit: int = 50) -> list[JobStatus]:
        return list(self._call(self._stub.ListJobs, analyst_pb2.ListJobsRequest(limit=limit)).jobs)

    def cancel(self, job_id: str) -> JobStatus:
        return self._call(self._stub.CancelJob, analyst_pb2.CancelJobRequest(job_id=job_id))

    def sites(self) -> list[analyst_pb2.ConnectedSite]:
        return list(self._call(self._stub.ListSites, analyst_pb2.ListSitesRequest()).sites)

    def watch(self, job_id: str) -> Iterator[JobStatus]:
        """Every change of the job's status, until it finishes."""
        try:
            yield from self._stub.WatchJob(analyst_pb2.GetJobRequest(job_id=job_id))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, address=self.profile.coordinator) from exc

    def wait(
        self, job_id: str, *, progress: Callable[[JobStatus], None] | None = None, raise_on_failure: bool = True
    ) -> JobStatus:
        """Block until the job finishes; raises JobFailed with the reason if it did not succeed."""
        status = None
        for status in self.watch(job_id):
            if progress is not None:
                progress(status)
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
        current = None
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
                (out_dir / (current + ".part")).unlink(missing_ok=True)  # type: ignore[operator]
        return written

    def read_table(self, path: str | Path):  # type: ignore[no-untyped-def]
        """A plink2-format result table as a pandas DataFrame (pandas needed)."""
        import pandas as pd  # noqa: PLC0415 - optional dependency

        return pd.read_csv(path, sep="\t", na_values=["NA"])
