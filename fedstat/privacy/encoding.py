"""Fixed-point encoding of sums into the ring Z/2^64, for modes that mask or encrypt.

A real value x is encoded as round(x · 2^f) mod 2^64 (two's complement), so a sum of encodings
decodes to the sum of values as long as |Σ x| · 2^f < 2^63. Encoding checks each value's
headroom and raises :class:`~fedstat.errors.PrivacyError` instead of wrapping silently; the
coordinator checks the decoded total against the bound it can know (``max_abs_total``).
"""

from __future__ import annotations

import numpy as np

from fedstat.errors import PrivacyError

#: Default fractional bits: 2^-24 ≈ 6e-8 resolution, leaving 2^39 (5e11) of integer headroom.
DEFAULT_FRAC_BITS = 24


def encode_fixed(
    values: np.ndarray, *, frac_bits: int = DEFAULT_FRAC_BITS, max_abs_total: float | None = None
) -> np.ndarray:
    """Encode float or integer values into uint64 ring elements.

    Parameters
    ----------
    values : [array, shape: (n,)] values to encode (integers are exact when ``frac_bits = 0``)
    frac_bits : fractional bits of the fixed-point representation
    max_abs_total : bound on the absolute value of the *sum* over sites; encoding refuses when
        that bound would not fit the ring (default: the value itself must fit with 2^10 headroom)

    Returns
    -------
    [array, shape: (n,), dtype uint64]
    """
    limit = 2.0 ** (63 - frac_bits)
    bound = max_abs_total if max_abs_total is not None else 1024 * float(np.max(np.abs(values), initial=0.0))
    if not np.all(np.isfinite(values)):
        raise PrivacyError("cannot encode a non-finite sum (NaN or infinity) in fixed point")
    if bound >= limit:
        raise PrivacyError(
            f"fixed-point overflow: totals up to {bound:.3g} do not fit 2^63 with {frac_bits} fractional bits"
        )
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 2.0**frac_bits) if frac_bits else np.asarray(values)
    return scaled.astype(np.int64).view(np.uint64)


def decode_fixed(ring: np.ndarray, *, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Decode uint64 ring elements (a sum of encodings) back to float64 (int64 if frac_bits=0)."""
    signed = np.asarray(ring, dtype=np.uint64).view(np.int64)
    if frac_bits == 0:
        return signed.copy()
    return signed.astype(np.float64) / 2.0**frac_bits
