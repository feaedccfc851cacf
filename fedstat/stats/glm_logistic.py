"""Federated logistic / Firth ``--glm``: Newton rounds over all unfinished variants at once.

Each ``glm_logistic`` round evaluates, at coefficients the coordinator sends per variant (ALT
coding, ``arrays["coef"]``), sums over the samples with a genotype — with ``x = [1, g, c]``,
``p = expit(xᵀβ)``, ``v = p(1 − p)``:

- the Fisher information ``Σ v x xᵀ`` and the score ``Σ (y − p) x``, as packed pieces
  (``v @ (c⊗c)``, ``(v g) @ c``, ``Σ v g²``, …: matmuls over the block);
- for variants flagged Firth (``arrays["firth"]``) also the log-likelihood and the third-moment
  tensor ``Σ v (½ − p) x⊗x⊗x``; with the *global* information ``I`` the coordinator forms the
  hat diagonal's contribution ``Σ_i h_i (½ − p_i) x_i = Σ_kl (I⁻¹)_kl T_jkl`` itself, so one
  round serves one Firth evaluation (log det ``I`` is global too).

The first round (β = 0, where ``v = ¼``) also yields ``XᵀX``, the genotype counts, OBS_CT and
the case/control A1 dosages, so the design checks and plink2's separation test (zero or all A1
dosage in cases or controls → Firth, or ``SEPARATION`` with no-firth) need no extra round.

The coordinator replays plink2's iteration rules in plink2's own parametrisation (A1 coding,
raw covariates, start at 0): logistic — step ``H⁻¹ U``, stop when ``Σ|Δβ| < 1e-4``, divergence
tests after iteration 3 and 6, UNFINISHED after 15 iterations, SE from the last Hessian;
Firth — logistf-style steps capped at 5, up to 5 half-steps, ``max|Δβ| <= 1e-4``,
``max|U*| < 1e-4``, ``|Δ penalized loglik| <= 1e-4``, 25 iterations, SE from ``I⁻¹`` at the
estimate. A logistic failure falls back to Firth from 0 (firth-fallback).

References
----------
plink2 2.00a3.5 ``LogisticRegression``, ``FirthRegression``, ``GlmLogisticThread``
(``plink2_glm_logistic.cc``); Heinze & Schemper (2002), logistf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
from scipy import special, stats

from fedstat.data.genotypes import DOSAGES
from fedstat.errors import InputError
from fedstat.stats.base import Cohort, RoundInput, RoundPlan, SumArray, cohort_level, per_variant
from fedstat.stats.glm_common import (
    ERR_FIRTH,
    ERR_INVALID,
    ERR_LOGISTIC,
    ERR_NONE,
    ERR_SEPARATION,
    UNSTABLE_SCALE,
    Design,
    Fit,
    JobView,
    PhenoSpec,
    assemble,
    category_groups,
    corr_vif_check,
    covariate_check,
    decode_specs,
    encode_specs,
    flip_matrix,
    pair_products,
    pre_checks,
    round_design,
    safe_inv,
    scale_vector,
    sex_groups,
    specs_of,
    triple_products,
    unstable_scale,
    valid_parameters,
)

__all__ = ["LogisticFit", "LogisticSums", "max_rounds"]

_LN2 = float(np.log(2.0))
_DONE, _LOGISTIC, _FIRTH = 0, 1, 2
_CHUNK = 64  # rows per inner step of a site's block
# plink2 FirthRegression convergence constants (logistf's, kept as plink2 uses them)
FIRTH_XCONV = 1e-4  # max |Δβ|
FIRTH_GCONV = 1e-4  # max |U*|
FIRTH_LCONV = 1e-4  # |Δ penalized log-likelihood|
FIRTH_MAX_ITER = 25
FIRTH_MAX_HALF_STEPS = 5  # step halvings per Firth iteration
LOGISTIC_MAX_ITER = 15  # plink2 LogisticRegression: UNFINISHED (or failed) after 15 iterations


def max_rounds(firth_mode: str) -> int:
    """Most ``glm_logistic`` rounds one case/control phenotype takes under ``firth_mode``
    (``"no-firth"``, ``"firth"``, ``"fallback"``); every variant iterates in the same rounds.

    Logistic: one Newton step per round, at most :data:`LOGISTIC_MAX_ITER`. Firth: a first
    evaluation, then per iteration at most :data:`FIRTH_MAX_HALF_STEPS` half-step evaluations and
    the evaluation that ends it (which starts the next), for :data:`FIRTH_MAX_ITER` iterations.
    Fallback: a variant whose logistic fit fails (at the latest in its last iteration) restarts
    under Firth in the next round.
    """
    firth = 1 + FIRTH_MAX_ITER * (FIRTH_MAX_HALF_STEPS + 1)
    return {"no-firth": LOGISTIC_MAX_ITER, "firth": firth}.get(firth_mode, LOGISTIC_MAX_ITER + firth)


class LogisticSums:
    """Site side of ``glm_logistic``: information, score (and Firth pieces) at given β.

    Stateless: the phenotype's design and its spread over the cohort are built once per round into
    the round's ``inp.local`` (keys ``lg.*``), which only this site's run of the round sees.
    """

    def genotypes(self, params: Mapping[str, str]) -> str:
        """Dosages where the site's file has them (int8 hard calls otherwise), as plink2's ``--glm``."""
        return DOSAGES

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        (spec,) = specs_of(params)
        q = 1 + len(spec.covars)  # design c = [1, covariates]; x = [1, g, c]
        n_q2, n_q3 = q * (q + 1) // 2, (q * (q + 1) * (q + 2)) // 6
        out = cohort_level(["lg.xtx"], q, q) | cohort_level(["lg.xty"], q)
        out |= cohort_level(["lg.n", "lg.ncase"], 1, integer=True)
        out |= per_variant(["lg.hc"], n_q2) | per_variant(["lg.hg", "lg.sc"], q) | per_variant(["lg.hgg", "lg.sg"])
        if (np.asarray(arrays.get("firth", ())) > 0).any():  # Firth pieces in rounds with a Firth variant
            out |= per_variant(["lg.ll", "lg.t0"]) | per_variant(["lg.t3"], n_q3) | per_variant(["lg.t2"], n_q2)
            out |= per_variant(["lg.t1"], q)
        return out

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """The phenotype's regression cohort (phenotype and covariates present)."""
        (spec,) = decode_specs(inp)
        mask = np.zeros(cohort.n, dtype=bool)
        mask[round_design(cohort, spec, inp, "lg").idx] = True
        return {spec.name: mask} | category_groups(cohort, mask, spec.name) | sex_groups(cohort, mask, spec.name, spec)

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        (spec,) = decode_specs(inp)
        d = round_design(cohort, spec, inp, "lg")
        return {
            "lg.xtx": d.c.T @ d.c,
            "lg.xty": d.c.T @ d.y,  # Σ c y: cases per category, for plink2's separation check
            "lg.n": np.array([d.idx.size], dtype=np.int64),
            "lg.ncase": np.array([int(np.rint(d.y.sum()))], dtype=np.int64),
        }

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        (spec,) = decode_specs(inp)
        d = round_design(cohort, spec, inp, "lg")
        block = np.asarray(block)
        b = block.shape[0]
        q = d.c.shape[1]
        coef = np.asarray(inp.arrays["coef"], dtype=np.float64)[rows]
        is_firth = np.asarray(inp.arrays["firth"])[rows] > 0
        assert coef.shape == (b, q + 1)
        n_q2, n_q3 = q * (q + 1) // 2, (q * (q + 1) * (q + 2)) // 6
        out: dict[str, np.ndarray] = {
            "lg.hc": np.zeros((b, n_q2)),
            "lg.hg": np.zeros((b, q)),
            "lg.hgg": np.zeros(b),
            "lg.sc": np.zeros((b, q)),
            "lg.sg": np.zeros(b),
        }
        # Firth pieces only in rounds with a Firth variant: the flags are a global round array, so
        # every block at every site sends the same set of arrays
        if (np.asarray(inp.arrays["firth"]) > 0).any():
            out.update(
                {
                    "lg.ll": np.zeros(b),
                    "lg.t3": np.zeros((b, n_q3)),
                    "lg.t2": np.zeros((b, n_q2)),
                    "lg.t1": np.zeros((b, q)),
                    "lg.t0": np.zeros(b),
                }
            )
        wide = _wide_design(d, cohort.n, inp.local)
        c3 = _c3(wide, inp.local) if is_firth.any() else None
        cpos = np.array([0, *range(2, q + 1)])
        # chunks of rows keep the (rows, samples) temporaries in cache
        for lo in range(0, b, _CHUNK):
            sl = slice(lo, min(lo + _CHUNK, b))
            self._chunk(block[sl], wide, coef[sl], is_firth[sl], cpos, c3, {k: v[sl] for k, v in out.items()})
        return out

    @staticmethod
    def _chunk(
        gm: np.ndarray,
        w: _Wide,
        coef: np.ndarray,
        is_firth: np.ndarray,
        cpos: np.ndarray,
        c3: np.ndarray | None,
        out: dict[str, np.ndarray],
    ) -> None:
        """Fisher information and score pieces for rows ``gm`` over the whole cohort.

        Samples outside the regression have zero covariate rows (intercept included) and a zeroed
        genotype, so they add nothing; a missing call is set to g = 0 and its v and y − p entries are
        zeroed through its flat index (sparse, no dense mask).
        """
        b, n = gm.shape
        g = gm.astype(np.float64)
        flat = gm.reshape(-1)
        miss = np.flatnonzero(flat < 0) if flat.min(initial=0) < 0 else None
        if miss is not None:
            g.reshape(-1)[miss] = 0.0
        if w.out_cols.size:
            g[:, w.out_cols] = 0.0
        if not coef.any():
            _chunk_at_zero(g, w, miss, out)
        else:
            _chunk_at(g, w, coef, cpos, miss, out)
        f = np.flatnonzero(is_firth)
        if f.size:  # Firth's convergence test is on |U*| < 1e-4 itself: its rows are redone in float64
            assert c3 is not None
            firth = _firth_pieces(gm[f], g[f], coef[f], w, cpos, c3)
            for k, val in firth.items():
                out[k][f] = val


