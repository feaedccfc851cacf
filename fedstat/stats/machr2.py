"""MaCH r² (imputation quality) from pooled dosage sums, exactly as plink2 2.00a3.5 computes it.

MaCH r² is the observed variance of the ALT dosages over the variance a binomial genotype of the
same frequency would have. With ``n`` samples holding a dosage or a hard call, ``S1 = Σd`` and
``S2 = Σd²`` in plink2's dosage units (one ALT copy = 16384, so both are exact integers; a hard
call is 0, 16384 or 32768)::

    r² = 2 (n·S2 − S1²) / (32768·n·S1 − S1²)

A site releases ``S1`` (``dosage_sum``) and ``n`` (``dosage_obs``), which ``--freq`` already
sums, and ``S2`` (:data:`SSQ_NAME`): three sums over the same participants, so the pooled
totals give plink2's value on the pooled data whatever the split across sites.

References
----------
plink2 2.00a3.5: ``BiallelicDiploidMinimac3R2`` (``include/pgenlib_read.cc``) computes the ratio
from exact 64-bit integers below 131072 samples, and above it the expected variance as a product
of two doubles and the observed one as an emulated 128-bit integer, which :func:`mach_r2`
replicates operation by operation; plink2 doubles the minimac3 ratio for MaCH r².
``LoadAlleleAndGenoCountsThread`` (``plink2_data.cc``) takes every sample with a dosage or a
hard call (nonfounders too); on chrY the males only, halved (haploid); on MT halved; chrX is not
computed. ``WriteAlleleFreqs`` (``plink2_misc.cc``) prints ``NA`` on chrX and MT and ``nan``
where the ratio is 0/0 (no sample, or a monomorphic variant). ``EnforceImpR2Thresh``
(``plink2_filter.cc``) removes a variant whose r² is below ``min·(1 − 2⁻³⁵)`` or above
``max·(1 + 2⁻³⁵)``, keeping chrX and MT variants and NaN values, after ``--geno``, ``--hwe`` and
``--maf``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedstat.data.genotypes import DOSAGE_UNIT
from fedstat.errors import InputError

__all__ = ["NOT_COMPUTED", "SSQ_NAME", "local_ssq", "mach_r2", "outside_bounds"]

#: The per-variant sum of squared ALT dosages, in (1/16384)² units (int64).
SSQ_NAME = "dosage_ssq"
#: Chromosomes plink2 prints ``NA`` for and its ``--mach-r2-filter`` skips.
NOT_COMPUTED = frozenset({"X", "MT"})
#: plink2's ``kSmallishEpsilon`` (2⁻³⁵), which widens the filter's bounds.
_SMALLISH_EPSILON = 2.0**-35
#: Below this many samples plink2 computes both variances as exact unsigned 64-bit integers.
_EXACT_BELOW = 131072
_TWO_UNITS = 2 * DOSAGE_UNIT  # 32768: a dosage of 2


def local_ssq(dosages: np.ndarray | None, counts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One site's :data:`SSQ_NAME` for a block: Σd² over the samples with a dosage or a hard call.

    Parameters
    ----------
    dosages : [array, shape: (n_variants, n_samples), float] ALT dosages in [0, 2] (multiples of
        2⁻¹⁴, as a .pgen stores them), negative where neither a dosage nor a hard call is present;
        None for a file without dosages, whose hard calls are its dosages
    counts : the block's :func:`fedstat.stats.allele.local_sums` (hard-call genotype counts)

    Returns
    -------
    ``{SSQ_NAME: [array, shape: (n_variants,), dtype int64]}``: at most 2³⁰ per sample, so exact
    up to 2³³ samples.
    """
    if dosages is None:
        ssq = counts["het"] * DOSAGE_UNIT**2 + counts["hom_alt"] * _TWO_UNITS**2
        return {SSQ_NAME: np.asarray(ssq, dtype=np.int64)}
    d = np.asarray(dosages)
    if d.size and float(d.max()) > 2.0:
        raise InputError("local_ssq: a dosage block holds an ALT dosage above 2")
    units = np.rint(np.where(d >= 0, d, 0).astype(np.float64) * DOSAGE_UNIT).astype(np.int64)
    ssq = np.einsum("ij,ij->i", units, units)  # Σ u², exact in int64
    assert ssq.shape == (d.shape[0],)
    return {SSQ_NAME: ssq.astype(np.int64)}


