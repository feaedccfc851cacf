"""Site-defined sample sets (``sample_sets`` in site.toml, ``--sample-set NAME``): the set files read
as plink2 --keep reads them, validated when the dataset opens; the site's decision; the analyst's
flag; and the release ledger refusing a tracker built from a set and the whole dataset.

The --keep layouts below were each run through plink2 2.00a3.5 on the consortium fixture's pooled
.pgen (``plink2 --pfile pooled/genotypes --keep FILE --freq``); the comments give what it kept.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from fedstat.client import Client
from fedstat.config import DatasetConfig, SitePolicy, load_site_config
from fedstat.data.dataset import open_dataset
from fedstat.data.sample_sets import read_sample_set
from fedstat.data.samples import read_sample_table
from fedstat.errors import ConfigError, InputError, PolicyRefused, SampleTableError
from fedstat.jobs import JobSpec
from site_agent.policy import ConsentSetup, decide
from tests.conftest import FIXTURE, GWAS, GWAS_SITES, analyst_profile

IDS = [f"s{i}" for i in range(1, 7)]


def _table(tmp_path: Path, *, fid: bool = True):
    path = tmp_path / "samples.tsv"
    head = "#FID\tIID\tQT" if fid else "#IID\tQT"
    rows = [f"f{i}\t{s}\t{i}" if fid else f"{s}\t{i}" for i, s in enumerate(IDS)]
    path.write_text("\n".join([head, *rows]) + "\n")
    return read_sample_table(path)


def _read(tmp_path: Path, text: str, *, fid: bool = True) -> list[int]:
    f = tmp_path / "set.txt"
    f.write_bytes(text.encode())
    return read_sample_set(f, _table(tmp_path, fid=fid), name="qc_pass", dataset="main").tolist()


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("#FID\tIID\nf2\ts3\nf0\ts1\n", [0, 2]),  # the header; rows come back sorted
        (
            "f1 s2\n  f4\ts5 extra cols\n\n\n",
            [1, 4],
        ),  # no header: FID IID, more columns ignored; empty lines at the end
        ("# a comment\n#FID\tIID\tWHATEVER\nf5\ts6\tx\n", [5]),  # comments before the header
        ("# a comment\nf5 s6\n", [5]),  # comments, then no header
        ("# FID IID\nf5 s6\n", [5]),  # "# FID" (a space after #) is a comment, not a header
        ("#FID IID SID\nf0 s1 x\n", [0]),  # a SID column is read and ignored
        ("#FID IID\r\nf3 s4\r\n", [3]),  # CRLF
        ("f3 s4\n  \t \n", [3]),  # a blank line at the end
    ],
)
def test_read_sample_set__keep_layouts_select_the_rows_plink2_keeps(tmp_path: Path, text: str, rows: list[int]):
    assert _read(tmp_path, text) == rows


def test_read_sample_set__one_id_lines_name_fid_0_as_in_plink2(tmp_path: Path):
    # plink2 reads a lone ID (no header, or under #IID) as the IID of a sample whose FID is 0: it keeps
    # 0 samples of the pooled fixture (whose FIDs equal the IIDs) for "AFR_00001"; a table without
    # family IDs has FID 0, so there the lone IDs match
    assert _read(tmp_path, "s2\ns6\n", fid=False) == [1, 5]
    assert _read(tmp_path, "#IID\ns2\n", fid=False) == [1]
    assert _read(tmp_path, "0 s3\n", fid=False) == [2]
    with pytest.raises(SampleTableError, match=r"set\.txt: line 2: .*FID is 0.*write FID and IID") as err:
        _read(tmp_path, "f0 s1\ns2\n")  # mixed: the second line is IID s2 with FID 0, which is not in the table
    assert "s2" not in str(err.value).split("set.txt: ", 1)[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#FID\tIID\nf0\ts1\nf9\ts9\n", r"line 3: sample set qc_pass names a sample that is not in samples\.tsv"),
        ("f0 s1\nf1 s2\nf0 s1\n", r"line 3: sample set qc_pass names the sample of line 1 again"),
        ("\nf0 s1\n", r"line 1: empty line"),  # plink2: "Unexpected interior empty line"
        ("f0 s1\n\nf1 s2\n", r"line 2: empty line"),
        ("f0 s1\n \t \nf1 s2\n", r"line 2: empty line"),  # blanks only: empty to plink2 too
        ("#FID IID\nf0\n", r"line 2: fewer IDs than the header names"),  # plink2: "fewer tokens than expected"
        ("#IID SID\ns1\n", r"line 2: fewer IDs"),
        ("#FID NAME\nf0 s1\n", r"line 1: header has no IID column"),  # plink2: "No IID column"
        ("FID IID\nf0 s1\n", r"line 1: .*not in samples\.tsv.*header line comes first and starts with #FID IID"),
        ("#FID\tIID\n", r"lists no sample; a set needs at least one participant"),
        ("# nothing but a comment\n", r"lists no sample"),
        ("", r"lists no sample"),
    ],
)
def test_read_sample_set__mistakes_are_refused_naming_the_file_and_line_never_the_id(
    tmp_path: Path, text: str, message: str
):
    with pytest.raises(SampleTableError, match=message) as err:
        _read(tmp_path, text)
    where = f"{tmp_path / 'set.txt'}: "
    assert str(err.value).startswith(where)
    assert not any(s in str(err.value)[len(where) :] for s in ("s1", "s9", "f9")), "an error names no sample"


def test_read_sample_set__a_missing_or_binary_file_is_refused(tmp_path: Path):
    table = _table(tmp_path)
    with pytest.raises(SampleTableError, match="sample set unrelated of dataset main: file not found"):
        read_sample_set(tmp_path / "nope.txt", table, name="unrelated", dataset="main")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SampleTableError, match="is not UTF-8 text"):
        read_sample_set(tmp_path / "bin.txt", table, name="unrelated", dataset="main")


# --- site.toml -------------------------------------------------------------------------------


def _site_toml(tmp_path: Path, datasets: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\ncoordinator = "localhost:7443"\n\n[tls]\nca = "ca.pem"\ncert = "s.pem"\nkey = "s.key"\n\n' + datasets
    )
    return path


def test_load_site_config__sample_sets_are_relative_to_the_dataset_directory(tmp_path: Path):
    cfg = load_site_config(
        _site_toml(
            tmp_path,
            '[[datasets]]\nname = "main"\npath = "data/afr"\n'
            'sample_sets = { unrelated = "sets/unrelated.txt", qc_pass = "/srv/qc_pass.txt" }\n'
            '[[datasets]]\nname = "other"\npath = "data/other"\n',
        )
    )
    main, other = cfg.datasets
    assert main.sample_sets == (
        ("unrelated", tmp_path / "data" / "afr" / "sets" / "unrelated.txt"),
        ("qc_pass", Path("/srv/qc_pass.txt")),
    )
    assert other.sample_sets == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('sample_sets = "sets/unrelated.txt"', r"datasets\[0\]\.sample_sets must be a table"),
        ("sample_sets = { unrelated = 3 }", r"datasets\[0\]\.sample_sets\.unrelated must be a string"),
        ('sample_sets = { "un related" = "u.txt" }', r"sample_sets\.un related: a sample set's name is letters"),
        ('sample_sets = { unrelated = "" }', r"sample_sets\.unrelated must name a file"),
        ('sample_set = { unrelated = "u.txt" }', r"unknown key\(s\) in \[datasets\[0\]\]: sample_set"),
    ],
)
def test_load_site_config__bad_sample_sets_are_refused_naming_the_key(tmp_path: Path, entry: str, message: str):
    path = _site_toml(tmp_path, f'[[datasets]]\nname = "main"\npath = "d"\n{entry}\n')
    with pytest.raises(ConfigError, match=message) as err:
        load_site_config(path)
    assert str(err.value).startswith(str(path))


# --- the dataset and the site's decision --------------------------------------------------------


def _eur_with_sets(tmp_path: Path, sets: dict[str, list[int]]):
    """The consortium fixture's EUR dataset with sample sets over its table rows ``sets``."""
    ids = [line.split("\t")[:2] for line in (FIXTURE / "EUR" / "samples.tsv").read_text().splitlines()[1:]]
    files = []
    for name, rows in sets.items():
        f = tmp_path / f"{name}.txt"
        f.write_text("#FID\tIID\n" + "".join(f"{ids[r][0]}\t{ids[r][1]}\n" for r in rows))
        files.append((name, f))
    return open_dataset("EUR", FIXTURE / "EUR", cache_dir=tmp_path / "cache", sample_sets=files)


