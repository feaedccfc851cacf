"""Exact Hardy–Weinberg test: hand-worked cases, brute force, and plink2's printed P."""

from __future__ import annotations

from fractions import Fraction
from math import factorial
from pathlib import Path

import numpy as np
import pytest

from fedstat.formats.numbers import format_g
from fedstat.stats.hwe import hwe_exact_p

FIXTURE = Path(__file__).parent / "data" / "consortium" / "expected"


def brute_force_p(hom1: int, het: int, hom2: int) -> float:
    """Sum, over all het counts with the same allele counts, of the exact probabilities no
    larger than the observed one (Levene's conditional distribution, exact fractions)."""
    n = hom1 + het + hom2
    rare = 2 * min(hom1, hom2) + het
    if n == 0:
        return 1.0

    def prob(h: int) -> Fraction:
        homr = (rare - h) // 2
        homc = n - h - homr
        # P(h) = 2^h n! / (homr! h! homc!) * rare! (2n-rare)! / (2n)!
        return Fraction(
            2**h * factorial(n) * factorial(rare) * factorial(2 * n - rare),
            factorial(homr) * factorial(h) * factorial(homc) * factorial(2 * n),
        )

    support = range(rare % 2, rare + 1, 2)
    probs = {h: prob(h) for h in support}
    assert sum(probs.values()) == 1
    observed = probs[het]
    return float(sum(p for p in probs.values() if p <= observed))


def test_hwe_exact_p__hand_worked_n3():
    # n = 3 samples, 2 copies of the rare allele: het = 0 (one hom) or het = 2.
    # P(het=2) = 2^2 3! / (0! 2! 1!) * 2! 4! / 6! = 12 * 48 / 720 = 0.8; P(het=0) = 0.2
    p = hwe_exact_p(np.array([2, 1]), np.array([0, 2]), np.array([1, 0]))
    assert p[0] == pytest.approx(0.2, rel=1e-12)
    assert p[1] == pytest.approx(1.0, rel=1e-12)


def test_hwe_exact_p__equals_brute_force_for_every_table_up_to_14_samples():
    tables = [(a, b, n - a - b) for n in range(15) for a in range(n + 1) for b in range(n - a + 1)]
    arr = np.array(tables)
    got = hwe_exact_p(arr[:, 0], arr[:, 1], arr[:, 2])
    want = np.array([brute_force_p(*t) for t in tables])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_hwe_exact_p__symmetric_in_the_homozygotes():
    rng = np.random.default_rng(3)
    hom1, het, hom2 = (rng.integers(0, 400, 500) for _ in range(3))
    np.testing.assert_array_equal(hwe_exact_p(hom1, het, hom2), hwe_exact_p(hom2, het, hom1))


def test_hwe_exact_p__monomorphic_and_empty_are_one():
    p = hwe_exact_p(np.array([50, 0, 0, 0]), np.array([0, 0, 0, 0]), np.array([0, 50, 0, 1]))
    np.testing.assert_array_equal(p, [1.0, 1.0, 1.0, 1.0])


def test_hwe_exact_p__empty_input_gives_empty_output():
    assert hwe_exact_p(np.array([], int), np.array([], int), np.array([], int)).shape == (0,)


def test_hwe_exact_p__rejects_negative_and_mismatched_counts():
    with pytest.raises(ValueError, match="non-negative"):
        hwe_exact_p(np.array([1]), np.array([-1]), np.array([1]))
    with pytest.raises(ValueError, match="one shape"):
        hwe_exact_p(np.array([1, 2]), np.array([1]), np.array([1]))


# (HOM_A1_CT, HET_A1_CT, TWO_AX_CT, P as printed by plink2 2.00a3.5 --hardy)
PLINK2_PRINTED = [
    (0, 1000, 0, "5.36356e-300"),  # tiny but normal: printed exactly
    (0, 5000, 0, "0"),  # centre sum overflows a double
    (2500, 0, 2500, "0"),
    (3000, 0, 2000, "0"),
    (0, 2000, 0, "0"),
    (783, 279, 1324, "0"),  # 2.5e-323 is subnormal: plink2 flushes it to zero
    (1285, 236, 1813, "0"),
    (1191, 709, 1759, "1.04305e-307"),
    (1733, 858, 1447, "1.42443e-307"),
    (417, 209, 2452, "2.85471e-307"),
    (823, 2425, 16, "9.42253e-307"),
    (2015, 783, 1152, "2.65544e-306"),
    (100, 0, 100, "8.79517e-61"),
    (313, 786, 32, "1.06742e-66"),
    (30, 2, 21, "4.60758e-13"),
    (2782, 101, 8, "1.50382e-05"),
    (1, 1, 51, "0.0285714"),
    (227, 297, 70, "0.0776095"),
    (283, 408, 165, "0.403784"),
    (20, 263, 928, "0.792526"),
    (10, 20, 10, "1"),
    (4082, 16, 0, "1"),
    (50, 0, 0, "1"),
    (0, 0, 0, "1"),
]


@pytest.mark.parametrize(("hom1", "het", "hom2", "printed"), PLINK2_PRINTED)
def test_hwe_exact_p__prints_as_plink2(hom1, het, hom2, printed):
    p = hwe_exact_p(np.array([hom1]), np.array([het]), np.array([hom2]))[0]
    assert format_g(p) == printed


def test_hwe_exact_p__matches_every_p_in_the_fixture():
    rows = [line.split("\t") for line in (FIXTURE / "pooled.hardy").read_text().splitlines()[1:]]
    counts = np.array([[int(r[4]), int(r[5]), int(r[6])] for r in rows])
    printed = [r[9] for r in rows]
    p = hwe_exact_p(counts[:, 0], counts[:, 1], counts[:, 2])
    assert [format_g(x) for x in p] == printed
    # and numerically within half a unit in the 6th significant digit
    want = np.array([float(s) for s in printed])
    np.testing.assert_allclose(p, want, rtol=5e-6, atol=0)
    assert min(want[want > 0]) < 1e-100  # the planted HWE outliers are in the fixture


def test_hwe_exact_p__fast_for_many_large_variants():
    rng = np.random.default_rng(0)
    n, n_var = 20000, 20000
    q = rng.uniform(0.01, 0.5, n_var)
    counts = rng.multinomial(n, np.stack([(1 - q) ** 2, 2 * q * (1 - q), q * q], axis=1))
    import time

    start = time.perf_counter()
    p = hwe_exact_p(counts[:, 0], counts[:, 1], counts[:, 2])
    elapsed = time.perf_counter() - start
    assert p.shape == (n_var,)
    assert 0.03 < float(np.mean(p < 0.05)) < 0.07  # about 5% below 0.05 under HWE
    assert elapsed < 5.0
