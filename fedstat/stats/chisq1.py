"""plink2's conversions between a p-value and its 1-df χ² statistic, as plink2 computes them.

plink2 computes these to float precision (its comments: "~6 digits of precision is appropriate
for p-value computations"): the χ² of a p-value by a Halley iteration stopped at 2^-23 relative
change, the p-value of a χ² from a Chebyshev fit of erfc (relative error < 1.2e-7). Those errors
show in a 6-digit printed value now and then, so ``--adjust`` (whose GC column and λ go through
both) ports them literally, in plink2's order of operations, rather than using scipy's exact
functions.

References
----------
plink2 2.00a3.5 ``plink2_stats.cc``: ``LnPToChisq``, ``gamma_p_inv_imp2`` and
``find_inverse_gamma2`` (ports of Boost 1.60 ``gamma_p_inv`` for ``a = 1/2``),
``gamma_incomplete_imp2``, ``ChisqToLnP``, ``gamma_incomplete_imp2_ln``, ``erfc_fast``,
``erfc_fast2``, ``lower_gamma_series``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["chisq_to_ln_p", "ln_p_to_chisq"]

_SQRT_PI = 1.7724538509055159
_LN_SQRT_PI = 0.5723649429247001
_PI = 3.1415926535897932
_SMALL_EPSILON = 0.00000000000005684341886080801486968994140625  # 2^-44
_BIG_EPSILON = 0.000000476837158203125  # 2^-21
_LOG_MAX_VALUE = 709.0
_DBL_MAX = float(np.finfo(np.float64).max)
_ERFC_POLY = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
              1.00002368)  # fmt: skip
_ERFC_CONST = -1.26551223


def _erfc_poly(tt: float) -> float:
    acc = _ERFC_POLY[0] * tt
    for c in _ERFC_POLY[1:]:
        acc = (acc + c) * tt
    return acc + _ERFC_CONST


def _lower_gamma_series(aa: float, zz: float, init_value: float) -> float:
    result = 1.0
    total = init_value + 1
    while True:
        aa += 1.0
        result *= zz / aa
        total += result
        if not abs(result) > _BIG_EPSILON * _BIG_EPSILON:
            return total


def _gamma_q_half(xx: float, invert: bool) -> tuple[float, float]:
    """``gamma_incomplete_imp2(1, x, invert, &derivative)``: Q(1/2, x) (P if invert), and dP/dx."""
    if xx >= _LOG_MAX_VALUE:  # never reached from ln_p_to_chisq: its iterates stay below ~150
        raise ValueError("chisq1: argument beyond plink2's small-a range")
    if xx > 0.2:
        invert = not invert
        sqrt_x = math.sqrt(xx)
        tt = 1.0 / (1.0 + 0.5 * sqrt_x)
        result = tt * math.exp(_erfc_poly(tt) - sqrt_x * sqrt_x)  # erfc_fast
        derivative = sqrt_x * math.exp(-xx) * (1.0 / _SQRT_PI)
    else:  # xx < 1.1, kSmallEpsilon excluded by the caller's lower bound
        result = math.sqrt(xx) * math.exp(-xx) * (1.0 / _SQRT_PI)  # regularized_gamma_prefix(0.5, x)
        derivative = result
        if result != 0:
            init_value = -0.5 / result if invert else 0.0
            result *= _lower_gamma_series(0.5, xx, init_value) / 0.5
            if invert:
                invert = False
                result = -result
    result = min(result, 1.0)
    if invert:
        result = 1 - result
    if xx < 1 and _DBL_MAX * xx < derivative:
        derivative = _DBL_MAX / 2
    else:
        derivative /= xx
    return result, derivative


def _find_inverse_gamma_half(pp: float, qq: float) -> tuple[float, bool]:
    """Boost's first guess for ``a = 1/2`` (``find_inverse_gamma2``); True when it is final."""
    bb = qq * _SQRT_PI
    if bb >= 0.45:
        uu = pp * pp * (0.25 * _PI)
        return uu / (1 - (uu * (1.0 / 1.5))), False
    yy = -math.log(bb)
    if bb > 0.1:
        uu = yy - 0.5 * math.log(yy)
        if bb > 0.15:
            return yy - 0.5 * math.log(uu) - math.log(1 + 0.5 / uu), False
        return yy - 0.5 * math.log(uu) - math.log(((uu + 5) * uu + 3.75) / ((uu + 4.5) * uu + 2)), False
    return _asymptotic(yy), bb < 1e-28


def _asymptotic(yy: float) -> float:
    c1 = -0.5 * math.log(yy)
    c1_2 = c1 * c1
    c1_3 = c1_2 * c1
    c1_4 = c1_2 * c1_2
    c2 = -0.5 * (1 + c1)
    c3 = 0.25 * c1_2 + 0.75 * c1 + 0.875
    c4 = c1_3 * (-1.0 / 6.0) - 0.875 * c1_2 - 1.875 * c1 - (26.75 / 12.0)
    c5 = 0.125 * c1_4 + (5.75 / 6.0) * c1_3 + 3.625 * c1_2 + 7.75 * c1 + (83.0625 / 12.0)
    y_recip = 1.0 / yy
    y_recip_2 = y_recip * y_recip
    y_recip_3 = y_recip_2 * y_recip
    y_recip_4 = y_recip_2 * y_recip_2
    return yy + c1 + c2 * y_recip + c3 * y_recip_2 + c4 * y_recip_3 + c5 * y_recip_4


