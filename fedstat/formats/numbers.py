"""Numbers as plink2 and PLINK 1.9 print them: the one place fedstat turns a float into text.

- :func:`format_g` / :func:`format_g_array`: plink2's ``dtoa_g`` (6 significant digits) for its
  report tables; other digit counts use C ``%g`` with plink2's spellings of non-finite values;
- :func:`lntoa_g`: plink2's ``lntoa_g``, a number printed from its natural logarithm (``--glm``
  p-values and odds ratios, any exponent);
- :func:`format_wxp4`: PLINK 1.9's ``dtoa_g_wxp4`` (4 significant digits, right-aligned) for the
  ``.assoc`` and ``.model`` tables;
- :class:`CachedFormat`: any of these memoised per value, with a spelling for NaN;
- :func:`int_strings`: integers as decimal text.

plink2's ``dtoa_g`` and PLINK 1.9's ``dtoa_g_wxp4`` are one algorithm at 6 and 4 significant
digits (:class:`_GSpec`), differing only in the tolerance of their banker's rounding. It is a
literal port: every double rounds exactly as the C code rounds it, by IEEE double arithmetic in
the same order.

References
----------
plink2 ``dtoa_g``, ``lntoa_g``, ``double_bround`` with ``kBankerRound8`` (``plink2_string.cc``):
6 significant digits, trailing zeros removed, banker's rounding of near-ties (within 5e-9 of a
unit in the last place), exponents of at least two digits (``1e-05``, ``5.36356e-300``).
PLINK v1.90b6.26 ``dtoa_g_wxp4`` and ``banker_round10`` (``plink_common.c``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

__all__ = [
    "CachedFormat",
    "format_g",
    "format_g_array",
    "format_wxp4",
    "int_strings",
    "lntoa_g",
]

_DBL_MAX = float(np.finfo(np.float64).max)
# banker's rounding offsets, indexed by the parity of the truncated value
_BANKER_ROUND8 = (0.499999995, 0.500000005)  # plink2 kBankerRound8
_BANKER_ROUND10 = (0.49999999995, 0.50000000005)  # PLINK 1.9 banker_round10


@dataclass(frozen=True)
class _GSpec:
    """One flavour of ``dtoa_g``: ``digits`` significant digits, banker's rounding ``banker``.

    ``t[k]`` is the C code's constant ``9.99…949…9e<k>`` (13 decimals): the smallest value
    that rounds to ``1e<k+1>`` at ``digits`` significant digits, less a tolerance.
    """

    digits: int
    banker: tuple[float, float]
    t: dict[int, float] = field(init=False, repr=False, compare=False)
    scale: float = field(init=False, repr=False, compare=False)  # 10 ** digits

    def __post_init__(self) -> None:
        d = self.digits
        body = f"9.{'9' * (d - 1)}4{'9' * (13 - d)}"
        object.__setattr__(self, "t", {k: float(f"{body}e{k}") for k in range(-256, 256)})
        object.__setattr__(self, "scale", float(10**d))

    def bround(self, x: float) -> int:
        """``double_bround``: round half to even, with tolerance (x >= 0)."""
        r = int(x)
        return r + int((x - r) + self.banker[r & 1])


_G6 = _GSpec(6, _BANKER_ROUND8)
_G4 = _GSpec(4, _BANKER_ROUND10)


def _mantissa(x: float, spec: _GSpec) -> str:
    """``double_bround<d-1>`` + ``qrtoa_1p<d-1>``: x in [1, 10) -> ``d[.ddddd]``."""
    ndec = spec.digits - 1
    q, r = divmod(spec.bround(x * 10**ndec), 10**ndec)
    return f"{q}.{f'{r:0{ndec}d}'.rstrip('0')}" if r else str(q)


def _so(x: float, spec: _GSpec) -> str:
    """plink2 ``dtoa_so6`` / PLINK ``dtoa_so4``: ``digits`` significant digits for
    ``threshold(-1) <= x < threshold(digits - 1)``."""
    d, t = spec.digits, spec.t
    if x < t[0]:
        return _mantissa(x, spec)
    for k in range(1, d - 1):
        if x < t[k]:
            ndec = d - 1 - k
            q, r = divmod(spec.bround(x * 10**ndec), 10**ndec)
            return f"{q}.{f'{r:0{ndec}d}'.rstrip('0')}" if r else str(q)
    return f"{spec.bround(x):0{d}d}"


# dtoa_g's exponent steps: x is multiplied by 1e±step while beyond 1e∓step
_POW10 = {s: float(f"1.0e{s}") for k in (64, 32, 16, 8, 4, 2) for s in (k, -k)}


def _dtoa_g(x: float, spec: _GSpec) -> str:
    """plink2 ``dtoa_g`` (``spec`` = 6 digits) or PLINK 1.9's digits of ``dtoa_g_wxp4`` (4)."""
    if x != x:
        return "nan"
    sign = ""
    if x < 0:
        sign = "-"
        x = -x
    t = spec.t
    xp10 = 0
    if x < t[-5]:
        # exponential notation, negative exponent
        if x == 0.0:
            return "0"
        if x < t[-16]:
            if x < t[-128]:
                if x < t[-256]:
                    x *= 1.0e256
                    xp10 |= 256
                else:
                    x *= 1.0e128
                    xp10 |= 128
            for step in (64, 32, 16):
                if x < t[-step]:
                    x *= _POW10[step]
                    xp10 |= step
        for step in (8, 4, 2):
            if x < t[-step]:
                x *= _POW10[step]
                xp10 |= step
        if x < t[-1]:
            x *= 10.0
            xp10 += 1
        return f"{sign}{_mantissa(x, spec)}e-{xp10:02d}"
    if x >= t[spec.digits - 1]:
        # exponential notation, positive exponent
        if x >= t[15]:
            if x >= t[127]:
                if x > _DBL_MAX:
                    return f"{sign}inf"
                if x >= t[255]:
                    x *= 1.0e-256
                    xp10 |= 256
                else:
                    x *= 1.0e-128
                    xp10 |= 128
            for step in (64, 32, 16):
                if x >= t[step - 1]:
                    x *= _POW10[-step]
                    xp10 |= step
        for step in (8, 4, 2):
            if x >= t[step - 1]:
                x *= _POW10[-step]
                xp10 |= step
        if x >= t[0]:
            x *= 1.0e-1
            xp10 += 1
        return f"{sign}{_mantissa(x, spec)}e+{xp10:02d}"
    if x >= t[-1]:
        return sign + _so(x, spec)
    # plain decimal below 1: "0." then leading zeros then the digits, trailing zeros removed
    lead = ""
    if x < t[-3]:
        x *= 100.0
        lead = "00"
    if x < t[-2]:
        x *= 10.0
        lead += "0"
    d = spec.digits
    return f"{sign}0.{lead}{f'{spec.bround(x * spec.scale):0{d}d}'.rstrip('0')}"


