"""Counts that leave a site are releases too (issue 14, A3 rest and D2), DP in the privacy layer and
the per-analyst share of a dataset's budget (requirement 6).

- Participant counts pass the site's release gate: coarsened to ``count_granularity`` under exact
  modes, withheld under dp; the job log, status and store show the coarsened figure.
- A3: a binary search over ``--mind`` thresholds sees the same log for 1, 2 and 5 participants
  removed, through the real agents and coordinator.
- D2: two dp jobs (HMB, GRU) differing by one consent exclusion log, store and show the same counts.
- Under dp the protector noises every array by its declared sensitivity, cohort sums included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstat.client import Client
from fedstat.computations import COMPUTATIONS
from fedstat.config import ConfigError, SitePolicy, load_site_config
from fedstat.counts import describe_count
from fedstat.data.dataset import open_dataset
from fedstat.errors import PrivacyError
from fedstat.jobs import JobSpec
from fedstat.privacy import dp
from fedstat.privacy.base import RoundContext
from fedstat.privacy.dp import BudgetExceeded, BudgetLedger
from fedstat.privacy.dpmode import NoisyProtector, RoundNoise, round_sigma
from fedstat.privacy.modes import get_mode
from site_agent.gate import ReleaseGate, count_words, reported_count
from tests.conftest import GWAS, analyst_profile, missing_rates
from tests.test_attacks import LEDGER, _edit_sites, _submit

CTX = RoundContext(job_id="j", round=1, attempt=0, participants=("A", "B", "C"))

# --- the gate's counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected", "words"),
    [(283, 280, "280-289 participants"), (280, 280, "280-289 participants"), (9, 0, "fewer than 10 participants")],
)
def test_reported_count__rounds_down_to_the_granularity(n, expected, words):
    policy = SitePolicy()  # count_granularity defaults to min_group, 10
    assert reported_count(policy, n, noisy=False) == (expected, 10)
    assert count_words(policy, n) == words


def test_reported_count__withheld_under_dp_and_exact_only_at_granularity_one():
    assert reported_count(SitePolicy(), 283, noisy=True) == (0, 0)
    assert count_words(SitePolicy(), 283, noisy=True) == "participants withheld (differential privacy)"
    exact = SitePolicy(count_granularity=1)
    assert reported_count(exact, 283, noisy=False) == (283, 1)
    assert describe_count(283, 1) == "283 participants"
    assert reported_count(SitePolicy(min_group=25), 49, noisy=False) == (25, 25)


def test_site_policy__count_granularity_and_analyst_share_load_and_are_checked(tmp_path):
    def config(policy: str):
        path = tmp_path / "site.toml"
        tls = '[tls]\nca = "ca.pem"\ncert = "s.pem"\nkey = "s.key"\n'
        path.write_text(f'[site]\ncoordinator = "x:1"\n{tls}[[datasets]]\nname = "m"\npath = "d"\n[policy]\n{policy}\n')
        return load_site_config(path)

    p = config("count_granularity = 5\ndp_analyst_share = 0.25").policy
    assert (p.granularity, p.dp_analyst_share) == (5, 0.25)
    assert config("min_group = 20").policy.granularity == 20
    with pytest.raises(ConfigError, match="count_granularity must be positive"):
        config("count_granularity = 0")
    with pytest.raises(ConfigError, match=r"dp_analyst_share must be in \(0, 1\]"):
        config("dp_analyst_share = 1.5")


def test_gate_outgoing__mind_removal_count_is_coarsened_other_arrays_untouched():
    policy = SitePolicy()
    mind, allele_counts = COMPUTATIONS["sample_missing"].count_arrays, COMPUTATIONS["allele_counts"].count_arrays
    removed = ReleaseGate.outgoing(policy, mind, "removed", np.array([7]), noisy=False)
    assert removed.tolist() == [0]
    assert ReleaseGate.outgoing(policy, mind, "removed", np.array([95]), noisy=False).tolist() == [90]
    counts = np.array([5, 3, 1])
    assert ReleaseGate.outgoing(policy, allele_counts, "het", counts, noisy=False) is counts


def test_cohort_fingerprint__equal_for_the_same_cohort_only_and_bound_to_the_job(tmp_path):
    dataset = open_dataset("EUR", GWAS / "EUR", cache_dir=tmp_path / "cache")
    gate, policy = ReleaseGate(tmp_path / "state"), SitePolicy()
    members = np.arange(dataset.genotypes.n_samples)
    first = gate.cohort_fingerprint(dataset, policy, "job1", members)
    assert gate.cohort_fingerprint(dataset, policy, "job1", members[::-1]) == first  # order does not matter
    assert ReleaseGate(tmp_path / "state").cohort_fingerprint(dataset, policy, "job1", members) == first  # restart
    assert gate.cohort_fingerprint(dataset, policy, "job1", members[1:]) != first  # one participant fewer
    assert gate.cohort_fingerprint(dataset, policy, "job2", members) != first  # another job: not comparable
    assert ReleaseGate(tmp_path / "other").cohort_fingerprint(dataset, policy, "job1", members) != first  # site key


# --- DP in the privacy layer ------------------------------------------------------------------


def _noisy(computation: str, n_variants: int, k_min: int = 3) -> NoisyProtector:
    noise = RoundNoise(
        epsilon=1.0,
        delta=1e-6,
        computation=computation,
        n_variants=n_variants,
        k_min=k_min,
        declaration=getattr(COMPUTATIONS.get(computation), "dp", None),
    )
    protector = get_mode("dp").protector(CTX, "A", keys=_secagg_keys(), noise=noise)
    assert isinstance(protector, NoisyProtector)
    return NoisyProtector(get_mode("none").protector(CTX, "A"), noise)  # plaintext inside: the noise is visible


def _secagg_keys():
    from fedstat.privacy.secagg import RoundKeyPair

    return RoundKeyPair(), {peer: RoundKeyPair().public_key for peer in ("B", "C")}


def _sent(protector: NoisyProtector, name: str, values: np.ndarray) -> np.ndarray:
    chunks = list(protector.protect(name, 0, len(values), values))
    return np.concatenate([np.frombuffer(c.data, dtype="<i8") for c in chunks])


def test_noisy_protector__scale_matches_the_calibration_of_every_declared_array():
    d = 2_000
    protector = _noisy("assoc_counts", d)
    # a person is in 2 of the 9 per-variant cells and 1 of the 3 cohort cells: Δ₂² = 2 (2d + 1)
    expected = dp.calibrate_distributed(1.0, 1e-6, sensitivity=math.sqrt(2 * (2 * d + 1)), k_min=3, dimension=9 * d + 3)
    assert protector.sigma == pytest.approx(expected.sigma_site, rel=1e-12)
    assert round_sigma(protector.noise) == protector.sigma
    exact = np.full(d, 50, dtype=np.int64)
    noise = _sent(protector, "case_het", exact) - exact
    assert abs(noise.std() / protector.sigma - 1) < 0.05 and abs(noise.mean()) < 4 * protector.sigma / math.sqrt(d)


def test_noisy_protector__cohort_sums_are_noised_too():
    protector = _noisy("assoc_counts", 100)
    draws = np.array([_sent(protector, "n_ctrl", np.array([279], dtype=np.int64))[0] for _ in range(800)])
    assert abs((draws - 279).std() / protector.sigma - 1) < 0.1
    assert np.mean(draws == 279) < 0.1  # the exact count almost never goes out


def test_noisy_protector__allele_counts_keep_the_scale_of_before():
    d = 500  # one cell per person per variant over 4 arrays, no cohort sums: Δ₂ = √(2d), as before
    expected = dp.calibrate_distributed(1.0, 1e-6, sensitivity=math.sqrt(2 * d), k_min=2, dimension=4 * d)
    assert _noisy("allele_counts", d, k_min=2).sigma == pytest.approx(expected.sigma_site, rel=1e-12)
    # allele_counts_sex: the same counts over one sex (chrX/chrY), declared alike though a dp job
    # leaves X/Y/MT out
    assert {n for n, c in COMPUTATIONS.items() if c.dp is not None} == {
        "allele_counts",
        "allele_counts_sex",
        "assoc_counts",
    }


def test_noisy_protector__undeclared_arrays_and_computations_are_refused():
    protector = _noisy("allele_counts", 10)
    with pytest.raises(PrivacyError, match="array 'dosage' has no declared differential-privacy sensitivity"):
        _sent(protector, "dosage", np.zeros(10, dtype=np.int64))
    with pytest.raises(PrivacyError, match="array 'het' has 11 elements, its DP declaration 10"):
        _sent(protector, "het", np.zeros(11, dtype=np.int64))
    with pytest.raises(PrivacyError, match="not an integer count"):
        _sent(protector, "het", np.zeros(10))
    with pytest.raises(PrivacyError, match="glm_sums sums cannot be released under differential privacy"):
        _noisy("glm_sums", 10)
    with pytest.raises(PrivacyError, match="needs its noise calibration"):
        get_mode("paillier,dp").protector(CTX, "A", keys=None)


# --- per-analyst share -------------------------------------------------------------------------


def test_budget_ledger__an_analyst_who_spent_their_share_is_refused_another_still_can(tmp_path):
    path = tmp_path / "budget.sqlite"
    ledger = BudgetLedger(path, total_rho=1.0, total_delta=1e-6, analyst_share=0.25)
    ledger.charge("main", "a1", 0.2, analyst="alice")
    with pytest.raises(BudgetExceeded, match="analyst alice's share of dataset 'main'") as exc:
        ledger.charge("main", "a2", 0.1, analyst="alice")
    assert "the share is 0.25 of the total (rho=0.25)" in str(exc.value)
    assert "only rho=0.05 of the share remains" in str(exc.value)
    assert exc.value.remaining.rho == pytest.approx(0.05)
    assert ledger.charge("main", "b1", 0.2, analyst="bob").rho_added == pytest.approx(0.2)
    assert ledger.remaining("main", "alice").rho == pytest.approx(0.05)
    assert ledger.remaining("main").rho == pytest.approx(0.6)
    again = BudgetLedger(path, total_rho=1.0, total_delta=1e-6, analyst_share=0.25)  # a restarted site
    with pytest.raises(BudgetExceeded, match="analyst alice's share"):
        again.charge("main", "a3", 0.06, analyst="alice", dry_run=True)
    assert again.charge("main", "a3", 0.05, analyst="alice").rho_added == pytest.approx(0.05)
    assert BudgetLedger(path, total_rho=1.0, total_delta=1e-6).charge("main", "a4", 0.3, analyst="alice")  # share off


def test_budget_ledger__a_ledger_of_an_earlier_version_gains_the_analyst_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE charges (dataset TEXT NOT NULL, job_id TEXT NOT NULL, rho REAL NOT NULL, "
            "first_at TEXT NOT NULL, last_at TEXT NOT NULL, PRIMARY KEY (dataset, job_id))"
        )
        con.execute("INSERT INTO charges VALUES ('main', 'old', 0.5, 'x', 'x')")
    ledger = BudgetLedger(path, total_rho=1.0, total_delta=1e-6, analyst_share=0.5)
    assert ledger.spent("main").rho == pytest.approx(0.5)
    ledger.charge("main", "new", 0.5, analyst="alice")  # the old charge names no analyst


# --- through the real agents and coordinator ---------------------------------------------------


def _log(port: int, session_pki, job_id: str) -> list[str]:
    with Client(analyst_profile(session_pki, port)) as c:
        return [line.split(" ", 1)[1] for line in c.get(job_id).log]


def test_a3_mind_binary_search__the_released_counts_do_not_tell_one_removed_from_five(
    session_pki, consortium, consortium_agents, tmp_path
):
    _, port = consortium
    n_samples, rates = missing_rates("EUR", tmp_path / "cache")
    assert n_samples == 260 and rates[0] > rates[1] > rates[2] and rates[4] > rates[5]
    seen = {}
    for k in (1, 2, 5):  # thresholds an attacker's search would try: they remove 1, 2 and 5 at EUR
        threshold = float((rates[k - 1] + rates[k]) / 2)
        job = _submit(port, session_pki, JobSpec(analyses=("freq",), out_name="m", options={"mind": repr(threshold)}))
        log = _log(port, session_pki, job.job_id)
        seen[k] = sorted(line for line in log if line.startswith("site ") and " participants" in line)
        assert "site EUR: after --mind, 250-259 participants remain (before: 260-269 participants)" in seen[k]
        if k == 1:  # the pooled count of the --mind round's sums: EUR's 1, rounded down by its gate
            assert f"--mind {threshold:g}: 0 participants removed due to missing genotype data" in " ".join(log)
        else:  # with the first job's release, these would single out fewer than 10 participants
            assert job.state == "FAILED" and job.error.startswith("site EUR: allele_counts: " + LEDGER)
    assert len(seen[1]) == 6 and seen[1] == seen[2] == seen[5]  # three accepted lines, three after --mind
    with Client(analyst_profile(session_pki, port)) as c:
        eur = next(s for s in c.get(job.job_id).sites if s.site == "EUR")
    assert (eur.cohort_size, eur.count_granularity) == (250, 10)  # status: after --mind, coarsened


def test_d2_two_dp_jobs_differing_by_one_consent_exclusion_show_the_same_counts(
    session_pki, consortium, consortium_agents, tmp_path
):
    coord, port = consortium

    def consent(site, header, rows):
        # at AFR one control consented to health/medical research only; a GRU job leaves them out
        control = next(i for i, r in enumerate(rows) if r[header.index("CC")] == "1")
        return [*header, "consent"], [
            [*r, "HMB" if site == "AFR" and i == control else "GRU"] for i, r in enumerate(rows)
        ]

    _edit_sites(coord, consortium_agents, tmp_path, consent)
    dp_opts = {"dp_epsilon": "1", "dp_delta": "1e-6", "require_pheno": "1"}
    spec = dict(analyses=("assoc",), pheno_names=("CC",), privacy="dp", out_name="a", options=dp_opts)
    hmb = _submit(port, session_pki, JobSpec(purpose="HMB", **spec))
    gru = _submit(port, session_pki, JobSpec(purpose="GRU", **spec))
    assert hmb.state == "DONE", hmb.error
    logs = [sorted(line for line in _log(port, session_pki, j.job_id) if "accepted" in line) for j in (hmb, gru)]
    assert len(logs[0]) == 3 and logs[0] == logs[1]
    assert all("participants withheld (differential privacy)" in line for line in logs[0])
    assert not any("excluded by consent" in line for line in logs[0])
    with Client(analyst_profile(session_pki, port)) as c:
        shown = [[(s.cohort_size, s.count_granularity) for s in c.get(j.job_id).sites] for j in (hmb, gru)]
    assert shown[0] == shown[1] == [(0, 0)] * 3  # status and store: nothing to compare
    stored = [[(s.cohort_size, s.count_granularity) for s in coord.store.get_job(j.job_id).sites] for j in (hmb, gru)]
    assert stored[0] == stored[1] == [(0, 0)] * 3
    assert gru.state == "FAILED" and LEDGER in gru.error  # and the ledger still blocks the differencing release


def test_dp_analyst_share__alice_runs_out_of_her_share_bob_still_can(session_pki, consortium, consortium_agents):
    import dataclasses

    _, port = consortium
    for agent in consortium_agents.values():
        agent.config = dataclasses.replace(
            agent.config, policy=dataclasses.replace(agent.config.policy, dp_analyst_share=0.25)
        )
    total = dp.epsilon_to_rho(10.0, 1e-6)  # the default budget: ε = 10 at δ = 1e-6
    epsilon = dp.rho_to_epsilon(0.2 * total, 1e-6)  # a job spending a fifth of it

    def run(analyst: str):
        spec = JobSpec(
            analyses=("freq",), privacy="dp", out_name="f", options={"dp_epsilon": repr(epsilon), "dp_delta": "1e-6"}
        )
        with Client(analyst_profile(session_pki, port, analyst)) as c:
            return c.wait(c.submit(spec).job_id, raise_on_failure=False)

    assert run("alice").state == "DONE"
    second = run("alice")  # 0.4 of the budget would exceed her share of 0.25
    assert second.state == "FAILED"
    assert "refused the job: analyst alice's share of dataset 'main''s privacy budget is exhausted" in second.error
    assert "the share is 0.25 of the total" in second.error and "of the share remains" in second.error
    assert run("bob").state == "DONE"  # bob's share is his own