def test_open_dataset__sets_are_read_and_a_bad_set_keeps_the_dataset_from_opening(tmp_path: Path):
    ds = _eur_with_sets(tmp_path, {"unrelated": [5, 0, 9], "qc_pass": list(range(1, 180))})
    assert list(ds.sample_sets) == ["unrelated", "qc_pass"]  # as site.toml orders them
    assert ds.sample_sets["unrelated"].tolist() == [0, 5, 9]
    with pytest.raises(ValueError, match="read-only"):
        ds.sample_sets["unrelated"][0] = 1
    ds.close()
    bad = tmp_path / "bad.txt"
    bad.write_text("#FID\tIID\nEUR_00001\tEUR_00001\nEUR_99999\tEUR_99999\n")
    with pytest.raises(SampleTableError, match=r"bad\.txt: line 3: sample set bad names a sample that is not in") as e:
        open_dataset("EUR", FIXTURE / "EUR", cache_dir=tmp_path / "cache", sample_sets=[("bad", bad)])
    assert "EUR_99999" not in str(e.value)


def test_decide__the_cohort_is_the_set_members_that_pass_consent_and_required_columns(tmp_path: Path):
    # EUR's table rows 0..179; the set holds rows 0..99; a consent column leaves out rows 50..59
    # (HMB only, the job is GRU) and rows 170..179, outside the set; --require-pheno QT drops the
    # rows whose QT is missing (the fixture's, and 95..99 and 150, which we blank)
    data = tmp_path / "EUR"
    data.mkdir()
    for f in (FIXTURE / "EUR").iterdir():
        if f.name.startswith("genotypes."):
            (data / f.name).symlink_to(f)
    head, *rows = (FIXTURE / "EUR" / "samples.tsv").read_text().splitlines()
    fields = [r.split("\t") for r in rows]
    qt = head.split("\t").index("QT")
    for r in (*range(95, 100), 150):
        fields[r][qt] = "NA"
    consent = ["HMB" if 50 <= r < 60 or r >= 170 else "GRU" for r in range(len(rows))]
    (data / "samples.tsv").write_text(
        "\n".join([head + "\tconsent", *("\t".join([*f, c]) for f, c in zip(fields, consent, strict=True))]) + "\n"
    )
    unrelated = tmp_path / "unrelated.txt"
    unrelated.write_text("".join(f"{f[0]} {f[1]}\n" for f in fields[:100]))
    ds = open_dataset("main", data, cache_dir=tmp_path / "cache", sample_sets=[("unrelated", unrelated)])
    setup = ConsentSetup(registry_path=tmp_path / "withdrawals.sqlite")
    policy = SitePolicy(min_cohort=10)
    in_set = [r for r in range(100) if not 50 <= r < 60]
    freq = JobSpec(analyses=("freq",), options={"sample_set": "unrelated"})
    assert decide(freq, policy, ds, setup).members.tolist() == sorted(ds.genotype_index[in_set])
    required = JobSpec(analyses=("freq",), options={"sample_set": "unrelated", "require_pheno": "QT"})
    kept = [r for r in in_set if fields[r][qt] != "NA"]  # the fixture's own missing QT values too
    assert len(kept) < len(in_set) - 5
    assert decide(required, policy, ds, setup).members.tolist() == sorted(ds.genotype_index[kept])
    # without the set: every consenting participant, the same code path
    everyone = [r for r in range(180) if not (50 <= r < 60 or r >= 170)]
    assert decide(JobSpec(analyses=("freq",)), policy, ds, setup).members.tolist() == sorted(
        ds.genotype_index[everyone]
    )
    # the set's cohort must meet min_cohort like any other
    with pytest.raises(PolicyRefused, match="below this site's minimum of 100 participants"):
        decide(freq, SitePolicy(min_cohort=100), ds, setup)
    ds.close()


