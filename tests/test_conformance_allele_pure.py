"""Federated allele statistics equal plink2 on the pooled fixture, for any split of samples.

Reads the fixture's pooled genotypes with fedstat's reader (tests.conftest.read_pooled), splits the samples into their
sites, computes each site's sums, adds them and compares with plink2 2.00a3.5's output in
``tests/data/consortium/expected/`` (built by ``scripts/make_fixtures.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstat.formats.plink2 import write_reports
from fedstat.stats.allele import ANALYSES, SUM_NAMES, AlleleStats, finish, local_sums
from tests.conftest import read_pooled

FIXTURE = Path(__file__).parent / "data" / "consortium"
EXPECTED = FIXTURE / "expected"


GENO, VARIANTS, IIDS = read_pooled(FIXTURE)
SITE_OF_SAMPLE = np.array([iid.split("_")[0] for iid in IIDS])


def _federated(parts: list[np.ndarray]) -> AlleleStats:
    total = {name: np.zeros(GENO.shape[0], dtype=np.int64) for name in SUM_NAMES}
    for block in parts:
        for name, arr in local_sums(block).items():
            total[name] += arr
    return finish(total)


def _table(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def site_stats() -> AlleleStats:
    sites = sorted(set(SITE_OF_SAMPLE))
    assert sites == ["AFR", "EAS", "EUR"]
    return _federated([GENO[:, SITE_OF_SAMPLE == s] for s in sites])


def test_write_reports__byte_identical_to_plink2_on_fixture(tmp_path, site_stats):
    paths = write_reports(tmp_path / "pooled", VARIANTS, site_stats, ANALYSES)
    for path in paths:
        assert path.read_bytes() == (EXPECTED / path.name).read_bytes(), path.name


def test_finish__counts_identical_to_plink2_gcount(site_stats):
    rows = _table(EXPECTED / "pooled.gcount")
    assert rows[0] == [
        "#CHROM",
        "ID",
        "REF",
        "ALT",
        "HOM_REF_CT",
        "HET_REF_ALT_CTS",
        "TWO_ALT_GENO_CTS",
        "HAP_REF_CT",
        "HAP_ALT_CTS",
        "MISSING_CT",
    ]
    counts = np.array([[int(x) for x in r[4:]] for r in rows[1:]])
    np.testing.assert_array_equal(site_stats.hom_ref, counts[:, 0])
    np.testing.assert_array_equal(site_stats.het, counts[:, 1])
    np.testing.assert_array_equal(site_stats.hom_alt, counts[:, 2])
    np.testing.assert_array_equal(counts[:, 3:5], 0)
    np.testing.assert_array_equal(site_stats.missing, counts[:, 5])


def test_finish__alt_freq_within_plink2_precision(site_stats):
    afreq = _table(EXPECTED / "pooled.afreq")[1:]
    gcount = _table(EXPECTED / "pooled.gcount")[1:]
    printed = np.array([float(r[4]) for r in afreq])
    np.testing.assert_array_equal(site_stats.obs_ct, [int(r[5]) for r in afreq])
    # within half a unit in the 6th significant digit of what plink2 printed
    np.testing.assert_allclose(site_stats.alt_freq, printed, rtol=5e-6, atol=0, equal_nan=True)
    # and to 1e-12 of the frequency from plink2's own genotype counts
    alt = np.array([int(r[5]) + 2 * int(r[6]) for r in gcount], dtype=np.float64)
    obs = np.array([2 * (int(r[4]) + int(r[5]) + int(r[6])) for r in gcount], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        from_counts = alt / obs
    np.testing.assert_allclose(site_stats.alt_freq, from_counts, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isnan(site_stats.alt_freq).sum() == 2  # the fixture's never-called variants


def test_finish__hwe_and_missingness_within_plink2_precision(site_stats):
    hardy = _table(EXPECTED / "pooled.hardy")[1:]
    vmiss = _table(EXPECTED / "pooled.vmiss")[1:]
    np.testing.assert_allclose(site_stats.hwe_p, [float(r[9]) for r in hardy], rtol=5e-6, atol=0)
    np.testing.assert_allclose(site_stats.het_obs_frac, [float(r[7]) for r in hardy], rtol=5e-6, atol=0, equal_nan=True)
    np.testing.assert_allclose(site_stats.het_exp_frac, [float(r[8]) for r in hardy], rtol=5e-6, atol=0)
    np.testing.assert_allclose(site_stats.f_miss, [float(r[4]) for r in vmiss], rtol=5e-6, atol=0)
    np.testing.assert_array_equal(site_stats.n_samples, [int(r[3]) for r in vmiss])


POOLED = finish(local_sums(GENO))
N_SAMPLES = GENO.shape[1]


def _assert_same(a: AlleleStats, b: AlleleStats) -> None:
    for field in (
        "hom_ref",
        "het",
        "hom_alt",
        "missing",
        "obs_ct",
        "alt_freq",
        "hwe_p",
        "het_obs_frac",
        "het_exp_frac",
        "f_miss",
    ):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    n_sites=st.integers(1, 5),
    data=st.data(),
)
def test_local_sums__any_split_of_samples_gives_the_pooled_answer(n_sites, data):
    labels = np.array(
        data.draw(
            st.lists(st.integers(0, n_sites - 1), min_size=N_SAMPLES, max_size=N_SAMPLES),
            label="site of each sample",
        )
    )
    order = data.draw(st.permutations(range(n_sites)), label="site order")
    shuffle = data.draw(st.booleans(), label="shuffle samples within sites")
    parts = []
    for site in order:  # sites may be empty and may come in any order
        block = GENO[:, labels == site]
        if shuffle:
            block = block[:, ::-1]
        parts.append(block)
    _assert_same(_federated(parts), POOLED)


def test_local_sums__all_samples_at_one_site_and_empty_sites():
    empty = GENO[:, :0]
    _assert_same(_federated([empty, GENO, empty]), POOLED)
    one_each = [GENO[:, i : i + 1] for i in range(N_SAMPLES)]
    _assert_same(_federated(one_each), POOLED)
