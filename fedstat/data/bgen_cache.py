"""A binary cache of a BGEN v1.2 / v1.3 file, imported as ``plink2 --bgen F ref-first|ref-last --sample S``.

A site's BGEN (UK Biobank's imputed data: v1.2, 8-bit probabilities, zlib; v1.3: zstd) is converted
once into plink2 files (``.pgen/.pvar/.psam``) with a dosage track, and every later job reads the
``.pgen`` with pgenlib. The converted genotypes are plink2 2.00a3.5's own: pgenlib reads the same
hard calls and the same dosages from this cache as from ``plink2 --bgen … --make-pgen``'s output
(:mod:`fedstat.data.bgen_probs` does plink2's integer arithmetic on the raw probabilities).

The ``bgen`` package (jeremymcrae) reads the header, the sample IDs and each record's variant fields
and bytes; the genotype block itself is decoded here, since ``bgen`` returns float probabilities and
plink2 works on the stored integers.

Which allele is REF: a BGEN record has no REF, so the dataset says which of its two alleles is,
``bgen_ref = "first"`` or ``"last"`` in ``site.toml`` (:attr:`ImportOptions.bgen_ref`), as plink2
needs ``ref-first`` or ``ref-last``. A BGEN without it is refused; plink2's ``ref-unknown`` is not
supported. Note that ``plink2 --export bgen-1.x`` writes ALT first unless told ``ref-first``.

Sample IDs: from ``genotypes.sample`` next to the BGEN when present (UK Biobank's files have no IDs
of their own), else from the IDs embedded in the BGEN; with both, they must agree (an embedded ID
may also be ``FID_IID``, which ``plink2 --export bgen`` writes for a sample with a family ID). As plink2 reads
a ``.sample``: IID is column ``ID_2`` (or the first column when the second is not ``ID_2``), FID is
``ID_1`` unless every ``ID_1`` is ``0``, and a ``sex`` column (type ``D``: 1 male, 2 female,
0 / NA unknown) becomes the ``.psam``'s SEX column (``NA`` without one). Other ``.sample``
columns (phenotypes, ``missing``) are not carried over: phenotypes come from ``samples.tsv``.

What is kept: biallelic SNVs (each allele one of A, C, G, T; stored upper-case), as in the VCF
cache. Multiallelic records (which plink2 2.00a3.5 skips too: "multiallelic variants skipped (not
yet supported)"; fedstat does not split them, :mod:`fedstat.data.multiallelic`) and other biallelic
records are skipped and counted. Chromosome codes are written as plink2 writes them (``chr1`` -> ``1``,
``NA`` -> ``0``; :func:`~fedstat.data.variants.normalise_chrom`), the variant ID is the record's
rsid field (plink2 ignores the SNPID field).

Refused (:class:`~fedstat.errors.GenotypeFileError` naming the file and the record or line, never
a sample ID or a value): a file that is not BGEN (magic bytes), BGEN v1.0/v1.1 layouts and unknown
compression, a truncated or corrupt file, a ``.sample`` whose sample count or IDs differ from the
BGEN's, duplicate sample IDs, and every record plink2 refuses (an empty rsid, allele or chromosome,
a position above 2^31 - 2, a block that does not decompress, ploidy above 2, precision above 28
bits, probabilities summing above 1).

The cache is keyed by the BGEN's absolute path and ``bgen_ref``, fingerprinted on both the BGEN
and the ``.sample``, and written under temporary names and renamed into place, fingerprint last.
Two streaming passes read the BGEN: the first writes the ``.pvar`` and counts the kept records
(pgenlib's writer needs the count up front), the second converts one bounded block at a time.

References
----------
plink2 ``--bgen`` / ``--sample`` import: https://www.cog-genomics.org/plink/2.0/input#bgen;
plink-ng 2.00a3.5 ``plink2_import.cc`` ``OxBgenToPgen``, ``OxSampleToPsam``;
BGEN specification: https://www.well.ox.ac.uk/~gav/bgen_format/
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.data.bgen_probs import DOSAGE_MAX, DOSAGE_MID, BgenBlockError, first_allele_dosages
from fedstat.data.import_cache import (
    BGEN_REF_ALLELES,
    cache_paths,
    cache_stem,
    commit,
    load_valid,
    source_fingerprint,
    temporary_files,
)
from fedstat.data.multiallelic import is_snv
from fedstat.data.variants import normalise_chrom
from fedstat.errors import GenotypeFileError

#: Bump when the cache layout or the genotype conversion changes; old caches are rebuilt.
CACHE_FORMAT_VERSION = 1

_MAGIC = b"bgen"
_WHITESPACE = re.compile(r"\s")
_MAX_ID_LEN = 16000  # plink2's kMaxIdSlen
_MAX_POS = 2**31 - 2  # plink2's kMaxBp
_MAX_BLOCK_BYTES = 1 << 26  # bound on one in-memory dosage block while converting
_READ_ERRORS = (ValueError, IndexError, RuntimeError, OSError, UnicodeDecodeError)


@dataclass(frozen=True)
class BgenCacheInfo:
    """A ready BGEN cache.

    Attributes
    ----------
    source : the BGEN the cache was built from (absolute path)
    sample : the ``.sample`` file the IDs came from, or None (IDs embedded in the BGEN)
    pgen, pvar, psam : the cached plink2 files
    fingerprint : the JSON file recording what the cache was built from
    n_samples, n_variants : dimensions of the cached genotype matrix (biallelic SNVs only)
    multiallelic_skipped : BGEN records with more than two alleles, not cached
    non_snv_skipped : biallelic records that are not SNVs
    rebuilt : true when this call converted the BGEN, false when an existing cache was reused
    """

    source: Path
    sample: Path | None
    pgen: Path
    pvar: Path
    psam: Path
    fingerprint: Path
    n_samples: int
    n_variants: int
    multiallelic_skipped: int
    non_snv_skipped: int
    rebuilt: bool


def ensure_bgen_cache(
    bgen_path: str | Path, cache_dir: str | Path, *, ref: str, sample_path: str | Path | None = None
) -> BgenCacheInfo:
    """Build, or reuse, the binary cache of a BGEN.

    Parameters
    ----------
    bgen_path : a BGEN v1.2 or v1.3 file (layout 2; zlib, zstd or no compression)
    cache_dir : directory for the cache (created if needed)
    ref : ``"first"`` or ``"last"``: which allele of each record is REF (plink2's ``ref-first`` /
        ``ref-last``); ``""`` is refused with a message saying to set ``bgen_ref``
    sample_path : the ``.sample`` file, or None to use the IDs embedded in the BGEN

    Returns
    -------
    BgenCacheInfo
        ``rebuilt`` is false when a cache whose fingerprint matches already existed.

    Raises
    ------
    GenotypeFileError
        If ``ref`` is unset, the BGEN or ``.sample`` cannot be read or is malformed or inconsistent
        (naming the file and record or line), no record is a biallelic SNV, or the cache cannot be
        written.
    """
    source = Path(bgen_path).absolute()
    if ref not in BGEN_REF_ALLELES:
        raise GenotypeFileError(
            f"{source}: a BGEN does not say which allele is REF; set bgen_ref in the dataset's [[datasets]] "
            'entry of site.toml: "first" (as plink2 --bgen … ref-first) or "last" (ref-last). fedstat supports '
            "these two only, not plink2's ref-unknown"
        )
    sample = Path(sample_path).absolute() if sample_path is not None else None
    cache_dir = Path(cache_dir)
    fingerprint = source_fingerprint(source, "BGEN")
    fingerprint["bgen_ref"] = ref
    fingerprint["sample"] = source_fingerprint(sample, ".sample file") if sample is not None else None
    stem = cache_stem(source, (".bgen",), options=f"bgen_ref={ref}")
    paths = cache_paths(cache_dir, stem)
    record = load_valid(paths, fingerprint, CACHE_FORMAT_VERSION)
    rebuilt = False
    if record is None:
        with temporary_files(cache_dir, stem, ("pgen", "pvar", "psam", "json"), "BGEN cache") as tmp:
            try:
                record = _convert(source, sample, ref, paths, tmp, fingerprint)
            except OSError as exc:
                raise GenotypeFileError(f"cannot write BGEN cache in {cache_dir} ({exc.strerror or exc})") from exc
        rebuilt = True
    return BgenCacheInfo(
        source=source,
        sample=sample,
        pgen=paths["pgen"],
        pvar=paths["pvar"],
        psam=paths["psam"],
        fingerprint=paths["json"],
        n_samples=int(record["n_samples"]),
        n_variants=int(record["n_variants"]),
        multiallelic_skipped=int(record["multiallelic_skipped"]),
        non_snv_skipped=int(record["non_snv_skipped"]),
        rebuilt=rebuilt,
    )


# ---------------------------------------------------------------------------------------------
# header and samples


@dataclass(frozen=True)
class _Header:
    n_variants: int
    n_samples: int
    compression: int  # 0 none, 1 zlib, 2 zstd
    has_ids: bool
    first_variant: int  # byte offset of the first variant record


def _read_header(source: Path) -> _Header:
    """The BGEN header, checked as plink2 checks it, with a message for what is not supported."""
    flags_bytes = b""
    try:
        with source.open("rb") as fh:
            head = fh.read(24)
            size = fh.seek(0, os.SEEK_END)
            if len(head) == 24:
                header_len = int.from_bytes(head[4:8], "little")
                fh.seek(header_len)
                flags_bytes = fh.read(4)
    except OSError as exc:
        raise GenotypeFileError(f"{source}: cannot read BGEN ({exc.strerror})") from exc
    if len(head) < 24 or head[16:20] not in (_MAGIC, b"\0\0\0\0"):
        raise GenotypeFileError(f"{source}: not a BGEN file (no 'bgen' magic number in its header)")
    offset, header_len, n_variants, n_samples = (int.from_bytes(head[i : i + 4], "little") for i in (0, 4, 8, 12))
    if header_len > offset or header_len < 20 or len(flags_bytes) < 4 or offset + 4 > size:
        raise GenotypeFileError(f"{source}: invalid BGEN header (truncated, or its lengths are inconsistent)")
    flags = int.from_bytes(flags_bytes, "little")
    compression, layout = flags & 3, (flags >> 2) & 15
    if layout in (0, 1) or compression == 3 or layout > 2:
        version = {0: "v1.0", 1: "v1.1"}.get(layout, "of an unknown version")
        raise GenotypeFileError(
            f"{source}: BGEN {version} (layout {layout}, compression {compression}) is not supported; fedstat "
            "reads BGEN v1.2 and v1.3 (layout 2, no/zlib/zstd compression): convert it, e.g. with qctool "
            "-ofiletype bgen_v1.2"
        )
    if n_variants == 0:
        raise GenotypeFileError(f"{source}: the BGEN holds no variants")
    if n_samples == 0:
        raise GenotypeFileError(f"{source}: the BGEN holds no samples")
    return _Header(n_variants, n_samples, compression, bool(flags >> 31), offset + 4)


@dataclass(frozen=True)
class _Samples:
    fid: list[str] | None
    iid: list[str]
    sex: list[str]  # "1", "2" or "NA", as plink2 writes SEX


def _read_sample_file(path: Path) -> _Samples:
    """An Oxford ``.sample`` file, read as plink2 2.00a3.5's ``OxSampleToPsam`` reads its IDs and sex."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise GenotypeFileError(f"{path}: no such .sample file") from exc
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read .sample file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise GenotypeFileError(f"{path}: .sample file is not UTF-8 text") from exc
    lines = [(i + 1, line.split()) for i, line in enumerate(text.splitlines()) if line.strip()]
    if len(lines) < 2:
        raise GenotypeFileError(f"{path}: a .sample file needs two header lines (column names, then types)")
    (_, names), (types_line, types) = lines[0], lines[1]
    id2 = len(names) > 1 and names[1] == "ID_2"
    if "ID_2" in names[2:] or (not id2 and "ID_2" in names[1:]):
        raise GenotypeFileError(f"{path}: line 1: column ID_2 must be the second column")
    lowered = [n.lower() for n in names]
    sex_col = lowered.index("sex") if "sex" in lowered else None
    if sex_col is not None and lowered.count("sex") > 1:
        raise GenotypeFileError(f"{path}: line 1: more than one sex column")
    if len(types) != len(names) or any(len(t) != 1 or t not in "0DBCP" for t in types):
        raise GenotypeFileError(
            f"{path}: line {types_line}: the second header line must give one type (0, D, B, C or P) per column"
        )
    if types[0] != "0" or (id2 and types[1] != "0"):
        raise GenotypeFileError(f"{path}: line {types_line}: the ID columns must have type 0")
    if sex_col is not None and types[sex_col] != "D":
        raise GenotypeFileError(f"{path}: line {types_line}: the sex column must have type D")
    fid: list[str] = []
    iid: list[str] = []
    sex: list[str] = []
    first: dict[tuple[str, str], int] = {}
    for lineno, fields in lines[2:]:
        if len(fields) != len(names):
            raise GenotypeFileError(f"{path}: line {lineno}: {len(fields)} columns, expected {len(names)}")
        key = (fields[0], fields[1]) if id2 else ("", fields[0])
        if key in first:
            raise GenotypeFileError(f"{path}: line {lineno}: duplicate sample ID (first seen on line {first[key]})")
        first[key] = lineno
        fid.append(key[0])
        iid.append(key[1])
        code = fields[sex_col] if sex_col is not None else "NA"
        if code not in ("1", "2", "0", "NA"):
            raise GenotypeFileError(f"{path}: line {lineno}: sex must be 1 (male), 2 (female), 0 or NA (unknown)")
        sex.append(code if code in ("1", "2") else "NA")
    # plink2 writes FID only when some ID_1 is not "0"
    has_fid = id2 and any(f != "0" for f in fid)
    return _Samples(fid=fid if has_fid else None, iid=iid, sex=sex)


