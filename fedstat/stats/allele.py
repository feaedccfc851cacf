"""Allele statistics: ``--freq``, ``--geno-counts``, ``--hardy``, ``--missing`` (variant report).

All four reports follow from four per-variant sums over participants: the numbers of
homozygous-REF, heterozygous, homozygous-ALT and missing genotypes. A site computes them
on its own samples (:func:`local_sums`); the coordinator adds the sites' sums and derives
every reported quantity from the totals (:func:`finish`); :class:`AlleleReports` names the
tables to write, which :func:`fedstat.formats.plink2.write_reports` writes in plink2's format.
The totals, and so the reports, equal plink2's on the pooled samples, whatever the split of
samples across sites.

References
----------
plink2 2.00a3.5 ``--freq``, ``--geno-counts``, ``--hardy``, ``--missing`` on autosomal
biallelic variants (chrX, chrY and MT: :mod:`fedstat.stats.sexchr`, from the same sums over the
cohort's males and females); see :mod:`fedstat.formats.plink2` for the column layouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedstat.data.genotypes import DOSAGE_UNIT
from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.stats.hwe import hwe_exact_p
from fedstat.stats.hwe_x import HardyX
from fedstat.stats.machr2 import SSQ_NAME, mach_r2

__all__ = [
    "ANALYSES",
    "SUM_NAMES",
    "AlleleReports",
    "AlleleStats",
    "checked_counts",
    "finish",
    "local_sums",
]

SUM_NAMES = ("hom_ref", "het", "hom_alt", "missing")
#: With dosages (``--freq`` as plink2 computes it: from the ALT dosages, a hard call where no dosage
#: is stored): the ALT dosage sum in 1/16384 units (plink2's own resolution, so the sums are exact
#: integers, :data:`~fedstat.data.genotypes.DOSAGE_UNIT`) and the samples with a dosage or a hard call.
DOSAGE_SUM_NAMES = ("dosage_sum", "dosage_obs")

ANALYSES = ("freq", "geno-counts", "hardy", "missing")  # plink2 flag names without '--'


def local_sums(block: np.ndarray) -> dict[str, np.ndarray]:
    """One site's genotype counts for a block of variants.

    Parameters
    ----------
    block : [array, shape: (n_variants, n_samples), dtype int8] ALT allele count 0/1/2,
        -9 for a missing call (any negative value counts as missing).

    Returns
    -------
    dict
        For each name in :data:`SUM_NAMES`, [array, shape: (n_variants,), dtype int64].

    Raises
    ------
    InputError
        If ``block`` is not 2-d or holds a value above 2.
    """
    block = np.asarray(block)
    if block.ndim != 2:
        raise InputError(f"local_sums needs a 2-d (variants x samples) block, got {block.ndim}-d")
    n_samples = block.shape[1]
    if block.size and int(block.max()) > 2:
        raise InputError("local_sums: genotype block holds an ALT allele count above 2")
    hom_ref = np.count_nonzero(block == 0, axis=1).astype(np.int64)
    het = np.count_nonzero(block == 1, axis=1).astype(np.int64)
    hom_alt = np.count_nonzero(block == 2, axis=1).astype(np.int64)
    missing = n_samples - hom_ref - het - hom_alt  # everything else is a missing call
    assert hom_ref.shape == (block.shape[0],)
    return {"hom_ref": hom_ref, "het": het, "hom_alt": hom_alt, "missing": missing}


def local_dosage_sums(dosages: np.ndarray | None, counts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One site's :data:`DOSAGE_SUM_NAMES` for a block.

    Parameters
    ----------
    dosages : [array, shape: (n_variants, n_samples), float] ALT dosages in [0, 2], negative where
        absent; None for a file without dosages, whose hard calls are its dosages
    counts : the block's :func:`local_sums`
    """
    if dosages is None:
        alt = (counts["het"] + 2 * counts["hom_alt"]) * DOSAGE_UNIT
        return {"dosage_sum": alt.astype(np.int64), "dosage_obs": counts["hom_ref"] + counts["het"] + counts["hom_alt"]}
    d = np.asarray(dosages)
    if d.size and float(d.max()) > 2.0:
        raise InputError("local_dosage_sums: a dosage block holds an ALT dosage above 2")
    present = d >= 0
    # float64 sums of multiples of 2^-14 are exact far beyond any cohort size
    total = np.where(present, d, 0).sum(axis=1, dtype=np.float64)
    return {
        "dosage_sum": np.rint(total * DOSAGE_UNIT).astype(np.int64),
        "dosage_obs": np.count_nonzero(present, axis=1).astype(np.int64),
    }


