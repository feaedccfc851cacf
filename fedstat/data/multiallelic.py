"""Multiallelic records split into biallelic ones when read, as ``bcftools norm -m-`` splits them.

A record with REF ``A`` and ALT ``C,T`` is read as two biallelic records, ``A>C`` and ``A>T``, at
the same position; each is then a variant like any other, keyed across sites by chromosome,
position and allele pair (:func:`~fedstat.data.variants.harmonize`), so a site holding ``A>C,T``
and one holding ``A>C`` and ``A>T`` as separate records hold the same two variants.

Semantics of the split (both reference tools agree; measured with plink2 2.00a3.5 ``--make-pgen
multiallelics=-`` and bcftools 1.16 ``norm -m-`` on the same VCF):

* genotypes: in the record for ALT ``k`` a sample's ALT count is the number of its alleles equal
  to ``k``; every other ALT allele counts as REF (``1/2`` is ``0/1`` in the ``A>T`` record and
  ``1/0`` in the ``A>C`` one); a missing call stays missing;
* the alleles are taken as written: no trimming or left-alignment (``GT>G,AT`` splits into
  ``GT>G`` and ``GT>AT``);
* the variant ID: every split record keeps the record's ID, as ``bcftools norm -m-`` and plink2's
  ``multiallelics=- varid-dup`` do (plink2's default, without ``varid-dup``, would set it to ``.``);
* only SNVs are kept, as for biallelic records of a VCF: a split record is kept when its REF and
  its ALT are each one of A, C, G, T (any case). The others (indels, ``*``, symbolic alleles) are
  counted as non-SNV alleles skipped, and the SNV ALTs of the record are kept.
* imputed dosages (VCF ``vcf_dosage``): ``DS`` (one value per ALT) gives the record for ALT ``k``
  its ``k``-th value; ``GP`` (one probability per genotype) gives it the probabilities of
  ``0/0``, ``0/k`` and ``k/k`` (``0`` and ``k`` for a haploid call), as ``bcftools norm -m-``
  writes them, which plink2's ``dosage=GP`` then normalises to sum to 1. plink2 2.00a3.5 itself
  refuses multiallelic dosages (``--vcf multiallelic dosage import is under development``), so the
  reference is ``bcftools norm -m-`` followed by ``plink2 --vcf … dosage=DS|GP``. ``HDS`` is not
  split: such records are skipped and counted.

What is not split, and counted as multiallelic records skipped: a ``.bim`` row with a comma in its
ALT (a ``.bed`` cannot hold a multiallelic variant), the multiallelic rows of a ``.pgen`` that also
has a dosage track (plink2 2.00a3.5 cannot write or split multiallelic dosages, so there is no
reference to match), multiallelic VCF records in ``vcf_dosage = "HDS"`` mode, and multiallelic BGEN
records (plink2 2.00a3.5's ``--bgen`` does not import them either).

References
----------
bcftools norm: https://samtools.github.io/bcftools/bcftools.html#norm; plink2 ``--make-pgen
multiallelics=``: plink-ng 2.00a3.5 ``plink2_help.cc`` (documented in the source, hidden from
``--help``) and ``plink2_data.cc``; pgenlib ``PgrGet1`` (``read_list(…, allele_idx=k)``: the count
of allele ``k``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_SNV_BASES = frozenset("ACGTacgt")


def is_snv(ref: str, alt: str) -> bool:
    """Whether a biallelic REF/ALT pair is an SNV fedstat keeps (each one of A, C, G, T, any case)."""
    return len(ref) == 1 and len(alt) == 1 and ref in _SNV_BASES and alt in _SNV_BASES


@dataclass(frozen=True)
class SplitCounts:
    """What splitting a file's multiallelic records did (aggregate counts about the file only).

    Attributes
    ----------
    split : multiallelic records split into biallelic ones
    skipped : multiallelic records skipped whole (not split; see the module notes for which)
    non_snv : biallelic records, original or from a split, skipped as not SNVs
    """

    split: int = 0
    skipped: int = 0
    non_snv: int = 0


def snv_alts(ref: str, alts: list[str]) -> tuple[list[tuple[int, str]], int]:
    """The SNV records a multiallelic record splits into.

    Parameters
    ----------
    ref : the record's REF, as written
    alts : its ALT alleles, in order (at least two)

    Returns
    -------
    kept : (1-based ALT index, ALT allele) of each kept split record, in ALT order
    n_non_snv : how many split records are skipped as not SNVs
    """
    kept = [(k, a) for k, a in enumerate(alts, start=1) if is_snv(ref, a)]
    return kept, len(alts) - len(kept)


def read_split_block(
    read_list: Callable[..., None],
    rows: np.ndarray,
    allele_idx: np.ndarray,
    block: np.ndarray,
) -> None:
    """Fill ``block`` with each row's counts of its own ALT allele, one pgenlib call per allele index.

    Parameters
    ----------
    read_list : pgenlib's ``read_list`` or ``read_dosages_list`` of an open reader (with the file's
        ``allele_idx_offsets``)
    rows : [array, shape: (b,), integer] file rows to read, any order, repeats allowed
    allele_idx : [array, shape: (b,), integer] for each row the allele whose count is read (1 = the
        first ALT; ``k`` for the split record of ALT ``k``)
    block : [array, shape: (b, n_samples)] written in place, row ``i`` = allele ``allele_idx[i]``'s
        counts (every other allele counted as REF; missing -9), as pgenlib's ``PgrGet1`` gives them
    """
    for k in np.unique(allele_idx):
        sel = np.flatnonzero(allele_idx == k)
        part = np.empty((sel.size, block.shape[1]), dtype=block.dtype)
        read_list(np.ascontiguousarray(rows[sel], dtype=np.uint32), part, allele_idx=int(k))
        block[sel] = part


def alt_counts_by_allele(allele: np.ndarray, missing: np.ndarray, alleles: list[int]) -> np.ndarray:
    """Per split record, each sample's count of that record's ALT allele (a VCF's GT).

    Parameters
    ----------
    allele : [array, shape: (n_samples, 2), integer] the two allele indices of each call (a haploid
        call repeats its allele), any value where ``missing``
    missing : [array, shape: (n_samples,), bool] calls with a missing allele
    alleles : the ALT indices (1-based) of the kept split records

    Returns
    -------
    [array, shape: (len(alleles), n_samples), dtype int8] counts 0/1/2 of each ALT, -9 missing
    """
    out = np.empty((len(alleles), allele.shape[0]), dtype=np.int8)
    for r, k in enumerate(alleles):
        out[r] = (allele[:, 0] == k).astype(np.int8) + (allele[:, 1] == k).astype(np.int8)
    out[:, missing] = -9
    return out


def split_cells(cells: list[str], keys: list[str], fields: dict[str, str], k: int, n_alts: int) -> list[str]:
    """One split record's sample columns, the dosage fields cut down as ``bcftools norm -m-`` cuts them.

    Parameters
    ----------
    cells : the record's sample columns (``:``-separated subfields in FORMAT order)
    keys : the record's FORMAT keys
    fields : FORMAT key -> how to split it: ``"A"`` (one value per ALT: keep the ``k``-th) or
        ``"G"`` (one per genotype: keep those of ``0/0``, ``0/k``, ``k/k``, or ``0`` and ``k`` when
        the field has one value per allele, a haploid call); other subfields are left as they are
        (the caller reads only GT, whose split it does itself, and the dosage fields)
    k : the split record's ALT index (1-based)
    n_alts : the record's number of ALT alleles

    Returns
    -------
    The sample columns of the record for ALT ``k``. A value with another count than its Number
    says (neither the diploid nor the haploid one for ``G``) is left whole, for the dosage parser
    to refuse as plink2 would refuse a malformed biallelic value.
    """
    where = [(i, fields[key]) for i, key in enumerate(keys) if key in fields]
    n_diploid = (n_alts + 1) * (n_alts + 2) // 2
    hom = k * (k + 1) // 2 + k  # VCF genotype order: index of j/k (j <= k) is k(k+1)/2 + j
    out = []
    for cell in cells:
        parts = cell.split(":")
        for i, number in where:
            if i >= len(parts) or parts[i] in (".", ""):
                continue
            values = parts[i].split(",")
            if number == "A" and len(values) == n_alts:
                parts[i] = values[k - 1]
            elif number == "G" and len(values) == n_diploid:
                parts[i] = ",".join((values[0], values[k * (k + 1) // 2], values[hom]))
            elif number == "G" and len(values) == n_alts + 1:
                parts[i] = ",".join((values[0], values[k]))
        out.append(":".join(parts))
    return out
