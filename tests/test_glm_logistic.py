"""Federated logistic / Firth --glm: plink2 conformance, statsmodels, a Firth reference, splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstat.formats.results import write_result
from fedstat.stats.base import Cohort
from fedstat.stats.glm import GlmJob
from tests import glm_harness as h

RUNS = {
    "pooled": (frozenset({"hide-covar"}), h.COVARS, "logistic.hybrid"),
    "covar": (frozenset(), h.COVARS, "logistic.hybrid"),
    "firth": (frozenset({"firth", "hide-covar"}), h.COVARS, "firth"),
    "nofirth": (frozenset({"no-firth", "hide-covar"}), h.COVARS, "logistic"),
    "nocovar": (frozenset({"allow-no-covars"}), (), "logistic.hybrid"),
}
# plink2 2.00a3.5 fits in single precision: its Firth loop stops on float noise in the penalized
# log-likelihood. One fit hits the iteration cap only there (UNFINISHED), and on the flattest
# Firth likelihoods (rare variants, SE ~ 1-2) its estimate sits up to ~4e-4 SE from the optimum.
KNOWN_FLOAT_UNFINISHED = {"firth": 1}
FIRTH_BETA_TOL = 5e-4
FIRTH_LOG10P_TOL = {"firth": 2e-4}  # same rare-variant Firth fits; 1e-4 everywhere else


@pytest.mark.parametrize("run", sorted(RUNS))
def test_glm_logistic__matches_plink2_fixture(run, tmp_path):
    mods, covars, ext = RUNS[run]
    pooled = h.load_pooled()
    job = h.run_split(("CC",), covars, mods, pooled.site_of, 3)
    (path,) = write_result(job.result(pooled.variants), tmp_path / run)
    assert path.name == f"{run}.CC.glm.{ext}"
    c = h.compare(path, h.EXPECTED / path.name)
    assert c.key_mismatch == KNOWN_FLOAT_UNFINISHED.get(run, 0), c.mismatches[:3]
    assert c.max_log10p_dev <= FIRTH_LOG10P_TOL.get(run, 1e-4)
    assert c.max_beta_dev_se <= FIRTH_BETA_TOL
    res = job.results["CC"]
    plain = ~res.firth & (res.errcode == ".")
    assert plain.sum() > 0 or run == "firth"
    if run in ("pooled", "covar", "nocovar"):
        assert res.firth.sum() == 7  # the planted separating variant and six like it


def test_glm_logistic__non_firth_rows_within_1e4_se(tmp_path):
    pooled = h.load_pooled()
    job = h.run_split(("CC",), h.COVARS, frozenset({"hide-covar"}), pooled.site_of, 3)
    res = job.results["CC"]
    exp = (h.EXPECTED / "pooled.CC.glm.logistic.hybrid").read_text().splitlines()[1:]
    for v, line in enumerate(exp):
        f = line.split("\t")
        if f[-1] != "." or f[6] == "Y":
            continue
        assert abs(res.beta[v, 0] - np.log(float(f[9]))) <= 1e-4 * float(f[10]) + 1e-5


def _data(seed: int, n: int = 400, v: int = 25):
    rng = np.random.default_rng(seed)
    geno = rng.binomial(2, rng.uniform(0.05, 0.5, size=(v, 1)), size=(v, n)).astype(np.int8)
    geno[rng.random((v, n)) < 0.04] = -9
    age = rng.normal(50, 10, n)
    pc = rng.normal(size=n)
    g0 = np.where(geno[2] < 0, 0, geno[2])
    eta = -0.5 + 0.5 * g0 + 0.02 * (age - 50) + 0.3 * pc
    cc = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float) + 1.0
    cc[rng.random(n) < 0.03] = 0.0  # plink2: 0 = missing
    # a rare variant carried by cases only -> separation -> Firth
    geno[5] = 0
    cases = np.flatnonzero(cc == 2.0)
    geno[5, cases[:4]] = 1
    return geno, {"CC": cc, "AGE": age, "PC": pc}


def _run(geno, cols, site_of, n_sites, mods):
    covs = tuple(c for c in cols if c != "CC")
    cohorts = []
    for s in range(n_sites):
        idx = np.flatnonzero(site_of == s)
        cohorts.append((Cohort(n=idx.size, columns={k: x[idx] for k, x in cols.items()}), idx))
    return h.run_job(GlmJob(("CC",), covs, frozenset(mods)), geno, cohorts)


def test_glm_logistic__matches_statsmodels_logit():
    import statsmodels.api as sm

    geno, cols = _data(11)
    n = geno.shape[1]
    job, rounds = _run(geno, cols, np.arange(n) % 3, 3, {"no-firth"})
    res = job.results["CC"]
    assert res.errcode[5].startswith("SEPARATION")
    assert rounds < 15
    keep = (cols["CC"] == 1) | (cols["CC"] == 2)
    for v in (1, 2, 3, 7):
        ok = keep & (geno[v] >= 0)
        g = geno[v, ok].astype(float)
        if res.a1_is_ref[v]:
            g = 2 - g
        x = sm.add_constant(np.column_stack([g, cols["AGE"][ok], cols["PC"][ok]]))
        fit = sm.Logit(cols["CC"][ok] - 1, x).fit(disp=0, tol=1e-12)
        assert res.obs_ct[v] == ok.sum()
        assert abs(res.beta[v, 0] - fit.params[1]) <= 1e-6 * fit.bse[1]
        assert res.se[v, 0] == pytest.approx(fit.bse[1], rel=1e-5)


def _firth_reference(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook Firth (Heinze & Schemper 2002) by full Newton on the modified score, pooled data."""
    beta = np.zeros(x.shape[1])
    for _ in range(200):
        p = 1 / (1 + np.exp(-x @ beta))
        w = p * (1 - p)
        info = (x * w[:, None]).T @ x
        inv = np.linalg.inv(info)
        hat = w * np.einsum("ij,jk,ik->i", x, inv, x)
        u = x.T @ (y - p + hat * (0.5 - p))
        step = inv @ u
        beta += step
        if np.abs(step).max() < 1e-12:
            break
    p = 1 / (1 + np.exp(-x @ beta))
    info = (x * (p * (1 - p))[:, None]).T @ x
    return beta, np.sqrt(np.diag(np.linalg.inv(info)))