def _embedded_ids(source: Path, reader: Any, n_samples: int) -> list[str]:
    try:
        ids = [str(s) for s in reader.samples]
    except _READ_ERRORS as exc:
        raise GenotypeFileError(f"{source}: the BGEN's sample ID block is malformed or not UTF-8") from exc
    if len(ids) != n_samples:
        raise GenotypeFileError(f"{source}: the BGEN's sample ID block holds {len(ids)} IDs, its header {n_samples}")
    first: dict[str, int] = {}
    for j, name in enumerate(ids):
        if not name or _WHITESPACE.search(name) or not name.isprintable():
            raise GenotypeFileError(
                f"{source}: sample {j + 1} of the BGEN's sample ID block is empty or holds whitespace or control "
                "characters"
            )
        if name in first:
            raise GenotypeFileError(
                f"{source}: sample {j + 1} of the BGEN's sample ID block duplicates sample {first[name] + 1}"
            )
        first[name] = j
    return ids


def _samples(source: Path, sample: Path | None, header: _Header, reader: Any) -> _Samples:
    embedded = _embedded_ids(source, reader, header.n_samples) if header.has_ids else None
    if sample is None:
        if embedded is None:
            raise GenotypeFileError(
                f"{source}: the BGEN holds no sample IDs (as UK Biobank's do not); put its .sample file next to "
                "it under the same name (genotypes.sample)"
            )
        return _Samples(fid=None, iid=embedded, sex=["NA"] * len(embedded))
    samples = _read_sample_file(sample)
    if len(samples.iid) != header.n_samples:
        raise GenotypeFileError(
            f"{sample}: holds {len(samples.iid)} samples, while the BGEN {source.name} holds {header.n_samples}"
        )
    # plink2 writes FID_IID as the embedded ID of a sample with a family ID (--export bgen), and
    # reads the .sample alone when given one; either form agrees here
    joined = [f"{f}_{i}" for f, i in zip(samples.fid, samples.iid, strict=True)] if samples.fid else samples.iid
    if embedded is not None and embedded != samples.iid and embedded != joined:
        j = next(j for j, (a, b) in enumerate(zip(embedded, samples.iid, strict=True)) if a != b)
        raise GenotypeFileError(
            f"{sample}: sample IDs differ from those embedded in {source.name}, first at sample {j + 1}; the "
            ".sample must list the BGEN's samples, in its order"
        )
    return samples


