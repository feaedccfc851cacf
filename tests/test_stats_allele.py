"""Allele statistics: site sums, coordinator finish, report writing."""

from __future__ import annotations

import numpy as np
import pytest

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats.plink2 import write_reports
from fedstat.stats.allele import ANALYSES, SUM_NAMES, AlleleStats, finish, local_sums


def test_local_sums__counts_each_genotype_class():
    block = np.array(
        [
            [0, 0, 1, 2, -9],
            [2, 2, 2, 2, 2],
            [-9, -9, -9, -9, -9],
        ],
        dtype=np.int8,
    )
    sums = local_sums(block)
    assert tuple(sums) == SUM_NAMES
    np.testing.assert_array_equal(sums["hom_ref"], [2, 0, 0])
    np.testing.assert_array_equal(sums["het"], [1, 0, 0])
    np.testing.assert_array_equal(sums["hom_alt"], [1, 5, 0])
    np.testing.assert_array_equal(sums["missing"], [1, 0, 5])
    assert all(v.dtype == np.int64 for v in sums.values())


def test_local_sums__no_samples_gives_zero_counts():
    sums = local_sums(np.zeros((4, 0), dtype=np.int8))
    for name in SUM_NAMES:
        np.testing.assert_array_equal(sums[name], [0, 0, 0, 0])


def test_local_sums__rejects_bad_blocks():
    with pytest.raises(InputError, match="2-d"):
        local_sums(np.zeros(3, dtype=np.int8))
    with pytest.raises(InputError, match="above 2"):
        local_sums(np.array([[0, 3]], dtype=np.int8))


def test_finish__hand_worked_values():
    stats = finish(
        {
            "hom_ref": np.array([3, 0, 0]),
            "het": np.array([2, 0, 0]),
            "hom_alt": np.array([1, 0, 5]),
            "missing": np.array([1, 4, 0]),
        }
    )
    assert isinstance(stats, AlleleStats)
    np.testing.assert_array_equal(stats.obs_ct, [12, 0, 10])
    np.testing.assert_allclose(stats.alt_freq, [4 / 12, np.nan, 1.0])
    np.testing.assert_allclose(stats.het_obs_frac, [2 / 6, np.nan, 0.0])
    # REF frequency 8/12: expected het share 2 * 2/3 * 1/3 = 4/9; none observed -> 0
    np.testing.assert_allclose(stats.het_exp_frac, [4 / 9, 0.0, 0.0])
    np.testing.assert_allclose(stats.f_miss, [1 / 7, 1.0, 0.0])
    # n = 6 with 4 ALT copies: het in {0, 2, 4}, P(h) proportional to 2^h / (homr! h! homc!):
    # 1/48, 16/48, 16/48. The observed het = 2 ties with het = 4, and ties count as "at least
    # as extreme", so p = (1 + 16 + 16) / 33 = 1.
    np.testing.assert_allclose(stats.hwe_p, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(stats.n_samples, [7, 4, 5])
    assert len(stats) == 3


def test_finish__accepts_integral_floats_and_rejects_bad_sums():
    ok = finish({n: np.array([1.0, 2.0]) for n in SUM_NAMES})
    assert ok.hom_ref.dtype == np.int64
    with pytest.raises(InputError, match="missing"):
        finish({"hom_ref": np.array([1])})
    with pytest.raises(InputError, match="negative"):
        finish({n: np.array([-1 if n == "het" else 1]) for n in SUM_NAMES})
    with pytest.raises(InputError, match="non-integral"):
        finish({n: np.array([0.5]) for n in SUM_NAMES})
    with pytest.raises(InputError, match="shape"):
        finish({n: np.zeros(2 if n == "missing" else 3, int) for n in SUM_NAMES})


def test_finish__sum_of_site_sums_equals_pooled():
    rng = np.random.default_rng(11)
    g = rng.integers(-1, 3, size=(50, 90)).astype(np.int8)
    g[g < 0] = -9
    parts = [g[:, :10], g[:, 10:55], g[:, 55:]]
    total = {n: sum(local_sums(p)[n] for p in parts) for n in SUM_NAMES}
    a, b = finish(total), finish(local_sums(g))
    for field in ("hom_ref", "het", "hom_alt", "missing", "obs_ct"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.hwe_p, b.hwe_p)


def _variants(n: int) -> VariantTable:
    return VariantTable.from_lists(
        ["2"] * n, list(range(10, 10 + n)), [f"rs{i}" for i in range(n)], ["C"] * n, ["T"] * n
    )


def test_write_reports__writes_requested_files_in_order(tmp_path):
    stats = finish({"hom_ref": np.array([5]), "het": np.array([3]), "hom_alt": np.array([1]), "missing": np.array([1])})
    paths = write_reports(tmp_path / "out", _variants(1), stats, ["--hardy", "freq", "hardy"])
    assert [p.name for p in paths] == ["out.hardy", "out.afreq"]
    assert (tmp_path / "out.afreq").read_text().splitlines()[1] == "2\trs0\tC\tT\t0.277778\t18"
    all_paths = write_reports(tmp_path / "all", _variants(1), stats, ANALYSES)
    assert [p.suffix for p in all_paths] == [".afreq", ".gcount", ".hardy", ".vmiss"]
    assert (tmp_path / "all.gcount").read_text().splitlines()[1] == "2\trs0\tC\tT\t5\t3\t1\t0\t0\t1"


def test_write_reports__rejects_unknown_analysis_and_length_mismatch(tmp_path):
    stats = finish({n: np.array([1]) for n in SUM_NAMES})
    with pytest.raises(InputError, match="unknown allele analysis 'glm'"):
        write_reports(tmp_path / "o", _variants(1), stats, ["glm"])
    with pytest.raises(InputError, match="2 variants but statistics for 1"):
        write_reports(tmp_path / "o", _variants(2), stats, ["freq"])
    assert list(tmp_path.iterdir()) == []