@dataclass(frozen=True)
class AlleleStats:
    """Global allele statistics. Every field is [array, shape: (n_variants,)].

    Attributes
    ----------
    hom_ref, het, hom_alt, missing : int64 genotype counts (plink2 HOM_REF_CT,
        HET_REF_ALT_CTS, TWO_ALT_GENO_CTS, MISSING_CT)
    obs_ct : int64 allele observations, ``2 (hom_ref + het + hom_alt)`` (.afreq OBS_CT); with
        dosages, twice the samples with a dosage or a hard call
    alt_freq : float64 ALT allele frequency ``(het + 2 hom_alt) / obs_ct``, or the ALT dosage sum
        over ``obs_ct`` with dosages; NaN when ``obs_ct == 0`` (.afreq ALT_FREQS)
    hwe_p : float64 exact Hardy–Weinberg p-value (.hardy P); 1 when no genotype is observed
    het_obs_frac : float64 observed heterozygote share ``het / (hom_ref + het + hom_alt)``;
        NaN when no genotype is observed (.hardy O(HET_A1))
    het_exp_frac : float64 heterozygote share expected under HWE, ``2 p (1 - p)`` with p the
        REF frequency; 0 when no genotype is observed (.hardy E(HET_A1))
    f_miss : float64 share of missing calls among all samples (.vmiss F_MISS); NaN when
        there are no samples
    hap_ref, hap_alt : int64 haploid REF / ALT calls (.gcount HAP_REF_CT, HAP_ALT_CTS): males on
        chrX/chrY, everyone on MT (:mod:`fedstat.stats.sexchr`); None: 0 everywhere
    call_missing, call_total : int64 .vmiss MISSING_CT and OBS_CT where they differ from
        ``missing`` and all samples (chrY: males only; chrX/MT: ``missing`` also counts haploid
        hets, .vmiss does not); None: ``missing`` and :attr:`n_samples`
    mach_r2 : float64 MaCH r² (.afreq MACH_R2, :mod:`fedstat.stats.machr2`) where the round summed
        squared dosages; NaN where plink2 prints nan (0/0) and on chrX/MT (printed NA); None: not asked
    """

    hom_ref: np.ndarray
    het: np.ndarray
    hom_alt: np.ndarray
    missing: np.ndarray
    obs_ct: np.ndarray
    alt_freq: np.ndarray
    hwe_p: np.ndarray
    het_obs_frac: np.ndarray
    het_exp_frac: np.ndarray
    f_miss: np.ndarray
    hap_ref: np.ndarray | None = None
    hap_alt: np.ndarray | None = None
    call_missing: np.ndarray | None = None
    call_total: np.ndarray | None = None
    mach_r2: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.hom_ref.shape[0])

    @property
    def n_samples(self) -> np.ndarray:
        """[array, shape: (n_variants,), dtype int64] all samples, missing calls included."""
        total: np.ndarray = self.hom_ref + self.het + self.hom_alt + self.missing
        return total


