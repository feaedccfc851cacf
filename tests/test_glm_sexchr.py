"""``--glm`` on chrX, chrY, MT and the PARs as plink2 2.00a3.5 runs it by default, federated.

Three sites read their own files (AFR a ``.bed`` with 23/24/25/26 codes, EAS a VCF whose sexes come
from samples.tsv and a fifth of whose variants have REF/ALT exchanged, EUR a ``.pgen``); the job is
planned, checked by each site (``check_round``, ``check_round_variants``) and run in-process, and its
tables are compared with plink2 on the pooled data (``tests/data/sexchr/expected/glm.*``,
``scripts/make_sexchr_fixture.py``): SEX added on chrX (unknown sex out), chrY over the males,
chrY and MT haploid, A1 by the sex-aware frequencies.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coordinator.harmonizer import select_variants
from fedstat.computations import COMPUTATIONS
from fedstat.data.dataset import Dataset, open_dataset
from fedstat.data.variants import SitePlan, VariantTable, harmonize
from fedstat.errors import ProtocolError
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec, check_round, check_round_variants, plan_job
from fedstat.stats.base import Cohort, Output, RoundInput, genotype_values, release_groups, run_local
from fedstat.stats.glm import GlmTables
from fedstat.stats.glm_common import PhenoSpec, encode_specs
from fedstat.stats.glm_sexchr import chrom_kinds, plan_groups
from site_agent.job import build_cohort
from site_agent.release_ledger import DifferencingRefused, ReleaseLedger
from tests.conftest import read_pooled
from tests.glm_harness import compare

DATA = Path(__file__).parent / "data" / "sexchr"
SITES = ("AFR", "EAS", "EUR")
EXCLUDED = "Y_2900042"  # plink2 2.00a3.5 quirk, left out of the fixture (scripts/make_sexchr_fixture.py)


def _datasets(root: Path, cache: Path) -> dict[str, Dataset]:
    return {s: open_dataset(s, root / s, cache_dir=cache) for s in SITES}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    return _datasets(DATA, tmp_path_factory.mktemp("cache"))


def _run(spec: JobSpec, datasets: dict[str, Dataset], out: Path) -> tuple[list[str], list[Path], list[str]]:
    """The job in-process as the daemons run it: (rounds with their variant counts, files, job log)."""
    spec = spec.validated()
    h = harmonize({s: d.genotypes.variants for s, d in datasets.items()})
    h, lines = select_variants(h, spec)
    analysis = plan_job(spec, None, h.variants)
    rounds: list[str] = []
    sums = None
    while (plan := analysis.next_round(sums)) is not None:
        vidx = np.arange(len(h.variants)) if plan.variants is None else np.asarray(plan.variants)
        rounds.append(f"{plan.computation}:{vidx.size}")
        kernel = COMPUTATIONS[plan.computation].kernel
        total: dict[str, np.ndarray] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for name, d in datasets.items():
            check_round(spec, plan.computation, dict(plan.params))  # what every site checks
            site_plan = h.plans[name]
            check_round_variants(
                len(rounds), plan.computation, dict(plan.params), vidx, site_plan, d.genotypes.variants
            )
            members = np.arange(d.genotypes.n_samples)
            cohort = build_cohort(spec, d, members)
            inp = RoundInput(params=dict(plan.params), arrays=dict(plan.arrays), variants=vidx)
            values = genotype_values(kernel, inp.params)
            rows, flip = site_plan.local_index[vidx], site_plan.flip[vidx]

            def blocks(d: Dataset = d, rows=rows, flip=flip, members=members, values=values):  # noqa: ANN001
                return d.genotypes.read_blocks(rows, flip=flip, sample_index=members, block_size=7, values=values)

            release_groups(kernel, cohort, inp)
            for o in run_local(kernel, cohort, inp, blocks):
                assert isinstance(o, Output)
                dtype = np.int64 if o.values.dtype.kind in "iu" else np.float64
                arr = total.setdefault(o.name, np.zeros(o.total, dtype=dtype))
                arr[o.offset : o.offset + o.values.size] += o.values
                shapes[o.name] = o.shape
        sums = {k: v.reshape(shapes[k]) for k, v in total.items()}
    # the --glm tables (the GWAS-SSF beside them has no code for PAR1)
    (tables,) = [part for part in analysis.result(h.variants).parts if isinstance(part, GlmTables)]
    return rounds, write_result(tables, out), [*lines, *analysis.log_lines()]


def _spec(glm: str = "show-covar", **options: str) -> JobSpec:
    return JobSpec(
        analyses=("glm",),
        out_name="g",
        pheno_names=("QT", "CC"),
        covar_names=("AGE",),
        options={"glm": glm, "exclude": EXCLUDED, "covar_variance_standardize": "1", **options},
    )


#: plink2 2.00a3.5's logistic fit of the variant after one without a missing call (X_3044011) drifts:
#: its SEs are up to 5% off the float64 maximum-likelihood ones, which fedstat's equal
#: (:func:`test_glm__the_drifting_variant_equals_the_float64_mle`); its OR and key columns still match.
PLINK2_DRIFT = frozenset({"X_3048012"})


def _check(ours: Path, expected: Path, drift: frozenset[str] = frozenset()) -> None:
    a, b = ours.read_text().splitlines(), expected.read_text().splitlines()
    keep = [i for i, row in enumerate(b) if row.split("\t")[2] not in drift]
    assert len(a) == len(b) and len(keep) > 40
    for i in sorted(set(range(len(b))) - set(keep)):  # same ID, A1, TEST, OBS_CT; OR to 1e-5, SE within 0.2%
        fa, fb = a[i].split("\t"), b[i].split("\t")
        assert fa[:9] == fb[:9] and fa[-1] == fb[-1]
        assert abs(float(fa[9]) / float(fb[9]) - 1) < 1e-5 and abs(float(fa[10]) / float(fb[10]) - 1) < 0.05
    strict_a = ours.with_suffix(".strict")
    strict_a.write_text("\n".join(a[i] for i in keep) + "\n")
    strict_b = ours.with_suffix(".expected")
    strict_b.write_text("\n".join(b[i] for i in keep) + "\n")
    c = compare(strict_a, strict_b)
    assert c.key_mismatch == 0, c.mismatches
    assert c.max_beta_dev_se < 1e-4 and c.max_log10p_dev < 1e-4, c


def test_glm__x_y_mt_par_linear_and_logistic_equal_plink2(datasets, tmp_path: Path):
    rounds, files, log = _run(_spec(), datasets, tmp_path / "g")
    _check(tmp_path / "g.QT.glm.linear", DATA / "expected" / "glm.QT.glm.linear")
    _check(tmp_path / "g.CC.glm.logistic.hybrid", DATA / "expected" / "glm.CC.glm.logistic.hybrid", PLINK2_DRIFT)
    # the rounds: describe, the males' describe over chrX and chrY (29 + 7), then the autosomes'
    # regression (chr1, XY, PAR1 and MT: 22 variants), chrX's and chrY's; then CC's logistic rounds
    assert rounds[:2] == ["glm_describe:58", "glm_describe_males:36"]
    assert rounds[2:5] == ["glm_linear:22", "glm_linear:29", "glm_linear:7"]
    assert all(r.startswith("glm_logistic:") for r in rounds[5:])
    text = (tmp_path / "g.QT.glm.linear").read_text()
    # SEX is a test on chrX only; chrY's OBS_CT counts males only
    assert re.search(r"^X\t3000000\t.*\tSEX\t", text, re.M) and not re.search(
        r"^(1|Y|MT|XY|PAR1)\t.*\tSEX\t", text, re.M
    )
    assert not any("Skipping" in line for line in log)


def test_glm__the_drifting_variant_equals_the_float64_mle(datasets, tmp_path: Path):
    # plink2's pooled data, fitted by plain float64 Newton iterations: chrX's design [1, g, AGE, SEX]
    # over the known-sex samples with CC and a call, AGE standardized over the cohort
    geno, variants, iid = read_pooled(DATA)
    psam = [r.split("\t") for r in (DATA / "pooled" / "genotypes.psam").read_text().splitlines()[1:]]
    sex_of = {r[1]: {"1": 1.0, "2": 2.0}.get(r[2], np.nan) for r in psam}
    table = {r.split("\t")[1]: r.split("\t") for r in (DATA / "pooled" / "samples.tsv").read_text().splitlines()[1:]}
    sex = np.array([sex_of[i] for i in iid])
    cc = np.array([np.nan if table[i][3] == "NA" else float(table[i][3]) for i in iid])
    age = np.array([float(table[i][4]) for i in iid])
    age = (age - age.mean()) / age.std(ddof=1)
    g = geno[list(variants.id).index("X_3048012")].astype(np.float64)
    m = ~np.isnan(sex) & ~np.isnan(cc) & (g >= 0)
    x, y = np.column_stack([np.ones(m.sum()), g[m], age[m], sex[m]]), cc[m] - 1.0  # A1 = ALT here
    beta = np.zeros(4)
    for _ in range(20):
        p = 1.0 / (1.0 + np.exp(-x @ beta))
        h = x.T @ (x * (p * (1 - p))[:, None])
        beta += np.linalg.solve(h, x.T @ (y - p))
    se = np.sqrt(np.diag(np.linalg.inv(h)))
    _run(_spec(), datasets, tmp_path / "m")
    rows = [r.split("\t") for r in (tmp_path / "m.CC.glm.logistic.hybrid").read_text().splitlines() if "X_3048012" in r]
    assert [r[7] for r in rows] == ["ADD", "AGE", "SEX"]
    assert [float(r[9]) for r in rows] == pytest.approx(np.exp(beta[1:]).tolist(), rel=1e-5)
    assert [float(r[10]) for r in rows] == pytest.approx(se[1:].tolist(), rel=1e-5)


def test_glm__hide_covar_writes_the_add_rows_of_plink2(datasets, tmp_path: Path):
    _run(_spec("hide-covar"), datasets, tmp_path / "h")
    for name in ("QT.glm.linear", "CC.glm.logistic.hybrid"):
        theirs = (DATA / "expected" / f"glm.{name}").read_text().splitlines()
        add_only = [theirs[0]] + [r for r in theirs[1:] if r.split("\t")[6 + ("CC" in name)] == "ADD"]
        exp = tmp_path / f"exp.{name}"
        exp.write_text("\n".join(add_only) + "\n")
        _check(tmp_path / f"h.{name}", exp, PLINK2_DRIFT if "CC" in name else frozenset())


def test_glm__dosages_on_x_y_mt_equal_plink2(tmp_path: Path):
    ds = _datasets(DATA / "dosage", tmp_path / "cache")
    _run(replace(_spec(), options={"glm": "show-covar", "covar_variance_standardize": "1"}), ds, tmp_path / "d")
    _check(tmp_path / "d.QT.glm.linear", DATA / "dosage" / "expected" / "glm.QT.glm.linear")
    _check(tmp_path / "d.CC.glm.logistic.hybrid", DATA / "dosage" / "expected" / "glm.CC.glm.logistic.hybrid")


def test_glm__firth_and_no_firth_run_on_x_y(datasets, tmp_path: Path):
    # no fixture of plink2 for these; the rows are those of the hybrid run (same variants, same tests)
    for mode, ext in (("firth", "glm.firth"), ("no-firth", "glm.logistic")):
        _run(_spec(f"show-covar,{mode}"), datasets, tmp_path / mode)
        rows = (tmp_path / f"{mode}.CC.{ext}").read_text().splitlines()
        theirs = (DATA / "expected" / "glm.CC.glm.logistic.hybrid").read_text().splitlines()
        assert [r.split("\t")[2] for r in rows[1:]] == [r.split("\t")[2] for r in theirs[1:]]


def test_plan_groups__plink2s_rules():
    kind = chrom_kinds(["1", "X", "Y", "MT", "XY", "PAR1"])
    groups, skipped, lines = plan_groups(kind, n_male=3, n_female=4, n_total=9, no_x_sex=False)
    assert [(g.label, None if g.rows is None else g.rows.tolist(), g.sex) for g in groups] == [
        ("", [0, 3, 4, 5], ""),
        ("chrX", [1], "x"),
        ("chrY", [2], "male"),
    ]
    assert groups[0].scale is not None and groups[0].scale.tolist() == [1.0, 0.5, 1.0, 1.0]  # MT haploid
    # one sex known: no SEX covariate, chrX as an autosome; no male: chrY skipped, as plink2 logs it
    groups, skipped, lines = plan_groups(kind, n_male=0, n_female=4, n_total=9, no_x_sex=False)
    assert [g.label for g in groups] == [""] and skipped.tolist() == [False, False, True, False, False, False]
    assert lines == ["--glm: Skipping chrY since there are no males."]
    # every participant male: chrY in the autosomes' regression (haploid); no-x-sex: chrX too
    groups, _, _ = plan_groups(kind, n_male=9, n_female=0, n_total=9, no_x_sex=True)
    assert len(groups) == 1 and groups[0].rows is None and groups[0].scale is not None
    assert groups[0].scale.tolist() == [1.0, 1.0, 0.5, 0.5, 1.0, 1.0]


def test_check_round__glm_sex_regressions_only_in_glm_jobs_and_on_their_chromosomes():
    spec = _spec().validated()
    x = PhenoSpec("QT", False, ("AGE", "SEX"), ("AGE", "SEX"), sex="x")
    y = PhenoSpec("QT", False, ("AGE",), ("AGE",), sex="male")
    check_round(spec, "glm_linear", {"spec": encode_specs([x])})
    check_round(spec, "glm_linear", {"spec": encode_specs([y])})
    check_round(spec, "glm_describe_males", {})
    freq = JobSpec(analyses=("freq",), out_name="f").validated()
    for computation, params in (("glm_describe_males", {}), ("glm_linear", {"spec": encode_specs([x])})):
        with pytest.raises(ProtocolError, match="the job has no --glm"):
            check_round(freq, computation, params)
    bad = [
        ({"spec": encode_specs([x])[:-2] + ', "sex": "female"}]'}, "sample set by sex"),
        ({"spec": encode_specs([replace(x, covars=("SEX", "AGE"))])}, "SEX covariate"),
        ({"spec": encode_specs([replace(y, covars=("SEX",), mask_covars=("SEX",))])}, "covariates are not the job's"),
    ]
    for params, why in bad:
        with pytest.raises(ProtocolError, match=why):
            check_round(spec, "glm_linear", params)
    with pytest.raises(ProtocolError, match="unexpected parameters"):
        check_round(spec, "glm_describe_males", {"sex": "female"})


def test_attack__a_coordinator_asking_for_male_only_sums_on_autosomes_is_refused():
    site = VariantTable.from_lists(["1", "X", "Y", "MT"], [5, 6, 7, 8], list("abcd"), list("AAAA"), list("GGGG"))
    plan = SitePlan(local_index=np.arange(4), flip=np.zeros(4, dtype=bool))
    x = {"spec": encode_specs([PhenoSpec("QT", False, ("SEX",), ("SEX",), sex="x")])}
    y = {"spec": encode_specs([PhenoSpec("QT", False, (), (), sex="male")])}
    check_round_variants(3, "glm_linear", x, np.array([1]), plan, site)
    check_round_variants(3, "glm_logistic", y, np.array([2]), plan, site)
    check_round_variants(3, "glm_describe_males", {}, np.array([1, 2]), plan, site)
    for computation, params, rows in (
        ("glm_linear", y, [0]),  # the males' regression over an autosome
        ("glm_logistic", y, [1]),  # ... or over chrX
        ("glm_linear", x, [3]),  # chrX's design (sums by sex) over MT
        ("glm_describe_males", {}, [0, 1]),
    ):
        with pytest.raises(ProtocolError, match="by sex on variants outside"):
            check_round_variants(3, computation, params, np.array(rows), plan, site)
    mixed = {"spec": encode_specs([PhenoSpec("QT", False, (), ()), PhenoSpec("CC", True, (), (), sex="male")])}
    with pytest.raises(ProtocolError, match="mixes regressions by sex"):
        check_round_variants(3, "glm_linear", mixed, np.array([2]), plan, site)


def _ledger_outcomes(sex: np.ndarray, tmp_path: Path) -> list[str]:
    """A --glm job's rounds on chrX/chrY at one site of ``sex.size`` through its release ledger."""
    ledger = ReleaseLedger(tmp_path / "releases.sqlite", min_group=10)
    keys = ledger.participant_keys([f"p{i}" for i in range(sex.size)])
    qt = np.linspace(0.0, 1.0, sex.size)
    cohort = Cohort(
        n=sex.size, columns={"QT": qt, "AGE": 20 + np.arange(sex.size, dtype=float)}, sex=sex.astype(np.int8)
    )
    base = PhenoSpec("QT", False, ("AGE",), ("AGE",))
    rounds = [
        ("glm_describe", {"columns": '["QT", "AGE"]'}),
        ("glm_describe_males", {}),
        ("glm_linear", {"spec": encode_specs([base])}),
        (
            "glm_linear",
            {"spec": encode_specs([replace(base, covars=("AGE", "SEX"), mask_covars=("AGE", "SEX"), sex="x")])},
        ),
        ("glm_linear", {"spec": encode_specs([replace(base, sex="male")])}),
    ]
    out = []
    for name, params in rounds:
        inp = RoundInput(params=params, arrays={}, variants=np.arange(2))
        groups = release_groups(COMPUTATIONS[name].kernel, cohort, inp)
        try:
            ledger.release("main", keys, groups, computation=name, params=params, sites=["A", "B", "C"])
            out.append("ok")
        except DifferencingRefused as exc:
            assert not re.search(r"\bp\d+\b", str(exc))  # no participant named
            out.append("refused")
    return out


def test_attack__a_site_with_one_male_refuses_the_sums_by_sex(tmp_path: Path):
    # the males' describe round would hand out the one male's chrX/chrY dosages: refused there; the
    # chrX regression's SEX column (Σ SEX·g - Σ g = the females' sums) and chrY's males-only regression too
    one_male = np.array([1] + [2] * 29)
    assert _ledger_outcomes(one_male, tmp_path / "a") == ["ok", "refused", "ok", "refused", "refused"]
    # unknown sex: chrX's regression leaves them out, so the cohort's minus chrX's singles one out
    one_unknown = np.array([1] * 15 + [2] * 14 + [0])
    assert _ledger_outcomes(one_unknown, tmp_path / "b") == ["ok", "refused", "ok", "refused", "ok"]
    balanced = np.array([1] * 10 + [2] * 10 + [0] * 10)
    assert _ledger_outcomes(balanced, tmp_path / "c") == ["ok"] * 5


def test_glm__a_covariate_named_sex_beside_chrx_is_refused(datasets, tmp_path: Path):
    spec = replace(_spec(), covar_names=("AGE", "SEX"))
    with pytest.raises(Exception, match="plink2 adds a covariate 'SEX'"):
        _run(spec, datasets, tmp_path / "s")
