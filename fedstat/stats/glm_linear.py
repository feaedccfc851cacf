"""Federated linear ``--glm``: one round of sufficient statistics, solved batched at the coordinator.

Site side (``glm_linear``), per quantitative phenotype with design ``c = [1, covariates]`` over
the phenotype's samples:

- cohort sums ``Σ c cᵀ``, ``Σ c y``, ``Σ y²``, ``n``;
- per variant, with missing genotypes set to 0, one matmul ``G @ [c, y]`` (``Σ g c``, ``Σ g y``)
  and ``Σ g²``; plus corrections over the (variant, sample) pairs whose genotype is missing
  only — a sparse indicator matrix times ``[c⊗c, c y, y²]`` — and the missing count.

Coordinator: per variant ``XᵀX`` / ``Xᵀy`` of ``[1, g, c]`` over the samples with a genotype,
mapped to A1 coding, plink2's checks (SAMPLE_CT<=PREDICTOR_CT, CONST_OMITTED_ALLELE,
CORR_TOO_HIGH, VIF_INFINITE, VIF_TOO_HIGH), then batched inverses; ``s² = (yᵀy − Xᵀy·β)/df``,
``df = OBS_CT − predictors``, ``P`` from ``t.logsf`` in log space.

References
----------
plink2 2.00a3.5 ``GlmLinearThread`` / ``GlmLinearBatchThread`` (``plink2_glm_linear.cc``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse
from scipy import special, stats

from fedstat.data.genotypes import DOSAGES
from fedstat.stats.base import Cohort, RoundInput, SumArray, cohort_level, per_variant
from fedstat.stats.glm_common import (
    ERR_INVALID,
    ERR_NONE,
    ERR_RANK,
    UNSTABLE_SCALE,
    Design,
    Fit,
    JobView,
    PhenoSpec,
    category_groups,
    corr_vif_check,
    covariate_check,
    decode_specs,
    flip_matrix,
    pair_products,
    pre_checks,
    round_design,
    safe_inv,
    scale_vector,
    sex_groups,
    specs_of,
    unstable_scale,
    valid_parameters,
)

__all__ = ["LinearSums", "finish_linear"]

_LN2 = float(np.log(2.0))
_CHUNK = 256  # variant rows per float64 step (a few MB: stays in cache, big enough for BLAS)


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


class LinearSums:
    """Site side of ``glm_linear`` (every quantitative phenotype of the job in one round).

    Stateless: each phenotype's design and the arrays derived from it are built once per round
    into the round's ``inp.local`` (keys ``lin{k}.*``), which only this site's run of the round sees.
    """

    def genotypes(self, params: Mapping[str, str]) -> str:
        """Dosages where the site's file has them (int8 hard calls otherwise), as plink2's ``--glm``."""
        return DOSAGES

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        out: dict[str, SumArray] = {}
        for k, spec in enumerate(specs_of(params)):
            q = 1 + len(spec.covars)  # design c = [1, covariates]
            out |= cohort_level([f"lin{k}.xtx"], q, q) | cohort_level([f"lin{k}.xty"], q)
            out |= cohort_level([f"lin{k}.yty"], 1) | cohort_level([f"lin{k}.n"], 1, integer=True)
            out |= per_variant([f"lin{k}.gc"], q) | per_variant([f"lin{k}.gy", f"lin{k}.gg"])
            out |= per_variant([f"lin{k}.mz"], q * (q + 1) // 2 + q + 1) | per_variant([f"lin{k}.mct"], integer=True)
        return out

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k, spec in enumerate(decode_specs(inp)):
            d = round_design(cohort, spec, inp, f"lin{k}")
            out[f"lin{k}.xtx"] = d.c.T @ d.c  # Σ c cᵀ, (Q, Q)
            out[f"lin{k}.xty"] = d.c.T @ d.y  # Σ c y, (Q,)
            out[f"lin{k}.yty"] = np.array([d.y @ d.y])
            out[f"lin{k}.n"] = np.array([d.idx.size], dtype=np.int64)
        return out

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """Each phenotype's regression cohort (phenotype and covariates present), and its members of
        each category of a categorical covariate."""
        out: dict[str, np.ndarray] = {}
        for k, spec in enumerate(decode_specs(inp)):
            mask = _mask(cohort.n, round_design(cohort, spec, inp, f"lin{k}").idx)
            # keyed by position: two specs of one name must not hide a group (checks.check_round refuses them too)
            out[f"{k}:{spec.name}"] = mask
            out |= category_groups(cohort, mask, f"{k}:{spec.name}")
            out |= sex_groups(cohort, mask, f"{k}:{spec.name}", spec)
        return out

    @staticmethod
    def _z(d: Design, local: dict[str, np.ndarray], key: str) -> np.ndarray:
        """[shape: (m, Q(Q+1)/2 + Q + 1)] each regression sample's [c⊗c, c y, y²], once per round."""
        z = local.get(f"{key}.z")
        if z is None:
            z = np.column_stack([pair_products(d.c), d.c * d.y[:, None], d.y * d.y]) if d.idx.size else np.zeros((0, 0))
            local[f"{key}.z"] = z
        return z

    @staticmethod
    def _wide(d: Design, n: int, local: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over the whole cohort: [c, y] with zero rows for samples outside the regression, the
        regression indicator, and each cohort column's row in the design (-1 if excluded); once per round."""
        if f"{key}.wide" not in local:
            q = d.c.shape[1]
            wide = np.zeros((n, q + 1))
            wide[d.idx, :q] = d.c
            wide[d.idx, q] = d.y
            pos = np.full(n, -1, dtype=np.int64)
            pos[d.idx] = np.arange(d.idx.size)
            local[f"{key}.wide"], local[f"{key}.inreg"], local[f"{key}.pos"] = wide, pos >= 0, pos
        return local[f"{key}.wide"], local[f"{key}.inreg"], local[f"{key}.pos"]

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        block = np.asarray(block)
        b = block.shape[0]
        out: dict[str, np.ndarray] = {}
        # the (variant, sample) pairs with a missing call, looked for only in rows that have one
        with_missing = np.flatnonzero(block.min(axis=1, initial=0) < 0) if block.size else np.zeros(0, np.int64)
        if with_missing.size:
            rr, miss_c = np.nonzero(block[with_missing] < 0)
            miss_r = with_missing[rr]
        else:
            miss_r = miss_c = np.zeros(0, dtype=np.int64)
        for k, spec in enumerate(decode_specs(inp)):
            d = round_design(cohort, spec, inp, f"lin{k}")
            q = d.c.shape[1]
            n_z = q * (q + 1) // 2 + q + 1
            wide, inreg, pos = self._wide(d, cohort.n, inp.local, f"lin{k}")
            a = np.empty((b, q + 1))
            gg = np.empty(b)
            for lo in range(0, b, _CHUNK):  # cache-sized float64 steps; missing calls count as −9 here
                g = block[lo : lo + _CHUNK].astype(np.float64)
                a[lo : lo + _CHUNK] = g @ wide  # Σ g [c, y] over the regression
                gg[lo : lo + _CHUNK] = (g * g) @ inreg if not d.full else np.einsum("ij,ij->i", g, g)
            keep = inreg[miss_c]
            r, c = miss_r[keep], pos[miss_c[keep]]
            mct = np.bincount(r, minlength=b).astype(np.int64)
            if r.size:
                ind = scipy.sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(b, d.idx.size))
                mz = np.asarray(ind @ self._z(d, inp.local, f"lin{k}"))  # Σ_missing [c⊗c, c y, y²]
                m_cy = np.asarray(ind @ np.column_stack([d.c, d.y]))  # Σ_missing [c, y]
                a += 9.0 * m_cy  # undo the −9 codes: missing calls contribute 0
                gg -= 81.0 * mct
            else:
                mz = np.zeros((b, n_z))
            out[f"lin{k}.gc"] = a[:, :q]
            out[f"lin{k}.gy"] = a[:, q]
            out[f"lin{k}.gg"] = gg
            out[f"lin{k}.mz"] = mz
            out[f"lin{k}.mct"] = mct
        return out


