"""Categorical covariates in --glm: plink2's natural order, reference category and indicator columns,
equal to plink2 on the pooled data (tests/data/categorical, made by scripts/make_categorical_fixture.py);
and what a site releases about them: names of categories held by min_group or more, never a rarer one."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from fedstat.config import SitePolicy
from fedstat.data.categories import merged_levels, natural_compare, natural_sorted
from fedstat.data.samples import SampleTable, read_sample_table
from fedstat.errors import InputError, PolicyRefused, ProtocolError
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec
from fedstat.jobs.checks import check_round
from fedstat.stats.base import Cohort, RoundInput
from fedstat.stats.glm import LOCAL_COMPUTATIONS, GlmJob
from site_agent.policy import category_levels
from tests import glm_harness as h

CAT = Path(__file__).parent / "data" / "categorical"
COVARS = ("AGE", "SEX", "CENTRE", "ARRAY")
CATEGORICAL = ("CENTRE", "ARRAY")
PHENOS = ("QT", "CC", "CCW")


# --- plink2's natural order ------------------------------------------------------------------


@pytest.mark.parametrize(
    "smaller, larger",
    [
        ("west9", "west10"),  # digit runs by magnitude
        ("East", "north"),  # letters compared as capitals
        ("00200", "021"),  # more leading zeros sort first (plink2_string.cc's comment)
        ("021", "20"),
        ("A", "a"),  # equal as capitals: ASCII breaks the tie
        ("a1", "A2"),
        ("b", "b1"),
        ("x1", "x_1"),  # a digit run sorts before punctuation
    ],
)
def test_natural_compare__orders_as_plink2s_strcmp_natural(smaller: str, larger: str):
    assert natural_compare(smaller, larger) < 0
    assert natural_compare(larger, smaller) > 0
    assert natural_compare(smaller, smaller) == 0


def test_natural_sorted__fixture_categories_in_the_order_plink2_printed_them():
    # plink2's own TEST column in the fixture: CENTRE=East, =south, =west9, =west10 (north the reference)
    assert natural_sorted(["west10", "south", "north", "west9", "East"]) == (
        "East",
        "north",
        "south",
        "west9",
        "west10",
    )
    words = ["b10", "B2", "a", "A", "b2", "_x", "Z", "z1", "z01"]
    assert list(natural_sorted(words)) == sorted(set(words), key=functools.cmp_to_key(natural_compare))


# --- in-process federation against plink2 ---------------------------------------------------


def _tables() -> tuple[np.ndarray, SampleTable, np.ndarray, object]:
    pooled = h.load_pooled()
    table = read_sample_table(CAT / "pooled" / "samples.tsv")
    order = {iid: k for k, iid in enumerate(pooled.table.iid)}
    cols = np.array([order[i] for i in table.iid])
    keep_var = np.isin(pooled.variants.chrom.astype(str), ["1", "2"])
    return pooled.geno[keep_var][:, cols], table, np.flatnonzero(keep_var), pooled


def _cohorts(
    table: SampleTable, phenos: tuple[str, ...] = PHENOS, covars: tuple[str, ...] = COVARS
) -> tuple[list[tuple[Cohort, np.ndarray]], dict[str, tuple[str, ...]]]:
    """Each site's cohort under --require-pheno --require-covar, and the categories it reports."""
    ok = np.ones(table.n_samples, dtype=bool)
    for name in phenos:
        v = np.asarray(table.column(name))
        ok &= ~np.isnan(v) & (v != 0.0 if name != "QT" else True)
    numeric = tuple(c for c in covars if c not in CATEGORICAL)
    for name in numeric:
        ok &= ~np.isnan(np.asarray(table.column(name)))
    cats = {c: np.asarray(table.categorical(c), dtype=object) for c in CATEGORICAL}
    for c in CATEGORICAL:
        ok &= cats[c] != ""
    site = np.array([f.split("_")[0] for f in table.fid or table.iid])
    policy = SitePolicy()
    cohorts, reported = [], {}
    for s in h.SITES:
        idx = np.flatnonzero(ok & (site == s))
        columns = {n: np.asarray(table.column(n))[idx] for n in (*phenos, *numeric)}
        cohorts.append((Cohort(n=idx.size, columns=columns, categories={c: cats[c][idx] for c in CATEGORICAL}), idx))
        reported[s] = {c: category_levels(c, cats[c][idx], policy) for c in CATEGORICAL}
    return cohorts, merged_levels(covars, reported)


