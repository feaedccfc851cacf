"""The job protocol against hand-driven site streams over real mTLS: misbehaving and vanishing sites."""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
import types

import grpc
import numpy as np

from fedstat.client import Client
from fedstat.data.variants import VariantTable
from fedstat.jobs import JobSpec
from fedstat.net import secure_channel
from fedstat.privacy.base import RoundContext
from fedstat.privacy.modes import get_mode
from fedstat.protocol import chunk_to_pb
from fedstat.wire import site_pb2, site_pb2_grpc
from site_agent.harmonize import SiteHarmonizer, SiteIdentity
from tests.conftest import analyst_profile, coordinator_config

VARIANTS = VariantTable.from_lists(["1", "1", "2"], [10, 20, 5], ["a", "b", "c"], ["A", "C", "G"], ["G", "T", "A"])


class FakeSite:
    """A site driven by the test: real stream, scripted behaviour."""

    def __init__(
        self,
        session_pki,
        port: int,
        name: str,
        *,
        vanish_in_round: bool | int = False,
        refuse: str = "",
        variants: VariantTable = VARIANTS,
    ):
        self.name, self.vanish_in_round, self.refuse, self.variants = name, vanish_in_round, refuse, variants
        self.params: dict[str, str] = {}  # the round being answered
        self.outbox: queue.Queue = queue.Queue()
        self.outbox.put(site_pb2.SiteMessage(hello=site_pb2.Hello(agent_version="fake")))
        self.channel = secure_channel(f"localhost:{port}", session_pki.tls(name))
        self.call = site_pb2_grpc.SiteGatewayStub(self.channel).Connect(iter(self.outbox.get, None))
        self.seen: list[str] = []
        tls = session_pki.tls(name)
        self.identity = SiteIdentity(
            name=name,
            key_pem=tls.key.read_bytes(),
            cert_pem=tls.cert.read_bytes(),
            ca_pem=tls.ca.read_bytes(),
            revoked=None,
            min_sites=2,
        )
        self.harmonizer: SiteHarmonizer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for msg in self.call:
                kind = msg.WhichOneof("kind")
                self.seen.append(kind)
                if kind == "offer":
                    d = site_pb2.JobDecision(
                        job_id=msg.offer.job_id,
                        accept=not self.refuse,
                        reason=self.refuse,
                        cohort_size=50,
                        n_variants=3,
                    )
                    self.outbox.put(site_pb2.SiteMessage(decision=d))
                    genotypes = types.SimpleNamespace(variants=self.variants, multiallelic_skipped=0)
                    self.harmonizer = SiteHarmonizer(msg.offer.job_id, self.identity, genotypes)
                elif kind in ("keys_request", "harmonize", "intersection"):
                    for out in self.harmonizer.handle(msg):  # the real site's private harmonization
                        self.outbox.put(out)
                elif kind == "round":
                    r = msg.round
                    if self.vanish_in_round is True or self.vanish_in_round == r.round:
                        self.call.cancel()
                        return
                    ctx = RoundContext(r.job_id, r.round, r.attempt, tuple(r.participants))
                    self.params = dict(r.params)
                    for c in self.chunks(ctx):
                        self.outbox.put(
                            site_pb2.SiteMessage(
                                sums=site_pb2.SumsMessage(
                                    job_id=r.job_id, round=r.round, attempt=r.attempt, chunk=chunk_to_pb(c)
                                )
                            )
                        )
                    self.outbox.put(
                        site_pb2.SiteMessage(
                            progress=site_pb2.RoundProgress(
                                job_id=r.job_id,
                                round=r.round,
                                attempt=r.attempt,
                                blocks_done=1,
                                blocks_total=1,
                                finished=True,
                            )
                        )
                    )
        except Exception:  # noqa: BLE001 - the stream ends when the test cancels it
            pass

    def chunks(self, ctx: RoundContext) -> list:
        """The chunks this site sends for a round: genotype counts of the three variants."""
        sums = {
            "hom_ref": np.array([10, 20, 30]),
            "het": np.array([30, 20, 10]),
            "hom_alt": np.array([10, 10, 10]),
            "missing": np.array([0, 0, 0]),
        }
        if self.params.get("dosage") == "1":  # a hard-call site's dosage sums (--freq, --maf)
            sums["dosage_sum"] = (sums["het"] + 2 * sums["hom_alt"]) * 16384
            sums["dosage_obs"] = sums["hom_ref"] + sums["het"] + sums["hom_alt"]
        protector = get_mode("none").protector(ctx, self.name)
        return [c for name, arr in sums.items() for c in protector.protect(name, 0, 3, arr)]

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()
        self.channel.close()


