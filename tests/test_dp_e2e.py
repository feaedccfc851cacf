"""--privacy dp with the real agents: noisy but useful counts, the budget charged once per job and
refused when spent, the (ε, δ) in the results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedstat.client import Client
from fedstat.computations import COMPUTATIONS
from fedstat.errors import InputError
from fedstat.jobs import JobSpec
from fedstat.privacy.dpmode import RoundNoise, round_sigma
from tests.conftest import analyst_profile


def _spec(eps: float, **kw) -> JobSpec:
    opts = {"dp_epsilon": repr(eps), "dp_delta": "1e-06"}
    return JobSpec(analyses=("freq",), privacy="dp", out_name="f", options=opts, **kw)


def _afreq(path) -> tuple[np.ndarray, np.ndarray]:
    """(ALT_FREQS, OBS_CT) columns."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return np.array([float(r[4]) for r in rows]), np.array([float(r[5]) for r in rows])


def test_dp__frequencies_are_noisy_but_close_and_provenance_names_the_budget(session_pki, consortium, tmp_path):
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        exact = c.wait(c.submit(JobSpec(analyses=("freq",), privacy="secagg", out_name="f")).job_id)
        c.fetch_results(exact.job_id, tmp_path / "exact")
        job = c.wait(c.submit(_spec(8.0)).job_id)
        c.fetch_results(job.job_id, tmp_path / "dp")
        log = "\n".join(c.get(job.job_id).log)
    (fa, na), (fb, nb) = _afreq(tmp_path / "exact" / "f.afreq"), _afreq(tmp_path / "dp" / "f.afreq")
    assert fa.shape == fb.shape and not np.array_equal(na, nb)  # noise was added
    # OBS_CT = 2 (hom_ref + het + hom_alt): its noise has variance 4 · 3 · σ_total², where each of the 3
    # sites adds σ_site calibrated as if only min_sites = 2 of them were honest
    sigma = round_sigma(RoundNoise(8.0, 1e-6, "allele_counts", fa.size, 2, COMPUTATIONS["allele_counts"].dp))
    expected_sd = 2 * np.sqrt(3) * np.sqrt(3) * sigma
    assert 0.85 < np.std(nb - na) / expected_sd < 1.15
    assert np.all((fb >= 0) & (fb <= 1)) and np.median(np.abs(fa - fb)) < 0.1
    prov = json.loads((tmp_path / "dp" / "f.provenance.json").read_text())
    assert prov["privacy"] == {"mode": "dp", "dp_budget_spent": {"epsilon": 8.0, "delta": 1e-06}}
    # each site checks its budget at the offer and charges it when it first releases (not when another
    # site might still refuse the job)
    assert log.count("differential privacy budget: will charge at its first release ε=8, δ=1e-06") == 3


def test_dp__budget_exhaustion_refuses_the_job_stating_what_remains(session_pki, consortium):
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        # the sites' default budget is ε = 10 at δ = 1e-6, i.e. ρ ≈ 2.0; ε = 8 is ρ ≈ 1.4 (zCDP composes in ρ)
        first = c.wait(c.submit(_spec(8.0)).job_id)
        assert first.state == "DONE"
        second = c.wait(c.submit(_spec(8.0)).job_id, raise_on_failure=False)
    assert second.state == "FAILED"
    assert "refused the job: privacy budget of dataset 'main' exceeded" in second.error
    assert "but only rho=0.4869" in second.error and "remains, i.e. (epsilon=5.14" in second.error


def test_dp__a_job_refused_by_one_site_charges_no_budget_at_the_others(session_pki, consortium, consortium_agents):
    # attack D3: the budget used to be charged at the offer, so any submitter could drain it with jobs
    # another site refuses; now nothing is charged until a site releases
    import dataclasses

    from fedstat.privacy.dp import BudgetLedger, epsilon_to_rho

    _, port = consortium
    eur = consortium_agents["EUR"]
    eur.config = dataclasses.replace(
        eur.config, policy=dataclasses.replace(eur.config.policy, allowed_privacy=("secagg",))
    )
    with Client(analyst_profile(session_pki, port)) as c:
        for _ in range(3):
            job = c.wait(c.submit(_spec(8.0)).job_id, raise_on_failure=False)
            assert job.state == "FAILED" and "site EUR refused the job" in job.error
    afr = consortium_agents["AFR"]
    ledger = BudgetLedger(afr.config.state_dir / "dp-budget.sqlite", total_epsilon=10.0, total_delta=1e-6)
    assert ledger.spent("main").rho == 0.0 and epsilon_to_rho(8.0, 1e-6) > 0


def test_dp__a_retried_attempt_of_a_released_round_is_refused(tmp_path):
    # attack D1: fresh noise for each of 200 attempts of a round let the coordinator average it away
    from site_agent.release_ledger import DifferencingRefused, ReleaseLedger

    ledger = ReleaseLedger(tmp_path / "r.sqlite", min_group=10)
    assert ledger.noisy_round("main", "J1", 1, 0) == 1
    # the same attempt again (a coordinator repeating the round: 30 repeats cut the noise's sd from
    # 181 to 33 in a red-team run) and another attempt are refused
    for attempt in (0, 1):
        with pytest.raises(DifferencingRefused, match="released by this site under differential privacy already"):
            ledger.noisy_round("main", "J1", 1, attempt)
    # each round released is counted (and charged: sequential composition), durably
    assert ReleaseLedger(tmp_path / "r.sqlite", min_group=10).noisy_round("main", "J1", 2, 0) == 2
    ledger.bind_job("main", "J1", "a" * 64)
    ledger.bind_job("main", "J1", "a" * 64)
    with pytest.raises(DifferencingRefused, match="offered to this site before with another spec"):
        ledger.bind_job("main", "J1", "b" * 64)


def test_dp__glm_refused_at_submit():
    spec = JobSpec(
        analyses=("glm",), pheno_names=("QT",), privacy="dp", options={"dp_epsilon": "1", "dp_delta": "1e-6"}
    )
    try:
        spec.validated()
    except InputError as exc:
        assert "--glm cannot run under --privacy dp" in str(exc)
    else:
        raise AssertionError("--glm under dp was accepted")


def test_dp__a_job_with_two_noisy_rounds_is_charged_for_both(session_pki, consortium, consortium_agents):
    # found in review: --geno-counts --model releases two rounds each noised for the job's ε, δ, and
    # was charged one ρ
    from fedstat.privacy.dp import BudgetLedger, epsilon_to_rho

    _, port = consortium
    spec = JobSpec(
        analyses=("geno-counts", "model"),
        pheno_names=("CC",),
        privacy="dp",
        out_name="m",
        options={"dp_epsilon": "1.0", "dp_delta": "1e-06", "require_pheno": "1"},
    )
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(spec).job_id)
    assert job.state == "DONE"
    afr = consortium_agents["AFR"]
    ledger = BudgetLedger(afr.config.state_dir / "dp-budget.sqlite", total_epsilon=10.0, total_delta=1e-6)
    assert ledger.spent("main").rho == pytest.approx(2 * epsilon_to_rho(1.0, 1e-6))
