"""Privacy modes ``dp`` and ``paillier,dp``: protected sums that carry distributed discrete Gaussian noise.

Under these modes the site's protector (:class:`NoisyProtector`, wrapping the secagg or Paillier
protector) adds discrete Gaussian noise (OpenDP, integer domain) to **every** array it protects,
per-variant count arrays and cohort-level counts alike, before they are masked or encrypted. The
noise scale is calibrated once per round (:func:`round_sigma`, from
:func:`fedstat.privacy.dp.calibrate_distributed`) from the job's (ε, δ), the round's variant
count, the sensitivities its computation declares in :data:`DP_SENSITIVITY` and ``k_min`` =
``min(policy min_sites, participants)``, so the *total* carries the noise for (ε, δ) as long as
``k_min`` sites' noise is in it. An array its computation does not declare is refused (nothing is
sent); so is a round of a computation with no declaration.

Sensitivity (replace-one neighbouring): a person is counted in ``cells_per_variant`` cells per
variant across the computation's per-variant arrays and in ``cohort_cells`` cells of its
cohort-level arrays; replacing one person moves at most twice as many cells by one, so
Δ₂ = √(2 (cells_per_variant · d + cohort_cells)) over d variants. Analyses whose sums are
real-valued (``--glm``) need clipping bounds and are refused under DP in this version.

The site charges its per-dataset budget ledger at its first release of a job and releases each
round once (a retried attempt is refused: OpenDP's sampler draws from OpenSSL and takes no seed,
so a retry cannot re-send the same noise). The coordinator clips noisy totals at zero
(post-processing, free under DP; ``coordinator/engine.py`` ``run_round``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstat.errors import InputError, PrivacyError
from fedstat.privacy.base import ProtectedChunk, Protector, RoundContext, register
from fedstat.privacy.dp import calibrate_distributed, discrete_gaussian
from fedstat.privacy.secagg import SecAggMode


@dataclass(frozen=True)
class CountSensitivity:
    """What one local computation releases under DP, and how many of its cells one person is in.

    Attributes
    ----------
    variant_arrays : per-variant count arrays, each of shape (d,) over the round's d variants
    cells_per_variant : cells per variant one person is counted in, across ``variant_arrays``
    cohort_arrays : cohort-level count arrays, each of shape (1,)
    cohort_cells : cells one person is counted in across ``cohort_arrays``
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


_GENOS = ("hom_ref", "het", "hom_alt")
#: Per local computation, the arrays it releases under DP and their sensitivity (the one table;
#: fedstat.stats.allele.SUM_NAMES and fedstat.stats.assoc.SUM_NAMES / COHORT_SUM_NAMES name them)
DP_SENSITIVITY: Mapping[str, CountSensitivity] = {
    # a person's call is in one of four genotype classes (missing included)
    "allele_counts": CountSensitivity((*_GENOS, "missing"), 1),
    # a person is in their group's table (case or control, if any) and in the all-samples table; and
    # in one of n_case, n_ctrl, n_missing_pheno
    "assoc_counts": CountSensitivity(
        tuple(f"{g}_{k}" for g in ("case", "ctrl", "all") for k in _GENOS),
        2,
        ("n_case", "n_ctrl", "n_missing_pheno"),
        1,
    ),
}
#: analyses available under DP (their rounds use the computations above)
DP_ANALYSES = ("freq", "geno-counts", "hardy", "missing", "assoc", "model")


def declared(computation: str) -> CountSensitivity:
    """The DP declaration of ``computation``; PrivacyError when it has none."""
    decl = DP_SENSITIVITY.get(computation)
    if decl is None:
        raise PrivacyError(
            f"{computation} sums cannot be released under differential privacy: no sensitivity is declared for "
            f"its arrays (available: {', '.join(sorted(DP_SENSITIVITY))}); run the job under secagg or paillier"
        )
    return decl


def count_sensitivity(computation: str, n_variants: int) -> float:
    """Δ₂ of a round's count arrays (replace-one neighbouring)."""
    try:
        return declared(computation).sensitivity(n_variants)
    except PrivacyError as exc:
        raise InputError(str(exc)) from None


