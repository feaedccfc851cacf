"""Scheduled aggregate reports through the real daemons (``fedstat poc``: a coordinator and three
site agents as separate processes over mutual TLS):

- a schedule that runs every minute leaves two successive reports, the second showing the change
  after a site's data grew (its agent restarted on a bigger copy of its dataset); the numbers in
  the report are checked against the two runs' ``.afreq`` files, which are plink2's on the pooled
  data;
- a ``--privacy dp`` schedule whose second run would exceed one site's budget is refused there,
  and its report says which site refused and why (through the ``fedstat`` command).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main
from fedstat.client import Client
from fedstat.jobs import JobSpec

SITES = ("AFR", "EUR", "EAS")
BEFORE, AFTER = {"AFR": 150, "EUR": 120, "EAS": 130}, {"AFR": 150, "EUR": 210, "EAS": 130}
PLINK2 = "/usr/bin/plink2"


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory):
    """The poc workspace, the original data and a copy where EUR has more participants (the same
    seed: the same variants, and the same data at AFR and EAS)."""
    from fedstat.simulate import simulate_consortium

    root = tmp_path_factory.mktemp("schedule")
    formats = {"AFR": "bed", "EUR": "pgen", "EAS": "bed"}
    original = simulate_consortium(root / "data", sites=BEFORE, n_variants=400, seed=5, formats=formats)
    simulate_consortium(root / "grown", sites=AFTER, n_variants=400, seed=5, formats=formats)
    ws = poc.prepare(root / "ws", {s: original.site_dir(s) for s in SITES}, check=False)
    for s in SITES:  # EAS keeps the default DP budget (ε = 10 at δ = 1e-6); the others have plenty
        site_toml = ws / "sites" / s / "site.toml"
        budget = "" if s == "EAS" else "dp_epsilon_total = 1000\n"
        site_toml.write_text(site_toml.read_text() + budget)
    poc.start(ws)
    try:
        yield ws, root
    finally:
        poc.stop(ws)


def _plink2_afreq(pooled: Path, out: Path) -> Path:
    subprocess.run(
        [PLINK2, "--pfile", str(pooled / "genotypes"), "--freq", "--threads", "1", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out.with_suffix(".afreq")


def _afreq(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return [r[1] for r in rows], np.array([float(r[4]) for r in rows]), np.array([int(r[5]) for r in rows])


def _reports(c: Client, schedule: str, n: int, timeout: float) -> list:
    """The schedule's first ``n`` finished reports, oldest first, waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        done = [r for r in reversed(c.reports(schedule=schedule)) if r.state not in ("PENDING", "RUNNING")]
        if len(done) >= n:
            return [c.report(r.report_id) for r in done[:n]]
        assert time.monotonic() < deadline, f"{len(done)} report(s) of {schedule} after {timeout} s"
        time.sleep(0.5)