def _wait_connected(coord, names, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while {s.name for s in coord.registry.connected()} != set(names):
        assert time.monotonic() < deadline, "fake sites did not connect"
        time.sleep(0.02)


def test_job__completes_with_scripted_sites_and_sums_are_totals(session_pki, coordinator, tmp_path):
    coord, port = coordinator
    sites = [FakeSite(session_pki, port, n) for n in ("AFR", "EUR")]
    try:
        _wait_connected(coord, ["AFR", "EUR"])
        with Client(analyst_profile(session_pki, port)) as c:
            job = c.wait(c.submit(JobSpec(analyses=("geno-counts",), out_name="g", privacy="none")).job_id)
            files = c.fetch_results(job.job_id, tmp_path)
        rows = [line.split("\t") for line in (tmp_path / "g.gcount").read_text().splitlines()[1:]]
        assert [r[4:7] for r in rows] == [["20", "60", "20"], ["40", "40", "20"], ["60", "20", "20"]]
        assert {f.name for f in files} == {"g.gcount", "g.provenance.json"}
    finally:
        for s in sites:
            s.close()


def test_job__site_vanishing_mid_round_fails_job_naming_the_site(session_pki, coordinator):
    coord, port = coordinator
    sites = [FakeSite(session_pki, port, "AFR"), FakeSite(session_pki, port, "EUR", vanish_in_round=True)]
    try:
        _wait_connected(coord, ["AFR", "EUR"])
        with Client(analyst_profile(session_pki, port)) as c:
            job = c.wait(
                c.submit(JobSpec(analyses=("freq",), out_name="f", privacy="none")).job_id, raise_on_failure=False
            )
        assert job.state == "FAILED"
        assert job.error == (
            "site EUR disconnected during round 1 and did not reconnect within 2 s (1 would remain, min_sites is 3)"
        )
        assert not (coord.config.results_dir / job.job_id).exists()
        assert "cancel" in sites[0].seen  # the remaining site is told to stop
    finally:
        for s in sites:
            s.close()


def test_job__site_vanishing_mid_round_restarts_without_it_above_min_sites(session_pki, tmp_path):
    from coordinator.server import running_coordinator

    cfg = dataclasses.replace(coordinator_config(session_pki, tmp_path), min_sites=2)
    with running_coordinator(cfg) as coord:
        sites = [FakeSite(session_pki, coord.port, n) for n in ("AFR", "EAS")]
        sites.append(FakeSite(session_pki, coord.port, "EUR", vanish_in_round=True))
        try:
            _wait_connected(coord, ["AFR", "EAS", "EUR"])
            with Client(analyst_profile(session_pki, coord.port)) as c:
                job = c.wait(c.submit(JobSpec(analyses=("geno-counts",), out_name="g", privacy="none")).job_id)
                c.fetch_results(job.job_id, tmp_path / "out")
                log = "\n".join(c.get(job.job_id).log)
        finally:
            for s in sites:
                s.close()
    rows = [line.split("\t") for line in (tmp_path / "out" / "g.gcount").read_text().splitlines()[1:]]
    assert [r[4:7] for r in rows] == [["20", "60", "20"], ["40", "40", "20"], ["60", "20", "20"]]  # AFR + EAS
    assert (
        "site EUR disconnected during round 1 and did not reconnect within 2 s; restarting the analysis without it "
        "over AFR, EAS (attempt 1"
    ) in log
    prov = json.loads((tmp_path / "out" / "g.provenance.json").read_text())
    assert sorted(prov["sites"]) == ["AFR", "EAS"]


def test_job__site_vanishing_after_totals_were_released_stops_the_job_instead_of_a_subset_rerun(session_pki, tmp_path):
    # attack C1: a re-run over the remaining sites would give round-1 totals without EUR, and the
    # difference from the released ones is EUR's own sums; the job must stop instead
    from coordinator.server import running_coordinator

    cfg = dataclasses.replace(coordinator_config(session_pki, tmp_path), min_sites=2)
    with running_coordinator(cfg) as coord:
        sites = [FakeSite(session_pki, coord.port, n) for n in ("AFR", "EAS")]
        sites.append(FakeSite(session_pki, coord.port, "EUR", vanish_in_round=2))
        try:
            _wait_connected(coord, ["AFR", "EAS", "EUR"])
            with Client(analyst_profile(session_pki, coord.port)) as c:
                spec = JobSpec(analyses=("geno-counts",), out_name="g", privacy="none", options={"maf": "0.01"})
                job = c.wait(c.submit(spec).job_id, raise_on_failure=False)
                log = "\n".join(c.get(job.job_id).log)
        finally:
            for s in sites:
                s.close()
    assert job.state == "FAILED"
    assert job.error.startswith("site EUR disconnected during round 2 and did not reconnect within 2 s; round totals")
    assert "would reveal its sums by difference" in job.error
    assert "round 1 sums received from all sites" in log and "restarting the analysis" not in log
    assert not (coord.config.results_dir / job.job_id).exists()


def _reconnecting_job(session_pki, tmp_path, variants_after: VariantTable):
    """A geno-counts job over AFR, EAS, EUR where EUR vanishes in round 1 and comes back (within
    the coordinator's 2 s) with ``variants_after``: (job status, its log, its .gcount rows)."""
    from coordinator.server import running_coordinator

    cfg = dataclasses.replace(coordinator_config(session_pki, tmp_path), min_sites=2)
    with running_coordinator(cfg) as coord:
        sites = [FakeSite(session_pki, coord.port, n) for n in ("AFR", "EAS")]
        sites.append(FakeSite(session_pki, coord.port, "EUR", vanish_in_round=1))
        try:
            _wait_connected(coord, ["AFR", "EAS", "EUR"])
            with Client(analyst_profile(session_pki, coord.port)) as c:
                spec = JobSpec(analyses=("geno-counts",), out_name="g", privacy="none", sites=("AFR", "EAS", "EUR"))
                job_id = c.submit(spec).job_id
                sites[2].thread.join(timeout=20)  # EUR vanished in round 1
                sites.append(FakeSite(session_pki, coord.port, "EUR", variants=variants_after))
                job = c.wait(job_id, raise_on_failure=False)
                log = "\n".join(c.get(job_id).log)
                rows = []
                if job.state == "DONE":
                    c.fetch_results(job_id, tmp_path / "out")
                    rows = [r.split("\t") for r in (tmp_path / "out" / "g.gcount").read_text().splitlines()[1:]]
        finally:
            for s in sites:
                s.close()
    return job, log, rows


def test_job__site_reconnecting_is_harmonized_again_and_the_round_retried(session_pki, tmp_path):
    reordered = VARIANTS.take(np.array([2, 0, 1]))  # the same variants in another file order
    job, log, rows = _reconnecting_job(session_pki, tmp_path, reordered)
    assert job.state == "DONE", job.error
    assert "site EUR reconnected and accepted the job again" in log
    assert [r[4:7] for r in rows] == [["30", "90", "30"], ["60", "60", "30"], ["90", "30", "30"]]


def test_job__site_reconnecting_with_other_variants_fails_the_job(session_pki, tmp_path):
    other = VariantTable.from_lists(["1", "1", "2"], [10, 20, 5], ["a", "b2", "c"], ["A", "C", "G"], ["G", "T", "A"])
    job, _, _ = _reconnecting_job(session_pki, tmp_path, other)  # variant 1:20's ID changed
    assert job.state == "FAILED"
    assert job.error == "site EUR's variants changed while the job ran; submit the job again"


def test_job__refusal_reason_reaches_the_analyst(session_pki, coordinator):
    coord, port = coordinator
    sites = [
        FakeSite(session_pki, port, "AFR"),
        FakeSite(session_pki, port, "EAS", refuse="privacy mode 'none' is not accepted here"),
    ]
    try:
        _wait_connected(coord, ["AFR", "EAS"])
        with Client(analyst_profile(session_pki, port)) as c:
            job = c.wait(
                c.submit(JobSpec(analyses=("freq",), out_name="f", privacy="none")).job_id, raise_on_failure=False
            )
        assert job.state == "FAILED"
        assert job.error == "site EAS refused the job: privacy mode 'none' is not accepted here"
        assert {s.site: s.state for s in job.sites} == {"AFR": "CANCELLED", "EAS": "REFUSED"}
    finally:
        for s in sites:
            s.close()


def test_job__cancel_stops_a_job_waiting_on_sites(session_pki, coordinator):
    coord, port = coordinator

    class Silent(FakeSite):
        def _run(self) -> None:  # never answers the offer
            try:
                for msg in self.call:
                    self.seen.append(msg.WhichOneof("kind"))
            except grpc.RpcError:
                pass  # the test closes the stream

    site = Silent(session_pki, port, "AFR")
    try:
        _wait_connected(coord, ["AFR"])
        with Client(analyst_profile(session_pki, port)) as c:
            job_id = c.submit(JobSpec(analyses=("freq",), out_name="f", privacy="none")).job_id
            time.sleep(0.3)
            assert c.cancel(job_id).state == "CANCELLED"
            done = c.wait(job_id, raise_on_failure=False)
        assert done.state == "CANCELLED"
        deadline = time.monotonic() + 5
        while "cancel" not in site.seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert site.seen[:2] == ["welcome", "offer"] and "cancel" in site.seen
    finally:
        site.close()
