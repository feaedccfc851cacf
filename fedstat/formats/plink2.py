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

if TYPE_CHECKING:  # pragma: no cover - import only for annotations, avoids a cycle
    from fedstat.stats.allele import AlleleStats

__all__ = [
    "AFREQ_HEADER",
    "GCOUNT_HEADER",
    "HARDY_HEADER",
    "VMISS_HEADER",
    "atomic_write_text",
    "format_g",
    "format_g_array",
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
# dtoa_g: a literal port, so that every double rounds exactly as plink2 rounds it.
# All arithmetic below is IEEE double arithmetic in the same order as the C code.
# ---------------------------------------------------------------------------------------------

_DBL_MAX = float(np.finfo(np.float64).max)
# banker's rounding offsets, indexed by the parity of the truncated value
_BANKER_ROUND8 = (0.499999995, 0.500000005)
_T = 9.9999949999999  # "rounds to 10.0000 at 6 significant digits" mantissa threshold


def _bround(x: float) -> int:
    """plink2 ``double_bround`` with kBankerRound8: round half to even, with tolerance."""
    r = int(x)
    return r + int((x - r) + _BANKER_ROUND8[r & 1])


def _trim(digits: str) -> str:
    return digits.rstrip("0")


def _mantissa_1p5(x: float) -> str:
    """``double_bround5`` + ``qrtoa_1p5``: x in [1, 10) -> ``d[.ddddd]``."""
    v = _bround(x * 100000)
    q, r = divmod(v, 100000)
    frac = _trim(f"{r:05d}") if r else ""
    return f"{q}.{frac}" if frac else str(q)


def _so6(x: float) -> str:
    """plink2 ``dtoa_so6``: 6 significant digits for 0.99999949999999 <= x < 999999.5."""
    if x < 99.999949999999:
        if x < 9.9999949999999:
            return _mantissa_1p5(x)
        ndec, scale = 4, 10000
    elif x < 9999.9949999999:
        if x < 999.99949999999:
            ndec, scale = 3, 1000
        else:
            ndec, scale = 2, 100
    elif x >= 99999.949999999:
        return f"{_bround(x):06d}"
    else:
        ndec, scale = 1, 10
    v = _bround(x * scale)
    q, r = divmod(v, scale)
    if not r:
        return str(q)
    return f"{q}.{_trim(f'{r:0{ndec}d}')}"


def _dtoa_g6(x: float) -> str:
    if x != x:
        return "nan"
    sign = ""
    if x < 0:
        sign = "-"
        x = -x
    xp10 = 0
    if x < 9.9999949999999e-5:
        # exponential notation, negative exponent
        if x < 9.9999949999999e-16:
            if x < 9.9999949999999e-128:
                if x == 0.0:
                    return "0"
                if x < 9.9999949999999e-256:
                    x *= 1.0e256
                    xp10 |= 256
                else:
                    x *= 1.0e128
                    xp10 |= 128
            if x < 9.9999949999999e-64:
                x *= 1.0e64
                xp10 |= 64
            if x < 9.9999949999999e-32:
                x *= 1.0e32
                xp10 |= 32
            if x < 9.9999949999999e-16:
                x *= 1.0e16
                xp10 |= 16
        if x < 9.9999949999999e-8:
            x *= 100000000.0
            xp10 |= 8
        if x < 9.9999949999999e-4:
            x *= 10000.0
            xp10 |= 4
        if x < 9.9999949999999e-2:
            x *= 100.0
            xp10 |= 2
        if x < 9.9999949999999e-1:
            x *= 10.0
            xp10 += 1
        return f"{sign}{_mantissa_1p5(x)}e-{xp10:02d}"
    if x >= 999999.49999999:
        # exponential notation, positive exponent
        if x >= 9.9999949999999e15:
            if x >= 9.9999949999999e127:
                if x > _DBL_MAX:
                    return f"{sign}inf"
                if x >= 9.9999949999999e255:
                    x *= 1.0e-256
                    xp10 |= 256
                else:
                    x *= 1.0e-128
                    xp10 |= 128
            if x >= 9.9999949999999e63:
                x *= 1.0e-64
                xp10 |= 64
            if x >= 9.9999949999999e31:
                x *= 1.0e-32
                xp10 |= 32
            if x >= 9.9999949999999e15:
                x *= 1.0e-16
                xp10 |= 16
        if x >= 9.9999949999999e7:
            x *= 1.0e-8
            xp10 |= 8
        if x >= 9.9999949999999e3:
            x *= 1.0e-4
            xp10 |= 4
        if x >= 9.9999949999999e1:
            x *= 1.0e-2
            xp10 |= 2
        if x >= _T:
            x *= 1.0e-1
            xp10 += 1
        return f"{sign}{_mantissa_1p5(x)}e+{xp10:02d}"
    if x >= 0.99999949999999:
        return sign + _so6(x)
    # plain decimal below 1: "0." then leading zeros then six digits, trailing zeros removed
    lead = ""
    if x < 9.9999949999999e-3:
        x *= 100.0
        lead = "00"
    if x < 9.9999949999999e-2:
        x *= 10.0
        lead += "0"
    return f"{sign}0.{lead}{_trim(f'{_bround(x * 1000000.0):06d}')}"


def _generic_g(x: float, digits: int) -> str:
    """%g-style formatting with ``digits`` significant digits, plink2 spellings."""
    if x != x:
        return "nan"
    if x in (np.inf, -np.inf):
        return "inf" if x > 0 else "-inf"
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        s = f"{mant}e{exp}"
    return s


def format_g(x: float, digits: int = 6) -> str:
    """Format a number as plink2 prints it in report tables.

    Parameters
    ----------
    x : the value (a Python or numpy float; integers are converted).
    digits : significant digits. ``6`` (plink2's default ``dtoa_g``) is a bit-exact port of
        plink2's routine, including its banker's rounding of near-ties; other values use
        C ``%g`` with plink2's spellings of non-finite values.

    Returns
    -------
    str
        E.g. ``0.5``, ``0.415094``, ``1e-05``, ``5.36356e-300``, ``1.23457e+06``, ``nan``.
    """
    x = float(x)
    if digits == 6:
        return _dtoa_g6(x)
    if digits < 1:
        raise ValueError(f"format_g needs at least 1 significant digit, got {digits}")
    return _generic_g(x, digits)


def format_g_array(values: np.ndarray, digits: int = 6) -> list[str]:
    """:func:`format_g` over an array; repeated values are formatted once.

    Parameters
    ----------
    values : [array, shape: (n,)] floats

    Returns
    -------
    list of n strings
    """
    cache: dict[float, str] = {}
    out: list[str] = []
    append = out.append
    for v in np.asarray(values, dtype=np.float64).tolist():
        s = cache.get(v)
        if s is None:
            # NaN never equals itself, so it is formatted each time (cheaply)
            s = format_g(v, digits)
            if v == v:
                cache[v] = s
        append(s)
    return out


def _int_strings(values: np.ndarray) -> list[str]:
    return [str(v) for v in np.asarray(values, dtype=np.int64).tolist()]


# ---------------------------------------------------------------------------------------------
# atomic writes
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
        _int_strings(stats.obs_ct),
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
        _int_strings(stats.hom_ref),
        _int_strings(stats.het),
        _int_strings(stats.hom_alt),
        zeros,
        zeros,
        _int_strings(stats.missing),
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
        _int_strings(stats.hom_ref),
        _int_strings(stats.het),
        _int_strings(stats.hom_alt),
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
        _int_strings(stats.missing),
        _int_strings(total),
        format_g_array(stats.f_miss),
    ]
    return atomic_write_text(path, _table_lines(VMISS_HEADER, cols))
