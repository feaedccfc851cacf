"""Manhattan and QQ plots as PNG files, and the genomic-control inflation factor λGC.

Plots are drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display,
safe in a daemon thread). Genome-wide scans have 10⁵–10⁷ points, so points are thinned to one
per output pixel cell (a lossless reduction at the resolution drawn: the dropped points would
land on pixels already painted) and drawn rasterized.

p-values of 0 (underflow) can be given exactly as ``log10_p``; every function then works in
log space, so the strongest signals keep their place at the top of the plots.

References
----------
Devlin B, Roeder K (1999) Genomic control for association studies. Biometrics 55:997-1004
(λGC = median of the 1-df χ² statistics / 0.4549364, the χ²₁ median).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import special, stats

from fedstat.data.variants import chrom_order, normalise_chrom
from fedstat.errors import InputError
from fedstat.formats.atomic import atomic_path

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["CHI2_1DF_MEDIAN", "GENOME_WIDE", "SUGGESTIVE", "lambda_gc", "manhattan", "neg_log10_p", "qq"]

#: median of the χ² distribution with 1 degree of freedom
CHI2_1DF_MEDIAN = 0.4549364231195724
GENOME_WIDE = 5e-8
SUGGESTIVE = 1e-5

_COLORS = ("#1f4e79", "#6a9fd4")  # alternating chromosome colours
_HIT = "#c0392b"
_DPI = 100


def neg_log10_p(p: np.ndarray, log10_p: np.ndarray | None = None) -> np.ndarray:
    """−log10 p, preferring ``log10_p`` where given (exact where ``p`` underflowed to 0).

    Parameters
    ----------
    p : [array, shape: (n,)] p-values, NaN where missing
    log10_p : optional [array, shape: (n,)] log10 p-values (≤ 0)

    Returns
    -------
    [array, shape: (n,), dtype float64]; NaN where missing, inf where p = 0 and no log10 p
    """
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = -np.log10(p)
    if log10_p is not None:
        lp = np.asarray(log10_p, dtype=np.float64)
        if lp.shape != p.shape:
            raise InputError(f"log10_p has shape {lp.shape}, p has {p.shape}")
        out = np.where(np.isfinite(lp), -lp, out)
    return out


def _chisq_1df(nlp: np.ndarray) -> np.ndarray:
    """1-df χ² quantiles of p given as −log10 p, computed in log space (valid far below 1e-308)."""
    ln_half_p = -nlp * math.log(10.0) - math.log(2.0)  # ln(p / 2)
    z = special.ndtri_exp(ln_half_p)  # Φ⁻¹(p / 2) = −|z|
    chisq: np.ndarray = z * z
    return chisq


def lambda_gc(p: np.ndarray, log10_p: np.ndarray | None = None) -> float:
    """Genomic-control inflation factor λGC = median χ²₁ quantile of p / 0.4549364.

    Parameters
    ----------
    p : [array, shape: (n,)] p-values of 1-df tests (NaN ignored)
    log10_p : optional log10 p-values used where ``p`` underflowed

    Returns
    -------
    float
        NaN when no p-value is present.
    """
    nlp = neg_log10_p(p, log10_p)
    nlp = nlp[~np.isnan(nlp)]
    if nlp.size == 0:
        return float("nan")
    chisq = np.where(np.isinf(nlp), np.inf, _chisq_1df(np.where(np.isinf(nlp), 0.0, nlp)))
    return float(np.median(chisq) / CHI2_1DF_MEDIAN)


def _thin(x: np.ndarray, y: np.ndarray, x_span: float, y_span: float, width_px: int, height_px: int) -> np.ndarray:
    """Indices of one point per (x, y) pixel cell, the first in input order."""
    if x.size == 0:
        return np.arange(0)
    ix = np.floor((x - x.min()) / max(x_span, 1e-300) * (width_px - 1)).astype(np.int64)
    iy = np.floor(y / max(y_span, 1e-300) * (height_px - 1)).astype(np.int64)
    _, keep = np.unique(ix * (height_px + 1) + iy, return_index=True)
    return np.sort(keep)


class _YAxis:
    """−log10 p axis, linear up to ``cut`` and compressed above it when the top hit is far off.

    Without it one p = 1e-300 flattens every other signal to the x axis. Above ``cut`` values
    are squeezed into the top quarter of the axis, which is marked by a break line and labelled
    with the true values.
    """

    def __init__(self, top: float, cut: float = 25.0):
        self.top = top
        self.cut = cut if top > cut * 1.4 else math.inf
        self.scale = (0.25 * cut / 0.75) / (top - cut) if self.cut != math.inf else 1.0

    def __call__(self, v: np.ndarray | float) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if self.cut == math.inf:
            return v
        return np.where(v <= self.cut, v, self.cut + (v - self.cut) * self.scale)

    @property
    def limit(self) -> float:
        return float(self(self.top)) * 1.04 + 0.3

    def decorate(self, ax: Axes) -> None:
        from matplotlib.ticker import MaxNLocator

        ax.set_ylim(0, self.limit)
        if self.cut == math.inf:
            return
        low = [t for t in MaxNLocator(nbins=5, integer=True).tick_values(0, self.cut) if 0 <= t <= self.cut * 0.85]
        low.append(self.cut)
        high = [
            t for t in MaxNLocator(nbins=3, integer=True).tick_values(self.cut, self.top) if self.cut < t <= self.top
        ]
        high = [t for t in high if float(self(t)) - self.cut > 0.12 * self.cut] or [self.top]
        ticks = [*low, *high]
        ax.set_yticks([float(self(t)) for t in ticks])
        ax.set_yticklabels([f"{t:g}" for t in ticks])
        ax.axhspan(self.cut * 0.985, self.cut * 1.015, color="#f3f3f3", zorder=0.5, linewidth=0)
        ax.axhline(self.cut, color="#bbbbbb", linewidth=0.7, linestyle=(0, (6, 3)), zorder=0.6)


def _chrom_label(c: str) -> str:
    """A chromosome's axis label: its code as plink2 prints it (``chr3`` -> ``3``, ``23`` -> ``X``)."""
    return normalise_chrom(c)


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | Path) -> Path:
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    return out


