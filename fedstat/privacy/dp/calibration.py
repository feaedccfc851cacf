"""Calibration of the distributed discrete Gaussian: the per-site noise scale for one release.

Each site adds N_Z(0, σ_site²) to its integer sums; only ``k_min`` sites' noise is guaranteed to
be in the released total, so σ_site is chosen (:func:`calibrate_distributed`) such that the
Kairouz–Liu–Steinke bound for a sum of ``k_min`` discrete Gaussians (:func:`distributed_rho`)
meets the release's (ε, δ). References are listed in :mod:`fedstat.privacy.dp`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedstat.errors import InputError, PrivacyError
from fedstat.privacy.dp.accounting import (
    Conversion,
    check_count,
    check_nonneg,
    epsilon_to_rho,
    rho_to_epsilon,
)

#: Smallest per-site scale: the practical condition of [KLS21] under which the sum of the sites'
#: discrete Gaussians behaves as one central discrete Gaussian (τ ≤ 10 (k−1) e^{−4π²} ≈ 7e-17 (k−1)).
MIN_SITE_SIGMA = 2.0


@dataclass(frozen=True)
class NoiseCalibration:
    """Per-site noise for one release, and the privacy that release actually has.

    Attributes
    ----------
    sigma_site : scale of the discrete Gaussian each site adds to each coordinate (≥ :data:`MIN_SITE_SIGMA`)
    sigma_total : scale of the guaranteed total noise, √k_min · sigma_site (σ_total² = k_min σ_site²)
    rho : zCDP ρ actually achieved (KLS21-corrected; ≤ ``rho_target``); charge this to the ledger
    epsilon : ε of ``rho`` at ``delta`` (≤ the requested ε)
    delta : the requested δ
    sensitivity : L2 sensitivity Δ₂ of the integer-encoded sum vector the noise protects
    k_min : number of sites whose noise is guaranteed to be in the released total
    dimension : number of noised coordinates in the release
    rho_target : the ρ the requested (ε, δ) allows
    floored : whether sigma_site was raised to :data:`MIN_SITE_SIGMA` (then rho < rho_target)
    conversion : the zCDP → (ε, δ) conversion used for ``rho_target`` and ``epsilon``
    """

    sigma_site: float
    sigma_total: float
    rho: float
    epsilon: float
    delta: float
    sensitivity: float
    k_min: int
    dimension: int
    rho_target: float
    floored: bool
    conversion: str


def distributed_rho(sigma_site: float, *, sensitivity: float, k_min: int, dimension: int) -> float:
    """zCDP ρ of adding the sum of ``k_min`` independent N_Z(0, σ_site²) vectors to an integer vector.

    Parameters
    ----------
    sigma_site : per-site discrete Gaussian scale σ (≥ 1/2 when k_min ≥ 2, as [KLS21] requires)
    sensitivity : L2 sensitivity Δ₂ of the integer vector
    k_min : number of independent per-site noise vectors summed (n in [KLS21])
    dimension : number of coordinates d of the vector

    Returns
    -------
    float
        ρ = min(Δ²/(2nσ²) + τd, ½(Δ/(√n σ) + τ√d)²) with τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)).

    Notes
    -----
    [KLS21] Prop. 14 bounds the Rényi divergence of order α ≥ 1 of the sum by
    (α/2)Δ²/(nσ²) + τd and by (α/2)(Δ/(√n σ) + τ√d)². Since τd ≤ α τd for α ≥ 1, both are of
    the zCDP form αρ with the two ρ above. For n = 1, τ = 0 and ρ = Δ²/(2σ²) exactly [CKS20].
    Extra noise from further honest sites is post-processing and can only help.

    References
    ----------
    [KLS21] Proposition 14; [CKS20].
    """
    k_min = check_count("k_min", k_min)
    dimension = check_count("dimension", dimension)
    sensitivity = check_nonneg("sensitivity", sensitivity)
    if not (math.isfinite(sigma_site) and sigma_site > 0):
        raise InputError(f"sigma_site must be a positive finite number, got {sigma_site!r}")
    if k_min >= 2 and sigma_site < 0.5:
        raise InputError(f"the distributed discrete Gaussian bound needs sigma_site >= 0.5, got {sigma_site}")
    k = np.arange(1, k_min, dtype=np.float64)
    tau = 10.0 * float(np.sum(np.exp(-2.0 * math.pi**2 * sigma_site**2 * k / (k + 1.0))))
    central = sensitivity**2 / (2.0 * k_min * sigma_site**2)  # Δ²/(2 n σ²): one N_Z(0, nσ²)
    bound1 = central + tau * dimension
    bound3 = 0.5 * (sensitivity / (math.sqrt(k_min) * sigma_site) + tau * math.sqrt(dimension)) ** 2
    return min(bound1, bound3)


def calibrate_distributed(
    epsilon: float,
    delta: float,
    *,
    sensitivity: float,
    k_min: int,
    dimension: int,
    conversion: Conversion = "cks20",
) -> NoiseCalibration:
    """Per-site discrete Gaussian scale for one (ε, δ)-DP release of a securely aggregated sum.

    Parameters
    ----------
    epsilon, delta : the target for this one release (ε > 0, 0 < δ < 1)
    sensitivity : L2 sensitivity Δ₂ of the integer-encoded sum vector, in its integer units (see
        :class:`~fedstat.privacy.dp.CountSensitivity`, :func:`~fedstat.privacy.dp.genotype_count_sensitivity`)
    k_min : the number of sites whose noise is guaranteed to be in the released total. Each site
        calibrates as if only ``k_min`` honest sites add noise: the others may drop out, or collude
        with the coordinator and subtract their own noise. Use the secure-aggregation threshold minus
        the colluders you tolerate; the release must be refused if fewer noisy sums are in it.
    dimension : number of noised coordinates in the release (enters the [KLS21] correction)
    conversion : zCDP → (ε, δ) conversion, see :func:`rho_to_epsilon`

    Returns
    -------
    NoiseCalibration

    Notes
    -----
    ρ_target = :func:`epsilon_to_rho` (ε, δ). A central discrete Gaussian of scale σ_total is
    Δ²/(2σ_total²)-zCDP [CKS20], and the guaranteed total noise has σ_total² = k_min σ_site², so the
    starting point is σ_site = Δ / √(2 k_min ρ_target). It is then raised to at least
    :data:`MIN_SITE_SIGMA` = 2 (the practical condition of [KLS21]) and, if the [KLS21] bound
    (:func:`distributed_rho`) still exceeds ρ_target, increased by bisection until it does not.
    The returned ``rho`` is the bound at the final σ_site: the budget actually spent, which is below
    ρ_target when the floor applied.

    References
    ----------
    [CKS20]; [KLS21] Proposition 14; the reference notes (σ ≥ 2 per site in practice).
    """
    rho_target = epsilon_to_rho(epsilon, delta, conversion=conversion)
    if rho_target <= 0.0:
        raise InputError(f"epsilon must be positive for a DP release, got {epsilon!r}")
    sensitivity = check_nonneg("sensitivity", sensitivity)
    if not math.isfinite(sensitivity):
        raise InputError("sensitivity must be finite; declare clipping bounds")
    k_min = check_count("k_min", k_min)
    dimension = check_count("dimension", dimension)

    def rho_at(s: float) -> float:
        return distributed_rho(s, sensitivity=sensitivity, k_min=k_min, dimension=dimension)

    start = sensitivity / math.sqrt(2.0 * k_min * rho_target) if math.isfinite(rho_target) else 0.0
    sigma = max(MIN_SITE_SIGMA, start)
    if rho_at(sigma) > rho_target:  # the τ terms of the distributed bound: look above for a feasible σ
        lo, hi = sigma, 2.0 * sigma
        while rho_at(hi) > rho_target:
            lo, hi = hi, 2.0 * hi
            if hi > 1e300:
                raise PrivacyError(f"no noise scale reaches rho={rho_target:.3g} for sensitivity {sensitivity:.3g}")
        while hi - lo > 1e-12 * hi:  # invariant: rho_at(lo) > target >= rho_at(hi)
            mid = 0.5 * (lo + hi)
            if rho_at(mid) > rho_target:
                lo = mid
            else:
                hi = mid
        sigma = hi
    rho = rho_at(sigma)
    assert rho <= rho_target
    return NoiseCalibration(
        sigma_site=sigma,
        sigma_total=math.sqrt(k_min) * sigma,
        rho=rho,
        epsilon=rho_to_epsilon(rho, delta, conversion=conversion),
        delta=float(delta),
        sensitivity=sensitivity,
        k_min=k_min,
        dimension=dimension,
        rho_target=rho_target,
        floored=start < MIN_SITE_SIGMA,
        conversion=conversion,
    )
