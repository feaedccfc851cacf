"""Imputed dosages in a VCF's text, read as plink2 2.00a3.5's ``--vcf FILE dosage=FIELD`` reads them.

A dosage row is one variant's ALT dosages in plink2's integer units (1/16384 of an allele; a
diploid dosage is 0..32768) with :data:`MISSING` for a sample without one. The row holds what
plink2 stores for each sample: the dosage where the chosen field has one, else the hard call of
its GT (16384 per ALT allele), else missing. Written to a ``.pgen`` through pgenlib (which keeps a
non-integer value as a dosage and derives its hard call with the default ``--hard-call-threshold``
0.1, as plink2 does), such rows give exactly plink2's hard calls and dosages.

The values are parsed from the VCF's text, not from htslib's float32 copy of them: plink2 parses
the text to a double with its own ``ScanadvDouble`` (not always correctly rounded), and a float32
or a correctly rounded double can round to another 1/16384 step. Values are converted with
Python's parser and, where the result lies close enough to a rounding step or a range limit for
the difference to matter, again with :func:`scan_double`, a port of plink2's parser.

What plink2 does, from ``plink2_import.cc`` (``ParseVcfBiallelicDosage``, ``ParseVcfBiallelicGp``,
``ParseVcfBiallelicHds``, ``VcfConvertPhasedBiallelicDosageLine``) with the default
``--import-dosage-certainty`` (0) and ``--dosage-erase-threshold`` (0):

* ``DS``: the ALT dosage, rounded half up to 1/16384 (``int(x * 16384 + 0.5)``). A sample whose
  GT is haploid (a GT without ``/`` or ``|`` as its second character, e.g. ``0`` or ``1``) has a
  DS on the 0..1 scale, doubled. A DS below 0 or (after doubling) above 2 is an error, without
  tolerance. Without GT in the record every sample is diploid.
* ``GP``: ``(P(het) + 2 P(hom ALT)) / (P0 + P1 + P2)``, so probabilities not summing to 1 are
  normalised; a haploid sample has two probabilities, ``2 P1 / (P0 + P1)``. Each probability must
  lie in [0, 1]; all of them 0 makes the sample missing, whatever its GT says.
* ``HDS``: haplotype dosages, read first; one value (haploid) is doubled, two are summed. A
  missing HDS falls back to the record's DS when the header declares DS.
* A missing value (``.`` not followed by a digit, ``?``, or a sample with fewer subfields than
  FORMAT) falls back to the sample's GT hard call.

What fedstat refuses where plink2 2.00a3.5 would still read something (each of these would make
the result depend on an accident of plink2's parser): text after a number (``0.5x``), a GP with
more values than the call's ploidy needs, an HDS with more than two values, a record without GT
and without the dosage field (plink2 then reads the first FORMAT field as if it were GT), GT that
is not the first FORMAT field (plink2 then ignores it), and a record with DS but no GT on chrX,
chrY or MT (plink2 refuses it too: a DS could be on either scale there).

References
----------
plink2 ``--vcf ... dosage=``: https://www.cog-genomics.org/plink/2.0/input#vcf
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fedstat.data.pgen_header import DOSAGE_UNIT

#: A sample without a dosage or a hard call, in a dosage row (uint16).
MISSING = 0xFFFF
#: ``vcf_dosage`` values that read a dosage field.
DOSAGE_MODES = ("DS", "HDS", "GP")
#: Chromosomes plink2's human chromosome set treats as haploid (``haploid_mask`` 0x5800000).
HAPLOID_CHROMS = frozenset(("X", "Y", "MT"))

# a number plink2's ScanadvDouble reads in full (Python's float() reads it the same way, up to
# rounding); anything else is refused
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBERS = re.compile(rf"{_NUMBER}(?:\n{_NUMBER})*")
_ONE_NUMBER = re.compile(_NUMBER)
# closer than this (in 1/16384 units) to a rounding step, or (in value) to a range limit, a value
# is converted again with plink2's parser; the two parsers differ by a few ulp (< 1e-10 here)
_STEP_MARGIN = 1e-6
_LIMIT_MARGIN = 1e-9

_POS10 = [10.0**k for k in range(16)]
_POS10_16 = [1.0, 1e16, 1e32, 1e48, 1e64, 1e80, 1e96, 1e112, 1e128, 1e144, 1e160, 1e176, 1e192, 1e208, 1e224, 1e240]
_NEG10 = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14, 1e-15]
_NEG10_16 = [1.0, 1e-16, 1e-32, 1e-48, 1e-64, 1e-80, 1e-96, 1e-112]


class DosageParseError(ValueError):
    """A dosage field plink2 would refuse or fedstat cannot read exactly; the message says what is
    wrong with the field, never its value or the sample's name (the caller adds file and record)."""


