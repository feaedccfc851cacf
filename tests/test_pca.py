"""QC → PCA → GWAS as one job, against plink2 on the pooled data (in-process sites; no network).

tests/data/pca (scripts/make_pca_fixture.py): three sites of distinct ancestry (F = 0.1) whose
phenotypes are confounded by ancestry; plink2 2.00a3.5 ``--maf 0.01 --geno 0.05 --hwe 1e-6 --pca 10
allele-wts``, and ``--glm`` with the pooled PCs (and without) under the same filters.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedstat.errors import InputError
from fedstat.jobs import JobSpec
from fedstat.stats import pca
from tests.conftest import FIXTURE
from tests.glm_harness import compare
from tests.pipeline_harness import load, run_pipeline

PCA = Path(__file__).parent / "data" / "pca"
EXPECTED = PCA / "expected"
QC = {"maf": "0.01", "geno": "0.05", "hwe": "1e-6"}


def _pipeline_spec(covars: str, **options: str) -> JobSpec:
    return JobSpec(
        analyses=("pca", "glm") if "pca" in options else ("glm",),
        pheno_names=("QT", "CC"),
        covar_names=tuple(covars.split(",")),
        privacy="none",
        options={**QC, **options},
    )


@pytest.fixture(scope="module")
def data():
    return load(PCA)


@pytest.fixture(scope="module")
def pipeline(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pca") / "fed"
    run = run_pipeline(
        _pipeline_spec("AGE,SEX,PC1-PC10", pca="10", covar_variance_standardize="1"), *data, out_prefix=out
    )
    return run, out


def _lambda(run, pheno: str) -> float:
    line = next(x for x in run.analysis.log_lines() if x.startswith(f"λGC {pheno} "))
    return float(line.rsplit(": ", 1)[1])


def test_pca__eigenvalues_and_weights_equal_plink2(pipeline):
    run, out = pipeline
    ours = np.loadtxt(f"{out}.eigenval")
    theirs = np.loadtxt(EXPECTED / "pipeline.eigenval")
    assert ours.shape == theirs.shape == (10,)
    assert np.max(np.abs(ours / theirs - 1)) <= 1e-3
    assert np.array_equal(ours, theirs)  # in fact equal to plink2's printed digits
    a = Path(f"{out}.eigenvec.allele").read_text().splitlines()
    b = (EXPECTED / "pipeline.eigenvec.allele").read_text().splitlines()
    assert a[0] == b[0] and len(a) == len(b) == 1 + 2 * 1823
    assert [r.split("\t")[:5] for r in a] == [r.split("\t")[:5] for r in b]  # same variants, alleles, order
    wa = np.array([r.split("\t")[5:] for r in a[1:]], dtype=float)
    wb = np.array([r.split("\t")[5:] for r in b[1:]], dtype=float)
    for k in range(10):
        r = np.corrcoef(wa[:, k], wb[:, k])[0, 1]
        assert abs(r) > 0.999, (k, r)  # up to sign
        assert np.allclose(np.abs(wa[:, k]), np.abs(wb[:, k]), atol=2e-5 * np.abs(wb[:, k]).max())
    log = "\n".join(run.analysis.log_lines())
    assert re.search(r"--pca 10: 1823 variants; subspace iteration converged after \d+ rounds", log)
    assert "pooled Σ score² per PC 1.000000..1.000000" in log


def test_pipeline__qc_removes_what_plink2_removes(pipeline):
    run, _ = pipeline
    lines = run.analysis.log_lines()
    assert "--geno: 0 variants removed due to missing genotype data" in lines
    assert "--hwe: 89 variants removed due to Hardy-Weinberg exact test" in lines  # plink2's log: 89, 88
    assert "--maf: 88 variants removed due to allele frequency threshold" in lines
    assert "1823 variants remaining after main filters" in lines
    assert run.rounds[:2] == ["qc_counts", "allele_counts"] and run.rounds.count("pca_scores") == 1


@pytest.mark.parametrize(
    ("ours", "theirs"), [("QT.glm.linear", "QT.glm.linear"), ("CC.glm.logistic.hybrid", "CC.glm.logistic.hybrid")]
)
def test_gwas_with_federated_pcs__matches_plink2_with_pooled_pcs(pipeline, ours, theirs):
    _, out = pipeline
    c = compare(Path(f"{out}.{ours}"), EXPECTED / f"pcs.{theirs}")
    assert c.rows == 1823 and c.key_mismatch == 0, c.mismatches[:3]
    assert c.max_log10p_dev <= 1e-3
    assert c.max_beta_dev_se <= 1e-3


def test_gwas__pcs_lower_the_genomic_inflation(data, pipeline, tmp_path):
    run, _ = pipeline
    plain = run_pipeline(_pipeline_spec("AGE,SEX"), *data, out_prefix=tmp_path / "plain")
    for pheno, ext in (("QT", "glm.linear"), ("CC", "glm.logistic.hybrid")):
        c = compare(tmp_path / f"plain.{pheno}.{ext}", EXPECTED / f"nopcs.{pheno}.{ext}")
        assert c.key_mismatch == 0 and c.max_log10p_dev <= 1e-3
        corrected, uncorrected = _lambda(run, pheno), _lambda(plain, pheno)
        assert corrected < uncorrected, (pheno, corrected, uncorrected)
    assert _lambda(plain, "QT") > 1.3  # the confounding is real: uncorrected QT is inflated


def test_pc_covariates__sites_hold_scores_that_equal_plink2_eigenvec(pipeline):
    run, _ = pipeline
    rows = [r.split("\t") for r in (EXPECTED / "pipeline.eigenvec").read_text().splitlines()[1:]]
    theirs = {r[1]: np.array(r[2:], dtype=float) for r in rows}
    iids = sorted(theirs)
    site_of = {iid: iid.split("_")[0] for iid in iids}
    for site in run.sites:
        mine = [iid for iid in iids if site_of[iid] == site.name]
        assert site.cohort.n == len(mine)
        for k in range(10):
            ours = site.cohort.columns[f"PC{k + 1}"]
            ref = np.array([theirs[i][k] for i in mine])
            sign = np.sign(np.dot(ours, ref))
            assert np.allclose(sign * ours, ref, atol=2e-6), (site.name, k)


def test_pca__missing_calls_use_the_separable_correction_documented_error(tmp_path):
    """The consortium fixture has missing calls (EUR 2 %, two variants with none): plink2 divides each
    relationship entry by the pair's jointly observed variants, which federation cannot form. The
    eigenvalues computed here by plink2's own formula differ from fedstat's by about 1 %."""
    geno, variants, table = load(FIXTURE)
    spec = JobSpec(analyses=("pca",), privacy="none", options={"pca": "5"})
    run_pipeline(spec, geno, variants, table, out_prefix=tmp_path / "m")
    ours = np.loadtxt(tmp_path / "m.eigenval")
    # plink2's relationship matrix, exactly as plink2_matrix_calc.cc builds it
    g = geno.astype(float)
    obs = geno >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(obs, g, 0).sum(1) / (2 * obs.sum(1))
        x = (g - 2 * p[:, None]) / np.sqrt(2 * p * (1 - p))[:, None]
    x = np.where(obs & np.isfinite(x), x, 0.0)
    miss = (~obs).astype(float)
    m = geno.shape[0]
    pairs = m - miss.sum(0)[:, None] - miss.sum(0)[None, :] + miss.T @ miss
    np.fill_diagonal(pairs, m - miss.sum(0))
    plink2_formula = np.linalg.eigvalsh(x.T @ x / pairs)[::-1][:5]
    assert np.allclose(plink2_formula[:2], [18.124, 14.7515], rtol=5e-6)  # what plink2 prints on this fixture
    rel = np.abs(ours / plink2_formula - 1)
    assert rel.max() < 0.02, rel  # measured: 0.012
    assert rel.max() > 1e-4  # and not exact: the difference is real and documented


def test_mind__each_site_drops_its_own_participants_as_plink2_does(tmp_path):
    geno, variants, table = load(FIXTURE)
    spec = JobSpec(analyses=("freq",), privacy="none", options={"mind": "0.021", "geno": "0.01"})
    run = run_pipeline(spec, geno, variants, table, out_prefix=tmp_path / "m")
    removed = dict(line.split("\t") for line in (FIXTURE / "expected" / "qc-mind.removed").read_text().splitlines())
    lines = run.analysis.log_lines()
    mind = f"--mind 0.021: {removed['mind']} participants removed due to missing genotype data"
    assert any(line.startswith(mind) for line in lines)  # in process: no site gate coarsens the count
    assert f"--geno: {removed['geno']} variants removed due to missing genotype data" in lines
    kept = [r.split("\t")[1] for r in (tmp_path / "m.afreq").read_text().splitlines()[1:]]
    assert kept == (FIXTURE / "expected" / "qc-mind.snplist").read_text().split()
    sizes = {s.name: s.cohort.n for s in run.sites}
    assert sum(sizes.values()) == 480 - int(removed["mind"])
    assert sizes["AFR"] == 160 and sizes["EAS"] == 140  # only EUR has missing calls to drop for


@pytest.mark.parametrize(
    ("options", "analyses", "covars", "message"),
    [
        ({"pca": "0"}, ("pca",), (), "--pca takes a number of components from 1"),
        ({"pca": "x"}, ("pca",), (), "--pca takes a number of components"),
        ({}, ("pca",), (), "--pca needs the number of components"),
        ({"maf": "2"}, ("freq",), (), "--maf takes a number between 0 and 1"),
        ({"hwe": "1e-6 sideways"}, ("freq",), (), "unknown --hwe modifier"),
        ({"hwe": "1e-6 controls"}, ("freq",), (), "controls of one case/control phenotype"),
        ({"mind": "-0.1"}, ("freq",), (), "--mind takes a number between 0 and 1"),
    ],
)
def test_spec__bad_qc_and_pca_options_are_refused_by_name(options, analyses, covars, message):
    with pytest.raises(InputError, match=re.escape(message)):
        JobSpec(analyses=analyses, covar_names=covars, options=options).validated()


def test_spec__qc_and_pca_are_refused_under_dp():
    spec = JobSpec(analyses=("freq",), privacy="dp", options={"maf": "0.01", "dp_epsilon": "1", "dp_delta": "1e-6"})
    with pytest.raises(InputError, match="cannot run under --privacy dp"):
        spec.validated()


def test_pca__too_few_variants_for_k_is_a_clear_error(data):
    geno, variants, table = data
    spec = JobSpec(analyses=("pca",), privacy="none", options={"pca": "10"})
    with pytest.raises(InputError, match=r"--pca 10: only 6 components can be computed from 6 polymorphic"):
        run_pipeline(spec, geno[:6], variants.take(np.arange(6)), table)


def test_pca__the_start_subspace_is_fixed_so_a_resumed_job_replays_identically():
    a, b = pca.PcaAnalysis(3), pca.PcaAnalysis(3)
    counts = {"hom_ref": np.array([5, 3, 2, 4]), "het": np.array([3, 4, 4, 3]), "hom_alt": np.array([2, 3, 4, 3])}
    counts["missing"] = np.zeros(4, dtype=np.int64)
    a.next_round(None), b.next_round(None)
    pa, pb = a.next_round(counts), b.next_round(counts)
    assert np.array_equal(pa.arrays["v"], pb.arrays["v"])


def test_hwe_controls__tests_only_the_controls_as_plink2_on_the_controls_does(data, tmp_path):
    spec = JobSpec(analyses=("freq",), pheno_names=("CC",), privacy="none", options={"hwe": "1e-6 controls"})
    run = run_pipeline(spec, *data, out_prefix=tmp_path / "c")
    kept = [r.split("\t")[1] for r in (tmp_path / "c.afreq").read_text().splitlines()[1:]]
    expected = (EXPECTED / "hwe-controls.snplist").read_text().split()
    assert kept == expected and len(kept) == 1965
    assert (
        "--hwe: 35 variants removed due to Hardy-Weinberg exact test (in the controls of CC)"
        in run.analysis.log_lines()
    )
    # over every participant, the Wahlund effect of three ancestries removes far more
    everyone = run_pipeline(replace(spec, options={"hwe": "1e-6"}), *data, out_prefix=tmp_path / "a")
    assert "--hwe: 89 variants removed due to Hardy-Weinberg exact test" in everyone.analysis.log_lines()
