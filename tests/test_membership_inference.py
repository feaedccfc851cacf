"""Acceptance: membership inference from released allele frequencies, without and with DP.

Set-up (one simulated population, at the scale of the reference notes: 20k SNPs, a pool of 200):

- ``D_SNPS`` = 20,000 independent SNPs with population ALT frequencies p_j ~ Beta(½, ½) clipped to
  [0.05, 0.95]; every person's genotype is drawn under Hardy–Weinberg from p.
- The *pool* (the study cohort, the members): ``POOL`` = 200 people, split across ``N_SITES`` = 3
  sites. Each site computes its four genotype count arrays with ``fedstat.stats.allele.local_sums``;
  the counts are summed and turned into ALT frequencies M_j with ``allele.finish``, which is what a
  ``--freq`` job releases.
- *Outsiders* (non-members): ``N_OUTSIDERS`` = 2,000 further people from the same population.
- The attacker's reference sample: ``N_REFERENCE`` = 1,000 further people, from which the attacker
  estimates the population frequency Pop_j (it never sees p_j itself).

With DP the release follows ``--privacy dp``: each site adds discrete Gaussian noise to its four
count arrays with ``fedstat.privacy.dp.discrete_gaussian`` (what ``dpmode.NoisyProtector`` draws:
OpenDP over OpenSSL randomness), at the scale ``calibrate_distributed`` gives for (ε, δ),
Δ₂ = ``genotype_count_sensitivity(d)`` and ``k_min = 3`` (checked equal to the scale the site agent
takes from ``dpmode.round_sigma``); the coordinator clips the noisy totals at zero (as
``coordinator/engine.py`` does) and the frequencies follow with ``allele.finish``. numpy's seeded
generator is used for the *simulation* only.

Both attacks score every member and every outsider; the threshold is the outsiders' 99th
percentile (false-positive rate α = 1 %), and the AUC is the Mann–Whitney estimate.

The DP bound (hypothesis-testing view of (ε, δ)-DP): deciding "in the pool" against "not in the
pool" from an (ε, δ)-DP release, any test with false-positive rate α has true-positive rate at most
e^ε α + δ, and at most 1 − e^{−ε}(1 − α − δ) [WZ10, KOV15]; integrating that curve over α bounds the
AUC. It applies here because members and outsiders are exchangeable draws from one population: an
outsider scored on this release is distributed as a member scored on the release in which it was
replaced by someone else (the neighbouring dataset under ``replace``).

References
----------
.. [H08] N. Homer et al., "Resolving individuals contributing trace amounts of DNA to highly complex
   mixtures using high-density SNP genotyping microarrays", PLoS Genetics 4(8):e1000167, 2008.
.. [S09] S. Sankararaman, G. Obozinski, M. I. Jordan, E. Halperin, "Genomic privacy and limits of
   individual detection in a pool", Nature Genetics 41:965–967, 2009.
.. [WZ10] L. Wasserman, S. Zhou, "A statistical framework for differential privacy", JASA 105, 2010.
.. [KOV15] P. Kairouz, S. Oh, P. Viswanath, "The composition theorem for differential privacy",
   ICML 2015, Theorem 2.1 (the (ε, δ) region of false-positive / false-negative rates).
.. [BK57] Z. W. Birnbaum, O. M. Klose, "Bounds for the variance of the Mann–Whitney statistic",
   Ann. Math. Statist. 28, 1957 (Var(AUC) ≤ A(1 − A)/min(m, n)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from fedstat.computations import COMPUTATIONS
from fedstat.privacy import dp, dpmode
from fedstat.stats import allele

D_SNPS = 20_000
POOL = 200
N_SITES = 3
N_OUTSIDERS = 2_000
N_REFERENCE = 1_000
ALPHA = 0.01  # the false-positive rate at which the true-positive rate is read
DELTA = 1e-6
#: Standard errors allowed between a measured rate and its bound. The test fails only if a
#: measurement lands more than Z standard errors above what the DP guarantee allows.
Z = 4.0
#: Frequencies used inside logarithms are kept at least half an allele away from 0 and 1.
FREQ_FLOOR = 1.0 / (4 * POOL)
SIMULATION_SEED = 20080829  # fixed; seeds the simulated genotypes only, never the DP noise


@dataclass(frozen=True)
class Cohort:
    """The simulated people and what the attacker knows besides the release.

    Attributes
    ----------
    members : [array, shape: (POOL, D_SNPS), dtype int8] ALT allele counts of the pool
    outsiders : [array, shape: (N_OUTSIDERS, D_SNPS), dtype int8] same population, not in the pool
    pop_freq : [array, shape: (D_SNPS,), dtype float64] the attacker's estimate of Pop_j from its
        reference sample, (ALT alleles + 1) / (2 N_REFERENCE + 2)
    """

    members: np.ndarray
    outsiders: np.ndarray
    pop_freq: np.ndarray


@dataclass(frozen=True)
class AttackOutcome:
    """How well one attack separates members from outsiders on one release.

    Attributes
    ----------
    tpr : share of members scored above the threshold
    fpr : share of outsiders scored above it (≤ ALPHA by construction)
    auc : P(member score > outsider score), ties counting ½
    """

    tpr: float
    fpr: float
    auc: float


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    """The simulated pool, outsiders and reference frequencies (seeded: the same people every run)."""
    rng = np.random.default_rng(SIMULATION_SEED)
    p = np.clip(rng.beta(0.5, 0.5, size=D_SNPS), 0.05, 0.95).astype(np.float32)

    def genotypes(n: int) -> np.ndarray:
        # two independent alleles per person: Binomial(2, p_j) under Hardy–Weinberg
        alleles = rng.random((2, n, D_SNPS), dtype=np.float32) < p
        return alleles[0].view(np.int8) + alleles[1].view(np.int8)

    members, outsiders, reference = genotypes(POOL), genotypes(N_OUTSIDERS), genotypes(N_REFERENCE)
    pop_freq = (reference.sum(axis=0, dtype=np.int64) + 1.0) / (2.0 * N_REFERENCE + 2.0)
    assert members.shape == (POOL, D_SNPS) and pop_freq.shape == (D_SNPS,)
    return Cohort(members=members, outsiders=outsiders, pop_freq=pop_freq)


def _release(cohort: Cohort, *, sigma_site: float | None) -> np.ndarray:
    """The pool's ALT frequencies M_j as the attacker reads them: [array, shape: (D_SNPS,)].

    Each site's four count arrays (``allele.SUM_NAMES``) get N_Z(0, sigma_site²) noise unless
    ``sigma_site`` is None (as the site's noisy protector draws it), then the sites' arrays are summed
    (what secure aggregation reveals). Under DP the totals are clipped at zero (the coordinator's
    post-processing); ``allele.finish`` gives the frequencies, and a variant left with no genotype
    (0/0) falls back to the attacker's Pop_j.
    """
    totals = {name: np.zeros(D_SNPS, dtype=np.int64) for name in allele.SUM_NAMES}
    for site in np.array_split(np.arange(POOL), N_SITES):
        sums = allele.local_sums(cohort.members[site].T)
        if sigma_site is not None:
            sums = {k: dp.discrete_gaussian(np.asarray(v, dtype=np.int64), sigma_site) for k, v in sums.items()}
        for name in allele.SUM_NAMES:
            totals[name] += sums[name]
    if sigma_site is not None:
        totals = {name: np.maximum(total, 0) for name, total in totals.items()}
    released = allele.finish(totals)
    assert released.alt_freq.shape == (D_SNPS,)
    return np.where(np.isnan(released.alt_freq), cohort.pop_freq, released.alt_freq)


def homer_t(genotypes: np.ndarray, *, pop: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Homer's test statistic for each person [H08].

    Parameters
    ----------
    genotypes : [array, shape: (n_people, d), dtype int8] ALT allele counts
    pop : [array, shape: (d,)] reference-population ALT frequencies Pop_j
    mix : [array, shape: (d,)] released pool (mixture) ALT frequencies M_j

    Returns
    -------
    [array, shape: (n_people,)] T = mean(D) / (sd(D)/√d), D_j = |Y_j − Pop_j| − |Y_j − M_j| with
    Y_j the person's ALT dosage / 2 ∈ {0, ½, 1}; d is the number of SNPs ("s" in [H08]). Large T:
    the person is closer to the pool than to the population.
    """
    d = genotypes.shape[1]
    scores = []
    for start in range(0, genotypes.shape[0], 500):  # 500 people at a time bounds memory
        y = genotypes[start : start + 500] / 2.0
        dist = np.abs(y - pop) - np.abs(y - mix)
        scores.append(dist.mean(axis=1) / (dist.std(axis=1, ddof=1) / math.sqrt(d)))
    return np.concatenate(scores)


def likelihood_ratio(genotypes: np.ndarray, *, pop: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """The log-likelihood-ratio statistic of Sankararaman et al. [S09], per allele.

    Parameters
    ----------
    genotypes, pop, mix : as in :func:`homer_t`

    Returns
    -------
    [array, shape: (n_people,)] Λ = Σ_j g_j log(M_j/Pop_j) + (2 − g_j) log((1 − M_j)/(1 − Pop_j)),
    g_j ∈ {0, 1, 2} the ALT count: the log-likelihood of the person's two alleles under the pool's
    frequencies against the population's, SNPs independent. (The per-person form with Y_j = g_j/2
    is Λ/2 and ranks people identically.) Both frequencies are kept in [FREQ_FLOOR, 1 − FREQ_FLOOR].
    """
    mix = np.clip(mix, FREQ_FLOOR, 1.0 - FREQ_FLOOR)
    pop = np.clip(pop, FREQ_FLOOR, 1.0 - FREQ_FLOOR)
    log_alt, log_ref = np.log(mix / pop), np.log((1.0 - mix) / (1.0 - pop))
    # Λ = g·(log_alt − log_ref) + 2 Σ log_ref, one matrix-vector product
    scores = genotypes.astype(np.float64) @ (log_alt - log_ref) + 2.0 * math.fsum(log_ref)
    assert scores.shape == (genotypes.shape[0],)
    return scores


ATTACKS: dict[str, Callable[..., np.ndarray]] = {"homer": homer_t, "lrt": likelihood_ratio}


def _attack(cohort: Cohort, mix: np.ndarray, name: str) -> AttackOutcome:
    """Score members and outsiders with attack ``name`` and read the ROC at FPR = ALPHA."""
    score = ATTACKS[name]
    members = score(cohort.members, pop=cohort.pop_freq, mix=mix)
    outsiders = score(cohort.outsiders, pop=cohort.pop_freq, mix=mix)
    threshold = np.quantile(outsiders, 1.0 - ALPHA, method="higher")  # at most α of outsiders above
    auc = mannwhitneyu(members, outsiders).statistic / (members.size * outsiders.size)
    return AttackOutcome(
        tpr=float(np.mean(members > threshold)), fpr=float(np.mean(outsiders > threshold)), auc=float(auc)
    )


def _tpr_bound(epsilon: float, delta: float) -> float:
    """The largest TPR at FPR = ALPHA that (ε, δ)-DP allows, plus Z standard errors.

    TPR ≤ e^ε α + δ [WZ10, KOV15]. The measured TPR is a binomial share of POOL members, and the
    threshold's true FPR differs from α by the sampling error of a quantile of N_OUTSIDERS scores,
    which the bound multiplies by e^ε; the two errors are added in quadrature.
    """
    bound = min(1.0, math.exp(epsilon) * ALPHA + delta)
    se = math.sqrt(bound * (1.0 - bound) / POOL + math.exp(2 * epsilon) * ALPHA * (1.0 - ALPHA) / N_OUTSIDERS)
    return bound + Z * se


def _max_auc(epsilon: float, delta: float) -> float:
    """The largest AUC an (ε, δ)-DP release allows: ∫₀¹ max TPR(α) dα, with
    max TPR(α) = min(1, e^ε α + δ, 1 − e^{−ε}(1 − α − δ)) [KOV15]; e^ε/(1 + e^ε) when δ = 0.

    The curve is piecewise linear, so the trapezoid rule on a grid holding its kinks is exact.
    """
    kinks = [(1.0 - delta) / (1.0 + math.exp(epsilon)), (1.0 - delta) * math.exp(-epsilon), 1.0 - delta]
    alpha = np.unique(np.clip(np.concatenate([np.linspace(0.0, 1.0, 101), kinks]), 0.0, 1.0))
    power = np.minimum.reduce(
        [np.ones_like(alpha), math.exp(epsilon) * alpha + delta, 1.0 - math.exp(-epsilon) * (1.0 - alpha - delta)]
    )
    return float(np.trapezoid(power, alpha))


def _auc_bound(epsilon: float, delta: float) -> float:
    """:func:`_max_auc` plus Z standard errors, using Var(AUC) ≤ A(1 − A)/min(m, n) [BK57]."""
    a = _max_auc(epsilon, delta)
    return a + Z * math.sqrt(a * (1.0 - a) / min(POOL, N_OUTSIDERS))


def test_max_auc__closed_form_without_delta():
    """Without δ the tradeoff curve is two lines meeting at α = 1/(1 + e^ε): AUC = e^ε/(1 + e^ε)."""
    for epsilon in (0.1, 1.0, 3.0):
        assert _max_auc(epsilon, 0.0) == pytest.approx(math.exp(epsilon) / (1.0 + math.exp(epsilon)), abs=1e-12)
    assert _max_auc(1.0, 1e-6) > _max_auc(1.0, 0.0)
    assert _max_auc(50.0, 0.0) == pytest.approx(1.0, abs=1e-12)
    assert _max_auc(0.0, 0.0) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_membership_inference__near_perfect_without_dp(cohort, attack):
    """The exact release (plain sums, no noise) lets either attack tell members from outsiders.

    This is also the control for the DP test below: its bound check, applied to this release, fails.
    """
    outcome = _attack(cohort, _release(cohort, sigma_site=None), attack)
    assert outcome.fpr <= ALPHA
    assert outcome.auc >= 0.99, outcome
    assert outcome.tpr >= 0.9, outcome
    assert outcome.tpr > _tpr_bound(1.0, DELTA) and outcome.auc > _auc_bound(1.0, DELTA), outcome


@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_membership_inference__within_dp_bound(cohort, epsilon):
    """With the distributed discrete Gaussian at (ε, 1e-6), neither attack beats e^ε α + δ.

    One release per ε (its noise is the costly part: 3 sites × 4 × 20,000 draws); both attacks read it.
    The bound is checked at the (ε, δ) the calibration actually spends (``cal.epsilon`` ≤ ε). At
    ε = 1 it allows TPR ≤ 0.079 and AUC ≤ 0.856; at ε = 3, TPR ≤ 0.41 while the AUC check is
    vacuous (bound > 1) and kept only for uniformity.

    Failure probability if the mechanism is DP: the measured TPR would have to exceed the largest
    allowed TPR by Z = 4 standard errors. Were an attack exactly at the bound (TPR 2.7 % at ε = 1),
    ≥ 16 of 200 members would be flagged with probability 1.3e-4 (binomial tail); the attacks
    actually achieve TPR ≈ α = 1 % under this noise (σ_total ≈ 900 counts against a pool of 200),
    which puts it near 3e-10. The AUC (≈ 0.5 measured) is 11 of its standard errors below its bound.
    """
    cal = dp.calibrate_distributed(
        epsilon,
        DELTA,
        sensitivity=dp.genotype_count_sensitivity(D_SNPS),
        k_min=N_SITES,
        dimension=len(allele.SUM_NAMES) * D_SNPS,
    )
    assert cal.epsilon <= epsilon and cal.delta == DELTA
    agent_sigma = dpmode.round_sigma(
        dpmode.RoundNoise(epsilon, DELTA, "allele_counts", D_SNPS, N_SITES, COMPUTATIONS["allele_counts"].dp)
    )
    assert agent_sigma == cal.sigma_site  # the scale a site agent would use for this --freq job
    mix = _release(cohort, sigma_site=cal.sigma_site)
    for attack in sorted(ATTACKS):
        outcome = _attack(cohort, mix, attack)
        assert outcome.fpr <= ALPHA
        assert outcome.tpr <= _tpr_bound(cal.epsilon, cal.delta), (attack, outcome, cal)
        assert outcome.auc <= _auc_bound(cal.epsilon, cal.delta), (attack, outcome, cal)
