"""MaCH r² (``--freq cols=+machr2``, ``--mach-r2-filter``) from pooled dosage sums equals plink2
2.00a3.5 on the pooled data, run in-process over each site's real files (the site agent's path:
build_cohort, the harmonized plan's rows and flips, run_local; the coordinator's plan_job).

tests/data/dosage/edge and the MaCH r² outputs of tests/data/dosage and tests/data/sexchr/dosage
were made by scripts/make_dosage_fixture.py and scripts/make_sexchr_fixture.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator.harmonizer import select_variants
from fedstat.computations import COMPUTATIONS
from fedstat.data.dataset import Dataset, open_dataset
from fedstat.data.variants import harmonize
from fedstat.errors import InputError, ProtocolError
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec, check_round, plan_job, qc_filters
from fedstat.stats import allele, machr2
from fedstat.stats.base import Output, RoundInput, genotype_values, run_local
from fedstat.stats.qc import QcResult, VariantQc, with_mach_r2
from site_agent.job import build_cohort
from site_agent.policy import required_rows

DATA = Path(__file__).parent / "data"
EDGE = DATA / "dosage" / "edge"
SITES = ("AFR", "EAS", "EUR")


def _datasets(root: Path, cache: Path) -> dict[str, Dataset]:
    return {s: open_dataset(s, root / s, cache_dir=cache) for s in SITES}


def _run(spec: JobSpec, datasets: dict[str, Dataset], out: Path) -> tuple[list[dict[str, str]], list[Path], list[str]]:
    """The job over the sites in-process: (each round's parameters, files written, job log lines)."""
    spec = spec.validated()
    h, _ = select_variants(harmonize({s: d.genotypes.variants for s, d in datasets.items()}), spec)
    analysis = plan_job(spec, None, h.variants)
    rounds: list[dict[str, str]] = []
    sums = None
    while (plan := analysis.next_round(sums)) is not None:
        check_round(spec, plan.computation, dict(plan.params))  # what every site checks
        rounds.append({"computation": plan.computation, **plan.params})
        kernel = COMPUTATIONS[plan.computation].kernel
        vidx = np.arange(len(h.variants)) if plan.variants is None else np.asarray(plan.variants)
        total: dict[str, np.ndarray] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for name, d in datasets.items():
            rows, zero_dropped = required_rows(spec, d, np.arange(d.n_samples))  # --require-pheno/-covar
            members = np.sort(d.genotype_index[rows])
            cohort = build_cohort(spec, d, members, zero_dropped)
            inp = RoundInput(params=dict(plan.params), arrays=dict(plan.arrays), variants=vidx)
            local, flip = h.plans[name].local_index[vidx], h.plans[name].flip[vidx]
            values = genotype_values(kernel, inp.params)

            def blocks(d: Dataset = d, local=local, flip=flip, members=members, values=values):  # noqa: ANN001
                return d.genotypes.read_blocks(local, flip=flip, sample_index=members, block_size=7, values=values)

            for o in run_local(kernel, cohort, inp, blocks):
                assert isinstance(o, Output)
                arr = total.setdefault(o.name, np.zeros(o.total, dtype=o.values.dtype))
                shapes[o.name] = o.shape
                arr[o.offset : o.offset + o.values.size] += o.values
        sums = {k: v.reshape(shapes[k]) for k, v in total.items()}
    return rounds, write_result(analysis.result(h.variants), out), analysis.log_lines()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    return _datasets(EDGE, tmp_path_factory.mktemp("cache"))


def test_freq_machr2__edge_cases_equal_plink2(edge: dict[str, Dataset], tmp_path: Path):
    # AFR holds hard calls only (no dosage track), EUR has REF/ALT exchanged on some variants
    assert not edge["AFR"].genotypes.has_dosages and edge["EUR"].genotypes.has_dosages
    spec = JobSpec(analyses=("freq",), out_name="e", options={"freq_cols": "+machr2"})
    rounds, files, _ = _run(spec, edge, tmp_path / "e")
    assert rounds == [{"computation": "allele_counts", "dosage": "1", "machr2": "1"}]
    assert [f.name for f in files] == ["e.afreq"]
    expected = (EDGE / "expected" / "edge.afreq").read_text()
    assert files[0].read_text() == expected
    # the fixture holds what it claims: 0/0 (monomorphic REF and ALT, nobody observed), r2 = 0
    # (one sample), r2 = 2 exactly (hard calls without hets), above 1 (hard calls only)
    r2 = [line.split("\t")[5] for line in expected.splitlines()[1:]]
    assert r2[0] == r2[1] == r2[7] == "nan" and r2[6] == "0" and r2[4] == "2" and float(r2[3]) > 1


def test_freq_machr2__default_columns_release_no_squares(edge: dict[str, Dataset], tmp_path: Path):
    rounds, files, _ = _run(JobSpec(analyses=("freq",), out_name="e"), edge, tmp_path / "e")
    assert rounds == [{"computation": "allele_counts", "dosage": "1"}]
    assert "MACH_R2" not in files[0].read_text().splitlines()[0]
    kernel = COMPUTATIONS["allele_counts"].kernel
    assert machr2.SSQ_NAME not in kernel.sum_arrays({"dosage": "1"}, {})
    assert machr2.SSQ_NAME in kernel.sum_arrays({"dosage": "1", "machr2": "1"}, {})


def test_freq_machr2__x_y_mt_equal_plink2(tmp_path: Path):
    # NA on chrX and MT; chrY over the males, halved (haploid)
    root = DATA / "sexchr" / "dosage"
    spec = JobSpec(analyses=("freq",), out_name="s", options={"freq_cols": "+machr2"})
    rounds, files, _ = _run(spec, _datasets(root, tmp_path / "cache"), tmp_path / "s")
    assert [r["computation"] for r in rounds] == ["allele_counts", "allele_counts_sex"]
    assert rounds[1] == {"computation": "allele_counts_sex", "sex": "male", "dosage": "1", "machr2": "1"}
    assert files[0].read_bytes() == (root / "expected" / "machr2.afreq").read_bytes()


def test_mach_r2_filter__edge_cases_keep_plink2s_variants(edge: dict[str, Dataset], tmp_path: Path):
    # bounds 0.5 and 2: r2 = 2 exactly stays (plink2 widens the bounds by 2^-35), nan stays
    spec = JobSpec(analyses=("freq",), out_name="f", options={"mach_r2_filter": "0.5 2"})
    rounds, files, log = _run(spec, edge, tmp_path / "f")
    assert rounds[0] == {"computation": "qc_counts", "machr2": "1"}
    kept = [line.split("\t")[1] for line in files[0].read_text().splitlines()[1:]]
    assert kept == (EDGE / "expected" / "edgefilter.snplist").read_text().split()
    removed = (EDGE / "expected" / "edgefilter.removed").read_text().splitlines()
    assert removed[0] == "--mach-r2-filter: 2 variants removed." and removed[0] in log
    assert f"{len(kept)} variants remaining after main filters" in log and len(kept) == 18


def test_mach_r2_filter__after_geno_and_hwe_as_plink2(tmp_path: Path):
    # the main dosage fixture on the phenotypes' and covariates' common cohort
    expected = DATA / "dosage" / "expected"
    options = {"geno": "0.4", "hwe": "1e-3", "mach_r2_filter": "0.85 0.95", "require_pheno": "1", "require_covar": "1"}
    # (--glm too: the cohort is its phenotypes' and covariates', as plink2's --require-pheno --require-covar)
    spec = JobSpec(
        analyses=("freq", "glm"), out_name="f", pheno_names=("QT", "CC"), covar_names=("AGE", "SEX"), options=options
    )
    _, files, log = _run(spec, _datasets(DATA / "dosage", tmp_path / "cache"), tmp_path / "f")
    kept = [line.split("\t")[1] for line in files[0].read_text().splitlines()[1:]]
    assert kept == (expected / "r2filter.snplist").read_text().split()
    removed = (expected / "r2filter.removed").read_text().splitlines()
    assert removed[2] == "--mach-r2-filter: 63 variants removed." and removed[2] in log  # among --geno/--hwe's
    assert "--geno: 107 variants removed due to missing genotype data" in log
    assert "--hwe: 49 variants removed due to Hardy-Weinberg exact test" in log
    assert "21 variants remaining after main filters" in log and len(kept) == 21


def test_maf__on_dosage_frequencies_keeps_plink2s_variants(tmp_path: Path):
    # plink2's --maf filters on the dosage frequencies --freq writes (read as hard calls: 0.01+ off)
    expected = DATA / "dosage" / "expected"
    options = {"geno": "0.4", "maf": "0.2", "require_pheno": "1", "require_covar": "1"}
    spec = JobSpec(
        analyses=("freq", "glm"), out_name="f", pheno_names=("QT", "CC"), covar_names=("AGE", "SEX"), options=options
    )
    _, files, log = _run(spec, _datasets(DATA / "dosage", tmp_path / "cache"), tmp_path / "f")
    kept = [line.split("\t")[1] for line in files[0].read_text().splitlines()[1:]]
    assert kept == (expected / "maf.snplist").read_text().split()
    removed = (expected / "maf.removed").read_text().splitlines()
    n_maf = int(removed[1].split()[0])  # plink2: "60 variants removed due to allele frequency threshold(s)"
    assert f"--maf: {n_maf} variants removed due to allele frequency threshold" in log and n_maf > 0
    assert removed[0].rstrip(".") in log and f"{len(kept)} variants remaining after main filters" in log


def test_freq_machr2__cohort_values_equal_plink2(tmp_path: Path):
    # the main fixture (soft, integral and missing dosages, hard calls missing where the dosage is far
    # from an integer, REF/ALT exchanged at EUR) on the common cohort: every line byte for byte
    spec = JobSpec(
        analyses=("freq", "glm"),
        out_name="m",
        pheno_names=("QT", "CC"),
        covar_names=("AGE", "SEX"),
        options={"freq_cols": "+machr2", "require_pheno": "1", "require_covar": "1"},
    )
    _, files, _ = _run(spec, _datasets(DATA / "dosage", tmp_path / "cache"), tmp_path / "m")
    assert files[0].read_bytes() == (DATA / "dosage" / "expected" / "machr2.afreq").read_bytes()


def test_mach_r2__plink2s_two_integer_paths():
    # below 131072 samples: exact integers; above: plink2's product of two doubles. Hard calls in
    # Hardy-Weinberg proportions give 1, hard calls without hets 2, one constant dosage 0.
    u = 16384
    for n in (400, 200_000):
        het, hom = n // 2, n // 4  # p = 1/2
        s1 = np.array([(het + 2 * hom) * u, 2 * hom * u, n * u // 2])
        s2 = np.array([het * u**2 + hom * (2 * u) ** 2, hom * (2 * u) ** 2, n * (u // 2) ** 2])
        got = machr2.mach_r2(s1, s2, np.array([n, hom * 2, n]))
        assert got.tolist() == [1.0, 2.0, 0.0], n
    # beyond 2^64 in n·S2 (500k samples), still the ratio of the exact variances to double precision
    n, s1 = 500_000, 16384 * 400_000 + 5
    s2 = s1 * s1 * 13 // (10 * n)
    got = float(machr2.mach_r2(np.array([s1]), np.array([s2]), np.array([n]))[0])
    assert s2 * n > 2**64 and got == pytest.approx(2 * (s2 * n - s1 * s1) / (n * 32768 * s1 - s1 * s1), rel=1e-13)
    assert np.isnan(machr2.mach_r2(np.array([0]), np.array([0]), np.array([0]))).all()
    # haploid (chrY males, coded 0/2): perfectly called genotypes give 1, as diploid ones do
    assert machr2.mach_r2(np.array([32768]), np.array([32768**2]), np.array([2]), haploid=True).tolist() == [1.0]
    with pytest.raises(InputError, match="inconsistent"):
        machr2.mach_r2(np.array([16384 * 4]), np.array([0]), np.array([3]))  # n·S2 < S1²


def test_local_ssq__dosages_hard_calls_and_missing():
    d = np.array([[0.5, 2.0, -9.0, 1.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    hard = np.array([[-9, 2, -9, 1], [0, 0, 0, 0]], dtype=np.int8)
    counts = allele.local_sums(hard)
    assert machr2.local_ssq(d, counts)[machr2.SSQ_NAME].tolist() == [8192**2 + 32768**2 + 16384**2, 0]
    # a file without dosages: its hard calls are its dosages
    assert machr2.local_ssq(None, counts)[machr2.SSQ_NAME].tolist() == [32768**2 + 16384**2, 0]
    with pytest.raises(InputError, match="above 2"):
        machr2.local_ssq(np.array([[2.5]]), allele.local_sums(np.array([[2]], dtype=np.int8)))


def test_with_mach_r2__plink2s_bounds_nan_and_skipped_chromosomes():
    r2 = np.array([0.1 * (1 - 2**-36), 0.1 * (1 - 2**-34), np.nan, 2.0 * (1 + 2**-36), 2.1, 0.01, 0.01])
    chrom = np.array(["1", "1", "1", "1", "1", "X", "MT"])
    start = QcResult(keep=np.array([True] * 6 + [False]), removed={"geno": 1})
    got = with_mach_r2(start, r2, (0.1, 2.0), chrom)
    assert got.keep.tolist() == [True, False, True, True, False, True, False]
    assert got.removed == {"geno": 1, "mach_r2": 2}  # among the variants --geno kept
    assert got.log_lines()[1] == "--mach-r2-filter: 2 variants removed."
    one = with_mach_r2(QcResult(keep=np.ones(1, dtype=bool), removed={}), np.array([3.0]), (0.1, 2.0))
    assert one.log_lines() == ["--mach-r2-filter: 1 variant removed.", "0 variants remaining after main filters"]


@pytest.mark.parametrize(
    "options,privacy,message",
    [
        ({"mach_r2_filter": ""}, "secagg", "needs its bounds: plink2 2.00a3.5 documents the defaults 0.1 and 2"),
        ({"mach_r2_filter": "-1"}, "secagg", "Invalid --mach-r2-filter min argument '-1' (must be nonnegative)"),
        ({"mach_r2_filter": "0.1 0"}, "secagg", "Invalid --mach-r2-filter max argument '0'"),
        ({"mach_r2_filter": "0.9 0.5"}, "secagg", "min argument cannot be larger than max argument"),
        ({"mach_r2_filter": "0.1 2 3"}, "secagg", "at most two numbers"),
        ({"mach_r2_filter": "nan"}, "secagg", "Invalid --mach-r2-filter min argument"),
        ({"mach_r2_filter": "0.3"}, "dp", "--mach-r2-filter cannot run under --privacy dp"),
        ({"freq_cols": "+machr2"}, "dp", "column machr2 cannot be written under --privacy dp"),
        ({"freq_cols": "+minimac3r2"}, "secagg", "MINIMAC3_R2 needs each variant's phased haplotype dosages"),
    ],
)
def test_spec__mach_r2_options_refused_as_plink2_or_where_not_released(options, privacy, message):
    extra = {"dp_epsilon": "1", "dp_delta": "1e-6"} if privacy == "dp" else {}
    spec = JobSpec(analyses=("freq",), out_name="f", privacy=privacy, options={**options, **extra})
    with pytest.raises(InputError) as err:
        spec.validated()
    assert message in str(err.value)


def test_spec__mach_r2_filter_bounds():
    spec = JobSpec(analyses=("freq",), out_name="f", options={"mach_r2_filter": "0.3"}).validated()
    assert qc_filters(spec)[1] == VariantQc(mach_r2=(0.3, 2.0))


def test_check_round__squared_dosages_only_when_the_signed_spec_asks():
    plain = JobSpec(analyses=("freq",), out_name="f").validated()
    wants = JobSpec(analyses=("freq",), out_name="f", options={"freq_cols": "+machr2"}).validated()
    check_round(wants, "allele_counts", {"dosage": "1", "machr2": "1"})
    check_round(wants, "allele_counts_sex", {"sex": "male", "dosage": "1", "machr2": "1"})
    for spec, computation, params in (
        (plain, "allele_counts", {"dosage": "1", "machr2": "1"}),
        (wants, "allele_counts", {"machr2": "1"}),  # squares without the dosage sums
        (wants, "allele_counts_sex", {"sex": "female", "machr2": "1"}),
        (plain, "qc_counts", {"machr2": "1"}),
    ):
        with pytest.raises(ProtocolError, match="does not belong to the job the analyst signed"):
            check_round(spec, computation, params)
    filt = JobSpec(analyses=("freq",), out_name="f", options={"mach_r2_filter": "0.3 1"}).validated()
    check_round(filt, "qc_counts", {"machr2": "1"})
    with pytest.raises(ProtocolError, match="unexpected parameters"):
        check_round(filt, "qc_counts", {})
