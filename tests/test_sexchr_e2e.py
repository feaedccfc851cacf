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


def test_glm_beside_the_reports_regresses_x_y_mt_as_plink2(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "g"
    profile = str(workspace / "analyst.toml")
    # PAR1 left out: GWAS-SSF (written beside --glm) has no code for it; Y_2900042: plink2's quirk
    # (scripts/make_sexchr_fixture.py)
    args = ["submit", "--profile", profile, "--freq", "--glm", "show-covar", "--pheno-name", "QT,CC"]
    (tmp_path / "exclude.txt").write_text("Y_2900042\n")
    args += ["--covar-name", "AGE", "--covar-variance-standardize", "--not-chr", "PAR1"]
    args += ["--exclude", str(tmp_path / "exclude.txt")]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    afreq = [r.split("\t") for r in (EXPECTED / "pooled.afreq").read_text().splitlines()]
    expected = ["\t".join(r) for r in afreq if r[0] != "PAR1" and r[1] != "Y_2900042"]
    assert (tmp_path / "g.afreq").read_text().splitlines() == expected
    theirs = [r for r in (EXPECTED / "glm.QT.glm.linear").read_text().splitlines() if not r.startswith("PAR1")]
    ours = (tmp_path / "g.QT.glm.linear").read_text().splitlines()
    assert {r.split("\t")[0] for r in ours[1:]} == {"1", "X", "Y", "XY", "MT"} and len(ours) == len(theirs)
    assert ours[0] == theirs[0]
    for a, b in zip(ours[1:], theirs[1:], strict=True):  # equal but for the last printed digit
        fa, fb = a.split("\t"), b.split("\t")
        assert fa[:8] == fb[:8] and fa[-1] == fb[-1]
        assert [float(x) for x in fa[8:12]] == pytest.approx([float(x) for x in fb[8:12]], rel=2e-5, abs=1e-12)
    assert (tmp_path / "g.CC.glm.logistic.hybrid").read_text().count("\tSEX\t") == 29  # every chrX variant
    with Client.from_profile(profile) as c:  # this job (another may have started in the same second)
        log = next("\n".join(j.log) for j in c.list_jobs(limit=10) if any("--freq --glm" in x for x in j.log))
    assert "chrX/chrY/MT" not in log  # nothing left out
    assert "round 2: allele_counts_sex over 36 variants" in log  # the males' round: chrX and chrY
    assert "glm_describe_males over 36 variants" in log
