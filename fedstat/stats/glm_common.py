"""What both halves of federated ``--glm`` share: the round spec, a site's design, packed sums, plink2's checks.

:mod:`fedstat.stats.glm` (the job) imports this module, :mod:`fedstat.stats.glm_linear` and
:mod:`fedstat.stats.glm_logistic`; the two halves import this module only, so nothing imports in
a cycle. Nothing here keeps state between calls: a site's design for a round is built once into
that round's :attr:`RoundInput.local <fedstat.stats.base.RoundInput.local>` (one site, one round,
one job) and dropped with it.

References
----------
plink2 2.00a3.5 ``plink2_glm.cc`` (GlmDetermineCovars, CheckMaxCorrAndVif, kGlmErrcodeStrs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations_with_replacement
from typing import Protocol

import numpy as np

from fedstat.data.categories import split_indicator
from fedstat.data.sex import FEMALE, INVALID, MALE, invalid_sex_message
from fedstat.errors import InputError
from fedstat.stats.base import Cohort, RoundInput

MAX_CORR = 0.999  # plink2 --max-corr default
VIF_THRESH = 50.0  # plink2 --vif default
CONST_REL_TOL = 1e-10  # a sum-of-squares about the mean below this share of the raw one is "constant"

#: The covariate plink2 adds on chrX when both sexes are present (1 male, 2 female; unknown missing).
SEX_COVAR = "SEX"
#: PhenoSpec.sex: the chrX regression (SEX covariate appended, unknown sex masked), the males only (chrY).
SEX_X, SEX_MALES = "x", "male"

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
    covars : covariates used as predictors, in order (numbers, and a categorical covariate's
        indicator columns ``COL=LEVEL``)
    mask_covars : covariates whose missingness drops a sample (a categorical one by its name)
    scale : ``--covar-variance-standardize``: (covariate, mean, 1 / SD) for each standardized
        covariate; a site uses ``(x - mean) / SD`` in its design, as plink2 transforms the column
    sex : ``""`` (the regression of the autosomes), :data:`SEX_X` (plink2's chrX regression: the
        last of ``covars`` and ``mask_covars`` is :data:`SEX_COVAR`, each participant's sex coded
        1 male / 2 female, unknown sex missing) or :data:`SEX_MALES` (chrY: the males only)
    """

    name: str
    binary: bool
    covars: tuple[str, ...]
    mask_covars: tuple[str, ...]
    scale: tuple[tuple[str, float, float], ...] = ()
    sex: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "binary": self.binary,
            "covars": list(self.covars),
            "mask_covars": list(self.mask_covars),
        }
        if self.scale:
            out["scale"] = [[c, m, r] for c, m, r in self.scale]
        if self.sex:
            out["sex"] = self.sex
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> PhenoSpec:
        raw = d.get("scale", [])
        if not isinstance(raw, list):
            raise TypeError("scale must be a list")
        scale = tuple((str(c), float(m), float(r)) for c, m, r in raw)
        if not all(np.isfinite([m for _, m, _ in scale] + [r for _, _, r in scale])):
            raise ValueError("scale must be finite numbers")
        sex = d.get("sex", "")
        if sex not in ("", SEX_X, SEX_MALES):
            raise ValueError("sex must be 'x' or 'male'")
        covars, mask = _names(d["covars"]), _names(d["mask_covars"])
        if sex == SEX_X and (covars[-1:] != (SEX_COVAR,) or mask[-1:] != (SEX_COVAR,)):
            raise ValueError("a chrX regression ends its covariates and mask with SEX")
        return cls(
            name=str(d["name"]),
            binary=bool(d["binary"]),
            covars=covars,
            mask_covars=mask,
            scale=scale,
            sex=str(sex),
        )


def _names(value: object) -> tuple[str, ...]:
    """``tuple(value)`` for a JSON list of column names; TypeError (as ``tuple()`` raises) otherwise."""
    if not isinstance(value, Iterable):
        raise TypeError(f"expected a list of column names, not {type(value).__name__}")
    return tuple(value)


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


