"""Variant quality control on pooled counts: plink2's ``--geno``, ``--hwe``, ``--maf`` and
``--mach-r2-filter``.

Each filter is a function of one variant's pooled genotype counts (hom-ref, het, hom-alt,
missing), which the sites already sum for ``--geno-counts``. So the consortium applies exactly
plink2's filters to the pooled data without any site seeing another's counts. The filters are
independent per variant: the set kept does not depend on their order, but the counts removed by
each are reported in plink2's order (``--geno``, then ``--hwe``, then ``--maf``), each counting
only variants the earlier ones kept, as plink2's log does.

References
----------
plink2 2.00a3.5 (``plink2_filter.cc``): ``--geno`` removes variants whose missing call rate
exceeds the threshold; ``--hwe`` removes variants whose Hardy–Weinberg exact-test p-value
(founders; here every participant is a founder) is below it; ``--maf`` removes variants whose
nonmajor allele frequency is below it. A variant with no call at all has no frequency and is
kept by ``--maf`` (plink2 2.00a3.5 keeps it; ``--geno`` removes it). ``--mach-r2-filter`` comes
last, on MaCH r² from the pooled dosage sums (:mod:`fedstat.stats.machr2`, :func:`with_mach_r2`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstat.errors import InputError
from fedstat.stats.hwe import hwe_exact_p
from fedstat.stats.machr2 import outside_bounds


@dataclass(frozen=True)
class VariantQc:
    """Thresholds; ``None`` leaves a filter off.

    Attributes
    ----------
    geno : keep variants whose missing call rate is at most this (``--geno``; plink2's default
        when the flag is given bare is 0.1)
    hwe : keep variants whose HWE exact-test p-value is at least this (``--hwe``)
    maf : keep variants whose minor (nonmajor) allele frequency is at least this (``--maf``)
    mach_r2 : (min, max): keep variants whose MaCH r² lies in [min, max] (``--mach-r2-filter``;
        NaN is kept), applied after the others
    """

    geno: float | None = None
    hwe: float | None = None
    maf: float | None = None
    mach_r2: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("geno", "hwe", "maf"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise InputError(f"--{name} must be between 0 and 1, got {value:g}")
        if self.mach_r2 is not None and not 0 <= self.mach_r2[0] <= self.mach_r2[1]:
            raise InputError(f"--mach-r2-filter needs 0 <= min <= max, got {self.mach_r2[0]:g} {self.mach_r2[1]:g}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.geno, self.hwe, self.maf, self.mach_r2))


@dataclass(frozen=True)
class QcResult:
    """Which variants pass, and how many each filter removed (plink2's order and counting).

    Attributes
    ----------
    keep : [array, shape: (n_variants,), dtype bool] True for variants that pass every filter
    removed : filter name (``geno``, ``hwe``, ``maf``, ``mach_r2``) -> variants it removed among
        those the earlier filters kept
    """

    keep: np.ndarray
    removed: dict[str, int]

    def log_lines(self) -> list[str]:
        what = {
            "geno": "--geno: {} variants removed due to missing genotype data",
            "hwe": "--hwe: {} variants removed due to Hardy-Weinberg exact test",
            "maf": "--maf: {} variants removed due to allele frequency threshold",
        }
        lines = []
        for name, n in self.removed.items():
            if name == "mach_r2":  # plink2's own line (EnforceImpR2Thresh)
                lines.append(f"--mach-r2-filter: {n} variant{'' if n == 1 else 's'} removed.")
            else:
                lines.append(what[name].format(n))
        return [*lines, f"{int(self.keep.sum())} variants remaining after main filters"]


def variant_filter(
    qc: VariantQc,
    *,
    hom_ref: np.ndarray,
    het: np.ndarray,
    hom_alt: np.ndarray,
    missing: np.ndarray,
    alt_freq: np.ndarray | None = None,
) -> QcResult:
    """Apply ``qc`` to pooled genotype counts.

    Parameters
    ----------
    hom_ref, het, hom_alt, missing : [array, shape: (n_variants,)] pooled counts per variant (the
        sums behind ``.gcount``)
    alt_freq : [array, shape: (n_variants,)] the ALT frequencies ``--maf`` filters on, as plink2 from
        the dosages (:func:`fedstat.stats.allele.alt_frequencies`); None: from the hard calls

    Returns
    -------
    QcResult
    """
    hom_ref, het, hom_alt, missing = (np.asarray(a, dtype=np.int64) for a in (hom_ref, het, hom_alt, missing))
    n_variants = hom_ref.shape[0]
    assert het.shape == hom_alt.shape == missing.shape == (n_variants,)
    keep = np.ones(n_variants, dtype=bool)
    removed: dict[str, int] = {}
    called = hom_ref + het + hom_alt
    if qc.geno is not None:
        total = called + missing
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(total > 0, missing / np.maximum(total, 1), 0.0)  # F_MISS, as .vmiss prints it
        fails = rate > qc.geno
        removed["geno"] = int((fails & keep).sum())
        keep &= ~fails
    if qc.hwe is not None:
        p = hwe_exact_p(hom_ref, het, hom_alt)
        fails = p < qc.hwe
        removed["hwe"] = int((fails & keep).sum())
        keep &= ~fails
    if qc.maf is not None:
        if alt_freq is None:
            alleles = 2 * called
            with np.errstate(invalid="ignore", divide="ignore"):
                alt_freq = (het + 2 * hom_alt) / alleles  # ALT_FREQS of .afreq
        alt = np.asarray(alt_freq, dtype=np.float64)
        minor = np.minimum(alt, 1.0 - alt)
        fails = minor < qc.maf  # NaN (no call at all) is kept, as plink2 keeps it
        removed["maf"] = int((fails & keep).sum())
        keep &= ~fails
    return QcResult(keep=keep, removed=removed)


def with_mach_r2(
    result: QcResult, r2: np.ndarray, bounds: tuple[float, float], chrom: np.ndarray | None = None
) -> QcResult:
    """``result`` followed by ``--mach-r2-filter bounds`` (plink2 applies it after ``--maf``).

    Parameters
    ----------
    r2 : [array, shape: (n_variants,), float64] pooled MaCH r² (:func:`fedstat.stats.machr2.mach_r2`)
    chrom : [array, shape: (n_variants,), str] chromosome codes (chrX and MT are kept); None: no
        variant on them
    """
    assert r2.shape == result.keep.shape
    fails = outside_bounds(r2, np.full(r2.shape, "") if chrom is None else chrom, *bounds)
    removed = {**result.removed, "mach_r2": int((fails & result.keep).sum())}
    return QcResult(keep=result.keep & ~fails, removed=removed)
