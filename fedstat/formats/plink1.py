"""PLINK 1.9-format output files: the ``.assoc`` and ``.model`` tables of ``--assoc`` / ``--model``.

The writers produce PLINK v1.90b6.26's bytes: fixed-width, space-padded columns (``.assoc`` rows
end in a space), chromosome codes as PLINK prints them by default
(:func:`fedstat.stats.assoc.plink1_chrom_codes`), the SNP column as wide as
``calc_plink_maxsnp`` makes it (:func:`plink_maxsnp`), numbers with 4 significant digits
(:func:`fedstat.formats.numbers.format_wxp4`) and ``NA`` where PLINK prints it. Only tested
(autosomal) variants get rows. Every file is written atomically
(:mod:`fedstat.formats.atomic`).

References
----------
PLINK v1.90b6.26: ``model_assoc()`` in ``plink_assoc.c`` (table layout), ``calc_plink_maxsnp``
and ``dtoa_g_wxp4`` in ``plink_common.c``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats.atomic import atomic_write_text
from fedstat.formats.numbers import CachedFormat, format_wxp4
from fedstat.stats.assoc import MODEL_TESTS, AssocStats, AssocTables, plink1_chrom_codes

__all__ = ["plink_maxsnp", "write_assoc", "write_assoc_tables", "write_model"]


def _na_format(width: int) -> CachedFormat:
    """Memoised :func:`format_wxp4` for one width, NaN -> ``NA``."""
    return CachedFormat(lambda x: format_wxp4(x, width), na="NA".rjust(width))


def plink_maxsnp(ids: Iterable[str]) -> int:
    """PLINK 1.9 ``calc_plink_maxsnp``: the SNP column width (grows to len + 2, in file order)."""
    width = 4
    for length in {len(s): None for s in ids}:  # first occurrences, in order
        if length > width:
            width = length + 2
    return width


def _prefixes(variants: VariantTable, stats: AssocStats) -> tuple[list[int], list[str], np.ndarray, np.ndarray, int]:
    """Rows tested, CHR column, A1 and A2 alleles, SNP column width."""
    if len(variants) != len(stats):
        raise InputError(f"assoc: {len(variants)} variants but statistics for {len(stats)}")
    rows = np.flatnonzero(stats.tested).tolist()
    chrom = plink1_chrom_codes(variants.chrom)
    a1, a2 = stats.alleles(variants)
    width = plink_maxsnp(str(s) for s in variants.id)
    return rows, [str(c).rjust(4) for c in chrom], a1, a2, width


def write_assoc(path: str | Path, variants: VariantTable, stats: AssocStats) -> Path:
    """Write PLINK 1.9's ``.assoc`` table (fixed width, trailing space, as PLINK writes it).

    ``path`` is written atomically; ``variants`` has one row per entry of ``stats``
    (:func:`fedstat.stats.assoc.finish`).
    """
    rows, chrom, a1, a2, width = _prefixes(variants, stats)
    f8, f12 = _na_format(8), _na_format(12)
    ids = variants.id

    def lines() -> Iterable[str]:
        yield (
            f" CHR {'SNP'.rjust(width)}         BP   A1      F_A      F_U   A2 "
            "       CHISQ            P           OR \n"
        )
        for i in rows:
            yield (
                f"{chrom[i]} {str(ids[i]).rjust(width)} {str(int(variants.pos[i])).rjust(10)} "
                f"{str(a1[i]).rjust(4)} {f8(stats.f_a[i])} {f8(stats.f_u[i])} {str(a2[i]).rjust(4)} "
                f"{f12(stats.chisq[i])} {f12(stats.p[i])} {f12(stats.odds_ratio[i])} \n"
            )

    return atomic_write_text(path, lines())


def write_model(path: str | Path, variants: VariantTable, stats: AssocStats) -> Path:
    """Write PLINK 1.9's ``.model`` table: rows GENO, TREND, ALLELIC, DOM, REC per variant.

    As :func:`write_assoc`; a row suppressed by disclosure control prints NA throughout.
    """
    rows, chrom, a1, a2, width = _prefixes(variants, stats)
    f12 = _na_format(12)
    ids = variants.id
    allelic, allelic_p = stats.allelic_chisq, stats.allelic_p
    na_tail = "          NA   NA           NA\n"
    suppressed = stats.suppressed

    def tail(chisq: float, df: int, p: float) -> str:
        if chisq != chisq:
            return na_tail
        return f"{f12(chisq)}    {df} {f12(p)}\n"

    def cell(*counts: int) -> str:
        return "/".join(str(int(c)) for c in counts).rjust(14)

    def lines() -> Iterable[str]:
        yield (
            f" CHR {'SNP'.rjust(width)}   A1   A2     TEST            AFF          UNAFF "
            "       CHISQ   DF            P\n"
        )
        for i in rows:
            head = f"{chrom[i]} {str(ids[i]).rjust(width)} {str(a1[i]).rjust(4)} {str(a2[i]).rjust(4)}  "
            if suppressed is not None and suppressed[i]:
                for test in MODEL_TESTS:
                    yield f"{head}{test.rjust(7)} {'NA'.rjust(14)} {'NA'.rjust(14)} " + na_tail
                continue
            o, n, m = int(stats.case_a1a1[i]), int(stats.case_a1a2[i]), int(stats.case_a2a2[i])
            k, j, u = int(stats.ctrl_a1a1[i]), int(stats.ctrl_a1a2[i]), int(stats.ctrl_a2a2[i])
            yield f"{head}   GENO {cell(o, n, m)} {cell(k, j, u)} " + tail(
                stats.geno_chisq[i], int(stats.geno_df[i]), stats.geno_p[i]
            )
            yield f"{head}  TREND {cell(2 * o + n, 2 * m + n)} {cell(2 * k + j, 2 * u + j)} " + tail(
                stats.trend_chisq[i], 1, stats.trend_p[i]
            )
            yield f"{head}ALLELIC {cell(2 * o + n, 2 * m + n)} {cell(2 * k + j, 2 * u + j)} " + tail(
                allelic[i], 1, allelic_p[i]
            )
            yield f"{head}    DOM {cell(o + n, m)} {cell(k + j, u)} " + tail(stats.dom_chisq[i], 1, stats.dom_p[i])
            yield f"{head}    REC {cell(o, n + m)} {cell(k, j + u)} " + tail(stats.rec_chisq[i], 1, stats.rec_p[i])

    return atomic_write_text(path, lines())


def write_assoc_tables(tables: AssocTables, out_prefix: str | Path) -> list[Path]:
    """``<out_prefix>.assoc`` and/or ``<out_prefix>.model``, as PLINK 1.9 names them (one phenotype a job)."""
    prefix = str(out_prefix)
    written = []
    if tables.assoc:
        written.append(write_assoc(Path(f"{prefix}.assoc"), tables.variants, tables.stats))
    if tables.model:
        written.append(write_model(Path(f"{prefix}.model"), tables.variants, tables.stats))
    return written
