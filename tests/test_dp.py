"""The differential-privacy core: zCDP conversions, distributed calibration, sensitivities, noise, ledger.

References are, in turn: closed forms and OpenDP's own zCDP → (ε, δ) conversion and privacy maps;
hand-worked sensitivities and a brute force over every record swap through ``stats.allele``;
statistical checks of the sampler in 6-sigma bands; an SQLite ledger reopened and hammered by threads.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
from pathlib import Path

import numpy as np
import opendp.prelude as opendp
import pytest

from fedstat.errors import InputError, PolicyRefused, PrivacyError
from fedstat.privacy import dp
from fedstat.stats import allele

opendp.enable_features("contrib")

DELTAS = (1e-3, 1e-6, 1e-10)


def _opendp_gaussian(scale: float) -> opendp.Measurement:
    domain = opendp.vector_domain(opendp.atom_domain(T="i64"))
    return opendp.m.make_gaussian(domain, opendp.l2_distance(T="i64"), scale=scale)


# --- conversions --------------------------------------------------------------------------------


def test_rho_to_epsilon__standard_known_value():
    # ρ + 2√(ρ log 1/δ) at ρ = 0.5, δ = 1e-5
    assert dp.rho_to_epsilon(0.5, 1e-5, conversion="standard") == pytest.approx(5.298525912188, rel=1e-12)
    assert dp.rho_to_epsilon(0.0, 1e-5) == 0.0


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0, 50.0])
@pytest.mark.parametrize("delta", DELTAS)
def test_rho_to_epsilon__cks20_matches_opendp(scale, delta):
    meas = _opendp_gaussian(scale)
    rho = meas.map(1)  # OpenDP's own ρ for sensitivity 1
    expected = opendp.c.make_zCDP_to_approxDP(meas).map(1).epsilon(delta)
    assert dp.rho_to_epsilon(rho, delta) == pytest.approx(expected, rel=1e-7)


def test_rho_to_epsilon__cks20_never_above_standard_and_monotone():
    for delta in DELTAS:
        rhos = np.geomspace(1e-8, 1e3, 40)
        cks = [dp.rho_to_epsilon(r, delta) for r in rhos]
        std = [dp.rho_to_epsilon(r, delta, conversion="standard") for r in rhos]
        assert all(c <= s for c, s in zip(cks, std, strict=True))
        assert all(b >= a for a, b in itertools.pairwise(cks))  # 0 while ρ is tiny next to δ (TV ≤ δ)
        assert cks[-1] > cks[0]


@pytest.mark.parametrize("conversion", ["cks20", "standard"])
@pytest.mark.parametrize("epsilon", [1e-6, 0.1, 1.0, 8.0, 100.0])
@pytest.mark.parametrize("delta", DELTAS)
def test_epsilon_to_rho__round_trip_is_tight_and_never_above(conversion, epsilon, delta):
    rho = dp.epsilon_to_rho(epsilon, delta, conversion=conversion)
    back = dp.rho_to_epsilon(rho, delta, conversion=conversion)
    assert back <= epsilon
    assert back == pytest.approx(epsilon, rel=1e-9)


def test_epsilon_to_rho__standard_closed_form_and_tiny_epsilon():
    log_inv = math.log(1e6)
    assert dp.epsilon_to_rho(1.0, 1e-6, conversion="standard") == pytest.approx(
        (math.sqrt(log_inv + 1.0) - math.sqrt(log_inv)) ** 2, rel=1e-12
    )
    # ε ≪ log(1/δ): ρ ≈ ε²/(4 log 1/δ); the naive (√(L+ε) − √L)² would lose every digit here
    eps, log_inv = 1e-12, math.log(1e10)
    assert dp.epsilon_to_rho(eps, 1e-10, conversion="standard") == pytest.approx(eps**2 / (4 * log_inv), rel=1e-9)


def test_epsilon_to_rho__cks20_allows_more_rho_than_standard():
    assert dp.epsilon_to_rho(1.0, 1e-6) > dp.epsilon_to_rho(1.0, 1e-6, conversion="standard")


@pytest.mark.parametrize(
    ("epsilon", "delta", "conversion"),
    [(-1.0, 1e-6, "cks20"), (1.0, 0.0, "cks20"), (1.0, 1.0, "cks20"), (float("nan"), 1e-6, "cks20"), (1.0, 1e-6, "x")],
)
def test_epsilon_to_rho__invalid_arguments_raise(epsilon, delta, conversion):
    with pytest.raises(InputError):
        dp.epsilon_to_rho(epsilon, delta, conversion=conversion)


# --- calibration --------------------------------------------------------------------------------


@pytest.mark.parametrize("k_min", [1, 2, 5, 50])
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 5.0])
def test_calibrate_distributed__meets_target_tightly(k_min, epsilon):
    sens = dp.genotype_count_sensitivity(20_000)
    cal = dp.calibrate_distributed(epsilon, 1e-6, sensitivity=sens, k_min=k_min, dimension=80_000)
    assert cal.rho <= cal.rho_target
    assert cal.epsilon <= epsilon
    assert cal.sigma_total**2 == pytest.approx(k_min * cal.sigma_site**2, rel=1e-12)
    assert cal.sigma_site >= dp.MIN_SITE_SIGMA and not cal.floored
    assert cal.rho == pytest.approx(cal.rho_target, rel=1e-9)
    assert cal.rho == pytest.approx(sens**2 / (2 * cal.sigma_total**2), rel=1e-9)  # ρ = Δ²/(2σ_total²)


def test_calibrate_distributed__floor_of_two_and_rho_actually_achieved():
    cal = dp.calibrate_distributed(10.0, 1e-6, sensitivity=2.0, k_min=4, dimension=1)
    assert cal.floored and cal.sigma_site == 2.0
    assert cal.sigma_total == pytest.approx(4.0)
    assert cal.rho == pytest.approx(2.0**2 / (2 * 4 * 2.0**2), rel=1e-12)  # = 1/8, well below the target
    assert cal.rho < cal.rho_target
    assert cal.epsilon == pytest.approx(dp.rho_to_epsilon(cal.rho, 1e-6))


def test_calibrate_distributed__monotone_in_epsilon_sensitivity_and_sites():
    def sigma(epsilon=1.0, sens=100.0, k=3):
        return dp.calibrate_distributed(epsilon, 1e-6, sensitivity=sens, k_min=k, dimension=100).sigma_site

    by_eps = [sigma(epsilon=e) for e in (0.1, 0.5, 1.0, 2.0, 4.0)]
    assert all(b < a for a, b in itertools.pairwise(by_eps))
    by_sens = [sigma(sens=s) for s in (10.0, 50.0, 100.0, 500.0)]
    assert all(b > a for a, b in itertools.pairwise(by_sens))
    by_k = [sigma(k=k) for k in (1, 2, 4, 8)]
    assert all(b < a for a, b in itertools.pairwise(by_k))
    # the guaranteed total noise, σ_site √k, is what privacy needs: the same for every k
    assert [s * math.sqrt(k) for s, k in zip(by_k, (1, 2, 4, 8), strict=True)] == pytest.approx([by_k[0]] * 4)


def test_calibrate_distributed__single_site_agrees_with_opendp_privacy_map():
    sens = dp.genotype_count_sensitivity(16, arrays=("alt_count",))  # 2√16 = 8, an integer
    cal = dp.calibrate_distributed(0.7, 1e-7, sensitivity=sens, k_min=1, dimension=16)
    assert _opendp_gaussian(cal.sigma_site).map(int(sens)) == pytest.approx(cal.rho, rel=1e-9)


@pytest.mark.parametrize("kwargs", [{"k_min": 0}, {"dimension": 0}, {"sensitivity": -1.0}, {"sensitivity": math.inf}])
def test_calibrate_distributed__invalid_arguments_raise(kwargs):
    args = {"sensitivity": 2.0, "k_min": 2, "dimension": 1} | kwargs
    with pytest.raises(InputError):
        dp.calibrate_distributed(1.0, 1e-6, **args)
    with pytest.raises(InputError):
        dp.calibrate_distributed(0.0, 1e-6, sensitivity=2.0, k_min=2, dimension=1)


def test_distributed_rho__kls21_correction_by_hand():
    # σ = 1/2, n = 2: τ = 10 exp(−2π²·¼·½) = 10 e^{−π²/4}; Δ = d = 1
    tau = 10 * math.exp(-(math.pi**2) / 4)
    bound1 = 1 / (2 * 2 * 0.25) + tau  # Δ²/(2nσ²) + τd = 1 + τ
    bound3 = 0.5 * (1 / (math.sqrt(2) * 0.5) + tau) ** 2
    assert bound1 < bound3
    assert dp.distributed_rho(0.5, sensitivity=1.0, k_min=2, dimension=1) == pytest.approx(bound1, rel=1e-12)


def test_distributed_rho__correction_negligible_at_the_floor_and_absent_for_one_site():
    central = 50.0**2 / (2 * 100 * 2.0**2)
    rho = dp.distributed_rho(2.0, sensitivity=50.0, k_min=100, dimension=10**7)
    assert central < rho < central + 1e-6
    assert dp.distributed_rho(0.3, sensitivity=3.0, k_min=1, dimension=10**9) == 3.0**2 / (2 * 0.3**2)


# --- sensitivities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "neighbouring", "per_variant"),
    [
        (("alt_count",), "replace", 2.0),
        (("alt_count",), "add_remove", 2.0),
        (("hom_ref", "het", "hom_alt", "missing"), "replace", math.sqrt(2)),
        (("hom_ref", "het", "hom_alt", "missing"), "add_remove", 1.0),
        (dp.COUNT_ARRAYS, "replace", math.sqrt(6)),  # 0 → 2: hom_ref −1, hom_alt +1, alt +2
        (dp.COUNT_ARRAYS, "add_remove", math.sqrt(5)),  # add a hom-ALT: hom_alt +1, alt +2
        (("het", "alt_count"), "replace", math.sqrt(4)),  # 0 → 2 moves only alt, by 2
    ],
)
def test_genotype_count_sensitivity__hand_cases(arrays, neighbouring, per_variant):
    for d in (1, 9, 1000):
        got = dp.genotype_count_sensitivity(d, arrays=arrays, neighbouring=neighbouring)
        assert got == pytest.approx(per_variant * math.sqrt(d), rel=1e-12)


def test_genotype_count_sensitivity__default_arrays_are_what_allele_stats_send():
    assert dp.genotype_count_sensitivity(4) == pytest.approx(math.sqrt(2) * 2)
    assert set(allele.SUM_NAMES) <= set(dp.COUNT_ARRAYS)
    assert dp.genotype_count_sensitivity(4) == dp.genotype_count_sensitivity(4, arrays=allele.SUM_NAMES)


@pytest.mark.parametrize("neighbouring", ["replace", "add_remove"])
def test_genotype_count_sensitivity__brute_force_through_allele_local_sums(neighbouring):
    """Every person over 2 variants, swapped for every other (or added): the largest L2 change."""
    others = np.array([[0, 1, 2], [-9, 2, 0]], dtype=np.int8)  # (variants, samples)

    def released(block):
        sums = allele.local_sums(block)
        alt = np.where(block < 0, 0, block).sum(axis=1)
        return np.concatenate([*(sums[n] for n in allele.SUM_NAMES), alt]).astype(np.float64)

    states = [np.array(p, dtype=np.int8)[:, None] for p in itertools.product((0, 1, 2, -9), repeat=2)]
    base = released(others)
    worst = {"counts": 0.0, "all": 0.0}
    n4 = 2 * len(allele.SUM_NAMES)  # the four count arrays come first in `released`
    for x in states:
        with_x = released(np.hstack([others, x]))
        partners = [base] if neighbouring == "add_remove" else [released(np.hstack([others, y])) for y in states]
        for other in partners:
            diff = with_x - other
            worst["counts"] = max(worst["counts"], float(np.linalg.norm(diff[:n4])))
            worst["all"] = max(worst["all"], float(np.linalg.norm(diff)))
    assert worst["counts"] == pytest.approx(dp.genotype_count_sensitivity(2, neighbouring=neighbouring))
    assert worst["all"] == pytest.approx(
        dp.genotype_count_sensitivity(2, arrays=dp.COUNT_ARRAYS, neighbouring=neighbouring)
    )


def test_genotype_count_sensitivity__unknown_array_raises():
    with pytest.raises(InputError, match="alt_count"):
        dp.genotype_count_sensitivity(3, arrays=("hom_ref", "dosage"))


# --- noise --------------------------------------------------------------------------------------


def test_discrete_gaussian__mean_and_variance_within_six_sigma():
    sigma, n = 3.0, 100_000
    values = np.arange(n, dtype=np.int64).reshape(4, -1) - 40_000
    noisy = dp.discrete_gaussian(values, sigma, workers=2)  # two chunks, two threads
    noise = (noisy - values).astype(np.float64).ravel()
    # N_Z(0, σ²) at σ = 3: mean 0, variance σ² (to within 1e-70); sd of the sample variance ≈ σ² √(2/n)
    assert abs(noise.mean()) < 6 * sigma / math.sqrt(n)
    assert abs(noise.var() - sigma**2) < 6 * sigma**2 * math.sqrt(2 / n)
    for half in (noise[:65_536], noise[65_536:]):  # every chunk was noised
        assert abs(half.var() - sigma**2) < 6 * sigma**2 * math.sqrt(2 / half.size)
    assert np.all(noise == np.rint(noise))


def test_discrete_gaussian__int64_and_shape_preserved():
    for values in (np.zeros((3, 5), dtype=np.int64), np.arange(7, dtype=np.int32), np.zeros(0, dtype=np.int64)):
        out = dp.discrete_gaussian(values, 2.0, workers=1)
        assert out.dtype == np.int64 and out.shape == values.shape


def test_discrete_gaussian__fresh_noise_on_every_call():
    values = np.zeros(2000, dtype=np.int64)
    assert not np.array_equal(dp.discrete_gaussian(values, 2.0), dp.discrete_gaussian(values, 2.0))


@pytest.mark.parametrize("edge", [np.iinfo(np.int64).max, np.iinfo(np.int64).min])
def test_discrete_gaussian__int64_overflow_is_detected_not_wrapped(edge):
    values = np.full(1000, edge, dtype=np.int64)
    with pytest.raises(PrivacyError, match="overflow"):
        dp.discrete_gaussian(values, 5.0)
    big = np.array([2**63 - 1], dtype=np.uint64) + np.uint64(5)
    with pytest.raises(PrivacyError):
        dp.discrete_gaussian(big, 5.0)


def test_discrete_gaussian__rejects_floats_and_bad_sigma():
    with pytest.raises(TypeError):
        dp.discrete_gaussian(np.zeros(3), 2.0)
    for sigma in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InputError):
            dp.discrete_gaussian(np.zeros(3, dtype=np.int64), sigma)


# --- budget ledger ------------------------------------------------------------------------------


def _ledger(path: Path, **kwargs) -> dp.BudgetLedger:
    return dp.BudgetLedger(path / "budget.sqlite", **({"total_epsilon": 1.0, "total_delta": 1e-6} | kwargs))


def test_budget_ledger__charge_spent_remaining(tmp_path):
    ledger = _ledger(tmp_path)
    total = dp.epsilon_to_rho(1.0, 1e-6)
    assert tuple(ledger.total) == (total, pytest.approx(1.0), 1e-6)
    receipt = ledger.charge("cohortA", "job-1", 0.01, detail="freq, 1 round")
    assert receipt.rho_added == 0.01 and receipt.rho_job == 0.01
    rho, eps, delta = ledger.spent("cohortA")
    assert (rho, delta) == (0.01, 1e-6) and eps == pytest.approx(dp.rho_to_epsilon(0.01, 1e-6))
    left = ledger.remaining("cohortA")
    assert left.rho == pytest.approx(total - 0.01) and left.epsilon == dp.rho_to_epsilon(left.rho, 1e-6)
    assert ledger.remaining("cohortB").rho == total  # budgets are per dataset


def test_budget_ledger__charge_is_idempotent_per_job(tmp_path):
    ledger = _ledger(tmp_path, total_epsilon=None, total_rho=1.0)
    ledger.charge("d", "job-1", 0.2)
    assert ledger.charge("d", "job-1", 0.2).rho_added == 0.0  # retry of the same round
    assert ledger.charge("d", "job-1", 0.1).rho_added == 0.0  # smaller: nothing more
    assert ledger.charge("d", "job-1", 0.3).rho_added == pytest.approx(0.1)  # larger: the difference only
    assert ledger.spent("d").rho == pytest.approx(0.3)
    assert [(e.job_id, e.rho_job) for e in ledger.history("d")] == [("job-1", 0.2), ("job-1", 0.3)]
    assert ledger.history("d")[1].rho_added == pytest.approx(0.1)


def test_budget_ledger__refusal_states_the_remaining_budget(tmp_path):
    ledger = _ledger(tmp_path)
    total = ledger.total.rho
    ledger.charge("d", "job-1", 0.75 * total)
    with pytest.raises(dp.BudgetExceeded) as info:
        ledger.charge("d", "job-2", 0.5 * total)
    left = ledger.remaining("d")
    message = str(info.value)
    assert isinstance(info.value, PolicyRefused)
    assert f"rho={left.rho:.6g}" in message and f"epsilon={left.epsilon:.6g}" in message and "delta=1e-06" in message
    assert info.value.remaining == left and info.value.requested_rho == pytest.approx(0.5 * total)
    assert ledger.spent("d").rho == pytest.approx(0.75 * total)  # nothing charged
    assert [e.job_id for e in ledger.history("d")] == ["job-1"]
    ledger.charge("d", "job-2", left.rho)  # exactly what is left still fits


def test_budget_ledger__survives_reopening(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.charge("d", "job-1", 0.005, detail="glm")
    ledger.charge("d", "job-2", 0.002)
    del ledger
    again = _ledger(tmp_path)
    assert again.spent("d").rho == pytest.approx(0.007)
    assert [e.detail for e in again.history("d")] == ["glm", ""]
    assert again.charge("d", "job-1", 0.005).rho_added == 0.0  # still idempotent after a restart
    with sqlite3.connect(tmp_path / "budget.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_budget_ledger__concurrent_charges_never_exceed_the_budget(tmp_path):
    ledgers = [_ledger(tmp_path, total_epsilon=None, total_rho=1.0) for _ in range(2)]
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def run(worker: int) -> None:
        barrier.wait()
        for j in range(15):
            for job in (f"own-{worker}-{j}", f"shared-{j}"):  # shared jobs are charged by both threads
                try:
                    added = ledgers[worker].charge("d", job, 1 / 20).rho_added
                    result = "charged" if added else "retry"
                except dp.BudgetExceeded:
                    result = "refused"
                with lock:
                    outcomes.append(result)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = ledgers[0].history("d")
    assert outcomes.count("charged") == 20 == len(history)  # 20 × 1/20 = the whole budget, no more
    assert len({e.job_id for e in history}) == 20  # no job charged twice
    assert ledgers[1].spent("d").rho == pytest.approx(1.0)
    assert ledgers[1].remaining("d").rho == 0.0


def test_budget_ledger__invalid_arguments_raise(tmp_path):
    with pytest.raises(InputError):
        dp.BudgetLedger(tmp_path / "x.sqlite", total_delta=1e-6)
    with pytest.raises(InputError):
        dp.BudgetLedger(tmp_path / "x.sqlite", total_epsilon=1.0, total_rho=1.0, total_delta=1e-6)
    ledger = _ledger(tmp_path)
    for args in (("d", "job", -0.1), ("d", "", 0.1), ("", "job", 0.1), ("d", "job", math.inf)):
        with pytest.raises(InputError):
            ledger.charge(*args)


def test_budget_ledger__unusable_file_is_a_privacy_error(tmp_path):
    with pytest.raises(PrivacyError, match="budget ledger"):
        _ledger(tmp_path / "no-such-directory")
