"""Categorical covariates in --glm: plink2's natural order, reference category and indicator columns,
equal to plink2 on the pooled data (tests/data/categorical, made by scripts/make_categorical_fixture.py);
and what a site releases about them: names of categories held by min_group or more, never a rarer one."""

from __future__ import annotations

import functools
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
    # plink2's own TEST column in the fixture: CENTRE=East, =north, =west9, =west10 (south the reference)
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
    cohorts, categories = _cohorts(table, PHENOS, covars)  # --require-pheno QT,CC,CCW as the fixture
    job = GlmJob(phenos, covars, mods, categories=categories, standardize=standardize)
    h.run_job(job, geno, cohorts)
    return job, write_result(job.result(pooled.variants.take(keep_var)), tmp_path / prefix)


def _assert_equal(path: Path) -> None:
    """Every row's ID/A1/FIRTH?/TEST/OBS_CT/ERRCODE as plink2's; values within its printed digits
    (linear: most rows identical text) or its single-precision fit (logistic, Firth: as
    tests/test_glm_logistic.py)."""
    c = h.compare(path, CAT / "expected" / path.name)
    assert c.rows > 500
    assert c.key_mismatch == 0, c.mismatches[:3]
    assert c.max_beta_dev_se <= (1e-4 if path.suffix == ".linear" else 5e-4)
    assert c.max_log10p_dev <= (1e-4 if path.suffix == ".linear" else 2e-4)
    if path.suffix == ".linear":
        assert c.identical >= 0.95 * c.rows


def test_glm__categorical_covariates_equal_plink2_linear_logistic_and_separated(tmp_path: Path):
    job, paths = _run(PHENOS, frozenset(), tmp_path, "cat")
    assert [p.name for p in paths] == ["cat.QT.glm.linear", "cat.CC.glm.logistic.hybrid", "cat.CCW.glm.logistic.hybrid"]
    for path in paths:
        _assert_equal(path)
    # the design as plink2 builds it: covariates in order, each categorical one expanded in place,
    # the most common category (south; axiom/gsa: gsa) left out as the reference
    tests = [line.split("\t")[7] for line in paths[1].read_text().splitlines()[1:9]]
    assert tests == ["ADD", "AGE", "SEX", "CENTRE=East", "CENTRE=north", "CENTRE=west9", "CENTRE=west10", "ARRAY=axiom"]
    # CCW: west10 holds only controls, so firth-fallback fits every variant by Firth, as plink2
    firth = {line.split("\t")[6] for line in paths[2].read_text().splitlines()[1:] if "\tNA\t" not in line}
    assert firth == {"Y"}
    assert any("covariate 'CENTRE' is (quasi-)separated by phenotype 'CCW'" in line for line in job.log_lines())


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


def test_merged_levels__a_hostile_site_cannot_smuggle_text_or_columns():
    assert merged_levels(("AGE", "C"), {"A": {"C": ("b", "a")}, "B": {"C": ("c",)}}) == {"C": ("a", "b", "c")}
    with pytest.raises(ProtocolError, match="does not name"):
        merged_levels(("AGE", "C"), {"A": {"BMI": ("x",)}})
    with pytest.raises(ProtocolError, match="cannot be ones"):
        merged_levels(("C",), {"A": {"C": ("has space",)}})
    with pytest.raises(ProtocolError, match="cannot be ones"):
        merged_levels(("C",), {"A": {"C": ("x" * 65,)}})


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
        _assert_equal(tmp_path / name)
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