def _run(
    phenos: tuple[str, ...],
    mods: frozenset[str],
    tmp_path: Path,
    prefix: str,
    *,
    covars: tuple[str, ...] = COVARS,
    standardize: tuple[str, ...] | None = None,
) -> tuple[GlmJob, list[Path]]:
    geno, table, keep_var, pooled = _tables()
    # --require-pheno QT,CC,CCW as the fixture (CCS: missing where CC is)
    cohorts, categories = _cohorts(table, tuple(dict.fromkeys((*PHENOS, *phenos))), covars)
    job = GlmJob(phenos, covars, mods, categories=categories, standardize=standardize)
    h.run_job(job, geno, cohorts)
    return job, write_result(job.result(pooled.variants.take(keep_var)), tmp_path / prefix)


def _assert_equal(path: Path, loose: tuple[str, ...] = ("\trs100025\t",)) -> None:
    """Every row's ID/A1/FIRTH?/TEST/OBS_CT/ERRCODE as plink2's; values within its printed digits
    (linear: most rows identical text) or its single-precision fit (logistic, Firth: 5e-4 SE and
    5e-4 in log10 P, a little above tests/test_glm_logistic.py's with more covariates here).

    plink2 fits logistic and Firth regression in single precision and stops on float noise, so
    where the likelihood is flat its estimates sit further from the optimum: rows holding any of
    ``loose`` (the fixture's planted separating variant rs100025 under Firth, the rows of a
    separated covariate) are held to 1e-3 SE and 2e-3 in log10 P instead.
    """
    expected = CAT / "expected" / path.name
    c = h.compare(path, expected)
    assert c.rows > 500
    assert c.key_mismatch == 0, c.mismatches[:3]
    if path.suffix == ".linear":
        assert c.max_beta_dev_se <= 1e-4 and c.max_log10p_dev <= 1e-4
        assert c.identical >= 0.95 * c.rows
        return
    assert c.max_beta_dev_se <= 1e-3 and c.max_log10p_dev <= 2e-3
    strict = path.parent / "strict"
    strict.mkdir(exist_ok=True)
    for src, name in ((path, "ours"), (expected, "plink2")):
        lines = src.read_text().splitlines()
        (strict / name).write_text("".join(x + "\n" for x in lines if not any(t in x for t in loose)))
    c = h.compare(strict / "ours", strict / "plink2")
    assert c.rows > 400 and c.max_beta_dev_se <= 5e-4 and c.max_log10p_dev <= 5e-4


def test_glm__categorical_covariates_equal_plink2_linear_logistic_and_separated(tmp_path: Path):
    job, paths = _run(PHENOS, frozenset(), tmp_path, "cat")
    assert [p.name for p in paths] == ["cat.QT.glm.linear", "cat.CC.glm.logistic.hybrid", "cat.CCW.glm.logistic.hybrid"]
    for path in paths:
        _assert_equal(path, ("\trs100025\t", "\tCENTRE=west10\t"))
    # the design as plink2 builds it: covariates in order, each categorical one expanded in place,
    # the most common category (north; axiom/gsa: gsa) left out as the reference
    tests = [line.split("\t")[7] for line in paths[1].read_text().splitlines()[1:9]]
    assert tests == ["ADD", "AGE", "SEX", "CENTRE=East", "CENTRE=south", "CENTRE=west9", "CENTRE=west10", "ARRAY=axiom"]
    # CCW: west10 holds only controls, so firth-fallback fits every variant by Firth, as plink2
    firth = {line.split("\t")[6] for line in paths[2].read_text().splitlines()[1:] if "\tNA\t" not in line}
    assert firth == {"Y"}
    assert any("covariate 'CENTRE' is (quasi-)separated by phenotype 'CCW'" in line for line in job.log_lines())


