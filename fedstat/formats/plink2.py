"""plink2-format report tables and plink2's number formatting.

The writers produce the same bytes plink2 2.00a3.5 writes for ``--freq``, ``--geno-counts``,
``--hardy`` and ``--missing`` (variant report) on autosomal biallelic variants:

=========  ==========================================================================
``.afreq`` ``#CHROM ID REF ALT ALT_FREQS OBS_CT`` (OBS_CT: allele observations)
``.gcount````#CHROM ID REF ALT HOM_REF_CT HET_REF_ALT_CTS TWO_ALT_GENO_CTS HAP_REF_CT
           HAP_ALT_CTS MISSING_CT`` (haploid counts are 0 on autosomes)
``.hardy`` ``#CHROM ID A1 AX HOM_A1_CT HET_A1_CT TWO_AX_CT O(HET_A1) E(HET_A1) P``
           (A1 = REF, AX = ALT)
``.vmiss`` ``#CHROM ID MISSING_CT OBS_CT F_MISS`` (OBS_CT: all samples, missing included)
=========  ==========================================================================

Columns are tab-separated, lines end in ``\\n``. Non-finite values print as plink2 prints
them: ``nan`` (not ``NA``) and ``inf``.

Every file is written atomically: to ``<path>.tmp``, flushed and fsynced, then renamed over
``<path>``; on any error the temporary file is removed and ``<path>`` is left untouched.

References
----------
plink2 ``dtoa_g`` (``plink2_string.cc``): 6 significant digits, trailing zeros removed,
banker's rounding of near-ties (within 5e-9 of a unit in the last place), exponents of at
least two digits (``1e-05``, ``5.36356e-300``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.formats.atomic import atomic_write_text
from fedstat.formats.numbers import format_g_array, int_strings

if TYPE_CHECKING:  # pragma: no cover - import only for annotations, avoids a cycle
    from fedstat.stats.allele import AlleleStats

__all__ = [
    "AFREQ_HEADER",
    "GCOUNT_HEADER",
    "HARDY_HEADER",
    "VMISS_HEADER",
    "write_afreq",
    "write_gcount",
    "write_hardy",
    "write_vmiss",
]

AFREQ_HEADER = ("#CHROM", "ID", "REF", "ALT", "ALT_FREQS", "OBS_CT")
GCOUNT_HEADER = (
    "#CHROM",
    "ID",
    "REF",
    "ALT",
    "HOM_REF_CT",
    "HET_REF_ALT_CTS",
    "TWO_ALT_GENO_CTS",
    "HAP_REF_CT",
    "HAP_ALT_CTS",
    "MISSING_CT",
)
HARDY_HEADER = (
    "#CHROM",
    "ID",
    "A1",
    "AX",
    "HOM_A1_CT",
    "HET_A1_CT",
    "TWO_AX_CT",
    "O(HET_A1)",
    "E(HET_A1)",
    "P",
)
VMISS_HEADER = ("#CHROM", "ID", "MISSING_CT", "OBS_CT", "F_MISS")

# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def _table_lines(header: tuple[str, ...], columns: list[list[str]]) -> Iterable[str]:
    yield "\t".join(header) + "\n"
    rows = ["\t".join(row) for row in zip(*columns, strict=True)]
    block = 8192
    for start in range(0, len(rows), block):
        yield "\n".join(rows[start : start + block]) + "\n"


def _check_rows(variants: VariantTable, stats: AlleleStats, what: str) -> None:
    if len(variants) != len(stats.hom_ref):
        raise ValueError(f"{what}: variant table has {len(variants)} rows but the statistics have {len(stats.hom_ref)}")


def _strs(values: np.ndarray) -> list[str]:
    return [str(v) for v in values.tolist()]


def write_afreq(path: str | Path, variants: VariantTable, stats: AlleleStats) -> Path:
    """Write a plink2 ``.afreq`` table (``--freq``).

    Columns ``#CHROM ID REF ALT ALT_FREQS OBS_CT``; ALT_FREQS is ``nan`` when OBS_CT is 0.
    """
    _check_rows(variants, stats, "write_afreq")
    cols = [
        _strs(variants.chrom),
        _strs(variants.id),
        _strs(variants.ref),
        _strs(variants.alt),
        format_g_array(stats.alt_freq),
        int_strings(stats.obs_ct),
    ]
    return atomic_write_text(path, _table_lines(AFREQ_HEADER, cols))


def write_gcount(path: str | Path, variants: VariantTable, stats: AlleleStats) -> Path:
    """Write a plink2 ``.gcount`` table (``--geno-counts``); haploid counts are 0."""
    _check_rows(variants, stats, "write_gcount")
    zeros = ["0"] * len(variants)
    cols = [
        _strs(variants.chrom),
        _strs(variants.id),
        _strs(variants.ref),
        _strs(variants.alt),
        int_strings(stats.hom_ref),
        int_strings(stats.het),
        int_strings(stats.hom_alt),
        zeros,
        zeros,
        int_strings(stats.missing),
    ]
    return atomic_write_text(path, _table_lines(GCOUNT_HEADER, cols))


def write_hardy(path: str | Path, variants: VariantTable, stats: AlleleStats) -> Path:
    """Write a plink2 ``.hardy`` table (``--hardy``), A1 = REF, AX = ALT."""
    _check_rows(variants, stats, "write_hardy")
    cols = [
        _strs(variants.chrom),
        _strs(variants.id),
        _strs(variants.ref),
        _strs(variants.alt),
        int_strings(stats.hom_ref),
        int_strings(stats.het),
        int_strings(stats.hom_alt),
        format_g_array(stats.het_obs_frac),
        format_g_array(stats.het_exp_frac),
        format_g_array(stats.hwe_p),
    ]
    return atomic_write_text(path, _table_lines(HARDY_HEADER, cols))


def write_vmiss(path: str | Path, variants: VariantTable, stats: AlleleStats) -> Path:
    """Write a plink2 ``.vmiss`` table (``--missing``); OBS_CT counts all samples."""
    _check_rows(variants, stats, "write_vmiss")
    total = stats.hom_ref + stats.het + stats.hom_alt + stats.missing
    cols = [
        _strs(variants.chrom),
        _strs(variants.id),
        int_strings(stats.missing),
        int_strings(total),
        format_g_array(stats.f_miss),
    ]
    return atomic_write_text(path, _table_lines(VMISS_HEADER, cols))
