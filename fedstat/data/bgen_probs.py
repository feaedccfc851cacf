"""One BGEN v1.2/v1.3 genotype block to plink2's integer dosages, as ``plink2 --bgen`` computes them.

A layout-2 BGEN record stores, per sample, the probabilities of all but the last genotype (unphased)
or of the first allele on each haplotype (phased) as ``bits``-bit integers ``k`` meaning
``k / (2^bits - 1)``. plink2 2.00a3.5 turns them into dosages of the record's *first* allele in
1/16384 units with integer arithmetic only (``Bgen13GenoToPgenThread`` in ``plink2_import.cc``)::

    unphased diploid: x = 2 * P(first/first) + P(first/second)
    phased diploid:   x = P(hap1 = first) + P(hap2 = first)
    haploid:          x = 2 * P(first)                      (chrX males: dosage on the 0..2 scale)
    dosage            = (preadd + mult * x) >> postshift    = floor((16384 x + 2^(bits-1)) / (2^bits - 1))

with plink2's per-precision magic numbers (:data:`_MAGIC`), for ``bits`` 1 to 28. This module does
exactly that, with numpy integers on the raw values, never through floating point: a float route
lands one 1/16384 step away from plink2 in about 0.5% of 8-bit cells.

Which samples are missing follows plink2 too: a sample is read only when its ploidy byte is exactly
the ploidy being decoded (2, or 1) with the missing bit clear; any other byte is missing (with
variable ploidy, a missing sample still skips the values its ploidy says it stores). The hard call
plink2 stores next to a dosage (missing when the dosage is more than 0.1 from an integer) is derived
from the dosage by pgenlib's writer with plink2's default ``--hard-call-threshold`` 0.1, so it is
plink2's. Phase is read as plink2 reads it for dosages (the sum of the haplotypes) and not stored:
fedstat reads unphased hard calls and dosages only.

Refused, as plink2 refuses them (:class:`BgenBlockError`, which the caller turns into an error
naming the file and record): a sample count that differs from the header's, ploidy above 2 or a
ploidy byte outside 0..2, ``phased`` other than 0 or 1, precision 0 or above 28 bits, a block whose
length does not match what its samples store, and unphased probabilities summing above 1.

References
----------
BGEN v1.2 specification, "Genotype data block (Layout 2)": https://www.well.ox.ac.uk/~gav/bgen_format/;
plink-ng 2.00a3.5 ``plink2_import.cc``: ``Bgen13GenoToPgenThread``, ``Bgen13ConvertBiallelicPhased``,
``kBgenMagicNums``.
"""

from __future__ import annotations

import numpy as np

from fedstat.data.pgen_header import DOSAGE_UNIT

#: plink2's 1/16384 dosage unit, and the dosage of two copies.
DOSAGE_MID = DOSAGE_UNIT
DOSAGE_MAX = 2 * DOSAGE_MID
#: The highest probability precision plink2 2.00a3.5 imports.
MAX_BITS = 28

# plink2's kBgenMagicNums (preadd, mult, postshift), indexed by bit precision: for every
# 0 <= x <= 2 (2^bits - 1), (preadd + mult x) >> postshift = floor((16384 x + 2^(bits-1)) / (2^bits - 1)).
_MAGIC: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (0, 16384, 0),
    (349525, 2863311531, 19),
    (374491, 1227133513, 19),
    (1118481, 2290649225, 21),
    (1150051, 1108378657, 21),
    (2197016, 1090785345, 22),
    (1073345, 270549121, 21),
    (16843009, 2155905153, 25),
    (2109464, 134480385, 22),
    (33652832, 1074791425, 26),
    (262528, 4196353, 19),
    (2098688, 16781313, 22),
    (16783360, 67117057, 25),
    (134242305, 268451841, 28),
    (1073840131, 1073774593, 31),
    (4295032834, 2147516417, 33),
    (524300, 131073, 20),
    (2097176, 262145, 22),
    (8388656, 524289, 24),
    (33554528, 1048577, 26),
    (134217920, 2097153, 28),
    (536871296, 4194305, 30),
    (2147484416, 8388609, 32),
    (8589936128, 16777217, 34),
    (34359741440, 33554433, 36),
    (137438959616, 67108865, 38),
    (549755826176, 134217729, 40),
    (2199023280128, 268435457, 42),
)


class BgenBlockError(ValueError):
    """A genotype block plink2 would refuse; the message says why, without any value from it."""


