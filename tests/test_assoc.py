"""Federated ``--assoc``/``--model`` equal PLINK 1.9 on the pooled GWAS fixture, for any split.

The pooled genotypes are read with fedstat's reader (tests.conftest.read_pooled), split into the fixture's sites (IID prefix), each
site computes its counts, the counts are added, and the tables written by fedstat are compared
byte for byte with PLINK 1.9's output in ``tests/data/gwas/expected/`` (built by
``scripts/make_gwas_fixture.py``). The fixture's pooled orientation equals the harmonized one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats import numbers, plink1
from fedstat.formats.results import write_result
from fedstat.stats import assoc
from fedstat.stats.base import Cohort, RoundInput
from tests.conftest import read_pooled

FIXTURE = Path(__file__).parent / "data" / "gwas"
EXPECTED = FIXTURE / "expected"


def _read_pooled() -> tuple[np.ndarray, VariantTable, np.ndarray, np.ndarray]:
    geno, variants, psam_iids = read_pooled(FIXTURE)
    header, *lines = (FIXTURE / "pooled" / "samples.tsv").read_text().splitlines()
    col = header.split("\t").index("CC")
    fields = [line.split("\t") for line in lines]
    cc = np.array([np.nan if f[col] == "NA" else float(f[col]) for f in fields])
    site = np.array([f[1].split("_")[0] for f in fields])
    assert list(psam_iids) == [f[1] for f in fields]
    return geno, variants, cc, site


GENO, VARIANTS, CC, SITE = _read_pooled()
N_VAR = GENO.shape[0]


def _run_sites(parts: list[np.ndarray]) -> assoc.AssocAnalysis:
    """Run the one assoc round with ``parts`` = per-site sample index arrays."""
    analysis = assoc.plan_assoc("CC", model=True, assoc=True)
    plan = analysis.next_round(None)
    assert plan is not None and plan.computation == assoc.COMPUTATION
    comp = assoc.LOCAL_COMPUTATIONS[plan.computation]
    inp = RoundInput(params=plan.params, arrays={}, variants=np.arange(N_VAR))
    total: dict[str, np.ndarray] = {}
    for idx in parts:
        cohort = Cohort(n=len(idx), columns={"CC": CC[idx]})
        site_sums = {**comp.cohort_sums(cohort, inp)}
        # two blocks per site, as a daemon would stream them
        half = N_VAR // 2
        blocks = [comp.block_sums(GENO[r][:, idx], cohort, inp, r) for r in (slice(0, half), slice(half, N_VAR))]
        for name in blocks[0]:
            site_sums[name] = np.concatenate([b[name] for b in blocks])
        for name, arr in site_sums.items():
            assert arr.dtype == np.int64
            total[name] = total.get(name, 0) + arr
    assert analysis.next_round(total) is None
    return analysis


@pytest.fixture(scope="module")
def three_sites() -> assoc.AssocAnalysis:
    sites = sorted(set(SITE))
    assert sites == ["AFR", "EAS", "EUR"]
    return _run_sites([np.flatnonzero(SITE == s) for s in sites])


def test_write__assoc_and_model_byte_identical_to_plink19(tmp_path, three_sites):
    paths = write_result(three_sites.result(VARIANTS), tmp_path / "fed")
    assert [p.name for p in paths] == ["fed.assoc", "fed.model"]
    for path, ref in zip(paths, ("pooled.assoc", "pooled.model"), strict=True):
        got = path.read_bytes().splitlines(keepends=True)
        want = (EXPECTED / ref).read_bytes().splitlines(keepends=True)
        identical = sum(a == b for a, b in zip(got, want, strict=False))
        assert (identical, len(got)) == (len(want), len(want)), ref


def test_log_lines__counts_cases_controls_and_missing(three_sites):
    assert three_sites.log_lines() == [
        "assoc CC: 261 cases and 382 controls; 17 samples missing the phenotype excluded"
    ]


def test_result__per_variant_statistics_match_table(three_sites):
    stats = three_sites.result(VARIANTS).stats
    rows = [line.split() for line in (EXPECTED / "pooled.assoc").read_text().splitlines()[1:]]
    a1, a2 = stats.alleles(VARIANTS)
    assert [r[3] for r in rows] == list(a1)
    assert [r[6] for r in rows] == list(a2)
    for r, p in zip(rows, stats.p, strict=True):
        assert (r[8] == "NA") == bool(np.isnan(p))
        if r[8] != "NA":
            assert float(r[8]) == pytest.approx(p, rel=1e-3, abs=1e-300)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_sites=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_split__gives_identical_tables(tmp_path_factory, three_sites, n_sites, seed, data):
    rng = np.random.default_rng(seed)
    site_of = rng.integers(0, n_sites, size=GENO.shape[1])
    if data.draw(st.booleans(), label="one empty site"):
        site_of[site_of == 0] = n_sites - 1  # site 0 holds nobody
    order = data.draw(st.permutations(range(n_sites)), label="site order")
    parts = [np.flatnonzero(site_of == s) for s in order]
    out = tmp_path_factory.mktemp("split")
    got = write_result(_run_sites(parts).result(VARIANTS), out / "x")
    want = write_result(three_sites.result(VARIANTS), out / "ref")
    for g, w in zip(got, want, strict=True):
        assert g.read_bytes() == w.read_bytes()


def test_finish__a1_is_minor_allele_and_ties_keep_alt():
    # variant 0: REF frequent (A1 = ALT); 1: ALT frequent (A1 = REF); 2: tie; 3: no genotype
    sums = {name: np.zeros(4, dtype=np.int64) for name in assoc.SUM_NAMES}
    sums["all_hom_ref"][:] = [10, 1, 5, 0]
    sums["all_hom_alt"][:] = [1, 10, 5, 0]
    stats = assoc.finish(sums)
    assert stats.a1_is_alt.tolist() == [True, False, True, True]


def test_finish__hand_worked_allelic_test():
    # cases: 10 A1/A1, 20 het, 10 A2/A2; controls: 5, 20, 25 (A1 = ALT, the minor allele)
    sums = {name: np.zeros(1, dtype=np.int64) for name in assoc.SUM_NAMES}
    for grp, (hom_alt, het, hom_ref) in {"case": (10, 20, 10), "ctrl": (5, 20, 25)}.items():
        sums[f"{grp}_hom_alt"][:], sums[f"{grp}_het"][:], sums[f"{grp}_hom_ref"][:] = hom_alt, het, hom_ref
    for key in ("hom_alt", "het", "hom_ref"):
        sums[f"all_{key}"] = sums[f"case_{key}"] + sums[f"ctrl_{key}"]
    stats = assoc.finish(sums)
    # 2x2 alleles: cases 40 A1 / 40 A2, controls 30 / 70
    table = np.array([[40.0, 40.0], [30.0, 70.0]])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chisq = ((table - expected) ** 2 / expected).sum()
    assert stats.chisq[0] == pytest.approx(chisq, rel=1e-12)
    assert stats.odds_ratio[0] == pytest.approx((40 * 70) / (30 * 40))
    assert stats.f_a[0] == 0.5 and stats.f_u[0] == 0.3
    assert stats.geno_df[0] == 2 and not np.isnan(stats.trend_p[0])


@pytest.mark.parametrize(
    ("value", "width", "text"),
    [
        (0.13581, 12, "      0.1358"),
        (2.225, 12, "       2.225"),
        (0.0, 8, "       0"),
        (float("nan"), 8, "     nan"),
        (1.23456e-5, 12, "   1.235e-05"),
        (0.000297, 12, "    0.000297"),
        (12345.0, 8, "1.234e+04"),
        (1e-300, 12, "      1e-300"),
        (float("inf"), 12, "         inf"),
        (0.5, 8, "     0.5"),
        (-0.25, 8, "   -0.25"),
        (99.995, 8, "     100"),
    ],
)
def test_format_wxp4__matches_plink19_spellings(value, width, text):
    assert numbers.format_wxp4(value, width) == text


def test_plink_maxsnp__grows_in_file_order():
    # PLINK 1.9 widens the SNP column to len + 2 only for an ID longer than the current width
    assert plink1.plink_maxsnp(["rs1"]) == 4
    assert plink1.plink_maxsnp(["rs100000"]) == 10
    assert plink1.plink_maxsnp(["rs100000", "rs1000000"]) == 10
    assert plink1.plink_maxsnp(["rs10000", "rs1000000"]) == 9  # not max(len) + 2 = 11
    assert plink1.plink_maxsnp(["rs1000", "rs10000000"]) == 12


def test_block_sums__rejects_non_binary_phenotype_and_bad_genotypes():
    comp = assoc.AssocCounts()
    inp = RoundInput(params={"pheno": "CC"}, arrays={}, variants=np.arange(1))
    bad = Cohort(n=3, columns={"CC": np.array([1.0, 2.0, 3.5])})
    with pytest.raises(InputError, match="not case/control"):
        comp.block_sums(np.zeros((1, 3), dtype=np.int8), bad, inp, slice(0, 1))
    good = Cohort(n=3, columns={"CC": np.array([1.0, 2.0, np.nan])})
    with pytest.raises(InputError, match="above 2"):
        comp.block_sums(np.full((1, 3), 3, dtype=np.int8), good, inp, slice(0, 1))
    with pytest.raises(InputError, match="pheno"):
        comp.block_sums(np.zeros((1, 3), dtype=np.int8), good, RoundInput({}, {}, np.arange(1)), slice(0, 1))
    with pytest.raises(InputError, match="assoc, --model"):
        assoc.plan_assoc("CC", model=False, assoc=False)


def test_finish__rejects_negative_or_missing_sums():
    sums = {name: np.zeros(2, dtype=np.int64) for name in assoc.SUM_NAMES}
    sums["case_het"] = np.array([1, -1])
    with pytest.raises(InputError, match="negative"):
        assoc.finish(sums)
    del sums["case_het"]
    with pytest.raises(InputError, match="missing"):
        assoc.finish(sums)


def test_finish__non_autosomal_variants_are_left_out(tmp_path):
    sums = {name: np.full(2, 7, dtype=np.int64) for name in assoc.SUM_NAMES}
    variants = VariantTable.from_lists(["1", "X"], [10, 20], ["a", "b"], ["A", "C"], ["G", "T"])
    stats = assoc.finish(sums, variants.chrom)
    assert stats.tested.tolist() == [True, False]
    text = plink1.write_assoc(tmp_path / "t.assoc", variants, stats).read_text().splitlines()
    assert len(text) == 2 and text[1].split()[1] == "a"
