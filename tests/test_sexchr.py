"""chrX (PAR positions coded X, PAR1, XY), chrY and MT in --freq/--geno-counts/--hardy/--missing
equal plink2 2.00a3.5 on the pooled data, run in-process over the three sites' real files.

tests/data/sexchr was made by scripts/make_sexchr_fixture.py: AFR a .bed (sex in the .fam, 23/24/
25/26 chromosome codes), EAS a VCF (sex from samples.tsv SEX, REF/ALT exchanged on a fifth of the
variants), EUR a .pgen (sex in the .psam); males, females and unknown sex at each site, male hets
on X and Y, female calls on Y, hets on MT, missing calls. Each site runs the rounds the plan asks
for through :func:`fedstat.stats.base.run_local` on its own dataset (the site agent's path:
build_cohort, the harmonized plan's rows and flips); the coordinator side is plan_job.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from coordinator.harmonizer import select_variants
from fedstat.computations import COMPUTATIONS
from fedstat.data.dataset import Dataset, open_dataset
from fedstat.data.sex import FEMALE, INVALID, MALE, UNKNOWN, genotype_file_sex, sex_codes
from fedstat.data.variants import SitePlan, VariantTable, harmonize
from fedstat.errors import InputError, JobFailed, ProtocolError
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec, check_round, check_round_variants, plan_job
from fedstat.stats import sexchr
from fedstat.stats.allele import SUM_NAMES as allele_sums
from fedstat.stats.allele import local_sums
from fedstat.stats.base import Cohort, Output, RoundInput, genotype_values, release_groups, run_local
from fedstat.stats.hwe_x import hwe_x_p
from site_agent.job import build_cohort
from site_agent.release_ledger import DifferencingRefused, ReleaseLedger

DATA = Path(__file__).parent / "data" / "sexchr"
EXPECTED = DATA / "expected"
SITES = ("AFR", "EAS", "EUR")
REPORTS = ("freq", "geno-counts", "hardy", "missing")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    cache = tmp_path_factory.mktemp("cache")
    return {s: open_dataset(s, DATA / s, cache_dir=cache) for s in SITES}


def _run(
    spec: JobSpec, datasets: dict[str, Dataset], out: Path, *, drop: str = ""
) -> tuple[list[str], list[Path], list[dict]]:
    """The job over the three sites in-process: (rounds, files written, each round's release groups);
    ``drop``: a chromosome left out of the pooled data (and so of the harmonized variants) beforehand."""
    spec = spec.validated()
    h = harmonize({s: d.genotypes.variants for s, d in datasets.items()})
    if drop:
        h = h.take(np.flatnonzero(h.variants.chrom.astype(str) != drop))
    h, _ = select_variants(h, spec)
    analysis = plan_job(spec, None, h.variants)
    rounds: list[str] = []
    groups: list[dict] = []
    sums = None
    while (plan := analysis.next_round(sums)) is not None:
        check_round(spec, plan.computation, dict(plan.params))  # what every site checks
        rounds.append(plan.computation)
        kernel = COMPUTATIONS[plan.computation].kernel
        vidx = np.arange(len(h.variants)) if plan.variants is None else np.asarray(plan.variants)
        total: dict[str, np.ndarray] = {}
        for name, d in datasets.items():
            members = np.arange(d.genotypes.n_samples)
            cohort = build_cohort(spec, d, members)
            inp = RoundInput(params=dict(plan.params), arrays={}, variants=vidx)
            site_plan = h.plans[name]

            values = genotype_values(kernel, inp.params)
            rows, flip = site_plan.local_index[vidx], site_plan.flip[vidx]

            def blocks(d: Dataset = d, rows=rows, flip=flip, members=members, values=values):  # noqa: ANN001
                return d.genotypes.read_blocks(rows, flip=flip, sample_index=members, block_size=7, values=values)

            groups.append({k: int(v.sum()) for k, v in release_groups(kernel, cohort, inp).items()})
            for o in run_local(kernel, cohort, inp, blocks):
                assert isinstance(o, Output)
                arr = total.setdefault(o.name, np.zeros(o.total, dtype=np.int64))
                arr[o.offset : o.offset + o.values.size] += o.values
        sums = total
    return rounds, write_result(analysis.result(h.variants), out), groups


def test_reports__x_y_mt_par_equal_plink2_on_pooled_data(datasets, tmp_path: Path):
    spec = JobSpec(analyses=REPORTS, out_name="s")
    rounds, files, groups = _run(spec, datasets, tmp_path / "s")
    assert [f.name for f in files] == ["s.afreq", "s.gcount", "s.hardy", "s.hardy.x", "s.vmiss"]
    for f in files:
        assert f.read_bytes() == (EXPECTED / f"pooled.{f.name[2:]}").read_bytes(), f.name
    # one round over the cohort (all but Y), one over the males (X, Y), one over the females (X)
    assert rounds == ["allele_counts", "allele_counts_sex", "allele_counts_sex"]
    males = [int((d.sex == MALE).sum()) for d in datasets.values()]
    females = [int((d.sex == FEMALE).sum()) for d in datasets.values()]
    assert [g["male"] for g in groups[3:6]] == males and [g["female"] for g in groups[6:]] == females
    assert all(g["cohort"] == 40 for g in groups)


def test_split_par__renames_x_in_the_pars_as_plink2(datasets, tmp_path: Path):
    # plink2 --split-par b37 on the pooled data less PAR1: X at <= 2699520 -> PAR1, >= 154931044 -> PAR2
    spec = JobSpec(analyses=REPORTS, out_name="s", options={"split_par": "b37"})
    _, files, _ = _run(spec, datasets, tmp_path / "s", drop="PAR1")
    assert [f.name for f in files] == ["s.afreq", "s.gcount", "s.hardy", "s.hardy.x", "s.vmiss"]
    for f in files:
        assert f.read_bytes() == (EXPECTED / f"splitpar.{f.name[2:]}").read_bytes(), f.name
    assert "PAR2\tX_155000000" in (tmp_path / "s.hardy").read_text()
    # as plink2, refused where the variants already hold PAR1
    with pytest.raises(JobFailed, match="--split-par cannot be used on variants that already include PAR1"):
        _run(spec, datasets, tmp_path / "t")
    for bad in ("b99", "5 3", "x y"):
        with pytest.raises(InputError, match="--split-par"):
            JobSpec(analyses=REPORTS, out_name="s", options={"split_par": bad}).validated()


def test_check_round_variants__the_sexes_only_on_x_and_y():
    site = VariantTable.from_lists(["Y", "1", "X"], [5, 6, 7], list("abc"), list("AAA"), list("GGG"))
    plan = SitePlan(local_index=np.array([1, 2, 0]), flip=np.zeros(3, dtype=bool))  # harmonized: 1, X, Y

    def check(computation: str, params: dict, rows: list[int]) -> None:
        check_round_variants(4, computation, params, np.array(rows), plan, site)

    check("allele_counts_sex", {"sex": "male"}, [1, 2])
    check("allele_counts_sex", {"sex": "female"}, [1])
    check("allele_counts", {}, [0, 1, 2])
    with pytest.raises(ProtocolError, match="sums by sex on variants outside chrX/chrY"):
        check("allele_counts_sex", {"sex": "male"}, [0, 1])
    with pytest.raises(ProtocolError, match="outside chrX"):
        check("allele_counts_sex", {"sex": "female"}, [2])
    with pytest.raises(ProtocolError, match="round 4: variant subset outside the harmonized list"):
        check("allele_counts", {}, [3])


def test_reports__expected_tables_exercise_every_rule():
    # the fixture is worth its bytes: male hets (MISSING_CT on X > vmiss MISSING_CT), female Y
    # calls ignored (Y OBS_CT in .vmiss < all samples), MT hets, PAR coded X counted as X
    gcount = {r[1]: r for r in (line.split("\t") for line in (EXPECTED / "pooled.gcount").read_text().splitlines())}
    vmiss = {r[1]: r for r in (line.split("\t") for line in (EXPECTED / "pooled.vmiss").read_text().splitlines())}
    x_ids = [i for i, r in gcount.items() if r[0] == "X"]
    assert "X_60001" in x_ids and "X_155000000" in x_ids  # PAR1/PAR2 positions coded X
    assert any(int(gcount[i][9]) > int(vmiss[i][2]) for i in x_ids)
    assert all(int(vmiss[i][3]) < 120 for i, r in gcount.items() if r[0] == "Y")
    assert any(int(gcount[i][9]) > int(vmiss[i][2]) for i, r in gcount.items() if r[0] == "MT")
    assert all(int(gcount[i][7]) == 0 for i, r in gcount.items() if r[0] in ("PAR1", "XY", "1"))


@pytest.mark.parametrize(
    "analyses,rounds",
    [
        (("hardy",), ["allele_counts", "allele_counts_sex", "allele_counts_sex"]),
        (("freq",), ["allele_counts", "allele_counts_sex"]),
        (("geno-counts", "missing"), ["allele_counts", "allele_counts_sex"]),
    ],
)
def test_reports__each_alone_equals_plink2_and_releases_only_what_it_needs(datasets, tmp_path, analyses, rounds):
    got, files, _ = _run(JobSpec(analyses=analyses, out_name="s"), datasets, tmp_path / "s")
    assert got == rounds
    for f in files:
        assert f.read_bytes() == (EXPECTED / f"pooled.{f.name[2:]}").read_bytes(), f.name


def test_sex_rounds__hardy_alone_releases_no_cohort_counts_on_x_and_none_on_y():
    chrom = ["1", "X", "X", "Y", "MT", "PAR1"]
    plan = sexchr.sex_rounds(chrom, ["hardy"])
    assert plan.rows[sexchr.TOTALS].tolist() == [0, 5]
    assert plan.rows[sexchr.MALE].tolist() == [1, 2]
    assert plan.rows[sexchr.FEMALE].tolist() == [1, 2]
    full = sexchr.sex_rounds(chrom, ["freq", "hardy"])
    assert full.rows[sexchr.TOTALS].tolist() == [0, 1, 2, 4, 5]  # never chrY
    assert full.rows[sexchr.MALE].tolist() == [1, 2, 3]
    assert sexchr.FEMALE not in sexchr.sex_rounds(chrom, ["freq"]).rows


def test_sex_codes__samples_tsv_wins_and_bad_values_are_marked():
    files = np.array([MALE, FEMALE, UNKNOWN, MALE], dtype=np.int8)
    assert sex_codes(files, None).tolist() == [1, 2, 0, 1]
    assert sex_codes(files, np.array([2.0, np.nan, 1.0, 0.0])).tolist() == [2, 0, 1, 0]
    assert sex_codes(files, np.array([1.0, 3.0, 2.0, 0.5])).tolist() == [1, INVALID, 2, INVALID]
    assert sex_codes(files, ("M", "f", "", "x")).tolist() == [1, 2, 0, INVALID]


def test_genotype_file_sex__fam_psam_and_vcf(datasets):
    # .fam column 5, .psam SEX (NA unknown), VCF none: as each site's samples.tsv was written from
    afr, eur = datasets["AFR"].genotypes, datasets["EUR"].genotypes
    fam = [line.split()[4] for line in (DATA / "AFR" / "genotypes.fam").read_text().splitlines()]
    assert genotype_file_sex(afr.path, "bed", 40).tolist() == [int(v) for v in fam]
    psam = [line.split("\t")[2] for line in (DATA / "EUR" / "genotypes.psam").read_text().splitlines()[1:]]
    assert genotype_file_sex(eur.path, "pgen", 40).tolist() == [0 if v == "NA" else int(v) for v in psam]
    eas = datasets["EAS"]
    assert genotype_file_sex(eas.genotypes.path, "vcf", 40).tolist() == [0] * 40
    assert (eas.sex != UNKNOWN).sum() == 30  # from samples.tsv SEX
    with pytest.raises(Exception, match="lists 40 samples, the genotype file holds 41"):
        genotype_file_sex(afr.path, "bed", 41)


def test_sex_round__invalid_samples_tsv_sex_is_refused_without_values(datasets):
    d = datasets["AFR"]
    cohort = build_cohort(JobSpec(analyses=("freq",), out_name="s"), d, np.arange(40))
    bad = type(cohort)(n=cohort.n, columns={}, sex=np.where(np.arange(40) == 3, INVALID, cohort.sex).astype(np.int8))
    kernel = COMPUTATIONS["allele_counts_sex"].kernel
    inp = RoundInput(params={"sex": "male"}, arrays={}, variants=np.arange(2))
    with pytest.raises(InputError, match="column SEX holds values other than 1") as exc:
        release_groups(kernel, bad, inp)
    assert "AFR_" not in str(exc.value)


def test_check_round__sex_rounds_only_as_the_job_asks():
    spec = JobSpec(analyses=("freq",), out_name="s").validated()
    check_round(spec, "allele_counts_sex", {"sex": "male", "dosage": "1"})
    for params in ({"sex": "female"}, {"sex": "unknown"}, {"sex": "male", "extra": "1"}):
        with pytest.raises(Exception, match="does not belong to the job"):
            check_round(spec, "allele_counts_sex", params)
    check_round(JobSpec(analyses=("hardy",), out_name="s").validated(), "allele_counts_sex", {"sex": "female"})
    with pytest.raises(Exception, match="does not belong to the job"):
        check_round(
            JobSpec(analyses=("glm",), out_name="s", pheno_names=("QT",)).validated(),
            "allele_counts_sex",
            {"sex": "male"},
        )


def test_hwe_x_p__hand_cases():
    # no males: the autosomal exact test on the females; one female het, no hom: p = 1
    assert hwe_x_p(1, 0, 0, 0, 0) == 1.0
    # 5 + 5 homozygous females, no het: Levene's P(0 hets | 10 + 10 alleles) = 2^0 10! 10! 10! / (5! 0! 5! 20!),
    # the least likely table, so p is its probability alone
    assert hwe_x_p(0, 5, 5, 0, 0) == pytest.approx(0.0013639611162830976, rel=1e-12)
    # the plink2 fixture's first chrX row
    assert f"{hwe_x_p(14, 33, 2, 41, 12):.6g}" == "0.696885"


# --- disclosure control: the sums by sex go through the site's release ledger ---------------------


def _releases(sex: np.ndarray, tmp_path: Path, analyses: tuple[str, ...]) -> list[str]:
    """The rounds of a job over chrX at one site of 30 with sexes ``sex``, through its release ledger:
    what each round's release groups make of it ("ok" or the refusal)."""
    ledger = ReleaseLedger(tmp_path / "releases.sqlite", min_group=10)
    keys = ledger.participant_keys([f"p{i}" for i in range(sex.size)])
    cohort = Cohort(n=sex.size, columns={}, sex=sex.astype(np.int8))
    plan = sexchr.sex_rounds(["1", "X", "X", "Y"], analyses)
    outcomes = []
    for group in plan.rows:
        name, params = ("allele_counts", {}) if group == sexchr.TOTALS else ("allele_counts_sex", {"sex": group})
        inp = RoundInput(params=params, arrays={}, variants=plan.rows[group])
        groups = release_groups(COMPUTATIONS[name].kernel, cohort, inp)
        try:
            ledger.release("main", keys, groups, computation=name, params=params, sites=["A", "B", "C"])
            outcomes.append("ok")
        except DifferencingRefused as exc:
            assert not re.search(r"\bp\d+\b", str(exc))  # no participant named
            outcomes.append("refused")
    return outcomes


def test_attack__a_job_over_x_cannot_single_out_a_lone_male(tmp_path: Path):
    # the haploid/diploid split would hand out the one male's chrX calls (the males' counts), and the
    # cohort's minus the males' the others': the site's ledger refuses the males' round
    one_male = np.array([1] + [2] * 29)
    assert _releases(one_male, tmp_path / "a", ("freq",)) == ["ok", "refused"]
    one_female = np.array([1] * 29 + [2])  # the non-males' counts = the cohort's minus the males'
    assert _releases(one_female, tmp_path / "b", ("geno-counts",)) == ["ok", "refused"]
    # .hardy.x's females beside the males: one person of unknown sex is their difference
    one_unknown = np.array([1] * 15 + [2] * 14 + [0])
    assert _releases(one_unknown, tmp_path / "c", ("hardy",)) == ["ok", "ok", "refused"]
    balanced = np.array([1] * 10 + [2] * 10 + [0] * 10)
    assert _releases(balanced, tmp_path / "d", ("freq", "hardy")) == ["ok", "ok", "ok"]


def test_attack__a_site_without_males_sends_zeros_and_releases_no_male_group():
    cohort = Cohort(n=12, columns={}, sex=np.full(12, 2, dtype=np.int8))
    kernel = COMPUTATIONS["allele_counts_sex"].kernel
    inp = RoundInput(params={"sex": "male"}, arrays={}, variants=np.arange(3))
    assert set(release_groups(kernel, cohort, inp)) == {"cohort"}
    block = np.ones((3, 12), dtype=np.int8)
    sums = kernel.block_sums(block, cohort, inp, slice(0, 3))
    assert all(v.tolist() == [0, 0, 0] for v in sums.values())


def test_select_variants__dp_and_qc_jobs_leave_x_y_mt_out_with_a_log_line(datasets):
    h = harmonize({s: d.genotypes.variants for s, d in datasets.items()})
    dp = JobSpec(analyses=("freq",), out_name="s", privacy="dp", options={"dp_epsilon": "1", "dp_delta": "1e-6"})
    chosen, lines = select_variants(h, dp.validated())
    assert set(chosen.variants.chrom) == {"1", "XY", "PAR1"}
    assert lines == [
        "45 variants on chrX/chrY/MT left out: --privacy dp does not count them by sex yet (results are plink2's "
        "with --not-chr X,Y,MT)"
    ]
    _, lines = select_variants(h, JobSpec(analyses=("hardy",), out_name="s", options={"hwe": "1e-6"}).validated())
    assert lines[-1].startswith("45 variants on chrX/chrY/MT left out: --mind/--geno/--hwe/--maf do not count")
    with pytest.raises(Exception, match="counts no variant by sex"):
        check_round(dp.validated(), "allele_counts_sex", {"sex": "male"})


def test_reports__dosages_on_x_y_mt_equal_plink2(tmp_path: Path):
    # --freq from the .pgen dosage tracks (a male's dosage counts half, one allele observed), the
    # other reports from the hard calls: plink2 on the pooled data
    cache = tmp_path / "cache"
    sites = {s: open_dataset(s, DATA / "dosage" / s, cache_dir=cache) for s in SITES}
    assert all(d.genotypes.has_dosages for d in sites.values())
    spec = JobSpec(analyses=("freq", "geno-counts", "missing"), out_name="s")
    rounds, files, _ = _run(spec, sites, tmp_path / "s")
    assert rounds == ["allele_counts", "allele_counts_sex"]
    for f in files:
        assert f.read_bytes() == (DATA / "dosage" / "expected" / f"dosage.{f.name[2:]}").read_bytes(), f.name
    # the dosages matter: plink2's hard calls give other frequencies on X
    plan = sexchr.sex_rounds(sites["AFR"].genotypes.variants.chrom.astype(str), ["freq"])
    hard = {g: {k: np.zeros(r.size, dtype=np.int64) for k in allele_sums} for g, r in plan.rows.items()}
    for d in sites.values():
        cohort = build_cohort(spec, d, np.arange(40))
        for g, rows in plan.rows.items():
            ((_, block),) = d.genotypes.read_blocks(rows, block_size=rows.size)
            cols = np.ones(40, dtype=bool) if g == sexchr.TOTALS else cohort.sex == MALE
            for k, v in local_sums(block[:, cols]).items():
                hard[g][k] += v
    stats, _, _ = sexchr.combine(plan, hard)
    theirs = [
        float(r.split("\t")[4]) for r in (DATA / "dosage" / "expected" / "dosage.afreq").read_text().splitlines()[1:]
    ]
    x = plan.kind == "X"
    assert np.abs(stats.alt_freq[x] - np.array(theirs)[x]).max() > 0.005
