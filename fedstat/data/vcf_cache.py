"""A binary cache of a VCF / BCF, so that jobs never parse text genotypes.

A site's VCF is parsed once into plink2 files (``.pgen/.pvar/.psam``) in a cache directory;
every later job reads the ``.pgen`` with pgenlib, about 50x faster than re-parsing. The cache
is keyed by the VCF's absolute path and invalidated by a fingerprint (size, mtime and a hash of
the first and last MiB), so editing or replacing the VCF triggers a rebuild.

What is kept: biallelic SNVs only (REF and ALT each one of A, C, G, T; stored upper-case).
A multiallelic record is split into biallelic records first, as ``bcftools norm -m-`` splits it
(:mod:`fedstat.data.multiallelic`: the other ALTs count as REF, the ID is kept, ``DS`` and ``GP``
are cut down per ALT), and its SNV records are kept. Everything else (indels, symbolic alleles,
``*``, ``ALT = .``) is skipped and counted, as are multiallelic records read with
``vcf_dosage = "HDS"``, which are not split.

How calls become ALT allele counts (0, 1, 2; -9 missing):

* diploid calls count the ALT alleles (phase is ignored);
* haploid calls (e.g. chrX / chrY / MT in males: ``0`` or ``1``) are treated as homozygous,
  so ``0`` -> 0 and ``1`` -> 2, as plink2's VCF import does for haploid GT;
* a call with any missing allele (``./.``, ``.``, and half-calls such as ``0/.``) is missing,
  as with plink2's ``--vcf-half-call missing``;
* a record without a GT field is missing for every sample.

Imputed dosages (``DS``, ``HDS``, ``GP``) are read only when the dataset says which field holds
them (``vcf_dosage`` in ``site.toml``, :class:`~fedstat.data.import_cache.ImportOptions`):

* ``vcf_dosage = "DS"`` / ``"HDS"`` / ``"GP"`` imports them exactly as plink2's ``--vcf FILE
  dosage=DS|HDS|GP`` does (:mod:`fedstat.data.vcf_dosage` says how); the cache then has plink2's
  dosage track, and hard calls derived from it with the default ``--hard-call-threshold`` 0.1
  (a dosage more than 0.1 from an integer is a missing hard call). A sample without a dosage
  keeps its GT hard call. VCF text only: a BCF with ``vcf_dosage`` set is refused.
* ``vcf_dosage = "GT"`` reads the GT hard calls only and ignores dosage fields, as plink2 without
  ``dosage=``.
* unset, a VCF that declares or uses a dosage field is refused, with a message saying which
  ``vcf_dosage`` to set: its hard calls alone would silently differ from what plink2 computes
  from the dosages.

What is refused (:class:`~fedstat.errors.GenotypeFileError` naming the record): a record
htslib cannot parse, a GT allele index above the record's number of ALT alleles, ploidy above 2,
a multiallelic record read with ``vcf_dosage = "DS"`` or ``"GP"`` whose header does not declare DS
with ``Number=A`` or GP with ``Number=G`` (so that the split of its values is known),
whitespace in CHROM or ID, text that is not UTF-8, and a BGZF file (``.vcf.gz``, ``.bcf``)
without its end-of-file block, which is what a copy cut at a block boundary looks like.

The cache is written under temporary names and renamed into place, fingerprint last, so a
crash or a full disk never leaves a half-written cache that looks valid. It is keyed by the
VCF's path and ``vcf_dosage``, so changing the option builds another cache.

References
----------
plink2 ``--vcf`` import: https://www.cog-genomics.org/plink/2.0/input#vcf
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.data.import_cache import (
    VCF_DOSAGE_FIELDS,
    cache_paths,
    cache_stem,
    commit,
    load_valid,
    source_fingerprint,
    temporary_files,
)
from fedstat.data.multiallelic import alt_counts_by_allele, is_snv, snv_alts, split_cells
from fedstat.data.pgen_header import DOSAGE_UNIT
from fedstat.data.variants import normalise_chrom
from fedstat.data.vcf_dosage import (
    DOSAGE_MODES,
    HAPLOID_CHROMS,
    MISSING,
    DosageParseError,
    dosage_row,
    field_layout,
)
from fedstat.errors import GenotypeFileError

#: Bump when the cache layout or the genotype conversion changes; old caches are rebuilt.
#: 3: VCFs holding dosages (DS/GP/HDS) or no GT are refused, so older caches of them must go.
#: 4: the ``vcf_dosage`` option (a dosage track, the option in the key and the fingerprint).
#: 5: multiallelic records split into biallelic ones (``multiallelic_split``).
CACHE_FORMAT_VERSION = 5

#: FORMAT fields holding imputed dosages, as plink2's ``--vcf … dosage=`` reads them.
DOSAGE_FIELDS = ("DS", "HDS", "GP")

_MAX_BLOCK_BYTES = 1 << 26  # bound on one in-memory genotype block while converting
_BED_MAGIC = bytes((0x6C, 0x1B, 0x01))
_GT_VECTOR_END = -(2**31) + 1  # htslib's bcf_int32_vector_end: the call is shorter (haploid)
_WHITESPACE = re.compile(r"\s")
# the 28-byte empty block that ends every BGZF file (SAM/BAM specification, section 4.1.2)
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

# ALT count (int8, masked with & 3 so that -9 -> 3) -> PLINK1 .bed code with A1 = ALT:
# 0 (hom REF) -> 3, 1 (het) -> 2, 2 (hom ALT) -> 0, -9 (missing) -> 1.
_BED_CODE = np.array([3, 2, 0, 1], dtype=np.uint8)


@dataclass(frozen=True)
class CacheInfo:
    """A ready VCF cache.

    Attributes
    ----------
    source : the VCF / BCF the cache was built from (absolute path)
    pgen, pvar, psam : the cached plink2 files
    fingerprint : the JSON file recording what the cache was built from
    n_samples, n_variants : dimensions of the cached genotype matrix (biallelic SNVs only)
    multiallelic_split : VCF records with more than one ALT allele, split into biallelic ones
    multiallelic_skipped : multiallelic records not split and not cached (``vcf_dosage = "HDS"``)
    non_snv_skipped : biallelic records, original or from a split, that are not SNVs (indels,
        symbolic, ``*``, ``ALT = .``)
    rebuilt : true when this call parsed the VCF, false when an existing cache was reused
    """

    source: Path
    pgen: Path
    pvar: Path
    psam: Path
    fingerprint: Path
    n_samples: int
    n_variants: int
    multiallelic_skipped: int
    non_snv_skipped: int
    rebuilt: bool
    multiallelic_split: int = 0


def ensure_vcf_cache(vcf_path: str | Path, cache_dir: str | Path, *, threads: int = 1, dosage: str = "") -> CacheInfo:
    """Build, or reuse, the binary cache of a VCF / BCF.

    Parameters
    ----------
    vcf_path : a ``.vcf``, ``.vcf.gz`` (gzip or bgzip) or ``.bcf`` file
    cache_dir : directory for the cache (created if needed); several VCFs may share one
    threads : htslib decompression threads used while parsing
    dosage : the dataset's ``vcf_dosage``: ``"DS"``, ``"HDS"`` or ``"GP"`` (import that field's
        dosages as plink2's ``--vcf FILE dosage=FIELD``), ``"GT"`` (hard calls only, dosage
        fields ignored) or ``""`` (refuse a VCF with dosage fields)

    Returns
    -------
    CacheInfo
        ``rebuilt`` is false when a cache whose fingerprint matches the VCF already existed.

    Raises
    ------
    GenotypeFileError
        If the VCF cannot be read, is malformed (naming the record number and the last good
        position), has no samples, duplicate or whitespace-containing sample names, ploidy
        above 2, or no biallelic SNV; if it holds dosage fields and ``dosage`` is ``""``; if a
        dosage it should import is not a number, out of range or malformed (naming the record
        and CHROM:POS, never the sample or the value); or if the cache cannot be written.

    Notes
    -----
    The VCF is parsed once and streamed: genotypes go, one bounded block at a time, to a
    temporary PLINK1 ``.bed`` (the variant count is not known until the end, and pgenlib's
    ``PgenWriter`` needs it up front), which is then converted block by block to ``.pgen``.
    Peak memory is one block (at most 64 MiB of int8 genotypes), not the whole matrix. With
    dosages, the rows go instead to a temporary raw file of uint16 dosage units (1/16384 steps,
    one row of ``n_samples`` per kept variant), which is then written block by block, as exact
    multiples of 1/16384, with ``PgenWriter.append_dosages_batch``.
    """
    if dosage and dosage not in VCF_DOSAGE_FIELDS:
        raise ValueError(f"vcf_dosage must be one of {', '.join(VCF_DOSAGE_FIELDS)} or empty, got {dosage!r}")
    source = Path(vcf_path).absolute()
    cache_dir = Path(cache_dir)
    fingerprint = source_fingerprint(source, "VCF")
    fingerprint["vcf_dosage"] = dosage
    stem = cache_stem(source, (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf"), options=f"vcf_dosage={dosage}" if dosage else "")
    paths = cache_paths(cache_dir, stem)
    record = load_valid(paths, fingerprint, CACHE_FORMAT_VERSION)
    rebuilt = False
    if record is None:
        record = _build(source, cache_dir, stem, paths, fingerprint, threads=threads, dosage=dosage)
        rebuilt = True
    return CacheInfo(
        source=source,
        pgen=paths["pgen"],
        pvar=paths["pvar"],
        psam=paths["psam"],
        fingerprint=paths["json"],
        n_samples=int(record["n_samples"]),
        n_variants=int(record["n_variants"]),
        multiallelic_skipped=int(record["multiallelic_skipped"]),
        non_snv_skipped=int(record["non_snv_skipped"]),
        rebuilt=rebuilt,
        multiallelic_split=int(record["multiallelic_split"]),
    )


def dosage_refusal(path: Path, holds: str, field: str, *, has_gt: bool) -> str:
    """Why a VCF with imputed dosages is refused when its dataset sets no ``vcf_dosage``, and which
    to set: ``field`` (a dosage field it holds) reads them as plink2's ``dosage=FIELD``."""
    text = (
        f"{path}: holds imputed dosages ({holds}), and the dataset does not say whether to read them: its hard "
        "calls alone would silently differ from plink2's results given dosage= (--freq, --glm and --pca use the "
        f'dosages), so the file is refused. Set vcf_dosage = "{field}" in this dataset\'s [[datasets]] entry in '
        f"site.toml to read them as `plink2 --vcf {path} dosage={field}` does"
    )
    if has_gt:
        return text + ', or vcf_dosage = "GT" to use its GT hard calls only (as plink2 without dosage=)'
    return text + " (it has no GT, so its calls are only in the dosage fields)"


