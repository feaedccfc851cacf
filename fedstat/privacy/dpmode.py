"""Privacy mode ``dp``: secure aggregation of sums that carry distributed discrete Gaussian noise.

Each site adds discrete Gaussian noise (OpenDP, integer domain) to its per-variant count sums
before they are masked, with the per-site scale from
:func:`fedstat.privacy.dp.calibrate_distributed`, so the *total* carries the noise for the
job's (ε, δ) as long as ``k_min`` sites' noise is in it (each site assumes only
``min(policy min_sites, participants)`` honest sites). The site charges its per-dataset budget
ledger once per job at the offer (retried rounds reuse the job id and are never charged again;
a retried round's masked sums were never unmasked, so nothing was released) and refuses a job
that would exceed the budget.

Sensitivity: a person is counted in ``m`` per-variant count cells (allele counts: one genotype
class, m = 1; case/control counts: their group and the all-samples table, m = 2); replacing one
person moves at most 2m cells by one, so Δ₂ = √(2 m d) over d variants. Analyses whose sums are
real-valued (``--glm``) need clipping bounds and are refused under DP in this version.

The coordinator clips noisy totals at zero (post-processing, free under DP).
"""

from __future__ import annotations

import math

import numpy as np

from fedstat.errors import InputError
from fedstat.privacy.base import register
from fedstat.privacy.dp import calibrate_distributed, discrete_gaussian
from fedstat.privacy.secagg import SecAggMode

#: count cells per variant one person is in, by local computation (others: not available under DP)
DP_CELLS_PER_PERSON = {"allele_counts": 1, "assoc_counts": 2}
#: per-variant count arrays each computation releases (the noised dimension is this times d)
DP_ARRAYS_PER_VARIANT = {"allele_counts": 4, "assoc_counts": 9}
#: analyses available under DP (their rounds use the computations above)
DP_ANALYSES = ("freq", "geno-counts", "hardy", "missing", "assoc", "model")


def count_sensitivity(computation: str, n_variants: int) -> float:
    """Δ₂ of a round's per-variant count arrays (replace-one neighbouring)."""
    cells = DP_CELLS_PER_PERSON.get(computation)
    if cells is None:
        raise InputError(f"{computation} sums are not available under differential privacy in this version")
    return math.sqrt(2.0 * cells * n_variants)


def noise_counts(arrays: dict[str, np.ndarray], *, sigma: float) -> dict[str, np.ndarray]:
    """The arrays plus independent discrete Gaussian noise of scale ``sigma`` (int64 kept)."""
    return {name: discrete_gaussian(np.asarray(v, dtype=np.int64), sigma) for name, v in arrays.items()}


def site_sigma(epsilon: float, delta: float, *, computation: str, n_variants: int, n_arrays: int, k_min: int) -> float:
    """The per-site scale for one round of ``computation`` over ``n_variants`` variants."""
    cal = calibrate_distributed(
        epsilon,
        delta,
        sensitivity=count_sensitivity(computation, n_variants),
        k_min=k_min,
        dimension=max(1, n_arrays * n_variants),
    )
    return cal.sigma_site


class DpMode(SecAggMode):
    name = "dp"
    adds_noise = True


register(DpMode())