def test_glm__a_two_valued_numeric_covariate_separating_the_phenotype_goes_firth_as_plink2(tmp_path: Path):
    # CCS: every SEX=2 participant a control; plink2's firth-fallback then fits every variant by Firth
    job, (path,) = _run(("CCS",), frozenset(), tmp_path, "sexsep")

    # The Firth likelihood is flat along the separating SEX coefficient, so plink2's single-precision
    # fit stops up to 7e-4 SE from ours on SEX rows, and 0.013 SE on rs100025 (the fixture's planted
    # separating variant, separated by its genotype too); every other row within the usual tolerance
    def strict(line: str) -> bool:
        return "\trs100025\t" not in line and "\tSEX\t" not in line

    ours, theirs = tmp_path / "ours" / path.name, tmp_path / "plink2" / path.name
    for src, dst in ((path, ours), (CAT / "expected" / path.name, theirs)):
        dst.parent.mkdir(exist_ok=True)
        dst.write_text("".join(x + "\n" for x in src.read_text().splitlines() if strict(x)))
    c = h.compare(ours, theirs)
    assert c.rows == 511 and c.key_mismatch == 0 and c.max_beta_dev_se <= 5e-4 and c.max_log10p_dev <= 2e-4
    c = h.compare(path, CAT / "expected" / path.name)
    assert c.key_mismatch == 0 and c.max_beta_dev_se <= 0.02
    assert any("covariate 'SEX' is (quasi-)separated by phenotype 'CCS'" in line for line in job.log_lines())
    with pytest.raises(InputError, match="covariate 'SEX' is \\(quasi-\\)separated"):
        _run(("CCS",), frozenset({"no-firth"}), tmp_path, "sexsep-nofirth")


def test_glm__a_covariate_constant_in_a_phenotypes_samples_skips_it_without_require_covar(tmp_path: Path):
    # QTN measured only at CENTRE north: CENTRE is constant among its samples, and plink2 would then
    # re-select them without CENTRE's missing values (more samples than this job's); with
    # --require-covar nobody misses CENTRE, and leaving it out is all plink2 does
    geno, table, keep_var, pooled = _tables()
    cohorts, categories = _cohorts(table)
    for cohort, _ in cohorts:
        qt = np.asarray(cohort.columns["QT"])
        cohort.columns["QTN"] = np.where(cohort.categories["CENTRE"] == "north", qt, np.nan)  # type: ignore[index]
    for require_covar, analysed in ((False, []), (True, ["QTN"])):
        job = GlmJob(("QTN",), COVARS, frozenset(), categories=categories, require_covar=require_covar)
        h.run_job(job, geno, cohorts)
        assert list(job.results) == analysed
        if not require_covar:
            assert job.log_lines()[-1].startswith(
                "Note: Skipping --glm regression on phenotype 'QTN', since covariate 'CENTRE' is constant among "
                "its samples"
            )
        else:
            assert job.results["QTN"].covariates == ("AGE", "SEX", "ARRAY=axiom")


def test_glm__categorical_covariates_equal_plink2_firth(tmp_path: Path):
    _, (path,) = _run(("CC",), frozenset({"firth"}), tmp_path, "firth")
    assert path.name == "firth.CC.glm.firth"
    _assert_equal(path)


def test_glm__no_firth_with_a_separated_category_is_refused_not_fitted_differently(tmp_path: Path):
    with pytest.raises(InputError, match="covariate 'CENTRE' is \\(quasi-\\)separated by phenotype 'CCW'"):
        _run(("CCW",), frozenset({"no-firth"}), tmp_path, "nofirth")


