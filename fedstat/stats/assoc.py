"""Case/control association tests: PLINK 1.9 ``--assoc`` and ``--model``.

Every statistic PLINK 1.9 prints for a case/control phenotype follows from the genotype counts
of cases and controls at each variant (hom-ALT, het, hom-REF), plus the genotype counts over
all samples, which decide the allele PLINK 1.9 calls A1 (the minor allele of the pooled data).
A site counts them for its own participants (:class:`AssocCounts`, registered as
``"assoc_counts"`` in :data:`LOCAL_COMPUTATIONS`); the coordinator adds the sites' counts and
derives the tests in one round (:func:`plan_assoc`, :func:`finish`); the result
(:class:`AssocTables`) is written as PLINK 1.9's fixed-width ``.assoc`` and ``.model`` tables,
byte for byte, by :mod:`fedstat.formats.plink1`.

Tests, with A1 the minor allele (see :func:`finish`):

- ``.assoc`` — allelic 2x2 Pearson chi-square (no continuity correction), case/control A1
  frequencies ``F_A``/``F_U``, odds ratio of A1.
- ``.model`` — ``GENO`` (2x3 genotypic chi-square, 2 df), ``TREND`` (Cochran-Armitage, 1 df),
  ``ALLELIC`` (as ``.assoc``), ``DOM`` (A1 dominant, 2x2), ``REC`` (A1 recessive, 2x2).
  ``GENO``, ``DOM`` and ``REC`` are NA unless every genotype cell holds at least ``cell``
  (PLINK's ``--cell``, default 5) observations.

Only autosomal variants are tested: PLINK 1.9 treats X/Y/MT genotypes of males as haploid,
which the site-side 0/1/2 ALT counts do not encode; other variants are left out of both
tables and counted in :meth:`AssocAnalysis.log_lines`. Every sample is treated as a founder
(fedstat has no pedigrees) and sex is not required (PLINK's ``--allow-no-sex``).

References
----------
PLINK v1.90b6.26: ``model_assoc()`` in ``plink_assoc.c`` (table layout, A1/A2 counts, NA
rules), ``chi22_eval``/``chi22_evalx``/``chi23_evalx``/``ca_trend_evalx`` in
``plink_stats.c`` (the statistics, evaluated here in the same floating-point order),
``calc_marker_reverse_bin`` (A1 = minor allele; A1 stays the ``.bim`` A1 = ALT when the REF
frequency is exactly 0.5 or no genotype is observed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

from fedstat.data.variants import VariantTable, normalise_chrom
from fedstat.errors import InputError
from fedstat.stats.base import (
    Cohort,
    LocalComputation,
    RoundInput,
    RoundPlan,
    SumArray,
    cohort_level,
    per_variant,
)

__all__ = [
    "ASSOC_HEADER_FIELDS",
    "COMPUTATION",
    "LOCAL_COMPUTATIONS",
    "case_control_masks",
    "MODEL_TESTS",
    "SUM_NAMES",
    "AssocAnalysis",
    "AssocCounts",
    "AssocStats",
    "AssocTables",
    "finish",
    "plan_assoc",
    "plink1_chrom_codes",
]

#: name of the site-side computation in :data:`LOCAL_COMPUTATIONS`
COMPUTATION = "assoc_counts"
_GROUPS = ("case", "ctrl", "all")
_GENOS = ("hom_ref", "het", "hom_alt")
#: per-variant sums a site returns: genotype counts of cases, controls and all samples
SUM_NAMES = tuple(f"{g}_{k}" for g in _GROUPS for k in _GENOS)
#: cohort-level sums a site returns
COHORT_SUM_NAMES = ("n_case", "n_ctrl", "n_missing_pheno")
ASSOC_HEADER_FIELDS = ("CHR", "SNP", "BP", "A1", "F_A", "F_U", "A2", "CHISQ", "P", "OR")
MODEL_TESTS = ("GENO", "TREND", "ALLELIC", "DOM", "REC")
_AUTOSOMES = {str(i) for i in range(1, 23)}
_PLINK1_CODES = {"X": "23", "Y": "24", "XY": "25", "MT": "26"}
_SMALL_EPSILON = 2.0**-44  # PLINK 1.9 SMALL_EPSILON


# ---------------------------------------------------------------------------------------------
# site side
# ---------------------------------------------------------------------------------------------


def case_control_masks(cohort: Cohort, pheno: str, what: str = "assoc") -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (cases, controls) over the cohort for a case/control phenotype.

    plink2's coding: 2 = case, 1 = control, 0 (and NA / -9) missing. A site whose column holds any
    other value refuses: the pooled column is then quantitative (plink2's rule looks at every
    value), so no site may read it as case/control; each site checking its own values is enough.
    """
    if pheno not in cohort.columns:
        raise InputError(f"{what}: phenotype {pheno!r} is not among the cohort's columns")
    values = np.asarray(cohort.columns[pheno], dtype=np.float64)
    if values.shape != (cohort.n,):
        raise InputError(f"{what}: phenotype {pheno!r} has shape {values.shape}, expected ({cohort.n},)")
    present = values[~np.isnan(values)]
    if not np.isin(present, (0.0, 1.0, 2.0, -9.0)).all():
        raise InputError(
            f"{what}: phenotype {pheno!r} is not case/control (expected 1 = control, 2 = case, 0/-9/NA = missing)"
        )
    return values == 2.0, values == 1.0