def _style(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9, colors="#333333")
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)


def manhattan(
    chrom: Sequence[object] | np.ndarray,
    pos: np.ndarray,
    p: np.ndarray,
    out_png: str | Path,
    *,
    title: str,
    log10_p: np.ndarray | None = None,
    genome_wide: float = GENOME_WIDE,
    suggestive: float | None = SUGGESTIVE,
    width_in: float = 12.0,
    height_in: float = 4.2,
) -> Path:
    """Draw a Manhattan plot (−log10 p along the genome) to a PNG.

    Parameters
    ----------
    chrom : [array, shape: (n,)] chromosome codes (``1``…``22``, ``X``, ``chr3``, ``23``…)
    pos : [array, shape: (n,)] base-pair positions
    p : [array, shape: (n,)] p-values; NaN rows are not drawn
    out_png : destination (written atomically)
    title : plot title
    log10_p : optional log10 p-values, used where ``p`` underflowed to 0
    genome_wide, suggestive : p thresholds drawn as horizontal lines (None = no line)

    Returns
    -------
    Path
    """
    chrom_s = np.asarray([str(c) for c in chrom], dtype=object)
    pos = np.asarray(pos, dtype=np.float64)
    nlp = neg_log10_p(p, log10_p)
    if not (chrom_s.shape == pos.shape == nlp.shape):
        raise InputError(f"manhattan: chrom {chrom_s.shape}, pos {pos.shape} and p {nlp.shape} differ in length")
    ok = ~np.isnan(nlp)
    finite_max = float(np.nanmax(nlp[np.isfinite(nlp)])) if np.isfinite(nlp).any() else 0.0
    # p = 0 with no log10 p: draw at the top edge rather than lose the strongest hits
    nlp = np.where(np.isinf(nlp), max(finite_max, -math.log10(genome_wide)) * 1.05, nlp)

    names = sorted({str(c) for c in chrom_s[ok]}, key=chrom_order)
    offsets, centers, x = {}, [], np.zeros(pos.shape)
    start, gap = 0.0, 0.0
    spans = {c: (pos[ok & (chrom_s == c)].min(), pos[ok & (chrom_s == c)].max()) for c in names}
    total = sum(hi - lo for lo, hi in spans.values()) or 1.0
    gap = total * 0.008
    for c in names:
        lo, hi = spans[c]
        offsets[c] = start - lo
        centers.append(start + (hi - lo) / 2)
        start += (hi - lo) + gap
    for c in names:
        m = chrom_s == c
        x[m] = pos[m] + offsets[c]

    yaxis = _YAxis(max(finite_max, -math.log10(genome_wide) * 1.1, float(np.nanmax(nlp[ok])) if ok.any() else 0.0))
    y = yaxis(nlp)
    y_top = yaxis.limit
    fig = _figure(width_in, height_in)
    ax = fig.add_axes((0.06, 0.14, 0.92, 0.74))
    _style(ax)
    width_px, height_px = int(width_in * _DPI * 0.92), int(height_in * _DPI * 0.74)
    hit_nlp = -math.log10(genome_wide)
    for k, c in enumerate(names):
        m = np.flatnonzero(ok & (chrom_s == c) & (nlp < hit_nlp))
        keep = m[_thin(x[m], y[m], start, y_top, width_px * 2, height_px * 2)]
        ax.scatter(x[keep], y[keep], s=5, c=_COLORS[k % 2], linewidths=0, rasterized=True)
    hits = np.flatnonzero(ok & (nlp >= hit_nlp))
    if hits.size:
        ax.scatter(x[hits], y[hits], s=12, c=_HIT, linewidths=0, rasterized=True, zorder=3)
    ax.axhline(hit_nlp, color=_HIT, linestyle="--", linewidth=0.9, label=f"p = {genome_wide:g}")
    if suggestive is not None:
        ax.axhline(-math.log10(suggestive), color="#888888", linestyle=":", linewidth=0.9, label=f"p = {suggestive:g}")
    ax.set_xticks(centers)
    labels = [_chrom_label(c) for c in names]
    ax.set_xticklabels(labels, fontsize=8 if len(names) > 12 else 9)
    ax.set_xlim(-gap, max(start - gap, gap) + gap)
    yaxis.decorate(ax)
    ax.set_xlabel("chromosome", fontsize=10)
    ax.set_ylabel("−log₁₀ p", fontsize=10)
    ax.set_title(title, fontsize=12, loc="left", color="#1a1a1a")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False, borderaxespad=0.2)
    return _save(fig, out_png)


