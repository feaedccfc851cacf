"""Variant tables and cross-site harmonization.

A variant is identified across sites by its *key*: chromosome, position and the unordered
pair of alleles. Two sites that list the same SNV with REF and ALT swapped hold the same
variant; the coordinator fixes one orientation and the swapped site flips its genotypes
(``g -> 2 - g``) instead of dropping the variant.

References
----------
plink2 ``--pmerge`` matches variants by position and allele set in the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedstat.errors import InputError


@dataclass(frozen=True)
class VariantTable:
    """Per-variant annotation, in file order.

    Attributes
    ----------
    chrom : [array, shape: (n_variants,), dtype object] chromosome codes as written in the file
    pos : [array, shape: (n_variants,), dtype int64] 1-based positions
    id : [array, shape: (n_variants,), dtype object] variant IDs (``.`` when absent)
    ref, alt : [array, shape: (n_variants,), dtype object] reference and alternate allele
    """

    chrom: np.ndarray
    pos: np.ndarray
    id: np.ndarray
    ref: np.ndarray
    alt: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.chrom)
        for name in ("pos", "id", "ref", "alt"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"VariantTable.{name} has {len(getattr(self, name))} rows, chrom has {n}")

    def __len__(self) -> int:
        return len(self.chrom)

    def take(self, idx: np.ndarray) -> VariantTable:
        """Rows ``idx`` (any integer index array) as a new table."""
        return VariantTable(
            chrom=self.chrom[idx],
            pos=self.pos[idx],
            id=self.id[idx],
            ref=self.ref[idx],
            alt=self.alt[idx],
        )

    def flipped(self, flip: np.ndarray) -> VariantTable:
        """The same variants with REF and ALT exchanged where ``flip`` is true."""
        flip = np.asarray(flip, dtype=bool)
        return VariantTable(
            chrom=self.chrom,
            pos=self.pos,
            id=self.id,
            ref=np.where(flip, self.alt, self.ref),
            alt=np.where(flip, self.ref, self.alt),
        )

    @classmethod
    def from_lists(
        cls,
        chrom: Sequence[str],
        pos: Sequence[int],
        id: Sequence[str],  # noqa: A002 - mirrors the plink2 column name
        ref: Sequence[str],
        alt: Sequence[str],
    ) -> VariantTable:
        return cls(
            chrom=np.asarray(list(chrom), dtype=object),
            pos=np.asarray(list(pos), dtype=np.int64),
            id=np.asarray(list(id), dtype=object),
            ref=np.asarray(list(ref), dtype=object),
            alt=np.asarray(list(alt), dtype=object),
        )


@dataclass(frozen=True)
class SitePlan:
    """What one site must read to produce the harmonized variant list.

    Attributes
    ----------
    local_index : [array, shape: (n_global,), dtype int64] the site's own row for each global
        variant, in global order
    flip : [array, shape: (n_global,), dtype bool] true where the site's REF/ALT are swapped
        relative to the global orientation
    """

    local_index: np.ndarray
    flip: np.ndarray

    @property
    def n_flipped(self) -> int:
        return int(self.flip.sum())


@dataclass(frozen=True)
class Harmonization:
    """The consortium's variant list and each site's plan to read it.

    Attributes
    ----------
    variants : VariantTable of the variants present at every site, in the orientation fixed by
        majority vote across sites (ties: the first site in name order).
    plans : per site, its :class:`SitePlan`
    n_excluded : number of distinct variant keys absent at one or more sites
    n_duplicate : per site, number of its variants dropped because their key occurs twice there
    """

    variants: VariantTable
    plans: Mapping[str, SitePlan]
    n_excluded: int
    n_duplicate: Mapping[str, int]


def _chrom_rank(chrom: str) -> tuple[int, str]:
    """Sort chromosomes as plink2 does: 1..22, X, Y, XY, MT, then others by name."""
    c = chrom[3:] if chrom.lower().startswith("chr") else chrom
    if c.isdigit():
        return (int(c), "")
    order = {"X": 23, "Y": 24, "XY": 25, "MT": 26, "M": 26}
    return (order.get(c.upper(), 1000), c)


def harmonize(site_variants: Mapping[str, VariantTable]) -> Harmonization:
    """Intersect the sites' variants by key and fix one orientation.

    Parameters
    ----------
    site_variants : per site name, that site's :class:`VariantTable` in its file order.

    Returns
    -------
    Harmonization
        Global variants sorted by (chromosome, position, first site's order); a variant listed
        twice at one site (same key) is dropped there and counted in ``n_duplicate``.

    Raises
    ------
    InputError
        If no site is given, or no variant is present at every site.
    """
    if not site_variants:
        raise InputError("harmonization needs at least one site")
    names = sorted(site_variants)
    keyed: dict[str, dict[tuple[str, int, str, str], int]] = {}
    n_duplicate: dict[str, int] = {}
    for name in names:
        vt = site_variants[name]
        index: dict[tuple[str, int, str, str], int] = {}
        dup: set[tuple[str, int, str, str]] = set()
        for i, (c, p, r, a) in enumerate(zip(vt.chrom, vt.pos, vt.ref, vt.alt, strict=True)):
            lo, hi = (r, a) if r <= a else (a, r)
            key = (str(c), int(p), lo, hi)
            if key in index:
                dup.add(key)
            else:
                index[key] = i
        for key in dup:
            del index[key]
        n_duplicate[name] = len(dup)
        keyed[name] = index

    all_keys: set[tuple[str, int, str, str]] = set()
    for index in keyed.values():
        all_keys.update(index)
    common = set(keyed[names[0]])
    for name in names[1:]:
        common &= keyed[name].keys()
    n_excluded = len(all_keys) - len(common)
    if not common:
        raise InputError(
            f"no variant is present at every site ({', '.join(names)}): check that all sites "
            "use the same genome build and chromosome naming"
        )
    first = keyed[names[0]]
    order = sorted(common, key=lambda k: (_chrom_rank(k[0]), k[1], first[k]))

    n = len(order)
    chosen_ref = np.empty(n, dtype=object)
    chosen_alt = np.empty(n, dtype=object)
    ids = np.empty(n, dtype=object)
    for j, key in enumerate(order):
        votes: Counter[str] = Counter()
        first_ref = None
        for name in names:
            vt = site_variants[name]
            ref = vt.ref[keyed[name][key]]
            votes[ref] += 1
            if first_ref is None:
                first_ref = ref
        top = max(votes.values())
        ref = first_ref if votes[first_ref] == top else next(r for r, v in votes.items() if v == top)
        chosen_ref[j] = ref
        chosen_alt[j] = key[3] if key[2] == ref else key[2]
        # the ID comes from the first site that holds the variant in the chosen orientation
        for name in names:
            vt = site_variants[name]
            i = keyed[name][key]
            if vt.ref[i] == ref:
                ids[j] = vt.id[i]
                break

    plans: dict[str, SitePlan] = {}
    for name in names:
        vt = site_variants[name]
        local = np.fromiter((keyed[name][k] for k in order), dtype=np.int64, count=n)
        plans[name] = SitePlan(local_index=local, flip=vt.ref[local] != chosen_ref)
    variants = VariantTable(
        chrom=np.asarray([k[0] for k in order], dtype=object),
        pos=np.asarray([k[1] for k in order], dtype=np.int64),
        id=ids,
        ref=chosen_ref,
        alt=chosen_alt,
    )
    return Harmonization(variants=variants, plans=plans, n_excluded=n_excluded, n_duplicate=n_duplicate)
