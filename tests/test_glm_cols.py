"""``--glm cols=``: plink2 2.00a3.5's column sets, from the sums a job already releases.

References: plink2's outputs on the pooled fixtures, ``tests/data/cols/expected`` (made by
``scripts/make_cols_fixture.py``): the GWAS fixture's chromosome 1 with four column sets, and the
dosage fixture's first 80 variants through the real daemons. Every column that is not a fitted
statistic (keys, A1 and AX, the A1 dosage counts and frequencies overall and in cases and controls,
allele counts, FIRTH?, TEST, OBS_CT, ERRCODE) is compared byte for byte; the fitted ones (BETA/OR,
SE, L/U, T/Z, P), which plink2 computes in its own floating point (single precision for logistic),
to the last printed digits, as tests/test_glm_logistic.py does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.errors import InputError
from fedstat.formats.columns import GLM_COLUMNS, GLM_DEFAULT, glm_columns, parse_col_descriptor
from fedstat.formats.plink2 import write_glm
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec
from fedstat.stats.glm import GlmJob
from tests import glm_harness as h

COLS = Path(__file__).parent / "data" / "cols"
EXPECTED = COLS / "expected"
DOSAGE = Path(__file__).parent / "data" / "dosage"
GWAS_SUBSET = {"every": 107109}  # --to-bp of the run (scripts/make_cols_fixture.py); else all of chr 1
#: the fixture script's GLM_RUNS as fedstat reads them: (modifiers, cols=, --ci)
RUNS = {
    "ccfreq": (frozenset({"hide-covar"}), "+a1freq,+a1freqcc,+a1countcc,+totallelecc", 0.0),
    "short": (frozenset({"hide-covar"}), "chrom,pos,ref,alt,a1freq,beta,se,p", 0.0),
    "every": (
        frozenset(),
        "chrom,pos,ref,alt1,alt,ax,a1count,totallele,a1countcc,totallelecc,a1freq,a1freqcc,firth,test,nobs,beta,"
        "orbeta,se,ci,tz,p,err",
        0.95,
    ),
    "minus": (frozenset({"no-firth", "hide-covar"}), "-chrom,-ref,-nobs,-tz,+ax,+a1count,+totallele", 0.9),
}
FITTED = {"BETA", "OR", "SE", "LOG(OR)_SE", "T_STAT", "Z_STAT", "P"}


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _fitted(name: str) -> bool:
    return name in FITTED or (name[:1] in "LU" and name[1:].replace(".", "").isdigit())


def assert_matches_plink2(ours_path: Path, theirs_path: Path, *, identical_share: float) -> dict[str, int]:
    """Headers and every non-fitted column byte for byte; fitted ones to plink2's printed digits.

    Returns how many rows hold each non-fitted column value ``nan`` (for the tests to see edge cases).
    """
    ours, theirs = _rows(ours_path), _rows(theirs_path)
    head = theirs[0]
    assert ours[0] == head, f"{ours_path.name}: header {ours[0]} vs {head}"
    assert len(ours) == len(theirs) > 1
    se_col = next((head.index(c) for c in ("SE", "LOG(OR)_SE") if c in head), None)
    odds = "OR" in head
    for c, name in enumerate(head):
        if not _fitted(name):
            assert [r[c] for r in ours] == [r[c] for r in theirs], f"{ours_path.name}: column {name} differs"
            continue
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            x, y = a[c], b[c]
            if x == y:
                continue
            assert "NA" not in (x, y), (ours_path.name, name, b[head.index("ID")])
            fx, fy = float(x), float(y)
            if name == "P":
                assert abs(math.log10(fx) - math.log10(fy)) <= 2e-4, (name, x, y)
                continue
            if odds and name != "LOG(OR)_SE" and name not in ("Z_STAT",):
                fx, fy = math.log(fx), math.log(fy)  # OR and its bounds: the log-odds
            se = float(b[se_col]) if se_col is not None else 1.0
            tol = 1e-5 * max(abs(fx), abs(fy)) + (1e-3 * se if name in ("SE", "LOG(OR)_SE") else 5e-4 * se)
            if name in ("T_STAT", "Z_STAT"):
                tol = 1e-5 * max(abs(fx), abs(fy)) + 5e-4
            assert abs(fx - fy) <= tol, (ours_path.name, name, b[head.index("ID")], x, y)
    same = sum(a == b for a, b in zip(ours[1:], theirs[1:], strict=True))
    assert same >= identical_share * (len(theirs) - 1), f"{ours_path.name}: {same} of {len(theirs) - 1} rows identical"
    return {name: sum(r[c] == "nan" for r in ours[1:]) for c, name in enumerate(head) if not _fitted(name)}


def _gwas_job(run: str, *, min_cell_count: int = 0) -> tuple[GlmJob, object]:
    mods, cols, ci = RUNS[run]
    pooled = h.load_pooled()
    keep = pooled.variants.chrom == "1"
    if run in GWAS_SUBSET:
        keep &= pooled.variants.pos <= GWAS_SUBSET[run]
    rows = np.flatnonzero(keep)
    geno = pooled.geno[rows]
    cohorts = []
    for s in range(len(h.SITES)):
        idx = np.flatnonzero(pooled.site_of == s)
        cohorts.append((h.make_cohort(pooled.table, idx, ("QT", "CC", *h.COVARS)), idx))
    job = GlmJob(("QT", "CC"), h.COVARS, mods, ci=ci, columns=glm_columns(cols, ci=ci), min_cell_count=min_cell_count)
    h.run_job(job, geno, cohorts)
    return job, pooled.variants.take(rows)


# ---------------------------------------------------------------------------------------------
# the column sets against plink2, hard calls
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", sorted(RUNS))
def test_write_glm__cols_sets_match_plink2(run, tmp_path):
    job, variants = _gwas_job(run)
    paths = write_result(job.result(variants), tmp_path / run)
    ext = {"minus": "glm.logistic"}.get(run, "glm.logistic.hybrid")
    assert [p.name for p in paths] == [f"{run}.QT.glm.linear", f"{run}.CC.{ext}"]
    for path in paths:
        # plink2's logistic fits run in single precision: a last digit of the covariates' fitted
        # values often differs (run "every" shows their rows)
        share = 0.9 if ".linear" in path.name else (0.3 if run == "every" else 0.5)
        assert_matches_plink2(path, EXPECTED / path.name, identical_share=share)


def test_write_glm__case_control_counts_by_hand(tmp_path):
    """A1_CASE_CT etc. on two rows worked from the pooled genotypes: A1 dosage and allele counts
    over the samples of the regression (phenotype, covariates and genotype present)."""
    job, variants = _gwas_job("ccfreq")
    pooled = h.load_pooled()
    rows = np.flatnonzero(pooled.variants.chrom == "1")
    cc = np.asarray(pooled.table.column("CC"), dtype=np.float64)
    covs = np.column_stack([np.asarray(pooled.table.column(c), dtype=np.float64) for c in h.COVARS])
    in_model = np.isin(cc, (1.0, 2.0)) & ~np.isnan(covs).any(axis=1)
    res = job.results["CC"]
    theirs = _rows(EXPECTED / "ccfreq.CC.glm.logistic.hybrid")
    head = theirs[0]
    for v in (0, 25):  # an ordinary variant and the separating one (every carrier a case, Firth)
        g = pooled.geno[rows[v]].astype(np.float64)
        s = in_model & (g >= 0)
        a1 = 2.0 - g if res.a1_is_ref[v] else g
        case = s & (cc == 2.0)
        ctrl = s & (cc == 1.0)
        row = theirs[1 + v]
        assert row[head.index("A1_CASE_CT")] == f"{a1[case].sum():g}"
        assert row[head.index("A1_CTRL_CT")] == f"{a1[ctrl].sum():g}"
        assert row[head.index("CASE_ALLELE_CT")] == str(2 * case.sum())
        assert row[head.index("CTRL_ALLELE_CT")] == str(2 * ctrl.sum())
        assert res.case_obs_ct[v] == case.sum() and res.a1_case_ct[v] == a1[case].sum()
    assert theirs[26][head.index("FIRTH?")] == "Y" and theirs[26][head.index("A1_CTRL_CT")] == "0"


def test_write_glm__case_control_counts_under_disclosure_control(tmp_path):
    """A site's min_cell_count (DataSHIELD's nfilter.tab, as --assoc applies it): a variant whose
    case/control A1 or non-A1 count is in (0, min) has its four case/control A1 columns written NA;
    every other cell is plink2's, and the job log says how many were withheld."""
    job, variants = _gwas_job("ccfreq", min_cell_count=10)
    (_, path) = write_result(job.result(variants), tmp_path / "dc")
    ours, theirs = _rows(path), _rows(EXPECTED / "ccfreq.CC.glm.logistic.hybrid")
    head = theirs[0]
    cc = [head.index(c) for c in ("A1_CASE_CT", "A1_CTRL_CT", "A1_CASE_FREQ", "A1_CTRL_FREQ")]
    cells = {c: head.index(c) for c in ("A1_CASE_CT", "A1_CTRL_CT", "CASE_ALLELE_CT", "CTRL_ALLELE_CT")}
    withheld = 0
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        case, ctrl = float(b[cells["A1_CASE_CT"]]), float(b[cells["A1_CTRL_CT"]])
        four = (case, int(b[cells["CASE_ALLELE_CT"]]) - case, ctrl, int(b[cells["CTRL_ALLELE_CT"]]) - ctrl)
        small = any(0 < x < 10 for x in four)
        withheld += small
        assert [a[c] for c in cc] == (["NA"] * 4 if small else [b[c] for c in cc])
        assert [x for i, x in enumerate(a) if i not in cc][:10] == [x for i, x in enumerate(b) if i not in cc][:10]
    assert 0 < withheld < len(theirs) - 1  # the separating variant (9 case copies) among them
    assert ours[26][cc[0]] == "NA"
    assert any(f"disclosure control: {withheld} variants' case/control A1 counts" in line for line in job.log_lines())
    # no cc column asked for: nothing to withhold, nothing logged
    plain, _ = _gwas_job("short", min_cell_count=10)
    assert plain.results["CC"].cc_suppressed is None
    assert not any("disclosure control" in line for line in plain.log_lines())


