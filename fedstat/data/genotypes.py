"""Genotype sources: PLINK1 (.bed), PLINK2 (.pgen), VCF/BCF and BGEN, read in variant blocks.

Every source is read through :class:`GenotypeSource`, which yields ALT allele counts (0, 1, 2;
-9 missing) as int8 blocks of bounded size. PLINK files are read with pgenlib directly; a VCF or
BCF is first converted once to a cached ``.pgen`` (:mod:`fedstat.data.vcf_cache`), a BGEN to a
cached dosage ``.pgen`` as ``plink2 --bgen`` imports it (:mod:`fedstat.data.bgen_cache`), and then
read the same way, so no job ever parses text genotypes or BGEN probabilities.

Imputed dosages (a ``.pgen`` dosage track, as ``plink2 --vcf … dosage=DS`` or ``--bgen`` writes
it, or as the VCF cache holds it when the dataset sets ``vcf_dosage``) are read beside the hard calls: a block of float32 dosages costs 4 bytes per genotype against
the hard calls' 1, and only the computations that use dosages as plink2 does (``--freq``,
``--glm``, ``--pca``) ask for them; a file without a dosage track is read as hard calls throughout.

Allele convention (plink2): in a ``.bim``, column 5 (A1) is ALT and column 6 (A2) is REF;
pgenlib returns counts of allele 1 (ALT) for both ``.bed`` and ``.pgen``.

Multiallelic records are split into biallelic SNV records as ``bcftools norm -m-`` splits them
(:mod:`fedstat.data.multiallelic`): a ``.pvar`` row with ALT ``C,T`` is two rows of :attr:`variants`,
read with pgenlib as the counts of ALT 1 and of ALT 2. Variant indices given to
:meth:`GenotypeSource.read_blocks` refer to rows of :attr:`variants`.

References
----------
plink2 file formats: https://www.cog-genomics.org/plink/2.0/formats
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fedstat.data.bgen_cache import ensure_bgen_cache
from fedstat.data.import_cache import DEFAULT_IMPORT, ImportOptions
from fedstat.data.multiallelic import read_split_block, snv_alts
from fedstat.data.pgen_header import DOSAGE_UNIT as DOSAGE_UNIT  # re-exported: readers' unit
from fedstat.data.pgen_header import dosage_variant_count
from fedstat.data.variants import VariantTable, normalise_chrom
from fedstat.data.vcf_cache import ensure_vcf_cache
from fedstat.errors import GenotypeFileError, InputError

#: File names a site directory may hold its genotypes under (exactly one of them).
SOURCE_NAMES = (
    "genotypes.bed",
    "genotypes.pgen",
    "genotypes.vcf.gz",
    "genotypes.vcf",
    "genotypes.bcf",
    "genotypes.bgen",
)

#: Default directory, next to a VCF, for its binary cache when no ``cache_dir`` is given.
DEFAULT_CACHE_DIRNAME = ".fedstat-cache"

#: What a genotype block may hold (:meth:`GenotypeSource.read_blocks` ``values=``).
HARDCALLS, DOSAGES, BOTH = "hardcalls", "dosages", "both"
GENOTYPE_VALUES = (HARDCALLS, DOSAGES, BOTH)

_BED_MAGIC = bytes((0x6C, 0x1B, 0x01))
_PVAR_REQUIRED = ("#CHROM", "POS", "ID", "REF", "ALT")


@dataclass(frozen=True)
class SampleIds:
    """Sample identifiers of a genotype source, in file order.

    Attributes
    ----------
    fid : family IDs, or ``None`` when the source has none (``#IID``-only .psam, VCF)
    iid : individual IDs (VCF: the header's sample names)
    """

    fid: tuple[str, ...] | None
    iid: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.iid)


@dataclass(frozen=True)
class GenotypeBlock:
    """A block's hard calls and, where the file has them, its dosages (``values="both"``).

    Attributes
    ----------
    hardcalls : [array, shape: (b, n), dtype int8] ALT counts 0/1/2, -9 missing
    dosages : [array, shape: (b, n), dtype float32] ALT dosages, -9 where neither a dosage nor a
        hard call is present; None for a file without a dosage track (the hard calls are its dosages)
    """

    hardcalls: np.ndarray
    dosages: np.ndarray | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.hardcalls.shape)


@dataclass(frozen=True)
class _VariantRows:
    """A parsed .bim / .pvar: exposed (biallelic) variants and where they sit in the file."""

    variants: VariantTable
    file_rows: np.ndarray  # [shape: (n_variants,), dtype uint32] row in the .bed/.pgen
    n_file_rows: int
    multiallelic_skipped: int
    allele_idx_offsets: np.ndarray | None  # [shape: (n_file_rows + 1,), uintp] if multiallelic
    allele_idx: np.ndarray | None = None  # [shape: (n_variants,), uint32] ALT read per row; None: all 1
    multiallelic_split: int = 0
    non_snv_skipped: int = 0


# ---------------------------------------------------------------------------------------------
# text companions: .bim / .pvar / .fam / .psam


def _open_text(path: Path, what: str) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return fh.read().splitlines()
    except FileNotFoundError as exc:
        raise GenotypeFileError(f"missing companion file {path} ({what})") from exc
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise GenotypeFileError(f"{path}: not UTF-8 text") from exc


def _parse_pos(token: str, path: Path, lineno: int) -> int:
    try:
        pos = int(token)
    except ValueError:
        raise GenotypeFileError(f"{path}: line {lineno}: position is not an integer") from None
    if pos < 0:
        raise GenotypeFileError(f"{path}: line {lineno}: negative position")
    return pos


def _variant_rows(
    path: Path,
    lineno_fields: list[tuple[int, list[str]]],
    cols: tuple[int, int, int, int, int],
    *,
    split: bool = False,
) -> _VariantRows:
    """Build the exposed table from split lines; ``cols`` = (chrom, pos, id, ref, alt). Chromosome
    codes are read as plink2 reads them (:func:`~fedstat.data.variants.normalise_chrom`), so sites
    writing ``chr22`` and ``22`` hold the same variants. With ``split``, a multiallelic row becomes
    one exposed row per SNV ALT (:func:`~fedstat.data.multiallelic.snv_alts`), else it is skipped."""
    c_chrom, c_pos, c_id, c_ref, c_alt = cols
    chroms: dict[str, str] = {}  # as written -> plink2's code, one str object per chromosome
    chrom: list[str] = []
    pos: list[int] = []
    ids: list[str] = []
    ref: list[str] = []
    alt: list[str] = []
    rows: list[int] = []
    which: list[int] = []  # per exposed row, the ALT read (1 unless split)
    allele_ct = np.empty(len(lineno_fields), dtype=np.uintp)
    n_multi = n_split = n_non_snv = 0
    for row, (lineno, f) in enumerate(lineno_fields):
        a = f[c_alt]
        n_alt = a.count(",") + 1
        allele_ct[row] = n_alt + 1
        p = _parse_pos(f[c_pos], path, lineno)
        if n_alt > 1:
            n_multi += 1
            if not split:
                continue
            n_split += 1
            kept, n_bad = snv_alts(f[c_ref], a.split(","))
            n_non_snv += n_bad
        else:
            kept = [(1, a)]
        c = f[c_chrom]
        code = chroms.get(c)
        if code is None:
            code = chroms[c] = normalise_chrom(c)
        for k, allele in kept:
            chrom.append(code)
            pos.append(p)
            ids.append(f[c_id])
            ref.append(f[c_ref])
            alt.append(allele)
            rows.append(row)
            which.append(k)
    n_file = len(lineno_fields)
    offsets = None
    if n_multi:
        offsets = np.zeros(n_file + 1, dtype=np.uintp)
        np.cumsum(allele_ct, out=offsets[1:])
    return _VariantRows(
        variants=VariantTable.from_lists(chrom, pos, ids, ref, alt),
        file_rows=np.asarray(rows, dtype=np.uint32),
        n_file_rows=n_file,
        multiallelic_skipped=n_multi - n_split,
        allele_idx_offsets=offsets,
        allele_idx=np.asarray(which, dtype=np.uint32) if n_split else None,
        multiallelic_split=n_split,
        non_snv_skipped=n_non_snv,
    )


def _read_bim(path: Path) -> _VariantRows:
    """.bim: CHROM ID CM POS A1(=ALT) A2(=REF), whitespace-separated, no header."""
    lines = _open_text(path, "variant table of a .bed")
    parsed: list[tuple[int, list[str]]] = []
    for i, line in enumerate(lines):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise GenotypeFileError(f"{path}: line {i + 1}: {len(fields)} columns, expected 6")
        parsed.append((i + 1, fields))
    return _variant_rows(path, parsed, (0, 3, 1, 5, 4))


def _read_pvar(path: Path, *, split: bool = False) -> _VariantRows:
    """.pvar with a ``#CHROM`` header (columns by name), or header-less in .bim order; ``split``:
    multiallelic rows are split (a ``.pgen``'s), else skipped."""
    lines = _open_text(path, "variant table of a .pgen")
    i = 0
    while i < len(lines) and (lines[i].startswith("##") or not lines[i].strip()):
        i += 1
    cols: tuple[int, int, int, int, int] | None = None
    n_cols = 0
    if i < len(lines) and lines[i].startswith("#CHROM"):
        header = lines[i].split()
        missing = [name for name in _PVAR_REQUIRED if name not in header]
        if missing:
            raise GenotypeFileError(f"{path}: line {i + 1}: header lacks column(s) {', '.join(missing)}")
        c = [header.index(name) for name in _PVAR_REQUIRED]
        cols = (c[0], c[1], c[2], c[3], c[4])
        n_cols = len(header)
        i += 1
    parsed: list[tuple[int, list[str]]] = []
    for j in range(i, len(lines)):
        fields = lines[j].split()
        if not fields:
            continue
        if cols is None:  # header-less: .bim order, CM optional
            if len(fields) not in (5, 6):
                raise GenotypeFileError(
                    f"{path}: line {j + 1}: {len(fields)} columns, expected 5 or 6 (header-less .pvar in .bim order)"
                )
            n_cols = len(fields)
            cols = (0, 3, 1, 5, 4) if n_cols == 6 else (0, 2, 1, 4, 3)
        if len(fields) != n_cols:
            raise GenotypeFileError(f"{path}: line {j + 1}: {len(fields)} columns, expected {n_cols}")
        parsed.append((j + 1, fields))
    if cols is None:
        cols = (0, 1, 2, 3, 4)
    return _variant_rows(path, parsed, cols, split=split)


def _check_unique(path: Path, keys: list[tuple[str, str]], linenos: list[int]) -> None:
    first: dict[tuple[str, str], int] = {}
    for key, lineno in zip(keys, linenos, strict=True):
        if key in first:
            raise GenotypeFileError(f"{path}: line {lineno}: duplicate sample ID (first seen on line {first[key]})")
        first[key] = lineno


def _read_fam(path: Path) -> SampleIds:
    """.fam: FID IID PAT MAT SEX PHENO, whitespace-separated, no header."""
    lines = _open_text(path, "sample table of a .bed")
    fid: list[str] = []
    iid: list[str] = []
    linenos: list[int] = []
    for i, line in enumerate(lines):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise GenotypeFileError(f"{path}: line {i + 1}: {len(fields)} columns, expected 6")
        fid.append(fields[0])
        iid.append(fields[1])
        linenos.append(i + 1)
    _check_unique(path, list(zip(fid, iid, strict=True)), linenos)
    return SampleIds(fid=tuple(fid), iid=tuple(iid))


def _read_psam(path: Path) -> SampleIds:
    """.psam with a ``#FID IID …`` / ``#IID …`` header, or header-less in .fam order."""
    lines = _open_text(path, "sample table of a .pgen")
    i = 0
    while i < len(lines) and (lines[i].startswith("##") or not lines[i].strip()):
        i += 1
    if i < len(lines) and lines[i].startswith("#"):
        header = lines[i].split()
        header[0] = header[0][1:]
        if header[:2] == ["FID", "IID"]:
            c_fid: int | None = 0
            c_iid = 1
        elif header[:1] == ["IID"]:
            c_fid, c_iid = None, 0
        else:
            raise GenotypeFileError(f"{path}: line {i + 1}: header must start with '#FID IID' or '#IID'")
        n_cols = len(header)
        i += 1
    else:  # header-less .psam is a .fam
        c_fid, c_iid, n_cols = 0, 1, 6
    fid: list[str] = []
    iid: list[str] = []
    linenos: list[int] = []
    for j in range(i, len(lines)):
        fields = lines[j].split()
        if not fields:
            continue
        if len(fields) != n_cols:
            raise GenotypeFileError(f"{path}: line {j + 1}: {len(fields)} columns, expected {n_cols}")
        fid.append(fields[c_fid] if c_fid is not None else "")
        iid.append(fields[c_iid])
        linenos.append(j + 1)
    _check_unique(path, list(zip(fid, iid, strict=True)), linenos)
    return SampleIds(fid=tuple(fid) if c_fid is not None else None, iid=tuple(iid))


# ---------------------------------------------------------------------------------------------
# the source


def _pgenlib_message(exc: RuntimeError) -> str:
    msg = exc.args[0] if exc.args else exc
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return " ".join(str(msg).split())


class GenotypeSource:
    """An opened genotype file set, read in variant blocks.

    Create with :func:`open_genotypes`. Usable as a context manager.

    Attributes
    ----------
    format : ``"bed"``, ``"pgen"``, ``"vcf"``, ``"bcf"`` or ``"bgen"``
    path : the file the user pointed at (e.g. ``genotypes.bed``, ``genotypes.vcf.gz``)
    samples : sample IDs from the .fam / .psam / VCF header
    variants : the exposed (biallelic) variants, in file order, a split multiallelic record's in ALT order
    multiallelic_split : multiallelic records split into biallelic ones (:mod:`fedstat.data.multiallelic`)
    multiallelic_skipped : multiallelic records skipped whole, not split (a ``.bim`` row with a comma
        in ALT, a ``.pgen`` that also has dosages, BGEN, a VCF read with ``vcf_dosage = "HDS"``)
    non_snv_skipped : biallelic records, original or from a split, skipped as not SNVs (VCF/BCF/BGEN;
        for PLINK input only the alleles of split records, since its biallelic rows are all kept)
    has_dosages : the file carries imputed dosages (a ``.pgen`` dosage track) besides hard calls;
        :meth:`read_blocks` returns them with ``values="dosages"`` or ``"both"``
    genotype_path : the file actually read (the cached ``.pgen`` for VCF/BCF/BGEN)

    Notes
    -----
    Each :meth:`read_blocks` call owns a pgenlib reader, closed when its iterator finishes
    or is closed. One iterator must not be shared between threads; separate calls may run
    in separate threads.
    """

    def __init__(
        self,
        *,
        format: str,  # noqa: A002 - the documented attribute name
        path: Path,
        genotype_path: Path,
        samples: SampleIds,
        rows: _VariantRows,
        non_snv_skipped: int = 0,
        has_dosages: bool = False,
    ) -> None:
        self.format = format
        self.path = path
        self.genotype_path = genotype_path
        self.samples = samples
        self.variants = rows.variants
        self.multiallelic_split = rows.multiallelic_split
        self.multiallelic_skipped = rows.multiallelic_skipped
        self.non_snv_skipped = non_snv_skipped + rows.non_snv_skipped
        self.has_dosages = has_dosages
        self._rows = rows
        self._closed = False

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def n_variants(self) -> int:
        return len(self.variants)

    def __repr__(self) -> str:
        return (
            f"GenotypeSource(format={self.format!r}, path={str(self.path)!r}, "
            f"n_samples={self.n_samples}, n_variants={self.n_variants})"
        )

    def _reader(self, sample_subset: np.ndarray | None = None) -> Any:
        import pgenlib

        kwargs: dict[str, Any] = {
            "raw_sample_ct": self.n_samples,
            "variant_ct": self._rows.n_file_rows,
        }
        if sample_subset is not None:
            kwargs["sample_subset"] = sample_subset
        if self._rows.allele_idx_offsets is not None:
            kwargs["allele_idx_offsets"] = self._rows.allele_idx_offsets
        try:
            return pgenlib.PgenReader(os.fsencode(self.genotype_path), **kwargs)
        except RuntimeError as exc:
            raise GenotypeFileError(f"{self.genotype_path}: cannot open ({_pgenlib_message(exc)})") from exc

    def check_readable(self) -> None:
        """Open the file and decode its last variant, which catches most truncation early."""
        if self._rows.n_file_rows == 0:
            return
        reader = self._reader()
        try:
            last = self._rows.n_file_rows - 1
            buf = np.empty((1, self.n_samples), dtype=np.int8)
            reader.read_range(last, last + 1, buf)
        except RuntimeError as exc:
            raise GenotypeFileError(f"{self.genotype_path}: truncated or corrupt ({_pgenlib_message(exc)})") from exc
        finally:
            reader.close()

    def read_blocks(
        self,
        variant_index: np.ndarray,
        *,
        flip: np.ndarray | None = None,
        sample_index: np.ndarray | None = None,
        block_size: int = 4096,
        values: str = HARDCALLS,
    ) -> Iterator[tuple[int, Any]]:
        """Read the requested variants in consecutive blocks.

        Parameters
        ----------
        variant_index : [array, shape: (n_requested,), integer] rows of :attr:`variants` to
            read, in the order wanted (any order, repeats allowed)
        flip : [array, shape: (n_requested,), bool], optional; where true the genotype is
            returned as ``2 - g`` (REF and ALT exchanged); missing stays -9
        sample_index : [array, shape: (n_selected,), integer], optional; sample columns to
            return, in the order wanted (default: all samples in file order)
        block_size : maximum number of variants per block
        values : what each block holds (:data:`GENOTYPE_VALUES`): ``"hardcalls"`` (default),
            ``"dosages"`` (the ALT dosages where the file has a dosage track, as plink2's ``--glm``
            reads them; the hard calls of a file without one), or ``"both"``

        Yields
        ------
        offset : int
            position of the block's first row within ``variant_index``
        block : a fresh value per block, ``n_in_block <= block_size`` rows:

            - hardcalls: [array, shape: (n_in_block, n_selected), dtype int8] ALT allele counts
              0/1/2, -9 missing;
            - dosages: from a file with dosages, [array, same shape, dtype float32] ALT dosages
              in [0, 2] (multiples of 1/16384, a hard call where no dosage is stored), -9 where
              neither is present; from one without, the int8 hard calls;
            - both: a :class:`GenotypeBlock` of the two (``dosages`` None without a dosage track).

        Raises
        ------
        InputError
            (at call time) if an index is out of range or the arrays' shapes disagree.
        GenotypeFileError
            (while iterating) if the file turns out to be truncated or corrupt.

        Notes
        -----
        Memory is bounded by ``block_size * n_selected`` bytes, not by the number of variants.
        pgenlib needs an increasing sample subset; an unsorted ``sample_index`` is read sorted
        and its columns reordered with one numpy take per block.
        """
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        if block_size < 1:
            raise InputError(f"block_size must be positive, got {block_size}")
        if values not in GENOTYPE_VALUES:
            raise InputError(f"values must be one of {', '.join(GENOTYPE_VALUES)}, got {values!r}")
        vidx = np.asarray(variant_index)
        if vidx.ndim != 1 or not (vidx.size == 0 or np.issubdtype(vidx.dtype, np.integer)):
            raise InputError("variant_index must be a 1-d integer array")
        if vidx.size and (vidx.min() < 0 or vidx.max() >= self.n_variants):
            raise InputError(f"variant_index out of range for {self.path} ({self.n_variants} variants)")
        file_rows = self._rows.file_rows[vidx.astype(np.int64)]
        alleles = None if self._rows.allele_idx is None else self._rows.allele_idx[vidx.astype(np.int64)]
        flips = None
        if flip is not None:
            flips = np.asarray(flip, dtype=bool)
            if flips.shape != vidx.shape:
                raise InputError(f"flip has shape {flips.shape}, variant_index has shape {vidx.shape}")
        subset = order = None
        n_cols = self.n_samples
        if sample_index is not None:
            sidx = np.asarray(sample_index)
            if sidx.ndim != 1 or not (sidx.size == 0 or np.issubdtype(sidx.dtype, np.integer)):
                raise InputError("sample_index must be a 1-d integer array")
            if sidx.size and (sidx.min() < 0 or sidx.max() >= self.n_samples):
                raise InputError(f"sample_index out of range for {self.path} ({self.n_samples} samples)")
            n_cols = sidx.size
            subset, inverse = np.unique(sidx, return_inverse=True)
            subset = subset.astype(np.uint32)
            if subset.size != sidx.size or not np.array_equal(subset, sidx):
                order = inverse.reshape(-1)  # column j of the result = subset column order[j]
        blocks: Iterator[tuple[int, Any]] = self._blocks(
            file_rows, alleles, flips, subset, order, n_cols, block_size, dosages=False
        )
        if values == HARDCALLS or not self.has_dosages:
            return blocks if values != BOTH else ((o, GenotypeBlock(b, None)) for o, b in blocks)
        doses = self._blocks(file_rows, alleles, flips, subset, order, n_cols, block_size, dosages=True)
        if values == DOSAGES:
            return doses
        return ((o, GenotypeBlock(h, d)) for (o, h), (_, d) in zip(blocks, doses, strict=True))

    def _blocks(
        self,
        file_rows: np.ndarray,
        alleles: np.ndarray | None,
        flips: np.ndarray | None,
        subset: np.ndarray | None,
        order: np.ndarray | None,
        n_cols: int,
        block_size: int,
        *,
        dosages: bool,
    ) -> Iterator[tuple[int, np.ndarray]]:
        n = file_rows.size
        dtype = np.float32 if dosages else np.int8
        if n == 0:
            return
        if n_cols == 0:  # an empty cohort: nothing to read, shapes still consistent
            for start in range(0, n, block_size):
                yield start, np.empty((min(n, start + block_size) - start, 0), dtype=dtype)
            return
        full = subset is not None and subset.size == self.n_samples
        reader = self._reader(None if subset is None or full else subset)
        n_read = self.n_samples if subset is None else subset.size
        try:
            for start in range(0, n, block_size):
                stop = min(n, start + block_size)
                rows = file_rows[start:stop]
                wide = rows.astype(np.int64)
                block = np.empty((stop - start, n_read), dtype=dtype)
                split = alleles is not None and bool((alleles[start:stop] > 1).any())
                try:
                    if split:  # a split multiallelic record: each row's own ALT, one read per ALT index
                        assert alleles is not None
                        read = reader.read_dosages_list if dosages else reader.read_list
                        read_split_block(read, rows, alleles[start:stop], block)
                    elif wide[-1] - wide[0] == wide.size - 1 and bool((np.diff(wide) == 1).all()):
                        # one run of consecutive file rows: the faster range read
                        (reader.read_dosages_range if dosages else reader.read_range)(
                            int(wide[0]), int(wide[-1]) + 1, block
                        )
                    else:
                        rows32 = np.ascontiguousarray(rows, dtype=np.uint32)
                        (reader.read_dosages_list if dosages else reader.read_list)(rows32, block)
                except RuntimeError as exc:
                    raise GenotypeFileError(
                        f"{self.genotype_path}: truncated or corrupt, reading file rows "
                        f"{int(rows.min()) + 1}..{int(rows.max()) + 1} "
                        f"({_pgenlib_message(exc)})"
                    ) from exc
                if order is not None:
                    block = block[:, order]
                if flips is not None:
                    f = flips[start:stop]
                    if f.any():
                        sub = block[f]
                        # g -> 2 - g on flipped rows (exact for dosages too), missing (-9) unchanged
                        block[f] = np.where(sub >= 0, 2 - sub, sub)
                assert block.shape == (stop - start, n_cols)
                yield start, block
        finally:
            reader.close()

    def close(self) -> None:
        """Mark the source closed; later :meth:`read_blocks` calls raise ValueError."""
        self._closed = True

    def __enter__(self) -> GenotypeSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# opening


def find_genotype_source(directory: str | Path) -> Path:
    """The one genotype file in a site directory.

    Parameters
    ----------
    directory : a site data directory holding exactly one of :data:`SOURCE_NAMES`

    Raises
    ------
    GenotypeFileError
        If the directory holds none of them, or more than one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise GenotypeFileError(f"{directory}: not a directory")
    found = [directory / name for name in SOURCE_NAMES if (directory / name).is_file()]
    if not found:
        raise GenotypeFileError(f"{directory}: no genotype file (expected one of {', '.join(SOURCE_NAMES)})")
    if len(found) > 1:
        raise GenotypeFileError(
            f"{directory}: more than one genotype file ({', '.join(p.name for p in found)}); keep exactly one"
        )
    return found[0]


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".bed"):
        return "bed"
    if name.endswith(".pgen"):
        return "pgen"
    if name.endswith((".vcf", ".vcf.gz", ".vcf.bgz")):
        return "vcf"
    if name.endswith(".bcf"):
        return "bcf"
    if name.endswith(".bgen"):
        return "bgen"
    raise GenotypeFileError(f"{path}: unknown genotype format (expected .bed, .pgen, .vcf, .vcf.gz, .bcf or .bgen)")


def _companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.name[: -len(path.suffix)] + suffix)


def _check_bed(path: Path, n_variants: int, n_samples: int, bim: Path, fam: Path) -> None:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            magic = fh.read(3)
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if magic[:2] != _BED_MAGIC[:2]:
        raise GenotypeFileError(f"{path}: not a PLINK .bed file (wrong magic bytes)")
    if magic != _BED_MAGIC:
        raise GenotypeFileError(f"{path}: sample-major PLINK .bed is not supported (convert with plink --make-bed)")
    expected = 3 + n_variants * (-(-n_samples // 4))
    if size != expected:
        raise GenotypeFileError(
            f"{path}: {size} bytes, but {bim.name} ({n_variants} variants) and {fam.name} "
            f"({n_samples} samples) need {expected}"
        )


def _check_pgen_header(path: Path, n_variants: int, n_samples: int, pvar: Path, psam: Path) -> None:
    try:
        with path.open("rb") as fh:
            head = fh.read(11)
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if head[:2] != _BED_MAGIC[:2]:
        raise GenotypeFileError(f"{path}: not a .pgen file (wrong magic bytes)")
    if len(head) == 11 and head[2] in (0x10, 0x11):
        file_variants, file_samples = struct.unpack("<II", head[3:11])
        if file_variants != n_variants:
            raise GenotypeFileError(f"{path}: holds {file_variants} variants, {pvar.name} lists {n_variants}")
        if file_samples != n_samples:
            raise GenotypeFileError(f"{path}: holds {file_samples} samples, {psam.name} lists {n_samples}")


def _open_bgen(path: Path, cache_dir: str | Path | None, options: ImportOptions) -> GenotypeSource:
    """A BGEN through its cached dosage ``.pgen``; the ``.sample`` next to it is used when present."""
    cdir = Path(cache_dir) if cache_dir is not None else path.parent / DEFAULT_CACHE_DIRNAME
    sample = _companion(path, ".sample")
    info = ensure_bgen_cache(path, cdir, ref=options.bgen_ref, sample_path=sample if sample.is_file() else None)
    rows = _read_pvar(info.pvar)
    samples = _read_psam(info.psam)
    _check_pgen_header(info.pgen, rows.n_file_rows, len(samples), info.pvar, info.psam)
    n_dosage = dosage_variant_count(info.pgen, rows.n_file_rows, len(samples))
    rows = _VariantRows(rows.variants, rows.file_rows, rows.n_file_rows, info.multiallelic_skipped, None)
    return GenotypeSource(
        format="bgen",
        path=path,
        genotype_path=info.pgen,
        samples=samples,
        rows=rows,
        non_snv_skipped=info.non_snv_skipped,
        has_dosages=n_dosage > 0,
    )


def open_genotypes(
    directory_or_file: str | Path,
    *,
    cache_dir: str | Path | None = None,
    threads: int = 1,
    options: ImportOptions = DEFAULT_IMPORT,
) -> GenotypeSource:
    """Open a site's genotypes.

    Parameters
    ----------
    directory_or_file : a site directory (see :func:`find_genotype_source`) or a ``.bed``,
        ``.pgen``, ``.vcf``, ``.vcf.gz``, ``.bcf`` or ``.bgen`` file; companions (``.bim/.fam``,
        ``.pvar/.psam``; for a BGEN, an optional ``.sample``) must sit next to it under the same stem
    cache_dir : VCF/BCF/BGEN only: where the binary cache lives (default: a
        ``.fedstat-cache`` directory next to the source)
    threads : VCF/BCF only: htslib threads used when the cache is (re)built
    options : how a VCF or BGEN is imported (:class:`~fedstat.data.import_cache.ImportOptions`);
        a VCF's dosages are read only with ``vcf_dosage`` set to the field holding them

    Returns
    -------
    GenotypeSource

    Raises
    ------
    GenotypeFileError
        If a file is missing, malformed or inconsistent with its companions (naming the file
        and line), or the genotype file is truncated or corrupt; or if a VCF/BCF carries imputed
        dosages (``DS``/``GP``/``HDS``) and ``options.vcf_dosage`` is unset: such a file is refused,
        never hard-called without a word, and the message says which ``vcf_dosage`` to set
        (``"DS"`` etc. imports the dosages exactly as ``plink2 --vcf FILE dosage=DS`` does, into the
        cache's dosage track; ``"GT"`` reads the hard calls only); or if a VCF has no hard calls at
        all (no ``GT``) and no dosages to import, or a dosage it imports is malformed. A ``.pgen``
        dosage track, the VCF cache's included, is read (:attr:`GenotypeSource.has_dosages`).
        A BGEN (v1.2/v1.3) is converted once to a cached dosage ``.pgen`` equal to ``plink2 --bgen F
        ref-first|ref-last --sample F.sample --make-pgen``'s (:mod:`fedstat.data.bgen_cache`); it is
        refused unless ``options.bgen_ref`` says which allele is REF, and its ``.sample`` (needed
        when the BGEN embeds no IDs) must agree with the BGEN's sample count and IDs.
    """
    target = Path(directory_or_file)
    path = find_genotype_source(target) if target.is_dir() else target
    fmt = _format_of(path)
    if not path.is_file():
        raise GenotypeFileError(f"{path}: no such genotype file")

    if fmt == "bed":
        bim, fam = _companion(path, ".bim"), _companion(path, ".fam")
        rows = _read_bim(bim)
        samples = _read_fam(fam)
        _check_bed(path, rows.n_file_rows, len(samples), bim, fam)
        source = GenotypeSource(format=fmt, path=path, genotype_path=path, samples=samples, rows=rows)
    elif fmt == "pgen":
        pvar, psam = _companion(path, ".pvar"), _companion(path, ".psam")
        rows = _read_pvar(pvar, split=True)
        samples = _read_psam(psam)
        _check_pgen_header(path, rows.n_file_rows, len(samples), pvar, psam)
        n_dosage = dosage_variant_count(path, rows.n_file_rows, len(samples))
        if n_dosage and rows.multiallelic_split:  # no reference for split dosages: skip those records
            rows = _read_pvar(pvar)
        source = GenotypeSource(
            format=fmt, path=path, genotype_path=path, samples=samples, rows=rows, has_dosages=n_dosage > 0
        )
    elif fmt == "bgen":
        source = _open_bgen(path, cache_dir, options)
        samples = source.samples
    else:
        cdir = Path(cache_dir) if cache_dir is not None else path.parent / DEFAULT_CACHE_DIRNAME
        info = ensure_vcf_cache(path, cdir, threads=threads, dosage=options.vcf_dosage)
        rows = _read_pvar(info.pvar)
        samples = _read_psam(info.psam)
        _check_pgen_header(info.pgen, rows.n_file_rows, len(samples), info.pvar, info.psam)
        rows = _VariantRows(
            variants=rows.variants,
            file_rows=rows.file_rows,
            n_file_rows=rows.n_file_rows,
            multiallelic_skipped=info.multiallelic_skipped,
            allele_idx_offsets=None,
            multiallelic_split=info.multiallelic_split,
        )
        source = GenotypeSource(
            format=fmt,
            path=path,
            genotype_path=info.pgen,
            samples=samples,
            rows=rows,
            non_snv_skipped=info.non_snv_skipped,
            has_dosages=dosage_variant_count(info.pgen, rows.n_file_rows, len(samples)) > 0,
        )
    if len(samples) == 0:
        raise GenotypeFileError(f"{path}: no samples")
    source.check_readable()
    return source