def _chunk_at(
    g: np.ndarray, w: _Wide, coef: np.ndarray, cpos: np.ndarray, miss: np.ndarray | None, out: dict[str, np.ndarray]
) -> None:
    """The pieces at each row's β (logistic Newton steps)."""
    b, n = g.shape
    eta = coef[:, cpos] @ w.c.T  # η = β_c c + β_g g, (b, n)
    tmp = np.multiply(g, coef[:, 1:2])
    eta += tmp
    # t = tanh(η/2) in float32, the one transcendental per element (p = ½ + ½t and
    # v = p(1 − p) = ¼(1 − t²)); every product and sum below is float64. A Newton step is
    # H⁻¹U, so p's float32 rounding (≤ 3e-8) moves β by ~1e-8 SE, far inside plink2's own
    # float32 evaluation and the 1e-4 convergence test.
    t = np.multiply(eta, 0.5, out=np.empty((b, n), dtype=np.float32), casting="same_kind")
    np.tanh(t, out=t)
    r = np.multiply(t, -0.5, out=eta)  # y − p = (y − ½) − ½t
    r += w.y_centered
    v = np.multiply(np.multiply(t, t, out=t), -0.25, out=tmp)
    v += 0.25
    if miss is not None:
        v.reshape(-1)[miss] = 0.0
        r.reshape(-1)[miss] = 0.0
    out["lg.sc"][...] = r @ w.c  # Σ (y − p) c
    out["lg.sg"][...] = np.vecdot(r, g)  # Σ (y − p) g
    out["lg.hc"][...] = v @ w.c2  # Σ v c_i c_j
    vg = np.multiply(v, g, out=r)
    out["lg.hg"][...] = vg @ w.c  # Σ v g c
    out["lg.hgg"][...] = np.vecdot(vg, g)  # Σ v g²


