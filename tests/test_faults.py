"""Jobs survive faults, through the real daemons (``fedstat poc``: a coordinator and three site
agents as separate processes over mutual TLS):

- the coordinator killed with SIGKILL mid-``--glm`` and restarted resumes the job from its last
  completed round, and the results equal an uninterrupted run's byte for byte;
- a site killed with SIGKILL mid-round and restarted reconnects, accepts the job again and the
  round is retried; the results equal an uninterrupted run's;
- a site cut off (SIGSTOP: its connection stays up, it just stops answering) fails the job at the
  round deadline with a reason naming the site;
and afterwards no job is left RUNNING.

To kill "mid-round" deterministically, a site is first frozen with SIGSTOP once the job is past
round 1: the round cannot complete without it, so the fault always lands inside a round.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from fedstat.cli import poc
from fedstat.client import Client
from fedstat.jobs import JobSpec

SITES = ("AFR", "EUR", "EAS")
# --require-pheno: every round of every job here on one cohort (the sites' release ledgers)
GLM = JobSpec(
    analyses=("glm", "freq"),
    pheno_names=("QT", "CC"),
    covar_names=("AGE", "SEX"),
    out_name="g",
    privacy="secagg",
    options={"require_pheno": "1"},
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    from fedstat.simulate import simulate_consortium

    root = tmp_path_factory.mktemp("faults")
    truth = simulate_consortium(
        root / "data",
        sites={s: 300 for s in SITES},
        n_variants=1500,
        seed=11,
        formats={"AFR": "bed", "EUR": "pgen", "EAS": "bed"},
        swap_fraction={"EUR": 0.05},
    )
    ws = poc.prepare(root / "ws", {s: truth.site_dir(s) for s in SITES}, check=False)
    toml = ws / "coordinator" / "coordinator.toml"
    text = toml.read_text().replace("round_timeout_s = 3600", "round_timeout_s = 12")
    toml.write_text(text.replace("site_reconnect_s = 120", "site_reconnect_s = 40"))
    for s in SITES:
        site_toml = ws / "sites" / s / "site.toml"
        site_toml.write_text(site_toml.read_text().replace("block_size = 4096", "block_size = 256"))
    poc.start(ws)
    try:
        yield ws
    finally:
        for s in SITES:
            _signal(ws, s, signal.SIGCONT)
        poc.stop(ws)


def _pid(ws: Path, component: str) -> int:
    return int((ws / "run" / f"{component}.pid").read_text())


def _signal(ws: Path, component: str, sig: signal.Signals) -> None:
    try:
        os.kill(_pid(ws, component), sig)
    except (ProcessLookupError, FileNotFoundError, ValueError):
        pass


def _results(c: Client, job_id: str, out: Path) -> dict[str, bytes]:
    files = c.fetch_results(job_id, out)
    return {f.name: f.read_bytes() for f in files if f.suffix not in (".json", ".html", ".png")}


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory) -> dict[str, bytes]:
    with Client.from_profile(workspace / "analyst.toml") as c:
        job = c.wait(c.submit(GWAS_SPEC).job_id)
        return _results(c, job.job_id, tmp_path_factory.mktemp("reference"))


GWAS_SPEC = GLM


def _freeze_past_round_one(ws: Path, c: Client, job_id: str, site: str) -> int:
    """Wait until the job is in round 2 or later, then freeze ``site``; returns the round."""
    deadline = time.monotonic() + 60
    while True:
        job = c.get(job_id)
        assert job.state in ("QUEUED", "RUNNING"), f"the job ended before the fault: {job.state} {job.error}"
        if job.round >= 2:
            _signal(ws, site, signal.SIGSTOP)
            return int(job.round)
        assert time.monotonic() < deadline, "the job did not reach round 2"
        time.sleep(0.02)


def _no_job_running(ws: Path) -> None:
    with Client.from_profile(ws / "analyst.toml") as c:  # the poc's analyst is also its admin
        st = c.status()
    assert st.jobs_by_state["RUNNING"] == 0 and st.jobs_by_state["QUEUED"] == 0, dict(st.jobs_by_state)


def test_coordinator_sigkill_mid_glm__job_resumes_with_identical_results(workspace, reference, tmp_path):
    import concurrent.futures

    ws = workspace
    with Client.from_profile(ws / "analyst.toml") as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        job_id = c.submit(GWAS_SPEC).job_id
        frozen_in = _freeze_past_round_one(ws, c, job_id, "EUR")
        waiting = pool.submit(c.wait, job_id)  # the analyst keeps waiting across the crash
        time.sleep(0.3)
        poc.restart(ws, poc.COORDINATOR, sig="KILL")  # a crash: no drain, no goodbye to anyone
        _signal(ws, "EUR", signal.SIGCONT)
        job = waiting.result(timeout=120)
        log = "\n".join(c.get(job_id).log)
        results = _results(c, job_id, tmp_path)
    assert job.state == "DONE"
    assert "the coordinator restarted; resuming the job" in log
    resumed = re.search(r"resumed after round (\d+) from the stored totals", log)
    assert resumed is not None, log
    assert 1 <= int(resumed.group(1)) <= frozen_in
    assert results.keys() == reference.keys() and len(results) >= 4
    for name in reference:
        assert results[name] == reference[name], name
    _no_job_running(ws)


def test_site_sigkill_mid_round__site_reconnects_and_round_is_retried(workspace, reference, tmp_path):
    ws = workspace
    with Client.from_profile(ws / "analyst.toml") as c:
        job_id = c.submit(GWAS_SPEC).job_id
        _freeze_past_round_one(ws, c, job_id, "EAS")
        poc.restart(ws, "EAS", sig="KILL", down=1.0)
        job = c.wait(job_id)
        log = "\n".join(c.get(job_id).log)
        results = _results(c, job_id, tmp_path)
    assert job.state == "DONE"
    assert re.search(r"site EAS disconnected during round \d+; waiting up to 40 s for it to reconnect", log), log
    assert "site EAS reconnected and accepted the job again" in log
    assert re.search(r"retrying round \d+ as attempt \d+ \(fresh keys\)", log)
    for name in reference:
        assert results[name] == reference[name], name
    _no_job_running(ws)


def test_site_cut_off__job_fails_at_the_round_deadline_naming_the_site(workspace):
    ws = workspace
    with Client.from_profile(ws / "analyst.toml") as c:
        job_id = c.submit(GWAS_SPEC).job_id
        frozen_in = _freeze_past_round_one(ws, c, job_id, "AFR")
        t0 = time.monotonic()
        try:
            job = c.wait(job_id, raise_on_failure=False)
        finally:
            _signal(ws, "AFR", signal.SIGCONT)
        waited = time.monotonic() - t0
    assert job.state == "FAILED"
    assert re.fullmatch(r"timed out waiting for round (\d+) (sums|keys) from site\(s\) AFR", job.error), job.error
    assert int(re.findall(r"\d+", job.error)[0]) >= frozen_in
    assert waited < 12 + 10  # the round deadline (12 s), not forever
    _no_job_running(ws)


def test_coordinator_sigterm__drains_and_the_job_resumes_after_restart(workspace, reference, tmp_path):
    ws = workspace
    with Client.from_profile(ws / "analyst.toml") as c:
        job_id = c.submit(GWAS_SPEC).job_id
        _freeze_past_round_one(ws, c, job_id, "EUR")
    poc.restart(ws, poc.COORDINATOR, sig="TERM")  # a drain: the job stays RUNNING for the next start
    _signal(ws, "EUR", signal.SIGCONT)
    with Client.from_profile(ws / "analyst.toml") as c:
        job = c.wait(job_id)
        log = "\n".join(c.get(job_id).log)
        results = _results(c, job_id, tmp_path)
    assert job.state == "DONE"
    assert "the coordinator is shutting down; the job resumes when it restarts" in log
    assert "resumed after round" in log
    for name in reference:
        assert results[name] == reference[name], name
    coordinator_log = (ws / "logs" / "coordinator.log").read_text()
    assert "shutting down" in coordinator_log
    _no_job_running(ws)


PIPELINE = JobSpec(
    analyses=("pca", "glm"),
    pheno_names=("QT", "CC"),
    covar_names=("AGE", "SEX", "PC1-PC2"),
    out_name="p",
    privacy="secagg",
    options={"mind": "0.1", "maf": "0.01", "pca": "2", "require_pheno": "1", "covar_variance_standardize": "1"},
)


def _freeze_in_glm(ws: Path, c: Client, job_id: str, site: str) -> None:
    """Freeze ``site`` once the job is past its PC-scores round (the sites hold state from it)."""
    deadline = time.monotonic() + 90
    while not any("glm_describe" in line for line in c.get(job_id).log):
        assert c.get(job_id).state in ("QUEUED", "RUNNING"), c.get(job_id).error
        assert time.monotonic() < deadline, "the job did not reach --glm"
        time.sleep(0.02)
    _signal(ws, site, signal.SIGSTOP)


@pytest.mark.parametrize("victim", ["EAS", "coordinator"])
def test_pipeline_fault_after_pc_scores__sites_recompute_their_state_and_results_are_identical(
    workspace, tmp_path, victim
):
    """A site (or the coordinator) killed after the PC-scores round: a re-offered site starts from its
    original cohort, so the engine runs the --mind and PC-scores rounds again before going on."""
    ws = workspace
    with Client.from_profile(ws / "analyst.toml") as c:
        ref = _results(c, c.wait(c.submit(PIPELINE).job_id).job_id, tmp_path / "ref")
        job_id = c.submit(PIPELINE).job_id
        _freeze_in_glm(ws, c, job_id, "EAS")
        if victim == "coordinator":
            poc.restart(ws, poc.COORDINATOR, sig="KILL")
            _signal(ws, "EAS", signal.SIGCONT)
        else:
            poc.restart(ws, "EAS", sig="KILL", down=1.0)
        job = c.wait(job_id)
        log = "\n".join(c.get(job_id).log)
        results = _results(c, job_id, tmp_path / "run")
    assert job.state == "DONE", job.error
    assert re.search(r"round \d+ \(sample_missing\) run again so every site holds its result", log), log
    assert re.search(r"round \d+ \(pca_scores\) run again so every site holds its result", log), log
    assert set(results) == set(ref) and "p.eigenval" in ref and "p.QT.glm.linear" in ref
    for name in ref:
        assert results[name] == ref[name], name
    _no_job_running(ws)
