"""The noise: an exact discrete Gaussian sampler (OpenDP) over OpenSSL randomness."""

from __future__ import annotations

import functools
import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fedstat.errors import InputError, PrivacyError
from fedstat.privacy.dp.accounting import check_count

#: Elements per OpenDP call: bounds the Python list OpenDP returns (~2.5 MB) and is the unit of
#: work for the thread pool (OpenDP's ctypes calls release the GIL).
_NOISE_CHUNK = 1 << 16
_I64 = np.iinfo(np.int64)


@functools.lru_cache(maxsize=32)
def _gaussian_measurement(sigma: float) -> Any:
    import opendp.prelude as dp  # noqa: PLC0415 - 150 ms import, only when noise is drawn

    dp.enable_features("contrib")
    domain = dp.vector_domain(dp.atom_domain(T="i64"))  # i64: i32 would saturate
    return dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=sigma)


def discrete_gaussian(values: np.ndarray, sigma: float, *, workers: int | None = None) -> np.ndarray:
    """Add independent discrete Gaussian noise N_Z(0, σ²) to every element of an integer array.

    Parameters
    ----------
    values : [array, any shape, integer dtype] integer-encoded sums (converted to int64)
    sigma : scale σ > 0, e.g. :attr:`NoiseCalibration.sigma_site`
    workers : threads drawing chunks of 65,536 elements (default: min(4, CPU count))

    Returns
    -------
    [array, same shape, dtype int64]

    Raises
    ------
    PrivacyError
        If a noisy element reaches the int64 range's ends: OpenDP saturates instead of wrapping,
        so such an element may have lost noise; nothing is returned.
    TypeError
        If ``values`` is not an integer array.

    Notes
    -----
    The sampler is OpenDP 0.16's ``make_gaussian`` on ``vector_domain(atom_domain(T="i64"))`` with
    ``l2_distance``: the exact rejection sampler of [CKS20] in arbitrary precision, drawing its
    bits from OpenSSL's ``RAND_bytes`` (OpenDP's ``use-openssl`` feature, linked in the wheel). No
    numpy randomness is involved. Measured on a 2-core machine: about 83k elements/s on one thread
    (1e5 in 1.2 s, 1e6 in 12 s, independent of σ), about 140k/s with two threads.

    References
    ----------
    [CKS20] Algorithm 3; OpenDP ``make_gaussian``.
    """
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"discrete_gaussian needs integer values, got dtype {arr.dtype}")
    if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
        raise InputError(f"noise scale sigma must be positive and finite, got {sigma!r}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _I64.max:
        raise PrivacyError("discrete_gaussian: values exceed the int64 range")
    flat = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
    out = np.empty_like(flat)
    if flat.size == 0:
        return out.reshape(arr.shape)
    measurement = _gaussian_measurement(float(sigma))
    from opendp.mod import OpenDPException  # noqa: PLC0415 - loaded by _gaussian_measurement

    def draw(start: int) -> None:
        piece = flat[start : start + _NOISE_CHUNK]
        try:
            noisy = measurement(piece)
        except OpenDPException as exc:  # a sampler or entropy failure; its text is not repeated
            raise PrivacyError(f"discrete Gaussian sampling failed in OpenDP ({exc.variant})") from exc
        out[start : start + piece.size] = np.asarray(noisy, dtype=np.int64)

    starts = range(0, flat.size, _NOISE_CHUNK)
    n_workers = min(4, os.cpu_count() or 1) if workers is None else check_count("workers", workers)
    if n_workers == 1 or len(starts) == 1:
        for start in starts:
            draw(start)
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            list(pool.map(draw, starts))
    at_limit = np.flatnonzero((out == _I64.max) | (out == _I64.min))
    if at_limit.size:
        raise PrivacyError(
            f"discrete_gaussian: int64 overflow at element {int(at_limit[0])} of {flat.size} "
            f"({at_limit.size} in all); encode the sums with more headroom"
        )
    return out.reshape(arr.shape)