def _format_fields(vcf: Any) -> set[str]:
    """The FORMAT field IDs the VCF header declares."""
    return {str(h.info().get("ID", "")) for h in vcf.header_iter() if h.type == "FORMAT"}


def _refuse_dosages(source: Path, fields: set[str] | list[str], where: str = "") -> None:
    held = [f for f in DOSAGE_FIELDS if f in fields]
    if held:
        at = f"FORMAT {'/'.join(held)}{where}"
        if "GT" not in fields:
            at += ", and no GT"
        raise GenotypeFileError(dosage_refusal(source, at, held[0], has_gt="GT" in fields))


def pack_bed(geno: np.ndarray) -> np.ndarray:
    """Encode ALT allele counts as PLINK1 ``.bed`` rows (A1 = ALT).

    Parameters
    ----------
    geno : [array, shape: (n_variants, n_samples), dtype int8] ALT counts 0/1/2, -9 missing

    Returns
    -------
    [array, shape: (n_variants, ceil(n_samples / 4)), dtype uint8] two bits per genotype,
    first sample in the lowest bits; codes 0 = hom A1, 1 = missing, 2 = het, 3 = hom A2.
    """
    n_var, n_samp = geno.shape
    width = -(-n_samp // 4)
    codes = np.zeros((n_var, width * 4), dtype=np.uint8)
    codes[:, :n_samp] = _BED_CODE[geno & 3]
    codes = codes.reshape(n_var, width, 4)
    # one byte = c0 | c1 << 2 | c2 << 4 | c3 << 6
    packed: np.ndarray = codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)
    return packed