def test_decide__a_set_the_site_does_not_define_is_refused_listing_the_ones_it_does(tmp_path: Path):
    ds = _eur_with_sets(tmp_path, {"unrelated": list(range(50)), "qc_pass": list(range(170))})
    spec = JobSpec(analyses=("freq",), options={"sample_set": "european"})
    with pytest.raises(PolicyRefused) as err:
        decide(spec, SitePolicy(), ds)
    assert str(err.value).startswith(
        "this site defines no sample set 'european' for dataset EUR (its sample sets: unrelated, qc_pass)"
    )
    ds.close()
    plain = open_dataset("EUR", FIXTURE / "EUR", cache_dir=tmp_path / "cache")
    with pytest.raises(PolicyRefused, match=r"no sample set 'european' for dataset EUR \(its sample sets: none\)"):
        decide(spec, SitePolicy(), plain)
    plain.close()


# --- the analyst's side ------------------------------------------------------------------------------


def test_job_spec__the_set_is_a_name_and_is_signed(tmp_path: Path):
    spec = JobSpec(analyses=("freq",), options={"sample_set": "unrelated"}).validated()
    other = JobSpec(analyses=("freq",), options={"sample_set": "qc_pass"}).validated()
    assert b'"sample_set":"unrelated"' in spec.signing_bytes()
    assert spec.signing_bytes() != other.signing_bytes()
    for bad in ("AFR_00001 AFR_00002", "a,b", ""):  # a name, never a list of IDs
        with pytest.raises(InputError, match="invalid sample set name"):
            JobSpec(analyses=("freq",), options={"sample_set": bad}).validated()
    with pytest.raises(InputError, match="job option sample_set must be text of at most 100 characters"):
        JobSpec(analyses=("freq",), options={"sample_set": "x" * 101}).validated()


