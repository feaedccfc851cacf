"""Variant QC on pooled counts keeps exactly the variants plink2 keeps, and removes as many per
filter as plink2's log says (checked-in plink2 2.00a3.5 outputs, scripts/make_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fedstat.errors import InputError
from fedstat.stats.qc import VariantQc, variant_filter
from tests.conftest import FIXTURE, read_pooled

RUNS = {
    "maf": VariantQc(maf=0.05),
    "geno": VariantQc(geno=0.01),
    "hwe": VariantQc(hwe=1e-3),
    "all": VariantQc(maf=0.2, geno=0.005, hwe=0.01),
}


@pytest.fixture(scope="module")
def pooled_counts():
    geno, variants, _ = read_pooled(FIXTURE)  # fedstat's own reader, not plink2's tables
    counts = {
        "hom_ref": (geno == 0).sum(axis=1),
        "het": (geno == 1).sum(axis=1),
        "hom_alt": (geno == 2).sum(axis=1),
        "missing": (geno < 0).sum(axis=1),
    }
    return counts, np.asarray(variants.id)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_variant_filter__keeps_exactly_what_plink2_keeps(pooled_counts, name):
    counts, ids = pooled_counts
    result = variant_filter(RUNS[name], **counts)
    expected = (FIXTURE / "expected" / f"qc-{name}.snplist").read_text().split()
    assert list(ids[result.keep]) == expected  # same variants, same order
    removed = dict(line.split("\t") for line in (FIXTURE / "expected" / f"qc-{name}.removed").read_text().splitlines())
    assert {k: str(v) for k, v in result.removed.items()} == removed
    assert 0 < result.keep.sum() < len(ids)


def test_variant_filter__no_call_at_all_is_kept_by_maf_and_removed_by_geno():
    zero = np.zeros(1, dtype=np.int64)
    counts = dict(hom_ref=zero, het=zero, hom_alt=zero, missing=np.array([10]))
    assert variant_filter(VariantQc(maf=0.01), **counts).keep.tolist() == [True]
    assert variant_filter(VariantQc(geno=0.5), **counts).keep.tolist() == [False]


def test_variant_filter__thresholds_are_inclusive_as_in_plink2():
    # a MAF exactly at --maf, and a missing rate exactly at --geno, are kept (plink2 2.00a3.5 keeps
    # a variant with 4 of 480 calls missing under --geno 0.008333333333333333, removes it just below)
    counts = dict(hom_ref=np.array([4]), het=np.array([2]), hom_alt=np.array([1]), missing=np.array([0]))
    assert variant_filter(VariantQc(maf=4 / 14), **counts).keep.tolist() == [True]
    counts = dict(hom_ref=np.array([8]), het=np.array([0]), hom_alt=np.array([0]), missing=np.array([2]))
    assert variant_filter(VariantQc(geno=0.2), **counts).keep.tolist() == [True]
    assert variant_filter(VariantQc(geno=0.19), **counts).keep.tolist() == [False]


def test_variant_qc__refuses_thresholds_outside_zero_one():
    with pytest.raises(InputError, match="--maf must be between 0 and 1, got 1.5"):
        VariantQc(maf=1.5)
    assert not VariantQc().active and VariantQc(hwe=1e-6).active