def _generic_g(x: float, digits: int) -> str:
    """%g-style formatting with ``digits`` significant digits, plink2 spellings."""
    if x != x:
        return "nan"
    if x in (np.inf, -np.inf):
        return "inf" if x > 0 else "-inf"
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        s = f"{mant}e{exp}"
    return s


def format_g(x: float, digits: int = 6) -> str:
    """Format a number as plink2 prints it in report tables.

    Parameters
    ----------
    x : the value (a Python or numpy float; integers are converted).
    digits : significant digits. ``6`` (plink2's default ``dtoa_g``) is a bit-exact port of
        plink2's routine, including its banker's rounding of near-ties; other values use
        C ``%g`` with plink2's spellings of non-finite values.

    Returns
    -------
    str
        E.g. ``0.5``, ``0.415094``, ``1e-05``, ``5.36356e-300``, ``1.23457e+06``, ``nan``.
    """
    x = float(x)
    if digits == 6:
        return _dtoa_g(x, _G6)
    if digits < 1:
        raise ValueError(f"format_g needs at least 1 significant digit, got {digits}")
    return _generic_g(x, digits)


class CachedFormat:
    """A number formatter memoised per value; NaN prints as ``na`` (None: as ``fn`` prints it).

    Parameters
    ----------
    fn : the formatter, e.g. :func:`format_g` or :func:`lntoa_g`
    na : the spelling of NaN, e.g. ``"NA"``; None: ``fn(nan)``
    """

    def __init__(self, fn: Callable[[float], str], na: str | None = None):
        self.fn = fn
        self.na = na
        self.cache: dict[float, str] = {}

    def __call__(self, x: float) -> str:
        if x != x:
            # NaN never equals itself, so it is never cached (and formatted cheaply)
            return self.fn(x) if self.na is None else self.na
        s = self.cache.get(x)
        if s is None:
            s = self.cache[x] = self.fn(x)
        return s

    def column(self, values: np.ndarray) -> list[str]:
        """The strings of ``values`` [array, shape: (n,)], as floats."""
        cache, fn, na = self.cache, self.fn, self.na
        out: list[str] = []
        append = out.append
        for v in np.asarray(values, dtype=np.float64).tolist():
            s = cache.get(v)
            if s is None:
                if v != v:
                    s = fn(v) if na is None else na
                else:
                    s = cache[v] = fn(v)
            append(s)
        return out


