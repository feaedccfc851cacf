"""Secure aggregation with the real agents and coordinator: equal results, an eavesdropping
coordinator learns nothing, and a coordinator that substitutes a key is caught."""

from __future__ import annotations

import numpy as np

from coordinator import engine as engine_module
from coordinator.sessions import SiteRegistry
from fedstat.client import Client
from fedstat.jobs import JobSpec
from tests.conftest import analyst_profile


def _run(session_pki, port, tmp_path, spec: JobSpec) -> tuple[str, dict[str, bytes]]:
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(spec).job_id)
        files = c.fetch_results(job.job_id, tmp_path / spec.privacy)
    return job.job_id, {f.name: f.read_bytes() for f in files if not f.name.endswith((".json", ".html", ".png"))}


def _columns(text: bytes) -> list[list[str]]:
    return [line.split("\t") for line in text.decode().splitlines()]


def test_secagg__results_equal_none_mode_including_glm(session_pki, consortium, tmp_path):
    _, port = consortium
    spec = dict(
        analyses=("freq", "hardy", "glm"),
        pheno_names=("QT", "CC"),
        covar_names=("AGE", "SEX"),
        out_name="r",
        options={"require_pheno": "1"},  # one cohort for every round (the sites' release ledgers)
    )
    _, plain = _run(session_pki, port, tmp_path, JobSpec(privacy="none", **spec))
    _, masked = _run(session_pki, port, tmp_path, JobSpec(privacy="secagg", **spec))
    assert sorted(plain) == sorted(masked)
    for name in ("r.afreq", "r.hardy"):  # integer sums: exact in the ring, byte-identical
        assert masked[name] == plain[name], name
    for name in ("r.QT.glm.linear", "r.CC.glm.logistic.hybrid"):
        a, b = _columns(plain[name]), _columns(masked[name])
        assert len(a) == len(b) > 100
        head = a[0]
        for ra, rb in zip(a[1:], b[1:], strict=True):
            for col, x, y in zip(head, ra, rb, strict=True):
                if x == y:
                    continue
                # real sums carry 2^-64 per site: at most a last-printed-digit difference
                assert col in ("BETA", "OR", "SE", "LOG(OR)_SE", "T_STAT", "Z_STAT", "P"), (name, col, x, y)
                assert abs(float(x) - float(y)) <= 1e-5 * abs(float(x)), (name, col, x, y)


def test_secagg__eavesdropping_coordinator_sees_only_uniform_vectors(session_pki, consortium, tmp_path, monkeypatch):
    """Record every sums message the coordinator receives; no site's sums can be read from them."""
    _, port = consortium
    recorded: dict[tuple[str, str], list[np.ndarray]] = {}
    route = SiteRegistry.route

    def recording_route(self, site, msg):
        if msg.WhichOneof("kind") == "sums":
            c = msg.sums.chunk
            recorded.setdefault((site, c.name), []).append(np.frombuffer(c.data, dtype="<u8").copy())
        route(self, site, msg)

    monkeypatch.setattr(SiteRegistry, "route", recording_route)
    _run(session_pki, port, tmp_path, JobSpec(analyses=("geno-counts",), privacy="secagg", out_name="g"))
    # the same job in mode none shows what each site's true sums are
    plain: dict[tuple[str, str], list[np.ndarray]] = {}
    masked, recorded = recorded, plain
    _run(session_pki, port, tmp_path, JobSpec(analyses=("geno-counts",), privacy="none", out_name="g"))
    assert set(masked) == set(plain) and len({s for s, _ in masked}) == 3
    for key, parts in masked.items():
        seen = np.concatenate(parts)
        truth = np.concatenate(plain[key])
        assert seen.size == truth.size >= 800
        assert not np.any(seen == truth), key  # not one element travels in the clear
        bits = np.unpackbits(seen.view(np.uint8))
        assert abs(bits.mean() - 0.5) < 6 * 0.5 / np.sqrt(bits.size), key
        values = truth.view(np.int64).astype(np.float64)
        if values.std() > 0:  # (an all-zero array, e.g. no missing calls, has nothing to correlate with)
            r = np.corrcoef((seen >> np.uint64(11)).astype(np.float64), values)[0, 1]
            assert abs(r) < 6 / np.sqrt(seen.size), key


def test_secagg__coordinator_substituting_a_key_is_detected_and_the_job_aborted(
    session_pki, consortium, tmp_path, monkeypatch
):
    _, port = consortium
    exchange = engine_module._JobRunner.exchange_round_keys

    def substituting(self, ctx):
        keys = exchange(self, ctx)
        keys[1].public_key = bytes(32 * [7])  # the coordinator slips in a key of its own for EAS
        return keys

    monkeypatch.setattr(engine_module._JobRunner, "exchange_round_keys", substituting)
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert job.state == "FAILED"
    # EAS finds its own key altered, AFR and EUR find EAS's signature broken: whoever reports first
    assert "key substitution detected" in job.error and "EAS" in job.error