def t_log_p(t_abs: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Natural log of the two-sided t-test P, accurate far below 1e-308.

    ``P = I_x(df/2, 1/2)`` with ``x = df / (df + t²)``; where scipy's ``logsf`` underflows, the
    hypergeometric series ``I_x(a, b) = x^a (1-x)^b / (a B(a, b)) Σ_k (a+b)_k / (a+1)_k x^k``
    is summed in log space.
    """
    t_abs, df = np.broadcast_arrays(np.asarray(t_abs, dtype=np.float64), np.asarray(df, dtype=np.float64))
    out = np.asarray(_LN2 + stats.t.logsf(t_abs, df), dtype=np.float64)
    bad = ~np.isfinite(out) & np.isfinite(t_abs)
    if bad.any():
        t, nu = t_abs[bad], df[bad]
        a, b = nu / 2.0, 0.5
        x = nu / (nu + t * t)
        term = np.ones_like(x)
        total = np.ones_like(x)
        for k in range(200):
            term = term * (a + b + k) / (a + 1.0 + k) * x
            total += term
            if np.all(term < 1e-17 * total):
                break
        out = out.copy()
        out[bad] = a * np.log(x) + b * np.log1p(-x) - np.log(a) - special.betaln(a, b) + np.log(total)
    return out


def _full_sym(packed: np.ndarray, q: int) -> np.ndarray:
    """(V, Q(Q+1)/2) upper-triangle sums -> (V, Q, Q)."""
    i, j = np.triu_indices(q)
    out = np.zeros((packed.shape[0], q, q))
    out[:, i, j] = packed
    out[:, j, i] = packed
    return out


def finish_linear(sums: Mapping[str, np.ndarray], *, specs: Sequence[PhenoSpec], job: JobView) -> list[Fit]:
    """Fits of the quantitative phenotypes ``specs`` (the round's, in order) from the ``glm_linear`` sums.

    Phenotypes that cannot be analysed are logged to ``job`` and left out.
    """
    results = []
    n_var = job.n_var
    for k, spec in enumerate(specs):
        q = len(spec.covars) + 1
        xtx = np.asarray(sums[f"lin{k}.xtx"], dtype=np.float64).reshape(q, q)
        xty = np.asarray(sums[f"lin{k}.xty"], dtype=np.float64).reshape(q)
        yty = float(np.asarray(sums[f"lin{k}.yty"]).reshape(-1)[0])
        n = float(np.asarray(sums[f"lin{k}.n"]).reshape(-1)[0])
        if n < 3 or yty - xty[0] ** 2 / n <= 1e-10 * yty:
            job.note(f"--glm: Skipping constant quantitative phenotype '{spec.name}'.")
            continue
        keep = job.drop_constant_in_mask(spec, xtx, n)
        if keep is None:
            continue
        ck = np.array([0] + [j + 1 for j in keep])
        covars = tuple(spec.covars[j] for j in keep)
        if unstable_scale(xtx[np.ix_(ck, ck)], n):
            job.skip(spec.name, UNSTABLE_SCALE)
            continue
        err_cov = covariate_check(xtx[np.ix_(ck, ck)], n)
        if err_cov:
            job.skip(spec.name, "the covariates fail the correlation / VIF check")
            continue
        p = len(ck) + 1
        if n <= p:
            job.skip(spec.name, "# samples <= # predictor columns")
            continue
        tests = job.tests_for(covars)
        gc = np.asarray(sums[f"lin{k}.gc"], dtype=np.float64).reshape(n_var, q)
        gy = np.asarray(sums[f"lin{k}.gy"], dtype=np.float64).reshape(n_var)
        gg = np.asarray(sums[f"lin{k}.gg"], dtype=np.float64).reshape(n_var)
        mz = np.asarray(sums[f"lin{k}.mz"], dtype=np.float64).reshape(n_var, -1)
        mct = np.asarray(sums[f"lin{k}.mct"]).reshape(n_var).astype(np.float64)
        n_q2 = q * (q + 1) // 2
        n_v = n - mct
        # Σ over samples with a genotype = Σ over the phenotype's samples - Σ over missing pairs
        xtx_v = xtx[None] - _full_sym(mz[:, :n_q2], q)
        xty_v = xty[None] - mz[:, n_q2 : n_q2 + q]
        yty_v = yty - mz[:, n_q2 + q]
        # predictors [1, g, c]: the site's c columns sit at 0, 2, 3, ...
        cpos = np.array([0, *range(2, q + 1)])
        m = np.zeros((n_var, q + 1, q + 1))
        m[:, cpos[:, None], cpos[None, :]] = xtx_v
        m[:, 1, cpos] = gc
        m[:, cpos, 1] = gc
        m[:, 1, 1] = gg
        bvec = np.zeros((n_var, q + 1))
        bvec[:, cpos] = xty_v
        bvec[:, 1] = gy
        pk = np.array([0, 1, *(int(c) + 1 for c in ck[1:])])
        m = m[:, pk][:, :, pk]
        bvec = bvec[:, pk]
        assert m.shape == (n_var, p, p)
        # to A1 coding (g -> 2 - g where A1 is REF): X'X -> T X'X T, X'y -> T X'y
        flip = job.a1_is_ref
        t = flip_matrix(p)
        m[flip] = t @ m[flip] @ t.T
        bvec[flip] = bvec[flip] @ t.T
        # haploid variants (chrY, MT) in plink2's units, the genotype halved: X'X -> D X'X D, X'y -> D X'y
        scale = getattr(job, "geno_scale", None)
        scale = np.ones(n_var) if scale is None else scale
        half = np.flatnonzero(scale != 1.0)
        if half.size:
            d = scale_vector(p, scale[half])
            m[half] *= d[:, :, None] * d[:, None, :]
            bvec[half] *= d
        sum_g, sum_gg = gc[:, 0], gg
        err = pre_checks(n_v, p, sum_g, sum_gg)
        todo = np.flatnonzero(err == ERR_NONE)
        err[todo] = corr_vif_check(m[todo], n_v[todo])
        todo = np.flatnonzero(err == ERR_NONE)
        inv = safe_inv(m[todo])
        beta = np.einsum("vij,vj->vi", inv, bvec[todo])  # β = (XᵀX)⁻¹ Xᵀy
        df = n_v[todo] - p
        sigma2 = (yty_v[todo] - np.einsum("vi,vi->v", bvec[todo], beta)) / df  # s² = RSS / df
        cov = inv * sigma2[:, None, None]
        bad = ~np.isfinite(inv).all(axis=(1, 2))
        err[todo[bad]] = ERR_RANK
        invalid = ~bad & ~valid_parameters(cov)
        err[todo[invalid]] = ERR_INVALID
        ok = ~(bad | invalid)
        good = todo[ok]
        se = np.sqrt(np.diagonal(cov[ok], axis1=1, axis2=2))
        rep = slice(1, 1 + len(tests))
        b_rep, se_rep = beta[ok][:, rep], se[:, rep]
        tstat = b_rep / se_rep
        out = {k: np.full((n_var, len(tests)), np.nan) for k in ("beta", "se", "stat", "log_p")}
        out["beta"][good] = b_rep
        out["se"][good] = se_rep
        out["stat"][good] = tstat
        out["log_p"][good] = t_log_p(np.abs(tstat), df[ok][:, None])
        a1_ct = np.where(flip, 2.0 * n_v - sum_g, sum_g)
        with np.errstate(invalid="ignore", divide="ignore"):
            a1_freq = a1_ct / (2.0 * n_v)
        if half.size:
            a1_ct[half] *= scale[half]  # plink2's A1 dosage on a haploid chromosome: half the diploid sum
        results.append(
            Fit(
                pheno=spec.name,
                is_binary=False,
                method="linear",
                covariates=covars,
                tests=tests,
                n_samples=int(n),
                n_cases=0,
                n_controls=0,
                obs_ct=np.rint(n_v).astype(np.int64),
                a1_freq=a1_freq,
                beta=out["beta"],
                se=out["se"],
                stat=out["stat"],
                log_p=out["log_p"],
                err=err,
                sep_allele=None,
                reported=err == ERR_NONE,
                unfinished=np.zeros(n_var, dtype=bool),
                firth=np.zeros(n_var, dtype=bool),
                a1_ct=a1_ct,
            )
        )
    return results