def _chunk_at_zero(g: np.ndarray, w: _Wide, miss: np.ndarray | None, out: dict[str, np.ndarray]) -> None:
    """The pieces at β = 0, where p = ½ and v = ¼ for every sample with a call: products with the
    cohort's column sums, minus the missing calls' share (sparse)."""
    b, n = g.shape
    a = g @ w.cy  # Σ g [c, y − ½]
    out["lg.hg"][...] = 0.25 * a[:, :-1]
    out["lg.sg"][...] = a[:, -1]
    out["lg.hgg"][...] = 0.25 * np.vecdot(g, g)
    hc = np.broadcast_to(w.c2_sum, (b, w.c2_sum.size)).copy()
    sc = np.broadcast_to(w.cy_sum, (b, w.cy_sum.size)).copy()
    if miss is not None:
        rows, cols = np.divmod(miss, n)
        np.subtract.at(hc, rows, w.c2[cols])
        np.subtract.at(sc, rows, w.c[cols] * w.y_centered[cols, None])
    out["lg.hc"][...] = 0.25 * hc
    out["lg.sc"][...] = sc


def _firth_pieces(
    gm: np.ndarray, g: np.ndarray, coef: np.ndarray, w: _Wide, cpos: np.ndarray, c3: np.ndarray
) -> dict[str, np.ndarray]:
    """Every piece of the Firth rows in float64: information, score, log-likelihood and the
    third-moment tensor."""
    eta = coef[:, cpos] @ w.c.T + g * coef[:, 1:2]
    keep = ((gm >= 0) & w.inreg[None, :]).astype(np.float64)
    p = special.expit(eta)
    v = p * (1.0 - p) * keep
    r = (w.y[None, :] - p) * keep
    vg = v * g
    u = v * (0.5 - p)  # weights of Σ v (½ − p) x⊗x⊗x, split by powers of g
    ug = u * g
    ugg = ug * g
    return {
        "lg.hc": v @ w.c2,
        "lg.hg": vg @ w.c,
        "lg.hgg": np.vecdot(vg, g),
        "lg.sc": r @ w.c,
        "lg.sg": np.vecdot(r, g),
        # log-likelihood Σ y η − log(1 + e^η), over regression samples with a genotype
        "lg.ll": ((w.y[None, :] * eta - np.logaddexp(0.0, eta)) * keep).sum(axis=1),
        "lg.t3": u @ c3,
        "lg.t2": ug @ w.c2,
        "lg.t1": ugg @ w.c,
        "lg.t0": np.vecdot(ugg, g),
    }


