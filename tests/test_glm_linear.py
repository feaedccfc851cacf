"""Federated linear --glm: plink2 conformance, statsmodels agreement, any split = pooled."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstat.formats.numbers import lntoa_g
from fedstat.formats.results import write_result
from fedstat.stats.base import Cohort
from fedstat.stats.glm import GlmJob
from fedstat.stats.glm_linear import t_log_p
from tests import glm_harness as h

RUNS = {
    "pooled": (frozenset({"hide-covar"}), h.COVARS),
    "covar": (frozenset(), h.COVARS),
    "nocovar": (frozenset({"allow-no-covars"}), ()),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_glm_linear__matches_plink2_fixture(run, tmp_path):
    mods, covars = RUNS[run]
    pooled = h.load_pooled()
    job = h.run_split(("QT",), covars, mods, pooled.site_of, 3)
    (path,) = write_result(job.result(pooled.variants), tmp_path / run)
    assert path.name == f"{run}.QT.glm.linear"
    c = h.compare(path, h.EXPECTED / path.name)
    assert c.key_mismatch == 0, c.mismatches[:3]
    assert c.max_beta_dev_se <= 1e-4
    assert c.max_log10p_dev <= 1e-4
    assert c.identical >= 0.99 * c.rows
    if covars:
        assert job.log_lines() == ["Warning: Excluding constant covariate 'BATCH' from --glm."]


def _random_data(seed: int, n: int = 300, v: int = 40, miss: float = 0.05):
    rng = np.random.default_rng(seed)
    geno = rng.binomial(2, rng.uniform(0.05, 0.6, size=(v, 1)), size=(v, n)).astype(np.int8)
    geno[rng.random((v, n)) < miss] = -9
    geno[0] = 0  # monomorphic -> CONST_OMITTED_ALLELE
    cov = np.column_stack([rng.normal(50, 10, n), rng.integers(1, 3, n).astype(float), rng.normal(size=n)])
    g0 = np.where(geno[3] < 0, 0, geno[3])
    qt = 0.3 * g0 + 0.02 * cov[:, 0] + rng.normal(size=n)
    qt[rng.random(n) < 0.03] = np.nan
    cov[rng.random(n) < 0.02, 2] = np.nan
    cols = {"Y": qt, "AGE": cov[:, 0], "SEX": cov[:, 1], "PC": cov[:, 2]}
    return geno, cols


def _run(geno, cols, site_of, n_sites, mods=frozenset({"hide-covar"}), pheno=("Y",)):
    covs = tuple(c for c in cols if c not in pheno)
    cohorts = []
    for s in range(n_sites):
        idx = np.flatnonzero(site_of == s)
        cohorts.append((Cohort(n=idx.size, columns={k: v[idx] for k, v in cols.items()}), idx))
    job = GlmJob(pheno, covs, mods)
    return h.run_job(job, geno, cohorts)[0]


def test_glm_linear__matches_statsmodels():
    import statsmodels.api as sm

    geno, cols = _random_data(1)
    n = geno.shape[1]
    site_of = np.arange(n) % 2
    res = _run(geno, cols, site_of, 2, mods=frozenset()).results["Y"]
    assert res.errcode[0] == "CONST_OMITTED_ALLELE"
    base = ~np.isnan(cols["Y"]) & ~np.isnan(cols["PC"])
    for v in range(1, geno.shape[0]):
        ok = base & (geno[v] >= 0)
        g = geno[v, ok].astype(float)
        if res.a1_is_ref[v]:
            g = 2 - g
        x = sm.add_constant(np.column_stack([g, cols["AGE"][ok], cols["SEX"][ok] - 1, cols["PC"][ok]]))
        fit = sm.OLS(cols["Y"][ok], x).fit()
        assert res.obs_ct[v] == ok.sum()
        np.testing.assert_allclose(res.beta[v], fit.params[1:], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res.se[v], fit.bse[1:], rtol=1e-9)
        np.testing.assert_allclose(np.exp(res.log_p[v]), fit.pvalues[1:], rtol=1e-7)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_sites=st.integers(1, 5))
def test_glm_linear__any_split_equals_one_site(seed, n_sites):
    geno, cols = _random_data(7, n=120, v=15)
    rng = np.random.default_rng(seed)
    site_of = rng.integers(0, n_sites, size=geno.shape[1])
    one = _run(geno, cols, np.zeros(geno.shape[1], dtype=int), 1).results["Y"]
    many = _run(geno, cols, site_of, n_sites + 1).results["Y"]  # site n_sites is empty
    assert (one.errcode == many.errcode).all()
    assert (one.obs_ct == many.obs_ct).all()
    np.testing.assert_allclose(many.beta, one.beta, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(many.se, one.se, rtol=1e-9)
    np.testing.assert_allclose(many.log_p, one.log_p, rtol=1e-9, atol=1e-12)


def test_glm_linear__tiny_p_printed_like_plink2():
    # plink2 2.00a3.5 on a simulated QT (n=3000, no covariates): T_STAT 715.971 -> P 1.45514e-3353
    lp = float(t_log_p(np.array([715.971]), np.array([2998.0]))[0])
    mant, exp = lntoa_g(lp).split("e")
    assert exp == "-3353" and abs(float(mant) - 1.45514) < 0.01
    assert lntoa_g(math.log(0.5)) == "0.5"
    assert lntoa_g(math.log(1e-5)) == "1e-05"
    assert lntoa_g(0.0) == "1"


def test_glm_linear__constant_phenotype_is_skipped():
    geno, cols = _random_data(3, n=60, v=5)
    cols["Y"] = np.full(60, 3.5)
    job = _run(geno, cols, np.zeros(60, dtype=int), 1)
    assert "Y" not in job.results
    assert any("constant quantitative phenotype 'Y'" in line for line in job.log_lines())


def test_glm_linear__a1_is_non_major_allele_and_ties_keep_ref_major():
    """plink2's ComputeMajAlleles: major = ALT iff REF frequency < 0.5, so a tie gives A1 = ALT."""
    geno, cols = _random_data(3, n=200, v=6, miss=0.0)
    geno[1] = np.tile([0, 2], 100)  # ALT frequency exactly 0.5
    geno[2] = np.tile([0, 2, 1, 1, 0], 40)  # ALT frequency 0.4: A1 = ALT
    geno[4] = np.tile([2, 2, 1, 1, 0], 40)  # ALT frequency 0.6: A1 = REF
    res = _run(geno, cols, np.arange(200) % 3, 3).results["Y"]
    assert res.a1_is_ref[1:5].tolist() == [False, False, res.a1_is_ref[3], True]