def _values(probs: np.ndarray, bits: int, index: np.ndarray) -> np.ndarray:
    """The ``bits``-bit little-endian values at positions ``index`` of a packed probability array.

    ``probs`` is followed by at least 8 zero bytes (so that reading 5 bytes from the last value's
    first byte stays inside it). Returns uint64.
    """
    out: np.ndarray
    if bits == 8:
        out = probs[index].astype(np.uint64)
        return out
    if bits == 16:
        out = probs[: 2 * (probs.size // 2)].view("<u2")[index].astype(np.uint64)
        return out
    bitpos = index.astype(np.uint64) * np.uint64(bits)
    first = (bitpos >> np.uint64(3)).astype(np.intp)
    word = np.zeros(index.shape, dtype=np.uint64)
    # a value of at most 28 bits starting at bit 0..7 of a byte spans at most 5 bytes
    for i in range(5 if bits > 1 else 1):
        word |= probs[first + i].astype(np.uint64) << np.uint64(8 * i)
    out = (word >> (bitpos & np.uint64(7))) & np.uint64((1 << bits) - 1)
    return out


def first_allele_dosages(block: bytes, n_samples: int) -> np.ndarray:
    """plink2's dosage of the first allele for every sample of one decompressed biallelic block.

    Parameters
    ----------
    block : a layout-2 genotype block, decompressed (without the stored uncompressed length)
    n_samples : the sample count of the file's header

    Returns
    -------
    [array, shape: (n_samples,), dtype int32] dosages of the record's first allele in 1/16384 units
    (0 to 32768), -1 where the sample is missing

    Raises
    ------
    BgenBlockError
        If plink2 would refuse the block (see the module notes).
    """
    n = n_samples
    size = len(block)
    if size < 10 + n:
        raise BgenBlockError("genotype block shorter than its sample count needs")
    head = np.frombuffer(block, dtype=np.uint8, count=10 + n)
    if int.from_bytes(block[0:4], "little") != n:
        raise BgenBlockError("genotype block holds a different number of samples than the header")
    if int.from_bytes(block[4:6], "little") != 2:
        raise BgenBlockError("genotype block's allele count differs from the variant's (2)")
    min_ploidy, max_ploidy = int(head[6]), int(head[7])
    if min_ploidy > max_ploidy or max_ploidy > 63:
        raise BgenBlockError("invalid ploidy range")
    if max_ploidy > 2:
        raise BgenBlockError("ploidy above 2 (plink2 does not import it)")
    ploidy_byte = head[8 : 8 + n]
    phased, bits = int(head[8 + n]), int(head[9 + n])
    if phased > 1:
        raise BgenBlockError("'phased' flag is neither 0 nor 1")
    if bits == 0 or bits > 32:
        raise BgenBlockError("probability precision outside 1..32 bits")
    if bits > MAX_BITS:
        raise BgenBlockError(f"probability precision above {MAX_BITS} bits (plink2 does not import it)")
    mask = (1 << bits) - 1
    n_prob_bytes = size - 10 - n
    probs = np.zeros(n_prob_bytes + 8, dtype=np.uint8)
    probs[:n_prob_bytes] = np.frombuffer(block, dtype=np.uint8, offset=10 + n)

    out = np.full(n, -1, dtype=np.int32)
    if min_ploidy == max_ploidy:
        ploidy = max_ploidy
        if n_prob_bytes != -(-(bits * ploidy * n) // 8):
            raise BgenBlockError("genotype block length does not match its samples' probabilities")
        if ploidy == 0:
            return out
        valid = ploidy_byte == ploidy  # any other byte (the missing bit, another ploidy) is missing
        first_value = np.arange(n, dtype=np.int64) * ploidy
    else:
        # variable ploidy: 2 values for a diploid sample, 1 for a haploid one; a missing sample
        # skips as many as its ploidy (plink2 refuses a ploidy above 2 there)
        count = (ploidy_byte & 127).astype(np.int64)
        if (count > 2).any():
            raise BgenBlockError("a sample's ploidy byte is outside 0..2")
        valid = (ploidy_byte == 1) | (ploidy_byte == 2)
        first_value = np.zeros(n, dtype=np.int64)
        np.cumsum(count[:-1], out=first_value[1:])
        n_values = (8 * n_prob_bytes) // bits
        ends = first_value + np.where(valid, ploidy_byte, 0)
        if valid.any() and int(ends[valid].max()) > n_values:
            raise BgenBlockError("genotype block shorter than its samples' probabilities")
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return out
    diploid = ploidy_byte[idx] == 2
    v0 = _values(probs, bits, first_value[idx])
    v1 = np.zeros_like(v0)
    if diploid.any():
        v1[diploid] = _values(probs, bits, first_value[idx][diploid] + 1)
    if phased:
        # phased: v0, v1 = P(first allele) on haplotypes 1 and 2
        x = np.where(diploid, v0 + v1, np.uint64(2) * v0)
    else:
        # unphased: v0 = P(first/first), v1 = P(first/second); P(second/second) = 1 - v0 - v1
        if bool((v0[diploid] + v1[diploid] > np.uint64(mask)).any()):
            raise BgenBlockError("unphased genotype probabilities sum above 1")
        x = np.where(diploid, np.uint64(2) * v0 + v1, np.uint64(2) * v0)
    preadd, mult, postshift = _MAGIC[bits]
    # dosage = round(16384 x / (2^bits - 1)) the way plink2 computes it (x <= 2^29, mult < 2^32: no overflow)
    dosage = (np.uint64(preadd) + np.uint64(mult) * x) >> np.uint64(postshift)
    out[idx] = dosage.astype(np.int32)
    assert out.shape == (n,)
    return out
