"""The whole pipeline as one job through the real daemons: QC → PCA → GWAS with the federated PCs.

tests/data/pca (scripts/make_pca_fixture.py): three sites of distinct ancestry with confounded
phenotypes; plink2 2.00a3.5 on the pooled data is the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from tests.glm_harness import compare

PCA = Path(__file__).parent / "data" / "pca"
EXPECTED = PCA / "expected"
SITES = ("AFR", "EAS", "EUR")
QC = ["--maf", "0.01", "--geno", "0.05", "--hwe", "1e-6"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("pipeline") / "W"
    assert (
        cli(["poc", "prepare", "--workspace", str(ws), *[a for s in SITES for a in ("--site", f"{s}={PCA / s}")]]) == 0
    )
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def _submit(workspace: Path, out: Path, *args: str) -> list[str]:
    rc = cli(["submit", "--profile", str(workspace / "analyst.toml"), *args, "--out", str(out)])
    assert rc == 0
    return json.loads(Path(f"{out}.provenance.json").read_text())["log"]


def test_pipeline__one_command_under_secagg_equals_plink2(workspace: Path, tmp_path: Path):
    out = tmp_path / "pipe"
    # --require-pheno: every round on the phenotypes' common cohort (a few participants miss QT or CC
    # at each site, which the sites' release ledgers would not let rounds over two cohorts reveal)
    # --covar-variance-standardize, as the plink2 reference: AGE's and the PCs' scales differ too much
    # for plink2's fit without it (both refuse; ADD tests are the same with it)
    log = _submit(workspace, out, *QC, "--pca", "10", "--glm", "--pheno-name", "QT,CC", "--require-pheno",
                  "--covar-name", "AGE,SEX,PC1-PC10", "--covar-variance-standardize")  # fmt: skip
    text = "\n".join(log)
    # plink2 --require-pheno on the pooled data: 37 samples removed; --hwe 79, --maf 89; 1832 variants
    assert "--hwe: 79 variants removed due to Hardy-Weinberg exact test" in text
    assert "1832 variants remaining after main filters" in text
    assert "subspace iteration converged" in text
    assert np.array_equal(np.loadtxt(f"{out}.eigenval"), np.loadtxt(EXPECTED / "required.eigenval"))
    for pheno, ext in (("QT", "glm.linear"), ("CC", "glm.logistic.hybrid")):
        c = compare(Path(f"{out}.{pheno}.{ext}"), EXPECTED / f"required-pcs.{pheno}.{ext}")
        assert c.rows == 1832 and c.key_mismatch == 0 and c.max_log10p_dev <= 1e-3, (pheno, c)
        assert f"λGC {pheno} (--glm ADD, AGE, SEX, PC1, PC2, PC3," in text
    assert Path(f"{out}.report.html").exists() and Path(f"{out}.eigenvec.allele").exists()
    assert not list(tmp_path.glob("*.eigenvec"))  # per-participant scores never leave the sites


def test_pipeline__paillier_gives_the_same_results_as_secagg(workspace: Path, tmp_path: Path):
    # common variants of a third of the genome only, to keep Paillier's encryption of every XᵀXV
    # product short: the test is about the protocol (the same results as secagg), not key strength
    args = ("--maf", "0.3", "--chr", "1-7", "--pca", "2", "--glm", "--pheno-name", "QT,CC", "--require-pheno",
            "--covar-name", "AGE,SEX,PC1-PC2", "--covar-variance-standardize")  # fmt: skip
    _submit(workspace, tmp_path / "s", *args)
    log = _submit(workspace, tmp_path / "p", *args, "--privacy", "paillier")
    assert any("decrypted by the analyst's client" in line for line in log)
    a, b = np.loadtxt(tmp_path / "s.eigenval"), np.loadtxt(tmp_path / "p.eigenval")
    assert a.shape == (2,) and np.array_equal(a, b)
    # provenance names the one seeded randomness (the PCA's start subspace), which is why both agree
    for out in ("s", "p"):
        prov = json.loads((tmp_path / f"{out}.provenance.json").read_text())
        assert prov["seeds"] == {"pca_start_subspace": 0x5EED}
    rows = (tmp_path / "s.QT.glm.linear").read_text().count("\n") - 1
    c = compare(tmp_path / "p.QT.glm.linear", tmp_path / "s.QT.glm.linear")
    assert c.rows == rows > 100 and c.key_mismatch == 0 and c.max_log10p_dev <= 1e-4


def test_pipeline__dp_is_refused_with_the_reason(workspace: Path, tmp_path: Path, capsys):
    rc = cli(["submit", "--profile", str(workspace / "analyst.toml"), *QC, "--pca", "2", "--freq",
              "--privacy", "dp", "--epsilon", "1", "--delta", "1e-6", "--out", str(tmp_path / "d")])  # fmt: skip
    assert rc != 0
    assert "--pca cannot run under --privacy dp" in capsys.readouterr().err
