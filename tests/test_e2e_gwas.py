"""End to end GWAS: daemons over mutual TLS on the GWAS fixture, compared with plink2 / PLINK 1.9.

tests/data/gwas was made by scripts/make_gwas_fixture.py: AFR .bed, EAS VCF, EUR .pgen with
REF/ALT swaps and missing calls; QT, CC, AGE, SEX, BATCH (constant), PC1, PC2; one rare variant
separating cases from controls; monomorphic variants.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli

GWAS = Path(__file__).parent / "data" / "gwas"
EXPECTED = GWAS / "expected"
SITES = ("AFR", "EAS", "EUR")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("gwas") / "W"
    assert cli(["poc", "prepare", "--workspace", str(ws), *[a for s in SITES for a in ("--site", f"{s}={GWAS / s}")]]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_assoc_model__byte_identical_to_plink19_on_pooled_data(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "cc"
    rc = cli(["submit", "--profile", str(workspace / "analyst.toml"), "--assoc", "--model", "--pheno-name", "CC",
              "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "cc.assoc").read_bytes() == (EXPECTED / "pooled.assoc").read_bytes()
    assert (tmp_path / "cc.model").read_bytes() == (EXPECTED / "pooled.model").read_bytes()


def test_assoc__quantitative_phenotype_is_refused_with_reason(workspace: Path, tmp_path: Path, capsys):
    rc = cli(["submit", "--profile", str(workspace / "analyst.toml"), "--assoc", "--pheno-name", "QT",
              "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "QT" in err and "case/control" in err