def qq(
    p: np.ndarray,
    out_png: str | Path,
    *,
    title: str,
    log10_p: np.ndarray | None = None,
    size_in: float = 5.0,
) -> float:
    """Draw a QQ plot of observed vs expected −log10 p to a PNG; return λGC.

    Parameters
    ----------
    p : [array, shape: (n,)] p-values of 1-df tests; NaN ignored
    out_png : destination (written atomically)
    title : plot title
    log10_p : optional log10 p-values, used where ``p`` underflowed to 0

    Returns
    -------
    float
        λGC (:func:`lambda_gc`), also printed on the plot.
    """
    lam = lambda_gc(p, log10_p)
    nlp = neg_log10_p(p, log10_p)
    nlp = np.sort(nlp[~np.isnan(nlp)])[::-1]  # most significant first
    n = nlp.size
    fig = _figure(size_in, size_in)
    ax = fig.add_axes((0.14, 0.12, 0.82, 0.78))
    _style(ax)
    if n:
        ranks = np.arange(1, n + 1, dtype=np.float64)
        expected = -np.log10((ranks - 0.5) / n)
        finite_max = float(nlp[np.isfinite(nlp)].max()) if np.isfinite(nlp).any() else 1.0
        nlp = np.where(np.isinf(nlp), finite_max * 1.05, nlp)
        yaxis = _YAxis(max(float(expected[0]), float(nlp.max())))
        y = yaxis(nlp)
        px = int(size_in * _DPI * 0.82) * 2
        keep = _thin(expected, y, float(expected.max() - expected.min()), yaxis.limit, px, px)
        # 95% band of the k-th smallest of n uniform p-values: Beta(k, n - k + 1)
        band = np.unique(np.concatenate([keep, np.geomspace(1, n, num=min(n, 400)).astype(np.int64) - 1]))
        lo = -np.log10(stats.beta.ppf(0.975, ranks[band], n - ranks[band] + 1))
        hi = -np.log10(stats.beta.ppf(0.025, ranks[band], n - ranks[band] + 1))
        ax.fill_between(expected[band], yaxis(lo), yaxis(hi), color="#dfe9f5", linewidth=0, label="95% band")
        diag = np.linspace(0, float(expected[0]) * 1.05 + 0.1, 50)
        ax.plot(diag, yaxis(diag), color="#888888", linewidth=0.9, linestyle="--")
        hit = nlp[keep] >= -math.log10(GENOME_WIDE)
        ax.scatter(expected[keep][~hit], y[keep][~hit], s=6, c=_COLORS[0], linewidths=0, rasterized=True, zorder=3)
        ax.scatter(expected[keep][hit], y[keep][hit], s=9, c=_HIT, linewidths=0, rasterized=True, zorder=3)
        ax.set_xlim(0, float(expected[0]) * 1.05 + 0.1)
        yaxis.decorate(ax)
    ax.set_xlabel("expected −log₁₀ p", fontsize=10)
    ax.set_ylabel("observed −log₁₀ p", fontsize=10)
    ax.set_title(title, fontsize=12, loc="left", color="#1a1a1a")
    ax.text(
        0.97,
        0.04,
        f"λGC = {lam:.3f}" if lam == lam else "λGC = NA",
        transform=ax.transAxes,
        fontsize=11,
        ha="right",
        va="bottom",
        color="#1a1a1a",
        bbox={"boxstyle": "round,pad=0.35", "facecolor": "white", "edgecolor": "#cccccc", "linewidth": 0.6},
    )
    _save(fig, out_png)
    return lam