@dataclass(frozen=True)
class FieldLayout:
    """Where a record's fields are, by 0-based position in its FORMAT (``None``: absent).

    Attributes
    ----------
    gt : GT, which plink2 reads only as the first FORMAT field
    dosage : the field named by ``dosage=`` (DS, or GP); DS in HDS mode
    hds : HDS, in HDS mode only
    """

    gt: int | None
    dosage: int | None
    hds: int | None


def scan_double(text: str) -> float | None:
    """plink2 2.00a3.5's ``ScanadvDouble`` (64-bit build) on a whole string.

    Returns the double plink2 reads, or None when ``text`` is not a number plink2 reads in full.
    The result can differ from ``float(text)`` by a few ulp: plink2 multiplies the integer of up
    to 17 significant digits by tabulated powers of ten instead of rounding correctly.
    """
    if _ONE_NUMBER.fullmatch(text) is None:
        return None
    s = text + "\0"  # the sentinel ends every digit run
    i = 0
    negative = s[0] == "-"
    if s[0] in "+-":
        i = 1
    e10 = 0
    if s[i].isdigit():
        digits = int(s[i])
        while True:
            i += 1
            if not s[i].isdigit():
                if s[i] == ".":
                    e10, i, digits = _scan_fraction(s, i, i, digits)
                break
            digits = digits * 10 + int(s[i])
            if digits >= 10**16:  # 17 significant digits: count the rest, ignore their values
                last = i
                i += 1
                while s[i].isdigit():
                    i += 1
                e10 = i - last - 1
                if s[i] == ".":
                    i += 1
                    while s[i].isdigit():
                        i += 1
                break
    else:  # a leading dot, then (by the grammar) a digit
        e10, i, digits = _scan_fraction(s, i + 1, i, int(s[i + 1]))
    if s[i] in "eE":
        i += 1
        exp_negative = s[i] == "-"
        if s[i] in "+-":
            i += 1
        exp = 0
        while s[i].isdigit():
            if exp >= 214748364:  # plink2's guard against exponent overflow
                return None if not exp_negative else 0.0
            exp = exp * 10 + int(s[i])
            i += 1
        e10 += -exp if exp_negative else exp
    if digits == 0:
        return 0.0
    value = float(-digits if negative else digits)
    if e10 < 0:
        p = -e10
        value *= _NEG10[p & 15]
        p //= 16
        if p:
            value *= _NEG10_16[p & 7]
            if p > 7:
                if p > 23:
                    value = 0.0
                elif p > 15:
                    value *= 1.0e-256
                else:
                    value *= 1.0e-128
    elif e10 > 0:
        p = e10
        value *= _POS10[p & 15]
        p //= 16
        if p:
            value *= _POS10_16[p & 15]
            if p > 15:
                if p > 31 or value > 1.7976931348623154e52:
                    return None
                value *= 1.0e256
    return value


def _scan_fraction(s: str, i: int, dot: int, digits: int) -> tuple[int, int, int]:
    """plink2's ``ScanadvDouble_parse_decimal``: the digits after the decimal point at ``dot``,
    from the last character read, ``i``. Returns (e10, index after the digits, digits)."""
    while True:
        i += 1
        if not s[i].isdigit():
            return 1 - (i - dot), i, digits
        digits = digits * 10 + int(s[i])
        if digits >= 10**16:
            e10 = -(i - dot)
            i += 1
            while s[i].isdigit():
                i += 1
            return e10, i, digits


def field_layout(format_keys: list[str], mode: str, declared: set[str]) -> FieldLayout:
    """Where GT and the dosage fields sit in a record whose FORMAT is ``format_keys``.

    A dosage field counts only when the header declares it, as plink2 reads it (the caller refuses
    a record using an undeclared one); in HDS mode DS is the fallback for a missing HDS.
    """
    gt = 0 if format_keys[:1] == ["GT"] else None
    primary = "DS" if mode == "HDS" else mode
    dosage = format_keys.index(primary) if primary in format_keys and primary in declared else None
    hds = None
    if mode == "HDS" and "HDS" in format_keys and "HDS" in declared:
        hds = format_keys.index("HDS")
    return FieldLayout(gt=gt, dosage=dosage, hds=hds)