def _alt_counts(gt: np.ndarray, out: np.ndarray) -> bool:
    """Fill ``out`` with ALT counts from the raw GT values of ``rec.format("GT", int)``.

    Parameters
    ----------
    gt : [array, shape: (n_samples, ploidy), dtype int32] htslib's GT encoding,
        ``(allele + 1) << 1 | phased``: 0 or 1 is a missing allele, ``bcf_int32_vector_end``
        ends a shorter call (a haploid call in a diploid record)
    out : [array, shape: (n_samples,), dtype int8] written in place

    Returns
    -------
    False when an allele index above 1 occurs (malformed biallelic record), else True.

    Notes
    -----
    cyvcf2's ``genotype.array()`` narrows allele indices to int16, so ``0/65536`` would read
    as ``0/0``; the raw int32 values keep every index checkable.
    """
    ploidy = gt.shape[1]
    if ploidy == 0:
        out[:] = -9
        return True
    allele = (gt >> 1) - 1  # -1 missing; vector end and int32 missing are negative too
    a0 = allele[:, 0]
    if ploidy == 1:
        a1 = a0  # haploid: homozygous
        missing = a0 < 0
    else:
        a1 = np.where(gt[:, 1] == _GT_VECTOR_END, a0, allele[:, 1])  # haploid sample in a diploid record
        missing = (a0 < 0) | (a1 < 0)
    if (a0 > 1).any() or (a1 > 1).any():
        return False
    out[:] = (a0 == 1).astype(np.int8) + (a1 == 1).astype(np.int8)
    out[missing] = -9
    return True


