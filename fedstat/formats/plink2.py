"""plink2-format output files, byte for byte as plink2 2.00a3.5 writes them.

Report tables for ``--freq``, ``--geno-counts``, ``--hardy`` and ``--missing`` (variant report)
on biallelic variants (:func:`write_reports`; chrX, chrY and MT as :mod:`fedstat.stats.sexchr`
counts them, chrX's ``--hardy`` in ``.hardy.x``, :func:`write_hardy_x`):

=========  ==========================================================================
``.afreq`` ``#CHROM ID REF ALT ALT_FREQS OBS_CT`` (OBS_CT: allele observations)
``.gcount````#CHROM ID REF ALT HOM_REF_CT HET_REF_ALT_CTS TWO_ALT_GENO_CTS HAP_REF_CT
           HAP_ALT_CTS MISSING_CT`` (haploid counts are 0 but on chrX, chrY, MT)
``.hardy`` ``#CHROM ID A1 AX HOM_A1_CT HET_A1_CT TWO_AX_CT O(HET_A1) E(HET_A1) P``
           (A1 = REF, AX = ALT)
``.vmiss`` ``#CHROM ID MISSING_CT OBS_CT F_MISS`` (OBS_CT: all samples, missing included)
=========  ==========================================================================

``--freq cols=`` and ``--glm cols=`` select other columns as plink2 2.00a3.5 does
(:mod:`fedstat.formats.columns`; :func:`write_afreq`, :func:`write_glm`).

``--glm`` results, ``<out>.<PHENO>.glm.linear`` / ``.glm.logistic.hybrid`` / ``.glm.logistic``
/ ``.glm.firth`` (:func:`write_glm`), and ``--pca``'s ``.eigenval`` and ``.eigenvec.allele``
(:func:`write_pca`).

Columns are tab-separated, lines end in ``\\n``. Numbers print as plink2 prints them
(:mod:`fedstat.formats.numbers`); in the report tables non-finite values are ``nan`` (not ``NA``)
and ``inf``, in ``--glm`` output an undefined value is ``NA``.

Every file is written atomically (:mod:`fedstat.formats.atomic`): to ``<path>.tmp``, flushed and
fsynced, then renamed over ``<path>``; on any error the temporary file is removed and ``<path>``
is left untouched.

References
----------
plink2 2.00a3.5: ``plink2_misc.cc`` (the report tables), ``plink2_glm.cc`` (``--glm`` columns),
``plink2_matrix_calc.cc`` (``--pca`` files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats.atomic import atomic_write_text
from fedstat.formats.columns import FREQ_DEFAULT, FREQ_EXCLUSIVE, GLM_DEFAULT
from fedstat.formats.numbers import CachedFormat, format_g, format_g_array, int_strings, lntoa_g
from fedstat.stats.allele import ANALYSES, AlleleReports, AlleleStats
from fedstat.stats.glm import GlmResult, GlmTables
from fedstat.stats.hwe_x import HardyX
from fedstat.stats.machr2 import NOT_COMPUTED as MACH_R2_NA_CHROMS
from fedstat.stats.pca import PcaResult, pc_names

__all__ = [
    "AFREQ_HEADER",
    "EXTENSIONS",
    "GCOUNT_HEADER",
    "HARDY_HEADER",
    "HARDY_X_HEADER",
    "VMISS_HEADER",
    "write_adjusted",
    "write_afreq",
    "write_allele_reports",
    "write_gcount",
    "write_glm",
    "write_glm_tables",
    "write_hardy",
    "write_hardy_x",
    "write_pca",
    "write_reports",
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
HARDY_X_HEADER = (
    "#CHROM",
    "ID",
    "A1",
    "AX",
    "FEMALE_HOM_A1_CT",
    "FEMALE_HET_A1_CT",
    "FEMALE_TWO_AX_CT",
    "MALE_A1_CT",
    "MALE_AX_CT",
    "O(FEMALE_HET_A1)",
    "E(FEMALE_HET_A1)",
    "FEMALE_A1_FREQ",
    "MALE_A1_FREQ",
    "P",
)
VMISS_HEADER = ("#CHROM", "ID", "MISSING_CT", "OBS_CT", "F_MISS")
_DBL_MAX = float(np.finfo(np.float64).max)

# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def _table_lines(header: Sequence[str], columns: list[list[str]]) -> Iterable[str]:
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


def _keys(variants: VariantTable) -> list[list[str]]:
    """The columns ``#CHROM ID REF ALT``."""
    return [_strs(variants.chrom), _strs(variants.id), _strs(variants.ref), _strs(variants.alt)]


