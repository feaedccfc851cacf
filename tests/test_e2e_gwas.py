"""End to end GWAS: daemons over mutual TLS on the GWAS fixture, compared with plink2 / PLINK 1.9.

tests/data/gwas was made by scripts/make_gwas_fixture.py: AFR .bed, EAS VCF, EUR .pgen with
REF/ALT swaps and missing calls; QT, CC, AGE, SEX, BATCH (constant), PC1, PC2; one rare variant
separating cases from controls; monomorphic variants.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli

GWAS = Path(__file__).parent / "data" / "gwas"
EXPECTED = GWAS / "expected"
SITES = ("AFR", "EAS", "EUR")


def _consortium(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp(name) / "W"
    assert (
        cli(["poc", "prepare", "--workspace", str(ws), *[a for s in SITES for a in ("--site", f"{s}={GWAS / s}")]]) == 0
    )
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from _consortium(tmp_path_factory, "gwas")


@pytest.fixture(scope="module")
def assoc_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A consortium of its own: --assoc on CC's cohort, --glm (below) on QT's and CC's common cohort;
    each site's release ledger would not let one consortium release both (they differ by a few people)."""
    yield from _consortium(tmp_path_factory, "assoc")


def test_assoc_model__byte_identical_to_plink19_on_pooled_data(assoc_workspace: Path, tmp_path: Path, capsys):
    workspace = assoc_workspace
    out = tmp_path / "cc"
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--assoc",
            "--model",
            "--pheno-name",
            "CC",
            "--require-pheno",  # samples missing CC take no part (the sites' release ledgers)
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    # PLINK 1.9 --prune: samples missing CC left out first (scripts/make_gwas_fixture.py)
    assert (tmp_path / "cc.assoc").read_bytes() == (EXPECTED / "required.assoc").read_bytes()
    assert (tmp_path / "cc.model").read_bytes() == (EXPECTED / "required.model").read_bytes()


def test_assoc__quantitative_phenotype_is_refused_with_reason(workspace: Path, tmp_path: Path, capsys):
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--assoc",
            "--pheno-name",
            "QT",
            "--out",
            str(tmp_path / "q"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "QT" in err and "case/control" in err


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_glm__linear_and_logistic_match_plink2_on_pooled_data(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "gwas"
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--glm",
            "--pheno-name",
            "QT,CC",
            "--covar-name",
            "AGE,SEX,BATCH,PC1-PC2",
            "--require-pheno",  # one cohort for every round (the sites' release ledgers)
            "--require-covar",
            "--genome-assembly",
            "GRCh38",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    lin = tmp_path / "gwas.QT.glm.linear"
    assert lin.read_bytes().splitlines()[0] == (EXPECTED / "required.QT.glm.linear").read_bytes().splitlines()[0]
    for ours_path, theirs_path, keys in (
        (
            lin,
            EXPECTED / "required.QT.glm.linear",
            ("#CHROM", "POS", "ID", "REF", "ALT", "A1", "TEST", "OBS_CT", "ERRCODE"),
        ),
        (
            tmp_path / "gwas.CC.glm.logistic.hybrid",
            EXPECTED / "required.CC.glm.logistic.hybrid",
            ("#CHROM", "POS", "ID", "REF", "ALT", "A1", "FIRTH?", "TEST", "OBS_CT", "ERRCODE"),
        ),
    ):
        ours, theirs = _rows(ours_path), _rows(theirs_path)
        header = theirs[0]
        assert ours[0] == header and len(ours) == len(theirs) == 801
        for k in keys:
            c = header.index(k)
            assert [r[c] for r in ours] == [r[c] for r in theirs], f"{ours_path.name}: {k} differs"
        p = header.index("P")
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            if b[p] != "NA":
                assert abs(np.log10(float(a[p])) - np.log10(float(b[p]))) <= 1e-4 or a[p] == b[p]
    # outputs beyond plink2's tables
    for name in (
        "gwas.QT.ssf.tsv.gz",
        "gwas.QT.ssf.tsv.gz-meta.yaml",
        "gwas.CC.ssf.tsv.gz",
        "gwas.QT.manhattan.png",
        "gwas.CC.qq.png",
        "gwas.report.html",
        "gwas.provenance.json",
    ):
        assert (tmp_path / name).is_file(), name
    meta = (tmp_path / "gwas.CC.ssf.tsv.gz-meta.yaml").read_text()
    assert "genome_assembly: GRCh38" in meta and "case_count:" in meta
    report = (tmp_path / "gwas.report.html").read_text()
    assert "QT — linear regression" in report and "CC — logistic regression, Firth fallback" in report
    assert "Excluding constant covariate" in report and "https://" not in report


def test_glm_ci_adjust__written_at_the_coordinator_from_the_released_results(workspace: Path, tmp_path: Path, capsys):
    """--ci and --adjust through the daemons: the same cohort as above, so no new release at the
    sites; the L95/U95 columns and .adjusted files come from the results the job already has."""
    out = tmp_path / "ci"
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--glm",
            "--ci",
            "0.95",
            "--adjust",
            "--pheno-name",
            "QT,CC",
            "--covar-name",
            "AGE,SEX,BATCH,PC1-PC2",
            "--require-pheno",
            "--require-covar",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for name in ("ci.QT.glm.linear", "ci.CC.glm.logistic.hybrid"):
        header = (tmp_path / name).read_text().split("\n", 1)[0]
        assert header == (EXPECTED / name.replace("ci.", "ci95.", 1)).read_text().split("\n", 1)[0]
        adjusted = _rows(tmp_path / f"{name}.adjusted")
        assert adjusted[0] == _rows(EXPECTED / f"ci95.{name[3:]}.adjusted")[0]
        assert len(adjusted) == 777  # 776 valid ADD tests, as plink2 on this cohort's data
        unadj = [float(r[3]) for r in adjusted[1:]]
        assert unadj == sorted(unadj)
    provenance = (tmp_path / "ci.provenance.json").read_text()
    assert "ci.QT.glm.linear.adjusted" in provenance and "ci.CC.glm.logistic.hybrid.adjusted" in provenance
    assert "ci.QT.glm.linear.adjusted" in (tmp_path / "ci.report.html").read_text()
