"""The allele reports on chrX, chrY and MT, as plink2 2.00a3.5 counts them.

plink2 counts a variant by its chromosome's ploidy (measured with the binary; ``plink2_data.cc``
``LoadAlleleAndGenoCountsThread``, ``plink2_misc.cc``):

=======  =====================================================================================
chrX     females and unknown-sex samples diploid, males haploid. ``.gcount``: HOM_REF_CT,
         HET_REF_ALT_CTS, TWO_ALT_GENO_CTS over the non-males, HAP_REF_CT / HAP_ALT_CTS the males'
         homozygous calls, a male het counts in MISSING_CT. ``.afreq``: a non-male is two allele
         observations, a male one with half his ALT dosage (a male het is 0.5 ALT). ``.vmiss``:
         every sample, a male het is not missing. ``--hardy`` writes ``.hardy.x`` (females and
         males, :mod:`fedstat.stats.hwe_x`) and leaves chrX out of ``.hardy``.
chrY     males only (females' and unknown-sex samples' calls are ignored, also in ``.vmiss``
         OBS_CT), haploid as on chrX; ``--hardy`` skips it.
MT       everyone haploid: hets are MISSING_CT in ``.gcount`` and 0.5 ALT in ``.afreq``, not
         missing in ``.vmiss``; ``--hardy`` skips it.
other    diploid for everyone, as an autosome (XY, PAR1, PAR2 included).
=======  =====================================================================================

So the sites release, besides the usual four genotype counts of the cohort (:data:`TOTALS`, not
over chrY), the same counts over their males (:data:`MALE`, chrX and chrY) and, for ``--hardy``,
over their females (:data:`FEMALE`, chrX); :func:`sex_rounds` says which variants each round
covers and :func:`combine` turns the pooled sums into plink2's reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fedstat.data.genotypes import DOSAGE_UNIT
from fedstat.errors import InputError
from fedstat.stats.allele import AlleleStats, checked_counts, finish
from fedstat.stats.hwe_x import HardyX, hardy_x
from fedstat.stats.machr2 import SSQ_NAME, mach_r2

__all__ = ["FEMALE", "MALE", "SEX_CHROMS", "TOTALS", "SexRounds", "combine", "sex_rounds"]

#: Chromosomes counted by sex or haploid (plink2's codes, :func:`fedstat.data.variants.normalise_chrom`).
SEX_CHROMS = frozenset({"X", "Y", "MT"})
#: The groups a round of genotype counts runs over: the cohort, its males, its females.
TOTALS, MALE, FEMALE = "cohort", "male", "female"
_DD = 2 * DOSAGE_UNIT  # plink2's "ddosage" units: one allele = 32768


@dataclass(frozen=True)
class SexRounds:
    """Which of the job's variants each round of genotype counts covers (rows of the variant list).

    Attributes
    ----------
    rows : group (:data:`TOTALS`, :data:`MALE`, :data:`FEMALE`) -> [array, dtype int64] the
        variants its round covers, increasing; only groups with a round
    kind : [array, shape: (n_variants,), dtype str] ``X``, ``Y``, ``MT`` or ``""`` (diploid)
    """

    rows: Mapping[str, np.ndarray]
    kind: np.ndarray

    @property
    def any_sex(self) -> bool:
        """Whether any variant is on chrX, chrY or MT."""
        return bool((self.kind != "").any())


def sex_rounds(chrom: Iterable[str], analyses: Iterable[str]) -> SexRounds:
    """The rounds the allele reports ``analyses`` need over variants on ``chrom`` (one per variant).

    Only what plink2's tables use is released: the cohort's counts everywhere but chrY (and chrX
    for ``--hardy`` alone), the males' on chrX and (but for ``--hardy`` alone) chrY, the
    females' on chrX for ``--hardy``.
    """
    chrom = np.asarray(list(chrom), dtype=str)
    kind = np.where(np.isin(chrom, sorted(SEX_CHROMS)), chrom, "")
    wanted = set(analyses)
    others = bool(wanted - {"hardy"})  # --freq / --geno-counts / --missing
    dip, x, y, mt = (kind == k for k in ("", "X", "Y", "MT"))
    masks = {
        TOTALS: dip | ((x | mt) & others),
        MALE: x | (y & others),
        FEMALE: x & ("hardy" in wanted),
    }
    rows = {g: np.flatnonzero(m).astype(np.int64) for g, m in masks.items() if m.any()}
    return SexRounds(rows=rows, kind=kind)


def _obs_and_alt(c: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(samples observed, ALT dosage in 1/16384 of a diploid dosage) per variant of one group."""
    if "dosage_sum" in c:
        return c["dosage_obs"], c["dosage_sum"]
    return c["hom_ref"] + c["het"] + c["hom_alt"], (c["het"] + 2 * c["hom_alt"]) * DOSAGE_UNIT


