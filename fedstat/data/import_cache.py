"""Where a converted genotype file lives: the binary cache shared by the VCF and BGEN importers.

A text or foreign-format genotype file (VCF/BCF, BGEN) is converted once into plink2 files
(``.pgen/.pvar/.psam``) in a cache directory; every later job reads the ``.pgen`` with pgenlib.
A cache is keyed by the source's absolute path and the import options, and is valid only while
its fingerprint (size, mtime and a hash of the first and last MiB of the source, the format
version and the options) matches. Files are written under temporary names and renamed into
place, fingerprint last, so a crash or a full disk never leaves a half-written cache that looks
valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstat.errors import GenotypeFileError
from fedstat.formats.atomic import atomic_path

_HASH_SPAN = 1 << 20  # bytes hashed at each end of the source file

#: Values of :attr:`ImportOptions.vcf_dosage`: plink2's ``--vcf … dosage=`` fields, or ``GT`` for
#: hard calls only (plink2 without ``dosage=``).
VCF_DOSAGE_FIELDS = ("DS", "HDS", "GP", "GT")

#: Values of :attr:`ImportOptions.bgen_ref`: plink2's ``--bgen … ref-first`` / ``ref-last``.
BGEN_REF_ALLELES = ("first", "last")


@dataclass(frozen=True)
class ImportOptions:
    """How a site's VCF or BGEN is imported (a ``[[datasets]]`` entry's keys in ``site.toml``).

    Attributes
    ----------
    vcf_dosage : which FORMAT field holds a VCF's dosages, as plink2's ``dosage=`` names it
        (:data:`VCF_DOSAGE_FIELDS`); ``""`` refuses a VCF that holds dosage fields rather than
        silently reading its hard calls
    bgen_ref : which allele of each BGEN record is REF (:data:`BGEN_REF_ALLELES`); ``""`` is
        refused for a BGEN, as plink2 refuses ``--bgen`` without ``ref-first``/``ref-last``
    """

    vcf_dosage: str = ""
    bgen_ref: str = ""


#: Import options when a dataset sets none.
DEFAULT_IMPORT = ImportOptions()


#: The files of one cache entry; ``json`` is the fingerprint record.
CACHE_EXTS = ("pgen", "pvar", "psam", "json")


def source_fingerprint(path: Path, what: str = "genotype file") -> dict[str, Any]:
    """Size, mtime and a SHA-256 of the first and last MiB of ``path``."""
    try:
        st = path.stat()
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            digest.update(fh.read(_HASH_SPAN))
            if st.st_size > 2 * _HASH_SPAN:
                fh.seek(st.st_size - _HASH_SPAN)
            digest.update(fh.read(_HASH_SPAN))
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    return {
        "source": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "head_tail_sha256": digest.hexdigest(),
    }


def cache_stem(source: Path, suffixes: tuple[str, ...], options: str = "") -> str:
    """The file stem of ``source``'s cache: its name without ``suffixes`` and a hash of its path
    (and of ``options``, so that one source imported two ways has two caches)."""
    name = source.name
    for suffix in suffixes:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    key = hashlib.sha256(os.fsencode(source) + (b"\0" + options.encode() if options else b"")).hexdigest()[:16]
    return f"{name}-{key}"


def cache_paths(cache_dir: Path, stem: str) -> dict[str, Path]:
    """The cache files of ``stem``, by extension (:data:`CACHE_EXTS`)."""
    return {ext: cache_dir / f"{stem}.{ext}" for ext in CACHE_EXTS}


def load_valid(paths: dict[str, Path], fingerprint: dict[str, Any], format_version: int) -> dict[str, Any] | None:
    """The stored fingerprint record if the cache is complete and matches, else None."""
    try:
        record = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format_version") != format_version:
        return None
    if any(record.get(k) != v for k, v in fingerprint.items()):
        return None
    sizes = record.get("file_sizes", {})
    for ext in ("pgen", "pvar", "psam"):
        try:
            if paths[ext].stat().st_size != sizes.get(ext):
                return None
        except OSError:
            return None
    return record


@contextlib.contextmanager
def temporary_files(cache_dir: Path, stem: str, exts: tuple[str, ...], what: str) -> Iterator[dict[str, Path]]:
    """Temporary names in ``cache_dir`` for one build, by extension; whatever is left of them
    (all of them after a failure) is removed on exit. ``what`` names the cache in errors."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenotypeFileError(f"cannot create {what} directory {cache_dir} ({exc.strerror})") from exc
    token = secrets.token_hex(6)
    tmp = {ext: cache_dir / f".{stem}.tmp-{token}.{ext}" for ext in exts}
    try:
        yield tmp
    finally:
        for p in tmp.values():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def commit(paths: dict[str, Path], tmp: dict[str, Path], record: dict[str, Any], format_version: int) -> dict[str, Any]:
    """Move a finished build into place and return its fingerprint record.

    ``record`` is the source fingerprint plus what the importer counted; the format version and
    the file sizes are added here. The fingerprint goes first and comes back last: a cache without
    it is never used. The files are renamed as their contexts exit, last entered first: pgen,
    pvar, psam, json.
    """
    record = dict(record)
    record.update(
        format_version=format_version,
        file_sizes={ext: tmp[ext].stat().st_size for ext in ("pgen", "pvar", "psam")},
    )
    with contextlib.ExitStack() as renames:
        for ext in ("json", "psam", "pvar", "pgen"):
            renames.enter_context(atomic_path(paths[ext], tmp=tmp[ext]))
        tmp["json"].write_text(json.dumps(record, indent=1), encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            paths["json"].unlink()
    return record