def test_glm__a_category_with_no_member_in_the_regression_gets_no_column(tmp_path: Path):
    # a level only the coordinator names (no site holds it): an all-zero indicator, left out as plink2
    geno, table, keep_var, pooled = _tables()
    cohorts, categories = _cohorts(table)
    categories = dict(categories) | {"CENTRE": natural_sorted([*categories["CENTRE"], "zz"])}
    job = GlmJob(("QT",), COVARS, frozenset(), categories=categories)
    h.run_job(job, geno, cohorts)
    (path,) = write_result(job.result(pooled.variants.take(keep_var)), tmp_path / "cat")
    _assert_equal(path)


# --- --covar-variance-standardize, and the scales plink2 refuses without it ----------------


def test_glm__covariate_scales_too_far_apart_skip_the_phenotype_with_plink2s_reason(tmp_path: Path):
    job, paths = _run(("QT",), frozenset(), tmp_path, "yob", covars=(*COVARS, "YOB"))
    assert paths == []
    # plink2 stops with this reason (expected/yob.error.txt); fedstat skips the phenotype with it
    reason = (CAT / "expected" / "yob.error.txt").read_text().split(", since ", 1)[1].strip()
    assert job.log_lines() == [f"Note: Skipping --glm regression on phenotype 'QT', since {reason}"]


@pytest.mark.parametrize(
    "prefix, phenos, standardize",
    [("vstd", ("QT", "CC"), ()), ("vstdyob", ("QT",), ("YOB", "NOT_A_COVARIATE"))],
)
def test_glm__covar_variance_standardize_equals_plink2(tmp_path: Path, prefix, phenos, standardize):
    job, paths = _run(phenos, frozenset(), tmp_path, prefix, covars=(*COVARS, "YOB"), standardize=standardize)
    assert len(paths) == len(phenos)
    for path in paths:
        _assert_equal(path)
    expected = (CAT / "expected" / f"{prefix}.log.txt").read_text().splitlines()
    assert [x for x in job.log_lines() if "standardize:" in x] == expected


def test_glm__covar_variance_standardize_of_a_categorical_covariate_is_refused_as_plink2(tmp_path: Path):
    with pytest.raises(InputError, match="'CENTRE' is not a quantitative covariate"):
        _run(("QT",), frozenset(), tmp_path, "bad", standardize=("CENTRE",))


# --- what a site releases, and what it refuses -------------------------------------------


def test_category_levels__a_category_below_min_group_is_refused_without_its_name_or_count():
    cats = np.array(["north"] * 30 + ["south"] * 12 + ["Tristan-da-Cunha"] * 3 + [""] * 5, dtype=object)
    assert category_levels("CENTRE", cats[:42], SitePolicy(min_group=10)) == ("north", "south")
    with pytest.raises(PolicyRefused) as info:
        category_levels("CENTRE", cats, SitePolicy(min_group=10))
    message = str(info.value)
    assert "covariate CENTRE: a category is held by fewer than 10" in message
    assert "Tristan" not in message and " 3 " not in message


def test_release_groups__each_category_of_a_regression_is_a_group_for_the_ledger():
    # so that a coordinator naming a level of one participant, or a phenotype leaving two members
    # of a category, meets the site's ledger (atoms below min_group are refused there)
    cats = np.array(["a"] * 5 + ["b"] * 4 + [""], dtype=object)
    cohort = Cohort(
        n=10,
        columns={"QT": np.arange(10.0), "AGE": np.ones(10) * 3},
        categories={"CENTRE": cats},
    )
    job = GlmJob(("QT",), ("AGE", "CENTRE"), frozenset(), categories={"CENTRE": ("a", "b")})
    plan = job.next_round(None)
    assert plan is not None
    groups = LOCAL_COMPUTATIONS["glm_describe"].release_groups(
        cohort, RoundInput(params=plan.params, arrays={}, variants=np.zeros(0, dtype=np.int64))
    )
    assert sorted(groups) == ["cohort", "cohort|CENTRE=a", "cohort|CENTRE=b"]
    assert groups["cohort|CENTRE=b"].tolist() == [False] * 5 + [True] * 4 + [False]