def combine(
    plan: SexRounds, sums: Mapping[str, Mapping[str, np.ndarray]]
) -> tuple[AlleleStats, np.ndarray, HardyX | None]:
    """plink2's allele statistics over every variant from the pooled sums of each round.

    Parameters
    ----------
    plan : from :func:`sex_rounds`
    sums : group -> that round's pooled sums (:data:`fedstat.stats.allele.SUM_NAMES`, and the
        dosage sums where the round read dosages), over ``plan.rows[group]``

    Returns
    -------
    (stats over all variants, the rows of ``.hardy``, the ``.hardy.x`` table or None)

    Raises
    ------
    InputError
        If a round's sums are missing or malformed, or the males' counts exceed the cohort's.
    """
    n = plan.kind.shape[0]
    counts = {}
    for group, rows in plan.rows.items():
        if group not in sums:
            raise InputError(f"allele statistics need the {group} round's sums")
        counts[group] = checked_counts(sums[group])
        if counts[group]["hom_ref"].shape != rows.shape:
            raise InputError(
                f"the {group} round's sums cover {counts[group]['hom_ref'].shape[0]} variants, not {rows.size}"
            )
    zi, zf = np.zeros(n, dtype=np.int64), np.full(n, np.nan)
    out = {k: zi.copy() for k in ("hom_ref", "het", "hom_alt", "missing", "hap_ref", "hap_alt", "obs_ct")}
    out |= {"call_missing": zi.copy(), "call_total": zi.copy(), "alt_dd": zi.copy()}
    flt = {k: zf.copy() for k in ("hwe_p", "het_obs_frac", "het_exp_frac")}
    hardy_x_table = None

    def at(group: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``group``'s sums at the variant ``rows`` (which its round covers)."""
        pos = np.searchsorted(plan.rows[group], rows)
        return {k: v[pos] for k, v in counts[group].items()}

    dip = np.flatnonzero(plan.kind == "")
    if dip.size:  # as an autosome: allele.finish, then in plink2's ddosage units
        t = at(TOTALS, dip)
        s = finish(t)
        for k in ("hom_ref", "het", "hom_alt", "missing", "obs_ct"):
            out[k][dip] = getattr(s, k)
        out["alt_dd"][dip] = 2 * _obs_and_alt(t)[1]
        out["call_missing"][dip] = t["missing"]
        out["call_total"][dip] = s.n_samples
        flt["hwe_p"][dip], flt["het_obs_frac"][dip], flt["het_exp_frac"][dip] = s.hwe_p, s.het_obs_frac, s.het_exp_frac
    for kind, hap in (("MT", TOTALS), ("Y", MALE)):  # haploid: everyone on MT, the males on chrY
        rows = np.flatnonzero(plan.kind == kind)
        if rows.size and hap in plan.rows and np.isin(rows, plan.rows[hap]).all():
            c = at(hap, rows)
            out["hap_ref"][rows], out["hap_alt"][rows] = c["hom_ref"], c["hom_alt"]
            out["missing"][rows] = c["missing"] + c["het"]  # a haploid het is missing in .gcount
            out["call_missing"][rows] = c["missing"]
            out["call_total"][rows] = c["hom_ref"] + c["het"] + c["hom_alt"] + c["missing"]
            out["obs_ct"][rows], out["alt_dd"][rows] = _obs_and_alt(c)  # one allele each, half the dosage
    x = np.flatnonzero(plan.kind == "X")
    if x.size and TOTALS in plan.rows and np.isin(x, plan.rows[TOTALS]).all():
        t, m = at(TOTALS, x), at(MALE, x)
        nm = {k: t[k] - m[k] for k in t}  # the non-males: females and unknown sex, diploid
        if any(int(v.min()) < 0 for v in nm.values()):
            raise InputError("the males' genotype counts on chrX exceed the cohort's: the sites' sums are inconsistent")
        out["hom_ref"][x], out["het"][x], out["hom_alt"][x] = nm["hom_ref"], nm["het"], nm["hom_alt"]
        out["hap_ref"][x], out["hap_alt"][x] = m["hom_ref"], m["hom_alt"]
        out["missing"][x] = t["missing"] + m["het"]  # a male het is missing in .gcount
        out["call_missing"][x] = t["missing"]
        out["call_total"][x] = t["hom_ref"] + t["het"] + t["hom_alt"] + t["missing"]
        (nm_obs, nm_alt), (m_obs, m_alt) = _obs_and_alt(nm), _obs_and_alt(m)
        out["obs_ct"][x] = 2 * nm_obs + m_obs
        out["alt_dd"][x] = 2 * nm_alt + m_alt
    if x.size and FEMALE in plan.rows:
        f, m = at(FEMALE, x), at(MALE, x)
        hardy_x_table = hardy_x(
            x,
            female_hom_ref=f["hom_ref"],
            female_het=f["het"],
            female_hom_alt=f["hom_alt"],
            male_ref=m["hom_ref"],
            male_alt=m["hom_alt"],
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        # plink2: ALT ddosage times the reciprocal of the total (0/0 -> NaN)
        alt_freq = out["alt_dd"].astype(np.float64) * (1.0 / (out["obs_ct"] * _DD).astype(np.float64))
        f_miss = out["call_missing"].astype(np.float64) / out["call_total"]
    if dip.size:
        alt_freq[dip] = s.alt_freq  # the same numbers (scaled by 2), as allele.finish computes them
    r2 = _mach_r2(plan, counts, at, None if not dip.size else s.mach_r2)
    stats = AlleleStats(
        hom_ref=out["hom_ref"],
        het=out["het"],
        hom_alt=out["hom_alt"],
        missing=out["missing"],
        obs_ct=out["obs_ct"],
        alt_freq=alt_freq,
        hwe_p=flt["hwe_p"],
        het_obs_frac=flt["het_obs_frac"],
        het_exp_frac=flt["het_exp_frac"],
        f_miss=f_miss,
        hap_ref=out["hap_ref"],
        hap_alt=out["hap_alt"],
        call_missing=out["call_missing"],
        call_total=out["call_total"],
        mach_r2=r2,
    )
    return stats, dip, hardy_x_table


def _mach_r2(
    plan: SexRounds,
    counts: Mapping[str, Mapping[str, np.ndarray]],
    at: Callable[[str, np.ndarray], dict[str, np.ndarray]],
    diploid: np.ndarray | None,
) -> np.ndarray | None:
    """MaCH r² over every variant where the rounds summed squared dosages (None where none did):
    the diploid variants' from the cohort's sums (``diploid``), chrY's from the males', halved (as
    plink2), NaN on chrX and MT (plink2 prints NA there)."""
    if not any(SSQ_NAME in c for c in counts.values()):
        return None
    r2 = np.full(plan.kind.shape[0], np.nan)
    dip = np.flatnonzero(plan.kind == "")
    if dip.size:
        if diploid is None:
            raise InputError(f"MaCH r² needs the cohort round's {SSQ_NAME!r}")
        r2[dip] = diploid
    y = np.flatnonzero(plan.kind == "Y")
    if y.size:
        if MALE not in counts or SSQ_NAME not in counts[MALE]:
            raise InputError(f"MaCH r² on chrY needs the males' round's {SSQ_NAME!r}")
        m = at(MALE, y)
        r2[y] = mach_r2(m["dosage_sum"], m[SSQ_NAME], m["dosage_obs"], haploid=True)
    return r2
