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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations_with_replacement

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.stats.base import (
    Cohort,
    LocalComputation,
    RoundInput,
    RoundPlan,
    SumArray,
    cohort_level,
    per_variant,
    release_groups,
)

__all__ = [
    "LOCAL_COMPUTATIONS",
    "MAX_CORR",
    "VIF_THRESH",
    "GlmJob",
    "GlmResult",
    "GlmTables",
    "plan_glm",
]

MAX_CORR = 0.999  # plink2 --max-corr default
VIF_THRESH = 50.0  # plink2 --vif default
_CONST_REL_TOL = 1e-10  # a sum-of-squares about the mean below this share of the raw one is "constant"

# error codes, plink2's kGlmErrcodeStrs order
ERR_NONE, ERR_SAMPLE_CT, ERR_CONST_OMITTED, ERR_CONST, ERR_CORR, ERR_VIF_INF, ERR_VIF = 0, 1, 2, 3, 4, 5, 6
ERR_SEPARATION, ERR_RANK, ERR_LOGISTIC, ERR_FIRTH, ERR_INVALID = 7, 8, 9, 10, 11
ERRCODE_STRS = (
    "",
    "SAMPLE_CT<=PREDICTOR_CT",
    "CONST_OMITTED_ALLELE",
    "CONST_ALLELE",
    "CORR_TOO_HIGH",
    "VIF_INFINITE",
    "VIF_TOO_HIGH",
    "SEPARATION",
    "RANK_DEFICIENT",
    "LOGISTIC_CONVERGE_FAIL",
    "FIRTH_CONVERGE_FAIL",
    "INVALID_RESULT",
)

MODIFIERS = frozenset({"hide-covar", "firth", "no-firth", "firth-fallback", "allow-no-covars"})


# ---------------------------------------------------------------------------------------------
# the per-round spec the coordinator sends (JSON in RoundPlan.params["spec"])
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhenoSpec:
    """One phenotype's regression as the sites must build it.

    Attributes
    ----------
    name : phenotype column
    binary : case/control (1 = control, 2 = case, anything else missing) coding of the phenotype
    covars : covariates used as predictors, in order (always numbers, as plink2 reads them)
    mask_covars : covariates whose missingness drops a sample (a superset of ``covars``)
    """

    name: str
    binary: bool
    covars: tuple[str, ...]
    mask_covars: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "binary": self.binary,
            "covars": list(self.covars),
            "mask_covars": list(self.mask_covars),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> PhenoSpec:
        return cls(
            name=str(d["name"]),
            binary=bool(d["binary"]),
            covars=tuple(d["covars"]),  # type: ignore[arg-type]
            mask_covars=tuple(d["mask_covars"]),  # type: ignore[arg-type]
        )


def encode_specs(specs: Sequence[PhenoSpec]) -> str:
    return json.dumps([s.to_json() for s in specs], sort_keys=True)


def decode_specs(inp: RoundInput) -> list[PhenoSpec]:
    return specs_of(inp.params)


def specs_of(params: Mapping[str, str]) -> list[PhenoSpec]:
    """The phenotype specs of a glm round's parameters; InputError when they cannot be read."""
    try:
        return [PhenoSpec.from_json(d) for d in json.loads(params["spec"])]
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError("glm round is missing a valid 'spec' parameter") from exc


@dataclass(frozen=True, eq=False)
class Design:
    """A site's regression design for one phenotype (never leaves the site).

    Attributes
    ----------
    idx : [array, shape: (m,), dtype int64] cohort columns of the samples in the regression
    y : [array, shape: (m,)] phenotype (case/control as 0/1)
    c : [array, shape: (m, q + 1)] intercept then the predictor covariates, as written
    """

    idx: np.ndarray
    y: np.ndarray
    c: np.ndarray
    full: bool

    def take(self, block: np.ndarray) -> np.ndarray:
        """The block's columns for the regression samples, [shape: (b, m)]."""
        return block if self.full else block[:, self.idx]


def _column(cohort: Cohort, name: str) -> np.ndarray:
    try:
        values = np.asarray(cohort.columns[name], dtype=np.float64)
    except KeyError:
        raise InputError(f"glm: the cohort has no column {name!r}") from None
    if values.shape != (cohort.n,):
        raise InputError(f"glm: column {name!r} has shape {values.shape}, expected ({cohort.n},)")
    return values