class AssocCounts:
    """Site side of ``--assoc``/``--model``: genotype counts of cases, controls and everyone.

    Round parameter ``pheno`` names the case/control column of the cohort (1 = control,
    2 = case, 0 / -9 / NaN = missing: such samples count only in the ``all_*`` sums, which
    decide the minor allele as PLINK 1.9 does, over all samples).
    """

    name = COMPUTATION

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return per_variant(SUM_NAMES, integer=True) | cohort_level(COHORT_SUM_NAMES, 1, integer=True)

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """Everyone (the minor allele is chosen over all samples), the cases, the controls."""
        case, ctrl = case_control_masks(cohort, _pheno_param(inp))
        return {"all": np.ones(cohort.n, dtype=bool), "cases": case, "controls": ctrl}

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """Numbers of cases, controls and samples missing the phenotype, each shape (1,)."""
        case, ctrl = case_control_masks(cohort, _pheno_param(inp))
        n_case, n_ctrl = int(case.sum()), int(ctrl.sum())
        return {
            "n_case": np.array([n_case], dtype=np.int64),
            "n_ctrl": np.array([n_ctrl], dtype=np.int64),
            "n_missing_pheno": np.array([cohort.n - n_case - n_ctrl], dtype=np.int64),
        }

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        """Genotype counts per group for one block.

        Parameters
        ----------
        block : [array, shape: (b, cohort.n), dtype int8] ALT counts 0/1/2, negative = missing

        Returns
        -------
        dict
            For each name in :data:`SUM_NAMES` (``case_hom_ref`` … ``all_hom_alt``),
            [array, shape: (b,), dtype int64]; missing genotypes are not counted.
        """
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != cohort.n:
            raise InputError(f"assoc: genotype block has shape {block.shape}, expected (variants, {cohort.n})")
        if block.size and int(block.max()) > 2:
            raise InputError("assoc: genotype block holds an ALT allele count above 2")
        case, ctrl = case_control_masks(cohort, _pheno_param(inp))
        other = ~(case | ctrl)
        # one column gather puts cases, controls, the rest side by side; then count on slices
        order = np.concatenate([np.flatnonzero(case), np.flatnonzero(ctrl), np.flatnonzero(other)])
        bounds = np.cumsum([0, int(case.sum()), int(ctrl.sum()), int(other.sum())])
        grouped = block[:, order]
        counts: dict[str, list[np.ndarray]] = {k: [] for k in _GENOS}
        for i in range(3):
            part = grouped[:, bounds[i] : bounds[i + 1]]
            for g, key in enumerate(_GENOS):
                counts[key].append(np.count_nonzero(part == g, axis=1).astype(np.int64))
        out: dict[str, np.ndarray] = {}
        for key in _GENOS:
            case_ct, ctrl_ct, other_ct = counts[key]
            out[f"case_{key}"] = case_ct
            out[f"ctrl_{key}"] = ctrl_ct
            out[f"all_{key}"] = case_ct + ctrl_ct + other_ct
        assert all(v.shape == (block.shape[0],) for v in out.values())
        return out


