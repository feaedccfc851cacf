"""A binary cache of a VCF / BCF, so that jobs never parse text genotypes.

A site's VCF is parsed once into plink2 files (``.pgen/.pvar/.psam``) in a cache directory;
every later job reads the ``.pgen`` with pgenlib, about 50x faster than re-parsing. The cache
is keyed by the VCF's absolute path and invalidated by a fingerprint (size, mtime and a hash of
the first and last MiB), so editing or replacing the VCF triggers a rebuild.

What is kept: biallelic SNVs only (REF and ALT each one of A, C, G, T; stored upper-case).
Multiallelic records and everything else (indels, symbolic alleles, ``ALT = .``) are skipped
and counted.

How calls become ALT allele counts (0, 1, 2; -9 missing):

* diploid calls count the ALT alleles (phase is ignored);
* haploid calls (e.g. chrX / chrY / MT in males: ``0`` or ``1``) are treated as homozygous,
  so ``0`` -> 0 and ``1`` -> 2, as plink2's VCF import does for haploid GT;
* a call with any missing allele (``./.``, ``.``, and half-calls such as ``0/.``) is missing,
  as with plink2's ``--vcf-half-call missing``;
* a record without a GT field is missing for every sample.

What is refused (:class:`~fedstat.errors.GenotypeFileError` naming the record): a record
htslib cannot parse, a GT allele index above 1 in a biallelic record, ploidy above 2,
whitespace in CHROM or ID, text that is not UTF-8, and a BGZF file (``.vcf.gz``, ``.bcf``)
without its end-of-file block, which is what a copy cut at a block boundary looks like.

The cache is written under temporary names and renamed into place, fingerprint last, so a
crash or a full disk never leaves a half-written cache that looks valid.

References
----------
plink2 ``--vcf`` import: https://www.cog-genomics.org/plink/2.0/input#vcf
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.data.import_cache import cache_paths, cache_stem, commit, load_valid, source_fingerprint, temporary_files
from fedstat.errors import GenotypeFileError

#: Bump when the cache layout or the genotype conversion changes; old caches are rebuilt.
#: 3: VCFs holding dosages (DS/GP/HDS) or no GT are refused, so older caches of them must go.
CACHE_FORMAT_VERSION = 3

#: FORMAT fields holding imputed dosages, as plink2's ``--vcf … dosage=`` reads them.
DOSAGE_FIELDS = ("DS", "HDS", "GP")

_SNV_BASES = frozenset("ACGT")
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
    multiallelic_skipped : VCF records with more than one ALT allele, not cached
    non_snv_skipped : biallelic records that are not SNVs (indels, symbolic, ``ALT = .``)
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


def ensure_vcf_cache(vcf_path: str | Path, cache_dir: str | Path, *, threads: int = 1) -> CacheInfo:
    """Build, or reuse, the binary cache of a VCF / BCF.

    Parameters
    ----------
    vcf_path : a ``.vcf``, ``.vcf.gz`` (gzip or bgzip) or ``.bcf`` file
    cache_dir : directory for the cache (created if needed); several VCFs may share one
    threads : htslib decompression threads used while parsing

    Returns
    -------
    CacheInfo
        ``rebuilt`` is false when a cache whose fingerprint matches the VCF already existed.

    Raises
    ------
    GenotypeFileError
        If the VCF cannot be read, is malformed (naming the record number and the last good
        position), has no samples, duplicate or whitespace-containing sample names, ploidy
        above 2, or no biallelic SNV; or if the cache cannot be written.

    Notes
    -----
    The VCF is parsed once and streamed: genotypes go, one bounded block at a time, to a
    temporary PLINK1 ``.bed`` (the variant count is not known until the end, and pgenlib's
    ``PgenWriter`` needs it up front), which is then converted block by block to ``.pgen``.
    Peak memory is one block (at most 64 MiB of int8 genotypes), not the whole matrix.
    """
    source = Path(vcf_path).absolute()
    cache_dir = Path(cache_dir)
    fingerprint = source_fingerprint(source, "VCF")
    stem = cache_stem(source, (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf"))
    paths = cache_paths(cache_dir, stem)
    record = load_valid(paths, fingerprint, CACHE_FORMAT_VERSION)
    rebuilt = False
    if record is None:
        record = _build(source, cache_dir, stem, paths, fingerprint, threads=threads)
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
    )


def dosage_refusal(path: Path, holds: str, convert: str) -> str:
    """Why a VCF with imputed dosages is refused, and how to convert it so that its dosages are read."""
    return (
        f"{path}: holds imputed dosages ({holds}). fedstat does not read dosages from a VCF in this version, "
        "and plink2 would use them in --freq, --glm and --pca (given dosage=), so results would silently differ "
        f"from plink2's; the file is refused. Convert it as plink2 would import it, e.g. `{convert}` (fedstat "
        "reads a .pgen's dosages), and point the dataset at the result"
    )


def _format_fields(vcf: Any) -> set[str]:
    """The FORMAT field IDs the VCF header declares."""
    return {str(h.info().get("ID", "")) for h in vcf.header_iter() if h.type == "FORMAT"}


def _refuse_dosages(source: Path, fields: set[str] | list[str], where: str = "") -> None:
    held = [f for f in DOSAGE_FIELDS if f in fields]
    if held:
        at = f"FORMAT {'/'.join(held)}{where}"
        # the dosages kept, hard calls from them by plink2's --hard-call-threshold (0.1)
        convert = f"plink2 --vcf {source} dosage={held[0]} --make-pgen --out NEW"
        if "GT" not in fields:
            at += ", and no GT: its calls are only in dosage fields"
        raise GenotypeFileError(dosage_refusal(source, at, convert))


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
) -> dict[str, Any]:
    import cyvcf2
    import pgenlib

    _quiet_htslib(cyvcf2)
    with temporary_files(cache_dir, stem, ("bed", "pgen", "pvar", "psam", "json"), "VCF cache") as tmp:
        return _convert(source, cache_dir, paths, tmp, fingerprint, threads=threads, cyvcf2=cyvcf2, pgenlib=pgenlib)


def _convert(
    source: Path,
    cache_dir: Path,
    paths: dict[str, Path],
    tmp: dict[str, Path],
    fingerprint: dict[str, Any],
    *,
    threads: int,
    cyvcf2: Any,
    pgenlib: Any,
) -> dict[str, Any]:
    try:
        _check_bgzf_end(source)
        try:
            vcf = cyvcf2.VCF(str(source), gts012=True, threads=max(1, threads))
        except Exception as exc:  # cyvcf2: OSError, or bare Exception for a bad header
            raise GenotypeFileError(f"{source}: not a readable VCF/BCF file (or its header is malformed)") from exc
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
            _refuse_dosages(source, header_fields)
            tmp["psam"].write_text("#IID\n" + "".join(f"{s}\n" for s in samples), encoding="utf-8")

            block_rows = max(1, min(4096, _MAX_BLOCK_BYTES // n_samples))
            block = np.empty((block_rows, n_samples), dtype=np.int8)
            n_kept = n_multi = n_non_snv = n_gt = 0
            filled = 0
            with tmp["bed"].open("wb") as bed, tmp["pvar"].open("w", encoding="utf-8") as pvar:
                bed.write(_BED_MAGIC)
                pvar.write("#CHROM\tPOS\tID\tREF\tALT\n")
                pvar_lines: list[str] = []
                for n, rec, chrom, ref, alts in _records(vcf, source):
                    if len(alts) > 1:
                        n_multi += 1
                        continue
                    ref = ref.upper()
                    alt = alts[0].upper() if alts else "."
                    if ref not in _SNV_BASES or alt not in _SNV_BASES:
                        n_non_snv += 1
                        continue
                    where = f"record {n} ({chrom}:{rec.POS})"
                    vid = rec.ID or "."
                    if _WHITESPACE.search(chrom) or _WHITESPACE.search(vid):
                        raise GenotypeFileError(f"{source}: {where}: whitespace in CHROM or ID")
                    fields: list[str] = rec.FORMAT or []
                    _refuse_dosages(source, fields, f" at {where}, undeclared in the header")
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
                        if not _alt_counts(gt, block[filled]):
                            raise GenotypeFileError(f"{source}: {where}: GT allele index above 1 in a biallelic record")
                    else:
                        block[filled] = -9
                    pvar_lines.append(f"{chrom}\t{rec.POS}\t{vid}\t{ref}\t{alt}\n")
                    filled += 1
                    n_kept += 1
                    if filled == block_rows:
                        bed.write(pack_bed(block).tobytes())
                        pvar.write("".join(pvar_lines))
                        pvar_lines.clear()
                        filled = 0
                if filled:
                    bed.write(pack_bed(block[:filled]).tobytes())
                    pvar.write("".join(pvar_lines))
        finally:
            vcf.close()
        if n_kept and not n_gt:
            raise GenotypeFileError(
                f"{source}: no record has a GT field, so no sample has a genotype call; a VCF without GT "
                "cannot be read as hard calls (FORMAT fields declared: "
                f"{', '.join(sorted(header_fields)) or 'none'})"
            )
        if n_kept == 0:
            raise GenotypeFileError(
                f"{source}: no biallelic SNV to cache ({n_multi} multiallelic and {n_non_snv} other records skipped)"
            )

        # .bed -> .pgen, one bounded block at a time
        try:
            reader = pgenlib.PgenReader(os.fsencode(tmp["bed"]), raw_sample_ct=n_samples, variant_ct=n_kept)
            writer = pgenlib.PgenWriter(os.fsencode(tmp["pgen"]), n_samples, variant_ct=n_kept, nonref_flags=False)
            for start in range(0, n_kept, block_rows):
                stop = min(n_kept, start + block_rows)
                buf = block[: stop - start]
                reader.read_range(start, stop, buf)
                writer.append_biallelic_batch(buf)
            writer.close()
            reader.close()
        except RuntimeError as exc:
            raise GenotypeFileError(f"cannot write VCF cache {tmp['pgen']} ({exc})") from exc

        record = dict(fingerprint)
        record.update(
            n_samples=n_samples,
            n_variants=n_kept,
            multiallelic_skipped=n_multi,
            non_snv_skipped=n_non_snv,
        )
        return commit(paths, tmp, record, CACHE_FORMAT_VERSION)
    except OSError as exc:
        raise GenotypeFileError(f"cannot write VCF cache in {cache_dir} ({exc.strerror or exc})") from exc
