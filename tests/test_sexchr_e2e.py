"""chrX/chrY/MT through the real daemons: three site agents (a .bed, a VCF with sex from samples.tsv,
a .pgen) and a coordinator, secure aggregation; the reports equal plink2 on the pooled data byte for
byte (tests/data/sexchr, scripts/make_sexchr_fixture.py), and the job log says what is counted where.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.client import Client

DATA = Path(__file__).parent / "data" / "sexchr"
EXPECTED = DATA / "expected"
SITES = ("AFR", "EAS", "EUR")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("sexchr") / "W"
    sites = [a for s in SITES for a in ("--site", f"{s}={DATA / s}")]
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_reports__x_y_mt_through_the_daemons_equal_plink2(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "s"
    args = ["submit", "--profile", str(workspace / "analyst.toml"), "--freq", "--geno-counts", "--hardy", "--missing"]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    for ext in ("afreq", "gcount", "hardy", "hardy.x", "vmiss"):
        assert (tmp_path / f"s.{ext}").read_bytes() == (EXPECTED / f"pooled.{ext}").read_bytes(), ext


def test_glm_beside_the_reports_leaves_x_y_mt_out_with_a_log_line(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "g"
    profile = str(workspace / "analyst.toml")
    # PAR1 left out too: GWAS-SSF (written beside --glm) has no code for it
    args = ["submit", "--profile", profile, "--freq", "--glm", "--pheno-name", "QT", "--not-chr", "PAR1"]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    expected = [r for r in (EXPECTED / "pooled.afreq").read_text().splitlines() if not r.startswith("PAR1")]
    assert (tmp_path / "g.afreq").read_text().splitlines() == expected
    glm_rows = (tmp_path / "g.QT.glm.linear").read_text().splitlines()[1:]
    assert {r.split("\t")[0] for r in glm_rows} == {"1", "XY"} and len(glm_rows) == 11
    with Client.from_profile(profile) as c:
        log = "\n".join(c.list_jobs(limit=1)[0].log)  # this job: the newest
    assert "45 variants on chrX/chrY/MT are counted in --freq only: --glm leave them out" in log
    assert "round 2: allele_counts_sex over 37 variants" in log  # the males' round: chrX and chrY
