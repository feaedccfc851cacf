"""What a ``.pgen`` header says about its variant records: here, which carry dosages.

A ``.pgen`` made from imputed data (``plink2 --vcf … dosage=DS``, ``--bgen``) stores, next to
each variant's hard calls, a dosage track for the samples whose dosage is not a hard call. plink2
uses those dosages in ``--freq``, ``--glm`` and ``--pca``; fedstat reads them where plink2 does,
so it must know when opening a file whether it has any
(:attr:`fedstat.data.genotypes.GenotypeSource.has_dosages`).

The header holds one record type per variant (``vrtype``); bits 5–6 (``0x60``) say a dosage
track follows the hard calls. Reading the types costs one byte per variant, not a pass over the
genotypes.

References
----------
PGEN specification, "Header" and "Variant record types":
https://github.com/chrchang/plink-ng/blob/master/pgen_spec/pgen_spec.pdf;
plink-ng ``pgenlib_read.cc`` ``PgfiInitPhase1`` / ``PgfiInitPhase2Ex``; ``VrtypeDosage`` in
``pgenlib_read.h``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fedstat.errors import GenotypeFileError

_MAGIC = bytes((0x6C, 0x1B))
_VBLOCK = 1 << 16  # variants per header block
_DOSAGE_BITS = 0x60  # VrtypeDosage

#: One allele's dosage in plink2's integer dosage units (a .pgen stores dosages in 1/16384 steps), in
#: which sums of dosages are exact integers. The one definition: readers and importers use this.
DOSAGE_UNIT = 16384


def dosage_variant_count(path: Path, n_variants: int, n_samples: int) -> int:
    """How many of a ``.pgen``'s variant records carry a dosage track.

    Parameters
    ----------
    path : the ``.pgen`` (an external index, mode ``0x20``/``0x21``, is read from ``<path>.pgi``)
    n_variants, n_samples : from the ``.pvar`` / ``.psam`` (the fixed-width modes store no count)

    Returns
    -------
    0 for hard calls only (PLINK1-style and fixed-width hard-call modes), ``n_variants`` for the
    fixed-width dosage modes, else the number of header record types with dosage bits set.

    Raises
    ------
    GenotypeFileError
        An unknown storage mode, or a header shorter than its own layout says.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(3)
            if len(head) < 3 or head[:2] != _MAGIC:
                raise GenotypeFileError(f"{path}: not a .pgen file (wrong magic bytes)")
            mode = head[2]
            if mode in (0x01, 0x02):
                return 0
            if mode in (0x03, 0x04):  # fixed-width unphased / phased dosage: every record has one
                return n_variants
            if mode in (0x10, 0x11):
                return _vrtype_dosage_count(fh, path, n_samples)
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if mode not in (0x20, 0x21):
        raise GenotypeFileError(f"{path}: unsupported .pgen storage mode 0x{mode:02x}")
    index = path.with_name(path.name + ".pgi")
    try:
        with index.open("rb") as fh:
            head = fh.read(3)
            if head[:2] != _MAGIC or head[2:3] not in (b"\x30", b"\x31"):
                raise GenotypeFileError(f"{index}: not the .pgen's index (wrong magic bytes)")
            return _vrtype_dosage_count(fh, path, n_samples)
    except OSError as exc:
        raise GenotypeFileError(f"{path}: its index {index.name} cannot be read ({exc.strerror})") from exc


def _read_exactly(fh: BinaryIO, n: int, path: Path) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise GenotypeFileError(f"{path}: truncated .pgen header")
    return data


def _vrtype_dosage_count(fh: BinaryIO, path: Path, n_samples: int) -> int:
    """Dosage records of a variable-width header; ``fh`` is just past the storage-mode byte."""
    n_variants, file_samples = struct.unpack("<II", _read_exactly(fh, 8, path))
    ctrl = _read_exactly(fh, 1, path)[0]
    storage = ctrl & 15
    if n_variants == 0:
        return 0
    if storage >= 8:
        # compact encodings pgenlib uses for tiny sample counts: decide from the records themselves
        return _dosage_count_by_reading(path, n_variants, file_samples or n_samples)
    if storage < 4:  # 4-bit record types cannot hold the dosage bits
        return 0
    len_bytes = storage - 3
    allele_ct_bytes = (ctrl >> 4) & 3
    nonref_stored = (ctrl >> 6) == 3
    fh.seek(8 * (-(-n_variants // _VBLOCK)), os.SEEK_CUR)  # the variant blocks' file offsets
    count = 0
    for start in range(0, n_variants, _VBLOCK):
        n = min(_VBLOCK, n_variants - start)
        types = np.frombuffer(_read_exactly(fh, n, path), dtype=np.uint8)
        count += int(np.count_nonzero(types & _DOSAGE_BITS))
        # then this block's record lengths, allele counts and provisional-REF flags
        fh.seek(n * (len_bytes + allele_ct_bytes) + (-(-n // 8) if nonref_stored else 0), os.SEEK_CUR)
    return count


def _dosage_count_by_reading(path: Path, n_variants: int, n_samples: int) -> int:
    """Variants where some dosage differs from its hard call, by reading both (tiny sample counts)."""
    import pgenlib

    try:
        reader = pgenlib.PgenReader(os.fsencode(path), raw_sample_ct=n_samples, variant_ct=n_variants)
    except RuntimeError as exc:
        raise GenotypeFileError(f"{path}: cannot open ({exc})") from exc
    try:
        count = 0
        for start in range(0, n_variants, _VBLOCK):
            stop = min(n_variants, start + _VBLOCK)
            hard = np.empty((stop - start, n_samples), dtype=np.int8)
            dosage = np.empty((stop - start, n_samples), dtype=np.float64)
            reader.read_range(start, stop, hard)
            reader.read_dosages_range(start, stop, dosage)
            count += int(np.count_nonzero((hard.astype(np.float64) != dosage).any(axis=1)))
        return count
    except RuntimeError as exc:
        raise GenotypeFileError(f"{path}: truncated or corrupt ({exc})") from exc
    finally:
        reader.close()
