"""Hardy–Weinberg on chrX, as plink2 ``--hardy`` writes ``.hardy.x``.

On chrX plink2 tests HWE jointly over females (diploid) and males (haploid): the exact test of
Graffelman & Weir (2016), conditional on the allele totals, summing the probabilities of every
(female genotypes, male alleles) table no more likely than the observed one. :func:`hwe_x_p` is a
line-by-line port of plink2's ``HweXchrP`` (with ``HweFirstRow`` and ``HweXchrPTailsum``), not
mid-p: the same IEEE double operations in the same order, so the p-values are bit-identical. It
runs one variant at a time (the walk's length depends on the counts), which is fine for the few
thousand chrX variants of an array; :func:`hardy_x` derives the other ``.hardy.x`` columns.

References
----------
Graffelman J, Weir BS (2016) Testing for Hardy-Weinberg equilibrium at biallelic genetic markers
on the X chromosome. Heredity 116:558-568.
plink2 2.00a3.5 ``include/plink2_stats.cc`` (``HweXchrP``), ``plink2_misc.cc`` (``HardyReport``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from fedstat.stats.hwe import hwe_exact_p

__all__ = ["HardyX", "hardy_x", "hwe_x_p"]

_BIAS = 2.0**-83  # kExactTestBias
_EPS2 = 2.0**-40  # kExactTestEpsilon2 = 0.0000000000009094947017729282379150390625
_SMALL_EPS = 2.0**-44  # kSmallEpsilon
_DBL_MAX = sys.float_info.max


def _tailsum(high_het_side: bool, st: list[float], tie: list[int]) -> tuple[bool, float]:
    """plink2 ``HweXchrPTailsum``; ``st`` = [base_prob, saved_hets, saved_hom1, saved_hom2] (updated
    in place), ``tie`` = [tie_ct]. Returns (all of this side is too probable: plink2's nonzero
    return, the tail's total)."""
    total = 0.0
    cur_prob, tmp_hets, tmp_hom1, tmp_hom2 = st
    if high_het_side:
        if cur_prob > _BIAS:
            prev_prob = tmp_hom1 * tmp_hom2
            while prev_prob > 0.5:
                tmp_hets += 2
                cur_prob *= (4 * prev_prob) / (tmp_hets * (tmp_hets - 1))
                tmp_hom1 -= 1
                tmp_hom2 -= 1
                if cur_prob <= _BIAS:
                    break
                prev_prob = tmp_hom1 * tmp_hom2
            st[0] = cur_prob
            tmps_hets, tmps_hom1, tmps_hom2 = tmp_hets, tmp_hom1, tmp_hom2
        else:
            tmps_hets, tmps_hom1, tmps_hom2 = tmp_hets, tmp_hom1, tmp_hom2
            while True:
                prev_prob = cur_prob
                tmp_hom1 += 1
                tmp_hom2 += 1
                cur_prob *= (tmp_hets * (tmp_hets - 1)) / (4 * tmp_hom1 * tmp_hom2)
                if cur_prob < prev_prob:
                    return True, 0.0  # plink2 returns before writing the total
                tmp_hets -= 2
                if cur_prob > (1 - 2 * _EPS2) * _BIAS:
                    if cur_prob > (1 - _SMALL_EPS) * _BIAS:
                        break
                    tie[0] += 1
                total += cur_prob
            prev_prob = cur_prob
            cur_prob = st[0]
            st[0] = prev_prob
    else:
        if cur_prob > _BIAS:
            while tmp_hets > 1.5:
                tmp_hom1 += 1
                tmp_hom2 += 1
                cur_prob *= (tmp_hets * (tmp_hets - 1)) / (4 * tmp_hom1 * tmp_hom2)
                tmp_hets -= 2
                if cur_prob <= _BIAS:
                    break
            st[0] = cur_prob
            tmps_hets, tmps_hom1, tmps_hom2 = tmp_hets, tmp_hom1, tmp_hom2
        else:
            tmps_hets, tmps_hom1, tmps_hom2 = tmp_hets, tmp_hom1, tmp_hom2
            while True:
                prev_prob = cur_prob
                tmp_hets += 2
                cur_prob *= (4 * tmp_hom1 * tmp_hom2) / (tmp_hets * (tmp_hets - 1))
                if cur_prob < prev_prob:
                    return True, 0.0  # plink2 returns before writing the total
                tmp_hom1 -= 1
                tmp_hom2 -= 1
                if cur_prob > (1 - 2 * _EPS2) * _BIAS:
                    if cur_prob > _BIAS:
                        break
                    tie[0] += 1
                total += cur_prob
            prev_prob = cur_prob
            cur_prob = st[0]
            st[0] = prev_prob
    st[1], st[2], st[3] = tmp_hets, tmp_hom1, tmp_hom2
    if cur_prob > (1 - 2 * _EPS2) * _BIAS:
        if cur_prob > _BIAS:
            return False, 0.0  # even the most extreme table on this side is too probable
        tie[0] += 1
    if high_het_side:  # sum the tail to the precision limit
        while True:
            prev_tot = total
            total += cur_prob
            if total <= prev_tot:
                break
            tmps_hets += 2
            cur_prob *= (4 * tmps_hom1 * tmps_hom2) / (tmps_hets * (tmps_hets - 1))
            tmps_hom1 -= 1
            tmps_hom2 -= 1
    else:
        while True:
            prev_tot = total
            total += cur_prob
            if total <= prev_tot:
                break
            tmps_hom1 += 1
            tmps_hom2 += 1
            cur_prob *= (tmps_hets * (tmps_hets - 1)) / (4 * tmps_hom1 * tmps_hom2)
            tmps_hets -= 2
    return False, total


def _first_row(hetab: float, homa: float, homb: float) -> tuple[float, float, int, list[float], list[float]] | None:
    """plink2 ``HweFirstRow``: (tailp, centerp, tie_ct, left [prob, hets, homa, homb], right [...]),
    or None where plink2 returns 1 (the p-value is 0)."""
    cur_prob = (1 - _EPS2) * _BIAS
    tailp = cur_prob
    centerp = 0.0
    tie_ct = 1
    tmp_hets = hetab
    if hetab * hetab > 4 * homa * homb:  # incrementing hetab decreases likelihood from here on
        right = [cur_prob, hetab, homa, homb]
        tmp_homa, tmp_homb = homa, homb
        while tmp_hets > 1.5:
            tmp_homa += 1
            tmp_homb += 1
            cur_prob *= (tmp_hets * (tmp_hets - 1)) / (4 * tmp_homa * tmp_homb)
            tmp_hets -= 2
            if cur_prob < _BIAS:
                tie_ct += cur_prob > (1 - 2 * _EPS2) * _BIAS
                tailp += cur_prob
                break
            centerp += cur_prob
            if centerp > _DBL_MAX:
                return None
        left = [cur_prob, tmp_hets, tmp_homa, tmp_homb]
        while tmp_hets > 1.5:
            tmp_homa += 1
            tmp_homb += 1
            cur_prob *= (tmp_hets * (tmp_hets - 1)) / (4 * tmp_homa * tmp_homb)
            tmp_hets -= 2
            preaddp = tailp
            tailp += cur_prob
            if tailp <= preaddp:
                break
        tmp_hets, tmp_homa, tmp_homb = hetab, homa, homb
        cur_prob = right[0]
        while True:
            tmp_hets += 2
            cur_prob *= (4 * tmp_homa * tmp_homb) / (tmp_hets * (tmp_hets - 1))
            preaddp = tailp
            tailp += cur_prob
            if tailp <= preaddp:
                break
            tmp_homa -= 1
            tmp_homb -= 1
    else:  # decrementing hetab decreases likelihood from here on
        left = [cur_prob, hetab, homa, homb]
        tmp_homa, tmp_homb = homa, homb
        while True:
            quarter_numer = tmp_homa * tmp_homb
            if quarter_numer <= 0.5:
                break
            tmp_hets += 2
            cur_prob *= (4 * quarter_numer) / (tmp_hets * (tmp_hets - 1))
            tmp_homa -= 1
            tmp_homb -= 1
            if cur_prob < _BIAS:
                # plink2's parenthesisation, (1 - (2 eps) bias), kept as it is
                tie_ct += cur_prob > (1 - (2 * _EPS2) * _BIAS)
                tailp += cur_prob
                quarter_numer = tmp_homa * tmp_homb
                break
            centerp += cur_prob
            if centerp > _DBL_MAX:
                return None
        right = [cur_prob, tmp_hets, tmp_homa, tmp_homb]
        while quarter_numer > 0.5:
            tmp_hets += 2
            cur_prob *= (4 * quarter_numer) / (tmp_hets * (tmp_hets - 1))
            tmp_homa -= 1
            tmp_homb -= 1
            preaddp = tailp
            tailp += cur_prob
            if tailp <= preaddp:
                break
            quarter_numer = tmp_homa * tmp_homb
        tmp_hets, tmp_homa, tmp_homb = hetab, homa, homb
        cur_prob = left[0]
        while tmp_hets > 1.5:
            tmp_homa += 1
            tmp_homb += 1
            cur_prob *= (tmp_hets * (tmp_hets - 1)) / (4 * tmp_homa * tmp_homb)
            preaddp = tailp
            tailp += cur_prob
            if tailp <= preaddp:
                break
            tmp_hets -= 2
    return tailp, centerp, tie_ct, left, right


def hwe_x_p(female_hets: int, female_hom1: int, female_hom2: int, male1: int, male2: int) -> float:
    """plink2's chrX HWE exact p-value (``HweXchrP``, not mid-p) for one variant.

    Parameters
    ----------
    female_hets, female_hom1, female_hom2 : the females' genotype counts
    male1, male2 : the males' allele counts (hemizygous calls; male hets are not counted)
    """
    if not male1 and not male2:
        return float(hwe_exact_p(np.array([female_hom1]), np.array([female_hets]), np.array([female_hom2]))[0])
    hetd, hom1d, hom2d = float(female_hets), float(female_hom1), float(female_hom2)
    n1 = hetd + 2 * hom1d
    n2 = hetd + 2 * hom2d
    first = _first_row(hetd, hom1d, hom2d)
    if first is None:
        return 0.0
    tailp, centerp, tie_ct, orig_left, orig_right = first
    tie = [tie_ct]
    orig_row_prob = tailp + centerp
    n1 += male1
    n2 += male2
    for male1_decreasing in (False, True):
        cur_male1, cur_male2 = float(male1), float(male2)
        row_prob = orig_row_prob
        left, right = list(orig_left), list(orig_right)  # [base_prob, hets, hom1, hom2]
        if male1_decreasing:
            iter_ct = min(2 * female_hom2 + female_hets, male1)
        else:
            iter_ct = min(2 * female_hom1 + female_hets, male2)
        for _ in range(iter_ct):
            if male1_decreasing:
                old_male1 = cur_male1
                old_female2 = n2 - cur_male2
                cur_male2 += 1
                cur_male1 -= 1
                # row likelihood: (n1 choose male1) (n2 choose male2) / ((n1 + n2) choose (male1 + male2))
                row_prob *= (old_male1 * old_female2) / (cur_male2 * (n1 - cur_male1))
                if left[1] != 0.0:
                    left[2] += 1
                    left[0] *= (old_male1 * left[1]) / (2 * cur_male2 * left[2])
                    left[1] -= 1
                else:
                    left[1] += 1
                    left[0] *= (2 * old_male1 * left[3]) / (cur_male2 * left[1])
                    left[3] -= 1
            else:
                old_male2 = cur_male2
                old_female1 = n1 - cur_male1
                cur_male1 += 1
                cur_male2 -= 1
                row_prob *= (old_male2 * old_female1) / (cur_male1 * (n2 - cur_male2))
                if left[1] != 0.0:
                    left[3] += 1
                    left[0] *= (old_male2 * left[1]) / (2 * cur_male1 * left[3])
                    left[1] -= 1
                else:
                    left[1] += 1
                    left[0] *= (2 * old_male2 * left[2]) / (cur_male1 * left[1])
                    left[2] -= 1
            too_probable, tail_incr1 = _tailsum(False, left, tie)
            if too_probable:
                # every table of this row and of the rows after it is less probable than the observed one
                cur_female1 = n1 - cur_male1
                cur_female2 = n2 - cur_male2
                if male1_decreasing:
                    while True:
                        preaddp = tailp
                        tailp += row_prob
                        if tailp == preaddp:
                            break
                        cur_male2 += 1
                        cur_female1 += 1
                        row_prob *= (cur_male1 * cur_female2) / (cur_male2 * cur_female1)
                        cur_male1 -= 1
                        cur_female2 -= 1
                else:
                    while True:
                        preaddp = tailp
                        tailp += row_prob
                        if tailp == preaddp:
                            break
                        cur_male1 += 1
                        cur_female2 += 1
                        row_prob *= (cur_male2 * cur_female1) / (cur_male1 * cur_female2)
                        cur_male2 -= 1
                        cur_female1 -= 1
                break
            tailp += tail_incr1
            if male1_decreasing:
                old_male1 = cur_male1 + 1
                if right[3] != 0.0:
                    right[1] += 1
                    right[0] *= (2 * old_male1 * right[3]) / (cur_male2 * right[1])
                    right[3] -= 1
                else:
                    right[2] += 1
                    right[0] *= (old_male1 * right[1]) / (2 * cur_male2 * right[2])
                    right[1] -= 1
            else:
                old_male2 = cur_male2 + 1
                if right[2] != 0.0:
                    right[1] += 1
                    right[0] *= (2 * old_male2 * right[2]) / (cur_male1 * right[1])
                    right[2] -= 1
                else:
                    right[3] += 1
                    right[0] *= (old_male2 * right[1]) / (2 * cur_male1 * right[3])
                    right[1] -= 1
            _, tail_incr2 = _tailsum(True, right, tie)
            tailp += tail_incr2
            centerp += row_prob - tail_incr1 - tail_incr2
            if centerp > _DBL_MAX:
                return 0.0
    return tailp / (tailp + centerp)


@dataclass(frozen=True)
class HardyX:
    """The ``.hardy.x`` table: one row per chrX variant, A1 = REF, AX = ALT.

    Attributes
    ----------
    rows : [array, shape: (n_x,), dtype int64] the chrX variants' rows in the job's variant list
    female_hom_ref, female_het, female_hom_alt : int64 females' genotype counts
        (FEMALE_HOM_A1_CT, FEMALE_HET_A1_CT, FEMALE_TWO_AX_CT)
    male_ref, male_alt : int64 males' hemizygous counts (MALE_A1_CT, MALE_AX_CT; male hets are left out)
    o_het, e_het : float64 O(FEMALE_HET_A1) and E(FEMALE_HET_A1); E is 0 where every female is
        homozygous REF (printed ``0``, as plink2 does to avoid 1 - 1)
    female_ref_freq, male_ref_freq : float64 FEMALE_A1_FREQ, MALE_A1_FREQ (NaN for 0/0)
    p : float64 the joint exact test's p-value (P)
    """

    rows: np.ndarray
    female_hom_ref: np.ndarray
    female_het: np.ndarray
    female_hom_alt: np.ndarray
    male_ref: np.ndarray
    male_alt: np.ndarray
    o_het: np.ndarray
    e_het: np.ndarray
    female_ref_freq: np.ndarray
    male_ref_freq: np.ndarray
    p: np.ndarray


def hardy_x(
    rows: np.ndarray,
    *,
    female_hom_ref: np.ndarray,
    female_het: np.ndarray,
    female_hom_alt: np.ndarray,
    male_ref: np.ndarray,
    male_alt: np.ndarray,
) -> HardyX:
    """The ``.hardy.x`` columns from pooled female genotype counts and male allele counts.

    Every argument is [array, shape: (n_x,)]; the arithmetic is plink2's (``HardyReport``): with
    ``r = 1 / n_female``, ``d = (2 hom_ref + het) r`` (twice the female REF frequency),
    O = het r, E = d (1 - 0.5 d), FEMALE_A1_FREQ = 0.5 d, MALE_A1_FREQ = ref / (ref + alt).
    """
    fr, fh, fa, mr, ma = (
        np.asarray(a, dtype=np.int64) for a in (female_hom_ref, female_het, female_hom_alt, male_ref, male_alt)
    )
    n_f = fr + fh + fa
    with np.errstate(divide="ignore", invalid="ignore"):
        recip = 1.0 / n_f.astype(np.float64)
        dbl = (2 * fr + fh).astype(np.float64) * recip
        o_het = fh.astype(np.float64) * recip
        e_het = np.where(fr == n_f, 0.0, dbl * (1.0 - 0.5 * dbl))
        male_freq = mr.astype(np.float64) / (mr + ma).astype(np.float64)
    p = np.array(
        [hwe_x_p(int(h), int(r), int(a), int(m1), int(m2)) for h, r, a, m1, m2 in zip(fh, fr, fa, mr, ma, strict=True)],
        dtype=np.float64,
    )
    return HardyX(
        rows=np.asarray(rows, dtype=np.int64),
        female_hom_ref=fr,
        female_het=fh,
        female_hom_alt=fa,
        male_ref=mr,
        male_alt=ma,
        o_het=o_het,
        e_het=e_het,
        female_ref_freq=dbl * 0.5,
        male_ref_freq=male_freq,
        p=p,
    )