def test_write_glm__default_columns_unchanged(tmp_path):
    """No cols= and cols= spelling out plink2's default write the same bytes (the existing files)."""
    job, variants = _gwas_job("ccfreq")
    res = job.results["CC"]
    default = write_glm(tmp_path / "a", variants, res)
    spelled = write_glm(tmp_path / "b", variants, res, glm_columns(",".join(sorted(GLM_DEFAULT))))
    assert default.read_bytes() == spelled.read_bytes()
    assert default.read_text().split("\n", 1)[0] == (
        "#CHROM\tPOS\tID\tREF\tALT\tA1\tFIRTH?\tTEST\tOBS_CT\tOR\tLOG(OR)_SE\tZ_STAT\tP\tERRCODE"
    )


def test_write_glm__refuses_columns_without_their_sums(tmp_path):
    job, variants = _gwas_job("short")
    for name in ("gcountcc", "machr2"):
        with pytest.raises(InputError, match=name):
            write_glm(tmp_path / "x", variants, job.results["CC"], frozenset({"chrom", name}))
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------------------------------------
# parsing cols= as plink2 does, and the refusals
# ---------------------------------------------------------------------------------------------


def test_parse_col_descriptor__plink2_semantics():
    assert glm_columns(None) == GLM_DEFAULT
    assert glm_columns("+a1freq,-err") == (GLM_DEFAULT | {"a1freq"}) - {"err"}
    assert glm_columns("chrom,p") == {"chrom", "p"}
    assert glm_columns("+a1freq,+a1freq") == GLM_DEFAULT | {"a1freq"}  # repeats are harmless
    assert glm_columns("-ax") == GLM_DEFAULT  # removing an absent column does nothing
    assert len(GLM_COLUMNS) == 24