def test_check_round__indicators_of_the_jobs_covariates_only():
    spec = JobSpec(analyses=("glm",), pheno_names=("QT",), covar_names=("AGE", "CENTRE"))
    check_round(spec, "glm_describe", {"columns": '["QT", "AGE", "CENTRE=north", "CENTRE=south"]'})
    with pytest.raises(ProtocolError):
        check_round(spec, "glm_describe", {"columns": '["QT", "AGE", "BMI=high"]'})
    with pytest.raises(ProtocolError, match="twice"):
        check_round(spec, "glm_describe", {"columns": '["QT", "AGE", "CENTRE=north", "CENTRE=north"]'})
    wide = json.dumps(["QT", *(f"CENTRE=l{k}" for k in range(201))])
    with pytest.raises(ProtocolError, match="more than 200 categories"):
        check_round(spec, "glm_describe", {"columns": wide})


def _lin_spec(*specs: dict) -> dict[str, str]:
    return {"spec": json.dumps([{"binary": False, **d} for d in specs])}


def test_check_round__two_regressions_of_one_phenotype_are_refused():
    # a deviating coordinator's attack: QT masked by AGE, and QT unmasked, in one round; the
    # difference of the two regressions' sums is the participants who miss AGE (one, perhaps)
    spec = JobSpec(analyses=("glm",), pheno_names=("QT",), covar_names=("AGE", "CENTRE"))
    one = {"name": "QT", "covars": ["AGE"], "mask_covars": ["AGE"]}
    check_round(spec, "glm_linear", _lin_spec(one))
    with pytest.raises(ProtocolError, match="names a phenotype twice"):
        check_round(spec, "glm_linear", _lin_spec(one, {"name": "QT", "covars": [], "mask_covars": []}))
    # an indicator in the design must have its covariate's missingness in the mask
    with pytest.raises(ProtocolError, match="do not mask"):
        check_round(spec, "glm_linear", _lin_spec({"name": "QT", "covars": ["CENTRE=a"], "mask_covars": []}))


def test_merged_levels__a_hostile_site_cannot_smuggle_text_or_columns():
    assert merged_levels(("AGE", "C"), {"A": {"C": ("b", "a")}, "B": {"C": ("a", "b")}}) == {"C": ("a", "b")}
    with pytest.raises(ProtocolError, match="does not name"):
        merged_levels(("AGE", "C"), {"A": {"BMI": ("x",)}})
    with pytest.raises(ProtocolError, match="cannot be ones"):
        merged_levels(("C",), {"A": {"C": ("has space",)}})
    with pytest.raises(ProtocolError, match="cannot be ones"):
        merged_levels(("C",), {"A": {"C": ("x" * 65,)}})


def test_merged_levels__a_category_one_site_holds_alone_is_refused():
    # its indicator's sums would be that site's own sums, which secure aggregation hides
    with pytest.raises(PolicyRefused, match="category c is held at site B only"):
        merged_levels(("C",), {"A": {"C": ("a", "b")}, "B": {"C": ("a", "b", "c")}})
    assert merged_levels(("C",), {"A": {"C": ("a", "b", "c")}}) == {"C": ("a", "b", "c")}  # one site: its own job


def test_sample_table__categorical_column_with_a_number_is_refused_as_plink2_does(tmp_path: Path):
    path = tmp_path / "samples.tsv"
    path.write_text("#IID\tCENTRE\na\tnorth\nb\tNONE\nc\tNA\nd\t7\n")
    table = read_sample_table(path)
    with pytest.raises(InputError, match="holds words and numbers \\(line 5 is a number\\)"):
        table.categorical("CENTRE")
    path.write_text("#IID\tCENTRE\na\tnorth\nb\tNONE\nc\tNA\nd\tsouth\n")
    assert read_sample_table(path).categorical("CENTRE") == ("north", "", "", "south")