def test_cli_submit__keep_and_remove_are_refused_and_help_says_why(tmp_path: Path, capsys):
    from fedstat.cli.main import build_parser
    from fedstat.cli.main import main as cli

    ids = tmp_path / "ids.txt"
    ids.write_text("AFR_00001 AFR_00001\n")
    for flag in ("--keep", "--remove"):
        rc = cli(["submit", "--profile", str(tmp_path / "none.toml"), "--freq", flag, str(ids), "--out", "o"])
        assert rc != 0
        err = capsys.readouterr().err
        assert "--keep/--remove take a list of participant IDs, which fedstat does not accept" in err
        assert "--sample-set NAME" in err
    sub = build_parser()._subparsers._group_actions[0].choices["submit"]  # noqa: SLF001
    text = " ".join(sub.format_help().split())
    assert "--sample-set NAME" in text and "participant IDs are not accepted" in text
    assert "--keep FILE" not in text and "[--keep" not in text  # the refused flag is not advertised
    args = build_parser().parse_args(["submit", "--profile", "p", "--freq", "--sample-set", "unrelated", "--out", "o"])
    assert args.sample_set == "unrelated"


# --- through the daemons: the ledger sees a set's releases like any cohort ------------------------


def _restart_with_sets(coord, agents, tmp_path: Path, sets: dict[str, dict[str, list[int]]]) -> None:
    """Restart every site's agent (state kept) with sample sets over its table rows."""
    from site_agent.agent import SiteAgent

    for site in GWAS_SITES:
        ids = [line.split("\t")[:2] for line in (GWAS / site / "samples.tsv").read_text().splitlines()[1:]]
        files = []
        for name, rows in sets[site].items():
            f = tmp_path / f"{site}-{name}.txt"
            f.write_text("".join(f"{ids[r][0]}\t{ids[r][1]}\n" for r in rows))
            files.append((name, f))
        old = agents[site]
        old.stop()
        dataset = DatasetConfig(name="main", path=GWAS / site, sample_sets=tuple(files))
        agent = SiteAgent(dataclasses.replace(old.config, datasets=(dataset,)))
        threading.Thread(target=agent.run, daemon=True).start()
        agents[site] = agent

    def ready() -> bool:
        for site in GWAS_SITES:
            s = coord.registry.get(site)
            if s is None or not s.hello.policies or list(s.hello.policies[0].set_names) != list(sets[site]):
                return False
        return True

    deadline = time.monotonic() + 20
    while not ready():
        assert time.monotonic() < deadline, "site agents did not reconnect with their sets"
        time.sleep(0.05)
    time.sleep(0.2)


