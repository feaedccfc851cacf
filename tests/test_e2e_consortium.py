"""End to end: coordinator and three site agents as real processes over mutual TLS on loopback.

The consortium is the checked-in fixture (AFR PLINK1 .bed, EUR PLINK2 .pgen with REF/ALT swaps
and missing calls, EAS VCF); its plink2 outputs on the pooled data were made by
scripts/make_fixtures.py. Results must be byte-identical to them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.client import Client
from tests.conftest import FIXTURE

SITES = ("AFR", "EAS", "EUR")
EXPECTED = FIXTURE / "expected"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("poc") / "W"
    assert (
        cli(["poc", "prepare", "--workspace", str(ws), *[a for s in SITES for a in ("--site", f"{s}={FIXTURE / s}")]])
        == 0
    )
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _within_printed_precision(ours: str, theirs: str) -> bool:
    """plink2 prints 6 significant digits: agree to half a unit in the last printed digit."""
    a, b = float(ours if ours != "NA" else "nan"), float(theirs if theirs != "NA" else "nan")
    if not (np.isfinite(a) and np.isfinite(b)):  # plink2 prints nan for an all-missing variant
        return ours == theirs
    if b == 0:
        return a == 0
    return abs(a - b) <= 0.5 * 10 ** (np.floor(np.log10(abs(b))) - 5) * (1 + 1e-9)


def test_submit__allele_statistics_equal_plink2_on_pooled_data(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "results" / "run1"
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--freq",
            "--geno-counts",
            "--hardy",
            "--missing",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for ext in ("afreq", "gcount", "hardy", "vmiss"):
        ours_h, ours = _table(out.with_suffix("." + ext))
        theirs_h, theirs = _table(EXPECTED / f"pooled.{ext}")
        assert ours_h == theirs_h
        assert len(ours) == len(theirs) == 1500
        for col, name in enumerate(theirs_h):
            a, b = [r[col] for r in ours], [r[col] for r in theirs]
            if name.endswith("_CT") or name.endswith("_CTS") or name in ("#CHROM", "ID", "REF", "ALT", "A1", "AX"):
                assert a == b, f"{ext} {name} differs"
            else:  # frequencies, expected heterozygosity, HWE P, F_MISS
                bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not _within_printed_precision(x, y)]
                assert bad == [], f"{ext} {name} beyond printed precision at rows {bad[:5]}"
        # and in fact byte-identical to plink2's file
        assert out.with_suffix("." + ext).read_bytes() == (EXPECTED / f"pooled.{ext}").read_bytes()
    prov = json.loads(out.with_name("run1.provenance.json").read_text())
    assert prov["participants_total"] == 160 + 140 + 180
    assert {s: v["participants"] for s, v in prov["sites"].items()} == {"AFR": 160, "EAS": 140, "EUR": 180}
    assert prov["privacy"]["mode"] == "secagg"  # the default: exact integer sums through the masked ring
    assert prov["seeds"] == {}  # nothing seeded: no --pca; masks and keys come from the OS's CSPRNG
    log = "\n".join(prov["log"])
    assert "site EUR: " in log and "REF/ALT swapped; flipped at the site" in log
    assert "0 excluded" in log


def test_jobs_results__refetches_identical_files(workspace: Path, tmp_path: Path, capsys):
    profile = str(workspace / "analyst.toml")
    assert cli(["submit", "--profile", profile, "--freq", "--out", str(tmp_path / "a" / "f"), "--no-wait"]) == 0
    job_id = capsys.readouterr().out.strip()
    with Client.from_profile(profile) as c:
        done = c.wait(job_id)
    assert list(done.result_files) == ["f.afreq", "f.provenance.json"]
    assert cli(["jobs", "results", "--profile", profile, job_id, "--out", str(tmp_path / "b" / "f")]) == 0
    assert (tmp_path / "b" / "f.afreq").read_bytes() == (EXPECTED / "pooled.afreq").read_bytes()
    assert cli(["jobs", "list", "--profile", profile]) == 0
    assert job_id in capsys.readouterr().out
    assert cli(["jobs", "show", "--profile", profile, job_id]) == 0
    shown = capsys.readouterr().out
    assert "site EUR" in shown and "participants=180-189" in shown  # coarsened to count_granularity 10


def test_submit__subset_of_sites_after_all_sites_is_refused_as_differencing(workspace: Path, tmp_path: Path, capsys):
    # attack A2: the same sums over AFR, EAS, EUR (earlier tests) and then over AFR, EAS differ by
    # exactly EUR's sums; AFR and EAS took part in both and refuse, protecting EUR
    profile = str(workspace / "analyst.toml")
    full = ["submit", "--profile", profile, "--missing", "--privacy", "none", "--out", str(tmp_path / "all")]
    assert cli(full) == 0
    out = tmp_path / "two"
    args = ["submit", "--profile", profile, "--missing", "--sites", "AFR,EAS", "--privacy", "none", "--out", str(out)]
    assert cli(args) == 1
    err = capsys.readouterr().err
    assert "the difference would be one site's own sums (policy allow_site_differencing is off)" in err
    assert not list(tmp_path.glob("two*"))


def test_submit__secagg_over_fewer_than_min_sites_is_refused(workspace: Path, tmp_path: Path, capsys):
    profile = str(workspace / "analyst.toml")
    rc = cli(["submit", "--profile", profile, "--missing", "--sites", "AFR,EAS", "--out", str(tmp_path / "two")])
    assert rc == 1
    assert "releases sums over at least 3 sites (min_sites); this job has 2: AFR, EAS" in capsys.readouterr().err
    assert not list(tmp_path.glob("two*"))


def test_submit__unknown_phenotype_fails_naming_site_and_column(workspace: Path, tmp_path: Path, capsys):
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--freq",
            "--pheno-name",
            "NOPE",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "refused the job: unknown phenotype 'NOPE'" in err and "columns are:" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("x*"))


def test_submit__unknown_site_fails_with_connected_list(workspace: Path, tmp_path: Path, capsys):
    rc = cli(
        [
            "submit",
            "--profile",
            str(workspace / "analyst.toml"),
            "--freq",
            "--sites",
            "AFR,MARS",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 1
    assert "site(s) MARS not connected; connected: AFR, EAS, EUR" in capsys.readouterr().err


def test_poc_status__every_component_healthy(workspace: Path, capsys):
    assert cli(["poc", "status", "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert "SERVING" in out and out.count("CONNECTED") == 3


def test_vcf_cache__built_once_at_registration(workspace: Path):
    caches = list((workspace / "sites" / "EAS" / "state" / "cache").rglob("*.pgen"))
    assert len(caches) == 1
    assert not list((workspace / "sites" / "AFR" / "state").rglob("*.pgen"))  # PLINK needs no cache


def test_broken_dataset__job_fails_naming_site_file_and_line(tmp_path: Path, capsys):
    data = tmp_path / "data"
    for s in ("AFR", "EUR"):
        shutil.copytree(FIXTURE / s, data / s)
    lines = (data / "EUR" / "samples.tsv").read_text().splitlines()
    lines[6] = lines[6] + "\textra"
    (data / "EUR" / "samples.tsv").write_text("\n".join(lines) + "\n")
    ws = tmp_path / "W"
    rc = cli(
        ["poc", "prepare", "--workspace", str(ws), "--site", f"AFR={data / 'AFR'}", "--site", f"EUR={data / 'EUR'}"]
    )
    assert rc == 2
    assert "site EUR" in capsys.readouterr().err
    shutil.rmtree(ws)
    assert (
        cli(
            [
                "poc",
                "prepare",
                "--workspace",
                str(ws),
                "--skip-check",
                "--site",
                f"AFR={data / 'AFR'}",
                "--site",
                f"EUR={data / 'EUR'}",
            ]
        )
        == 0
    )
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        rc = cli(
            [
                "submit",
                "--profile",
                str(ws / "analyst.toml"),
                "--freq",
                "--privacy",
                "none",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        err = capsys.readouterr().err
        assert rc == 1
        assert "site EUR refused the job: dataset main cannot be used:" in err
        assert "samples.tsv: line 7:" in err
        with Client.from_profile(ws / "analyst.toml") as c:
            (job,) = c.list_jobs()
            assert job.state == "FAILED" and "site EUR" in job.error
    finally:
        poc.stop(ws)


def test_submit__paillier_through_the_cli_equals_plink2(workspace: Path, tmp_path: Path, capsys):
    """The CLI makes the key pair, stays to decrypt, and the counts are exact."""
    profile = str(workspace / "analyst.toml")
    out = tmp_path / "he" / "f"
    assert cli(["submit", "--profile", profile, "--freq", "--privacy", "paillier", "--out", str(out)]) == 0
    assert out.with_suffix(".afreq").read_bytes() == (EXPECTED / "pooled.afreq").read_bytes()
    rc = cli(["submit", "--profile", profile, "--freq", "--privacy", "paillier", "--no-wait", "--out", str(out)])
    assert rc == 2
    assert "cannot use --no-wait: this command holds the private key" in capsys.readouterr().err


def test_jobs_policies__lists_every_site_and_the_strictest(workspace: Path, capsys):
    assert cli(["jobs", "policies", "--profile", str(workspace / "analyst.toml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["site", "dataset", "privacy"]
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert set(rows) == {"AFR", "EAS", "EUR", "STRICTEST"}
    assert all(r[2] == "secagg,paillier,dp,paillier,dp,none" and r[5] == "0.33" for r in rows.values())
    assert lines[5].startswith("analyses every site allows: --freq, --geno-counts")


def test_submit__mind_at_each_site_and_qc_keep_what_plink2_keeps(workspace: Path, tmp_path: Path, capsys):
    """--mind runs at each site on its own participants (counts per site in the job log); --geno then
    filters the pooled counts of the participants left, as plink2 does on the pooled data."""
    out = tmp_path / "qc"
    args = ["submit", "--profile", str(workspace / "analyst.toml"), "--freq", "--mind", "0.021", "--geno", "0.01"]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    kept = [r.split("\t")[1] for r in (tmp_path / "qc.afreq").read_text().splitlines()[1:]]
    assert kept == (FIXTURE / "expected" / "qc-mind.snplist").read_text().split()
    log = json.loads((tmp_path / "qc.provenance.json").read_text())["log"]
    text = "\n".join(log)
    # counts reach the log as each site's gate reports them: rounded down to count_granularity 10
    assert "site AFR: after --mind, 160-169 participants remain (before: 160-169 participants)" in text
    assert "site EAS: after --mind, 140-149 participants remain (before: 140-149 participants)" in text
    assert "site EUR: after --mind, 80-89 participants remain (before: 180-189 participants)" in text
    assert "--mind 0.021: 90 participants removed due to missing genotype data" in text  # EUR's 95, coarsened
    assert "--geno: 86 variants removed due to missing genotype data" in text
    prov = json.loads((tmp_path / "qc.provenance.json").read_text())
    assert prov["participants_total"] == 380  # 160 + 140 + 85, each rounded down to a multiple of 10