def _split_counts(gt: np.ndarray, n_alts: int, alleles: list[int]) -> np.ndarray | None:
    """A multiallelic record's GT as the hard calls of its split records (ALT indices ``alleles``).

    ``gt`` is htslib's raw encoding as in :func:`_alt_counts`. Returns [array, shape: (len(alleles),
    n_samples), dtype int8] each ALT's count, the other ALTs counted as REF (-9 missing), or None
    when an allele index exceeds ``n_alts``.
    """
    n = gt.shape[0]
    if gt.shape[1] == 0:
        return np.full((len(alleles), n), -9, dtype=np.int8)
    allele = (gt >> 1) - 1
    a0 = allele[:, 0]
    a1 = a0 if gt.shape[1] == 1 else np.where(gt[:, 1] == _GT_VECTOR_END, a0, allele[:, 1])
    if (a0 > n_alts).any() or (a1 > n_alts).any():
        return None
    return alt_counts_by_allele(np.stack([a0, a1], axis=1), (a0 < 0) | (a1 < 0), alleles)


def _format_numbers(vcf: Any) -> dict[str, str]:
    """The ``Number`` the VCF header declares for each FORMAT field."""
    return {
        str(h.info().get("ID", "")): str(h.info().get("Number", "")) for h in vcf.header_iter() if h.type == "FORMAT"
    }


#: How a split cuts a dosage field, by the ``Number`` it must be declared with.
_SPLIT_NUMBER = {"DS": "A", "GP": "G"}


def _check_split_numbers(source: Path, where: str, dosage: str, numbers: dict[str, str]) -> None:
    """Refuse to split a record whose dosage field's ``Number`` does not say how its values split."""
    want = _SPLIT_NUMBER[dosage]
    if dosage in numbers and numbers[dosage] != want:
        raise GenotypeFileError(
            f"{source}: {where}: a multiallelic record, but the header declares FORMAT {dosage} with "
            f"Number={numbers[dosage]}, not Number={want}, so how its values split per ALT is not known (plink2 "
            f"refuses multiallelic dosages); split the file with `bcftools norm -m-` after fixing the header, "
            'or set vcf_dosage = "GT"'
        )


def _split_line(line: str | None, k: int, n_alts: int) -> str | None:
    """A multiallelic record's text as the text of its split record for ALT ``k``: the dosage fields
    cut down as ``bcftools norm -m-`` cuts them (:func:`~fedstat.data.multiallelic.split_cells`)."""
    if line is None:
        return None
    cols = line.split("\t")
    if len(cols) < 9:
        return line
    return "\t".join([*cols[:9], *split_cells(cols[9:], cols[8].split(":"), _SPLIT_NUMBER, k, n_alts)])


