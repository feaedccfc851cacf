"""Imputed dosages: three sites with dosage .pgen files (plink2's import of DS), through the real
daemons, equal plink2 on the pooled data; and the refusals where fedstat still reads hard calls.

tests/data/dosage was made by scripts/make_dosage_fixture.py (soft, integral and missing dosages,
hard calls missing where the dosage is far from an integer, REF/ALT exchanged at EUR, constant
dosage columns).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.data.genotypes import open_genotypes
from fedstat.jobs import JobSpec, dosage_refusal
from fedstat.stats import allele

DOSAGE = Path(__file__).parent / "data" / "dosage"
EXPECTED = DOSAGE / "expected"
SITES = ("AFR", "EAS", "EUR")
COHORT = ["--pheno-name", "QT,CC", "--require-pheno", "--covar-name", "AGE,SEX", "--require-covar"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("dosage") / "W"
    sites = [a for s in SITES for a in ("--site", f"{s}={DOSAGE / s}")]
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_reports_and_glm__dosage_pgens_equal_plink2_on_pooled_data(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "g"
    profile = str(workspace / "analyst.toml")
    args = ["submit", "--profile", profile, "--freq", "--geno-counts", "--hardy", "--missing", "--glm", *COHORT]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    # --freq from the dosages; the other reports from plink2's hard calls of the same files
    for ext in ("afreq", "gcount", "hardy", "vmiss"):
        assert (tmp_path / f"g.{ext}").read_bytes() == (EXPECTED / f"required.{ext}").read_bytes(), ext
    # every column byte for byte but the fitted statistics, which plink2 computes in its own floating
    # point (single precision for logistic; its own t and normal tails): those to the printed
    # precision's last digits
    for name, approx in (("QT.glm.linear", ("P",)), ("CC.glm.logistic.hybrid", ("OR", "LOG(OR)_SE", "Z_STAT", "P"))):
        ours, theirs = _rows(tmp_path / f"g.{name}"), _rows(EXPECTED / f"required.{name}")
        header = theirs[0]
        assert ours[0] == header and len(ours) == len(theirs) == 241
        for c, col in enumerate(header):
            if col not in approx:
                assert [r[c] for r in ours] == [r[c] for r in theirs], (name, col)
                continue
            for a, b in zip(ours[1:], theirs[1:], strict=True):
                assert a[c] == b[c] or float(a[c]) == pytest.approx(float(b[c]), rel=2e-5, abs=2e-6), (name, col, a[2])
    errcodes = {r[header.index("ERRCODE")] for r in theirs[1:]}
    assert "CONST_OMITTED_ALLELE" in errcodes and "." in errcodes  # the constant soft-dosage column too


def test_freq_from_hard_calls_would_differ_from_plink2():
    # the point of reading dosages: plink2's hard calls of these files give other frequencies
    counts = {k: np.zeros(240, dtype=np.int64) for k in allele.SUM_NAMES}
    for site in SITES:
        src = open_genotypes(DOSAGE / site)
        ((_, hard),) = src.read_blocks(np.arange(240), block_size=240)
        for k, v in allele.local_sums(hard).items():
            counts[k] += v
    hard_freq = allele.finish(counts).alt_freq
    theirs = np.array([float(r[4]) for r in _rows(EXPECTED / "required.afreq")[1:]])
    assert np.nanmax(np.abs(hard_freq - theirs)) > 0.01


@pytest.mark.parametrize(
    "spec,why",
    [
        (JobSpec(analyses=("freq",), out_name="f", privacy="dp"), "--freq under --privacy dp reads hard calls only"),
        (JobSpec(analyses=("freq",), out_name="f", options={"maf": "0.01"}), None),  # tests/test_machr2.py
        (
            JobSpec(analyses=("hardy",), out_name="f", privacy="dp", options={"maf": "0.01"}),
            "--maf under --privacy dp reads hard-call frequencies",
        ),
        (JobSpec(analyses=("freq", "glm"), out_name="f", pheno_names=("QT",)), None),
        (JobSpec(analyses=("pca",), out_name="f", options={"pca": "5"}), None),  # tests/test_pca_dosage.py
        (JobSpec(analyses=("hardy", "geno-counts", "missing"), out_name="f", privacy="dp"), None),
    ],
)
def test_dosage_refusal__only_what_still_reads_hard_calls(spec: JobSpec, why: str | None):
    got = dosage_refusal(spec)
    assert (got is None) if why is None else (got is not None and why in got)


def test_machr2_and_filter__through_the_daemons_equal_plink2(workspace: Path, tmp_path: Path, capsys):
    # --freq cols=+machr2 with --geno/--hwe/--mach-r2-filter under secagg: the variants plink2 keeps,
    # each with plink2's MACH_R2 line (--require-covar removes no one here, so the cohort is plink2's)
    out = tmp_path / "r"
    args = ["submit", "--profile", str(workspace / "analyst.toml"), "--freq", "cols=+machr2", "--geno", "0.4"]
    args += ["--hwe", "1e-3", "--mach-r2-filter", "0.85", "0.95", "--pheno-name", "QT,CC", "--require-pheno"]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    ours = (tmp_path / "r.afreq").read_text().splitlines()
    theirs = {r.split("\t")[1]: r for r in (EXPECTED / "machr2.afreq").read_text().splitlines()}
    kept = (EXPECTED / "r2filter.snplist").read_text().split()
    assert ours == [theirs["ID"], *(theirs[i] for i in kept)]
    log = json.loads((tmp_path / "r.provenance.json").read_text())["log"]
    assert any(line.endswith("--mach-r2-filter: 63 variants removed.") for line in log)
    assert any(line.endswith("21 variants remaining after main filters") for line in log)
