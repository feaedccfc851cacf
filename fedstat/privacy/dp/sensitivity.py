"""L2 sensitivities of the released integer count arrays, and a computation's DP declaration.

:class:`CountSensitivity` is what a local computation declares it releases under DP (its
:mod:`fedstat.computations` entry's ``dp``), and the Δ₂ the noisy protector calibrates from;
:func:`genotype_count_sensitivity` derives the per-variant bound of genotype count arrays from
the genotype states one person can take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedstat.errors import InputError
from fedstat.privacy.dp.accounting import check_count

Neighbouring = Literal["replace", "add_remove"]

#: Per-variant count arrays a person contributes to, and their contribution in each genotype state
#: (hom-REF 0, het 1, hom-ALT 2, missing). ``alt_count`` is the ALT allele count (missing adds 0).
_COUNT_CONTRIBUTIONS: dict[str, tuple[int, int, int, int]] = {
    "alt_count": (0, 1, 2, 0),
    "hom_ref": (1, 0, 0, 0),
    "het": (0, 1, 0, 0),
    "hom_alt": (0, 0, 1, 0),
    "missing": (0, 0, 0, 1),
}
COUNT_ARRAYS = tuple(_COUNT_CONTRIBUTIONS)

#: The arrays ``fedstat.stats.allele`` sends (its ``SUM_NAMES``).
_ALLELE_SUMS = ("hom_ref", "het", "hom_alt", "missing")


def _check_neighbouring(neighbouring: str) -> None:
    if neighbouring not in ("replace", "add_remove"):
        raise InputError(f"unknown neighbouring relation {neighbouring!r}; use 'replace' or 'add_remove'")


def genotype_count_sensitivity(
    n_variants: int, *, arrays: Sequence[str] = _ALLELE_SUMS, neighbouring: Neighbouring = "replace"
) -> float:
    """L2 sensitivity of per-variant genotype count arrays over ``n_variants`` variants.

    Parameters
    ----------
    n_variants : number of variants d; each array is [array, shape: (d,), dtype int64]
    arrays : which per-variant arrays are released, from :data:`COUNT_ARRAYS`
        (default: ``hom_ref``, ``het``, ``hom_alt``, ``missing``, what ``fedstat.stats.allele`` sends)
    neighbouring : ``"replace"`` one person (default) or ``"add_remove"`` one person

    Returns
    -------
    float
        Δ₂ = √(d · m), m the largest squared per-variant change, found by enumerating the genotype
        states {0, 1, 2, missing}: max_s ‖f(s)‖² (add/remove) or max_{s,s'} ‖f(s) − f(s')‖² (replace),
        f(s) the person's contribution to the released arrays at one variant.

    Notes
    -----
    A person is in exactly one genotype class per variant and changes the ALT count by at most 2
    (the bound the reference states per count). The per-variant changes are joint, not 2 in each:

    ======================================== ============ =========
    released arrays                          add/remove   replace
    ======================================== ============ =========
    alt_count only                           2            2
    hom_ref, het, hom_alt, missing           1            √2
    all five (with alt_count)                √5           √6
    ======================================== ============ =========

    A person may take the worst state at every variant independently, so the squares add over
    variants and Δ₂ = √d times the per-variant bound. Cohort-level counts sent once (e.g. a sample
    count, 1 under add/remove and 0 under replace) are not included.

    References
    ----------
    Dwork & Roth (2014), *The Algorithmic Foundations of Differential Privacy*, Def. 3.8 (ℓ2
    sensitivity); the reference notes: "one person changes each count by at most 2, so Δ₂ = 2√d".
    """
    n_variants = check_count("n_variants", n_variants)
    _check_neighbouring(neighbouring)
    unknown = [a for a in arrays if a not in _COUNT_CONTRIBUTIONS]
    if unknown or not arrays:
        raise InputError(f"unknown count arrays {unknown}; choose from {', '.join(COUNT_ARRAYS)}")
    f = np.array([_COUNT_CONTRIBUTIONS[a] for a in dict.fromkeys(arrays)], dtype=np.int64).T
    assert f.shape == (4, len(set(arrays)))  # (genotype state, array)
    if neighbouring == "add_remove":
        per_variant = int(np.max(np.sum(f * f, axis=1)))  # max_s ‖f(s)‖²
    else:
        diff = f[:, None, :] - f[None, :, :]  # f(s) − f(s') for every pair of states
        per_variant = int(np.max(np.sum(diff * diff, axis=2)))
    return math.sqrt(n_variants * per_variant)


@dataclass(frozen=True)
class CountSensitivity:
    """What one local computation releases under DP, and how many of its cells one person is in.

    Attributes
    ----------
    variant_arrays : per-variant count arrays, each of shape (d,) over the round's d variants
    cells_per_variant : cells per variant one person is counted in, across ``variant_arrays``
    cohort_arrays : cohort-level count arrays, each of shape (1,)
    cohort_cells : cells one person is counted in across ``cohort_arrays``

    Notes
    -----
    Replace-one neighbouring: a person is counted in ``cells_per_variant`` cells per variant
    across the per-variant arrays and in ``cohort_cells`` cells of the cohort-level arrays;
    replacing one person moves at most twice as many cells by one, so
    Δ₂ = √(2 (cells_per_variant · d + cohort_cells)) over d variants.
    """

    variant_arrays: tuple[str, ...]
    cells_per_variant: int
    cohort_arrays: tuple[str, ...] = ()
    cohort_cells: int = 0

    def sensitivity(self, n_variants: int) -> float:
        """Δ₂ of the round's integer arrays over ``n_variants`` variants (replace-one)."""
        return math.sqrt(2.0 * (self.cells_per_variant * n_variants + self.cohort_cells))

    def dimension(self, n_variants: int) -> int:
        """Noised coordinates in the round's release."""
        return len(self.variant_arrays) * n_variants + len(self.cohort_arrays)

    def declares(self, name: str) -> bool:
        return name in self.variant_arrays or name in self.cohort_arrays