def _coded(values: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, value) of a phenotype: case/control 1/2 -> 0/1 with anything else (0) missing,
    as plink2 codes a case/control phenotype; a quantitative one (or a covariate) as written."""
    if binary:
        valid = (values == 1.0) | (values == 2.0)
        return valid, values - 1.0
    return ~np.isnan(values), values


_DESIGN_CACHE: dict[tuple[int, str], tuple[Cohort, Design]] = {}


def site_design(cohort: Cohort, spec: PhenoSpec) -> Design:
    """Build (and cache per cohort object) the site's design for ``spec``."""
    key = (id(cohort), json.dumps(spec.to_json(), sort_keys=True))
    hit = _DESIGN_CACHE.get(key)
    if hit is not None and hit[0] is cohort:
        return hit[1]
    valid, y = _coded(_column(cohort, spec.name), spec.binary)
    values: dict[str, np.ndarray] = {}
    for name in spec.mask_covars:
        v = _column(cohort, name)
        valid &= ~np.isnan(v)
        values[name] = v
    idx = np.flatnonzero(valid).astype(np.int64)
    cols = [np.ones(idx.size)] + [values[name][idx] for name in spec.covars]
    c = np.ascontiguousarray(np.column_stack(cols)) if idx.size else np.zeros((0, len(cols)))
    design = Design(idx=idx, y=np.ascontiguousarray(y[idx]), c=c, full=bool(idx.size == cohort.n))
    if len(_DESIGN_CACHE) > 8:
        _DESIGN_CACHE.clear()
    _DESIGN_CACHE[key] = (cohort, design)
    return design


