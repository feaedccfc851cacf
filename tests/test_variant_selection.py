"""Chromosome codes read as plink2 reads them, X/Y/MT left out, and plink2's variant selection flags
(--chr, --not-chr, --from-bp/--to-bp, --extract, --exclude, --snps-only).

References: plink2 2.00a3.5 on the pooled consortium fixture, with the flags of
``scripts/make_fixtures.py``'s ``SELECT_RUNS`` (``expected/sel-<name>.snplist`` and ``.removed``),
and codes and allele rules measured with the plink2 binary (the hand-written tables below).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coordinator.harmonizer import select_variants
from fedstat.cli import poc
from fedstat.cli.main import build_parser
from fedstat.cli.main import main as cli
from fedstat.cli.selection import selection_options
from fedstat.client import Client
from fedstat.data.genotypes import open_genotypes
from fedstat.data.variants import VariantTable, harmonize, normalise_chrom
from fedstat.errors import InputError, JobFailed
from fedstat.jobs import JobSpec, variant_selection
from fedstat.jobs import selection as selection_module
from fedstat.jobs.selection import read_id_list
from tests.conftest import FIXTURE, analyst_profile

EXPECTED = FIXTURE / "expected"
SELECT = FIXTURE / "select"
#: plink2's flags of make_fixtures.py's SELECT_RUNS, with the fixture's ID lists
RUNS = {
    "chr": ["--chr", "1-4,22"],
    "not-chr": ["--not-chr", "2-21"],
    "bp": ["--chr", "chr3", "--from-bp", "214494", "--to-bp", "430984"],
    "extract": ["--extract", str(SELECT / "extract.txt")],
    "exclude": ["--exclude", str(SELECT / "exclude.txt")],
    "extract-maf": [
        "--extract",
        str(SELECT / "extract.txt"),
        "--exclude",
        str(SELECT / "exclude.txt"),
        "--maf",
        "0.05",
    ],  # fmt: skip
    "chr-mind": ["--chr", "1-11", "--mind", "0.021", "--geno", "0.01"],
}


def _spec(flags: list[str], **kw: object) -> JobSpec:
    """The spec `fedstat submit --freq <flags>` makes (its option handling, without a coordinator)."""
    args = build_parser().parse_args(["submit", "--profile", "p.toml", "--freq", *flags, "--out", "o"])
    options = selection_options(args)
    for key in ("mind", "geno", "maf"):
        if getattr(args, key) is not None:
            options[key] = repr(getattr(args, key))
    return JobSpec(analyses=("freq",), out_name="f", options=options, **kw).validated()  # type: ignore[arg-type]


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- A: chromosome codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "plink2"),
    [  # measured: plink2 --pvar t.pvar --make-just-pvar --allow-extra-chr
        ("chr1", "1"), ("chr22", "22"), ("01", "1"), ("chr01", "1"), ("CHR2", "2"), ("0", "0"), ("chr00", "0"),
        ("23", "X"), ("chr23", "X"), ("chrX", "X"), ("x", "X"), ("chrx", "X"),
        ("24", "Y"), ("chrY", "Y"), ("y", "Y"), ("25", "XY"), ("XY", "XY"), ("chrxy", "XY"),
        ("26", "MT"), ("chrM", "MT"), ("M", "MT"), ("MT", "MT"), ("mt", "MT"), ("Chrm", "MT"),
        ("27", "PAR1"), ("chr27", "PAR1"), ("par1", "PAR1"), ("28", "PAR2"), ("chrPAR1", "chrPAR1"),
        ("chrUn_gl1", "chrUn_gl1"), ("Un_gl1", "Un_gl1"), ("chr1_random", "chr1_random"), ("100", "100"),
        ("010", "010"), ("chr010", "chr010"), ("chr", "chr"), ("chrM_x", "chrM_x"),
    ],
)  # fmt: skip
def test_normalise_chrom__reads_codes_as_plink2(written: str, plink2: str):
    assert normalise_chrom(written) == plink2


def _rewrite_chroms(path: Path, col: int, codes: dict[str, str], *, sep: str = "\t") -> None:
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        if line.startswith("#") or not line.strip():
            out.append(line)
            continue
        f = line.split(sep) if sep == "\t" else line.split()
        f[col] = codes.get(f[col], f[col])
        out.append("\t".join(f))
    path.write_text("\n".join(out) + "\n")


def test_harmonize__sites_naming_chromosomes_differently_hold_the_same_variants(tmp_path: Path):
    # AFR writes chr1..chr22 with chromosome 21 as chrX; EUR writes 1..22 with chromosome 21 as 23
    for site in ("AFR", "EUR"):
        shutil.copytree(FIXTURE / site, tmp_path / site)
    _rewrite_chroms(tmp_path / "AFR" / "genotypes.bim", 0, {**{str(c): f"chr{c}" for c in range(1, 23)}, "21": "chrX"})
    _rewrite_chroms(tmp_path / "EUR" / "genotypes.pvar", 0, {"21": "23"})
    tables = {}
    for site in ("AFR", "EUR"):
        with open_genotypes(tmp_path / site) as g:
            tables[site] = g.variants
    h = harmonize(tables)
    assert len(h.variants) == 1500 and h.n_excluded == 0
    assert set(h.variants.chrom) == {*(str(c) for c in range(1, 21)), "22", "X"}  # plink2's codes
    assert list(h.variants.chrom[-68:]) == ["X"] * 68  # X sorts after 22, as plink2 sorts it


@pytest.fixture()
def consortium_data(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The consortium fixture; with param "renamed", a copy whose sites name chromosomes each their
    own way, chromosome 20 as X and 21 as XY (the pseudo-autosomal region)."""
    if getattr(request, "param", None) != "renamed":
        return FIXTURE
    root = tmp_path / "data"
    for site in ("AFR", "EAS", "EUR"):
        shutil.copytree(FIXTURE / site, root / site)
    _rewrite_chroms(
        root / "AFR" / "genotypes.bim", 0, {**{str(c): f"chr{c}" for c in range(1, 23)}, "20": "chrX", "21": "25"}
    )
    _rewrite_chroms(
        root / "EUR" / "genotypes.pvar", 0, {**{str(c): f"0{c}" for c in range(1, 10)}, "20": "23", "21": "XY"}
    )
    vcf = root / "EAS" / "genotypes.vcf.gz"
    lines = gzip.decompress(vcf.read_bytes()).decode().splitlines()
    names = {"20": "X", "21": "chrXY"}
    out = []
    for line in lines:
        if line.startswith("##contig=<ID="):
            cid = line[len("##contig=<ID=") :].split(",")[0].rstrip(">")
            line = line.replace(f"ID={cid}", f"ID={names.get(cid, cid)}", 1)
        elif not line.startswith("#"):
            chrom, rest = line.split("\t", 1)
            line = f"{names.get(chrom, chrom)}\t{rest}"
        out.append(line)
    vcf.unlink()
    (root / "EAS" / "genotypes.vcf").write_text("\n".join(out) + "\n")
    return root