def cohort_column(cohort: Cohort, name: str) -> np.ndarray:
    """The cohort's column ``name`` as float64 [shape: (cohort.n,)]; InputError if it is absent or misshapen.

    A categorical covariate ``COL`` gives 0 where its category is present and NaN where missing
    (its missingness, for the regression's sample set); its indicator ``COL=LEVEL`` gives 1 for
    the level, 0 for another category and NaN where missing, as plink2's expansion does.
    """
    if name not in cohort.columns:
        return _categorical_column(cohort, name)
    values = np.asarray(cohort.columns[name], dtype=np.float64)
    if values.shape != (cohort.n,):
        raise InputError(f"glm: column {name!r} has shape {values.shape}, expected ({cohort.n},)")
    return values


def _categorical_column(cohort: Cohort, name: str) -> np.ndarray:
    cats = cohort.categories.get(name)
    level = None
    if cats is None:
        split = split_indicator(name, frozenset(cohort.categories) | frozenset(cohort.columns))
        if split is None:
            raise InputError(f"glm: the cohort has no column {name!r}")
        column, level = split
        cats = cohort.categories.get(column)
        if cats is None:
            numeric = np.asarray(cohort.columns[column], dtype=np.float64)
            if not np.isnan(numeric).all():
                raise InputError(
                    f"covariate {column!r} holds numbers at this site and words (categories) at another: plink2 "
                    "reads one type per column; write it the same way at every site"
                )
            return np.full(cohort.n, np.nan)  # no value here: none of this site's participants is in the regression
    cats = np.asarray(cats, dtype=object)
    if cats.shape != (cohort.n,):
        raise InputError(f"glm: column {name!r} has shape {cats.shape}, expected ({cohort.n},)")
    present = cats != ""
    out = np.where(present, 0.0, np.nan)
    if level is not None:
        out[cats == level] = 1.0
    return out