def _pheno_param(inp: RoundInput) -> str:
    try:
        return inp.params["pheno"]
    except KeyError:
        raise InputError("assoc_counts round is missing its 'pheno' parameter") from None


#: Local computations of this module, by name.
LOCAL_COMPUTATIONS: dict[str, LocalComputation] = {COMPUTATION: AssocCounts()}


# ---------------------------------------------------------------------------------------------
# statistics (coordinator side)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssocStats:
    """Per-variant case/control statistics. Every field is [array, shape: (n_variants,)].

    Counts are oriented to PLINK 1.9's A1 (the minor allele over all samples); float fields
    are NaN where PLINK 1.9 prints ``NA``.

    Attributes
    ----------
    tested : bool, autosomal variants (the others are left out of the tables)
    a1_is_alt : bool, A1 is the ALT allele (else A1 is REF)
    case_a1a1, case_a1a2, case_a2a2, ctrl_a1a1, ctrl_a1a2, ctrl_a2a2 : int64 genotype counts
    f_a, f_u : A1 frequency among cases / controls (.assoc F_A, F_U)
    chisq, p : allelic chi-square and p-value (.assoc CHISQ, P; .model ALLELIC)
    odds_ratio : odds ratio of A1, cases vs controls (.assoc OR)
    trend_chisq, trend_p : Cochran-Armitage trend test (.model TREND)
    allelic_chisq, allelic_p : allelic test as .model ALLELIC prints it (NA, not 0, when
        cases or controls have no genotype)
    geno_chisq, geno_p : genotypic test (.model GENO); geno_df int64 (0 where NA)
    dom_chisq, dom_p, rec_chisq, rec_p : dominant / recessive A1 tests (.model DOM, REC)
    """

    tested: np.ndarray
    a1_is_alt: np.ndarray
    case_a1a1: np.ndarray
    case_a1a2: np.ndarray
    case_a2a2: np.ndarray
    ctrl_a1a1: np.ndarray
    ctrl_a1a2: np.ndarray
    ctrl_a2a2: np.ndarray
    f_a: np.ndarray
    f_u: np.ndarray
    chisq: np.ndarray
    p: np.ndarray
    odds_ratio: np.ndarray
    trend_chisq: np.ndarray
    trend_p: np.ndarray
    allelic_chisq: np.ndarray
    allelic_p: np.ndarray
    geno_chisq: np.ndarray
    geno_df: np.ndarray
    geno_p: np.ndarray
    dom_chisq: np.ndarray
    dom_p: np.ndarray
    rec_chisq: np.ndarray
    rec_p: np.ndarray
    #: disclosure control: rows whose case/control table has a cell below the sites' minimum;
    #: every count and statistic of such a row prints NA (None: nothing suppressed)
    suppressed: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.tested.shape[0])

    def alleles(self, variants: VariantTable) -> tuple[np.ndarray, np.ndarray]:
        """(A1, A2) allele strings, [array, shape: (n_variants,), dtype object] each."""
        a1 = np.where(self.a1_is_alt, variants.alt, variants.ref)
        a2 = np.where(self.a1_is_alt, variants.ref, variants.alt)
        return a1, a2


def plink1_chrom_codes(chrom: Iterable[object]) -> np.ndarray:
    """Chromosome codes as PLINK 1.9 prints them by default: X=23, Y=24, XY=25, MT=26, 'chr' dropped.

    Codes are read as plink2 reads them (:func:`fedstat.data.variants.normalise_chrom`; a
    :class:`VariantTable` read from a file holds them so already).
    """
    out = []
    for c in chrom:
        s = normalise_chrom(str(c))
        out.append(_PLINK1_CODES.get(s, s[3:] if s[:3].lower() == "chr" else s))
    return np.asarray(out, dtype=object)


