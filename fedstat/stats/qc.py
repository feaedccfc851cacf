"""Variant quality control on pooled counts: plink2's ``--geno``, ``--hwe`` and ``--maf``.

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
kept by ``--maf`` (plink2 2.00a3.5 keeps it; ``--geno`` removes it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstat.errors import InputError
from fedstat.stats.hwe import hwe_exact_p


@dataclass(frozen=True)
class VariantQc:
    """Thresholds; ``None`` leaves a filter off.

    Attributes
    ----------
    geno : keep variants whose missing call rate is at most this (``--geno``; plink2's default
        when the flag is given bare is 0.1)
    hwe : keep variants whose HWE exact-test p-value is at least this (``--hwe``)
    maf : keep variants whose minor (nonmajor) allele frequency is at least this (``--maf``)
    """

    geno: float | None = None
    hwe: float | None = None
    maf: float | None = None

    def __post_init__(self) -> None:
        for name in ("geno", "hwe", "maf"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise InputError(f"--{name} must be between 0 and 1, got {value:g}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.geno, self.hwe, self.maf))


@dataclass(frozen=True)
class QcResult:
    """Which variants pass, and how many each filter removed (plink2's order and counting).

    Attributes
    ----------
    keep : [array, shape: (n_variants,), dtype bool] True for variants that pass every filter
    removed : filter name (``geno``, ``hwe``, ``maf``) -> variants it removed among those the
        earlier filters kept
    """

    keep: np.ndarray
    removed: dict[str, int]

    def log_lines(self) -> list[str]:
        what = {
            "geno": "--geno: {} variants removed due to missing genotype data",
            "hwe": "--hwe: {} variants removed due to Hardy-Weinberg exact test",
            "maf": "--maf: {} variants removed due to allele frequency threshold",
        }
        lines = [what[name].format(n) for name, n in self.removed.items()]
        return [*lines, f"{int(self.keep.sum())} variants remaining after main filters"]


def variant_filter(
    qc: VariantQc, *, hom_ref: np.ndarray, het: np.ndarray, hom_alt: np.ndarray, missing: np.ndarray
) -> QcResult:
    """Apply ``qc`` to pooled genotype counts.

    Parameters
    ----------
    hom_ref, het, hom_alt, missing : [array, shape: (n_variants,)] pooled counts per variant (the
        sums behind ``.gcount``)

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
        alleles = 2 * called
        with np.errstate(invalid="ignore", divide="ignore"):
            alt = (het + 2 * hom_alt) / alleles  # ALT_FREQS of .afreq
        minor = np.minimum(alt, 1.0 - alt)
        fails = minor < qc.maf  # NaN (no call at all) is kept, as plink2 keeps it
        removed["maf"] = int((fails & keep).sum())
        keep &= ~fails
    return QcResult(keep=keep, removed=removed)