@dataclass(frozen=True, eq=False)
class _Wide:
    """A design spread over the whole cohort: rows outside the regression are zero (y too)."""

    inreg: np.ndarray
    c: np.ndarray
    y: np.ndarray
    out_cols: np.ndarray
    y_centered: np.ndarray
    c2: np.ndarray
    cy: np.ndarray
    c2_sum: np.ndarray
    cy_sum: np.ndarray

    @classmethod
    def of(cls, d: Design, n: int) -> _Wide:
        inreg = np.zeros(n, dtype=bool)
        inreg[d.idx] = True
        c = np.zeros((n, d.c.shape[1]))
        c[d.idx] = d.c
        y = np.zeros(n)
        y[d.idx] = d.y
        y_centered = np.where(inreg, y - 0.5, 0.0)
        c2 = pair_products(c)
        return cls(
            inreg=inreg,
            c=c,
            y=y,
            out_cols=np.flatnonzero(~inreg),
            y_centered=y_centered,
            c2=c2,
            cy=np.column_stack([c, y_centered]),
            c2_sum=c2.sum(axis=0),
            cy_sum=c.T @ y_centered,  # Σ c (y − ½)
        )


_WIDE_KEY = "lg.wide."  # the round's inp.local keys of the _Wide arrays


def _wide_design(d: Design, n: int, local: dict[str, np.ndarray]) -> _Wide:
    """The design ``d`` spread over the cohort of ``n``, built once per round into ``local``."""
    names = [f.name for f in fields(_Wide)]
    if _WIDE_KEY + "c" in local:
        return _Wide(**{name: local[_WIDE_KEY + name] for name in names})
    wide = _Wide.of(d, n)
    local.update({_WIDE_KEY + name: getattr(wide, name) for name in names})
    return wide


def _c3(w: _Wide, local: dict[str, np.ndarray]) -> np.ndarray:
    """[shape: (n, C(Q+2, 3))] ``c_i c_j c_k`` of the spread design, once per round (Firth rounds only)."""
    c3 = local.get(_WIDE_KEY + "c3")
    if c3 is None:
        c3 = local[_WIDE_KEY + "c3"] = triple_products(w.c)
    return c3


