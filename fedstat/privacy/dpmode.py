"""Privacy modes ``dp`` and ``paillier,dp``: protected sums that carry distributed discrete Gaussian noise.

Under these modes the site's protector (:class:`NoisyProtector`, wrapping the secagg or Paillier
protector) adds discrete Gaussian noise (OpenDP, integer domain) to **every** array it protects,
per-variant count arrays and cohort-level counts alike, before they are masked or encrypted. The
noise scale is calibrated once per round (:func:`round_sigma`, from
:func:`fedstat.privacy.dp.calibrate_distributed`) from the job's (ε, δ), the round's variant
count, the sensitivities its computation declares (its :mod:`fedstat.computations` entry's ``dp``,
carried in :class:`RoundNoise`) and ``k_min`` =
``min(policy min_sites, participants)``, so the *total* carries the noise for (ε, δ) as long as
``k_min`` sites' noise is in it. An array its computation does not declare is refused (nothing is
sent); so is a round of a computation with no declaration.

Sensitivity: :class:`fedstat.privacy.dp.CountSensitivity` (replace-one neighbouring, over the
round's d variants). Analyses whose sums are real-valued (``--glm``) need clipping bounds and are
refused under DP in this version.

The site charges its per-dataset budget ledger at its first release of a job and releases each
round once (a retried attempt is refused: OpenDP's sampler draws from OpenSSL and takes no seed,
so a retry cannot re-send the same noise). The coordinator clips noisy totals at zero
(post-processing, free under DP; ``coordinator/engine.py`` ``run_round``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstat.errors import PrivacyError
from fedstat.privacy.base import ProtectedChunk, Protector, RoundContext
from fedstat.privacy.dp import CountSensitivity, calibrate_distributed, discrete_gaussian
from fedstat.privacy.secagg import SecAggMode


def declared(noise: RoundNoise) -> CountSensitivity:
    """The round's DP declaration; PrivacyError when its computation declares none."""
    if noise.declaration is None:
        raise PrivacyError(
            f"{noise.computation} sums cannot be released under differential privacy: its computation declares no "
            "sensitivity for its arrays (fedstat.computations); run the job under secagg or paillier"
        )
    return noise.declaration


@dataclass(frozen=True)
class RoundNoise:
    """What a noisy protector calibrates one round from: the job's target, the round's shape and
    what the round's computation declares (its registry entry's ``dp``; None: nothing may be released)."""

    epsilon: float
    delta: float
    computation: str  # for messages only
    n_variants: int
    k_min: int  # sites whose noise is guaranteed in the total: min(policy min_sites, participants)
    declaration: CountSensitivity | None = None


def round_sigma(noise: RoundNoise) -> float:
    """The per-site scale σ for one round (the declared arrays of its computation over its variants)."""
    decl = declared(noise)
    cal = calibrate_distributed(
        noise.epsilon,
        noise.delta,
        sensitivity=decl.sensitivity(noise.n_variants),
        k_min=noise.k_min,
        dimension=max(1, decl.dimension(noise.n_variants)),
    )
    return cal.sigma_site


class NoisyProtector(Protector):
    """Adds the round's discrete Gaussian noise to each declared array, then protects it with ``inner``."""

    def __init__(self, inner: Protector, noise: RoundNoise):
        super().__init__(inner.ctx, inner.site)
        self.inner, self.noise = inner, noise
        self.declaration = declared(noise)
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

    name: str
    adds_noise = True

    def protector(
        self, ctx: RoundContext, site: str, keys: Any = None, *, noise: RoundNoise | None = None
    ) -> Protector:
        if noise is None:
            raise PrivacyError(f"privacy mode {self.name}: a round needs its noise calibration (RoundNoise)")
        inner = super().protector(ctx, site, keys)  # type: ignore[misc]
        return NoisyProtector(inner, noise)


class DpMode(NoisyMode, SecAggMode):
    name = "dp"
