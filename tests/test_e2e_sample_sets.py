"""End to end: ``--freq --sample-set unrelated`` through the real coordinator and site daemons equals
plink2 ``--keep`` of the union of the three sites' ``unrelated`` sets on the pooled data.

The genotypes are the consortium fixture's (AFR .bed, EAS VCF, EUR .pgen with REF/ALT swaps and
missing calls); each site's set file and the plink2 output are ``tests/data/samplesets``, made by
scripts/make_sampleset_fixture.py. Each site's directory here links the fixture's genotypes and
table and holds its set file under ``sets/``, named relative to the dataset in ``site.toml``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from tests.conftest import FIXTURE

SITES = ("AFR", "EAS", "EUR")
SETS = Path(__file__).parent / "data" / "samplesets"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("sample-sets")
    args = []
    for s in SITES:
        d = root / s
        (d / "sets").mkdir(parents=True)
        for f in (FIXTURE / s).iterdir():
            (d / f.name).symlink_to(f)
        (d / "sets" / "unrelated.txt").symlink_to(SETS / s / "unrelated.txt")
        args += ["--site", f"{s}={d}"]
    ws = root / "W"
    assert cli(["poc", "prepare", "--workspace", str(ws), *args]) == 0
    for s in SITES:  # the operator names the set in the dataset's entry
        toml = ws / "sites" / s / "site.toml"
        text = toml.read_text()
        assert text.count('name = "main"\n') == 1
        toml.write_text(
            text.replace('name = "main"\n', 'name = "main"\nsample_sets = { unrelated = "sets/unrelated.txt" }\n')
        )
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_submit__freq_over_a_sample_set_equals_plink2_keep_of_the_union(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "results" / "unrelated"
    profile = str(workspace / "analyst.toml")
    rc = cli(["submit", "--profile", profile, "--freq", "--sample-set", "unrelated", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert out.with_suffix(".afreq").read_bytes() == (SETS / "expected" / "unrelated.afreq").read_bytes()
    # and not the whole consortium's frequencies
    assert out.with_suffix(".afreq").read_bytes() != (FIXTURE / "expected" / "pooled.afreq").read_bytes()
    prov = json.loads(out.with_name("unrelated.provenance.json").read_text())
    assert prov["spec"]["options"] == {"sample_set": "unrelated"}  # what the analyst signed
    # the sets hold 120, 105 and 135 participants; counts reach the analyst rounded down to 10s
    assert {s: v["participants"] for s, v in prov["sites"].items()} == {"AFR": 120, "EAS": 100, "EUR": 130}


def test_jobs_policies__lists_each_site_s_set_names_and_an_unknown_set_is_refused(
    workspace: Path, tmp_path: Path, capsys
):
    profile = str(workspace / "analyst.toml")
    assert cli(["jobs", "policies", "--profile", profile]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].rstrip().endswith("sample sets")
    rows = {line.split()[0]: line.split()[-1] for line in lines[1:] if line.split()[0] in (*SITES, "STRICTEST")}
    assert rows == {"AFR": "unrelated", "EAS": "unrelated", "EUR": "unrelated", "STRICTEST": "unrelated"}
    rc = cli(["submit", "--profile", profile, "--freq", "--sample-set", "qc_pass", "--out", str(tmp_path / "q")])
    assert rc == 1
    err = capsys.readouterr().err
    assert (
        "refused the job: this site defines no sample set 'qc_pass' for dataset main (its sample sets: unrelated)"
        in err
    )
    assert not list(tmp_path.glob("q.*"))