def _gamma_p_inv_half(qq: float) -> float:  # noqa: C901, PLR0912 - a literal port of Boost's root finder
    """x with Q(1/2, x) = qq (``gamma_p_inv_imp2(1, qq)``): Halley's method to 2^-23."""
    if qq >= 1.0 - _SMALL_EPSILON:
        return 0.0
    pp = 1.0 - qq
    guess, final = _find_inverse_gamma_half(pp, qq)
    if final:
        return guess
    min_guess, max_guess = _SMALL_EPSILON, _DBL_MAX
    guess = max(guess, _SMALL_EPSILON)
    invert = pp > 0.9
    if invert:
        pp = qq
    a_minus_1 = -0.5
    factor = 1.1920928955078125e-07  # 2^-23
    result = guess
    delta = delta1 = 10000000.0
    out_of_bounds_sentry = False
    while True:
        delta2 = delta1
        delta1 = delta
        ff, f1 = _gamma_q_half(result, bool(invert))
        div = (a_minus_1 - result) / result
        f2 = f1
        if abs(div) > 1 and _DBL_MAX / abs(div) < f2:
            f2 = -_DBL_MAX / 2
        else:
            f2 *= div
        if invert:
            f1, f2 = -f1, -f2
        f0 = ff - pp
        if f0 == 0:
            break
        delta = f0 / f1
        if f2 != 0:
            denom = 2 * f0
            numer = 2 * f1 - f0 * (f2 / f1)
            if abs(numer) >= 1 or abs(denom) < abs(numer) * _DBL_MAX:
                halley_step = denom / numer
                if halley_step / delta < 0:
                    if abs(delta) > 2 * abs(guess):
                        delta = (-1 if delta < 0 else 1) * 2 * abs(guess)
                else:
                    delta = halley_step
        convergence = abs(delta / delta2)
        if 0.8 < convergence < 2:
            delta = 0.5 * (result - min_guess) if delta > 0 else 0.5 * (result - max_guess)
            if abs(delta) > result:
                delta = (1 if delta > 0 else -1) * result
        guess = result
        result -= delta
        if result < min_guess or result > max_guess:  # stepped out of the bracket: back off toward its side
            bound = min_guess if result < min_guess else max_guess
            big = abs(bound) < 1 and abs(result) > 1 and _DBL_MAX / abs(result) < abs(bound)
            diff = 1000.0 if big else result / bound
            if abs(diff) < 1:
                diff = 1 / diff
            if not out_of_bounds_sentry and 0 < diff < 3:
                delta = 0.99 * (guess - bound)
                result = guess - delta
                out_of_bounds_sentry = True
            else:
                delta = (guess - bound) * 0.5
                result = guess - delta
                if result in (min_guess, max_guess):
                    break
        if delta > 0:
            max_guess = guess
        else:
            min_guess = guess
        if not abs(result * factor) < abs(delta):
            break
    return result


def _ln_p_to_chisq(ln_p: float) -> float:
    if ln_p > -65.04474754675797:
        return _gamma_p_inv_half(math.exp(ln_p)) * 2
    return 2 * _asymptotic(_LN_SQRT_PI - ln_p)  # the (bb < 1e-28) case, from ln p directly


def _chisq_to_ln_p(chisq: float) -> float:
    xx = chisq * 0.5
    if xx > 0.2:  # finite_half_gamma_q2_ln(0, x), with erfc_fast2
        sqrt_x = math.sqrt(xx)
        tt = 1.0 / (1.0 + 0.5 * sqrt_x)
        return min(math.log(tt) + _erfc_poly(tt) - xx, 0.0)
    if xx < _SMALL_EPSILON:
        return 0.0
    result_ln = -xx + 0.5 * math.log(xx) - _LN_SQRT_PI  # regularized_gamma_prefix_ln(0.5, x)
    init_value = -0.5 * math.exp(-result_ln)
    multiplier = -_lower_gamma_series(0.5, xx, init_value) / 0.5
    return min(result_ln + math.log(multiplier), 0.0)


def ln_p_to_chisq(ln_p: np.ndarray) -> np.ndarray:
    """The 1-df χ² with upper tail ``exp(ln_p)`` [shape: as ``ln_p``], as plink2's ``LnPToChisq``."""
    flat = np.asarray(ln_p, dtype=np.float64).reshape(-1)
    return np.array([_ln_p_to_chisq(v) for v in flat.tolist()], dtype=np.float64).reshape(np.shape(ln_p))


def chisq_to_ln_p(chisq: np.ndarray) -> np.ndarray:
    """ln of the 1-df χ² upper tail [shape: as ``chisq``], as plink2's ``ChisqToLnP(chisq, 1)``."""
    flat = np.asarray(chisq, dtype=np.float64).reshape(-1)
    return np.array([_chisq_to_ln_p(v) for v in flat.tolist()], dtype=np.float64).reshape(np.shape(chisq))
