"""``--adjust``: multiple-testing corrections of a ``--glm``'s p-values, as plink2 computes them.

Coordinator side only: a function of the per-variant p-values the job has already released
(one per variant, the ADD test), so it needs no site computation and releases nothing new. The
genomic-inflation estimate λ is an aggregate of those p-values and goes to the job log.

Every value is kept as a natural logarithm (as plink2 does, so p-values below 1e-308 compare
and print correctly). With ``n`` valid tests sorted by unadjusted p, ``p_(0) <= p_(1) <= …``:

========  ====================================================================================
UNADJ     p
GC        ``chisq_sf(chisq(p) / λ, 1)``; λ = median 1-df χ² of the p-values / 0.456, at least 1
QQ        ``(i + 0.5) / n``
BONF      ``min(1, n·p)``
HOLM      running max of ``min(1, (n − i)·p_(i))``
SIDAK_SS  ``1 − (1 − p)^n``
SIDAK_SD  running max of ``1 − (1 − p_(i))^(n − i)``
FDR_BH    running min from the bottom of ``p_(i)·n / (i + 1)``
FDR_BY    running min from the bottom of ``min(1, p_(i)·n·H_n / (i + 1))``, ``H_n = Σ 1/k``
========  ====================================================================================

With the ``gc`` modifier, BONF … FDR_BY correct the GC p-values instead (UNADJ and the order stay).

References
----------
plink2 2.00a3.5 ``plink2_adjust.cc`` (``Multcomp``), called from ``plink2_glm.cc`` (``GlmMain``);
``LnPToChisq`` and ``ChisqToLnP`` (:mod:`fedstat.stats.chisq1`). Benjamini & Hochberg (1995), Benjamini &
Yekutieli (2001), Holm (1979), Devlin & Roeder (1999) for genomic control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedstat.errors import InputError, shown
from fedstat.stats.chisq1 import chisq_to_ln_p, ln_p_to_chisq

__all__ = [
    "ADJUST_COLUMNS",
    "DEFAULT_COLUMNS",
    "AdjustOptions",
    "Adjusted",
    "lambda_log_line",
    "multcomp",
    "sort_order",
]

#: ``--adjust cols=`` column names in file order (plink2's; ``ID`` is always written).
ADJUST_COLUMNS = (
    "chrom",
    "pos",
    "ref",
    "alt1",
    "alt",
    "a1",
    "unadj",
    "gc",
    "qq",
    "bonf",
    "holm",
    "sidakss",
    "sidaksd",
    "fdrbh",
    "fdrby",
)
#: plink2's default columns: ``#CHROM ID A1 UNADJ GC BONF HOLM SIDAK_SS SIDAK_SD FDR_BH FDR_BY``.
DEFAULT_COLUMNS = frozenset({"chrom", "a1", "unadj", "gc", "bonf", "holm", "sidakss", "sidaksd", "fdrbh", "fdrby"})
_MODIFIERS = ("gc", "log10", "cols=")
_LN2 = 0.6931471805599453  # plink2 kLn2


@dataclass(frozen=True)
class AdjustOptions:
    """What ``--adjust [gc] [log10] [cols=…]`` asks for.

    Attributes
    ----------
    gc : correct the genomic-control p-values instead of the unadjusted ones
    log10 : write ``-log10`` of every p-value, columns named ``LOG10_…``
    columns : the columns written, names from :data:`ADJUST_COLUMNS`
    """

    gc: bool = False
    log10: bool = False
    columns: frozenset[str] = DEFAULT_COLUMNS

    @classmethod
    def parse(cls, words: Sequence[str]) -> AdjustOptions:
        """Modifiers as plink2 spells them; :class:`InputError` naming ``--adjust`` otherwise."""
        gc = log10 = False
        columns: frozenset[str] | None = None
        for word in words:
            if word == "gc":
                gc = True
            elif word == "log10":
                log10 = True
            elif word.startswith("cols="):
                if columns is not None:
                    raise InputError("--adjust: cols= is given twice")
                columns = _parse_cols(word[5:])
            else:
                raise InputError(
                    f"--adjust: unknown modifier {shown(word)}; known: gc, log10, cols=+qq,+pos,… "
                    f"(columns: {', '.join(ADJUST_COLUMNS)})"
                )
        return cls(gc=gc, log10=log10, columns=DEFAULT_COLUMNS if columns is None else columns)

    def words(self) -> list[str]:
        """The modifiers that :meth:`parse` reads back into these options."""
        out = (["gc"] if self.gc else []) + (["log10"] if self.log10 else [])
        if self.columns != DEFAULT_COLUMNS:
            out.append("cols=" + ",".join(c for c in ADJUST_COLUMNS if c in self.columns))
        return out


def _parse_cols(text: str) -> frozenset[str]:
    """plink2's ParseColDescriptor: ``+a,-b`` edits the default set, ``a,b`` names the set."""
    items = text.split(",")
    signed = [i[:1] in ("+", "-") for i in items]
    if any(signed) and not all(signed):
        raise InputError(f"--adjust cols={shown(text)} mixes +/- items with plain ones")
    names = [i[1:] if s else i for i, s in zip(items, signed, strict=True)]
    bad = [n for n in names if n not in ADJUST_COLUMNS]
    if bad:
        raise InputError(f"--adjust cols=: unknown column {shown(bad[0])}; known: {', '.join(ADJUST_COLUMNS)}")
    if not all(signed):
        return frozenset(names)
    cols = set(DEFAULT_COLUMNS)
    for item, name in zip(items, names, strict=True):
        (cols.add if item[0] == "+" else cols.discard)(name)
    if not cols:
        raise InputError("--adjust cols= leaves no column")
    return frozenset(cols)