def checked_counts(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The :data:`SUM_NAMES` (and, where present, :data:`DOSAGE_SUM_NAMES`) of ``sums`` as int64
    arrays, checked: 1-d, one shape, whole and non-negative.

    Raises
    ------
    InputError
        If a sum is missing, the arrays differ in shape, or a count is negative or not whole.
    """
    missing_names = [name for name in SUM_NAMES if name not in sums]
    if missing_names:
        raise InputError(f"allele statistics need the sums {SUM_NAMES}; missing {missing_names}")
    counts = {}
    shape = None
    names = SUM_NAMES + (DOSAGE_SUM_NAMES if DOSAGE_SUM_NAMES[0] in sums else ())
    names += (SSQ_NAME,) if SSQ_NAME in sums else ()
    for name in names:
        raw = np.asarray(sums[name])
        if raw.ndim != 1:
            raise InputError(f"sum {name!r} must be 1-d, got shape {raw.shape}")
        if shape is None:
            shape = raw.shape
        elif raw.shape != shape:
            raise InputError(f"sum {name!r} has shape {raw.shape}, expected {shape}")
        arr = raw.astype(np.int64)
        if raw.dtype.kind == "f" and not np.array_equal(arr, raw):
            raise InputError(f"sum {name!r} holds a non-integral count")
        if arr.size and int(arr.min()) < 0:
            raise InputError(f"sum {name!r} holds a negative count")
        counts[name] = arr
    return counts


def alt_frequencies(counts: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(allele observations, ALT frequency) per variant, as plink2 computes them: from the ALT
    dosage sums where the round has them (:data:`DOSAGE_SUM_NAMES`), else from the hard calls;
    the ALT dosage times the reciprocal of the observations in dosage units; 0/0 -> NaN."""
    if "dosage_sum" in counts:
        obs_ct = 2 * np.asarray(counts["dosage_obs"], dtype=np.int64)
        alt_units = np.asarray(counts["dosage_sum"], dtype=np.int64)
    else:
        het, hom_alt = (np.asarray(counts[n], dtype=np.int64) for n in ("het", "hom_alt"))
        obs_ct = 2 * (np.asarray(counts["hom_ref"], dtype=np.int64) + het + hom_alt)
        alt_units = (het + 2 * hom_alt) * DOSAGE_UNIT
    with np.errstate(invalid="ignore", divide="ignore"):
        alt_freq = alt_units.astype(np.float64) * (1.0 / (obs_ct * DOSAGE_UNIT).astype(np.float64))
    return obs_ct, alt_freq


def finish(sums: Mapping[str, np.ndarray]) -> AlleleStats:
    """Turn global (summed over sites) genotype counts into the reported statistics.

    Parameters
    ----------
    sums : for each name in :data:`SUM_NAMES`, [array, shape: (n_variants,)] of
        non-negative integers (any integer or integral float dtype); and, where the round read
        dosages, :data:`DOSAGE_SUM_NAMES` (the frequencies then come from the dosages, as plink2's
        ``--freq``; the other reports from the hard calls), with the squared dosages
        (:data:`fedstat.stats.machr2.SSQ_NAME`) where the job asks for MaCH r².

    Returns
    -------
    AlleleStats

    Raises
    ------
    InputError
        If a sum is missing, the arrays differ in shape, or a count is negative or not whole.
    """
    counts = checked_counts(sums)
    hom_ref, het, hom_alt, missing = (counts[n] for n in SUM_NAMES)

    n_obs = hom_ref + het + hom_alt  # genotyped samples
    n_all = n_obs + missing
    obs_ct, alt_freq = alt_frequencies(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        het_obs = het.astype(np.float64) / n_obs
        ref_freq = (2 * hom_ref + het).astype(np.float64) / (2 * n_obs)  # --hardy: hard calls
        f_miss = missing.astype(np.float64) / n_all
    het_exp = np.where(n_obs > 0, 2.0 * ref_freq * (1.0 - ref_freq), 0.0)
    hwe_p = hwe_exact_p(hom_ref, het, hom_alt)
    r2 = None
    if SSQ_NAME in counts:
        if "dosage_sum" not in counts:
            raise InputError(f"MaCH r² needs the dosage sums {DOSAGE_SUM_NAMES} with {SSQ_NAME!r}")
        r2 = mach_r2(counts["dosage_sum"], counts[SSQ_NAME], counts["dosage_obs"])
    return AlleleStats(
        hom_ref=hom_ref,
        het=het,
        hom_alt=hom_alt,
        missing=missing,
        obs_ct=obs_ct,
        alt_freq=alt_freq,
        hwe_p=hwe_p,
        het_obs_frac=het_obs,
        het_exp_frac=het_exp,
        f_miss=f_miss,
        mach_r2=r2,
    )


@dataclass(frozen=True)
class AlleleReports:
    """The allele reports of a job: which plink2 tables, over which variants.

    Attributes
    ----------
    variants : the variants counted, one row per entry of ``stats``
    stats : from :func:`finish`
    analyses : the requested :data:`ANALYSES`, in order
    hardy_rows : [array, shape: (n_hardy,), dtype int64] the rows of ``.hardy`` (the diploid
        variants: plink2 writes chrX to ``.hardy.x`` and skips chrY and MT); None: every row. No
        ``.hardy`` is written when it is empty, as plink2 writes none.
    hardy_x : the ``.hardy.x`` table when the job has chrX variants and ``--hardy``
    freq_columns : ``--freq cols=``'s columns (plink2's names); None for plink2's default set
    """

    variants: VariantTable
    stats: AlleleStats
    analyses: tuple[str, ...]
    hardy_rows: np.ndarray | None = None
    hardy_x: HardyX | None = None
    freq_columns: frozenset[str] | None = None