def _run(session_pki, port: int, spec: JobSpec, out: Path) -> tuple[object, list[str]]:
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(spec).job_id, raise_on_failure=False)
        files = c.fetch_results(job.job_id, out) if job.state == "DONE" else []
    return job, files


@pytest.mark.parametrize("consortium_data", ["renamed"], indirect=True)
def test_job__chromosome_names_harmonize_and_x_is_left_out_with_a_log_line(session_pki, consortium, tmp_path):
    # under a variant filter (here --geno 1, which keeps every variant) fedstat leaves X/Y/MT out:
    # the filters do not count them by sex yet (tests/test_sexchr.py: the reports without filters do)
    _, port = consortium
    job, _ = _run(session_pki, port, JobSpec(analyses=("freq",), out_name="f", options={"geno": "1"}), tmp_path / "out")
    assert job.state == "DONE", job.error
    log = "\n".join(job.log)
    assert "harmonized 1500 variants present at all 3 sites; 0 excluded" in log
    assert "68 variants on chrX/chrY/MT left out: --mind/--geno/--hwe/--maf do not count them yet" in log
    # plink2 on the pooled data with --not-chr X,Y,MT: chromosomes 1-19 and 22, then XY (diploid, kept)
    head, *rows = _rows(EXPECTED / "pooled.afreq")
    kept = [r for r in rows if r.split("\t")[0] not in ("20", "21")]
    xy = ["XY" + r[2:] for r in rows if r.split("\t")[0] == "21"]
    assert _rows(tmp_path / "out" / "f.afreq") == [head, *kept, *xy]


