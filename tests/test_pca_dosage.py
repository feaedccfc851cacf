"""``--pca`` on imputed dosages equals plink2 2.00a3.5 on the pooled data: in-process over the sites'
real files (a mixed consortium: AFR and EUR dosage ``.pgen``, EAS a hard-call ``.bed``) and through
the real daemons.

tests/data/pca_dosage was made by scripts/make_pca_dosage_fixture.py (three ancestries, soft and
integral dosages, hard calls missing where the dosage is far from an integer, REF/ALT exchanged at
EUR, no dosage missing: plink2's pairwise missingness correction does not apply, docs/pca.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from coordinator.harmonizer import select_variants
from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.computations import COMPUTATIONS
from fedstat.data.dataset import Dataset, open_dataset
from fedstat.data.genotypes import DOSAGES, HARDCALLS
from fedstat.data.variants import harmonize
from fedstat.errors import ProtocolError
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec, check_round, dosage_refusal, plan_job
from fedstat.report.gwas import JobContext
from fedstat.stats import allele
from fedstat.stats.base import Output, RoundInput, SiteUpdate, genotype_values, run_local, updated_cohort
from site_agent.job import build_cohort
from tests.pipeline_harness import load

DATA = Path(__file__).parent / "data" / "pca_dosage"
EXPECTED = DATA / "expected"
SITES = ("AFR", "EAS", "EUR")
N_VARIANTS = 200


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    cache = tmp_path_factory.mktemp("cache")
    return {s: open_dataset(s, DATA / s, cache_dir=cache) for s in SITES}


def _run(spec: JobSpec, datasets: dict[str, Dataset], out: Path, *, force: str = "") -> tuple[list[str], dict]:
    """The job over the sites in-process, as the site agents run it (their cohorts, the harmonized
    rows and flips, each kernel's genotype values; ``force``: read every block as that instead).
    Returns the rounds and each site's final cohort."""
    spec = spec.validated()
    h, _ = select_variants(harmonize({s: d.genotypes.variants for s, d in datasets.items()}), spec)
    cohorts = {s: build_cohort(spec, d, np.arange(d.genotypes.n_samples)) for s, d in datasets.items()}
    ctx = JobContext(spec=spec.to_json(), sites=tuple((s, c.n) for s, c in cohorts.items()))
    analysis = plan_job(spec, ctx, h.variants)
    rounds: list[str] = []
    sums = None
    while (plan := analysis.next_round(sums)) is not None:
        check_round(spec, plan.computation, dict(plan.params))  # what every site checks
        rounds.append(plan.computation)
        kernel = COMPUTATIONS[plan.computation].kernel
        vidx = np.arange(len(h.variants)) if plan.variants is None else np.asarray(plan.variants)
        total: dict[str, np.ndarray] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for name, d in datasets.items():
            inp = RoundInput(params=dict(plan.params), arrays=dict(plan.arrays), variants=vidx)
            values = force or genotype_values(kernel, inp.params)
            rows, flip = h.plans[name].local_index[vidx], h.plans[name].flip[vidx]

            def blocks(d: Dataset = d, rows=rows, flip=flip, values=values):  # noqa: ANN001
                return d.genotypes.read_blocks(rows, flip=flip, block_size=37, values=values)

            for o in run_local(kernel, cohorts[name], inp, blocks):
                if isinstance(o, SiteUpdate):
                    cohorts[name] = updated_cohort(cohorts[name], o)
                    continue
                assert isinstance(o, Output)
                arr = total.setdefault(o.name, np.zeros(o.total, dtype=o.values.dtype))
                arr[o.offset : o.offset + o.values.size] += o.values
                shapes[o.name] = o.shape
        sums = {k: v.reshape(shapes[k]) for k, v in total.items()}
    write_result(analysis.result(h.variants), out)
    return rounds, cohorts


def _weights(path: Path) -> tuple[list[list[str]], np.ndarray]:
    rows = [r.split("\t") for r in path.read_text().splitlines()]
    return [r[:5] for r in rows], np.array([r[5:] for r in rows[1:]], dtype=float)


def _signs(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """+1 / -1 per column: eigenvectors are defined up to sign."""
    return np.sign(np.sum(ours * theirs, axis=0))


def _assert_equals_plink2(out: Path) -> None:
    assert Path(f"{out}.eigenval").read_bytes() == (EXPECTED / "dosage.eigenval").read_bytes()
    text = Path(f"{out}.eigenvec.allele").read_text().splitlines()
    keys, ours = _weights(Path(f"{out}.eigenvec.allele"))
    their_keys, theirs = _weights(EXPECTED / "dosage.eigenvec.allele")
    assert keys == their_keys and ours.shape == theirs.shape == (2 * N_VARIANTS, 5)
    assert text[1:3] == ["1\trs1\tA\tG\tA\t0\t0\t0\t0\t0", "1\trs1\tA\tG\tG\t0\t0\t0\t0\t0"]  # monomorphic
    ours = ours * _signs(ours, theirs)
    # PC1 and PC2 (the ancestries, far above the rest) to plink2's printed digits; PC3-PC5 (from the
    # noise bulk, eigenvalues 2-3 % apart) to the subspace iteration's accuracy, as tests/test_pca.py
    assert np.array_equal(ours[:, :2], theirs[:, :2])
    assert np.allclose(ours, theirs, rtol=0, atol=2e-5 * np.abs(theirs).max())


def test_pca__mixed_dosage_and_hard_call_sites_equal_plink2_on_pooled_dosages(datasets, tmp_path: Path):
    spec = JobSpec(analyses=("freq", "pca"), out_name="p", privacy="none", options={"pca": "5"})
    rounds, _ = _run(spec, datasets, tmp_path / "p")
    _assert_equals_plink2(tmp_path / "p")
    assert (tmp_path / "p.afreq").read_bytes() == (EXPECTED / "dosage.afreq").read_bytes()
    assert rounds[:2] == ["allele_counts", "allele_counts"] and set(rounds[2:]) == {"pca_multiply"}


def test_pca_scores__sites_hold_plink2_eigenvec_from_their_dosages(datasets, tmp_path: Path):
    pcs = tuple(f"PC{i}" for i in range(1, 6))
    spec = JobSpec(analyses=("pca", "glm"), pheno_names=("QT",), covar_names=pcs, privacy="none", options={"pca": "5"})
    rounds, cohorts = _run(spec, datasets, tmp_path / "s")
    assert rounds.count("pca_scores") == 1
    _assert_equals_plink2(tmp_path / "s")
    rows = [r.split("\t") for r in (EXPECTED / "dosage.eigenvec").read_text().splitlines()[1:]]
    theirs = {r[1]: np.array(r[2:], dtype=float) for r in rows}
    for site, d in datasets.items():
        ref = np.array([theirs[iid] for iid in d.genotypes.samples.iid])
        ours = np.column_stack([cohorts[site].columns[pc] for pc in pcs])
        assert ours.shape == ref.shape == (len(d.genotypes.samples), 5)
        ours = ours * _signs(ours, ref)  # every site's scores with one sign per PC
        assert np.allclose(ours, ref, atol=2e-6), (site, np.abs(ours - ref).max())


def test_pca__hard_calls_of_the_same_files_would_differ_from_plink2(datasets, tmp_path: Path):
    # the point of reading dosages: the kernels forced onto the hard calls give other components
    # (plink2 on the pooled hard calls differs as well: expected/hardcalls.eigenval)
    spec = JobSpec(analyses=("pca",), out_name="h", privacy="none", options={"pca": "5"})
    _run(spec, datasets, tmp_path / "h", force=HARDCALLS)
    ours, theirs = np.loadtxt(tmp_path / "h.eigenval"), np.loadtxt(EXPECTED / "dosage.eigenval")
    assert np.max(np.abs(ours / theirs - 1)) > 0.05
    assert not np.allclose(np.loadtxt(EXPECTED / "hardcalls.eigenval"), theirs, rtol=0.05)


def test_pca_kernels__read_dosages_and_the_counts_round_sends_dosage_sums():
    for name in ("pca_multiply", "pca_scores"):
        assert genotype_values(COMPUTATIONS[name].kernel, {}) == DOSAGES
    spec = JobSpec(analyses=("pca",), privacy="none", options={"pca": "3"}).validated()
    plan = plan_job(spec).next_round(None)
    assert plan is not None and plan.computation == "allele_counts" and dict(plan.params) == {"dosage": "1"}
    check_round(spec, "allele_counts", {"dosage": "1"})
    check_round(spec, "allele_counts", {})
    hardy = JobSpec(analyses=("hardy",), privacy="none").validated()
    with pytest.raises(ProtocolError, match=r"unexpected parameters \['dosage'\]"):
        check_round(hardy, "allele_counts", {"dosage": "1"})
    assert dosage_refusal(spec) is None


def test_pca_frequencies__hard_call_data_give_the_same_bytes_with_dosage_sums():
    # a site without dosages sends its counts as dosage sums: the frequencies (and so the hard-call
    # PCA) are unchanged to the bit
    geno, _, _ = load(Path(__file__).parent / "data" / "pca")
    counts = allele.local_sums(geno)
    with_dosage = counts | allele.local_dosage_sums(None, counts)
    assert allele.finish(with_dosage).alt_freq.tobytes() == allele.finish(counts).alt_freq.tobytes()


# --- through the real daemons --------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("pca_dosage") / "W"
    sites = [a for s in SITES for a in ("--site", f"{s}={DATA / s}")]
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_pca_through_daemons__mixed_consortium_equals_plink2(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "d"
    args = ["submit", "--profile", str(workspace / "analyst.toml"), "--pca", "5", "--freq", "--out", str(out)]
    assert cli(args) == 0, capsys.readouterr().err
    _assert_equals_plink2(out)
    assert (tmp_path / "d.afreq").read_bytes() == (EXPECTED / "dosage.afreq").read_bytes()
    assert not (tmp_path / "d.eigenvec").exists()  # per-participant scores never leave the sites


def test_pca__missing_dosages_use_the_separable_correction_documented_error(tmp_path: Path):
    """tests/data/dosage has 1 % of dosages missing: plink2 divides each relationship entry by the
    pair's jointly observed variants (a dosage or a hard call), which federation cannot form. plink2's
    own formula, over the dosages with its frequencies and mean imputation, gives what it prints;
    fedstat's separable correction differs by about 0.2 %."""
    dosage = Path(__file__).parent / "data" / "dosage"
    sites = {s: open_dataset(s, dosage / s, cache_dir=tmp_path / "cache") for s in SITES}
    spec = JobSpec(analyses=("pca",), out_name="m", privacy="none", options={"pca": "5"})
    _run(spec, sites, tmp_path / "m")
    ours = np.loadtxt(tmp_path / "m.eigenval")
    pooled = open_dataset("pooled", dosage / "pooled", cache_dir=tmp_path / "cache").genotypes
    ((_, d),) = pooled.read_blocks(np.arange(len(pooled.variants)), block_size=len(pooled.variants), values=DOSAGES)
    d = np.asarray(d, dtype=np.float64)
    obs = d >= 0
    alt = 1.0 - np.where(obs, 2.0 - d, 0.0).sum(1) / (2.0 * obs.sum(1))  # plink2 keeps the REF frequency
    var = 2.0 * alt * (1.0 - alt)
    inv = np.where(var > 0, 1.0 / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    x = np.where(obs, (d - 2.0 * alt[:, None]) * inv[:, None], 0.0)  # missing: mean-imputed
    miss = (~obs).astype(np.float64)
    m = d.shape[0]
    pairs = m - miss.sum(0)[:, None] - miss.sum(0)[None, :] + miss.T @ miss
    np.fill_diagonal(pairs, m - miss.sum(0))
    plink2_formula = np.linalg.eigvalsh(x.T @ x / pairs)[::-1][:5]
    # plink2 --pfile tests/data/dosage/pooled/genotypes --pca 5 prints these
    assert np.allclose(plink2_formula, [6.05437, 5.90722, 5.8063, 5.71278, 5.65732], rtol=1e-6, atol=0)
    rel = np.abs(ours / plink2_formula - 1)
    assert 1e-4 < rel.max() < 0.01, rel  # measured: 0.0016
