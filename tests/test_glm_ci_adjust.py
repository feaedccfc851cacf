"""``--glm`` with ``--ci`` and ``--adjust``: plink2's columns and ``.adjusted`` files, computed at the
coordinator from the per-variant results.

Two references, both checked-in plink2 2.00a3.5 outputs (scripts/make_gwas_fixture.py):

- ``ci95.*``: plink2 ``--glm hide-covar --ci 0.95 --adjust`` on the pooled fixture. fedstat's
  federated fits agree with plink2's to ~1e-6 relative (plink2's logistic fits run in single
  precision), so a last printed digit may differ where the GLM's own columns already differ;
  every other value, the row order and the headers are compared exactly.
- ``adjust*.adjusted``: plink2 ``--adjust-file`` over plink2's own ``ci95`` p-values. Fed the
  same p-values, fedstat's ``--adjust`` must write the same bytes: the algorithm and its number
  formatting exactly, with ``gc``, ``log10`` and ``cols=``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats.plink2 import write_adjusted
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec
from fedstat.stats.adjust import AdjustOptions, multcomp
from fedstat.stats.glm import GlmJob, GlmResult, ci_zscore
from tests import glm_harness as h

#: --adjust-file runs of the fixture script: expected file -> (plink2 --glm output read, modifiers)
ADJUST_FILE_RUNS = {
    "adjust.QT.adjusted": ("ci95.QT.glm.linear", ()),
    "adjust.CC.adjusted": ("ci95.CC.glm.logistic.hybrid", ()),
    "adjust_gc_log10.QT.adjusted": ("ci95.QT.glm.linear", ("gc", "log10", "cols=+qq,+pos,+ref,+alt")),
    "adjust_gc_log10.CC.adjusted": ("ci95.CC.glm.logistic.hybrid", ("gc", "log10", "cols=+qq,+pos,+ref,+alt")),
}


_DEFAULT_ADJUST = AdjustOptions()


def _ci95_job(pheno: str, *, ci: float = 0.95, adjust: AdjustOptions | None = _DEFAULT_ADJUST) -> GlmJob:
    pooled = h.load_pooled()
    cohorts = []
    for s in range(len(h.SITES)):
        idx = np.flatnonzero(pooled.site_of == s)
        cohorts.append((h.make_cohort(pooled.table, idx, (pheno, *h.COVARS)), idx))
    job = GlmJob((pheno,), h.COVARS, frozenset({"hide-covar"}), ci=ci, adjust=adjust)
    return h.run_job(job, pooled.geno, cohorts)[0]


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _differing_ids(ours: Path, theirs: Path) -> set[str]:
    """IDs of the rows of two --glm files that differ anywhere."""
    a, b = _rows(ours), _rows(theirs)
    assert a[0] == b[0] and len(a) == len(b)
    col = b[0].index("ID")
    return {rb[col] for ra, rb in zip(a[1:], b[1:], strict=True) if ra != rb}


# ---------------------------------------------------------------------------------------------
# --ci
# ---------------------------------------------------------------------------------------------


def test_ci_zscore__plink2_quantile_approximation():
    # plink2's QuantileToZscore (Acklam): 1.959963986…, not the exact 1.959963984540054
    assert ci_zscore(0.95) == pytest.approx(1.959963984540054, rel=2e-9)
    assert ci_zscore(0.95) != 1.959963984540054
    assert ci_zscore(0.999) == pytest.approx(3.290526731491926, rel=1e-8)  # tail branch
    assert ci_zscore(0.01) == pytest.approx(0.012533469508069276, rel=1e-8)


@pytest.mark.parametrize(("pheno", "ext"), [("QT", "glm.linear"), ("CC", "glm.logistic.hybrid")])
def test_glm_ci__columns_match_plink2(pheno, ext, tmp_path):
    job = _ci95_job(pheno, adjust=None)
    (path,) = write_result(job.result(h.load_pooled().variants), tmp_path / "ci95")
    assert path.name == f"ci95.{pheno}.{ext}"
    expected = h.EXPECTED / path.name
    ours, theirs = _rows(path), _rows(expected)
    head = theirs[0]
    assert ours[0] == head and head[head.index("L95") - 1] in ("SE", "LOG(OR)_SE")
    assert head[head.index("U95") + 1] in ("T_STAT", "Z_STAT")
    # linear: the rows differing from plink2's are exactly those whose plain --glm row already
    # differs (a last digit of a fitted value), never one made different by the interval;
    # logistic: plink2's single-precision fits move a last digit of the bounds more often
    plain = _differing_ids(write_result(_ci95_job(pheno, ci=0.0, adjust=None).result(h.load_pooled().variants),
                                        tmp_path / "plain")[0], h.EXPECTED / f"pooled.{pheno}.{ext}")  # fmt: skip
    lo, hi = head.index("L95"), head.index("U95")
    col_id = head.index("ID")
    differing = set()
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        if a == b:
            continue
        differing.add(a[col_id])
        assert a[: lo - 2] == b[: lo - 2] and a[-1] == b[-1]  # keys, OBS_CT and ERRCODE
        assert (a[lo] == "NA") == (b[lo] == "NA")
        if b[lo] != "NA":
            for c in (lo, hi):
                if pheno == "QT":
                    assert float(a[c]) == pytest.approx(float(b[c]), rel=2e-5)
                else:  # log-odds scale; Firth fits as in test_glm_logistic.py
                    assert math.log(float(a[c])) == pytest.approx(math.log(float(b[c])), abs=2e-3)
    if pheno == "QT":
        assert differing == plain and len(plain) <= 5
    else:
        assert len(differing) < 0.45 * (len(theirs) - 1)
    assert sum(r[lo] == "NA" for r in ours[1:]) == sum(r[lo] == "NA" for r in theirs[1:]) > 0


def test_glm_ci__header_names_the_level(tmp_path):
    job = _ci95_job("QT", ci=0.999, adjust=None)
    (path,) = write_result(job.result(h.load_pooled().variants), tmp_path / "x")
    header = path.read_text().split("\n", 1)[0].split("\t")
    assert header[9:13] == ["SE", "L99.9", "U99.9", "T_STAT"]


# ---------------------------------------------------------------------------------------------
# --adjust
# ---------------------------------------------------------------------------------------------


def _from_plink2_glm(path: Path) -> tuple[VariantTable, GlmResult]:
    """plink2's --glm file as a one-test GlmResult: the p-values plink2 printed, nothing else."""
    rows = _rows(path)
    head, body = rows[0], rows[1:]
    col = {name: head.index(name) for name in ("#CHROM", "POS", "ID", "REF", "ALT", "A1", "P")}

    def column(name: str) -> np.ndarray:
        return np.array([r[col[name]] for r in body], dtype=object)

    variants = VariantTable(
        chrom=column("#CHROM"),
        pos=np.array([int(r[col["POS"]]) for r in body], dtype=np.int64),
        id=column("ID"),
        ref=column("REF"),
        alt=column("ALT"),
    )
    n = len(body)
    log_p = np.array([[math.nan if r[col["P"]] == "NA" else math.log(float(r[col["P"]]))] for r in body])
    nan = np.full((n, 1), math.nan)
    res = GlmResult(
        pheno="P",
        is_binary=False,
        method="linear",
        covariates=(),
        tests=("ADD",),
        n_samples=0,
        n_cases=0,
        n_controls=0,
        a1_is_ref=column("A1") == column("REF"),
        obs_ct=np.zeros(n, dtype=np.int64),
        a1_freq=np.full(n, math.nan),
        beta=nan,
        se=nan,
        stat=nan,
        log_p=log_p,
        errcode=np.full(n, ".", dtype=object),
        firth=np.zeros(n, dtype=bool),
    )
    return variants, res