def write_afreq(
    path: str | Path, variants: VariantTable, stats: AlleleStats, columns: frozenset[str] | None = None
) -> Path:
    """Write a plink2 ``.afreq`` table (``--freq``), with the columns ``cols=`` selects.

    Parameters
    ----------
    path : the file to write (atomically)
    variants : the variants counted, one row per entry of ``stats``
    stats : their allele statistics
    columns : plink2's ``--freq cols=`` names (:data:`fedstat.formats.columns.FREQ_COLUMNS`);
        None for its default set ``chrom,ref,alt,altfreq,nobs``

    Notes
    -----
    Columns in plink2's order: ``#CHROM POS ID REF ALT1 ALT REF_FREQ ALT1_FREQ``, then one
    frequency list (``FREQS`` ``REF,ALT``; ``ALT_FREQS``; ``eq``: ``FREQS`` as ``A=0.8,C=0.2``
    (alleles of non-zero frequency, ``.`` for none), ``eqz`` with every allele, ``alteq``/``alteqz``
    as ``ALT_FREQS``, ``numeq``/``altnumeq`` as ``NUM_FREQS``/``ALT_NUM_FREQS`` numbering the
    alleles 0 = REF, 1 = ALT), then ``MACH_R2`` (``machr2``: 6 significant digits, ``nan`` for 0/0,
    ``NA`` on chrX and MT as plink2 prints them), then ``OBS_CT``. A frequency is the allele's dosage
    times the reciprocal of the total (plink2's own arithmetic); ``nan`` when OBS_CT is 0.

    Raises
    ------
    InputError
        If ``minimac3r2`` is asked for (not computed), ``machr2`` without MaCH r² values, an ``eq`` column would print an
        allele holding ``=`` (plink2 refuses those too), or the frequencies are not dosage quotients.
    """
    _check_rows(variants, stats, "write_afreq")
    cols_on = FREQ_DEFAULT if columns is None else columns
    if "minimac3r2" in cols_on:
        raise InputError("write_afreq: column minimac3r2 is not computed in this version")
    if "machr2" in cols_on and stats.mach_r2 is None:
        raise InputError("write_afreq: column machr2 needs MaCH r² values, which these statistics lack")
    alt_text = format_g_array(stats.alt_freq)
    text, dosages = [alt_text, alt_text], None
    if cols_on & {"reffreq", *FREQ_EXCLUSIVE} - {"altfreq"}:
        # each allele's dosage in plink2's units (1/32768 of a copy, ``ddosage``): the ALT dosage is
        # the frequency times the total, exactly (frequency = dosage × (1 / total) below 2^50 units)
        tot = stats.obs_ct.astype(np.float64) * 32768.0
        with np.errstate(invalid="ignore", divide="ignore"):
            recip = 1.0 / tot
            alt_dd = np.rint(np.where(stats.obs_ct > 0, stats.alt_freq * tot, 0.0))
            if not np.array_equal(alt_dd * recip, stats.alt_freq, equal_nan=True):
                raise InputError("write_afreq: the ALT frequencies are not allele dosages over their total")
            dosages = (tot - alt_dd, alt_dd)
            text[0] = format_g_array(dosages[0] * recip)
    alleles = (_strs(variants.ref), _strs(variants.alt))
    header = ["CHROM"] if "chrom" in cols_on else []
    cols: list[list[str]] = [_strs(variants.chrom)] if "chrom" in cols_on else []
    keyed: tuple[tuple[str, str, Callable[[], list[str]]], ...] = (
        ("pos", "POS", lambda: _strs(variants.pos)),
        ("id", "ID", lambda: _strs(variants.id)),
        ("ref", "REF", lambda: alleles[0]),
        ("alt1", "ALT1", lambda: alleles[1]),
        ("alt", "ALT", lambda: alleles[1]),
        ("reffreq", "REF_FREQ", lambda: text[0]),
        ("alt1freq", "ALT1_FREQ", lambda: text[1]),
    )
    for key, name, column in keyed:
        if key == "id" or key in cols_on:
            header.append(name)
            cols.append(column())
    listed = [c for c in FREQ_EXCLUSIVE if c in cols_on]
    if listed:
        (kind,) = listed
        first = 1 if kind.startswith("alt") else 0  # the list leaves REF out
        header.append(("ALT_" if first else "") + ("NUM_" if "num" in kind else "") + "FREQS")
        if kind in ("freq", "altfreq"):
            cols.append([",".join(v) for v in zip(*text[first:], strict=True)])
        else:
            zeros = kind.endswith("z")
            assert dosages is not None
            out = []
            for i in range(len(variants)):
                items = []
                for k in range(first, 2):
                    if zeros or dosages[k][i] != 0:
                        if "num" in kind:
                            label = str(k)
                        elif "=" in alleles[k][i]:
                            raise InputError(
                                f"write_afreq: --freq cols={kind} cannot print variant {variants.id[i]}, whose "
                                "allele code holds '=' (plink2 refuses it too); choose another frequency column"
                            )
                        else:
                            label = alleles[k][i]
                        items.append(f"{label}={text[k][i]}")
                out.append(",".join(items) or ".")
            cols.append(out)
    if "machr2" in cols_on:
        assert stats.mach_r2 is not None
        header.append("MACH_R2")
        r2 = format_g_array(stats.mach_r2)  # 0/0 prints nan, as plink2's dtoa_g
        suppressed = np.isin(variants.chrom.astype(str), sorted(MACH_R2_NA_CHROMS))
        cols.append(["NA" if na else v for v, na in zip(r2, suppressed.tolist(), strict=True)])
    if "nobs" in cols_on:
        header.append("OBS_CT")
        cols.append(int_strings(stats.obs_ct))
    header[0] = "#" + header[0]
    return atomic_write_text(path, _table_lines(header, cols))


