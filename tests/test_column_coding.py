"""Columns and genotype files read as plink2 reads them, or refused with a reason; never silently different.

tests/data/coding (scripts/make_coding_fixture.py) holds sample tables for the GWAS fixture's
genotypes with a 0/1 covariate (B01), a 0/1/2 covariate (C012), a phenotype depending on both
(QT2), a 1/2 case/control phenotype with missing values written 0, -9 and NA (CC12M), a 0/1
phenotype (P01), an unused text column (CAT), and plink2 2.00a3.5's --glm on the pooled data; and
small imputed files (a dosage .pgen made by plink2, a GT+DS VCF, a DS-only VCF).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pgenlib
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.data.genotypes import open_genotypes
from fedstat.data.import_cache import ImportOptions
from fedstat.data.pgen_header import dosage_variant_count
from fedstat.data.samples import read_sample_table
from fedstat.errors import GenotypeFileError, InputError, PolicyRefused
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec
from site_agent.policy import decide
from tests.glm_harness import compare, load_pooled, run_split

DATA = Path(__file__).parent / "data"
CODING = DATA / "coding"
EXPECTED = CODING / "expected"
DOSAGE = CODING / "dosage"
SITES = ("AFR", "EAS", "EUR")


def _coding_table():
    return read_sample_table(CODING / "pooled" / "samples.tsv")


# --- in process: the site computations and the coordinator's job, over the three sites' samples


@pytest.fixture(scope="module")
def coding_glm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pooled = load_pooled()
    job = run_split(("QT2", "CC12M"), ("AGE", "B01", "C012"), frozenset(), pooled.site_of, 3, table=_coding_table())
    out = tmp_path_factory.mktemp("coding") / "coding"
    write_result(job.result(pooled.variants), out)
    assert not any("constant covariate" in line for line in job.log_lines()), job.log_lines()
    return out


@pytest.mark.parametrize("pheno,ext", [("QT2", "glm.linear"), ("CC12M", "glm.logistic.hybrid")])
def test_glm__zero_one_and_count_covariates_are_numbers_as_in_plink2(coding_glm: Path, pheno: str, ext: str):
    ours = Path(f"{coding_glm}.{pheno}.{ext}")
    result = compare(ours, EXPECTED / f"coding.{pheno}.{ext}")
    # 800 variants x (ADD, AGE, B01, C012) rows: every B01 / C012 row is there, as plink2 prints it
    assert result.rows == 3200 and result.key_mismatch == 0, result.mismatches[:3]
    assert result.max_beta_dev_se < 1e-3 and result.max_log10p_dev < 1e-3
    header, *rows = ours.read_text().splitlines()
    tests = [line.split("\t")[header.split("\t").index("TEST")] for line in rows]
    assert tests.count("B01") == tests.count("C012") == 800


def test_glm__zero_one_phenotype_stops_as_plink2_does_with_the_reason():
    pooled = load_pooled()
    with pytest.raises(InputError) as info:
        run_split(("P01",), ("AGE",), frozenset(), pooled.site_of, 3, table=_coding_table())
    message = str(info.value)
    plink2 = (EXPECTED / "p01.error.txt").read_text()
    assert "All samples for --glm phenotype 'P01' are controls." in plink2
    assert "'P01': all samples are controls (plink2 stops here too)" in message
    assert "0 = missing and 1 = control" in message and "1 = control, 2 = case" in message


@pytest.mark.parametrize(
    "values,extra,error",
    [
        # plink2 LoadPhenos: case/control unless some value, anywhere, is neither missing nor 0, 1, 2
        (["1", "2", "0", "NA"], [], None),
        (["1", "2", "-9", "2"], [], None),
        (["1", "2", "1", "2"], ["3"], None),  # one site holds a 3: the pooled column is quantitative
        (["1", "2", "1", "2"], ["0.5"], None),
        (["1", "1", "0", "NA"], [], "all samples are controls"),
        (["2", "2", "2", "NA"], [], "all samples are cases"),
        (["0", "0", "NA", "0"], [], "has no case \\(2\\) or control \\(1\\) left"),
    ],
)
def test_glm__phenotype_coding_decided_over_the_pooled_data(
    tmp_path: Path, values: list[str], extra: list[str], error: str | None
):
    n = 120
    rng = np.random.default_rng(5)
    column = [values[i % 4] for i in range(n)]
    for k, v in enumerate(extra):  # only the last site holds these
        column[n - 1 - 2 * k] = v
    rows = [f"s{i}\t{column[i]}\t{rng.normal():.4f}" for i in range(n)]
    (tmp_path / "t.tsv").write_text("#IID\tY\tX\n" + "\n".join(rows) + "\n")
    table = read_sample_table(tmp_path / "t.tsv")
    geno = rng.integers(0, 3, (5, n)).astype(np.int8)
    site_of = np.repeat([0, 1, 2], n // 3)
    if error is not None:
        with pytest.raises(InputError, match=error):
            run_split(("Y",), ("X",), frozenset(), site_of, 3, geno=geno, table=table)
        return
    job = run_split(("Y",), ("X",), frozenset(), site_of, 3, geno=geno, table=table)
    assert job.results["Y"].is_binary is (not extra)
    expected_n = sum(v in ("1", "2") for v in column) if not extra else sum(v not in ("NA", "-9") for v in column)
    assert job.results["Y"].n_samples == expected_n


# --- text columns


def _dataset(tmp_path: Path, site: str = "EUR"):
    from fedstat.data.dataset import open_dataset

    d = _site_dir(tmp_path, site)
    return open_dataset(site, d, cache_dir=tmp_path / "cache")


def _site_dir(root: Path, site: str) -> Path:
    """A site directory: the GWAS fixture's genotypes, the coding fixture's sample table."""
    d = root / site
    d.mkdir(parents=True, exist_ok=True)
    for f in (DATA / "gwas" / site).iterdir():
        if f.name.startswith("genotypes."):
            target = d / f.name
            if not target.exists():
                target.symlink_to(f)
    shutil.copyfile(CODING / site / "samples.tsv", d / "samples.tsv")
    return d


def test_site_policy__unused_text_column_leaves_the_dataset_usable(tmp_path: Path):
    from fedstat.config import SitePolicy

    dataset = _dataset(tmp_path)
    assert "CAT" in dataset.samples.text
    policy = SitePolicy(allowed_analyses=("freq", "glm"), allowed_privacy=("secagg",), min_cohort=10)
    decision = decide(JobSpec(analyses=("freq",)), policy, dataset)
    assert len(decision.members) == dataset.n_samples
    decision = decide(JobSpec(analyses=("glm",), pheno_names=("QT2",), covar_names=("AGE", "B01")), policy, dataset)
    assert len(decision.members) == dataset.n_samples


def test_site_policy__text_column_as_phenotype_is_refused_naming_column_and_dataset(tmp_path: Path):
    from fedstat.config import SitePolicy

    dataset = _dataset(tmp_path)
    policy = SitePolicy(allowed_analyses=("glm",), allowed_privacy=("secagg",), min_cohort=10)
    with pytest.raises(InputError) as info:
        decide(JobSpec(analyses=("glm",), pheno_names=("CAT",), covar_names=("AGE",)), policy, dataset)
    message = str(info.value)
    assert message.startswith("phenotype column 'CAT' in samples.tsv of dataset EUR holds words, not numbers")
    assert "'A'" not in message and "'B'" not in message


def test_site_policy__text_column_as_covariate_is_categorical_with_its_categories_reported(tmp_path: Path):
    from fedstat.config import SitePolicy

    dataset = _dataset(tmp_path)
    policy = SitePolicy(allowed_analyses=("glm",), allowed_privacy=("secagg",), min_cohort=10)
    decision = decide(JobSpec(analyses=("glm",), pheno_names=("QT2",), covar_names=("AGE", "CAT")), policy, dataset)
    assert decision.levels == {"CAT": ("A", "B", "C")}  # EUR holds 81, 97 and 82 of them
    with pytest.raises(PolicyRefused, match="a category is held by fewer than 90"):
        decide(
            JobSpec(analyses=("glm",), pheno_names=("QT2",), covar_names=("AGE", "CAT")),
            SitePolicy(allowed_analyses=("glm",), allowed_privacy=("secagg",), min_cohort=10, min_group=90),
            dataset,
        )


# --- dosages: a .pgen dosage track is read; a VCF's with vcf_dosage set, else it is refused, never hard-called


def _vcf_ds(path: Path) -> np.ndarray:
    """The DS values of a GT:DS VCF, (variants, samples)."""
    rows = [line.split("\t")[9:] for line in path.read_text().splitlines() if not line.startswith("#")]
    return np.array([[float(cell.split(":")[1]) for cell in row] for row in rows])


def test_open_genotypes__plink2_dosage_pgen_reads_its_dosages_and_hard_calls():
    src = open_genotypes(DOSAGE / "dosage.pgen")
    assert src.has_dosages
    ds = _vcf_ds(DOSAGE / "gtds.vcf")
    n_var = ds.shape[0]
    ((_, dosages),) = src.read_blocks(np.arange(n_var), block_size=n_var, values="dosages")
    ((_, hard),) = src.read_blocks(np.arange(n_var), block_size=n_var)
    ((_, both),) = src.read_blocks(np.arange(n_var), block_size=n_var, values="both")
    # plink2 stores DS at 1/16384 (rounded half up) and derives hard calls from it: a call where the
    # dosage is within 0.1 of an integer (1638/16384), missing otherwise
    units = np.floor(ds * 16384 + 0.5)
    assert dosages.dtype == np.float32 and np.array_equal(dosages * 16384, units)
    halfdist = np.abs(units % 16384 - 8192)
    expect_hard = np.where(halfdist >= 8192 - 1638, np.floor((units + 8192) / 16384), -9)
    assert hard.dtype == np.int8 and np.array_equal(hard, expect_hard)
    assert (hard == -9).any() and (hard >= 0).any()  # the fixture holds both kinds
    assert np.array_equal(both.hardcalls, hard) and np.array_equal(both.dosages, dosages)
    # flipped (REF/ALT exchanged at this site): 2 - d, exactly
    ((_, flipped),) = src.read_blocks(np.arange(n_var), block_size=n_var, values="dosages", flip=np.ones(n_var, bool))
    assert np.array_equal(flipped, 2 - dosages)


def test_open_genotypes__hard_call_file_gives_hard_calls_for_dosages():
    src = open_genotypes(DATA / "consortium" / "EUR")
    assert not src.has_dosages
    ((_, hard),) = src.read_blocks(np.arange(5), block_size=5)
    ((_, as_dosages),) = src.read_blocks(np.arange(5), block_size=5, values="dosages")
    ((_, both),) = src.read_blocks(np.arange(5), block_size=5, values="both")
    assert as_dosages.dtype == np.int8 and np.array_equal(as_dosages, hard)
    assert both.dosages is None and np.array_equal(both.hardcalls, hard)


@pytest.mark.parametrize(
    "name,holds,or_gt",
    [
        ("gtds.vcf", "(FORMAT DS)", True),
        ("dsonly.vcf", "(FORMAT DS, and no GT)", False),
    ],
)
def test_open_genotypes__vcf_with_dosages_and_no_vcf_dosage_is_refused_and_leaves_no_cache(
    tmp_path: Path, name, holds, or_gt
):
    path = DOSAGE / name
    with pytest.raises(GenotypeFileError) as info:
        open_genotypes(path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert message.startswith(f"{path}: holds imputed dosages {holds}")
    assert 'Set vcf_dosage = "DS" in this dataset\'s [[datasets]] entry in site.toml' in message
    assert f"`plink2 --vcf {path} dosage=DS` does" in message
    assert ('or vcf_dosage = "GT" to use its GT hard calls only' in message) == or_gt
    assert not any((tmp_path / "cache").glob("*.pgen"))


@pytest.mark.parametrize("name", ["gtds.vcf", "dsonly.vcf"])
def test_open_genotypes__vcf_dosage_ds_reads_what_plink2_imported(tmp_path: Path, name):
    # dosage.pgen is plink2's own import of gtds.vcf (dosage=DS); dsonly.vcf holds the same DS values
    want = open_genotypes(DOSAGE / "dosage.pgen")
    src = open_genotypes(DOSAGE / name, cache_dir=tmp_path / "cache", options=ImportOptions(vcf_dosage="DS"))
    assert src.has_dosages
    n_var = len(want.variants)
    ((_, expect),) = want.read_blocks(np.arange(n_var), block_size=n_var, values="both")
    ((_, got),) = src.read_blocks(np.arange(n_var), block_size=n_var, values="both")
    assert np.array_equal(got.dosages, expect.dosages) and np.array_equal(got.hardcalls, expect.hardcalls)
    # vcf_dosage = "GT": the hard calls of GT only, as plink2 without dosage=
    if name == "gtds.vcf":
        hard = open_genotypes(DOSAGE / name, cache_dir=tmp_path / "cache", options=ImportOptions(vcf_dosage="GT"))
        assert not hard.has_dosages
        ((_, gt),) = hard.read_blocks(np.arange(n_var), block_size=n_var)
        assert (gt >= 0).all() and not np.array_equal(gt, expect.hardcalls)


def test_open_genotypes__dosage_field_used_by_a_record_but_not_declared(tmp_path: Path):
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1>", '##FORMAT=<ID=GT,Number=1,Type=String,Description="g">']
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb")
    lines += [f"1\t{10 + v}\t.\tA\tG\t.\t.\t.\tGT\t0/1\t1/1" for v in range(3)]
    lines.append("1\t20\t.\tA\tG\t.\t.\t.\tGT:GP\t0/1:0.1,0.8,0.1\t1/1:0,0.2,0.8")
    path = tmp_path / "gp.vcf"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GenotypeFileError) as info:
        open_genotypes(path, cache_dir=tmp_path / "cache")
    assert "holds imputed dosages (FORMAT GP at record 4 (1:20), undeclared in the header)" in str(info.value)


def test_open_genotypes__vcf_without_gt_or_dosage_is_refused_not_read_as_missing(tmp_path: Path):
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1>", '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="d">']
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb")
    lines += [f"1\t{10 + v}\t.\tA\tG\t.\t.\t.\tAD\t3,1\t0,4" for v in range(3)]
    path = tmp_path / "ad.vcf"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GenotypeFileError, match="no record has a GT field, so no sample has a genotype call"):
        open_genotypes(path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("n_samples", [1, 3, 40, 1000])
@pytest.mark.parametrize("soft", [True, False])
def test_dosage_variant_count__pgenlib_written_files_of_every_header_layout(tmp_path: Path, n_samples, soft):
    # pgenlib picks compact header encodings for tiny sample counts, 8-bit record types otherwise
    rng = np.random.default_rng(n_samples)
    n_var = 7
    path = tmp_path / "g.pgen"
    writer = pgenlib.PgenWriter(os.fsencode(path), n_samples, variant_ct=n_var, nonref_flags=False, dosage_present=True)
    for v in range(n_var):
        d = rng.integers(0, 3, n_samples).astype(np.float32)
        if soft and v % 3 == 0:
            d[0] = 0.25
        writer.append_dosages(d)
    writer.close()
    expected = len(range(0, n_var, 3)) if soft else 0
    assert dosage_variant_count(path, n_var, n_samples) == expected


# --- through the real daemons: the covariate case, a used text column, an unused one


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("coding-sites")
    sites = [a for s in SITES for a in ("--site", f"{s}={_site_dir(root, s)}")]
    ws = root / "W"
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_e2e_glm__zero_one_covariate_equals_plink2_through_the_daemons(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "coding"
    rc = cli(
        ["submit", "--profile", str(workspace / "analyst.toml"), "--glm", "show-covar", "--pheno-name", "QT2,CC12M", "--require-pheno",
         "--covar-name", "AGE,B01,C012", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    for pheno, ext in (("QT2", "glm.linear"), ("CC12M", "glm.logistic.hybrid")):
        # plink2 --require-pheno: CC12M's 0, -9 and NA and QT2's NA left out up front at every site
        ours, theirs = Path(f"{out}.{pheno}.{ext}"), EXPECTED / f"required.{pheno}.{ext}"
        result = compare(ours, theirs)
        assert result.rows == 3200 and result.key_mismatch == 0, result.mismatches[:3]
        assert result.max_beta_dev_se < 1e-3
        # p-values of the ADD rows; at one logistic variant plink2's covariate-row SEs differ by up to
        # 0.8% (log10 P of AGE by 0.11) with equal ORs, a convergence-boundary difference of the final
        # Hessian that predates the release gate (reported on issue 14)
        add = tmp_path / f"add.{ext}"
        for src, dst in ((ours, add), (theirs, tmp_path / f"ref.{ext}")):
            lines = src.read_text().splitlines()
            dst.write_text("\n".join([lines[0], *(x for x in lines[1:] if "\tADD\t" in x)]) + "\n")
        assert compare(add, tmp_path / f"ref.{ext}").max_log10p_dev < 1e-3
    log = Path(f"{out}.provenance.json").read_text()
    assert "constant covariate" not in log


def test_e2e__text_column_as_phenotype_is_refused_naming_column_and_site(workspace: Path, tmp_path: Path, capsys):
    rc = cli(
        ["submit", "--profile", str(workspace / "analyst.toml"), "--glm", "--pheno-name", "CAT",
         "--covar-name", "AGE", "--out", str(tmp_path / "cat")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "phenotype column 'CAT' in samples.tsv of dataset" in err and "holds words" in err
    assert any(f"site {s}" in err for s in SITES)


def test_e2e__unused_text_column_does_not_stop_freq(workspace: Path, tmp_path: Path, capsys):
    rc = cli(["submit", "--profile", str(workspace / "analyst.toml"), "--freq", "--out", str(tmp_path / "f")])
    assert rc == 0, capsys.readouterr().err
    assert len((tmp_path / "f.afreq").read_text().splitlines()) == 801


def test_hwe_controls__quantitative_phenotype_is_refused_not_read_as_controls():
    from fedstat.computations import LOCAL_COMPUTATIONS
    from fedstat.stats.base import Cohort, RoundInput

    qc = LOCAL_COMPUTATIONS["qc_counts"]
    inp = RoundInput(params={"controls": "Y"}, arrays={}, variants=np.arange(2))
    block = np.array([[0, 1, 2, 1], [2, 2, 0, -9]], dtype=np.int8)
    # a value of exactly 1.0 in a quantitative column is not a control
    quantitative = Cohort(n=4, columns={"Y": np.array([1.0, 2.0, 1.5, np.nan])})
    with pytest.raises(InputError, match="--hwe controls: phenotype 'Y' is not case/control"):
        qc.block_sums(block, quantitative, inp, slice(0, 2))
    coded = Cohort(n=4, columns={"Y": np.array([1.0, 2.0, 0.0, 1.0])})  # 0 = missing, not a control
    sums = qc.block_sums(block, coded, inp, slice(0, 2))
    assert sums["control_hom_ref"].tolist() == [1, 0] and sums["control_het"].tolist() == [1, 0]


def test_require_pheno__zeros_dropped_only_where_the_pooled_coding_is_checked(tmp_path: Path):
    from fedstat.config import SitePolicy

    dataset = _dataset(tmp_path)
    policy = SitePolicy(min_cohort=10)
    cc = np.asarray(dataset.samples.column("CC12M"))
    assert (cc == 0).any()
    glm = JobSpec(analyses=("glm",), pheno_names=("CC12M",), options={"require_pheno": "1"})
    decision = decide(glm, policy, dataset)
    # NA, -9 and 0 left out (0 read as case/control-missing here; --glm checks the pooled coding)
    assert len(decision.members) == int(np.isin(cc, (1.0, 2.0)).sum())
    assert decision.zero_dropped == {"CC12M": int((cc == 0).sum())}
    freq = JobSpec(analyses=("freq",), pheno_names=("CC12M",), options={"require_pheno": "1"})
    with pytest.raises(InputError, match="does not analyse it with --glm/--assoc/--model to check that"):
        decide(freq, policy, dataset)
    # a required phenotype the job does not analyse: nothing checks its pooled coding either
    other = JobSpec(analyses=("glm",), pheno_names=("QT2",), options={"require_pheno": "QT2,CC12M"})
    with pytest.raises(InputError, match="phenotype CC12M holds 0 values here"):
        decide(other, policy, dataset)


def test_require_pheno_names__a_job_runs_on_the_common_cohort_of_the_phenotypes_named():
    # as plink2's --require-pheno QT CC: an --assoc of CC keeps only participants who have QT too
    from fedstat.config import SitePolicy
    from fedstat.data.dataset import open_dataset

    gwas = Path(__file__).parent / "data" / "gwas"
    dataset = open_dataset("EUR", gwas / "EUR", cache_dir=Path(tempfile.mkdtemp()))
    qt, cc = (np.asarray(dataset.samples.column(n)) for n in ("QT", "CC"))
    assert np.isnan(qt).any() and np.isnan(cc).any() and not (np.isnan(qt) & np.isnan(cc)).all()
    policy = SitePolicy(min_cohort=10)
    cc_only = decide(JobSpec(analyses=("assoc",), pheno_names=("CC",), options={"require_pheno": "1"}), policy, dataset)
    common = decide(
        JobSpec(analyses=("assoc",), pheno_names=("CC",), options={"require_pheno": "QT,CC"}), policy, dataset
    )
    rows_of = np.asarray(dataset.genotype_index)
    assert len(cc_only.members) == int((~np.isnan(cc)).sum())
    assert sorted(common.members.tolist()) == sorted(rows_of[~np.isnan(qt) & ~np.isnan(cc)].tolist())
    # the same cohort as the GWAS of both on their common cohort
    both = decide(JobSpec(analyses=("glm",), pheno_names=("QT", "CC"), options={"require_pheno": "1"}), policy, dataset)
    assert np.array_equal(np.sort(both.members), np.sort(common.members))


@pytest.mark.parametrize(
    ("value", "ok"), [("1", True), ("QT,CC", True), ("QT", True), ("QT,,CC", False), ("Q T", False), ("QT,QT", False)]
)
def test_job_spec__require_pheno_is_on_or_names_columns(value, ok):
    spec = JobSpec(analyses=("assoc",), pheno_names=("CC",), out_name="o", options={"require_pheno": value})
    if ok:
        spec.validated()
    else:
        with pytest.raises(InputError, match="require_pheno must be"):
            spec.validated()


def test_glm__a_site_that_dropped_zeros_of_a_pooled_quantitative_phenotype_stops_the_job():
    from fedstat.stats.base import Cohort
    from fedstat.stats.glm import GlmJob
    from tests.glm_harness import run_job

    rng = np.random.default_rng(3)
    geno = rng.integers(0, 3, (4, 60)).astype(np.int8)
    y0 = rng.choice([1.0, 2.0], 30)  # site 0: only 1/2 left after dropping its 0s as missing
    y1 = rng.normal(1.5, 1.0, 30)  # site 1: a quantitative trait
    x = rng.normal(size=60)
    sites = [
        (Cohort(n=30, columns={"Y": y0, "X": x[:30]}, zero_dropped={"Y": 4}), np.arange(30)),
        (Cohort(n=30, columns={"Y": y1, "X": x[30:]}), np.arange(30, 60)),
    ]
    with pytest.raises(InputError, match="phenotype 'Y' is quantitative over the pooled data, but a site"):
        run_job(GlmJob(("Y",), ("X",), frozenset()), geno, sites)