@pytest.mark.parametrize("expected", sorted(ADJUST_FILE_RUNS))
def test_multcomp__byte_identical_to_plink2_on_the_same_p_values(expected, tmp_path):
    source, words = ADJUST_FILE_RUNS[expected]
    variants, res = _from_plink2_glm(h.EXPECTED / source)
    adjusted = multcomp(res.log_p[:, 0], AdjustOptions.parse(words))
    assert adjusted is not None
    res = GlmResult(**{**res.__dict__, "adjusted": adjusted})
    path = write_adjusted(tmp_path / expected, variants, res)
    assert path.read_bytes() == (h.EXPECTED / expected).read_bytes()


@pytest.mark.parametrize(("pheno", "ext"), [("QT", "glm.linear"), ("CC", "glm.logistic.hybrid")])
def test_glm_adjust__matches_plink2(pheno, ext, tmp_path):
    job = _ci95_job(pheno)
    glm_path, adj_path = write_result(job.result(h.load_pooled().variants), tmp_path / "ci95")
    assert adj_path.name == f"ci95.{pheno}.{ext}.adjusted" == glm_path.name + ".adjusted"
    theirs = _rows(h.EXPECTED / adj_path.name)
    ours = _rows(adj_path)
    assert ours[0] == theirs[0] == "#CHROM ID A1 UNADJ GC BONF HOLM SIDAK_SS SIDAK_SD FDR_BH FDR_BY".split()
    # the same tests in the same order, each with its chromosome and tested allele
    assert [r[:3] for r in ours] == [r[:3] for r in theirs]
    # the values: as close as the GLM's p-values are to plink2's (1e-4 in log10 p; the logistic
    # ones a little looser where plink2's single-precision Firth fits differ, test_glm_logistic.py)
    rel = 5e-5 if pheno == "QT" else 1e-3
    identical = 0
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        identical += a == b
        for x, y in zip(a[3:], b[3:], strict=True):
            assert x == y or float(x) == pytest.approx(float(y), rel=rel)
    assert identical >= (0.9 if pheno == "QT" else 0.5) * (len(theirs) - 1)
    # λ as plink2 logs it
    lam = {"QT": "1.00774", "CC": "1.09154"}[pheno]
    assert f"--adjust: Genomic inflation est. lambda (based on median chisq) = {lam}." in job.log_lines()