@dataclass(frozen=True, eq=False)
class Adjusted:
    """The corrections of one phenotype's tests; arrays in ascending order of unadjusted p.

    Attributes
    ----------
    options : the modifiers they were computed with
    rows : [shape: (n,), int64] the variant (row of the GLM result) of each test
    lambda_gc : λ, the genomic-inflation estimate (at least 1)
    unadj, gc, bonf, holm, sidak_ss, sidak_sd, fdr_bh, fdr_by : [shape: (n,), float64] natural
        logarithms of the p-values
    qq : [shape: (n,), float64] ``(i + 0.5) / n``
    """

    options: AdjustOptions
    rows: np.ndarray
    lambda_gc: float
    unadj: np.ndarray
    gc: np.ndarray
    qq: np.ndarray
    bonf: np.ndarray
    holm: np.ndarray
    sidak_ss: np.ndarray
    sidak_sd: np.ndarray
    fdr_bh: np.ndarray
    fdr_by: np.ndarray


def lambda_log_line(lam: float) -> str:
    """plink2's log line for λ (C ``%g``)."""
    return f"--adjust: Genomic inflation est. lambda (based on median chisq) = {lam:g}."


def multcomp(log_p: np.ndarray, options: AdjustOptions) -> Adjusted | None:
    """plink2's ``--adjust`` over one test per variant.

    Parameters
    ----------
    log_p : [array, shape: (n_variants,)] natural log of each variant's p-value, NaN where the
        test failed (those are left out, as plink2 leaves out invalid tests)
    options : the ``--adjust`` modifiers

    Returns
    -------
    Adjusted or None
        None when no test is valid (plink2: "Zero valid tests; --adjust skipped.").
    """
    log_p = np.asarray(log_p, dtype=np.float64)
    valid = np.flatnonzero(log_p <= 0.0)  # NaN compares false
    n = int(valid.size)
    if n == 0:
        return None
    rows = valid[sort_order(log_p[valid])]  # ascending unadjusted p, ties as plink2's std::sort
    unadj = log_p[rows]
    chisq = ln_p_to_chisq(unadj)
    half = n // 2
    lam = float(chisq[half]) if n % 2 else (float(chisq[half]) + float(chisq[half - 1])) * 0.5
    lam = max(lam / 0.456, 1.0)
    gc = chisq_to_ln_p(chisq * (1.0 / lam))
    p = gc if options.gc else unadj
    nd = float(n)
    ln_n = math.log(nd)
    idx = np.arange(n, dtype=np.float64)  # i, 0-based
    bonf = np.minimum(p + ln_n, 0.0)
    # Holm: (n - i) p_(i), capped at 1, running max
    holm = np.maximum.accumulate(np.minimum(p + np.log(nd - idx), 0.0))
    sidak_ss = _sidak(p, np.full(n, nd), ln_n + np.zeros(n))
    sidak_sd = np.maximum.accumulate(_sidak(p, nd - idx, np.log(nd - idx)))
    # Benjamini-Hochberg: p_(i) n / (i + 1), running min from the bottom
    bh_terms = p + np.log(nd / (idx + 1.0))
    bh_terms[-1] = p[-1]
    fdr_bh = np.minimum.accumulate(bh_terms[::-1])[::-1]
    # Benjamini-Yekutieli: n H_n = 1 + Σ_{k=1}^{n-1} n/k, summed as plink2 sums it (k from n-1 down)
    harmonic = float(np.cumsum(np.concatenate(([1.0], nd / np.arange(n - 1, 0, -1, dtype=np.float64))))[-1])
    ln_h = math.log(harmonic)
    by_terms = p - np.log(idx + 1.0) + ln_h
    by_terms[-1] = min(p[-1] - ln_n + ln_h, 0.0)
    fdr_by = np.minimum.accumulate(by_terms[::-1])[::-1]
    qq = (idx + 0.5) * (1.0 / nd)
    return Adjusted(
        options=options,
        rows=rows.astype(np.int64),
        lambda_gc=lam,
        unadj=unadj,
        gc=gc,
        qq=qq,
        bonf=bonf,
        holm=holm,
        sidak_ss=sidak_ss,
        sidak_sd=sidak_sd,
        fdr_bh=fdr_bh,
        fdr_by=fdr_by,
    )