def noise_counts(arrays: dict[str, np.ndarray], *, sigma: float) -> dict[str, np.ndarray]:
    """The arrays plus independent discrete Gaussian noise of scale ``sigma`` (int64 kept)."""
    return {name: discrete_gaussian(np.asarray(v, dtype=np.int64), sigma) for name, v in arrays.items()}


@dataclass(frozen=True)
class RoundNoise:
    """What a noisy protector calibrates one round from (the job's target and the round's shape)."""

    epsilon: float
    delta: float
    computation: str
    n_variants: int
    k_min: int  # sites whose noise is guaranteed in the total: min(policy min_sites, participants)


def round_sigma(noise: RoundNoise) -> float:
    """The per-site scale σ for one round (the declared arrays of its computation over its variants)."""
    decl = declared(noise.computation)
    cal = calibrate_distributed(
        noise.epsilon,
        noise.delta,
        sensitivity=decl.sensitivity(noise.n_variants),
        k_min=noise.k_min,
        dimension=max(1, decl.dimension(noise.n_variants)),
    )
    return cal.sigma_site


def site_sigma(
    epsilon: float, delta: float, *, computation: str, n_variants: int, k_min: int, n_arrays: int | None = None
) -> float:
    """The per-site scale for one round of ``computation`` over ``n_variants`` variants
    (``n_arrays``, if given, must be the number of per-variant arrays it declares)."""
    if n_arrays is not None and n_arrays != len(declared(computation).variant_arrays):
        raise InputError(f"{computation} declares {len(declared(computation).variant_arrays)} per-variant arrays")
    return round_sigma(RoundNoise(epsilon, delta, computation, n_variants, k_min))


class NoisyProtector(Protector):
    """Adds the round's discrete Gaussian noise to each declared array, then protects it with ``inner``."""

    def __init__(self, inner: Protector, noise: RoundNoise):
        super().__init__(inner.ctx, inner.site)
        self.inner, self.noise = inner, noise
        self.declaration = declared(noise.computation)
        self.sigma = round_sigma(noise)

    def protect(
        self, name: str, offset: int, total_length: int, values: np.ndarray, shape: tuple[int, ...] = ()
    ) -> Iterator[ProtectedChunk]:
        d = self.declaration
        expected = self.noise.n_variants if name in d.variant_arrays else 1 if name in d.cohort_arrays else None
        if expected is None:
            raise PrivacyError(
                f"{self.noise.computation}: array {name!r} has no declared differential-privacy sensitivity; "
                "not releasing it under dp"
            )
        if total_length != expected or (shape and math.prod(shape) != expected):
            raise PrivacyError(
                f"{self.noise.computation}: array {name!r} has {total_length} elements, its DP declaration "
                f"{expected}; not releasing it under dp"
            )
        values = np.asarray(values)
        if values.dtype.kind not in "iu":
            raise PrivacyError(f"{self.noise.computation}: array {name!r} is not an integer count; not noising it")
        yield from self.inner.protect(name, offset, total_length, discrete_gaussian(values, self.sigma), shape)

    def contribution_digest(self) -> bytes | None:
        """The wrapped protector's digest of what it sent (``paillier,dp`` signs it like ``paillier``)."""
        return self.inner.contribution_digest()


class NoisyMode:
    """Mixin for a privacy mode whose protector noises every array (put it before the base mode)."""

    adds_noise = True

    def protector(
        self, ctx: RoundContext, site: str, keys: Any = None, *, noise: RoundNoise | None = None
    ) -> Protector:
        if noise is None:
            raise PrivacyError(f"privacy mode {self.name}: a round needs its noise calibration (RoundNoise)")  # type: ignore[attr-defined]
        inner = super().protector(ctx, site, keys)  # type: ignore[misc]
        return NoisyProtector(inner, noise)


class DpMode(NoisyMode, SecAggMode):
    name = "dp"


register(DpMode())