def _when(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def test_schedule_every_minute__second_report_shows_the_growth_of_a_site(consortium, tmp_path):
    ws, root = consortium
    with Client.from_profile(ws / "analyst.toml") as c:
        c.add_schedule("minutely-afreq", "* * * * *", JobSpec(analyses=("freq",), privacy="secagg", out_name="af"))
        (first,) = _reports(c, "minutely-afreq", 1, timeout=90)
        # EUR's data grows: its agent is pointed at the bigger copy and restarted, so it reloads
        site_toml = ws / "sites" / "EUR" / "site.toml"
        site_toml.write_text(site_toml.read_text().replace(str(root / "data" / "EUR"), str(root / "grown" / "EUR")))
        poc.restart(ws, "EUR")
        deadline = time.monotonic() + 30
        while "EUR" not in {s.site for s in c.sites()}:
            assert time.monotonic() < deadline, "EUR did not reconnect"
            time.sleep(0.2)
        first, second = _reports(c, "minutely-afreq", 2, timeout=90)
        c.remove_schedule("minutely-afreq")
        files = {r.job_id: c.fetch_results(r.job_id, tmp_path / r.job_id) for r in (first, second)}
    one, two = json.loads(first.json), json.loads(second.json)
    assert (first.state, second.state, first.trigger, second.trigger) == ("DONE", "DONE", "schedule", "schedule")
    assert _when(second.slot) - _when(first.slot) == dt.timedelta(minutes=1)  # successive slots
    assert _when(first.slot).second == 0 and _when(first.fired_at) >= _when(first.slot)

    # each run's .afreq is plink2's on the pooled data of its time, byte for byte
    af1 = next(f for f in files[first.job_id] if f.name == "af.afreq")
    af2 = next(f for f in files[second.job_id] if f.name == "af.afreq")
    assert af1.read_bytes() == _plink2_afreq(root / "data" / "pooled", tmp_path / "p1").read_bytes()
    assert af2.read_bytes() == _plink2_afreq(root / "grown" / "pooled", tmp_path / "p2").read_bytes()

    assert one["previous"] is None and one["participants_total"] == sum(BEFORE.values()) == 400
    assert two["previous"]["report_id"] == first.report_id and two["participants_total"] == 490
    change = two["change"]
    assert change["participants_total"] == {"before": 400, "after": 490, "delta": 90}
    assert change["sites"] == {
        s: {"before": BEFORE[s], "after": AFTER[s], "delta": AFTER[s] - BEFORE[s]} for s in SITES
    }
    assert change["n_variants"] == {"before": 400, "after": 400, "delta": 0}

    ids, f1, n1 = _afreq(af1)
    ids2, f2, n2 = _afreq(af2)
    assert ids == ids2
    moved = ~((f1 == f2) | (np.isnan(f1) & np.isnan(f2)))
    delta = np.abs(f2 - f1)
    k = int(np.nanargmax(delta))
    a = change["afreq"]
    assert a["alt_freq_changed"] == int(moved.sum()) > 200  # EUR's new participants move most frequencies
    assert a["max_abs_delta_alt_freq"] == pytest.approx(delta[k]) and a["max_delta_variant"] == ids[k]
    assert (a["alt_freq_before"], a["alt_freq_after"]) == (f1[k], f2[k])
    assert (a["obs_ct_total_before"], a["obs_ct_total_after"]) == (int(n1.sum()), int(n2.sum()))
    assert n1.max() == 2 * 400 and n2.max() == 2 * 490  # OBS_CT: two alleles per participant
    assert a["obs_ct_changed"] == int((n1 != n2).sum())
    assert "participants: 400 -> 490 (+90)" in second.text and "site EUR: 120 -> 210 (+90)" in second.text
    assert f"ALT_FREQS changed at {int(moved.sum())} of 400 variants; largest |Δ| {delta[k]:.6g} at {ids[k]}" in (
        second.text
    )


def test_schedule_dp__run_over_a_sites_budget_is_refused_and_the_report_says_so(consortium, capsys):
    ws, _ = consortium
    profile = ["--profile", str(ws / "analyst.toml")]
    add = ["schedule", "add", *profile, "--name", "dp-afreq", "--cron", "@yearly", "--freq"]
    assert main([*add, "--privacy", "dp", "--epsilon", "8", "--delta", "1e-6"]) == 0
    assert "schedule dp-afreq added (sch-" in capsys.readouterr().out
    # ε = 8 at δ = 1e-6 is ρ ≈ 1.4 of EAS's ρ ≈ 2.0: the first run fits, the second does not
    assert main(["schedule", "run-now", *profile, "dp-afreq", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "job " in out and "dp (ε=8, δ=1e-06)" in out and "participants: " in out
    assert main(["schedule", "run-now", *profile, "dp-afreq", "--wait"]) == 1
    captured = capsys.readouterr()
    assert "site EAS refused: privacy budget of dataset 'main' exceeded" in captured.out
    assert "run 2 of schedule dp-afreq FAILED: site EAS refused the job: privacy budget" in captured.err

    assert main(["reports", "list", *profile, "--schedule", "dp-afreq"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "FAILED: EAS refused" in lines[0] and " DONE " in lines[1]
    report_id = lines[0].split()[0]
    assert main(["reports", "get", *profile, report_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["state"] == "FAILED" and report["trigger"] == "run-now" and report["run"] == 2
    assert [x["site"] for x in report["refused"]] == ["EAS"]
    assert "privacy budget of dataset 'main' exceeded" in report["refused"][0]["reason"]
    assert report["error"].startswith("site EAS refused the job: privacy budget of dataset 'main' exceeded")
    assert report["dp"] == {"epsilon": 8.0, "delta": 1e-06}
    assert main(["schedule", "remove", *profile, "dp-afreq"]) == 0