@pytest.mark.parametrize(
    ("text", "ci", "match"),
    [
        ("", 0.0, "names no column"),  # plink2: Invalid --glm argument 'cols='
        ("chrom,+pos", 0.0, "every column must be preceded by"),  # plink2: mixed signs
        ("+omitted", 0.0, "later plink2 versions"),  # plink2 2.00a3.5: Unrecognized ID 'omitted'
        ("+provref", 0.0, "later plink2 versions"),
        ("+A1FREQ", 0.0, "unknown column"),  # names are case-sensitive in plink2
        ("-" + ",-".join(sorted(GLM_DEFAULT)), 0.0, "excludes every column"),  # plink2: All columns excluded
        ("se", 0.0, "need 'beta' or 'orbeta'"),  # plink2: 'se' and 'ci' columns require beta/orbeta
        ("ci,p", 0.95, "need 'beta' or 'orbeta'"),
    ],
)
def test_glm_columns__plink2_refusals(text, ci, match):
    with pytest.raises(InputError, match=match):
        glm_columns(text, ci=ci)


def test_glm_columns__ci_without_beta_is_fine_without_ci():
    # plink2 checks ci only under --ci (it prints no L/U columns otherwise)
    assert glm_columns("ci,p") == {"ci", "p"}
    assert parse_col_descriptor("+x", ("x",), frozenset(), "glm") == {"x"}