_G6_FORMAT = partial(_dtoa_g, spec=_G6)


def format_g_array(values: np.ndarray, digits: int = 6) -> list[str]:
    """:func:`format_g` over an array; repeated values are formatted once.

    Parameters
    ----------
    values : [array, shape: (n,)] floats

    Returns
    -------
    list of n strings
    """
    return CachedFormat(_G6_FORMAT if digits == 6 else lambda v: format_g(v, digits)).column(values)


def int_strings(values: np.ndarray) -> list[str]:
    """[array, shape: (n,)] integers as decimal strings."""
    return [str(v) for v in np.asarray(values, dtype=np.int64).tolist()]


_LN10 = 2.3025850929940457
_RECIP_LN10 = 0.43429448190325176


def lntoa_g(ln_val: float) -> str:
    """plink2 ``lntoa_g``: print exp(ln_val) with 6 significant digits, any exponent.

    p-values are printed from their logarithm, so P < 1e-308 prints as e.g. ``2.77486e-3369``.
    """
    if ln_val != ln_val:
        return "nan"
    if ln_val < 13.81551005796414:
        if ln_val > -9.210340871976317:
            return format_g(math.exp(ln_val))
        if ln_val < 0x7FFFFFFB * (-_LN10):
            return "0"
    elif ln_val > 0x7FFFFFFB * _LN10:
        return "inf"
    xp10 = int(ln_val * _RECIP_LN10 + 5.000001349509205e-7 * _RECIP_LN10)
    mantissa = math.exp(ln_val - xp10 * _LN10)
    if mantissa < 0.99999949999999:
        mantissa *= 10
        xp10 -= 1
    elif mantissa > 9.9999949999999:
        mantissa *= 0.1
        xp10 += 1
    head = _mantissa(mantissa, _G6)
    if head.startswith("10"):  # rounding carried into a new digit
        head, xp10 = "1", xp10 + 1
    if xp10 < 0:
        return f"{head}e-{-xp10:02d}"
    return f"{head}e+{xp10:02d}"


def format_wxp4(x: float, width: int) -> str:
    """A number as PLINK 1.9 ``dtoa_g_wxp4`` prints it: 4 significant digits, right-aligned.

    Parameters
    ----------
    x : the value
    width : minimum field width (longer results are not cut)

    Returns
    -------
    str
        E.g. ``format_wxp4(0.13581, 12) == '      0.1358'``, ``'   1.234e-05'``, ``'0'``
        right-aligned for zero, ``nan`` and `` inf`` spelled as PLINK spells them.
    """
    x = float(x)
    if x != x:
        return "nan".rjust(width)
    if x == 0.0:
        return "0".rjust(width)
    if x in (np.inf, -np.inf):
        return (" inf" if x > 0 else "-inf").rjust(width)
    return _dtoa_g(x, _G4).rjust(width)