def category_groups(cohort: Cohort, members: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """The release groups a categorical covariate adds to a group ``members`` [shape: (cohort.n,),
    bool] named ``name``: the members of each category, one group per category they hold.

    A site's sums over a regression with indicator columns are sums over each category's
    members, so its release ledger must know them as groups: then a category held by fewer than
    ``min_group`` of a regression's participants (a rare one, or one whose other members lack the
    phenotype) is refused there, whatever level names the coordinator sends.
    """
    out = {}
    for column, cats in cohort.categories.items():
        cats = np.asarray(cats, dtype=object)
        for level in sorted({str(v) for v in cats[members] if v}):
            out[f"{name}|{column}={level}"] = members & (cats == level)
    return out


def sex_groups(cohort: Cohort, members: np.ndarray, name: str, spec: PhenoSpec) -> dict[str, np.ndarray]:
    """The release groups a chrX regression (``spec.sex`` :data:`SEX_X`) adds to its group ``members``
    [shape: (cohort.n,), bool] named ``name``: its males and its females, whose sums follow from the
    sums with and without the SEX column, so that the ledger refuses a site with fewer than
    ``min_group`` of either sex in the regression. Empty for other regressions.
    """
    if spec.sex != SEX_X:
        return {}
    sex = cohort_sex(cohort)
    out = {}
    for label, code in (("male", MALE), ("female", FEMALE)):
        group = members & (sex == code)
        if group.any():
            out[f"{name}|{SEX_COVAR}={label}"] = group
    return out


def _coded(values: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, value) of a phenotype: case/control 1/2 -> 0/1 with anything else (0) missing,
    as plink2 codes a case/control phenotype; a quantitative one (or a covariate) as written."""
    if binary:
        valid = (values == 1.0) | (values == 2.0)
        return valid, values - 1.0
    return ~np.isnan(values), values


def cohort_sex(cohort: Cohort) -> np.ndarray:
    """[array, shape: (cohort.n,), dtype int8] the participants' sex codes (:mod:`fedstat.data.sex`);
    InputError when the cohort carries none or a value that is no sex code."""
    if cohort.sex is None:
        raise InputError("this --glm round needs the participants' sex, which this site's cohort does not carry")
    sex = np.asarray(cohort.sex)
    if sex.shape != (cohort.n,):
        raise InputError(f"glm: the cohort's sex codes have shape {sex.shape}, expected ({cohort.n},)")
    if bool((sex == INVALID).any()):
        raise InputError(invalid_sex_message())
    return sex


def sex_covariate(cohort: Cohort) -> np.ndarray:
    """plink2's chrX SEX covariate [shape: (cohort.n,)]: 1.0 male, 2.0 female, NaN unknown sex."""
    sex = cohort_sex(cohort)
    return np.where(sex == MALE, 1.0, np.where(sex == FEMALE, 2.0, np.nan))


def site_design(cohort: Cohort, spec: PhenoSpec) -> Design:
    """The site's design for ``spec`` (built anew on each call; see :func:`round_design`)."""
    valid, y = _coded(cohort_column(cohort, spec.name), spec.binary)
    values: dict[str, np.ndarray] = {}
    if spec.sex == SEX_MALES:  # chrY: plink2 regresses the males only
        valid &= cohort_sex(cohort) == MALE
    elif spec.sex == SEX_X:
        values[SEX_COVAR] = sex_covariate(cohort)
    for name in spec.mask_covars:
        v = values[name] if name in values else cohort_column(cohort, name)
        valid &= ~np.isnan(v)
        values[name] = v
    idx = np.flatnonzero(valid).astype(np.int64)
    # a categorical covariate masks by its name and enters as indicators COL=LEVEL
    for name in spec.covars:
        if name not in values:
            values[name] = cohort_column(cohort, name)
    for name, mean, recip in spec.scale:
        if name in values:
            values[name] = (values[name] - mean) * recip
    cols = [np.ones(idx.size)] + [values[name][idx] for name in spec.covars]
    c = np.ascontiguousarray(np.column_stack(cols)) if idx.size else np.zeros((0, len(cols)))
    return Design(idx=idx, y=np.ascontiguousarray(y[idx]), c=c, full=bool(idx.size == cohort.n))


def round_design(cohort: Cohort, spec: PhenoSpec, inp: RoundInput, key: str) -> Design:
    """The site's design for ``spec`` in the round ``inp``, built on first use into ``inp.local``.

    ``inp.local`` belongs to one site's run of one round of one job (a RoundInput is never shared
    between sites, rounds or jobs), so the design lives exactly as long as the round and no other
    job can see it. ``key`` names the design among the round's local arrays (e.g. ``"lin0"``).
    """
    local = inp.local
    idx = local.get(f"{key}.design.idx")
    if idx is not None:
        return Design(idx=idx, y=local[f"{key}.design.y"], c=local[f"{key}.design.c"], full=bool(idx.size == cohort.n))
    design = site_design(cohort, spec)
    local[f"{key}.design.idx"], local[f"{key}.design.y"], local[f"{key}.design.c"] = design.idx, design.y, design.c
    return design


# ---------------------------------------------------------------------------------------------
# packed symmetric sums: a site returns sums over the distinct products only
# ---------------------------------------------------------------------------------------------


def pair_products(c: np.ndarray) -> np.ndarray:
    """[shape: (m, Q(Q+1)/2)] products c_i c_j for i <= j (np.triu_indices order)."""
    i, j = np.triu_indices(c.shape[1])
    out: np.ndarray = c[:, i] * c[:, j]
    return out


def triple_products(c: np.ndarray) -> np.ndarray:
    """[shape: (m, C(Q+2, 3))] products c_i c_j c_k for i <= j <= k."""
    t = np.array(list(combinations_with_replacement(range(c.shape[1]), 3)), dtype=np.int64).reshape(-1, 3)
    out: np.ndarray = c[:, t[:, 0]] * c[:, t[:, 1]] * c[:, t[:, 2]]
    return out


@lru_cache(maxsize=64)
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
    out.flags.writeable = False  # one map per shape, shared by every job: read-only
    return out


def assemble(pieces: Sequence[np.ndarray], n_pred: int, order: int) -> np.ndarray:
    """Full symmetric tensors from packed pieces (by number of genotype factors, 0 first).

    Returns [array, shape: (V,) + (n_pred,) * order].
    """
    v = pieces[0].shape[0]
    flat = np.concatenate([np.asarray(p, dtype=np.float64).reshape(v, -1) for p in pieces], axis=1)
    return flat[:, _gather_map(n_pred, order)].reshape((v,) + (n_pred,) * order)


def scale_vector(n_pred: int, scale: np.ndarray) -> np.ndarray:
    """[shape: (V, n_pred)] the diagonal of ``D`` with ``[1, s g, c] = D [1, g, c]`` per variant."""
    d = np.ones((scale.shape[0], n_pred))
    d[:, 1] = scale
    return d


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


def constant_genotypes(n_v: np.ndarray, sum_g: np.ndarray, sum_gg: np.ndarray) -> np.ndarray:
    """Where every sample's genotype (hard call or dosage) is the same: ``n Σg² = (Σg)²``.

    plink2 tests this exactly on hard-call counts, and on its integer dosage sums (``DosageIsConstant``,
    in 1/16384 units); the sums here are exact multiples of 2^-14 (Σg) and 2^-28 (Σg²), so the test
    is made in integers of those units, with Python's unbounded ints where the float test is close.
    """
    n = np.rint(n_v)
    with np.errstate(invalid="ignore"):
        close = np.abs(n * sum_gg - sum_g * sum_g) <= 1e-9 * np.maximum(n * sum_gg, 1.0)
    out = np.zeros(n.shape[0], dtype=bool)
    for i in np.flatnonzero(close).tolist():
        s = round(float(sum_g[i]) * 16384)
        q = round(float(sum_gg[i]) * 268435456)
        out[i] = int(n[i]) * q == s * s
    return out


def pre_checks(n_v: np.ndarray, n_pred: int, sum_g: np.ndarray, sum_gg: np.ndarray) -> np.ndarray:
    """SAMPLE_CT<=PREDICTOR_CT, then CONST_OMITTED_ALLELE (a constant genotype column)."""
    n = np.rint(n_v)
    err = np.zeros(n_v.shape[0], dtype=np.int64)
    err[constant_genotypes(n_v, sum_g, sum_gg)] = ERR_CONST_OMITTED
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
    valid: np.ndarray = ok & ~bad
    return valid


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


#: plink2's reason (PrintPrescanErrmsg) for a phenotype whose covariate scales fail :func:`unstable_scale`.
UNSTABLE_SCALE = (
    "genotype/covariate scales vary too widely for numerical stability of the current implementation. Try "
    "rescaling your covariates with e.g. --covar-variance-standardize"
)


def unstable_scale(xtx: np.ndarray, n: float) -> bool:
    """plink2's prescan of the covariates' scales (GlmFillAndTestCovars): True when they vary too
    widely for its single-precision fit, i.e. the smallest centred sum of squares (genotype columns
    of MAF 0.01 included: ``0.0198 (n-1)``) times 2^20 is below the largest raw one (``1.5 n``).

    ``xtx``: [shape: (q, q)] Σ c cᵀ over the phenotype's samples, intercept first.
    """
    sums, ssq = xtx[0, 1:], np.diagonal(xtx)[1:]
    max_ssq = max(1.5 * n, float(ssq.max(initial=0.0)))
    centred = ssq - sums * sums / n
    min_centred = min(0.0198 * (n - 1), float(centred.min(initial=np.inf)))
    return bool(min_centred * 1048576.0 < max_ssq)


def covariate_check(xtx: np.ndarray, n: float) -> int:
    """plink2's phenotype-level check on the covariates alone (no intercept)."""
    if xtx.shape[0] <= 2:
        return ERR_NONE
    # treat the first covariate as if it were the genotype: same maths, no genotype row
    return int(corr_vif_check(xtx[None], np.array([n]))[0])


# ---------------------------------------------------------------------------------------------
# what a half hands the job, and what it asks of it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Fit:
    """One phenotype's regression as a half of ``--glm`` solved it, every variant decided.

    :class:`fedstat.stats.glm.GlmJob` turns it into a ``GlmResult`` (plink2's ERRCODE strings,
    the job's A1 alleles). Arrays have one row per harmonized variant (V).

    Attributes
    ----------
    pheno, is_binary, method, covariates, tests : as in ``GlmResult``
    n_samples, n_cases, n_controls : phenotype-level counts (cases/controls 0 for linear)
    obs_ct : [shape: (V,), int64] OBS_CT
    a1_freq : [shape: (V,), float64] A1 frequency among the OBS_CT samples (NaN if none)
    beta, se, stat, log_p : [shape: (V, len(tests)), float64] NaN where a variant has no result
    err : [shape: (V,), int64] each variant's ``ERR_*`` code
    sep_allele : [shape: (V,), int64] the allele (0 = REF, 1 = ALT) a SEPARATION is reported
        on; None when no variant can have one (linear)
    reported : [shape: (V,), bool] variants whose results are printed (ERRCODE ``.`` or ``UNFINISHED``)
    unfinished : [shape: (V,), bool] fits that stopped at the iteration limit
    firth : [shape: (V,), bool] Firth regression was used
    a1_ct : [shape: (V,), float64] A1 dosage summed over the OBS_CT samples (plink2's A1_CT)
    case_obs_ct : [shape: (V,), int64] cases among the OBS_CT samples; None for linear
    a1_case_ct : [shape: (V,), float64] A1 dosage summed over those cases; None for linear
    test_mask : [shape: (V, len(tests)), bool] the (variant, test) rows printed, when chromosome
        classes differ in their tests (SEX on chrX) or leave variants out; None: every row
    haploid : [shape: (V,), bool] variants regressed haploid (chrY, MT: one allele per sample); None: none
    """

    pheno: str
    is_binary: bool
    method: str
    covariates: tuple[str, ...]
    tests: tuple[str, ...]
    n_samples: int
    n_cases: int
    n_controls: int
    obs_ct: np.ndarray
    a1_freq: np.ndarray
    beta: np.ndarray
    se: np.ndarray
    stat: np.ndarray
    log_p: np.ndarray
    err: np.ndarray
    sep_allele: np.ndarray | None
    reported: np.ndarray
    unfinished: np.ndarray
    firth: np.ndarray
    a1_ct: np.ndarray
    case_obs_ct: np.ndarray | None = None
    a1_case_ct: np.ndarray | None = None
    test_mask: np.ndarray | None = None
    haploid: np.ndarray | None = None


class JobView(Protocol):
    """What the linear and logistic halves read from the job that runs them, and log to it.

    ``n_var`` and ``a1_is_ref`` are known after the job's describe round; ``a1_is_ref`` is
    [array, shape: (n_var,), dtype bool] (A1 = REF, else ALT).
    """

    @property
    def n_var(self) -> int: ...

    @property
    def a1_is_ref(self) -> np.ndarray: ...

    @property
    def firth_mode(self) -> str: ...

    @property
    def geno_scale(self) -> np.ndarray | None:
        """[array, shape: (n_var,)] each variant's genotype scale in plink2's model: 0.5 on haploid
        chromosomes (chrY, MT: a genotype counts 0..1), 1.0 elsewhere; None when all are 1."""
        ...

    def tests_for(self, covars: Sequence[str]) -> tuple[str, ...]:
        """TEST names of a regression on ``covars`` (``ADD`` first)."""
        ...

    def drop_constant_in_mask(self, spec: PhenoSpec, xtx: np.ndarray, n: float) -> list[int] | None:
        """Indices (into ``spec.covars``) of covariates kept, or None when the phenotype is skipped (a
        covariate constant in the mask, without --require-covar); logs the ones left out. A
        categorical covariate keeps the indicators of its categories present, but the reference."""
        ...

    def categorical_levels(self, spec: PhenoSpec, kept: Sequence[str]) -> dict[str, list[str]]:
        """Each categorical covariate with an indicator in ``kept`` -> all its indicators in ``spec.covars``."""
        ...

    @property
    def two_valued(self) -> Mapping[str, tuple[float, float]]:
        """Numeric covariates holding two of the values 0, 1, 2 over the cohort -> those values."""
        ...

    def skip(self, pheno: str, why: str) -> None:
        """Log that the phenotype's regression is skipped, and why."""
        ...

    def note(self, line: str) -> None:
        """Add one line to the job's log."""
        ...