def genotypes_float(gm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(missing mask, genotypes as float64 with missing set to 0) for an int8 block."""
    miss = gm < 0
    return miss, np.where(miss, 0, gm).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# packed symmetric sums: a site returns sums over the distinct products only
# ---------------------------------------------------------------------------------------------


def pair_products(c: np.ndarray) -> np.ndarray:
    """[shape: (m, Q(Q+1)/2)] products c_i c_j for i <= j (np.triu_indices order)."""
    i, j = np.triu_indices(c.shape[1])
    return c[:, i] * c[:, j]


def triple_products(c: np.ndarray) -> np.ndarray:
    """[shape: (m, C(Q+2, 3))] products c_i c_j c_k for i <= j <= k."""
    t = np.array(list(combinations_with_replacement(range(c.shape[1]), 3)), dtype=np.int64).reshape(-1, 3)
    return c[:, t[:, 0]] * c[:, t[:, 1]] * c[:, t[:, 2]]


def _gather_map(n_pred: int, order: int) -> np.ndarray:
    """Flat gather indices turning packed pieces into a full symmetric (P,)*order tensor.

    Predictor 1 is the genotype; the others are the site's ``c`` columns (0 -> 0, 2.. -> 1..).
    Pieces are concatenated by the number of genotype factors, 0 first, each indexed by the
    sorted remaining ``c`` indices in combinations_with_replacement order.
    """
    q = n_pred - 1
    offsets, slots = [], []
    base = 0
    for n_c in range(order, -1, -1):
        combos = list(combinations_with_replacement(range(q), n_c))
        slots.append({combo: k for k, combo in enumerate(combos)})
        offsets.append(base)
        base += len(combos)
    cpos = [0, -1, *range(1, q)]
    out = np.empty(n_pred**order, dtype=np.int64)
    for flat, idx in enumerate(np.ndindex(*(n_pred,) * order)):
        others = tuple(sorted(cpos[a] for a in idx if a != 1))
        n_g = order - len(others)
        out[flat] = offsets[n_g] + slots[n_g][others]
    return out


_MAPS: dict[tuple[int, int], np.ndarray] = {}


def assemble(pieces: Sequence[np.ndarray], n_pred: int, order: int) -> np.ndarray:
    """Full symmetric tensors from packed pieces (by number of genotype factors, 0 first).

    Returns [array, shape: (V,) + (n_pred,) * order].
    """
    key = (n_pred, order)
    if key not in _MAPS:
        _MAPS[key] = _gather_map(n_pred, order)
    v = pieces[0].shape[0]
    flat = np.concatenate([np.asarray(p, dtype=np.float64).reshape(v, -1) for p in pieces], axis=1)
    return flat[:, _MAPS[key]].reshape((v,) + (n_pred,) * order)


def flip_matrix(n_pred: int) -> np.ndarray:
    """T with ``[1, 2 - g, c] = T [1, g, c]``; T is its own inverse."""
    t = np.eye(n_pred)
    t[1, 0], t[1, 1] = 2.0, -1.0
    return t


# ---------------------------------------------------------------------------------------------
# per-variant design checks, as plink2 runs them before each regression
# ---------------------------------------------------------------------------------------------


def corr_vif_check(xtx: np.ndarray, n: np.ndarray) -> np.ndarray:
    """plink2 CheckMaxCorrAndVif on the non-intercept predictors, batched.

    Parameters
    ----------
    xtx : [array, shape: (V, P, P)] Σ x xᵀ over the samples, intercept first
    n : [array, shape: (V,)] sample counts

    Returns
    -------
    [array, shape: (V,), dtype int64] 0, ERR_CORR, ERR_VIF_INF or ERR_VIF
    """
    v, p, _ = xtx.shape
    err = np.zeros(v, dtype=np.int64)
    if p <= 2 or v == 0:
        return err
    nn = np.maximum(n.astype(np.float64), 2.0)
    s = xtx[:, 0, 1:]  # predictor sums
    cov = (xtx[:, 1:, 1:] - s[:, :, None] * s[:, None, :] / nn[:, None, None]) / (nn - 1.0)[:, None, None]
    d = np.diagonal(cov, axis1=1, axis2=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_sd = 1.0 / np.sqrt(d)
        corr = cov * inv_sd[:, :, None] * inv_sd[:, None, :]
    k = p - 1
    off = ~np.eye(k, dtype=bool)
    too_high = (np.abs(np.where(off, corr, 0.0)) > MAX_CORR).any(axis=(1, 2)) | ~np.isfinite(corr).all(axis=(1, 2))
    err[too_high] = ERR_CORR
    rest = np.flatnonzero(~too_high)
    if rest.size:
        c = corr[rest].copy()
        c[:, np.arange(k), np.arange(k)] = 1.0
        w = np.linalg.eigvalsh(c)
        singular = w[:, 0] <= 1e-12 * np.maximum(w[:, -1], 1e-300)
        err[rest[singular]] = ERR_VIF_INF
        ok = rest[~singular]
        if ok.size:
            vif = np.diagonal(np.linalg.inv(c[~singular]), axis1=1, axis2=2)
            err[ok[(vif > VIF_THRESH).any(axis=1)]] = ERR_VIF
    return err


def genotype_counts(n_v: np.ndarray, sum_g: np.ndarray, sum_gg: np.ndarray) -> tuple[np.ndarray, ...]:
    """(hom_ref, het, hom_alt) from the non-missing count, Σ g and Σ g² (exact integers)."""
    het = np.rint(2.0 * sum_g - sum_gg)
    hom_alt = np.rint((sum_gg - sum_g) / 2.0)
    return np.rint(n_v) - het - hom_alt, het, hom_alt


def pre_checks(n_v: np.ndarray, n_pred: int, sum_g: np.ndarray, sum_gg: np.ndarray) -> np.ndarray:
    """SAMPLE_CT<=PREDICTOR_CT, then CONST_OMITTED_ALLELE (a constant genotype column)."""
    hom_ref, het, hom_alt = genotype_counts(n_v, sum_g, sum_gg)
    n = np.rint(n_v)
    err = np.zeros(n_v.shape[0], dtype=np.int64)
    const = (hom_ref == n) | (het == n) | (hom_alt == n)
    err[const] = ERR_CONST_OMITTED
    err[n <= n_pred] = ERR_SAMPLE_CT
    return err


def valid_parameters(cov: np.ndarray) -> np.ndarray:
    """plink2's validParameters() on covariance matrices [shape: (V, P, P)]: True where valid."""
    d = np.diagonal(cov, axis1=1, axis2=2)
    ok = np.isfinite(d[:, 1:]).all(axis=1) & (d[:, 1:] >= 1e-20).all(axis=1)
    with np.errstate(invalid="ignore"):
        sd = np.sqrt(np.maximum(d, 0.0))
        lim = 0.99999 * sd[:, :, None] * sd[:, None, :]
    lower = np.tril(np.ones(cov.shape[1:], dtype=bool), -1)
    bad = ((cov > lim) & lower).any(axis=(1, 2))
    return ok & ~bad


def safe_inv(m: np.ndarray) -> np.ndarray:
    """Batched inverse; matrices that cannot be inverted come back as NaN."""
    try:
        return np.linalg.inv(m)
    except np.linalg.LinAlgError:
        out = np.full_like(m, np.nan)
        for i in range(m.shape[0]):  # only after a failure: rare
            try:
                out[i] = np.linalg.inv(m[i])
            except np.linalg.LinAlgError:
                pass
        return out


def covariate_check(xtx: np.ndarray, n: float) -> int:
    """plink2's phenotype-level check on the covariates alone (no intercept)."""
    if xtx.shape[0] <= 2:
        return ERR_NONE
    # treat the first covariate as if it were the genotype: same maths, no genotype row
    return int(corr_vif_check(xtx[None], np.array([n]))[0])


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

    @property
    def p(self) -> np.ndarray:
        """P values [shape: (V, len(tests))]; underflow to 0 below ~1e-308 (use ``log_p``)."""
        return np.exp(self.log_p)

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
    """

    variants: VariantTable
    results: tuple[GlmResult, ...]


def empty_result(
    pheno: str,
    *,
    is_binary: bool,
    method: str,
    covariates: tuple[str, ...],
    tests: tuple[str, ...],
    n_var: int,
    a1_is_ref: np.ndarray,
) -> dict[str, object]:
    """Keyword arguments of a GlmResult with every variant still undecided (NaN / '.')."""
    nan = np.full((n_var, len(tests)), np.nan)
    return {
        "pheno": pheno,
        "is_binary": is_binary,
        "method": method,
        "covariates": covariates,
        "tests": tests,
        "a1_is_ref": a1_is_ref,
        "obs_ct": np.zeros(n_var, dtype=np.int64),
        "a1_freq": np.full(n_var, np.nan),
        "beta": nan.copy(),
        "se": nan.copy(),
        "stat": nan.copy(),
        "log_p": nan.copy(),
        "errcode": np.full(n_var, ".", dtype=object),
        "firth": np.zeros(n_var, dtype=bool),
    }


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
    """Site side of ``glm_describe``: column summaries and per-variant ALT counts."""

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
        out = {k: np.zeros(len(names), dtype=np.int64) for k in ("nonmiss", "n0", "n1", "n2", "zero_dropped")}
        out["sum"] = np.zeros(len(names))
        out["ssq"] = np.zeros(len(names))
        for j, name in enumerate(names):
            v = _column(cohort, name)
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

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != cohort.n:
            raise InputError(f"glm: genotype block has shape {block.shape}, expected (variants, {cohort.n})")
        nobs = np.count_nonzero(block >= 0, axis=1).astype(np.int64)
        alt = np.maximum(block, 0).sum(axis=1, dtype=np.int64)
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

    def __init__(self, pheno_names: tuple[str, ...], covar_names: tuple[str, ...], modifiers: frozenset[str]):
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
        self.pheno_names = tuple(pheno_names)
        self.covar_names = tuple(covar_names)
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
        self._fit = None

    # -- protocol ---------------------------------------------------------------------------

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if self._stage == "start":
            self._stage = "describe"
            cols = json.dumps([*self.pheno_names, *self.covar_names])
            return RoundPlan("glm_describe", params={"columns": cols})
        if sums is None:
            raise InputError("glm: a round finished without sums")
        if self._stage == "describe":
            self._finish_describe(sums)
        elif self._stage == "linear":
            from fedstat.stats import glm_linear

            for res in glm_linear.finish_linear(self, sums):
                self.results[res.pheno] = res
            self._linear_specs = []
        elif self._stage == "logistic":
            assert self._fit is not None
            plan = self._fit.step(sums)
            if plan is not None:
                return plan
            res = self._fit.result()
            if res is not None:
                self.results[res.pheno] = res
            self._fit = None
        return self._advance()

    def _advance(self) -> RoundPlan | None:
        if self._linear_specs:
            self._stage = "linear"
            return RoundPlan("glm_linear", params={"spec": encode_specs(self._linear_specs)})
        while self._binary_specs:
            from fedstat.stats import glm_logistic

            spec = self._binary_specs.pop(0)
            self._stage = "logistic"
            self._fit = glm_logistic.LogisticFit(self, spec)
            return self._fit.first_plan()
        self._stage = "done"
        return None

    def _finish_describe(self, sums: Mapping[str, np.ndarray]) -> None:
        names = [*self.pheno_names, *self.covar_names]
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
                const = nonmiss == 0 or ss - s * s / nonmiss <= _CONST_REL_TOL * ss
            self._cols.binary[name] = binary
            self._cols.const[name] = const
        alt = np.asarray(sums["describe.alt_ct"], dtype=np.int64)
        nobs = np.asarray(sums["describe.nobs"], dtype=np.int64)
        self._n_var = int(alt.shape[0])
        # plink2 ComputeMajAlleles: major = ALT iff REF frequency < 0.5 (an exact tie keeps REF
        # major), frequencies over all samples; A1 = the non-major allele
        self._a1_is_ref = alt > nobs
        covars = []
        for name in self.covar_names:
            if self._cols.const[name]:
                self._log.append(f"Warning: Excluding constant covariate '{name}' from --glm.")
            else:
                covars.append(name)
        for name in self.pheno_names:
            spec = PhenoSpec(name, self._cols.binary[name], tuple(covars), tuple(covars))
            (self._binary_specs if spec.binary else self._linear_specs).append(spec)

    def log_lines(self) -> list[str]:
        return list(self._log)

    # -- shared by the linear and logistic halves --------------------------------------------

    def tests_for(self, covars: Sequence[str]) -> tuple[str, ...]:
        return ("ADD",) if self.hide_covar else ("ADD", *covars)

    def drop_constant_in_mask(self, spec: PhenoSpec, xtx: np.ndarray, n: float) -> list[int]:
        """Indices (into the spec's covars) of covariates kept; logs the ones constant in the mask."""
        keep = []
        for j, name in enumerate(spec.covars):
            s, ss = xtx[0, j + 1], xtx[j + 1, j + 1]
            if n > 0 and ss - s * s / n > _CONST_REL_TOL * ss:
                keep.append(j)
            else:
                self._log.append(
                    f"Warning: Not including covariate '{name}' in --glm regression on phenotype '{spec.name}'."
                )
        return keep

    def skip(self, pheno: str, why: str) -> None:
        self._log.append(f"Note: Skipping --glm regression on phenotype '{pheno}', since {why}.")

    def result(self, variants: VariantTable) -> GlmTables:
        """The phenotypes' results over ``variants``, in the order of :attr:`pheno_names` (those analysed)."""
        return GlmTables(variants, tuple(self.results[n] for n in self.pheno_names if n in self.results))


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


def plan_glm(pheno_names: tuple[str, ...], covar_names: tuple[str, ...], modifiers: frozenset[str]) -> GlmJob:
    """The coordinator-side job for ``--glm`` on the given phenotypes and covariates.

    Parameters
    ----------
    pheno_names : phenotype columns (quantitative -> ``.glm.linear``, case/control 1/2 ->
        ``.glm.logistic.hybrid`` / ``.glm.logistic`` (no-firth) / ``.glm.firth`` (firth))
    covar_names : covariate columns (constant ones are excluded with plink2's warning)
    modifiers : plink2 spellings: ``hide-covar``, ``firth``, ``no-firth``, ``firth-fallback``
        (the default), ``allow-no-covars``
    """
    return GlmJob(tuple(pheno_names), tuple(covar_names), frozenset(modifiers))


class _Deferred:
    """A LocalComputation whose implementation lives in a module that imports this one."""

    def __init__(self, module: str, name: str):
        self._where = (module, name)
        self._impl: LocalComputation | None = None

    def _get(self) -> LocalComputation:
        if self._impl is None:
            import importlib

            module, name = self._where
            self._impl = getattr(importlib.import_module(module), name)()
        return self._impl

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return self._get().sum_arrays(params, arrays)

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return self._get().cohort_sums(cohort, inp)

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        return self._get().block_sums(block, cohort, inp, rows)

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return release_groups(self._get(), cohort, inp)


#: Site-side computations of ``--glm``, by RoundPlan name.
LOCAL_COMPUTATIONS: dict[str, LocalComputation] = {
    "glm_describe": GlmDescribe(),
    "glm_linear": _Deferred("fedstat.stats.glm_linear", "LinearSums"),
    "glm_logistic": _Deferred("fedstat.stats.glm_logistic", "LogisticSums"),
}