def _one(s1: int, s2: int, n: int) -> float:
    """plink2's ``BiallelicDiploidMinimac3R2`` times 2, on exact integers."""
    if n == 0:
        return float("nan")
    observed = s2 * n - s1 * s1  # ≥ 0 (Cauchy–Schwarz); 2n times the observed variance
    if n < _EXACT_BELOW:
        expected = float(n * _TWO_UNITS * s1 - s1 * s1)  # uint64 in plink2, exact here
    else:
        expected = float(s1) * float(n * _TWO_UNITS - s1)  # two doubles, one rounding each
    with np.errstate(invalid="ignore", divide="ignore"):
        # the 128-bit observed variance becomes one double (hi·2³² + lo rounds once), as in plink2
        ratio = np.float64(float(observed)) / np.float64(expected)
    return float(ratio) * 2.0


def mach_r2(dosage_sum: np.ndarray, dosage_ssq: np.ndarray, n_obs: np.ndarray, *, haploid: bool = False) -> np.ndarray:
    """MaCH r² per variant from pooled sums, plink2's double for double.

    Parameters
    ----------
    dosage_sum : [array, shape: (n_variants,), integer] Σd in 1/16384 units
    dosage_ssq : [array, shape: (n_variants,), integer] Σd² in (1/16384)² units
    n_obs : [array, shape: (n_variants,), integer] samples with a dosage or a hard call
    haploid : halve the values (plink2 on chrY, over the males)

    Returns
    -------
    [array, shape: (n_variants,), dtype float64]; NaN where plink2's ratio is 0/0 (no sample, a
    monomorphic variant)

    Raises
    ------
    InputError
        If the sums are impossible for any dosages (``n·S2 < S1²``, ``S1 > 32768·n``, negative).
    """
    s1, s2, n = (np.asarray(a, dtype=np.int64) for a in (dosage_sum, dosage_ssq, n_obs))
    assert s1.shape == s2.shape == n.shape
    # Python integers: n·S2 reaches 2⁶⁴ beyond 131072 samples (plink2 then emulates 128 bits)
    out = np.array([_one(a, b, c) for a, b, c in zip(s1.tolist(), s2.tolist(), n.tolist(), strict=True)])
    out = out.reshape(s1.shape).astype(np.float64)
    bad = (s1 < 0) | (s2 < 0) | (n < 0) | (s1 > _TWO_UNITS * n)
    if bad.any() or bool((~np.isnan(out) & (out < 0)).any()):
        raise InputError("MaCH r²: the pooled dosage sums are inconsistent (the sites' sums cannot come from dosages)")
    return out * 0.5 if haploid else out


def outside_bounds(r2: np.ndarray, chrom: np.ndarray, low: float, high: float) -> np.ndarray:
    """Which variants ``--mach-r2-filter low high`` removes, as plink2's ``EnforceImpR2Thresh``.

    Parameters
    ----------
    r2 : [array, shape: (n_variants,), float64] from :func:`mach_r2` (NaN kept)
    chrom : [array, shape: (n_variants,), str] plink2 chromosome codes; chrX and MT are kept

    Returns
    -------
    [array, shape: (n_variants,), dtype bool] True for the variants removed
    """
    lo = low * (1.0 - _SMALLISH_EPSILON)
    hi = high * (1.0 + _SMALLISH_EPSILON)
    with np.errstate(invalid="ignore"):
        fails = (r2 < lo) | (r2 > hi)  # NaN compares False: kept, as plink2 keeps it
    skipped = np.isin(np.asarray(chrom).astype(str), sorted(NOT_COMPUTED))
    return np.asarray(fails & ~skipped)