# --- C: the selection flags against plink2 --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNS))
def test_job__selection_keeps_what_plink2_keeps_before_qc(session_pki, consortium, tmp_path, name):
    _, port = consortium
    spec = _spec(RUNS[name])
    job, _ = _run(session_pki, port, spec, tmp_path / "out")
    assert job.state == "DONE", job.error
    ours = _rows(tmp_path / "out" / "f.afreq")
    expected_ids = (EXPECTED / f"sel-{name}.snplist").read_text().split()
    assert [r.split("\t")[1] for r in ours[1:]] == expected_ids
    log = "\n".join(job.log)
    assert " variants selected by --" in log
    for line in (EXPECTED / f"sel-{name}.removed").read_text().splitlines():
        flt, n = line.split("\t")
        if flt != "mind":  # --mind's count reaches the log coarsened (count_granularity)
            assert f"--{flt}: {n} variants removed" in log
    if "--mind" not in RUNS[name]:  # the same participants: each row is plink2's on the pooled file
        head, *rows = _rows(EXPECTED / "pooled.afreq")
        keep = set(expected_ids)
        assert ours == [head, *(r for r in rows if r.split("\t")[1] in keep)]


def test_job__snps_only_and_not_chr_keep_every_snv_as_plink2(session_pki, consortium, tmp_path):
    _, port = consortium
    job, _ = _run(session_pki, port, _spec(["--snps-only", "just-acgt", "--not-chr", "X,Y,MT"]), tmp_path / "out")
    assert job.state == "DONE", job.error
    assert "1500 of 1500 variants selected by --not-chr/--snps-only" in "\n".join(job.log)
    assert (tmp_path / "out" / "f.afreq").read_bytes() == (EXPECTED / "pooled.afreq").read_bytes()


