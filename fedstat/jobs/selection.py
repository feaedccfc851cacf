"""Variant selection as plink2 applies it at load: ``--chr``, ``--not-chr``, ``--from-bp``/``--to-bp``,
``--extract``, ``--exclude`` and ``--snps-only``.

A job's selection lives in its signed spec's options and is applied by the coordinator to the
harmonized variant list, before any round (``coordinator.harmonizer.select_variants``): every
analysis, ``--mind`` and the variant QC filters included, then sees the selected variants only,
as plink2 does on the pooled file. Variant IDs are the harmonized ones (the IDs plink2 would read
in the pooled file).

Options (keys of :attr:`fedstat.jobs.spec.JobSpec.options`):

============  ===================================================================================
``chr``       plink2's ``--chr`` text: codes and numeric ranges, comma-separated (``1-4,22,X``)
``not_chr``   likewise for ``--not-chr``
``from_bp``   ``--from-bp N`` (needs ``chr`` naming exactly one chromosome)
``to_bp``     ``--to-bp N`` (likewise)
``extract``   ``--extract``: the variant IDs to keep, separated by single spaces
``exclude``   ``--exclude``: the variant IDs to leave out, likewise
``snps_only`` ``--snps-only``: ``1`` (every allele one character) or ``just-acgt`` (A, C, G, T or
              a missing ``.`` only, either case)
============  ===================================================================================

References
----------
plink2 variant filters: https://www.cog-genomics.org/plink/2.0/filter#variant (behaviour, messages
and range syntax measured with plink2 2.00a3.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedstat.data.variants import VariantTable, normalise_chrom
from fedstat.errors import InputError, shown

if TYPE_CHECKING:
    from fedstat.jobs.spec import JobSpec

__all__ = ["MAX_VARIANT_IDS", "SELECTION_OPTIONS", "VariantSelection", "read_id_list", "variant_selection"]

#: Spec options holding a variant selection, and the plink2 flag each comes from.
SELECTION_OPTIONS = {
    "chr": "--chr",
    "not_chr": "--not-chr",
    "from_bp": "--from-bp",
    "to_bp": "--to-bp",
    "extract": "--extract",
    "exclude": "--exclude",
    "snps_only": "--snps-only",
}
#: Most variant IDs one --extract or --exclude list may hold; its text is also bounded by
#: ``KNOWN_OPTIONS`` (the signed spec travels in one gRPC message of at most 8 MiB).
MAX_VARIANT_IDS = 1_000_000
#: Allele codes ``--snps-only just-acgt`` accepts (plink2 also keeps a missing ALT, ``.``).
_ACGT = frozenset("ACGTacgt.")
#: Numeric codes a --chr range may span: plink2's human set, 0 (unplaced) to 28 (PAR2).
_MAX_RANGE_CODE = 28


@dataclass(frozen=True)
class VariantSelection:
    """The variants a job keeps, as plink2's load-time filters choose them.

    Attributes
    ----------
    chroms : chromosome codes ``--chr`` keeps (plink2's spelling), or None for every chromosome
    not_chroms : chromosome codes ``--not-chr`` leaves out
    from_bp, to_bp : inclusive position bounds (``--from-bp``/``--to-bp``), or None
    extract : variant IDs ``--extract`` keeps, or None for every ID
    exclude : variant IDs ``--exclude`` leaves out
    snps_only : None, ``"snps-only"`` (one-character alleles) or ``"just-acgt"``
    """

    chroms: frozenset[str] | None = None
    not_chroms: frozenset[str] = frozenset()
    from_bp: int | None = None
    to_bp: int | None = None
    extract: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    snps_only: str | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """The plink2 flags this selection uses, e.g. ``("--chr", "--extract")``; () selects everything."""
        given = (
            ("--chr", self.chroms is not None),
            ("--not-chr", bool(self.not_chroms)),
            ("--from-bp", self.from_bp is not None),
            ("--to-bp", self.to_bp is not None),
            ("--extract", self.extract is not None),
            ("--exclude", bool(self.exclude)),
            ("--snps-only", self.snps_only is not None),
        )
        return tuple(flag for flag, on in given if on)

    def keep(self, variants: VariantTable) -> np.ndarray:
        """Which rows of ``variants`` the selection keeps: [array, shape: (n_variants,), dtype bool]."""
        n = len(variants)
        keep = np.ones(n, dtype=bool)
        chrom = variants.chrom
        if self.chroms is not None:
            keep &= np.fromiter((c in self.chroms for c in chrom), dtype=bool, count=n)
        if self.not_chroms:
            keep &= ~np.fromiter((c in self.not_chroms for c in chrom), dtype=bool, count=n)
        if self.from_bp is not None:
            keep &= variants.pos >= self.from_bp
        if self.to_bp is not None:
            keep &= variants.pos <= self.to_bp
        if self.extract is not None:
            keep &= np.fromiter((i in self.extract for i in variants.id), dtype=bool, count=n)
        if self.exclude:
            keep &= ~np.fromiter((i in self.exclude for i in variants.id), dtype=bool, count=n)
        if self.snps_only == "snps-only":
            one = (len(r) == 1 and len(a) == 1 for r, a in zip(variants.ref, variants.alt, strict=True))
            keep &= np.fromiter(one, dtype=bool, count=n)
        elif self.snps_only == "just-acgt":
            acgt = (r in _ACGT and a in _ACGT for r, a in zip(variants.ref, variants.alt, strict=True))
            keep &= np.fromiter(acgt, dtype=bool, count=n)
        assert keep.shape == (n,)
        return keep


def _chrom_codes(flag: str, text: str) -> frozenset[str]:
    """plink2's --chr / --not-chr text: codes and numeric ranges (``1-4``, ``chr1-chr3``), separated
    by commas (empty items skipped); codes read as :func:`normalise_chrom` reads them."""
    codes: set[str] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "-" not in item:
            codes.add(normalise_chrom(item))
            continue
        ends = item.split("-")
        if len(ends) != 2:
            raise InputError(f"invalid {flag} parameter {shown(item)}")
        numbers = []
        for end in ends:
            code = end[3:] if end[:3].lower() == "chr" else end
            if not (code.isascii() and code.isdigit() and len(code) <= 2 and int(code) <= _MAX_RANGE_CODE):
                raise InputError(
                    f"{flag} chromosome code {shown(end)} cannot be an end of a range (ranges run between "
                    f"numeric codes 0-{_MAX_RANGE_CODE}, e.g. 1-22 or 1-26 for X, Y, XY and MT)"
                )
            numbers.append(int(code))
        lo, hi = numbers
        if hi <= lo:
            raise InputError(f"{flag} chromosome code {shown(ends[1])} is not greater than {shown(ends[0])}")
        codes.update(normalise_chrom(str(k)) for k in range(lo, hi + 1))
    if not codes:
        raise InputError(f"{flag} names no chromosome")
    return frozenset(codes)


def _position(flag: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InputError(f"{flag} takes a base-pair position (a whole number, 0 or more), got {shown(text)}")
    return int(text)


def _ids(flag: str, text: str) -> frozenset[str]:
    ids = text.split()
    if len(ids) > MAX_VARIANT_IDS:
        raise InputError(f"{flag} lists {len(ids)} variant IDs; at most {MAX_VARIANT_IDS} per job")
    return frozenset(ids)


def variant_selection(spec: JobSpec) -> VariantSelection:
    """A spec's variant selection; InputError naming the flag when its option is malformed."""
    o = spec.options
    chroms = _chrom_codes("--chr", o["chr"]) if "chr" in o else None
    not_chroms = _chrom_codes("--not-chr", o["not_chr"]) if "not_chr" in o else frozenset()
    from_bp = _position("--from-bp", o["from_bp"]) if "from_bp" in o else None
    to_bp = _position("--to-bp", o["to_bp"]) if "to_bp" in o else None
    if (from_bp is not None or to_bp is not None) and (chroms is None or len(chroms) != 1):
        raise InputError(
            "--from-bp and --to-bp must be used with --chr, and only one chromosome (as plink2), e.g. "
            "--chr 2 --from-bp 100000 --to-bp 200000"
        )
    if from_bp is not None and to_bp is not None and to_bp < from_bp:
        raise InputError(f"--to-bp {to_bp} is smaller than --from-bp {from_bp}")
    extract = _ids("--extract", o["extract"]) if "extract" in o else None
    exclude = _ids("--exclude", o["exclude"]) if "exclude" in o else frozenset()
    if extract is not None and not extract:
        raise InputError("--extract lists no variant ID: it would select no variant")
    snps_only = o.get("snps_only")
    if snps_only is not None and snps_only not in ("1", "just-acgt"):
        raise InputError(f"invalid --snps-only argument {shown(snps_only)}; plink2's modifier is just-acgt")
    return VariantSelection(
        chroms=chroms,
        not_chroms=not_chroms,
        from_bp=from_bp,
        to_bp=to_bp,
        extract=extract,
        exclude=exclude,
        snps_only=None if snps_only is None else "snps-only" if snps_only == "1" else snps_only,
    )


def read_id_list(flag: str, text: str, *, max_chars: int) -> str:
    """A --extract/--exclude file's text as plink2 reads it (variant IDs separated by any
    whitespace), as the spec option: the distinct IDs in file order, separated by single spaces.

    Raises
    ------
    InputError
        If the file lists no ID, more than :data:`MAX_VARIANT_IDS`, or more text than ``max_chars``.
    """
    ids = list(dict.fromkeys(text.split()))
    if not ids:
        raise InputError(f"{flag} file lists no variant ID")
    joined = " ".join(ids)
    if len(ids) > MAX_VARIANT_IDS or len(joined) > max_chars:
        raise InputError(
            f"{flag} file lists {len(ids)} variant IDs ({len(joined)} characters); a job carries at most "
            f"{MAX_VARIANT_IDS} IDs in at most {max_chars} characters (its signed spec travels in one message). "
            "Select by --chr/--from-bp/--to-bp, or split the job"
        )
    return joined