def test_glm_logistic__firth_matches_reference():
    geno, cols = _data(12)
    n = geno.shape[1]
    job, _ = _run(geno, cols, np.arange(n) % 2, 2, {"firth"})
    res = job.results["CC"]
    keep = (cols["CC"] == 1) | (cols["CC"] == 2)
    for v in (2, 5):
        ok = keep & (geno[v] >= 0)
        g = geno[v, ok].astype(float)
        if res.a1_is_ref[v]:
            g = 2 - g
        x = np.column_stack([np.ones(ok.sum()), g, cols["AGE"][ok], cols["PC"][ok]])
        beta, se = _firth_reference(x, cols["CC"][ok] - 1)
        # plink2's loop stops at max|Δβ| <= 1e-4 (linear convergence): compare at that scale
        assert abs(res.beta[v, 0] - beta[1]) <= 2e-3 * se[1]
        assert res.se[v, 0] == pytest.approx(se[1], rel=2e-3)


def test_glm_logistic__fallback_uses_firth_for_separation():
    geno, cols = _data(13)
    n = geno.shape[1]
    job, _ = _run(geno, cols, np.zeros(n, dtype=int), 1, set())
    res = job.results["CC"]
    assert res.firth[5] and res.errcode[5] == "."
    assert res.beta[5, 0] > 0 and np.isfinite(res.se[5, 0])
    assert not res.firth[2]
    assert res.n_cases + res.n_controls == res.n_samples


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_sites=st.integers(1, 5))
def test_glm_logistic__any_split_equals_one_site(seed, n_sites):
    geno, cols = _data(21, n=150, v=8)
    n = geno.shape[1]
    site_of = np.random.default_rng(seed).integers(0, n_sites, size=n)
    one = _run(geno, cols, np.zeros(n, dtype=int), 1, set())[0].results["CC"]
    many = _run(geno, cols, site_of, n_sites + 1, set())[0].results["CC"]  # plus an empty site
    assert (one.errcode == many.errcode).all()
    assert (one.firth == many.firth).all()
    assert (one.obs_ct == many.obs_ct).all()
    np.testing.assert_allclose(many.beta, one.beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(many.se, one.se, rtol=1e-7)