def _records(vcf: Any, source: Path) -> Iterator[tuple[int, Any, str, str, list[str]]]:
    """Yield (1-based record number, record, CHROM, REF, ALT), translating htslib failures."""
    it = iter(vcf)
    n = 0
    last = "the header"
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except Exception as exc:  # cyvcf2 raises bare Exception for htslib parse errors
            raise GenotypeFileError(f"{source}: malformed or truncated VCF at record {n + 1} (after {last})") from exc
        n += 1
        try:
            chrom, ref, alts = rec.CHROM, rec.REF, rec.ALT
        except UnicodeDecodeError:
            raise GenotypeFileError(f"{source}: record {n} (after {last}): CHROM, REF or ALT is not UTF-8") from None
        last = f"{chrom}:{rec.POS}"
        yield n, rec, chrom, ref, alts


def _check_bgzf_end(source: Path) -> None:
    """Refuse a BGZF file (bgzipped VCF, BCF) that lacks its end-of-file block.

    A copy cut at a block boundary otherwise reads as a valid, shorter file (htslib only
    warns). Plain gzip and uncompressed files are left to the parser, which sees their end.
    """
    try:
        with source.open("rb") as fh:
            head = fh.read(18)
            is_bgzf = head[:4] == _BGZF_EOF[:4] and head[12:14] == b"BC"
            if not is_bgzf:
                return
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - len(_BGZF_EOF)))
            tail = fh.read()
    except OSError as exc:
        raise GenotypeFileError(f"{source}: cannot read VCF ({exc.strerror})") from exc
    if tail != _BGZF_EOF:
        raise GenotypeFileError(
            f"{source}: truncated: the BGZF end-of-file block is missing (an interrupted copy? "
            "compress with bgzip or bcftools, which write it)"
        )


def _quiet_htslib(cyvcf2: Any) -> None:
    """Silence htslib's own messages on stderr: some quote file content (``Duplicated sample name
    'P0042'``), which must never reach a daemon's log. fedstat raises its own errors, naming the
    file and record without participant data, for everything htslib would complain about."""
    import ctypes  # noqa: PLC0415

    try:
        ctypes.CDLL(cyvcf2.cyvcf2.__file__).hts_set_log_level(0)
    except (OSError, AttributeError):  # a cyvcf2 build without the symbol: keep htslib's default
        pass


def _build(
    source: Path,
    cache_dir: Path,
    stem: str,
    paths: dict[str, Path],
    fingerprint: dict[str, Any],
    *,
    threads: int,
    dosage: str,
) -> dict[str, Any]:
    import cyvcf2
    import pgenlib

    _quiet_htslib(cyvcf2)
    with temporary_files(cache_dir, stem, ("bed", "dos", "pgen", "pvar", "psam", "json"), "VCF cache") as tmp:
        return _convert(
            source, cache_dir, paths, tmp, fingerprint, threads=threads, dosage=dosage, cyvcf2=cyvcf2, pgenlib=pgenlib
        )


def _check_dosage_header(source: Path, dosage: str, declared: set[str]) -> None:
    """Refuse what plink2 refuses, or would import without dosages, given ``dosage=``."""
    if source.name.lower().endswith(".bcf"):
        raise GenotypeFileError(
            f'{source}: vcf_dosage = "{dosage}", but fedstat reads dosages from VCF text only, not from a BCF; '
            f"import it with `plink2 --bcf {source} dosage={dosage} --make-pgen --out NEW` and point the dataset "
            "at NEW.pgen, or write it as a VCF"
        )
    wanted = ("HDS", "DS") if dosage == "HDS" else (dosage,)
    if not any(f in declared for f in wanted):
        raise GenotypeFileError(
            f'{source}: vcf_dosage = "{dosage}", but the VCF header declares no FORMAT {" or ".join(wanted)}, so '
            f"plink2 would import no dosages from it (FORMAT fields declared: {', '.join(sorted(declared)) or 'none'}); "
            'set vcf_dosage to the dosage field the file holds, or to "GT" for its hard calls'
        )
    if dosage == "GP" and "DS" in declared:
        raise GenotypeFileError(
            f'{source}: vcf_dosage = "GP", but the header also declares FORMAT DS, and plink2 refuses dosage=GP then '
            '(it reduces probabilities to dosages, so DS holds the same information): set vcf_dosage = "DS"'
        )


def _text_lines(source: Path) -> Generator[str, None, None]:
    """The VCF's record lines as text (header lines skipped), read beside htslib for the dosages'
    exact text."""
    import gzip  # noqa: PLC0415

    with source.open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    opened: Any = gzip.open(source, "rb") if compressed else source.open("rb")
    with opened as fh:
        for line in fh:
            if line.startswith(b"#") or not line.strip():
                continue
            try:
                yield line.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                raise GenotypeFileError(f"{source}: a VCF record is not UTF-8 text") from None


