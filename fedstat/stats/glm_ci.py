"""``--ci``'s normal quantile for ``--glm``, as plink2 computes it."""

from __future__ import annotations

import math

__all__ = ["MIN_CI", "ci_zscore"]

#: plink2's smallest ``--ci`` level
MIN_CI = 0.01
# Acklam's rational approximation of the normal quantile, as plink2's QuantileToZscore
_IVN_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
          -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_IVN_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
          -1.328068155288572e01)  # fmt: skip
_IVN_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
          4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_IVN_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _acklam_tail(q: float) -> float:
    c, d = _IVN_C, _IVN_D
    num = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
    return num / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)


def ci_zscore(ci: float) -> float:
    """The z with ``Φ(z) = (1 + ci) / 2`` as plink2 computes it for ``--ci``.

    References
    ----------
    plink2 ``QuantileToZscore`` (``plink2_stats.cc``): P. J. Acklam's rational approximation
    (relative error below 1.15e-9), evaluated in the same order, so the bounds print as plink2's.
    """
    pp = (ci + 1.0) * 0.5
    if pp < 0.02425:
        return _acklam_tail(math.sqrt(-2 * math.log(pp)))
    if pp > 0.97575:
        return -_acklam_tail(math.sqrt(-2 * math.log(1 - pp)))
    a, b = _IVN_A, _IVN_B
    q = pp - 0.5
    r = q * q
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    return num / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