def _chiprob(chisq: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    """Upper-tail chi-square p-value; NaN where the statistic is NaN (PLINK's -9)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(chisq), np.nan, special.chdtrc(df, np.where(np.isnan(chisq), 0.0, chisq)))


def _chi22x(m11: np.ndarray, row1: np.ndarray, col1: np.ndarray, total: np.ndarray) -> np.ndarray:
    """PLINK ``chi22_evalx``: 2x2 Pearson chi-square; NaN when a margin is zero."""
    numer = (row1 * col1).astype(np.float64)  # row1 * col1 in exact integers, then double
    denom = numer * ((total - row1) * (total - col1)).astype(np.float64)
    tot = total.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dyy = m11.astype(np.float64) * tot - numer  # total * (m11 - expected m11)
        out = (dyy * dyy * tot) / denom
    return np.where(denom != 0, out, np.nan)


def _chi23x(m: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """PLINK ``chi23_evalx`` on rows (m11, m12, m13) and (m21, m22, m23): (chisq, df)."""
    m11, m12, m13, m21, m22, m23 = m
    row1 = m11 + m12 + m13
    row2 = m21 + m22 + m23
    col1, col2, col3 = m11 + m21, m12 + m22, m13 + m23
    total = row1 + row2
    with np.errstate(invalid="ignore", divide="ignore"):
        tot_recip = 1.0 / total.astype(np.float64)
        chisq = np.zeros(total.shape, dtype=np.float64)
        for row, cells in ((row1, (m11, m12, m13)), (row2, (m21, m22, m23))):
            dxx = row * tot_recip
            for cell, col in zip(cells, (col1, col2, col3), strict=True):
                expect = dxx * col.astype(np.float64)
                delta = cell - expect
                chisq = chisq + delta * delta / expect
    chisq = np.where(chisq < _SMALL_EPSILON * _SMALL_EPSILON, 0.0, chisq)
    df = np.full(total.shape, 2, dtype=np.int64)
    # a lone empty column: 2x2 test on the remaining ones (1 df)
    two_by_two = np.where(col1 == 0, _chi22x(m12, row1, col2, total), _chi22x(m11, row1, col1, total))
    reduced = (col1 == 0) | (col2 == 0) | (col3 == 0)
    chisq = np.where(reduced, two_by_two, chisq)
    df = np.where(reduced, np.where(np.isnan(two_by_two), 0, 1), df)
    empty_row = (row1 == 0) | (row2 == 0)
    chisq = np.where(empty_row, np.nan, chisq)
    df = np.where(empty_row, 0, df)
    return chisq, df


def _trend(
    case_dom: np.ndarray, case_ct: np.ndarray, het: np.ndarray, homdom: np.ndarray, total: np.ndarray
) -> np.ndarray:
    """PLINK ``ca_trend_evalx``: Cochran-Armitage trend chi-square; NaN when degenerate."""
    dom_ct = (het + 2 * homdom).astype(np.float64)
    totald = total.astype(np.float64)
    case_ctd = case_ct.astype(np.float64)
    cat = case_dom.astype(np.float64) * totald - dom_ct * case_ctd
    dxx = totald * (het + 4 * homdom).astype(np.float64) - dom_ct * dom_ct
    ok = dxx != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dxx = dxx * (case_ctd * (totald - case_ctd))
        out = cat * cat * totald / dxx
    return np.where(ok, out, np.nan)


def _counts(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [n for n in SUM_NAMES if n not in sums]
    if missing:
        raise InputError(f"assoc needs the sums {SUM_NAMES}; missing {missing}")
    out: dict[str, np.ndarray] = {}
    shape = None
    for name in SUM_NAMES:
        raw = np.asarray(sums[name])
        if raw.ndim != 1:
            raise InputError(f"assoc sum {name!r} must be 1-d, got shape {raw.shape}")
        if shape is None:
            shape = raw.shape
        elif raw.shape != shape:
            raise InputError(f"assoc sum {name!r} has shape {raw.shape}, expected {shape}")
        arr = np.rint(raw).astype(np.int64) if raw.dtype.kind == "f" else raw.astype(np.int64)
        if raw.dtype.kind == "f" and not np.array_equal(arr, raw):
            raise InputError(f"assoc sum {name!r} holds a non-integral count")
        if arr.size and int(arr.min()) < 0:
            raise InputError(f"assoc sum {name!r} holds a negative count")
        out[name] = arr
    return out


def finish(sums: Mapping[str, np.ndarray], chrom: np.ndarray | None = None, *, cell: int = 5) -> AssocStats:
    """PLINK 1.9 ``--assoc``/``--model`` statistics from global genotype counts.

    Parameters
    ----------
    sums : for each name in :data:`SUM_NAMES`, [array, shape: (n_variants,)] counts summed
        over sites (ALT-oriented: ``hom_alt`` = two ALT alleles).
    chrom : [array, shape: (n_variants,)] chromosome codes; variants not on chromosomes 1-22
        are marked untested. None = all tested.
    cell : minimum count in every genotype cell for GENO/DOM/REC (PLINK's ``--cell``).

    Returns
    -------
    AssocStats

    Notes
    -----
    A1 is REF when the REF frequency over all samples with a genotype is below 0.5, else
    ALT (PLINK 1.9 reads the ``.bim`` A1 = ALT and swaps when the A2 frequency < 0.5; ties
    and unobserved variants keep ALT).
    """
    c = _counts(sums)
    n = c["all_hom_ref"].shape[0]
    # PLINK 1.9: A2 (= REF) frequency < 0.5 swaps, so A1 = REF; in exact integers
    ref_alleles = 2 * c["all_hom_ref"] + c["all_het"]
    all_alleles = 2 * (c["all_hom_ref"] + c["all_het"] + c["all_hom_alt"])
    a1_is_alt = ~(2 * ref_alleles < all_alleles)
    # genotype counts by A1 dosage, PLINK's names: uoo/unn/umm = case hom A1/het/hom A2,
    # ukk/ujj/uii = control hom A1/het/hom A2
    uoo = np.where(a1_is_alt, c["case_hom_alt"], c["case_hom_ref"])
    unn = c["case_het"]
    umm = np.where(a1_is_alt, c["case_hom_ref"], c["case_hom_alt"])
    ukk = np.where(a1_is_alt, c["ctrl_hom_alt"], c["ctrl_hom_ref"])
    ujj = c["ctrl_het"]
    uii = np.where(a1_is_alt, c["ctrl_hom_ref"], c["ctrl_hom_alt"])
    tested = np.ones(n, dtype=bool) if chrom is None else np.isin(plink1_chrom_codes(chrom), list(_AUTOSOMES))

    # --assoc: allele counts, A1 (da1, du1) and A2 (da2, du2) in cases (a) and controls (u)
    case_a1, case_a2 = 2 * uoo + unn, 2 * umm + unn
    ctrl_a1, ctrl_a2 = 2 * ukk + ujj, 2 * uii + ujj
    da1, da2 = case_a1.astype(np.float64), case_a2.astype(np.float64)
    du1, du2 = ctrl_a1.astype(np.float64), ctrl_a2.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_a = np.where(case_a1 + case_a2 > 0, da1 / (da1 + da2), np.nan)
        f_u = np.where(ctrl_a1 + ctrl_a2 > 0, du1 / (du1 + du2), np.nan)
        odds = (da1 * du2) / (du1 * da2)
    odds = np.where(du1 * da2 == 0.0, np.nan, odds)
    # chi22_eval: 0 (not NA) when a margin is empty; NA only when A1 or A2 is absent
    both_alleles = ((case_a1 + ctrl_a1) > 0) & ((case_a2 + ctrl_a2) > 0)
    chisq = _chi22x(case_a2, case_a2 + case_a1, ctrl_a2 + case_a2, case_a1 + case_a2 + ctrl_a1 + ctrl_a2)
    chisq = np.where(np.isnan(chisq), 0.0, chisq)
    chisq = np.where(both_alleles, chisq, np.nan)
    p = _chiprob(chisq, 1.0)

    # --model
    total = uoo + unn + umm + ukk + ujj + uii
    trend_chisq = _trend(umm * 2 + unn, umm + unn + uoo, ujj + unn, uii + umm, total)
    trend_p = _chiprob(trend_chisq, 1.0)
    allelic = _chi22x(2 * uoo + unn, 2 * (uoo + unn + umm), 2 * (uoo + ukk) + unn + ujj, 2 * total)
    allelic_p = _chiprob(allelic, 1.0)
    invalid = (uoo < cell) | (unn < cell) | (umm < cell) | (ukk < cell) | (ujj < cell) | (uii < cell)
    geno_chisq, geno_df = _chi23x([uii, ujj, ukk, umm, unn, uoo])
    geno_chisq = np.where(invalid, np.nan, geno_chisq)
    geno_df = np.where(invalid | np.isnan(geno_chisq), 0, geno_df)
    geno_p = _chiprob(geno_chisq, np.maximum(geno_df, 1).astype(np.float64))
    dom_chisq = np.where(invalid, np.nan, _chi22x(uoo + unn, uoo + unn + umm, uoo + unn + ukk + ujj, total))
    rec_chisq = np.where(invalid, np.nan, _chi22x(uoo, uoo + unn + umm, uoo + ukk, total))
    # ALLELIC (.model) and CHISQ (.assoc) agree except for PLINK's different NA rules
    assert allelic.shape == chisq.shape == (n,)
    return AssocStats(
        tested=tested,
        a1_is_alt=a1_is_alt,
        case_a1a1=uoo,
        case_a1a2=unn,
        case_a2a2=umm,
        ctrl_a1a1=ukk,
        ctrl_a1a2=ujj,
        ctrl_a2a2=uii,
        f_a=f_a,
        f_u=f_u,
        chisq=chisq,
        p=p,
        odds_ratio=odds,
        trend_chisq=trend_chisq,
        trend_p=trend_p,
        allelic_chisq=allelic,
        allelic_p=allelic_p,
        geno_chisq=geno_chisq,
        geno_df=geno_df,
        geno_p=geno_p,
        dom_chisq=dom_chisq,
        dom_p=_chiprob(dom_chisq, 1.0),
        rec_chisq=rec_chisq,
        rec_p=_chiprob(rec_chisq, 1.0),
    )


_STAT_FIELDS = (
    "f_a", "f_u", "chisq", "p", "odds_ratio", "trend_chisq", "trend_p", "allelic_chisq", "allelic_p",
    "geno_chisq", "geno_p", "dom_chisq", "dom_p", "rec_chisq", "rec_p",
)  # fmt: skip


def small_cell_rows(cells: list[np.ndarray], min_cell_count: int) -> np.ndarray:
    """Variants (bool per row) where one of the case/control genotype ``cells`` is 1..min−1."""
    stacked = np.stack(cells)
    return np.asarray(((stacked > 0) & (stacked < min_cell_count)).any(axis=0))


def suppress_small_cells(stats: AssocStats, min_cell_count: int) -> AssocStats:
    """Disclosure control (DataSHIELD's ``nfilter.tab``): a variant whose case/control genotype
    table has a non-zero cell below ``min_cell_count`` is released as NA throughout, counts,
    frequencies and tests alike. ``min_cell_count`` 0 or 1 suppresses nothing."""
    if min_cell_count <= 1:
        return stats
    cells = [stats.case_a1a1, stats.case_a1a2, stats.case_a2a2, stats.ctrl_a1a1, stats.ctrl_a1a2, stats.ctrl_a2a2]
    small = small_cell_rows(cells, min_cell_count)
    nan_out = {name: np.where(small, np.nan, getattr(stats, name)) for name in _STAT_FIELDS}
    return replace(stats, suppressed=small, geno_df=np.where(small, 0, stats.geno_df), **nan_out)


# ---------------------------------------------------------------------------------------------
# the job analysis
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssocTables:
    """The ``--assoc`` / ``--model`` result of a job: the statistics and which tables to write.

    Attributes
    ----------
    variants : the harmonized variants, one row per entry of ``stats``
    stats : from :func:`finish` (after disclosure control)
    assoc, model : write ``<out>.assoc`` / ``<out>.model``
    """

    variants: VariantTable
    stats: AssocStats
    assoc: bool
    model: bool


class AssocAnalysis:
    """Coordinator side of ``--assoc``/``--model`` for one case/control phenotype: one round.

    Its :meth:`result` is written as ``<out>.assoc`` and/or ``<out>.model``.
    """

    def __init__(self, pheno: str, *, model: bool, assoc: bool, cell: int = 5, min_cell_count: int = 0):
        if not (model or assoc):
            raise InputError("plan_assoc: ask for --assoc, --model or both")
        if cell < 0:
            raise InputError(f"--cell must be non-negative, got {cell}")
        self.pheno = pheno
        self.model = model
        self.assoc = assoc
        self.cell = cell
        self.min_cell_count = min_cell_count
        self.sums: dict[str, np.ndarray] | None = None
        self.stats: AssocStats | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            return RoundPlan(COMPUTATION, params={"pheno": self.pheno})
        self.sums = {k: np.asarray(v) for k, v in sums.items()}
        return None

    def result(self, variants: VariantTable) -> AssocTables:
        """The per-variant statistics (after the round) and the tables asked for."""
        if self.sums is None:
            raise InputError("assoc: no sums yet; run the round first")
        if self.stats is None:
            self.stats = suppress_small_cells(finish(self.sums, variants.chrom, cell=self.cell), self.min_cell_count)
        return AssocTables(variants, self.stats, assoc=self.assoc, model=self.model)

    def log_lines(self) -> list[str]:
        if self.sums is None:
            return []
        lines = []
        if all(k in self.sums for k in COHORT_SUM_NAMES):
            n_case, n_ctrl, n_miss = (int(np.asarray(self.sums[k]).sum()) for k in COHORT_SUM_NAMES)
            lines.append(
                f"assoc {self.pheno}: {n_case} cases and {n_ctrl} controls; "
                f"{n_miss} samples missing the phenotype excluded"
            )
        if self.min_cell_count > 1:
            c = _counts(self.sums)  # before the tables are written: the same rows suppress_small_cells will NA
            cells = [c[f"{g}_{k}"] for g in ("case", "ctrl") for k in ("hom_ref", "het", "hom_alt")]
            n_small = int(small_cell_rows(cells, self.min_cell_count).sum())
            lines.append(
                f"disclosure control: {n_small} variants' case/control tables have a cell below "
                f"{self.min_cell_count} (the strictest site's min_cell_count) and are released as NA"
            )
        if self.stats is not None:
            skipped = int((~self.stats.tested).sum())
            if skipped:
                lines.append(f"assoc {self.pheno}: {skipped} non-autosomal variants not tested")

        return lines


def plan_assoc(pheno: str, *, model: bool, assoc: bool, cell: int = 5, min_cell_count: int = 0) -> AssocAnalysis:
    """The coordinator side of ``--assoc`` and/or ``--model`` for case/control ``pheno``.

    Parameters
    ----------
    pheno : case/control column (1 = control, 2 = case)
    model : write ``<out>.model``
    assoc : write ``<out>.assoc``
    cell : PLINK's ``--cell`` (minimum genotype cell count for GENO/DOM/REC), default 5
    min_cell_count : disclosure control, see :func:`suppress_small_cells` (0: off)

    Returns
    -------
    AssocAnalysis
        A :class:`~fedstat.stats.base.JobAnalysis`: one round of :data:`COMPUTATION`, then the
        tables; :meth:`AssocAnalysis.result` gives the per-variant statistics and the tables.
    """
    return AssocAnalysis(pheno, model=model, assoc=assoc, cell=cell, min_cell_count=min_cell_count)
