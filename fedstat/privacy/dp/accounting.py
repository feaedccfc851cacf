"""zCDP accounting: ρ-zCDP ↔ (ε, δ), the views the budget and the calibration work in.

Losses are tracked as ρ-zCDP, which composes by adding ρ [BS16, Lemma 2.3]; (ε, δ) is only ever a
view of a ρ at a fixed δ, converted with :func:`rho_to_epsilon` (and back, for a target, with
:func:`epsilon_to_rho`). References are listed in :mod:`fedstat.privacy.dp`.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar

from fedstat.errors import InputError

Conversion = Literal["cks20", "standard"]
_T = TypeVar("_T", npt.NDArray[np.float64], np.float64)  # a grid of t, or one t

#: Grid of t = log(α − 1) searched before refining (α from 1 + 1e-13 to 1 + 1e26).
_T_GRID = np.linspace(-30.0, 60.0, 901)


def check_delta(delta: float) -> float:
    if not (isinstance(delta, numbers.Real) and 0.0 < delta < 1.0):
        raise InputError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    return float(delta)


def check_nonneg(name: str, value: float) -> float:
    if not isinstance(value, numbers.Real) or math.isnan(value) or value < 0:
        raise InputError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_conversion(conversion: str) -> None:
    if conversion not in ("cks20", "standard"):
        raise InputError(f"unknown zCDP conversion {conversion!r}; use 'cks20' or 'standard'")


def _cks20_curve(t: _T, rho: float, log_inv_delta: float) -> _T:
    """ε(α) of [CKS20] Cor. 13 at α = 1 + e^t: αρ + (log(1/δ) − log α)/(α − 1) + log(1 − 1/α)."""
    log_alpha = np.logaddexp(0.0, t)  # log(1 + e^t), exact for large t
    # log(1 − 1/α) = log(α − 1) − log α = t − log α, free of cancellation near α = 1
    curve: _T = np.exp(log_alpha) * rho + (log_inv_delta - log_alpha) * np.exp(-t) + (t - log_alpha)
    return curve


def _cks20_epsilon(rho: float, log_inv_delta: float) -> float:
    values = _cks20_curve(_T_GRID, rho, log_inv_delta)
    i = int(np.argmin(values))
    lo, hi = float(_T_GRID[max(i - 1, 0)]), float(_T_GRID[min(i + 1, _T_GRID.size - 1)])
    refined = minimize_scalar(
        lambda t: float(_cks20_curve(np.float64(t), rho, log_inv_delta)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    # every α gives a valid bound, so whatever the search returns is safe (at worst a little loose)
    return min(float(values[i]), float(refined.fun))


def rho_to_epsilon(rho: float, delta: float, *, conversion: Conversion = "cks20") -> float:
    """The ε for which ρ-zCDP implies (ε, δ)-DP.

    Parameters
    ----------
    rho : the zCDP parameter ρ ≥ 0
    delta : the target δ, 0 < δ < 1
    conversion : ``"standard"`` for ε = ρ + 2√(ρ log(1/δ)) [BS16, Prop. 1.3]; ``"cks20"`` (default)
        for the tighter ε = inf_{α>1} αρ + (log(1/δ) − log α)/(α − 1) + log(1 − 1/α) [CKS20, Cor. 13],
        which is never above the standard one (the infimum is searched numerically over
        t = log(α − 1); any α found gives a valid, at worst slightly loose, ε).

    Returns
    -------
    float
        ε ≥ 0 (``inf`` for ρ = ``inf``).

    References
    ----------
    [BS16] Proposition 1.3; [CKS20] Corollary 13 (the conversion OpenDP's ``make_zCDP_to_approxDP``
    uses, which the tests check against).
    """
    rho = check_nonneg("rho", rho)
    delta = check_delta(delta)
    check_conversion(conversion)
    if rho == 0.0:
        return 0.0
    if math.isinf(rho):
        return math.inf
    log_inv_delta = -math.log(delta)
    standard = rho + 2.0 * math.sqrt(rho * log_inv_delta)
    if conversion == "standard":
        return standard
    return min(standard, max(0.0, _cks20_epsilon(rho, log_inv_delta)))


def epsilon_to_rho(epsilon: float, delta: float, *, conversion: Conversion = "cks20") -> float:
    """The largest ρ whose (ε, δ) view under ``conversion`` is at most ``epsilon``.

    Parameters
    ----------
    epsilon : the target ε ≥ 0
    delta : the target δ, 0 < δ < 1
    conversion : as in :func:`rho_to_epsilon`

    Returns
    -------
    float
        ρ with ``rho_to_epsilon(ρ, δ, conversion=conversion) <= epsilon`` (guaranteed as computed,
        not only in exact arithmetic).

    Notes
    -----
    Standard: solving ρ + 2√(ρL) = ε with L = log(1/δ) gives √ρ = √(L + ε) − √L, evaluated as
    ε / (√(L + ε) + √L) to avoid cancellation when ε ≪ L, then stepped down by ulps until the
    forward conversion is within ε. CKS20: that ρ is a lower bracket (the CKS20 ε is never larger);
    bisection keeps ``ε(lo) <= epsilon < ε(hi)`` until the bracket is 1e-12 relative and returns lo.

    References
    ----------
    [BS16] Proposition 1.3; [CKS20] Corollary 13.
    """
    epsilon = check_nonneg("epsilon", epsilon)
    delta = check_delta(delta)
    check_conversion(conversion)
    if epsilon == 0.0:
        return 0.0
    if math.isinf(epsilon):
        return math.inf
    log_inv_delta = -math.log(delta)
    rho = (epsilon / (math.sqrt(log_inv_delta + epsilon) + math.sqrt(log_inv_delta))) ** 2
    while rho > 0.0 and rho_to_epsilon(rho, delta, conversion="standard") > epsilon:
        rho = math.nextafter(rho, 0.0)
    if conversion == "standard":
        return rho
    lo, hi = rho, 2.0 * rho
    while rho_to_epsilon(hi, delta) <= epsilon:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if rho_to_epsilon(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    return lo