def test_attack__a_set_and_everyone_differing_by_one_participant_is_refused_by_the_ledger(
    session_pki, consortium, consortium_agents, tmp_path
):
    # AFR's operator defines qc_pass as every participant but one (one failed QC); the analyst runs
    # --freq over qc_pass, then over everyone: the two releases differ by exactly that participant's
    # genotypes, and AFR's release ledger refuses the second (atom of 1 < min_group 10)
    coord, port = consortium
    n = {s: len((GWAS / s / "samples.tsv").read_text().splitlines()) - 1 for s in GWAS_SITES}
    sets = {s: {"qc_pass": [r for r in range(n[s]) if not (s == "AFR" and r == 17)]} for s in GWAS_SITES}
    _restart_with_sets(coord, consortium_agents, tmp_path, sets)
    with Client(analyst_profile(session_pki, port)) as c:
        policies = c.policies()
        assert {p.site: list(p.set_names) for p in policies.sites} == {s: ["qc_pass"] for s in GWAS_SITES}
        assert list(policies.strictest.set_names) == ["qc_pass"]  # the sets every site defines
        first = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="q", options={"sample_set": "qc_pass"})).job_id)
        assert first.state == "DONE"
        second = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="all")).job_id, raise_on_failure=False)
        assert second.state == "FAILED"
        assert second.error.startswith(
            "site AFR: allele_counts: together with earlier releases of dataset main, these sums would single out "
            "fewer than 10 participants"
        )
        assert not c.get(second.job_id).result_files
        # a set the sites do not define: refused at the offer, naming the sets they do
        third = c.wait(
            c.submit(JobSpec(analyses=("freq",), out_name="u", options={"sample_set": "unrelated"})).job_id,
            raise_on_failure=False,
        )
        assert third.state == "FAILED"
        assert "refused the job: this site defines no sample set 'unrelated' for dataset main (its sample sets: " in (
            third.error
        )
        assert "qc_pass)" in third.error


def test_site_check__shows_each_set_to_the_operator_and_a_bad_set_marks_the_dataset_broken(
    session_pki, tmp_path: Path, capsys
):
    from fedstat.cli.main import main as cli

    tls = session_pki.tls("EUR")
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "few.txt").write_text("#FID IID\nEUR_00002 EUR_00002\nEUR_00001 EUR_00001\n")
    (tmp_path / "sets" / "bad.txt").write_text("EUR_00002 EUR_00002\nEUR_00002\n")

    def check(sets: str) -> int:
        path = tmp_path / "site.toml"
        path.write_text(
            f'[site]\ncoordinator = "localhost:7443"\nstate_dir = "{tmp_path / "state"}"\n\n'
            f'[tls]\nca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n\n'
            f'[[datasets]]\nname = "main"\npath = "{FIXTURE / "EUR"}"\nsample_sets = {{ {sets} }}\n'
        )
        return cli(["site", "check", "--config", str(path)])

    assert check(f'few = "{tmp_path / "sets" / "few.txt"}"') == 0
    assert "dataset main: OK, pgen, 180 samples" in (out := capsys.readouterr().out)
    assert "  sample set few: 2 samples\n" in out
    assert check(f'few = "{tmp_path / "sets" / "few.txt"}", bad = "{tmp_path / "sets" / "bad.txt"}"') == 2
    out = capsys.readouterr().out
    assert f"dataset main: BROKEN: {tmp_path / 'sets' / 'bad.txt'}: line 2: sample set bad names a sample" in out
    assert "FID is 0" in out and "EUR_00002" not in out.split("bad.txt: ", 1)[1]