# --- through the real daemons (mTLS, secure aggregation) ------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from fedstat.cli import poc
    from fedstat.cli.main import main as cli

    root = tmp_path_factory.mktemp("categorical-sites")
    sites = []
    for s in h.SITES:
        d = root / s
        d.mkdir()
        for f in (h.GWAS / s).iterdir():
            if f.name.startswith("genotypes."):
                (d / f.name).symlink_to(f)
        (d / "samples.tsv").write_bytes((CAT / s / "samples.tsv").read_bytes())
        sites += ["--site", f"{s}={d}"]
    ws = root / "W"
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_e2e_glm__categorical_covariates_equal_plink2_through_the_daemons(workspace: Path, tmp_path: Path, capsys):
    from fedstat.cli.main import main as cli

    out = tmp_path / "cat"
    rc = cli(
        ["submit", "--profile", str(workspace / "analyst.toml"), "--glm", "show-covar", "--pheno-name", "QT,CC,CCW",
         "--require-pheno", "--covar-name", ",".join(COVARS), "--require-covar", "--chr", "1-2", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    for name in ("cat.QT.glm.linear", "cat.CC.glm.logistic.hybrid", "cat.CCW.glm.logistic.hybrid"):
        _assert_equal(tmp_path / name, ("\trs100025\t", "\tCENTRE=west10\t"))
    log = Path(f"{out}.provenance.json").read_text()
    assert "(quasi-)separated by phenotype 'CCW'" in log


def test_e2e_glm__covar_variance_standardize_through_the_daemons(workspace: Path, tmp_path: Path, capsys):
    from fedstat.cli.main import main as cli

    out = tmp_path / "vstdyob"
    rc = cli(
        ["submit", "--profile", str(workspace / "analyst.toml"), "--glm", "show-covar", "--pheno-name", "QT",
         "--require-pheno", ",".join(PHENOS), "--covar-name", ",".join((*COVARS, "YOB")), "--require-covar", "--chr", "1-2",
         "--covar-variance-standardize", "YOB", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    _assert_equal(tmp_path / "vstdyob.QT.glm.linear")


def test_e2e_glm__a_rare_category_at_one_site_refuses_the_job_without_naming_it(
    workspace: Path, tmp_path: Path, capsys
):
    # three EUR participants in a category of their own (a rare ancestry, a village): their sums
    # would single them out, and the category's name could; EUR refuses at its decision
    from fedstat.cli.main import main as cli

    eur = Path(workspace.parent / "EUR" / "samples.tsv")
    original = eur.read_bytes()
    lines = original.decode().splitlines()
    head = lines[0].split("\t")
    c = head.index("CENTRE")
    rows = [line.split("\t") for line in lines[1:]]
    for r in rows[:3]:
        r[c] = "Tristan"  # three participants in a category of their own
    eur.write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    try:
        _restart_site(workspace, "EUR")
        rc = cli(
            ["submit", "--profile", str(workspace / "analyst.toml"), "--glm", "--pheno-name", "QT",
             "--covar-name", "AGE,CENTRE", "--chr", "1", "--out", str(tmp_path / "rare")]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert rc != 0
        assert "site EUR refused the job: covariate CENTRE: a category is held by fewer than 10" in err
        assert "Tristan" not in err
    finally:
        eur.write_bytes(original)
        _restart_site(workspace, "EUR")


def _restart_site(workspace: Path, name: str, timeout: float = 30.0) -> None:
    """Restart a site of the poc (it reloads its sample table) and wait until it is connected again."""
    import time

    from fedstat.cli import poc

    poc.restart(workspace, name)
    deadline = time.monotonic() + timeout
    while not any(row[0] == name and row[3] == "CONNECTED" for row in poc.status(workspace)):
        assert time.monotonic() < deadline, f"site {name} did not reconnect"
        time.sleep(0.1)
