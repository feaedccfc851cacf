"""Harmonization: one variant list, one orientation, swapped sites flipped, absent excluded."""

from __future__ import annotations

import numpy as np
import pytest

from fedstat.data.variants import VariantTable, harmonize
from fedstat.errors import InputError


def vt(rows):
    chrom, pos, id_, ref, alt = zip(*rows, strict=True)
    return VariantTable.from_lists(chrom, pos, id_, ref, alt)


def test_harmonize__swapped_site_is_flipped_not_dropped():
    a = vt([("1", 10, "rs1", "A", "G"), ("1", 20, "rs2", "C", "T")])
    b = vt([("1", 20, "rs2", "T", "C"), ("1", 10, "rs1", "A", "G")])
    c = vt([("1", 10, "rs1", "A", "G"), ("1", 20, "rs2", "C", "T")])
    h = harmonize({"A": a, "B": b, "C": c})
    assert list(h.variants.ref) == ["A", "C"] and list(h.variants.alt) == ["G", "T"]
    np.testing.assert_array_equal(h.plans["B"].local_index, [1, 0])
    np.testing.assert_array_equal(h.plans["B"].flip, [False, True])
    assert h.plans["A"].n_flipped == 0 and h.plans["B"].n_flipped == 1
    assert h.n_excluded == 0


def test_harmonize__orientation_by_majority_then_first_site():
    swapped = ("1", 5, "x", "G", "A")
    normal = ("1", 5, "x", "A", "G")
    h = harmonize({"A": vt([swapped]), "B": vt([normal]), "C": vt([normal])})
    assert (h.variants.ref[0], h.variants.alt[0]) == ("A", "G")
    assert list(h.plans["A"].flip) == [True]
    tie = harmonize({"A": vt([swapped]), "B": vt([normal])})
    assert (tie.variants.ref[0], tie.variants.alt[0]) == ("G", "A")  # first site wins a tie


def test_harmonize__absent_variants_are_excluded_and_counted():
    a = vt([("1", 10, "a", "A", "G"), ("1", 30, "c", "G", "T"), ("2", 5, "d", "A", "C")])
    b = vt([("1", 10, "a", "A", "G"), ("1", 20, "b", "C", "T"), ("2", 5, "d", "A", "C")])
    h = harmonize({"A": a, "B": b})
    assert list(h.variants.id) == ["a", "d"]
    assert h.n_excluded == 2
    np.testing.assert_array_equal(h.plans["B"].local_index, [0, 2])


def test_harmonize__different_alleles_at_same_position_are_different_variants():
    h = harmonize(
        {
            "A": vt([("1", 10, "a", "A", "G"), ("1", 11, "z", "A", "C")]),
            "B": vt([("1", 10, "a", "A", "T"), ("1", 11, "z", "A", "C")]),
        }
    )
    assert list(h.variants.pos) == [11]
    assert h.n_excluded == 2


def test_harmonize__duplicate_key_at_a_site_is_dropped_and_counted():
    a = vt([("1", 10, "a", "A", "G"), ("1", 10, "a2", "G", "A"), ("1", 20, "b", "C", "T")])
    b = vt([("1", 10, "a", "A", "G"), ("1", 20, "b", "C", "T")])
    h = harmonize({"A": a, "B": b})
    assert list(h.variants.id) == ["b"]
    assert h.n_duplicate == {"A": 1, "B": 0}


def test_harmonize__sorts_chromosomes_numerically():
    rows = [("10", 1, "a", "A", "G"), ("2", 1, "b", "A", "G"), ("X", 1, "c", "A", "G"), ("1", 9, "d", "A", "G")]
    h = harmonize({"A": vt(rows), "B": vt(rows[::-1])})
    assert list(h.variants.chrom) == ["1", "2", "10", "X"]


def test_harmonize__nothing_in_common_is_an_error():
    with pytest.raises(InputError, match="no variant is present at every site"):
        harmonize({"A": vt([("1", 1, "a", "A", "G")]), "B": vt([("2", 1, "b", "A", "G")])})