def _dosage_record(
    source: Path,
    where: str,
    line: str | None,
    rec: Any,
    *,
    dosage: str,
    declared: set[str],
    n_samples: int,
    hard: np.ndarray,
    gt: np.ndarray | None,
    out: np.ndarray,
) -> None:
    """Fill ``out`` with one kept record's dosage row (:func:`~fedstat.data.vcf_dosage.dosage_row`)."""
    cols = line.split("\t") if line is not None else []
    if len(cols) < 9 or cols[0] != rec.CHROM or not cols[1].isdigit() or int(cols[1]) != rec.POS:
        raise GenotypeFileError(f"{source}: {where}: the record's text does not match what htslib parsed")
    if len(cols) - 9 != n_samples:
        raise GenotypeFileError(f"{source}: {where}: {len(cols) - 9} sample columns, the header names {n_samples}")
    keys = cols[8].split(":")
    primary = ("HDS", "DS") if dosage == "HDS" else (dosage,)
    undeclared = [f for f in primary if f in keys and f not in declared]
    if undeclared:
        raise GenotypeFileError(
            f"{source}: {where}: uses FORMAT {'/'.join(undeclared)}, which the header does not declare (plink2 "
            "ignores an undeclared field); declare it in the header (e.g. with bcftools annotate)"
        )
    layout = field_layout(keys, dosage, declared)
    if "GT" in keys and layout.gt is None:
        raise GenotypeFileError(f"{source}: {where}: GT is not the first FORMAT field (plink2 reads it only there)")
    if layout.dosage is None and layout.hds is None:
        if layout.gt is None:
            raise GenotypeFileError(
                f"{source}: {where}: neither GT nor {' nor '.join(primary)}, so no sample has a call or a dosage "
                "(plink2 would misread the first FORMAT field as GT)"
            )
        out[:] = np.where(hard >= 0, hard.astype(np.int32) * DOSAGE_UNIT, MISSING).astype(np.uint16)
        return
    if layout.gt is None and layout.hds is None and normalise_chrom(rec.CHROM) in HAPLOID_CHROMS:
        raise GenotypeFileError(
            f"{source}: {where}: DS without GT on chrX, chrY or MT, where a DS may be on the 0..1 (haploid) or "
            "0..2 scale; plink2 refuses this too: regenerate the file with GT"
        )
    haploid = np.zeros(n_samples, dtype=bool)
    if gt is not None:  # as plink2 reads the GT text: a haploid call has no "/" or "|" after its first allele
        haploid = np.ones(n_samples, dtype=bool) if gt.shape[1] == 1 else gt[:, 1] == _GT_VECTOR_END
    try:
        dosage_row(cols[9:], layout, dosage, hard, haploid, out)
    except DosageParseError as exc:
        raise GenotypeFileError(f"{source}: {where}: {exc}") from None