def dosage_row(
    cells: list[str], layout: FieldLayout, mode: str, hard: np.ndarray, haploid: np.ndarray, out: np.ndarray
) -> None:
    """One record's dosage row, as plink2 ``--vcf … dosage=MODE`` imports it.

    Parameters
    ----------
    cells : the record's sample columns (text after FORMAT), one per sample
    layout : where GT and the dosage fields are (:func:`field_layout`); at least one dosage field
    mode : ``"DS"``, ``"HDS"`` or ``"GP"``
    hard : [array, shape: (n_samples,), dtype int8] the GT hard calls (ALT counts, -9 missing),
        used where a sample has no dosage
    haploid : [array, shape: (n_samples,), dtype bool] samples whose GT is a haploid call (plink2:
        the GT's second character is neither ``/`` nor ``|``); all false without GT
    out : [array, shape: (n_samples,), dtype uint16] written in place: dosage units (0..32768)
        or :data:`MISSING`

    Raises
    ------
    DosageParseError
        If a value is not a number, lies outside its range, or has the wrong number of values.
    """
    out[:] = np.where(hard >= 0, hard.astype(np.int32) * DOSAGE_UNIT, MISSING).astype(np.uint16)
    parts = [cell.split(":") for cell in cells]
    todo = np.ones(len(cells), dtype=bool)
    if layout.hds is not None:
        texts = _subfield(parts, layout.hds)
        have, _ = _present(texts)
        _hds(texts, have, out)
        todo &= ~have
    if layout.dosage is not None and todo.any():
        texts = _subfield(parts, layout.dosage)
        present, numbers = _present(texts)
        have = todo & present
        if mode == "GP":
            _gp(texts, have, haploid, out)
        else:
            _ds(texts, have, haploid, out, checked=numbers)


def _subfield(parts: list[list[str]], k: int) -> list[str]:
    """The ``k``-th subfield of each sample; ``.`` where a sample has fewer (trailing fields
    dropped, which plink2 reads as missing)."""
    return [p[k] if k < len(p) else "." for p in parts]


def _present(texts: list[str]) -> tuple[np.ndarray, bool]:
    """Where ``texts`` are not plink2's missing value (``?``, or ``.`` followed by anything but a
    digit), and whether all of them are numbers (the common case, checked at once)."""
    if _NUMBERS.fullmatch("\n".join(texts)) is not None:
        return np.ones(len(texts), dtype=bool), True
    return np.fromiter(
        (not (t[:1] == "?" or t == "." or (t[:1] == "." and t[1:2] not in "0123456789")) for t in texts),
        dtype=bool,
        count=len(texts),
    ), False


def _numbers(texts: list[str], what: str) -> tuple[np.ndarray, list[str]]:
    """Correctly rounded doubles of ``texts`` (each a whole number as plink2 reads it)."""
    if texts and _NUMBERS.fullmatch("\n".join(texts)) is None:
        raise DosageParseError(
            f"{'an' if what == 'HDS' else 'a'} {what} value is not a number (or has text after the number)"
        )
    return np.fromiter(map(float, texts), dtype=np.float64, count=len(texts)), texts


def _exact(values: np.ndarray, texts: list[str], rows: np.ndarray) -> None:
    """Replace ``values`` (shape (n,) or (n, k), texts flattened row-major) at ``rows`` by
    plink2's parse of their text."""
    flat = values.reshape(len(texts))
    width = 1 if values.ndim == 1 else values.shape[1]
    for r in np.flatnonzero(rows):
        for c in range(width):
            exact = scan_double(texts[r * width + c])
            assert exact is not None  # the grammar was checked
            flat[r * width + c] = exact


def _near_step(v: np.ndarray) -> np.ndarray:
    """Whether ``v`` (dosage units before truncation) is close to an integer."""
    near: np.ndarray = np.abs(v - np.rint(v)) < _STEP_MARGIN
    return near