def write_gcount(path: str | Path, variants: VariantTable, stats: AlleleStats) -> Path:
    """Write a plink2 ``.gcount`` table (``--geno-counts``); haploid counts are 0 where
    ``stats`` has none (autosomes)."""
    _check_rows(variants, stats, "write_gcount")
    zeros = ["0"] * len(variants)
    cols = [
        *_keys(variants),
        int_strings(stats.hom_ref),
        int_strings(stats.het),
        int_strings(stats.hom_alt),
        zeros if stats.hap_ref is None else int_strings(stats.hap_ref),
        zeros if stats.hap_alt is None else int_strings(stats.hap_alt),
        int_strings(stats.missing),
    ]
    return atomic_write_text(path, _table_lines(GCOUNT_HEADER, cols))


def write_hardy(path: str | Path, variants: VariantTable, stats: AlleleStats, rows: np.ndarray | None = None) -> Path:
    """Write a plink2 ``.hardy`` table (``--hardy``), A1 = REF, AX = ALT, over ``rows`` (None: all)."""
    _check_rows(variants, stats, "write_hardy")
    if rows is not None:
        variants = variants.take(rows)
        stats = replace(
            stats, **{f.name: getattr(stats, f.name)[rows] for f in fields(stats) if getattr(stats, f.name) is not None}
        )
    cols = [
        *_keys(variants),
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
    total = stats.hom_ref + stats.het + stats.hom_alt + stats.missing if stats.call_total is None else stats.call_total
    cols = [
        _strs(variants.chrom),
        _strs(variants.id),
        int_strings(stats.missing if stats.call_missing is None else stats.call_missing),
        int_strings(total),
        format_g_array(stats.f_miss),
    ]
    return atomic_write_text(path, _table_lines(VMISS_HEADER, cols))


def write_hardy_x(path: str | Path, variants: VariantTable, table: HardyX) -> Path:
    """Write a plink2 ``.hardy.x`` table (``--hardy`` on chrX) over the rows of ``table``.

    Columns ``#CHROM ID A1 AX FEMALE_HOM_A1_CT FEMALE_HET_A1_CT FEMALE_TWO_AX_CT MALE_A1_CT
    MALE_AX_CT O(FEMALE_HET_A1) E(FEMALE_HET_A1) FEMALE_A1_FREQ MALE_A1_FREQ P``, A1 = REF.
    """
    rows = variants.take(table.rows)
    cols = [
        *_keys(rows),
        int_strings(table.female_hom_ref),
        int_strings(table.female_het),
        int_strings(table.female_hom_alt),
        int_strings(table.male_ref),
        int_strings(table.male_alt),
        format_g_array(table.o_het),
        format_g_array(table.e_het),
        format_g_array(table.female_ref_freq),
        format_g_array(table.male_ref_freq),
        format_g_array(table.p),
    ]
    return atomic_write_text(path, _table_lines(HARDY_X_HEADER, cols))


#: the file extension of each allele report (:data:`fedstat.stats.allele.ANALYSES`)
EXTENSIONS = {"freq": "afreq", "geno-counts": "gcount", "hardy": "hardy", "missing": "vmiss"}
_WRITERS: dict[str, Callable[[Path, VariantTable, AlleleStats], Path]] = {
    "freq": write_afreq,
    "geno-counts": write_gcount,
    "hardy": write_hardy,
    "missing": write_vmiss,
}


def write_reports(
    out_prefix: str | Path,
    variants: VariantTable,
    stats: AlleleStats,
    analyses: Iterable[str],
    *,
    hardy_rows: np.ndarray | None = None,
    hardy_x: HardyX | None = None,
    freq_columns: frozenset[str] | None = None,
) -> list[Path]:
    """Write the plink2 tables for the requested analyses.

    Parameters
    ----------
    out_prefix : path prefix; ``<out_prefix>.afreq`` etc. are written (atomically).
    variants : the harmonized variants, one row per entry of ``stats``.
    stats : from :func:`fedstat.stats.allele.finish`.
    analyses : any of :data:`~fedstat.stats.allele.ANALYSES` (``freq`` -> .afreq,
        ``geno-counts`` -> .gcount, ``hardy`` -> .hardy, ``missing`` -> .vmiss); a leading
        ``--`` is accepted.
    hardy_rows : the rows of ``.hardy`` (None: all); when empty no ``.hardy`` is written (plink2
        writes none when every variant is on chrX, chrY or MT)
    hardy_x : the ``.hardy.x`` table (chrX), written after ``.hardy`` when given
    freq_columns : ``--freq cols=``'s columns (:func:`write_afreq`); None for plink2's default

    Returns
    -------
    list of Path
        The files written, in the order requested (duplicates written once).

    Raises
    ------
    InputError
        If an analysis is unknown or ``variants`` and ``stats`` differ in length.
    """
    wanted: list[str] = []
    for name in analyses:
        key = name[2:] if name.startswith("--") else name
        if key not in _WRITERS:
            raise InputError(f"unknown allele analysis {name!r}; expected one of {ANALYSES}")
        if key not in wanted:
            wanted.append(key)
    if len(variants) != len(stats):
        raise InputError(f"write_reports: {len(variants)} variants but statistics for {len(stats)}")
    prefix = str(out_prefix)
    files = []
    for key in wanted:
        path = Path(f"{prefix}.{EXTENSIONS[key]}")
        if key == "freq":
            files.append(write_afreq(path, variants, stats, freq_columns))
            continue
        if key != "hardy":
            files.append(_WRITERS[key](path, variants, stats))
            continue
        if hardy_rows is None or len(hardy_rows):
            files.append(write_hardy(path, variants, stats, hardy_rows))
        if hardy_x is not None:
            files.append(write_hardy_x(Path(f"{prefix}.hardy.x"), variants, hardy_x))
    return files


def write_allele_reports(reports: AlleleReports, out_prefix: str | Path) -> list[Path]:
    """:func:`write_reports` for an :class:`~fedstat.stats.allele.AlleleReports`."""
    return write_reports(
        out_prefix,
        reports.variants,
        reports.stats,
        reports.analyses,
        hardy_rows=reports.hardy_rows,
        hardy_x=reports.hardy_x,
        freq_columns=reports.freq_columns,
    )


# ---------------------------------------------------------------------------------------------
# --glm
# ---------------------------------------------------------------------------------------------


def write_glm(path: str | Path, variants: VariantTable, res: GlmResult, columns: frozenset[str] | None = None) -> Path:
    """Write ``res`` as plink2 2.00a3.5 writes ``--glm`` output, with the columns ``cols=`` selects.

    Parameters
    ----------
    path : the file to write (atomically)
    variants : the variants tested, one row per row of ``res``
    res : one phenotype's results
    columns : plink2's ``cols=`` names (:data:`fedstat.formats.columns.GLM_COLUMNS`); None for its
        default set ``chrom,pos,ref,alt,firth,test,nobs,orbeta,se,ci,tz,p,err``

    Notes
    -----
    Columns in plink2's order: ``#CHROM POS ID REF ALT1 ALT A1 AX A1_CT ALLELE_CT
    [A1_CASE_CT A1_CTRL_CT CASE_ALLELE_CT CTRL_ALLELE_CT] A1_FREQ [A1_CASE_FREQ A1_CTRL_FREQ]
    [FIRTH?] TEST OBS_CT BETA|OR SE|LOG(OR)_SE [L95 U95] T_STAT|Z_STAT P ERRCODE`` (ID and A1 always;
    the bracketed case/control columns in logistic files only, FIRTH? under firth-fallback only,
    L/U with ``--ci`` only). One row per variant and test. Counts of A1 are dosage sums printed
    with 6 significant digits, frequencies are their quotients (``nan`` for 0/0); OR, P and the
    logistic ``--ci`` bounds print from their logarithms (``lntoa_g``), with ``cols=+beta`` a
    logistic file shows the log-odds (BETA, SE and bounds on that scale) instead.

    Raises
    ------
    InputError
        If ``variants`` and ``res`` differ in length, or a column needs a count ``res`` lacks
        (``gcountcc`` and ``machr2``: sums a --glm job does not release).
    """
    cols_on = GLM_DEFAULT if columns is None else columns
    n_var = len(variants)
    if res.obs_ct.shape[0] != n_var:
        raise InputError(f"write_glm: {n_var} variants but results for {res.obs_ct.shape[0]}")
    binary = res.is_binary
    for name in ("machr2", *(("gcountcc",) if binary else ())):
        if name in cols_on:
            raise InputError(f"write_glm: column {name} needs sums a --glm job does not release")
    g, ln = CachedFormat(format_g, na="NA"), CachedFormat(lntoa_g, na="NA")
    counts = CachedFormat(format_g)  # dosage sums and their quotients: 0/0 prints nan, as plink2's dtoa_g
    withheld = [] if res.cc_suppressed is None else np.flatnonzero(res.cc_suppressed).tolist()

    def cc_text(values: np.ndarray) -> list[str]:
        """Case/control counts or frequencies; NA where disclosure control withholds them."""
        text = counts.column(values)
        for i in withheld:
            text[i] = "NA"
        return text

    def need(values: np.ndarray | None, name: str) -> np.ndarray:
        if values is None:
            raise InputError(f"write_glm: phenotype {res.pheno} has no counts for column {name}")
        return values

    # per variant, joined: #CHROM … FIRTH?
    head: list[str] = []
    parts: list[list[str]] = []

    def add(names: Sequence[str], *columns_: list[str]) -> None:
        head.extend(names)
        parts.extend(columns_)

    a1 = np.where(res.a1_is_ref, variants.ref, variants.alt)
    if "chrom" in cols_on:
        add(["CHROM"], _strs(variants.chrom))
    if "pos" in cols_on:
        add(["POS"], _strs(variants.pos))
    add(["ID"], _strs(variants.id))
    if "ref" in cols_on:
        add(["REF"], _strs(variants.ref))
    if "alt1" in cols_on:
        add(["ALT1"], _strs(variants.alt))
    if "alt" in cols_on:
        add(["ALT"], _strs(variants.alt))
    add(["A1"], _strs(a1))
    if "ax" in cols_on:
        add(["AX"], _strs(np.where(res.a1_is_ref, variants.alt, variants.ref)))
    ploidy = 2 if res.haploid is None else np.where(res.haploid, 1, 2)
    allele_ct = ploidy * res.obs_ct  # two alleles per sample; one on chrY and MT (plink2's haploid --glm)
    if "a1count" in cols_on:
        add(["A1_CT"], counts.column(need(res.a1_ct, "a1count")))
    if "totallele" in cols_on:
        add(["ALLELE_CT"], int_strings(allele_ct))
    if binary and cols_on & {"a1countcc", "totallelecc", "a1freqcc"}:
        a1_ct = need(res.a1_ct, "a1countcc")
        a1_case = need(res.a1_case_ct, "a1countcc")
        case_allele_ct = ploidy * need(res.case_obs_ct, "totallelecc")
        a1_ctrl = a1_ct - a1_case
        if "a1countcc" in cols_on:
            add(["A1_CASE_CT", "A1_CTRL_CT"], cc_text(a1_case), cc_text(a1_ctrl))
        if "totallelecc" in cols_on:
            add(
                ["CASE_ALLELE_CT", "CTRL_ALLELE_CT"],
                int_strings(case_allele_ct),
                int_strings(allele_ct - case_allele_ct),
            )
    if "a1freq" in cols_on:
        add(["A1_FREQ"], counts.column(res.a1_freq))
    if binary and "a1freqcc" in cols_on:
        with np.errstate(invalid="ignore", divide="ignore"):
            case_freq = a1_case / case_allele_ct.astype(np.float64)
            ctrl_freq = a1_ctrl / (allele_ct - case_allele_ct).astype(np.float64)
        add(["A1_CASE_FREQ", "A1_CTRL_FREQ"], cc_text(case_freq), cc_text(ctrl_freq))
    if res.method == "logistic-firth-hybrid" and "firth" in cols_on:
        add(["FIRTH?"], ["Y" if f else "N" for f in res.firth.tolist()])
    n_t = len(res.tests)
    rep = np.repeat(np.arange(n_var), n_t)
    prefix = ["\t".join(x) for x in zip(*parts, strict=True)]
    cols: list[list[str]] = [[prefix[i] for i in rep.tolist()]]
    header = list(head)
    if "test" in cols_on:
        header.append("TEST")
        cols.append(list(res.tests) * n_var)
    if "nobs" in cols_on:
        header.append("OBS_CT")
        cols.append(_strs(res.obs_ct[rep]))
    # logistic: OR (printed from the log-odds) unless cols= names beta
    odds = binary and "beta" not in cols_on
    effect = ln if odds else g
    if cols_on & {"beta", "orbeta"}:
        header.append("OR" if odds else "BETA")
        cols.append(effect.column(res.beta.reshape(-1)))
    if "se" in cols_on:
        header.append("LOG(OR)_SE" if odds else "SE")
        cols.append(g.column(res.se.reshape(-1)))
    if "ci" in cols_on and res.ci_lower is not None and res.ci_upper is not None:
        pct = format_g(res.ci_size * 100)  # plink2: "L" + dtoa_g(ci * 100), e.g. L95, L99.9
        header += [f"L{pct}", f"U{pct}"]
        # on the scale of BETA|OR: exp(beta ∓ z·se) for OR
        cols.append(effect.column(res.ci_lower.reshape(-1)))
        cols.append(effect.column(res.ci_upper.reshape(-1)))
    if "tz" in cols_on:
        header.append("Z_STAT" if binary else "T_STAT")
        cols.append(g.column(res.stat.reshape(-1)))
    if "p" in cols_on:
        header.append("P")
        cols.append(ln.column(res.log_p.reshape(-1)))
    if "err" in cols_on:
        header.append("ERRCODE")
        cols.append(_strs(res.errcode[rep]))
    if res.test_mask is not None:  # chrX's SEX test, and the chromosomes plink2 skips, row by row
        keep = np.flatnonzero(np.asarray(res.test_mask).reshape(-1)).tolist()
        cols = [[c[i] for i in keep] for c in cols]
    header[0] = "#" + header[0]
    return atomic_write_text(path, _table_lines(header, cols))


def write_glm_tables(tables: GlmTables, out_prefix: str | Path) -> list[Path]:
    """One ``<out_prefix>.<PHENO>.<extension>`` file per phenotype's result, in order, each
    followed by its ``<…>.adjusted`` file under ``--adjust``."""
    files = []
    for res in tables.results:
        path = write_glm(Path(f"{out_prefix}.{res.pheno}.{res.extension}"), tables.variants, res, tables.columns)
        files.append(path)
        if res.adjusted is not None:
            files.append(write_adjusted(path.with_name(path.name + ".adjusted"), tables.variants, res))
    return files


def write_adjusted(path: str | Path, variants: VariantTable, res: GlmResult) -> Path:
    """Write ``res.adjusted`` as plink2's ``--adjust`` file (``<out>.<PHENO>.glm.<type>.adjusted``).

    Default columns ``#CHROM ID A1 UNADJ GC BONF HOLM SIDAK_SS SIDAK_SD FDR_BH FDR_BY``, one row per
    valid ADD test in ascending order of P; ``cols=`` adds ``POS REF ALT1 ALT QQ`` in plink2's
    column order; ``log10`` prints ``-log10`` values under ``LOG10_`` names (``2147483647`` for a
    p-value of 0).
    """
    adj = res.adjusted
    if adj is None:
        raise InputError(f"write_adjusted: no --adjust result for phenotype {res.pheno}")
    cols_on, log10 = adj.options.columns, adj.options.log10
    rows = adj.rows
    a1 = np.where(res.a1_is_ref[rows], variants.ref[rows], variants.alt[rows])
    neg_ln10 = -1.0 / math.log(10.0)

    def p_column(ln_p: np.ndarray) -> list[str]:
        if log10:  # plink2: dtoa_g(ln p * (-1 / ln 10)); a p of 0 (ln p = -inf) prints INT32_MAX
            return ["2147483647" if v == -math.inf else format_g(v * neg_ln10) for v in ln_p.tolist()]
        return [lntoa_g(max(v, -_DBL_MAX)) for v in ln_p.tolist()]

    header: list[str] = []
    cols: list[list[str]] = []
    pre = "LOG10_" if log10 else ""
    keyed: tuple[tuple[str, str, Callable[[], list[str]]], ...] = (
        ("chrom", "CHROM", lambda: _strs(variants.chrom[rows])),
        ("pos", "POS", lambda: _strs(variants.pos[rows])),
        ("id", "ID", lambda: _strs(variants.id[rows])),
        ("ref", "REF", lambda: _strs(variants.ref[rows])),
        ("alt1", "ALT1", lambda: _strs(variants.alt[rows])),
        ("alt", "ALT", lambda: _strs(variants.alt[rows])),
        ("a1", "A1", lambda: _strs(a1)),
        ("unadj", pre + "UNADJ", lambda: p_column(adj.unadj)),
        ("gc", pre + "GC", lambda: p_column(adj.gc)),
        ("qq", pre + "QQ", lambda: format_g_array(np.log10(adj.qq) * -1.0 if log10 else adj.qq)),
        ("bonf", pre + "BONF", lambda: p_column(adj.bonf)),
        ("holm", pre + "HOLM", lambda: p_column(adj.holm)),
        ("sidakss", pre + "SIDAK_SS", lambda: p_column(adj.sidak_ss)),
        ("sidaksd", pre + "SIDAK_SD", lambda: p_column(adj.sidak_sd)),
        ("fdrbh", pre + "FDR_BH", lambda: p_column(adj.fdr_bh)),
        ("fdrby", pre + "FDR_BY", lambda: p_column(adj.fdr_by)),
    )
    for key, name, column in keyed:
        if key == "id" or key in cols_on:
            header.append(name)
            cols.append(column())
    header[0] = "#" + header[0]
    return atomic_write_text(path, _table_lines(header, cols))


# ---------------------------------------------------------------------------------------------
# --pca
# ---------------------------------------------------------------------------------------------


def write_pca(result: PcaResult, out_prefix: str | Path) -> list[Path]:
    """Write ``<out_prefix>.eigenval`` (one eigenvalue a line) and ``<out_prefix>.eigenvec.allele``.

    ``.eigenvec.allele``: ``#CHROM ID REF ALT A1 PC1 …``, two rows per variant, A1 = REF (the
    negated weights) then A1 = ALT (:attr:`~fedstat.stats.pca.PcaResult.allele_weights`).
    """
    out_prefix = Path(out_prefix)
    variants, wts = result.variants, result.allele_weights
    eigenval = atomic_write_text(
        out_prefix.with_name(out_prefix.name + ".eigenval"),
        [line + "\n" for line in format_g_array(result.eigenvalues)],
    )
    cols = [format_g_array(wts[:, j]) for j in range(wts.shape[1])]
    neg = [format_g_array(-wts[:, j]) for j in range(wts.shape[1])]
    header = "#CHROM\tID\tREF\tALT\tA1\t" + "\t".join(pc_names(wts.shape[1])) + "\n"

    def lines() -> Iterable[str]:
        yield header
        for i in range(len(variants)):
            key = f"{variants.chrom[i]}\t{variants.id[i]}\t{variants.ref[i]}\t{variants.alt[i]}"
            yield f"{key}\t{variants.ref[i]}\t" + "\t".join(c[i] for c in neg) + "\n"
            yield f"{key}\t{variants.alt[i]}\t" + "\t".join(c[i] for c in cols) + "\n"

    allele_wts = atomic_write_text(out_prefix.with_name(out_prefix.name + ".eigenvec.allele"), lines())
    return [eigenval, allele_wts]