def test_job__extract_selecting_nothing_fails_with_a_clear_message(session_pki, consortium, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("rs_absent_1\nrs_absent_2\n")
    _, port = consortium
    job, files = _run(session_pki, port, _spec(["--extract", str(ids)]), tmp_path / "out")
    assert job.state == "FAILED" and not files
    assert "no variant selected: --extract keep none of the 1500 harmonized variants" in job.error


# --- selection on a harmonized table --------------------------------------------------------------

#: alleles of plink2 --snps-only [just-acgt] (measured: s1..s11 of a hand-made VCF)
ALLELES = VariantTable.from_lists(
    ["1", "1", "2", "3", "21", "22", "X", "Y", "XY", "MT", "chrUn_gl1"],
    [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99],
    [f"s{i}" for i in range(1, 12)],
    ["A", "AT", "A", "a", "A", "A", "A", "A", "A", "A", "A"],
    ["G", "G", "N", "g", "*", ".", "C", "C", "C", "C", "C"],
)


@pytest.mark.parametrize(
    ("flags", "plink2"),
    [
        (["--snps-only"], "s1 s3 s4 s5 s6 s7 s8 s9 s10 s11"),
        (["--snps-only", "just-acgt"], "s1 s4 s6 s7 s8 s9 s10 s11"),
        (["--chr", "0-2"], "s1 s2 s3"),
        (["--chr", "chr1-chr3"], "s1 s2 s3 s4"),
        (["--chr", "1-3", "--not-chr", "2"], "s1 s2 s4"),
        (["--chr", "1", "2"], "s1 s2 s3"),
        (["--chr", "1-4", "XY"], "s1 s2 s3 s4 s9"),
        (["--chr", "20-25"], "s5 s6 s7 s8 s9"),
        (["--chr", "1-26"], "s1 s2 s3 s4 s5 s6 s7 s8 s9 s10"),
        (["--chr", "chrUn_gl1"], "s11"),
        (["--not-chr", "X,Y,MT"], "s1 s2 s3 s4 s5 s6 s9 s11"),
        (["--chr", "1", "--from-bp", "15"], "s2"),
        (["--chr", "1", "--to-bp", "15"], "s1"),
        (["--chr", "1", "--from-bp", "10", "--to-bp", "10"], "s1"),
    ],
)
def test_variant_selection__keeps_what_plink2_keeps(flags: list[str], plink2: str):
    keep = variant_selection(_spec(flags)).keep(ALLELES)
    assert " ".join(ALLELES.id[keep]) == plink2


def test_select_variants__subsets_every_site_plan_and_leaves_out_x_y_mt():
    a = VariantTable.from_lists(
        ["1", "X", "2", "MT", "XY"], [5, 6, 7, 8, 9], list("abcde"), list("AAAAA"), list("GGGGG")
    )
    b = a.flipped(np.array([True, False, True, False, False])).take(np.array([4, 3, 2, 1, 0]))
    h = harmonize({"A": a, "B": b})
    # under a variant filter X/Y/MT are left out of the whole job
    chosen, lines = select_variants(h, _spec(["--not-chr", "2", "--geno", "1"]))
    assert list(chosen.variants.id) == ["a", "e"]
    assert lines == [
        "4 of 5 variants selected by --not-chr",
        "2 variants on chrX/chrY/MT left out: --mind/--geno/--hwe/--maf do not count them yet "
        "(results are plink2's with --not-chr X,Y,MT)",
    ]
    assert list(chosen.plans["A"].local_index) == [0, 4] and list(chosen.plans["B"].local_index) == [4, 0]
    assert list(chosen.plans["B"].flip) == [True, False]
    with pytest.raises(JobFailed, match=r"keep none of the 5 harmonized variants \(1 on chrX/chrY/MT"):
        select_variants(h, _spec(["--chr", "X", "--geno", "1"]))
    # the allele reports alone count them (fedstat.stats.sexchr); --chr X selects them
    chosen, lines = select_variants(h, _spec(["--not-chr", "2"]))
    assert list(chosen.variants.id) == ["a", "b", "e", "d"] and lines == ["4 of 5 variants selected by --not-chr"]
    chosen, _ = select_variants(h, _spec(["--chr", "X"]))
    assert list(chosen.variants.id) == ["b"]
    # --glm regresses them too (fedstat.stats.glm_sexchr); beside --assoc it leaves them out, said in the log
    glm = JobSpec(analyses=("freq", "glm"), out_name="f", pheno_names=("QT",)).validated()
    chosen, lines = select_variants(h, glm)
    assert len(chosen.variants) == 5 and lines == []
    chosen, _ = select_variants(h, replace(glm, options={"chr": "X"}))
    assert list(chosen.variants.id) == ["b"]
    assoc = JobSpec(analyses=("freq", "glm", "assoc"), out_name="f", pheno_names=("CC",)).validated()
    chosen, lines = select_variants(h, assoc)
    assert len(chosen.variants) == 5
    assert lines == [
        "2 variants on chrX/chrY/MT are counted in --freq only: --glm/--assoc leave them out (their results are "
        "plink2's with --not-chr X,Y,MT)"
    ]
    with pytest.raises(JobFailed, match="no variant left for --glm/--assoc: all 1 selected variants are on chrX"):
        select_variants(h, replace(assoc, options={"chr": "X"}))


# --- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"from_bp": "5"}, "--from-bp and --to-bp must be used with --chr, and only one chromosome"),
        ({"chr": "1,2", "to_bp": "5"}, "--from-bp and --to-bp must be used with --chr, and only one chromosome"),
        ({"chr": "1-22", "from_bp": "5"}, "only one chromosome"),
        ({"chr": "1", "from_bp": "15", "to_bp": "10"}, "--to-bp 10 is smaller than --from-bp 15"),
        ({"chr": "1", "from_bp": "1.5"}, "--from-bp takes a base-pair position"),
        ({"chr": "3-1"}, "--chr chromosome code '1' is not greater than '3'"),
        ({"chr": "21-X"}, "--chr chromosome code 'X' cannot be an end of a range"),
        ({"not_chr": "1-1-2"}, "invalid --not-chr parameter '1-1-2'"),
        ({"chr": ","}, "--chr names no chromosome"),
        ({"snps_only": "foo"}, "invalid --snps-only argument 'foo'"),
        ({"extract": ""}, "--extract lists no variant ID"),
    ],
)
def test_spec__malformed_selection_is_refused_naming_the_flag(options: dict[str, str], message: str):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        JobSpec(analyses=("freq",), options=options).validated()