def _write_psam(path: Path, samples: _Samples) -> None:
    if samples.fid is None:
        rows = [f"{i}\t{s}\n" for i, s in zip(samples.iid, samples.sex, strict=True)]
        head = "#IID\tSEX\n"
    else:
        rows = [f"{f}\t{i}\t{s}\n" for f, i, s in zip(samples.fid, samples.iid, samples.sex, strict=True)]
        head = "#FID\tIID\tSEX\n"
    path.write_text(head + "".join(rows), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# records


@functools.lru_cache(maxsize=1)
def _zstd_decompress() -> Callable[[bytes, int], bytes | None]:
    """zstd decompression from the zstd that the ``bgen`` package bundles (Python 3.11 has none)."""
    import bgen.reader

    lib = ctypes.CDLL(bgen.reader.__file__)
    decompress, is_error = lib.ZSTD_decompress, lib.ZSTD_isError
    decompress.restype = ctypes.c_size_t
    decompress.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    is_error.restype = ctypes.c_uint
    is_error.argtypes = (ctypes.c_size_t,)

    def run(data: bytes, size: int) -> bytes | None:
        out = ctypes.create_string_buffer(max(size, 1))
        got = decompress(out, size, data, len(data))
        if is_error(got) or got != size:
            return None
        return out.raw[:size]

    return run


def _genotype_block(record: bytes, compression: int, n_samples: int) -> bytes:
    """The decompressed genotype block of one whole variant record (as ``BgenVar.copy_data`` gives it)."""
    view = memoryview(record)
    at = 0
    try:
        for _ in range(3):  # SNPID, rsid, chromosome
            at += 2 + int.from_bytes(view[at : at + 2], "little")
        at += 4
        n_alleles = int.from_bytes(view[at : at + 2], "little")
        at += 2
        for _ in range(n_alleles):
            at += 4 + int.from_bytes(view[at : at + 4], "little")
        length = int.from_bytes(view[at : at + 4], "little")
        at += 4
    except IndexError:
        raise BgenBlockError("variant record truncated") from None
    block = bytes(view[at : at + length])
    if len(block) != length or at + length != len(record):
        raise BgenBlockError("variant record truncated, or its genotype block length is wrong")
    if compression == 0:
        return block
    if length < 4:
        raise BgenBlockError("compressed genotype block shorter than 4 bytes")
    size = int.from_bytes(block[:4], "little")
    if size > 10 + 9 * n_samples:  # ploidy <= 2 at <= 32 bits: no more than this
        raise BgenBlockError("stored uncompressed genotype block length is implausible")
    if compression == 1:
        try:
            out: bytes | None = zlib.decompress(block[4:])
        except zlib.error:
            out = None
    else:
        out = _zstd_decompress()(block[4:], size)
    if out is None or len(out) != size:
        raise BgenBlockError(f"genotype block does not decompress ({'zlib' if compression == 1 else 'zstd'})")
    return out


def _variants(source: Path, reader: Any, header: _Header) -> Iterator[tuple[int, Any]]:
    """Yield (1-based record number, BgenVar) for every record the header announces."""
    it = iter(reader)
    last = "the header"
    for n in range(1, header.n_variants + 1):
        try:
            var = next(it)
            last = f"{var.chrom}:{var.pos}"
        except StopIteration:
            raise GenotypeFileError(
                f"{source}: truncated: the header announces {header.n_variants} variants, the file holds {n - 1}"
            ) from None
        except _READ_ERRORS as exc:
            raise GenotypeFileError(f"{source}: malformed or truncated BGEN at variant {n} (after {last})") from exc
        yield n, var


def _open_reader(source: Path) -> Any:
    from bgen import BgenReader

    try:
        return BgenReader(str(source), delay_parsing=True)
    except _READ_ERRORS as exc:
        raise GenotypeFileError(f"{source}: not a readable BGEN file (or its header is malformed)") from exc


def _convert(
    source: Path,
    sample: Path | None,
    ref: str,
    paths: dict[str, Path],
    tmp: dict[str, Path],
    fingerprint: dict[str, Any],
) -> dict[str, Any]:
    import pgenlib

    header = _read_header(source)
    size = source.stat().st_size
    # pass 1: samples, .pvar, which records are kept
    keep = bytearray(header.n_variants)
    n_kept = n_multi = n_non_snv = 0
    with _open_reader(source) as reader:
        samples = _samples(source, sample, header, reader)
        _write_psam(tmp["psam"], samples)
        end = header.first_variant
        with tmp["pvar"].open("w", encoding="utf-8") as pvar:
            pvar.write("#CHROM\tPOS\tID\tREF\tALT\n")
            lines: list[str] = []
            for n, var in _variants(source, reader, header):
                try:
                    chrom, pos, rsid, alleles = var.chrom, int(var.pos), var.rsid, list(var.alleles)
                    end = int(var.next_variant_offset)
                except _READ_ERRORS as exc:
                    raise GenotypeFileError(f"{source}: variant {n}: malformed variant fields") from exc
                where = f"variant {n} ({chrom}:{pos})"
                if len(alleles) < 2:
                    raise GenotypeFileError(f"{source}: {where}: fewer than two alleles")
                if len(alleles) > 2:
                    n_multi += 1
                    continue
                if not rsid or not chrom or not alleles[0] or not alleles[1]:
                    raise GenotypeFileError(f"{source}: {where}: empty rsid, chromosome or allele (plink2 refuses it)")
                if len(rsid) > _MAX_ID_LEN or _WHITESPACE.search(rsid) or _WHITESPACE.search(chrom):
                    raise GenotypeFileError(
                        f"{source}: {where}: rsid or chromosome longer than 16000 or with whitespace"
                    )
                if pos > _MAX_POS:
                    raise GenotypeFileError(f"{source}: {where}: position above 2^31 - 2 (plink2 refuses it)")
                first, second = alleles[0].upper(), alleles[1].upper()
                if not is_snv(first, second):
                    n_non_snv += 1
                    continue
                ref_allele, alt_allele = (first, second) if ref == "first" else (second, first)
                code = normalise_chrom("0" if chrom == "NA" else chrom)
                lines.append(f"{code}\t{pos}\t{rsid}\t{ref_allele}\t{alt_allele}\n")
                keep[n - 1] = 1
                n_kept += 1
                if len(lines) >= 4096:
                    pvar.write("".join(lines))
                    lines.clear()
            pvar.write("".join(lines))
    if end > size:
        raise GenotypeFileError(f"{source}: truncated: its last variant record ends past the end of the file")
    if n_kept == 0:
        raise GenotypeFileError(
            f"{source}: no biallelic SNV to cache ({n_multi} multiallelic and {n_non_snv} other records skipped)"
        )

    # pass 2: genotypes, one bounded block at a time
    n = header.n_samples
    block_rows = max(1, min(4096, _MAX_BLOCK_BYTES // (8 * n)))
    block = np.empty((block_rows, n), dtype=np.float64)
    filled = 0
    try:
        writer = pgenlib.PgenWriter(
            os.fsencode(tmp["pgen"]), n, variant_ct=n_kept, nonref_flags=False, dosage_present=True
        )
        with _open_reader(source) as reader:
            for i, var in _variants(source, reader, header):
                if not keep[i - 1]:
                    continue
                try:
                    record = bytes(var.copy_data())
                except _READ_ERRORS as exc:
                    raise GenotypeFileError(f"{source}: truncated or unreadable at variant {i}") from exc
                try:
                    first_dose = first_allele_dosages(_genotype_block(record, header.compression, n), n)
                except BgenBlockError as exc:
                    raise GenotypeFileError(f"{source}: variant {i} ({var.chrom}:{var.pos}): {exc}") from None
                # ALT dosage in 1/16384 units: the first allele's, or 2 minus it when the first is REF
                alt = DOSAGE_MAX - first_dose if ref == "first" else first_dose
                row = block[filled]
                np.divide(alt, DOSAGE_MID, out=row)  # exact: a multiple of 2^-14
                row[first_dose < 0] = -9.0
                filled += 1
                if filled == block_rows:
                    writer.append_dosages_batch(block)
                    filled = 0
        if filled:
            writer.append_dosages_batch(np.ascontiguousarray(block[:filled]))
        writer.close()
    except RuntimeError as exc:
        raise GenotypeFileError(f"cannot write BGEN cache {tmp['pgen']} ({exc})") from exc

    record_out = dict(fingerprint)
    record_out.update(
        n_samples=n,
        n_variants=n_kept,
        multiallelic_skipped=n_multi,
        non_snv_skipped=n_non_snv,
    )
    return commit(paths, tmp, record_out, CACHE_FORMAT_VERSION)
