"""The job report: one self-contained HTML file, readable offline.

Everything is inline: CSS in a ``<style>`` element, plots as ``data:image/png;base64`` URIs.
There is no script, no web font and no link to fetch, so the file opens the same on an
air-gapped workstation and can be archived with the results. Every piece of text is escaped
with :func:`html.escape`.

:func:`write_report` takes plain data: the job's facts, the sites with their participant
counts, and one :class:`Section` per analysis (a top-hits :class:`Table`, :class:`Figure` s,
λGC, notes). :func:`top_hits` builds the usual table of the lowest p-values.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedstat import __version__
from fedstat.errors import InputError
from fedstat.formats.atomic import atomic_write_text
from fedstat.formats.numbers import format_g

__all__ = ["Figure", "Section", "Table", "top_hits", "write_report"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Table:
    """A small table. ``rows`` hold already formatted cells (str) or numbers.

    Attributes
    ----------
    columns : header cells
    rows : one tuple per row, same length as ``columns``
    numeric : per column, whether to right-align it (None = guess from the first row)
    caption : optional caption
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    numeric: tuple[bool, ...] | None = None
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise InputError(f"report table row {i} has {len(row)} cells, header has {len(self.columns)}")


@dataclass(frozen=True)
class Figure:
    """A PNG plot: ``png`` is a path or the PNG bytes."""

    caption: str
    png: Path | bytes
    alt: str = ""

    def data(self) -> bytes:
        raw = self.png if isinstance(self.png, bytes) else Path(self.png).read_bytes()
        if not raw.startswith(_PNG_MAGIC):
            raise InputError(f"report figure {self.caption!r} is not a PNG image")
        return raw


@dataclass(frozen=True)
class Section:
    """One analysis in the report.

    Attributes
    ----------
    title : e.g. ``CC — logistic regression (--glm)``
    summary : key facts shown as a definition list (e.g. variants tested, cases, controls)
    table : top hits
    figures : plots, shown side by side when they fit
    lambda_gc : genomic inflation, shown with the summary when given
    notes : log lines for this analysis (warnings, excluded covariates…)
    files : result files written for this analysis (names only)
    """

    title: str
    summary: Mapping[str, object] = field(default_factory=dict)
    table: Table | None = None
    figures: Sequence[Figure] = ()
    lambda_gc: float | None = None
    notes: Sequence[str] = ()
    files: Sequence[str] = ()


def top_hits(
    *,
    chrom: np.ndarray,
    pos: np.ndarray,
    ids: np.ndarray,
    a1: np.ndarray,
    effect: np.ndarray,
    se: np.ndarray,
    p: np.ndarray,
    effect_name: str = "BETA",
    k: int = 20,
    log10_p: np.ndarray | None = None,
    caption: str = "",
) -> Table:
    """The ``k`` lowest-p rows as a report table ``CHROM POS ID A1 <effect> SE P``.

    Parameters
    ----------
    chrom, pos, ids, a1, effect, se, p : [array, shape: (n,)] per-variant results; rows with
        NaN p are skipped
    effect_name : header of the effect column (``BETA`` or ``OR``)
    k : number of rows
    log10_p : optional log10 p, used to rank and print p-values that underflowed to 0

    Returns
    -------
    Table
    """
    p = np.asarray(p, dtype=np.float64)
    score = -np.log10(np.where(p > 0, p, np.nan)) if log10_p is None else -np.asarray(log10_p, dtype=np.float64)
    score = np.where(np.isnan(score) & (p == 0), np.inf, score)
    valid = np.flatnonzero(~np.isnan(score))
    order = valid[np.argsort(-score[valid], kind="stable")][:k]
    rows = []
    for i in order.tolist():
        if p[i] > 0 or log10_p is None or not math.isfinite(float(log10_p[i])):
            p_text = format_g(float(p[i]), 3)
        else:
            e = math.floor(float(log10_p[i]))
            p_text = f"{10 ** (float(log10_p[i]) - e):.2f}e{e}"
        rows.append(
            (
                str(chrom[i]),
                str(int(pos[i])),
                str(ids[i]),
                str(a1[i]),
                "NA" if effect[i] != effect[i] else format_g(float(effect[i]), 4),
                "NA" if se[i] != se[i] else format_g(float(se[i]), 4),
                p_text,
            )
        )
    return Table(
        columns=("CHROM", "POS", "ID", "A1", effect_name, "SE", "P"),
        rows=tuple(rows),
        numeric=(False, True, False, False, True, True, True),
        caption=caption,
    )


