"""Federated ``--glm``: linear and logistic (Firth-fallback) association, equal to plink2's on pooled data.

Every number the coordinator sees is a sum over participants computed at the sites. A job runs

1. ``glm_describe`` — cohort sums per phenotype/covariate column (non-missing counts, counts of
   the values 0/1/2, sums, sums of squares) decide *globally* which columns are case/control
   coded (plink2: every non-missing value is 1 or 2, 0 = missing) and which covariates are
   constant; per-variant ALT counts over all cohort samples fix A1 (plink2 2.00a3.5 tests the
   non-major allele: A1 = REF exactly when the ALT count exceeds the observed-genotype count).
2. ``glm_linear`` (one round, every quantitative phenotype) — sufficient statistics, see
   :mod:`fedstat.stats.glm_linear`.
3. ``glm_logistic`` (Newton / Firth rounds, one binary phenotype at a time) — see
   :mod:`fedstat.stats.glm_logistic`.

Sites always work in ALT coding; the coordinator maps sums to A1 coding with the involution
``x' = T x`` (``[1, g, c] -> [1, 2 - g, c]``), so iteration paths and convergence decisions
are those plink2 takes in its own parametrisation.

References
----------
plink2 2.00a3.5 (9 Aug 2022) ``--glm``: ``plink2_glm.cc``, ``plink2_glm_linear.cc``,
``plink2_glm_logistic.cc`` (GlmDetermineCovars, CheckMaxCorrAndVif, LogisticRegression,
FirthRegression, AppendGlmErrstr, ``lntoa_g``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedstat.data.categories import indicator_name
from fedstat.data.genotypes import DOSAGE_UNIT, DOSAGES
from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.stats.adjust import Adjusted, AdjustOptions, lambda_log_line, multcomp
from fedstat.stats.base import (
    Cohort,
    LocalComputation,
    RoundInput,
    RoundPlan,
    SumArray,
    cohort_level,
    per_variant,
)
from fedstat.stats.glm_ci import MIN_CI, ci_zscore
from fedstat.stats.glm_common import (
    CONST_REL_TOL,
    ERR_SEPARATION,
    ERRCODE_STRS,
    MAX_CORR,
    SEX_COVAR,
    VIF_THRESH,
    Fit,
    JobView,
    PhenoSpec,
    category_groups,
    cohort_column,
    encode_specs,
)
from fedstat.stats.glm_linear import LinearSums, finish_linear
from fedstat.stats.glm_logistic import LogisticFit, LogisticSums
from fedstat.stats.glm_sexchr import COMPUTATION as MALES_COMPUTATION
from fedstat.stats.glm_sexchr import (
    GlmDescribeMales,
    GlmGroup,
    GroupView,
    chrom_kinds,
    merge_fits,
    plan_groups,
    sex_aware_a1,
)

__all__ = [
    "LOCAL_COMPUTATIONS",
    "MAX_CORR",
    "VIF_THRESH",
    "GlmJob",
    "GlmResult",
    "GlmTables",
    "ci_zscore",
    "plan_glm",
]

MODIFIERS = frozenset({"hide-covar", "firth", "no-firth", "firth-fallback", "allow-no-covars", "no-x-sex"})
# the round spec, a site's design, the packed sums and plink2's checks: fedstat.stats.glm_common


# ---------------------------------------------------------------------------------------------
# results (fedstat.formats.plink2.write_glm writes them)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GlmResult:
    """One phenotype's association results; arrays have one row per harmonized variant.

    Attributes
    ----------
    pheno : phenotype name
    is_binary : case/control phenotype (logistic / Firth) or quantitative (linear)
    method : ``"linear"``, ``"logistic-firth-hybrid"`` (firth-fallback), ``"logistic"``
        (no-firth) or ``"firth"``
    covariates : covariates in the model, in order
    tests : TEST names per variant (``ADD`` then covariates unless hide-covar)
    n_samples, n_cases, n_controls : phenotype-level counts (cases/controls 0 for linear)
    a1_is_ref : [shape: (V,), bool] A1 (tested allele) is REF, else ALT
    obs_ct : [shape: (V,), int64] OBS_CT, samples in the variant's regression
    a1_freq : [shape: (V,), float64] A1 frequency among those samples (NaN if none)
    beta, se, stat, log_p : [shape: (V, len(tests)), float64] BETA (log-odds for logistic), SE,
        T or Z statistic, natural log of P; NaN where ERRCODE is an error
    errcode : [shape: (V,), object] ``.``, ``UNFINISHED`` (results valid) or the error code
    firth : [shape: (V,), bool] Firth regression was used (FIRTH? = Y)
    ci_size : ``--ci`` level (0.95 -> columns L95, U95); 0 without ``--ci``
    ci_lower, ci_upper : [shape: (V, len(tests)), float64] ``BETA ∓ z·SE`` with z the normal
        quantile of ``(1 + ci_size) / 2`` (log-odds for logistic; plink2 uses z, not t, for linear
        too); NaN where ERRCODE is an error; None without ``--ci``
    adjusted : ``--adjust``'s corrections of the ADD test's p-values, or None
    a1_ct : [shape: (V,), float64] A1 dosage summed over the OBS_CT samples (``cols=+a1count``);
        None where unknown
    case_obs_ct : [shape: (V,), int64] cases among the OBS_CT samples (``+totallelecc``); None
        for linear
    a1_case_ct : [shape: (V,), float64] A1 dosage summed over those cases (``+a1countcc``,
        ``+a1freqcc``); None for linear
    cc_suppressed : [shape: (V,), bool] variants whose case/control A1 and non-A1 counts are
        withheld (written NA) by disclosure control; None when nothing is
    test_mask : [shape: (V, len(tests)), bool] the (variant, test) rows written (chrX adds SEX;
        a chromosome plink2 skips has none); None: every row
    haploid : [shape: (V,), bool] variants regressed haploid (chrY, MT: ALLELE_CT = OBS_CT); None: none
    """

    pheno: str
    is_binary: bool
    method: str
    covariates: tuple[str, ...]
    tests: tuple[str, ...]
    n_samples: int
    n_cases: int
    n_controls: int
    a1_is_ref: np.ndarray
    obs_ct: np.ndarray
    a1_freq: np.ndarray
    beta: np.ndarray
    se: np.ndarray
    stat: np.ndarray
    log_p: np.ndarray
    errcode: np.ndarray
    firth: np.ndarray
    ci_size: float = 0.0
    ci_lower: np.ndarray | None = None
    ci_upper: np.ndarray | None = None
    adjusted: Adjusted | None = None
    a1_ct: np.ndarray | None = None
    case_obs_ct: np.ndarray | None = None
    a1_case_ct: np.ndarray | None = None
    cc_suppressed: np.ndarray | None = None
    test_mask: np.ndarray | None = None
    haploid: np.ndarray | None = None

    @property
    def p(self) -> np.ndarray:
        """P values [shape: (V, len(tests))]; underflow to 0 below ~1e-308 (use ``log_p``)."""
        p: np.ndarray = np.exp(self.log_p)
        return p

    @property
    def extension(self) -> str:
        return {
            "linear": "glm.linear",
            "logistic-firth-hybrid": "glm.logistic.hybrid",
            "logistic": "glm.logistic",
            "firth": "glm.firth",
        }[self.method]


@dataclass(frozen=True)
class GlmTables:
    """The ``--glm`` results of a job: one :class:`GlmResult` per phenotype analysed, in order.

    Attributes
    ----------
    variants : the variants tested, one row per row of each result
    results : per phenotype, written as ``<out>.<PHENO>.<GlmResult.extension>``
    columns : ``cols=``'s column names (plink2's, e.g. ``{"chrom", "pos", "a1freq", ...}``); None
        for plink2's default set
    """

    variants: VariantTable
    results: tuple[GlmResult, ...]
    columns: frozenset[str] | None = None


def errcode_strings(err: np.ndarray, sep_allele: np.ndarray | None = None) -> np.ndarray:
    out = np.array([ERRCODE_STRS[e] for e in err.tolist()], dtype=object)
    if sep_allele is not None:
        for i in np.flatnonzero(err == ERR_SEPARATION).tolist():
            out[i] = "SEPARATION," + ("REF" if sep_allele[i] == 0 else f"ALT{int(sep_allele[i])}")
    return out


# ---------------------------------------------------------------------------------------------
# describe round (site side)
# ---------------------------------------------------------------------------------------------


class GlmDescribe:
    """Site side of ``glm_describe``: column summaries and per-variant ALT dosage sums (in 1/16384
    units, exact integers; a hard call is 0, 16384 or 32768) over the samples with a genotype."""

    def genotypes(self, params: Mapping[str, str]) -> str:
        return DOSAGES

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        try:
            n_cols = len(json.loads(params.get("columns", "[]")))
        except (ValueError, TypeError) as exc:
            raise InputError("glm_describe round has no valid 'columns' parameter") from exc
        counts = ("nonmiss", "n0", "n1", "n2", "zero_dropped")
        return (
            cohort_level((f"describe.{k}" for k in counts), n_cols, integer=True)
            | cohort_level(("describe.sum", "describe.ssq"), n_cols)
            | per_variant(("describe.alt_ct", "describe.nobs"), integer=True)
        )

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        names = json.loads(inp.params.get("columns", "[]"))
        out: dict[str, np.ndarray] = {
            k: np.zeros(len(names), dtype=np.int64) for k in ("nonmiss", "n0", "n1", "n2", "zero_dropped")
        }
        out["sum"] = np.zeros(len(names))
        out["ssq"] = np.zeros(len(names))
        for j, name in enumerate(names):
            v = cohort_column(cohort, name)
            present = v[~np.isnan(v)]
            out["nonmiss"][j] = present.size
            out["n0"][j] = np.count_nonzero(present == 0.0)
            out["n1"][j] = np.count_nonzero(present == 1.0)
            out["n2"][j] = np.count_nonzero(present == 2.0)
            # whether this site left out 0s (only that is checked): never how many, a count outside
            # every released group
            out["zero_dropped"][j] = min(cohort.zero_dropped.get(name, 0), 1)
            out["sum"][j] = present.sum()
            out["ssq"][j] = present @ present
        return {f"describe.{k}": v for k, v in out.items()}

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """The cohort, and its members of each category of a categorical covariate (whose counts
        the indicator columns' sums are)."""
        everyone = np.ones(cohort.n, dtype=bool)
        return {"cohort": everyone} | category_groups(cohort, everyone, "cohort")

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != cohort.n:
            raise InputError(f"glm: genotype block has shape {block.shape}, expected (variants, {cohort.n})")
        nobs = np.count_nonzero(block >= 0, axis=1).astype(np.int64)
        # float64 sums of multiples of 2^-14 are exact
        alt = np.rint(np.maximum(block, 0).sum(axis=1, dtype=np.float64) * DOSAGE_UNIT).astype(np.int64)
        return {"describe.alt_ct": alt, "describe.nobs": nobs}


# ---------------------------------------------------------------------------------------------
# the coordinator's job
# ---------------------------------------------------------------------------------------------


@dataclass
class _Columns:
    binary: dict[str, bool] = field(default_factory=dict)
    const: dict[str, bool] = field(default_factory=dict)


class GlmJob:
    """Coordinator side of ``--glm``: describe, one linear round, logistic/Firth rounds.

    After it finishes, :attr:`results` maps each analysed phenotype to its :class:`GlmResult`.
    """

    def __init__(
        self,
        pheno_names: tuple[str, ...],
        covar_names: tuple[str, ...],
        modifiers: frozenset[str],
        *,
        ci: float = 0.0,
        adjust: AdjustOptions | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
        standardize: Sequence[str] | None = None,
        require_covar: bool = False,
        columns: frozenset[str] | None = None,
        min_cell_count: int = 0,
        chrom: Sequence[str] | np.ndarray | None = None,
    ):
        unknown = set(modifiers) - MODIFIERS
        if unknown:
            raise InputError(f"--glm: unsupported modifier(s) {sorted(unknown)}; supported: {sorted(MODIFIERS)}")
        modes = {"firth", "no-firth", "firth-fallback"} & set(modifiers)
        if len(modes) > 1:
            raise InputError(f"--glm: modifiers {sorted(modes)} are mutually exclusive")
        if not pheno_names:
            raise InputError("--glm needs at least one phenotype")
        dup = {n for n in (*pheno_names, *covar_names) if (*pheno_names, *covar_names).count(n) > 1}
        if dup:
            raise InputError(f"--glm: column(s) {sorted(dup)} given more than once")
        if ci and not MIN_CI <= ci < 1.0:
            raise InputError(f"--ci: the confidence level must be in [{MIN_CI}, 1), got {ci!r}")
        self.ci = float(ci)
        self.adjust = adjust
        self.columns = columns  # cols=: written from the results, no round of its own
        self.min_cell_count = min_cell_count  # disclosure control of cols='s case/control counts
        self.pheno_names = tuple(pheno_names)
        self.covar_names = tuple(covar_names)
        # categorical covariate -> its indicator columns COL=LEVEL, every category (natural order);
        # plink2 fills the design in covariate order, a categorical one expanded in place
        self.indicators = {
            c: tuple(indicator_name(c, level) for level in (categories or {})[c])
            for c in covar_names
            if c in (categories or {})
        }
        # --covar-variance-standardize: None off, () every quantitative covariate, else those named
        self.standardize = None if standardize is None else tuple(standardize)
        self.require_covar = require_covar  # --require-covar: no cohort member misses a covariate
        # numeric covariates holding two of the values 0, 1, 2 over the cohort (e.g. SEX 1/2): the
        # logistic separation check reads their cases per value from the sums (after describe)
        self.two_valued: dict[str, tuple[float, float]] = {}
        # each variant's chromosome class (fedstat.stats.glm_sexchr); None: all diploid
        self.kind = None if chrom is None else chrom_kinds(chrom)
        self.no_x_sex = "no-x-sex" in modifiers
        if self.kind is not None and (self.kind == "X").any() and SEX_COVAR in covar_names and not self.no_x_sex:
            raise InputError(
                f"--glm on chrX: plink2 adds a covariate '{SEX_COVAR}' there, which a covariate of that name would "
                "clash with; add the no-x-sex modifier (--glm no-x-sex: the covariate as given), rename the "
                "covariate, or leave chrX out (--not-chr X)"
            )
        self.hide_covar = "hide-covar" in modifiers
        self.firth_mode = "firth" if "firth" in modifiers else ("no-firth" if "no-firth" in modifiers else "fallback")
        self.results: dict[str, GlmResult] = {}
        self._log: list[str] = []
        self._stage = "start"
        self._cols = _Columns()
        self._n_var = 0
        self._a1_is_ref = np.zeros(0, dtype=bool)
        self._linear_specs: list[PhenoSpec] = []
        self._binary_specs: list[PhenoSpec] = []
        self._fit: LogisticFit | None = None
        self._groups: list[GlmGroup] = []
        self._linear_rounds: list[tuple[GlmGroup, list[PhenoSpec]]] = []
        self._logistic_fits: list[tuple[GlmGroup, PhenoSpec]] = []
        self._group: GlmGroup | None = None
        self._parts: dict[str, list[tuple[GlmGroup, Fit | None]]] = {}
        self._alt_nobs = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    # -- protocol ---------------------------------------------------------------------------

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if self._stage == "start":
            self._stage = "describe"
            return RoundPlan("glm_describe", params={"columns": json.dumps(self._describe_columns())})
        if sums is None:
            raise InputError("glm: a round finished without sums")
        if self._stage == "describe":
            self._finish_describe(sums)
            rows = np.zeros(0, dtype=np.int64) if self.kind is None else np.flatnonzero(np.isin(self.kind, ["X", "Y"]))
            if rows.size:
                self._stage = "males"
                return RoundPlan(MALES_COMPUTATION, variants=rows.astype(np.int64))
            self._plan_groups(None)
        elif self._stage == "males":
            self._plan_groups(sums)
        elif self._stage == "linear":
            group, specs = self._linear_rounds.pop(0)
            fits = {f.pheno: f for f in finish_linear(sums, specs=specs, job=self._view(group))}
            for spec in specs:
                self._done(group, spec.name, fits.get(spec.name))
        elif self._stage == "logistic":
            assert self._fit is not None and self._group is not None
            plan = self._fit.step(sums)
            if plan is not None:
                return self._group.over(plan)
            self._done(self._group, self._fit.spec.name, self._fit.result())
            self._fit = None
        return self._advance()

    def _advance(self) -> RoundPlan | None:
        if self._linear_rounds:
            self._stage = "linear"
            group, specs = self._linear_rounds[0]
            return RoundPlan("glm_linear", params={"spec": encode_specs(specs)}, variants=group.rows)
        while self._logistic_fits:
            group, spec = self._logistic_fits.pop(0)
            self._stage = "logistic"
            self._group = group
            self._fit = LogisticFit(self._view(group), spec)
            return group.over(self._fit.first_plan())
        self._stage = "done"
        return None

    def _view(self, group: GlmGroup) -> JobView:
        return (
            self
            if group.rows is None and group.scale is None and not group.sex
            else GroupView(self, group, self._a1_is_ref)
        )

    def _plan_groups(self, males: Mapping[str, np.ndarray] | None) -> None:
        """The regressions per chromosome class (fedstat.stats.glm_sexchr), after the describe rounds."""
        if males is None or self.kind is None:
            self._groups = (
                [GlmGroup("", None)]
                if self.kind is None
                else plan_groups(self.kind, n_male=0, n_female=0, n_total=0, no_x_sex=True)[0]
            )
        else:
            rows = np.flatnonzero(np.isin(self.kind, ["X", "Y"])).astype(np.int64)
            alt, nobs = self._alt_nobs
            self._a1_is_ref = sex_aware_a1(self._a1_is_ref, self.kind, rows, alt, nobs, males)
            n_male, n_female, n_total = (int(x) for x in np.asarray(males["males.sex_ct"]).reshape(3))
            self._groups, _, lines = plan_groups(
                self.kind, n_male=n_male, n_female=n_female, n_total=n_total, no_x_sex=self.no_x_sex
            )
            self._log.extend(lines)
        if not self._groups:
            raise InputError("--glm: no variants remaining (plink2 skips chrY without males)")
        if self._linear_specs:
            self._linear_rounds = [(g, [g.spec_of(s) for s in self._linear_specs]) for g in self._groups]
        self._logistic_fits = [(g, g.spec_of(s)) for s in self._binary_specs for g in self._groups]
        self._parts = {s.name: [] for s in (*self._linear_specs, *self._binary_specs)}
        self._linear_specs, self._binary_specs = [], []

    def _done(self, group: GlmGroup, pheno: str, fit: Fit | None) -> None:
        """A group's fit of ``pheno`` (None: skipped there); the phenotype's result once all are in."""
        parts = self._parts[pheno]
        parts.append((group, fit))
        if len(parts) < len(self._groups):
            return
        first = parts[0][1]
        if first is None:
            return  # plink2 skips the phenotype
        if len(self._groups) == 1 and self._view(group) is self:
            self.results[pheno] = self._result(first)
            return
        self.results[pheno] = self._result(merge_fits(self._n_var, [(g, f) for g, f in parts if f is not None], self))

    def _describe_columns(self) -> list[str]:
        """The describe round's columns: phenotypes, then covariates with each categorical one's indicators."""
        covars = [x for c in self.covar_names for x in self.indicators.get(c, (c,))]
        return [*self.pheno_names, *covars]

    def _finish_describe(self, sums: Mapping[str, np.ndarray]) -> None:
        names = self._describe_columns()
        g = {k: np.asarray(sums[f"describe.{k}"]) for k in ("nonmiss", "n0", "n1", "n2", "sum", "ssq")}
        for j, name in enumerate(names):
            nonmiss, n0, n1, n2 = (int(g[k][j]) for k in ("nonmiss", "n0", "n1", "n2"))
            # plink2 (LoadPhenos): a phenotype is case/control unless some value, over the pooled
            # file, is neither missing nor 0, 1 or 2; a covariate is always a number
            binary = j < len(self.pheno_names) and nonmiss == n0 + n1 + n2
            if "describe.zero_dropped" in sums and not binary and int(sums["describe.zero_dropped"][j]) > 0:
                raise InputError(
                    f"--require-pheno: phenotype '{name}' is quantitative over the pooled data, but a site where it "
                    "holds only 0, 1, 2 and missing values left out its 0s as missing (plink2's case/control "
                    "coding); write missing values as NA in the sample tables, or leave out --require-pheno"
                )
            if binary:
                const = n1 == 0 or n2 == 0
                if const:
                    raise InputError(case_control_refusal(name, n0=n0, n1=n1, n2=n2))
            else:
                s, ss = float(g["sum"][j]), float(g["ssq"][j])
                const = nonmiss == 0 or ss - s * s / nonmiss <= CONST_REL_TOL * ss
            self._cols.binary[name] = binary
            self._cols.const[name] = const
        alt = np.asarray(sums["describe.alt_ct"], dtype=np.int64)
        nobs = np.asarray(sums["describe.nobs"], dtype=np.int64)
        self._n_var = int(alt.shape[0])
        self._alt_nobs = (alt, nobs)
        # plink2 ComputeMajAlleles: major = ALT iff REF frequency < 0.5 (an exact tie keeps REF
        # major), frequencies over all samples; A1 = the non-major allele
        self._a1_is_ref = alt > nobs * DOSAGE_UNIT
        scale = self._standardized(names, g)  # plink2 standardizes when loading, before --glm
        covars: list[str] = []
        mask: list[str] = []
        for name in self.covar_names:
            ind = self.indicators.get(name)
            # plink2 IsConstCovar over all samples: a categorical covariate with one category is constant
            const = self._cols.const[name] if ind is None else sum(g["sum"][names.index(x)] > 0 for x in ind) <= 1
            if const:
                self._log.append(f"Warning: Excluding constant covariate '{name}' from --glm.")
            else:
                # a category no cohort member holds gets no column (plink2 never sees it)
                covars.extend((x for x in ind if g["sum"][names.index(x)] > 0) if ind else (name,))
                mask.append(name)
                j = names.index(name) if ind is None else -1
                values = [v for v, k in ((0.0, "n0"), (1.0, "n1"), (2.0, "n2")) if j >= 0 and g[k][j] > 0]
                if len(values) == 2 and sum(int(g[k][j]) for k in ("n0", "n1", "n2")) == int(g["nonmiss"][j]):
                    self.two_valued[name] = (values[0], values[1])
        for name in self.pheno_names:
            spec = PhenoSpec(name, self._cols.binary[name], tuple(covars), tuple(mask), scale)
            (self._binary_specs if spec.binary else self._linear_specs).append(spec)

    def _standardized(self, names: list[str], g: Mapping[str, np.ndarray]) -> tuple[tuple[str, float, float], ...]:
        """``--covar-variance-standardize``: (covariate, mean, 1 / SD) of each quantitative covariate
        named (all without names), over the cohort's samples holding a value, as plink2's
        PhenoVarianceStandardize: sample SD (n - 1); a constant one (or one value) becomes missing,
        which leaves it out of the regression as a constant covariate."""
        if self.standardize is None:
            return ()
        named = self.standardize or tuple(c for c in self.covar_names if c not in self.indicators)
        wrong = [c for c in named if c in self.indicators]
        if wrong:
            raise InputError(f"--covar-variance-standardize: '{wrong[0]}' is not a quantitative covariate")
        chosen = [c for c in self.covar_names if c in named and c not in self.indicators]
        out = []
        for c in chosen:
            j = names.index(c)
            n, total, ssq = float(g["nonmiss"][j]), float(g["sum"][j]), float(g["ssq"][j])
            if n < 2:
                if n:
                    self._log.append(
                        f"Warning: Exactly one value present for covariate '{c}'; standardizing to missing."
                    )
                self._cols.const[c] = True
                continue
            mean = total / n
            numer = ssq - total * mean  # Σ (x - mean)²
            if not numer > 0.0:
                self._log.append(f"Warning: Covariate '{c}' is constant; standardizing to all-missing.")
                self._cols.const[c] = True
                continue
            out.append((c, mean, math.sqrt((n - 1.0) / numer)))
        if chosen:
            self._log.insert(
                0,
                f"--covar-variance-standardize: {len(chosen)} covariate{'s' if len(chosen) != 1 else ''} transformed.",
            )
        return tuple(out)

    def log_lines(self) -> list[str]:
        return list(self._log)

    def _result(self, fit: Fit) -> GlmResult:
        """A half's fit as the job's result: plink2's ERRCODE per variant, A1 in the job's coding."""
        errcode = errcode_strings(fit.err, fit.sep_allele)
        errcode[fit.reported & fit.unfinished] = "UNFINISHED"
        errcode[fit.reported & ~fit.unfinished] = "."
        lower = upper = None
        if self.ci:
            # plink2: the normal quantile for linear and logistic alike; BETA ∓ z·SE
            half_width = ci_zscore(self.ci) * fit.se
            lower, upper = fit.beta - half_width, fit.beta + half_width
        adjusted = None
        if self.adjust is not None:
            # the primary (ADD) test of each variant: values already in the released result
            adjusted = multcomp(fit.log_p[:, 0], self.adjust)
            if adjusted is None:
                self._log.append("Zero valid tests; --adjust skipped.")
            else:
                self._log.append(lambda_log_line(adjusted.lambda_gc))
        return GlmResult(
            pheno=fit.pheno,
            is_binary=fit.is_binary,
            method=fit.method,
            covariates=fit.covariates,
            tests=fit.tests,
            n_samples=fit.n_samples,
            n_cases=fit.n_cases,
            n_controls=fit.n_controls,
            a1_is_ref=self._a1_is_ref,
            obs_ct=fit.obs_ct,
            a1_freq=fit.a1_freq,
            beta=fit.beta,
            se=fit.se,
            stat=fit.stat,
            log_p=fit.log_p,
            errcode=errcode,
            firth=fit.firth,
            ci_size=self.ci,
            ci_lower=lower,
            ci_upper=upper,
            adjusted=adjusted,
            a1_ct=fit.a1_ct,
            case_obs_ct=fit.case_obs_ct,
            a1_case_ct=fit.a1_case_ct,
            cc_suppressed=self._small_cells(fit),
            test_mask=fit.test_mask,
            haploid=fit.haploid,
        )

    def _small_cells(self, fit: Fit) -> np.ndarray | None:
        """Variants whose case/control allele counts (A1 and non-A1 in cases and in controls) hold a
        value in (0, min_cell_count), when cols= writes them: DataSHIELD's ``nfilter.tab``, as
        ``--assoc`` applies it to its genotype tables (those counts are written NA, and logged)."""
        cc_cols = {"a1countcc", "a1freqcc"}
        if self.min_cell_count <= 1 or not (self.columns or frozenset()) & cc_cols or fit.a1_case_ct is None:
            return None
        assert fit.case_obs_ct is not None
        case_alleles, alleles = 2.0 * fit.case_obs_ct, 2.0 * fit.obs_ct
        a1_ctrl = fit.a1_ct - fit.a1_case_ct
        cells = np.stack([fit.a1_case_ct, case_alleles - fit.a1_case_ct, a1_ctrl, alleles - case_alleles - a1_ctrl])
        small = np.asarray(((cells > 0) & (cells < self.min_cell_count)).any(axis=0))
        self._log.append(
            f"disclosure control: {int(small.sum())} variants' case/control A1 counts for phenotype '{fit.pheno}' "
            f"have a cell below {self.min_cell_count} (the strictest site's min_cell_count); their A1_CASE_CT, "
            "A1_CTRL_CT, A1_CASE_FREQ and A1_CTRL_FREQ are written as NA"
        )
        return small

    # -- what the linear and logistic halves read and log (fedstat.stats.glm_common.JobView) --

    @property
    def n_var(self) -> int:
        """Number of harmonized variants (known after the describe round)."""
        return self._n_var

    @property
    def a1_is_ref(self) -> np.ndarray:
        """[array, shape: (n_var,), dtype bool] A1 (the tested allele) is REF, else ALT; after describe."""
        return self._a1_is_ref

    @property
    def geno_scale(self) -> np.ndarray | None:
        """None: the job's own view is the autosomes' (diploid) regression; see :class:`GroupView`."""
        return None

    def tests_for(self, covars: Sequence[str]) -> tuple[str, ...]:
        return ("ADD",) if self.hide_covar else ("ADD", *covars)

    def note(self, line: str) -> None:
        self._log.append(line)

    def drop_constant_in_mask(self, spec: PhenoSpec, xtx: np.ndarray, n: float) -> list[int] | None:
        """Indices (into the spec's covars) of covariates kept, or None when the phenotype is skipped.

        A categorical covariate's indicators come in with every category; kept are those of the
        categories its regression samples hold, but the most common one (the reference; a tie goes
        to the first in natural order), as plink2's GlmFillAndTestCovars leaves it out. With one
        category left the covariate is constant.

        A covariate constant among the phenotype's samples is left out, and plink2 then re-selects
        the samples without that covariate's missing values (GlmDetermineCovars): more samples,
        unless no cohort member misses it. Without ``--require-covar`` this job cannot tell, so the
        phenotype is skipped, saying why, rather than fitted on other samples than plink2's.
        """
        keep, dropped = self._kept_in_mask(spec, xtx, n)
        if dropped and not self.require_covar:
            name = dropped[0]
            self.skip(
                spec.name,
                f"covariate '{name}' is constant among its samples: plink2 then leaves it out and re-selects the "
                f"samples without that covariate's missing values, which this job cannot do; add --require-covar "
                f"(no participant then misses a covariate), or leave '{name}' out",
            )
            return None
        return keep

    def _kept_in_mask(self, spec: PhenoSpec, xtx: np.ndarray, n: float) -> tuple[list[int], list[str]]:
        """(indices of the columns kept, covariates left out as constant), logging the latter."""
        keep: list[int] = []
        dropped: list[str] = []
        groups = {x: c for c, ind in self.indicators.items() for x in ind}
        done: set[str] = set()
        for j, name in enumerate(spec.covars):
            column = groups.get(name)
            if column is not None:
                if column in done:
                    continue
                done.add(column)
                cols = [k for k, x in enumerate(spec.covars) if groups.get(x) == column]
                counts = np.rint(xtx[0, [k + 1 for k in cols]]).astype(np.int64)
                present = [k for k, ct in zip(cols, counts.tolist(), strict=True) if ct > 0]
                if len(present) <= 1:
                    self._log.append(
                        f"Warning: Not including covariate '{column}' in --glm regression on phenotype '{spec.name}'."
                    )
                    dropped.append(column)
                    continue
                if not spec.binary and (counts == 1).any():
                    raise InputError(
                        f"--glm phenotype '{spec.name}': a category of covariate '{column}' is held by a single sample "
                        "of the regression; plink2 leaves such a sample out and fits again, which would take a release "
                        "over one participant (sites' min_group is 1?)"
                    )
                reference = cols[int(np.argmax(counts))]  # first of the largest: natural order
                keep.extend(k for k in present if k != reference)
                continue
            s, ss = xtx[0, j + 1], xtx[j + 1, j + 1]
            if n > 0 and ss - s * s / n > CONST_REL_TOL * ss:
                keep.append(j)
            else:
                self._log.append(
                    f"Warning: Not including covariate '{name}' in --glm regression on phenotype '{spec.name}'."
                )
                dropped.append(name)
        return sorted(keep), dropped

    def categorical_levels(self, spec: PhenoSpec, kept: Sequence[str]) -> dict[str, list[str]]:
        """Each categorical covariate of ``spec`` -> its indicator columns among the full set (every
        category), for the separation check of logistic regression; ``kept`` says which are in the model."""
        groups = {x: c for c, ind in self.indicators.items() for x in ind}
        out: dict[str, list[str]] = {}
        for name in spec.covars:
            column = groups.get(name)
            if column is not None and any(groups.get(x) == column for x in kept):
                out.setdefault(column, []).append(name)
        return out

    def skip(self, pheno: str, why: str) -> None:
        self._log.append(f"Note: Skipping --glm regression on phenotype '{pheno}', since {why}.")

    def result(self, variants: VariantTable) -> GlmTables:
        """The phenotypes' results over ``variants``, in the order of :attr:`pheno_names` (those analysed)."""
        return GlmTables(
            variants, tuple(self.results[n] for n in self.pheno_names if n in self.results), columns=self.columns
        )


def case_control_refusal(name: str, *, n0: int, n1: int, n2: int) -> str:
    """Why a case/control phenotype with no case or no control cannot be analysed.

    plink2 stops on it too: ``Error: All samples for --glm phenotype '…' are controls.`` (or
    cases; unless ``skip-invalid-pheno``). The usual cause is a trait coded 0/1, which plink2's
    default coding reads as 0 = missing, 1 = control.
    """
    if n1 + n2 == 0:
        return (
            f"--glm phenotype '{name}' has no case (2) or control (1) left: plink2 reads a column holding only "
            "0, 1, 2 and missing values as case/control, with 0 = missing"
        )
    which = "controls" if n2 == 0 else "cases"
    message = f"--glm phenotype '{name}': all samples are {which} (plink2 stops here too)"
    if n2 == 0 and n0 > 0:
        message += (
            ". It holds only 0, 1 and missing values, which plink2 reads as case/control with 0 = missing and "
            "1 = control; recode the trait 1 = control, 2 = case (a 0/1 column is a number only as a covariate)"
        )
    return message


def plan_glm(
    pheno_names: tuple[str, ...],
    covar_names: tuple[str, ...],
    modifiers: frozenset[str],
    *,
    ci: float = 0.0,
    adjust: AdjustOptions | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
    standardize: Sequence[str] | None = None,
    require_covar: bool = False,
    columns: frozenset[str] | None = None,
    min_cell_count: int = 0,
    chrom: Sequence[str] | np.ndarray | None = None,
) -> GlmJob:
    """The coordinator-side job for ``--glm`` on the given phenotypes and covariates.

    Parameters
    ----------
    pheno_names : phenotype columns (quantitative -> ``.glm.linear``, case/control 1/2 ->
        ``.glm.logistic.hybrid`` / ``.glm.logistic`` (no-firth) / ``.glm.firth`` (firth))
    covar_names : covariate columns (constant ones are excluded with plink2's warning)
    modifiers : plink2 spellings: ``hide-covar``, ``firth``, ``no-firth``, ``firth-fallback``
        (the default), ``allow-no-covars``
    ci : ``--ci`` level in [0.01, 1) (confidence-interval columns), 0 for none
    adjust : ``--adjust``'s modifiers (a ``.adjusted`` file per phenotype), None for none; both
        are computed at the coordinator from the per-variant results, with no round of their own
    categories : categorical covariate -> its categories over the sites (natural order); each
        becomes indicator columns ``COL=LEVEL``, all but plink2's reference category
    standardize : ``--covar-variance-standardize``: None off, empty for every quantitative
        covariate, else the covariates named
    require_covar : ``--require-covar`` is on (no cohort member misses a covariate)
    columns : ``cols=``'s output columns (None: plink2's default), written from the results
    min_cell_count : disclosure control (the strictest site's): case/control A1 counts of a variant
        with a cell in (0, min_cell_count) are written NA (``cols=+a1countcc``, ``+a1freqcc``)
    chrom : each variant's chromosome code, for plink2's regressions on chrX, chrY and MT
        (:mod:`fedstat.stats.glm_sexchr`); None when every variant is diploid
    """
    return GlmJob(
        tuple(pheno_names),
        tuple(covar_names),
        frozenset(modifiers),
        ci=ci,
        adjust=adjust,
        categories=categories,
        standardize=standardize,
        require_covar=require_covar,
        columns=columns,
        min_cell_count=min_cell_count,
        chrom=chrom,
    )


#: Site-side computations of ``--glm``, by RoundPlan name.
LOCAL_COMPUTATIONS: dict[str, LocalComputation] = {
    "glm_describe": GlmDescribe(),
    "glm_linear": LinearSums(),
    "glm_logistic": LogisticSums(),
    MALES_COMPUTATION: GlmDescribeMales(),
}