def _convert(
    source: Path,
    cache_dir: Path,
    paths: dict[str, Path],
    tmp: dict[str, Path],
    fingerprint: dict[str, Any],
    *,
    threads: int,
    dosage: str,
    cyvcf2: Any,
    pgenlib: Any,
) -> dict[str, Any]:
    with_dosages = dosage in DOSAGE_MODES
    try:
        _check_bgzf_end(source)
        try:
            vcf = cyvcf2.VCF(str(source), gts012=True, threads=max(1, threads))
        except Exception as exc:  # cyvcf2: OSError, or bare Exception for a bad header
            raise GenotypeFileError(f"{source}: not a readable VCF/BCF file (or its header is malformed)") from exc
        text: Generator[str, None, None] | None = None
        try:
            try:
                samples = list(vcf.samples)
            except UnicodeDecodeError:
                raise GenotypeFileError(f"{source}: VCF sample names are not UTF-8 text") from None
            n_samples = len(samples)
            if n_samples == 0:
                raise GenotypeFileError(f"{source}: VCF has no samples")
            first_col: dict[str, int] = {}
            for j, name in enumerate(samples):
                if not name or any(ch.isspace() for ch in name):
                    raise GenotypeFileError(
                        f"{source}: VCF sample in column {j + 10} has an empty name or one containing whitespace"
                    )
                if name in first_col:
                    raise GenotypeFileError(
                        f"{source}: VCF sample in column {j + 10} duplicates the sample in "
                        f"column {first_col[name] + 10}"
                    )
                first_col[name] = j
            header_fields = _format_fields(vcf)
            if with_dosages:
                _check_dosage_header(source, dosage, header_fields)
            elif not dosage:
                _refuse_dosages(source, header_fields)
            tmp["psam"].write_text("#IID\n" + "".join(f"{s}\n" for s in samples), encoding="utf-8")

            row_bytes = n_samples * (4 if with_dosages else 1)  # float32 dosages when writing the .pgen
            block_rows = max(1, min(4096, _MAX_BLOCK_BYTES // row_bytes))
            block = np.empty((1 if with_dosages else block_rows, n_samples), dtype=np.int8)
            dblock = np.empty((block_rows if with_dosages else 0, n_samples), dtype=np.uint16)
            if with_dosages:
                text = _text_lines(source)
            n_kept = n_multi = n_split = n_non_snv = n_gt = 0
            numbers = _format_numbers(vcf)
            filled = 0
            out = tmp["dos" if with_dosages else "bed"]
            with out.open("wb") as bed, tmp["pvar"].open("w", encoding="utf-8") as pvar:
                if not with_dosages:
                    bed.write(_BED_MAGIC)
                pvar.write("#CHROM\tPOS\tID\tREF\tALT\n")
                pvar_lines: list[str] = []
                for n, rec, chrom, ref, alts in _records(vcf, source):
                    line = next(text, None) if text is not None else None
                    ref = ref.upper()
                    multi = len(alts) > 1
                    if multi:  # split as bcftools norm -m- (fedstat.data.multiallelic)
                        if dosage == "HDS":
                            n_multi += 1
                            continue
                        n_split += 1
                        kept, n_bad = snv_alts(ref, [a.upper() for a in alts])
                        n_non_snv += n_bad
                        if not kept:
                            continue
                    else:
                        alt = alts[0].upper() if alts else "."
                        if not is_snv(ref, alt):
                            n_non_snv += 1
                            continue
                        kept = [(1, alt)]
                    where = f"record {n} ({chrom}:{rec.POS})"
                    vid = rec.ID or "."
                    if _WHITESPACE.search(chrom) or _WHITESPACE.search(vid):
                        raise GenotypeFileError(f"{source}: {where}: whitespace in CHROM or ID")
                    fields: list[str] = rec.FORMAT or []
                    if not dosage:
                        _refuse_dosages(source, fields, f" at {where}, undeclared in the header")
                    if multi and with_dosages:
                        _check_split_numbers(source, where, dosage, numbers)
                    row = block[0 if with_dosages else filled]
                    gt = None
                    hard: np.ndarray | None = None  # a split record's hard calls, one row per kept ALT
                    if "GT" in fields:
                        n_gt += 1
                        try:
                            gt = rec.format("GT", int)
                        except Exception as exc:  # cyvcf2 raises bare Exception
                            raise GenotypeFileError(f"{source}: {where}: cannot decode GT") from exc
                        if gt is None or gt.ndim != 2:
                            raise GenotypeFileError(f"{source}: {where}: cannot decode GT")
                        if gt.shape[1] > 2:
                            raise GenotypeFileError(f"{source}: {where}: ploidy above 2 is not supported")
                        if multi:
                            hard = _split_counts(gt, len(alts), [k for k, _ in kept])
                            if hard is None:
                                raise GenotypeFileError(
                                    f"{source}: {where}: GT allele index above the record's {len(alts)} ALT alleles"
                                )
                        elif not _alt_counts(gt, row):
                            raise GenotypeFileError(f"{source}: {where}: GT allele index above 1 in a biallelic record")
                    else:
                        row[:] = -9
                    for r, (k, alt) in enumerate(kept):
                        row = block[0 if with_dosages else filled]
                        if multi:
                            row[:] = hard[r] if hard is not None else -9
                        if with_dosages:
                            _dosage_record(
                                source,
                                f"{where}, ALT {k}" if multi else where,
                                _split_line(line, k, len(alts)) if multi else line,
                                rec,
                                dosage=dosage,
                                declared=header_fields,
                                n_samples=n_samples,
                                hard=row,
                                gt=gt,
                                out=dblock[filled],
                            )
                        pvar_lines.append(f"{chrom}\t{rec.POS}\t{vid}\t{ref}\t{alt}\n")
                        filled += 1
                        n_kept += 1
                        if filled == block_rows:
                            bed.write(dblock.tobytes() if with_dosages else pack_bed(block).tobytes())
                            pvar.write("".join(pvar_lines))
                            pvar_lines.clear()
                            filled = 0
                if filled:
                    bed.write(dblock[:filled].tobytes() if with_dosages else pack_bed(block[:filled]).tobytes())
                    pvar.write("".join(pvar_lines))
            if text is not None and next(text, None) is not None:
                raise GenotypeFileError(f"{source}: the VCF text has more records than htslib parsed")
        finally:
            vcf.close()
            if text is not None:
                text.close()
        if n_kept and not n_gt and not with_dosages:
            raise GenotypeFileError(
                f"{source}: no record has a GT field, so no sample has a genotype call; a VCF without GT "
                "cannot be read as hard calls (FORMAT fields declared: "
                f"{', '.join(sorted(header_fields)) or 'none'})"
            )
        if n_kept == 0:
            raise GenotypeFileError(
                f"{source}: no biallelic SNV to cache ({n_multi} multiallelic and {n_non_snv} other records skipped, "
                f"after splitting {n_split} multiallelic records)"
            )
        try:
            if with_dosages:
                _dosages_to_pgen(tmp["dos"], tmp["pgen"], n_samples, n_kept, block_rows, pgenlib)
            else:
                _bed_to_pgen(tmp["bed"], tmp["pgen"], n_samples, n_kept, block, pgenlib)
        except RuntimeError as exc:
            raise GenotypeFileError(f"cannot write VCF cache {tmp['pgen']} ({exc})") from exc

        record = dict(fingerprint)
        record.update(
            n_samples=n_samples,
            n_variants=n_kept,
            multiallelic_skipped=n_multi,
            multiallelic_split=n_split,
            non_snv_skipped=n_non_snv,
        )
        return commit(paths, tmp, record, CACHE_FORMAT_VERSION)
    except OSError as exc:
        raise GenotypeFileError(f"cannot write VCF cache in {cache_dir} ({exc.strerror or exc})") from exc


def _bed_to_pgen(bed: Path, pgen: Path, n_samples: int, n_variants: int, block: np.ndarray, pgenlib: Any) -> None:
    """The temporary ``.bed`` as a hard-call ``.pgen``, one ``block`` of rows at a time."""
    reader = pgenlib.PgenReader(os.fsencode(bed), raw_sample_ct=n_samples, variant_ct=n_variants)
    writer = pgenlib.PgenWriter(os.fsencode(pgen), n_samples, variant_ct=n_variants, nonref_flags=False)
    for start in range(0, n_variants, block.shape[0]):
        stop = min(n_variants, start + block.shape[0])
        buf = block[: stop - start]
        reader.read_range(start, stop, buf)
        writer.append_biallelic_batch(buf)
    writer.close()
    reader.close()


def _dosages_to_pgen(dos: Path, pgen: Path, n_samples: int, n_variants: int, block_rows: int, pgenlib: Any) -> None:
    """The temporary dosage rows (uint16 units, :data:`~fedstat.data.vcf_dosage.MISSING`) as a
    ``.pgen`` with a dosage track.

    Each value goes to pgenlib as an exact float32 multiple of 1/16384, which pgenlib stores as
    that many units: a non-integer one as a dosage with its hard call by the 0.1 threshold (as
    plink2 derives it), an integer one as a hard call only (as plink2 keeps it), -9 as missing.
    """
    writer = pgenlib.PgenWriter(
        os.fsencode(pgen), n_samples, variant_ct=n_variants, nonref_flags=False, dosage_present=True
    )
    with dos.open("rb") as fh:
        for start in range(0, n_variants, block_rows):
            rows = min(block_rows, n_variants - start)
            units = np.fromfile(fh, dtype=np.uint16, count=rows * n_samples).reshape(rows, n_samples)
            values = units.astype(np.float32) / np.float32(DOSAGE_UNIT)
            values[units == MISSING] = -9.0
            writer.append_dosages_batch(values)
    writer.close()