class LogisticFit:
    """Coordinator side for one case/control phenotype: a state machine over rounds."""

    def __init__(self, job: JobView, spec: PhenoSpec):
        self.job = job
        self.spec = spec
        self.n_var = job.n_var
        self.mode = job.firth_mode
        self.flip = job.a1_is_ref
        self.scale = getattr(job, "geno_scale", None)  # haploid variants: plink2's genotype 0..1 (None: all diploid)
        self.n_pred = len(spec.covars) + 2
        self.round_vars = np.arange(self.n_var)
        self.first = True
        self.skipped = False
        v, p = self.n_var, self.n_pred
        self.state = np.full(v, _LOGISTIC)
        self.coef = np.zeros((v, p))
        self.k = np.zeros(v, dtype=np.int64)
        self.min_delta = np.full(v, 1e9)
        self.err = np.zeros(v, dtype=np.int64)
        self.sep_allele = np.zeros(v, dtype=np.int64)
        self.firth_used = np.zeros(v, dtype=bool)
        self.unfinished = np.zeros(v, dtype=bool)
        self.beta = np.full((v, p), np.nan)
        self.var = np.full((v, p), np.nan)
        self.n_v = np.zeros(v)
        self.sum_g = np.zeros(v)
        self.case_v = np.zeros(v)  # cases with a genotype
        self.sum_gy = np.zeros(v)  # their ALT dosage
        # Firth state (plink2 FirthRegression locals, one per variant)
        self.f_phase = np.zeros(v, dtype=np.int64)  # 0: initial evaluation, 1: half-step loop
        self.f_iter = np.zeros(v, dtype=np.int64)
        self.f_hs = np.ones(v, dtype=np.int64)
        self.f_maxhs = np.full(v, FIRTH_MAX_HALF_STEPS, dtype=np.int64)
        self.f_bail = np.zeros(v, dtype=bool)
        self.f_conv = np.zeros(v, dtype=bool)
        self.f_last = np.zeros(v, dtype=bool)
        self.f_dcoef = np.zeros((v, p))
        self.f_dmax = np.zeros(v)
        self.f_gmax = np.zeros(v)
        self.f_ll = np.zeros(v)
        self.f_old = np.zeros(v)
        self.f_thresh = np.zeros(v)
        self.n = 0
        self.n_case = 0

    # -- rounds -----------------------------------------------------------------------------

    def first_plan(self) -> RoundPlan:
        firth = np.full(self.n_var, 1.0 if self.mode == "firth" else 0.0)
        return RoundPlan(
            "glm_logistic",
            params={"spec": encode_specs([self.spec])},
            arrays={"coef": np.zeros((self.n_var, self.n_pred)), "firth": firth},
        )

    def _plan(self) -> RoundPlan | None:
        active = np.flatnonzero(self.state != _DONE)
        if active.size == 0:
            return None
        coef = self.coef[active].copy()
        if self.scale is not None:
            coef *= scale_vector(self.n_pred, self.scale[active])  # β of the sites' genotype 0..2: D β
        fl = self.flip[active]
        coef[fl] = coef[fl] @ flip_matrix(self.n_pred)  # β_ALT = Tᵀ β_A1
        self.round_vars = active
        return RoundPlan(
            "glm_logistic",
            params={"spec": encode_specs([self.spec])},
            arrays={"coef": coef, "firth": (self.state[active] == _FIRTH).astype(np.float64)},
            variants=active.astype(np.int64),
        )

    def _unpack(self, sums: Mapping[str, np.ndarray], n_pred: int, firth: bool) -> dict[str, np.ndarray]:
        rv = self.round_vars
        nr = rv.size
        get = {
            k: np.asarray(sums[f"lg.{k}"], dtype=np.float64).reshape(nr, -1) for k in ("hc", "hg", "hgg", "sc", "sg")
        }
        h = assemble([get["hc"], get["hg"], get["hgg"]], n_pred, 2)
        u = assemble([get["sc"], get["sg"]], n_pred, 1)
        out = {"h": h, "u": u}
        if firth:
            f = {
                k: np.asarray(sums[f"lg.{k}"], dtype=np.float64).reshape(nr, -1) for k in ("ll", "t3", "t2", "t1", "t0")
            }
            out["t"] = assemble([f["t3"], f["t2"], f["t1"], f["t0"]], n_pred, 3)
            out["ll"] = f["ll"][:, 0]
        return out

    def _to_a1(self, ev: dict[str, np.ndarray], keep: np.ndarray) -> None:
        """Restrict to predictors ``keep`` and map the round's sums to A1 coding, in place."""
        ev["h"] = ev["h"][:, keep][:, :, keep]
        ev["u"] = ev["u"][:, keep]
        if "t" in ev:
            ev["t"] = ev["t"][:, keep][:, :, keep][:, :, :, keep]
        fl = self.flip[self.round_vars]
        if fl.any():
            t = flip_matrix(keep.size)
            ev["h"][fl] = t @ ev["h"][fl] @ t.T
            ev["u"][fl] = ev["u"][fl] @ t.T
            if "t" in ev:
                ev["t"][fl] = np.einsum("ai,bj,ck,vijk->vabc", t, t, t, ev["t"][fl])
        if self.scale is not None:  # haploid: the genotype halved, h -> D h D, u -> D u, t -> D⊗D⊗D t
            d = scale_vector(keep.size, self.scale[self.round_vars])
            ev["h"] *= d[:, :, None] * d[:, None, :]
            ev["u"] *= d
            if "t" in ev:
                ev["t"] *= d[:, :, None, None] * d[:, None, :, None] * d[:, None, None, :]

    def step(self, sums: Mapping[str, np.ndarray]) -> RoundPlan | None:
        if self.first:
            self.first = False
            return self._first_step(sums)
        ev = self._unpack(sums, self.n_pred, bool((self.state[self.round_vars] == _FIRTH).any()))
        self._to_a1(ev, np.arange(self.n_pred))
        self._advance(ev)
        return self._plan()

    def _first_step(self, sums: Mapping[str, np.ndarray]) -> RoundPlan | None:
        spec, job = self.spec, self.job
        q0 = len(spec.covars) + 1
        xtx = np.asarray(sums["lg.xtx"], dtype=np.float64).reshape(q0, q0)
        self.n = n = int(np.asarray(sums["lg.n"]).reshape(-1)[0])
        self.n_case = n_case = int(np.asarray(sums["lg.ncase"]).reshape(-1)[0])
        ev = self._unpack(sums, q0 + 1, self.mode == "firth")
        if n_case == 0 or n_case == n:
            job.skip(spec.name, "it is constant (all cases or all controls)")
            self.skipped = True
            return None
        keep = job.drop_constant_in_mask(spec, xtx, float(n))
        if keep is None:
            self.skipped = True
            return None
        ck = np.array([0] + [j + 1 for j in keep])
        separated = self._separated_categories(sums, xtx, [spec.covars[j] for j in keep])
        if unstable_scale(xtx[np.ix_(ck, ck)], float(n)):
            job.skip(spec.name, UNSTABLE_SCALE)
            self.skipped = True
            return None
        if covariate_check(xtx[np.ix_(ck, ck)], float(n)):
            job.skip(spec.name, "the covariates fail the correlation / VIF check")
            self.skipped = True
            return None
        pk = np.array([0, 1, *(j + 2 for j in keep)])
        if len(keep) != len(spec.covars):
            self.spec = PhenoSpec(
                spec.name, spec.binary, tuple(spec.covars[j] for j in keep), spec.mask_covars, spec.scale
            )
            self.n_pred = pk.size
            self.coef = self.coef[:, : pk.size].copy()
            self.beta, self.var = self.beta[:, : pk.size].copy(), self.var[:, : pk.size].copy()
            self.f_dcoef = self.f_dcoef[:, : pk.size].copy()
        if n <= self.n_pred:
            job.skip(spec.name, "# samples <= # predictor columns")
            self.skipped = True
            return None
        # at β = 0, v = ¼ exactly: XᵀX, counts and case sums come out of the same round (ALT coding)
        xtx_v = ev["h"][:, pk][:, :, pk] / 0.25
        self.n_v = n_v = xtx_v[:, 0, 0]
        self.sum_g = sum_g = xtx_v[:, 0, 1]
        sum_gg = xtx_v[:, 1, 1]
        # Σ (y − ½) x at β = 0: the cases with a genotype and their ALT dosage
        self.case_v = case_v = ev["u"][:, 0] + 0.5 * n_v
        self.sum_gy = sum_gy = ev["u"][:, 1] + 0.5 * sum_g
        err = pre_checks(n_v, self.n_pred, sum_g, sum_gg)
        todo = np.flatnonzero(err == ERR_NONE)
        err[todo] = corr_vif_check(xtx_v[todo], n_v[todo])
        ok = err == ERR_NONE
        ref_tot, ref_case = 2.0 * n_v - sum_g, 2.0 * case_v - sum_gy
        sep_ref = (ref_case == 0.0) | (ref_case == ref_tot)
        sep_alt = (sum_gy == 0.0) | (sum_gy == sum_g)
        sep = ok & (sep_ref | sep_alt)
        self.sep_allele = np.where(sep_ref, 0, 1)
        self.err = err
        self.state[~ok] = _DONE
        self._to_a1(ev, pk)
        if self.mode == "firth":
            self.state[ok] = _FIRTH
        elif self.mode == "fallback":
            if separated:  # plink2: a (quasi-)separated covariate makes every variant's regression Firth
                sep = ok
            self.state[sep] = _FIRTH
            self.firth_used[sep] = True
        else:
            self.state[sep] = _DONE
            self.err[sep] = ERR_SEPARATION
        if self.mode == "firth":
            self._advance(ev)
        else:
            # separated variants still need a Firth evaluation at 0 (next round, with extras)
            logistic = self.state == _LOGISTIC
            self._logistic(np.flatnonzero(logistic), ev["h"][logistic], ev["u"][logistic])
        return self._plan()

    def _separated_categories(self, sums: Mapping[str, np.ndarray], xtx: np.ndarray, kept: list[str]) -> bool:
        """Whether a covariate in the model has a value or category held by only cases or only controls.

        plink2 (CheckForSeparatedCovar, over the regression's samples): under firth-fallback such a
        covariate makes every regression Firth; without Firth plink2 leaves those samples out (or
        stops), which takes a new sample set: refused here. Checked from the sums for categorical
        covariates and for numeric ones holding two values (e.g. SEX 1/2), whose cases per value
        follow from Σc and Σcy; a numeric covariate with more values is not checked (plink2 compares
        the cases' and controls' ranges, which no sum gives).
        """
        if self.mode == "firth":
            return False
        spec = self.spec
        groups: list[tuple[str, np.ndarray, np.ndarray]] = []
        xty = None
        for column, cols in self.job.categorical_levels(spec, kept).items():
            xty = np.asarray(sums["lg.xty"], dtype=np.float64).reshape(xtx.shape[0])
            idx = [spec.covars.index(x) + 1 for x in cols]
            groups.append((column, xtx[0, idx], xty[idx]))
        for column in kept:
            pair = self.job.two_valued.get(column)
            if pair is None:
                continue
            xty = np.asarray(sums["lg.xty"], dtype=np.float64).reshape(xtx.shape[0])
            (a, b), j = pair, spec.covars.index(column) + 1
            n_b = (xtx[0, j] - a * self.n) / (b - a)  # Σc = a n_a + b n_b
            case_b = (xty[j] - a * self.n_case) / (b - a)
            groups.append((column, np.array([self.n - n_b, n_b]), np.array([self.n_case - case_b, case_b])))
        for column, n_l, case_l in groups:
            n_l, case_l = np.rint(n_l), np.rint(case_l)
            present = n_l > 0
            both = present & (case_l > 0) & (case_l < n_l)
            if both.sum() == present.sum():
                continue
            if self.mode == "no-firth":
                raise InputError(
                    f"--glm no-firth: covariate '{column}' is (quasi-)separated by phenotype '{spec.name}' (a category "
                    "or value holds only cases or only controls); plink2 would leave its samples out, which fedstat "
                    "does not do: use the default firth-fallback, or leave the covariate out"
                )
            self.job.note(
                f"--glm: covariate '{column}' is (quasi-)separated by phenotype '{spec.name}' (a category or value "
                "holds only cases or only controls): Firth regression for every variant, as plink2."
            )
            return True
        return False

    # -- the two algorithms, vectorised over variants ----------------------------------------

    def _advance(self, ev: dict[str, np.ndarray]) -> None:
        rv = self.round_vars
        st = self.state[rv]
        lg = st == _LOGISTIC
        if lg.any():
            self._logistic(rv[lg], ev["h"][lg], ev["u"][lg])
        fi = st == _FIRTH
        if fi.any():
            self._firth(rv[fi], ev["h"][fi], ev["u"][fi], ev["ll"][fi], ev["t"][fi])

    def _finish(self, idx: np.ndarray, beta: np.ndarray, cov: np.ndarray) -> None:
        valid = valid_parameters(cov)
        self.err[idx[~valid]] = ERR_INVALID
        good = idx[valid]
        self.beta[good] = beta[valid]
        self.var[good] = np.diagonal(cov[valid], axis1=1, axis2=2)
        self.state[idx] = _DONE

    def _logistic(self, idx: np.ndarray, h: np.ndarray, u: np.ndarray) -> None:
        """One plink2 LogisticRegression iteration at each variant's current β."""
        if idx.size == 0:
            return
        inv = safe_inv(h)
        step = np.einsum("vij,vj->vi", inv, u)  # Newton: β += H⁻¹ Σ x (y − p)
        coef = self.coef[idx] + step
        delta = np.abs(step).sum(axis=1)
        k = self.k[idx]
        min_delta = np.minimum(self.min_delta[idx], delta)
        self.min_delta[idx] = min_delta
        fail = ~np.isfinite(delta)
        late = (k > 3) & ~fail
        fail |= late & (((delta > 20.0) & (delta > 2.0 * min_delta)) | ((k > 6) & (np.abs(1.0 - delta) < 1e-3)))
        capped = (k >= LOGISTIC_MAX_ITER - 1) & ~fail  # plink2: k > 13
        big = np.abs(coef).max(axis=1)
        fail |= capped & (big > 8e3)
        unfinished = capped & ~fail
        conv = ~fail & ~capped & (delta < 1e-4)
        fail |= conv & (big > 6e4)
        conv &= ~fail
        done = unfinished | conv
        self.coef[idx] = coef
        self.k[idx] = k + 1
        self.unfinished[idx[unfinished]] = True
        if done.any():
            self._finish(idx[done], coef[done], inv[done])
        if fail.any():
            f = idx[fail]
            if self.mode == "fallback":
                self.state[f] = _FIRTH
                self.firth_used[f] = True
                self.coef[f] = 0.0
                self.f_phase[f] = 0
            else:
                self.err[f] = ERR_LOGISTIC
                self.state[f] = _DONE

    def _firth(self, idx: np.ndarray, info: np.ndarray, score: np.ndarray, ll: np.ndarray, t: np.ndarray) -> None:
        """Process one evaluation of plink2's FirthRegression at each variant's current β."""
        w = np.linalg.eigvalsh(info)
        pd = (w[:, 0] > 0) & np.isfinite(w).all(axis=1)
        if (~pd).any():
            bad = idx[~pd]
            self.err[bad] = ERR_FIRTH
            self.state[bad] = _DONE
            idx, info, score, ll, t = idx[pd], info[pd], score[pd], ll[pd], t[pd]
        if idx.size == 0:
            return
        inv = np.linalg.inv(info)
        llp = ll + 0.5 * np.linalg.slogdet(info)[1]  # penalized log-likelihood
        ustar = score + np.einsum("vjkl,vkl->vj", t, inv)  # Σ (y − p + h (½ − p)) x
        phase1 = self.f_phase[idx] == 1
        self.f_ll[idx] = llp
        iterate = ~phase1
        # half-step loop of the current iteration
        if phase1.any():
            j = idx[phase1]
            lj, old, thresh = llp[phase1], self.f_old[j], self.f_thresh[j]
            hs, maxhs = self.f_hs[j], self.f_maxhs[j]
            brk = hs > maxhs
            above = ~brk & (lj >= thresh)
            brk |= above & (lj >= old)
            maxhs = np.where(above & ~brk, hs, maxhs)
            bail = ~brk & ~above & (hs == maxhs)
            bail &= (self.f_dmax[j] < 0.001) & (self.f_gmax[j] < 0.05) & (lj >= old - FIRTH_LCONV)
            hs = np.where(bail, hs - 1, hs)
            maxhs = np.where(bail, maxhs - 1, maxhs)
            self.f_bail[j[bail]] = True
            cont = ~brk
            c = j[cont]
            self.coef[c] -= self.f_dcoef[c] * np.exp2(-hs[cont].astype(np.float64))[:, None]
            self.f_hs[j] = np.where(cont, hs + 1, hs)
            self.f_maxhs[j] = maxhs
            e = j[brk]
            change = lj[brk] - old[brk]
            last = (np.abs(change) <= FIRTH_LCONV) & (self.f_conv[e] | self.f_bail[e])
            capped = ~last & (self.f_iter[e] == FIRTH_MAX_ITER - 1)
            self.unfinished[e[capped]] = True
            self.f_last[e] = last | capped
            self.f_iter[e] += 1
            iterate[np.flatnonzero(phase1)[brk]] = True
        it = np.flatnonzero(iterate)
        if it.size == 0:
            return
        j = idx[it]
        last = self.f_last[j]
        if last.any():
            self._finish(j[last], self.coef[j[last]], inv[it[last]])
        go = ~last
        j, it = j[go], it[go]
        if j.size == 0:
            return
        us = ustar[it]
        gmax = np.abs(us).max(axis=1)
        d = np.einsum("vij,vj->vi", inv[it], us)  # Δβ = I⁻¹ U*
        dmax = np.abs(d).max(axis=1)
        scale = dmax > 5.0
        d[scale] *= (5.0 / dmax[scale])[:, None]
        dmax[scale] = 5.0
        self.coef[j] += d
        conv = (dmax <= FIRTH_XCONV) & (gmax < FIRTH_GCONV)
        self.f_dcoef[j] = d
        self.f_dmax[j], self.f_gmax[j], self.f_conv[j] = dmax, gmax, conv
        self.f_old[j] = llp[it]
        self.f_thresh[j] = llp[it] - np.where(conv, 0.999999 * FIRTH_LCONV, 0.0)
        self.f_maxhs[j] = FIRTH_MAX_HALF_STEPS
        self.f_hs[j] = 1
        self.f_phase[j] = 1

    # -- result -----------------------------------------------------------------------------

    def result(self) -> Fit | None:
        """The phenotype's fit once :meth:`step` has returned None; None when it was skipped."""
        if self.skipped:
            return None
        spec = self.spec
        tests = self.job.tests_for(spec.covars)
        method = {"fallback": "logistic-firth-hybrid", "no-firth": "logistic", "firth": "firth"}[self.mode]
        ok = (self.err == ERR_NONE) & np.isfinite(self.beta[:, 1])
        rep = slice(1, 1 + len(tests))
        beta = self.beta[ok][:, rep]
        se = np.sqrt(self.var[ok][:, rep])
        z = beta / se
        out = {k: np.full((self.n_var, len(tests)), np.nan) for k in ("beta", "se", "stat", "log_p")}
        out["beta"][ok] = beta
        out["se"][ok] = se
        out["stat"][ok] = z
        out["log_p"][ok] = _LN2 + stats.norm.logsf(np.abs(z))
        a1_ct = np.where(self.flip, 2.0 * self.n_v - self.sum_g, self.sum_g)
        a1_case = np.where(self.flip, 2.0 * self.case_v - self.sum_gy, self.sum_gy)
        with np.errstate(invalid="ignore", divide="ignore"):
            a1_freq = a1_ct / (2.0 * self.n_v)
        if self.scale is not None:  # plink2's A1 dosages on a haploid chromosome: half the diploid sums
            a1_ct, a1_case = a1_ct * self.scale, a1_case * self.scale
        return Fit(
            pheno=spec.name,
            is_binary=True,
            method=method,
            covariates=spec.covars,
            tests=tests,
            n_samples=self.n,
            n_cases=self.n_case,
            n_controls=self.n - self.n_case,
            obs_ct=np.rint(self.n_v).astype(np.int64),
            a1_freq=a1_freq,
            beta=out["beta"],
            se=out["se"],
            stat=out["stat"],
            log_p=out["log_p"],
            err=self.err,
            sep_allele=self.sep_allele,
            reported=ok,
            unfinished=self.unfinished,
            firth=self.firth_used if self.mode == "fallback" else np.full(self.n_var, self.mode == "firth"),
            a1_ct=a1_ct,
            case_obs_ct=np.rint(self.case_v).astype(np.int64),
            a1_case_ct=a1_case,
        )