def _spec(cols: str, **options: str) -> JobSpec:
    return JobSpec(analyses=("glm",), pheno_names=("CC",), covar_names=("AGE",), options={"glm_cols": cols, **options})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (_spec("+gcountcc"), "column gcountcc cannot be written.*do not release"),
        (_spec("+machr2"), "column machr2 cannot be written"),
        (_spec("-test", glm="show-covar"), "'test' column cannot be left out"),
        (JobSpec(analyses=("freq",), options={"glm_cols": "+a1freq"}), "needs --glm"),
        (JobSpec(analyses=("glm",), pheno_names=("CC",), options={"glm": "cols=+a1freq"}), "job option glm_cols"),
    ],
)
def test_spec__refuses_cols_it_cannot_compute(spec, match):
    with pytest.raises(InputError, match=match):
        spec.validated()


def test_spec__cols_accepted_and_hidden_covariates_need_no_test_column():
    assert _spec("+a1freq,+a1freqcc,+a1countcc,+totallelecc").validated().options["glm_cols"].startswith("+a1freq")
    _spec("-test").validated()  # covariate rows hidden (fedstat's default): one test per variant


def test_cli__glm_cols_travel_apart_from_the_modifiers(tmp_path, capsys):
    from fedstat.cli.main import build_parser  # noqa: PLC0415
    from fedstat.cli.modifiers import modifier_options  # noqa: PLC0415

    args = build_parser().parse_args(
        [
            "submit",
            "--profile",
            "p.toml",
            "--out",
            "x",
            "--glm",
            "firth",
            "cols=+a1freq,+a1freqcc",
            "--freq",
            "cols=+pos",
        ]
    )
    assert modifier_options(args) == {"glm": "firth", "glm_cols": "+a1freq,+a1freqcc", "freq_cols": "+pos"}
    base = ["submit", "--profile", str(tmp_path / "none.toml"), "--pheno-name", "CC", "--out", "x"]
    assert cli([*base, "--glm", "cols=+gcountcc"]) == 2
    assert "gcountcc" in capsys.readouterr().err
    assert cli([*base, "--glm", "cols=+a1freq", "cols=+ax"]) == 2
    assert "more than once" in capsys.readouterr().err
    assert cli([*base, "--freq", "counts"]) == 2
    assert "cols= only" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# through the daemons, on imputed dosages
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("cols") / "W"
    sites = [a for s in ("AFR", "EAS", "EUR") for a in ("--site", f"{s}={DOSAGE / s}")]
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_glm_and_freq_cols__through_the_daemons_on_dosages(workspace: Path, tmp_path: Path, capsys):
    """--freq cols= and --glm cols= with A1 dosage counts in cases and controls, from the rounds a
    plain --freq --glm job runs (scripts/make_cols_fixture.py: DOSAGE_FREQ_COLS, DOSAGE_GLM_COLS)."""
    out = tmp_path / "d"
    args = ["submit", "--profile", str(workspace / "analyst.toml"), "--chr", "1", "--to-bp", "17663"]
    args += ["--freq", "cols=+pos,+reffreq,+alt1freq"]
    args += ["--glm", "cols=+ax,+a1count,+totallele,+a1countcc,+totallelecc,+a1freq,+a1freqcc"]
    args += ["--pheno-name", "QT,CC", "--require-pheno", "--covar-name", "AGE,SEX", "--require-covar"]
    assert cli([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    assert (tmp_path / "d.afreq").read_bytes() == (EXPECTED / "dosage.afreq").read_bytes()
    for name in ("d.QT.glm.linear", "d.CC.glm.logistic.hybrid"):
        nan = assert_matches_plink2(tmp_path / name, EXPECTED / name.replace("d.", "dosage.", 1), identical_share=0.5)
        assert not any(nan.values())
    rows = _rows(tmp_path / "d.CC.glm.logistic.hybrid")
    a1_case = rows[0].index("A1_CASE_CT")
    assert any("." in r[a1_case] for r in rows[1:])  # soft dosages: fractional counts, printed as plink2
    provenance = (tmp_path / "d.provenance.json").read_text()
    assert '"glm_cols": "+ax,+a1count' in provenance