def test_read_id_list__whitespace_as_plink2_and_a_too_long_list_refused(monkeypatch):
    assert read_id_list("--extract f", " rs1\trs2\r\n\nrs1  rs3 ", max_chars=100) == "rs1 rs2 rs3"
    with pytest.raises(InputError, match="--extract f file lists no variant ID"):
        read_id_list("--extract f", " \n", max_chars=100)
    with pytest.raises(InputError, match=r"lists 3 variant IDs \(11 characters\); a job carries at most"):
        read_id_list("--extract f", "rs1 rs2 rs3", max_chars=10)
    monkeypatch.setattr(selection_module, "MAX_VARIANT_IDS", 2)
    with pytest.raises(InputError, match="at most 2 IDs"):
        read_id_list("--extract f", "rs1 rs2 rs3", max_chars=100)


def test_submit__refusals_exit_2_before_reaching_a_coordinator(tmp_path: Path, capsys):
    profile = str(tmp_path / "absent.toml")
    assert cli(["submit", "--profile", profile, "--freq", "--from-bp", "5", "--out", str(tmp_path / "o")]) == 2
    assert "--from-bp and --to-bp must be used with --chr, and only one chromosome" in capsys.readouterr().err
    big = tmp_path / "big.txt"
    big.write_text("\n".join(f"rs{i}" for i in range(300_000)))  # 2.3 MB of IDs
    assert cli(["submit", "--profile", profile, "--freq", "--extract", str(big), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "file lists 300000 variant IDs" in err and "at most 2000000 characters" in err


# --- through the real daemons -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("sel") / "W"
    sites = [a for s in ("AFR", "EAS", "EUR") for a in ("--site", f"{s}={FIXTURE / s}")]
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_submit__extract_exclude_then_maf_through_the_daemons_equals_plink2(workspace: Path, tmp_path: Path, capsys):
    profile = str(workspace / "analyst.toml")
    out = tmp_path / "sel"
    rc = cli(["submit", "--profile", profile, "--freq", *RUNS["extract-maf"], "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    kept = [r.split("\t")[1] for r in _rows(tmp_path / "sel.afreq")[1:]]
    assert kept == (EXPECTED / "sel-extract-maf.snplist").read_text().split()
    prov = json.loads((tmp_path / "sel.provenance.json").read_text())
    log = "\n".join(prov["log"])
    assert "200 of 1500 variants selected by --extract/--exclude" in log
    assert "--maf: 16 variants removed due to allele frequency threshold" in log
    assert len(prov["spec"]["options"]["extract"].split()) == 302  # the IDs travel in the signed spec
    # the job list leaves the ID lists out (many jobs in one message); the job itself keeps them
    assert cli(["jobs", "list", "--profile", profile]) == 0
    with Client.from_profile(profile) as c:
        (listed,) = [j for j in c.list_jobs() if j.spec.out_name == "sel"]
        assert "extract" not in listed.spec.options