def _ds(texts: list[str], have: np.ndarray, haploid: np.ndarray, out: np.ndarray, *, checked: bool) -> None:
    """DS values; ``checked``: every one of ``texts`` is known to be a number."""
    idx = np.flatnonzero(have)
    if not len(idx):
        return
    sub = texts if len(idx) == len(texts) else [texts[i] for i in idx]
    if checked:
        x = np.fromiter(map(float, sub), dtype=np.float64, count=len(sub))
    else:
        x, sub = _numbers(sub, "DS")
    hap = haploid[idx]

    def units(x: np.ndarray) -> np.ndarray:
        y = np.where(hap, 2.0 * x, x)  # a haploid DS is on the 0..1 scale
        result: np.ndarray = y * DOSAGE_UNIT + 0.5
        return result

    suspect = _near_step(units(x)) | (np.abs(np.where(hap, 2.0 * x, x) - 2.0) < _LIMIT_MARGIN)
    if suspect.any():
        _exact(x, sub, suspect)
    y = np.where(hap, 2.0 * x, x)
    if (x < 0.0).any() or (y > 2.0).any():
        raise DosageParseError(
            "a DS value lies outside [0, 2] (outside [0, 1] for a haploid GT, where plink2 doubles it)"
        )
    out[idx] = np.trunc(units(x)).astype(np.uint16)


def _gp(texts: list[str], have: np.ndarray, haploid: np.ndarray, out: np.ndarray) -> None:
    for hap in (False, True):
        idx = np.flatnonzero(have & (haploid == hap))
        if not len(idx):
            continue
        width = 2 if hap else 3
        split = [texts[i].split(",") for i in idx]
        if any(len(s) != width for s in split):
            raise DosageParseError(
                "a GP value does not have 3 probabilities (2 for a haploid GT), as plink2 reads GP for a biallelic variant"
            )
        flat, sub = _numbers([t for s in split for t in s], "GP")
        p = flat.reshape(len(idx), width)
        v, _ = _gp_units(p, hap)
        suspect = _near_step(v) | (np.abs(p - 1.0) < _LIMIT_MARGIN).any(axis=1)
        if suspect.any():
            _exact(p, sub, suspect)
        if (p < 0.0).any() or (p > 1.0).any():
            raise DosageParseError("a GP probability lies outside [0, 1]")
        v, denom = _gp_units(p, hap)
        zero = denom <= 0.0  # every probability 0: plink2 sets the sample missing, whatever its GT says
        out[idx] = np.where(zero, MISSING, np.trunc(np.where(zero, 0.0, v))).astype(np.uint16)


def _gp_units(p: np.ndarray, haploid: bool) -> tuple[np.ndarray, np.ndarray]:
    """Dosage units before truncation, and the probabilities' sum, of GP rows ``p`` (n, 2 or 3),
    in plink2's order of operations."""
    if haploid:
        denom = p[:, 0] + p[:, 1]
        num = 2.0 * p[:, 1]
    else:
        denom = (p[:, 0] + p[:, 1]) + p[:, 2]
        num = p[:, 1] + 2.0 * p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / denom * DOSAGE_UNIT + 0.5, denom


def _hds(texts: list[str], have: np.ndarray, out: np.ndarray) -> None:
    idx = np.flatnonzero(have)
    if not len(idx):
        return
    split = [texts[i].split(",") for i in idx]
    if any(len(s) > 2 for s in split):
        raise DosageParseError("an HDS value has more than two haplotype dosages (a biallelic call has one or two)")
    pair = np.fromiter((len(s) == 2 for s in split), dtype=bool, count=len(split))
    flat, sub = _numbers([t for s in split for t in (s if len(s) == 2 else (s[0], "0"))], "HDS")
    h = flat.reshape(len(idx), 2)

    def units(h: np.ndarray) -> np.ndarray:
        # one haplotype: h * 32768 (plink2's kDosageMax); two: (h1 + h2) * 16384
        result: np.ndarray = np.where(pair, (h[:, 0] + h[:, 1]) * DOSAGE_UNIT, h[:, 0] * (2 * DOSAGE_UNIT)) + 0.5
        return result

    suspect = _near_step(units(h)) | (np.abs(h - 1.0) < _LIMIT_MARGIN).any(axis=1)
    if suspect.any():
        _exact(h, sub, suspect)
    if (h < 0.0).any() or (h > 1.0).any():
        raise DosageParseError("an HDS haplotype dosage lies outside [0, 1]")
    out[idx] = np.trunc(units(h)).astype(np.uint16)