def test_multcomp__hand_worked_case():
    p = np.array([0.04, 0.01, np.nan, 0.03, 0.5])
    adj = multcomp(np.log(p), AdjustOptions())
    assert adj is not None
    assert adj.rows.tolist() == [1, 3, 0, 4]  # ascending p, the failed test left out
    got = {k: np.exp(getattr(adj, k)) for k in ("bonf", "holm", "sidak_ss", "sidak_sd", "fdr_bh", "fdr_by")}
    np.testing.assert_allclose(got["bonf"], [0.04, 0.12, 0.16, 1.0])
    np.testing.assert_allclose(got["holm"], [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(got["sidak_ss"], 1 - (1 - np.array([0.01, 0.03, 0.04, 0.5])) ** 4)
    # p_(i) n / (i + 1) = 0.04, 0.06, 0.0533, 0.5; running min from the bottom
    np.testing.assert_allclose(got["fdr_bh"], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    h4 = 1 + 1 / 2 + 1 / 3 + 1 / 4
    np.testing.assert_allclose(got["fdr_by"], [0.04 * h4, 0.04 * 4 / 3 * h4, 0.04 * 4 / 3 * h4, 1.0])
    assert adj.lambda_gc >= 1.0
    assert multcomp(np.array([np.nan, np.nan]), AdjustOptions()) is None


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


def _spec(**options: str) -> JobSpec:
    return JobSpec(analyses=("glm",), pheno_names=("QT",), options=options)


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"ci": "1.5"}, "--ci"),
        ({"ci": "0"}, "--ci"),
        ({"ci": "abc"}, "--ci"),
        ({"adjust": "bogus"}, "--adjust"),
        ({"adjust": "cols=+nonsense"}, "--adjust"),
        ({"adjust": "zs"}, "--adjust"),
    ],
)
def test_spec__bad_ci_or_adjust_is_refused_naming_the_flag(options, flag):
    with pytest.raises(InputError, match=flag):
        _spec(**options).validated()


def test_spec__ci_and_adjust_need_glm():
    for options in ({"ci": "0.95"}, {"adjust": ""}):
        with pytest.raises(InputError, match="--glm"):
            JobSpec(analyses=("freq",), options=options).validated()


def test_cli__bad_ci_and_adjust_are_refused_before_submitting(tmp_path, capsys):
    from fedstat.cli.main import main as cli  # noqa: PLC0415

    base = ["submit", "--profile", str(tmp_path / "none.toml"), "--glm", "--pheno-name", "QT", "--out", "x"]
    assert cli([*base, "--ci", "1.5"]) == 2
    assert "--ci" in capsys.readouterr().err
    assert cli([*base, "--adjust", "bogus"]) == 2
    assert "--adjust" in capsys.readouterr().err