_CSS = """
:root { --ink:#1d2430; --muted:#5b6575; --line:#dfe3ea; --bg:#f5f7fa; --card:#ffffff;
        --accent:#1f4e79; --accent-soft:#e8f0f9; --warn:#8a5a00; --warn-bg:#fff6e0; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--ink); font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       "DejaVu Sans", Arial, sans-serif; }
header { background: var(--accent); color: #fff; padding: 28px 0 22px; }
header .wrap, main { max-width: 1180px; margin: 0 auto; padding: 0 28px; }
header h1 { margin: 0 0 6px; font-size: 26px; font-weight: 600; letter-spacing: .2px; }
header p { margin: 0; color: #d6e4f2; font-size: 14px; }
main { padding-top: 24px; padding-bottom: 40px; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
               padding: 20px 24px; margin: 0 0 22px; box-shadow: 0 1px 2px rgba(20,30,50,.04); }
h2 { font-size: 19px; margin: 0 0 14px; font-weight: 600; }
h3 { font-size: 15px; margin: 18px 0 8px; color: var(--muted); font-weight: 600;
     text-transform: uppercase; letter-spacing: .6px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px 18px;
         margin: 0; }
.facts div { border-left: 3px solid var(--accent-soft); padding: 2px 0 2px 10px; }
.facts dt { color: var(--muted); font-size: 12.5px; letter-spacing: .2px; }
.facts dd { margin: 0; font-weight: 600; font-size: 16px; overflow-wrap: anywhere; }
.lambda { display: inline-block; background: var(--accent-soft); color: var(--accent);
          border-radius: 999px; padding: 2px 12px; font-weight: 600; font-size: 14px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
caption { text-align: left; color: var(--muted); padding: 0 0 6px; font-size: 13px; }
th { text-align: left; font-weight: 600; color: var(--muted); border-bottom: 2px solid var(--line);
     padding: 6px 10px; white-space: nowrap; }
td { padding: 5px 10px; border-bottom: 1px solid var(--line); }
tbody tr:nth-child(even) td { background: #fafbfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums;
                 font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
.tablewrap { overflow-x: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; margin: 18px 0 4px; }
.split { display: grid; grid-template-columns: minmax(300px, 470px) minmax(0, 1fr); gap: 24px;
         align-items: start; margin-top: 18px; }
.split > .side h3:first-child { margin-top: 0; }
@media (max-width: 900px) { .split { grid-template-columns: 1fr; } }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px;
             background: #fff; }
table.narrow { width: auto; min-width: 420px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
ul.notes { margin: 0; padding-left: 18px; }
ul.notes li { margin: 2px 0; }
.note-box { background: var(--warn-bg); color: var(--warn); border-radius: 6px; padding: 8px 14px; }
pre { background: #f2f4f8; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      font-size: 12.5px; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
.files code { background: #f2f4f8; border-radius: 4px; padding: 1px 6px; margin-right: 6px; }
footer { color: var(--muted); font-size: 12.5px; text-align: center; padding: 8px 0 30px; }
@media print { body { background: #fff; } section.card { box-shadow: none; break-inside: avoid; } }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _facts(items: Mapping[str, object] | Sequence[tuple[str, object]]) -> str:
    pairs = items.items() if isinstance(items, Mapping) else items
    cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in pairs)
    return f'<dl class="facts">{cells}</dl>'


def _table(table: Table, narrow: bool = False) -> str:
    numeric = table.numeric
    if numeric is None:
        first = table.rows[0] if table.rows else ()
        numeric = tuple(isinstance(c, int | float) for c in first) or tuple(False for _ in table.columns)
    head = "".join(
        f'<th class="num">{_e(c)}</th>' if n else f"<th>{_e(c)}</th>"
        for c, n in zip(table.columns, numeric, strict=True)
    )
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_e(_cell(v))}</td>' if n else f"<td>{_e(_cell(v))}</td>"
            for v, n in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    empty = f'<tr><td colspan="{len(table.columns)}">no rows</td></tr>' if not table.rows else ""
    cls = ' class="narrow"' if narrow else ""
    return (
        f'<div class="tablewrap"><table{cls}>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}{empty}</tbody></table></div>"
    )


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "NA" if v != v else format_g(v, 4)
    return str(v)


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.data()).decode("ascii")
    alt = fig.alt or fig.caption
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(fig.caption)}</figcaption></figure>"
    )


def _section(sec: Section, index: int) -> str:
    parts = [f'<section class="card" id="analysis-{index}"><h2>{_e(sec.title)}</h2>']
    facts = list(sec.summary.items())
    if sec.lambda_gc is not None:
        lam = "NA" if sec.lambda_gc != sec.lambda_gc else f"{sec.lambda_gc:.3f}"
        facts.append(("Genomic inflation λGC", lam))
    if facts:
        parts.append(_facts(facts))
    # the first figure (the Manhattan plot) spans the card; the others sit beside the top hits
    figures = list(sec.figures)
    if figures and (len(figures) > 1 or sec.table is None):
        parts.append(f'<div class="figures">{_figure(figures.pop(0))}</div>')
    hits = f"<h3>Top hits</h3>{_table(sec.table)}" if sec.table is not None else ""
    if figures and hits:
        side = "".join(_figure(f) for f in figures)
        parts.append(f'<div class="split"><div>{side}</div><div class="side">{hits}</div></div>')
    elif figures:
        parts.append('<div class="figures">' + "".join(_figure(f) for f in figures) + "</div>")
    else:
        parts.append(hits)
    if sec.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in sec.notes)
        parts.append(f'<h3>Notes</h3><div class="note-box"><ul class="notes">{items}</ul></div>')
    if sec.files:
        parts.append('<h3>Files</h3><p class="files">' + "".join(f"<code>{_e(f)}</code>" for f in sec.files) + "</p>")
    parts.append("</section>")
    return "".join(parts)


def write_report(
    path: str | Path,
    *,
    title: str,
    job: Mapping[str, object],
    sites: Sequence[tuple[str, int]],
    analyses: Sequence[Section],
    notes: Sequence[str] = (),
) -> Path:
    """Write the self-contained HTML report.

    Parameters
    ----------
    path : destination, conventionally ``<out>.report.html`` (written atomically)
    title : page title
    job : job facts; recognised keys ``job_id``, ``created``, ``privacy``, ``fedstat_version``,
        ``spec`` (a mapping, shown as JSON); other keys are shown as facts too
    sites : (site name, participants) for each site that took part
    analyses : one :class:`Section` per analysis
    notes : job-level log lines

    Returns
    -------
    Path
    """
    job = dict(job)
    spec = job.pop("spec", None)
    version = job.pop("fedstat_version", __version__)
    created = job.pop("created", None)
    facts: list[tuple[str, object]] = [
        ("Job", job.pop("job_id", "—")),
        ("Created", created if created is not None else _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Privacy mode", job.pop("privacy", "—")),
        ("Sites", len(sites)),
        ("Participants", sum(int(n) for _, n in sites)),
        ("fedstat", version),
    ]
    facts += [(str(k).replace("_", " ").capitalize(), v) for k, v in job.items()]
    total = sum(int(n) for _, n in sites)
    site_rows = tuple((s, int(n), f"{100.0 * int(n) / total:.1f}%" if total else "—") for s, n in sites)
    site_table = Table(
        columns=("Site", "Participants", "Share"),
        rows=(*site_rows, ("Total", total, "100%" if total else "—")),
        numeric=(False, True, True),
    )
    toc = "".join(f'<li><a href="#analysis-{i}">{_e(sec.title)}</a></li>' for i, sec in enumerate(analyses))
    body = [
        f'<header><div class="wrap"><h1>{_e(title)}</h1>'
        f"<p>Federated analysis report · {_e(len(sites))} sites · {_e(total)} participants · "
        f"privacy mode {_e(facts[2][1])}</p></div></header><main>",
        f'<section class="card"><h2>Job</h2>{_facts(facts)}',
    ]
    if analyses:
        body.append(f'<h3>Analyses</h3><ul class="notes">{toc}</ul>')
    if spec is not None:
        spec_text = json.dumps(spec, indent=2, sort_keys=True, default=str) if not isinstance(spec, str) else spec
        body.append(f"<h3>Job spec</h3><pre>{_e(spec_text)}</pre>")
    body.append("</section>")
    body.append(f'<section class="card"><h2>Sites</h2>{_table(site_table, narrow=True)}</section>')
    body.extend(_section(sec, i) for i, sec in enumerate(analyses))
    if notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in notes)
        body.append(f'<section class="card"><h2>Job log</h2><ul class="notes">{items}</ul></section>')
    body.append(
        f"</main><footer>Generated by fedstat {_e(version)}. Only aggregate statistics appear in this "
        "report; no participant-level data left any site.</footer>"
    )
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
    return atomic_write_text(path, [doc])