def _sidak(ln_p: np.ndarray, c: np.ndarray, ln_c: np.ndarray) -> np.ndarray:
    """ln(1 − (1 − p)^c), without cancellation for small p (plink2's three regimes)."""
    out: np.ndarray = ln_p + ln_c  # p <= 2^-90: 1 - (1-p)^c == c p in double precision
    mid = ln_p > -90 * _LN2
    pv = np.exp(ln_p[mid])
    cm = c[mid]
    big = ln_p[mid] >= -7 * _LN2
    val = np.where(big, 1 - np.power(1 - pv, cm), 1 - np.exp(cm * np.log1p(-pv)))
    with np.errstate(divide="ignore"):
        out[mid] = np.log(val)
    return out


def sort_order(ln_p: np.ndarray) -> np.ndarray:
    """Indices sorting ``ln_p`` ascending in the order plink2's ``std::sort`` leaves them.

    Without exact ties any sort gives that order; with ties, std::sort (an introsort, not stable)
    decides which tied test comes first, so this replays libstdc++'s algorithm on the keys.
    """
    order: np.ndarray = np.argsort(ln_p, kind="stable")
    ordered = ln_p[order]
    if not np.any(ordered[1:] == ordered[:-1]):
        return order
    return np.array(_LibstdcxxSort(ln_p.tolist()).run(), dtype=np.int64)


class _LibstdcxxSort:
    """libstdc++'s ``std::sort`` (``bits/stl_algo.h``, ``bits/stl_heap.h``) on (key, index) pairs,
    comparing keys only: introsort to runs of 16, heapsort past the depth limit, insertion sort."""

    def __init__(self, keys: list[float]):
        self.k = keys
        self.i = list(range(len(keys)))

    def run(self) -> list[int]:
        n = len(self.k)
        if n > 1:
            self._introsort(0, n, 2 * (n.bit_length() - 1))
            self._final_insertion_sort(0, n)
        return self.i

    def _swap(self, a: int, b: int) -> None:
        k, i = self.k, self.i
        k[a], k[b] = k[b], k[a]
        i[a], i[b] = i[b], i[a]

    def _introsort(self, first: int, last: int, depth: int) -> None:
        while last - first > 16:
            if depth == 0:
                self._heapsort(first, last)
                return
            depth -= 1
            cut = self._partition_pivot(first, last)
            self._introsort(cut, last, depth)
            last = cut

    def _partition_pivot(self, first: int, last: int) -> int:
        k = self.k
        a, b, c = first + 1, first + (last - first) // 2, last - 1
        if k[a] < k[b]:
            self._swap(first, b if k[b] < k[c] else (c if k[a] < k[c] else a))
        elif k[a] < k[c]:
            self._swap(first, a)
        else:
            self._swap(first, c if k[b] < k[c] else b)
        lo, hi, pivot = first + 1, last, k[first]
        while True:
            while k[lo] < pivot:
                lo += 1
            hi -= 1
            while pivot < k[hi]:
                hi -= 1
            if not lo < hi:
                return lo
            self._swap(lo, hi)
            lo += 1

    def _linear_insert(self, last: int) -> None:
        k, i = self.k, self.i
        val, idx = k[last], i[last]
        nxt = last - 1
        while val < k[nxt]:
            k[last], i[last] = k[nxt], i[nxt]
            last, nxt = nxt, nxt - 1
        k[last], i[last] = val, idx

    def _insertion_sort(self, first: int, last: int) -> None:
        k, i = self.k, self.i
        for pos in range(first + 1, last):
            if k[pos] < k[first]:
                val, idx = k[pos], i[pos]
                k[first + 1 : pos + 1], i[first + 1 : pos + 1] = k[first:pos], i[first:pos]
                k[first], i[first] = val, idx
            else:
                self._linear_insert(pos)

    def _final_insertion_sort(self, first: int, last: int) -> None:
        if last - first > 16:
            self._insertion_sort(first, first + 16)
            for pos in range(first + 16, last):
                self._linear_insert(pos)
        else:
            self._insertion_sort(first, last)

    def _adjust_heap(self, first: int, hole: int, length: int, val: float, idx: int) -> None:
        k, i = self.k, self.i
        top = second = hole
        while second < (length - 1) // 2:
            second = 2 * (second + 1)
            if k[first + second] < k[first + second - 1]:
                second -= 1
            k[first + hole], i[first + hole] = k[first + second], i[first + second]
            hole = second
        if length % 2 == 0 and second == (length - 2) // 2:
            second = 2 * (second + 1)
            k[first + hole], i[first + hole] = k[first + second - 1], i[first + second - 1]
            hole = second - 1
        parent = (hole - 1) // 2
        while hole > top and k[first + parent] < val:
            k[first + hole], i[first + hole] = k[first + parent], i[first + parent]
            hole, parent = parent, (parent - 1) // 2
        k[first + hole], i[first + hole] = val, idx

    def _heapsort(self, first: int, last: int) -> None:
        k, i = self.k, self.i
        length = last - first
        for parent in range((length - 2) // 2, -1, -1):
            self._adjust_heap(first, parent, length, k[first + parent], i[first + parent])
        while last - first > 1:
            last -= 1
            val, idx = k[last], i[last]
            k[last], i[last] = k[first], i[first]
            self._adjust_heap(first, 0, last - first, val, idx)
