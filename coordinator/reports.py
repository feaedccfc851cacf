"""Reports of scheduled runs: what a run's job produced, and what changed since the schedule's
previous successful run.

A report is a JSON document (stored whole in the coordinator's database with the run) and a text
rendering of it. It holds only aggregate facts the job's analyst may already see: the job's
state and reason, participants per site and in all, variant counts, file names, and for
allele-frequency jobs a comparison of the two ``.afreq`` tables (how many variants' ALT_FREQS
changed, the largest change and its variant, OBS_CT totals). Nothing per participant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.counts import WITHHELD, describe_count

from .store import DONE, JobRow, RunRow

#: Result tables with one row per variant, by file suffix: a report counts their rows.
_PER_VARIANT = (".afreq", ".gcount", ".hardy", ".vmiss")


@dataclass(frozen=True)
class Afreq:
    """A plink2 ``.afreq`` table's columns.

    Attributes
    ----------
    keys : ``(CHROM, ID, REF, ALT)`` of each variant, [list, length: n_variants]
    alt_freq : ALT_FREQS, nan where nothing was observed, [array, shape: (n_variants,)]
    obs_ct : OBS_CT, allele observations, [array, shape: (n_variants,)]
    """

    keys: list[tuple[str, str, str, str]]
    alt_freq: np.ndarray
    obs_ct: np.ndarray


def read_afreq(path: Path) -> Afreq:
    """Read a ``.afreq`` table by its header (plink2's ``#CHROM ID REF ALT ALT_FREQS OBS_CT``)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].lstrip("#").split("\t")
    col = {name: i for i, name in enumerate(header)}
    rows = [line.split("\t") for line in lines[1:] if line]
    keys = [(r[col["CHROM"]], r[col["ID"]], r[col["REF"]], r[col["ALT"]]) for r in rows]
    alt_freq = np.array([float(r[col["ALT_FREQS"]]) for r in rows], dtype=np.float64)
    obs_ct = np.array([int(r[col["OBS_CT"]]) for r in rows], dtype=np.int64)
    return Afreq(keys=keys, alt_freq=alt_freq, obs_ct=obs_ct)


def afreq_change(before: Afreq, after: Afreq) -> dict[str, Any]:
    """Compare two ``.afreq`` tables variant by variant (matched on CHROM, ID, REF, ALT).

    A variant's ALT frequency "changed" when its printed value differs (nan to nan is no change);
    the largest |ΔALT_FREQS| is over variants with a frequency in both tables.
    """
    index = {k: i for i, k in enumerate(before.keys)}
    pairs = [(index[k], j) for j, k in enumerate(after.keys) if k in index]
    b = np.array([i for i, _ in pairs], dtype=np.int64)
    a = np.array([j for _, j in pairs], dtype=np.int64)
    fb, fa = before.alt_freq[b], after.alt_freq[a]
    same = (fb == fa) | (np.isnan(fb) & np.isnan(fa))
    delta = np.abs(fa - fb)  # nan where either is nan
    d_obs = after.obs_ct[a] - before.obs_ct[b]
    out: dict[str, Any] = {
        "variants_before": len(before.keys),
        "variants_after": len(after.keys),
        "variants_in_both": len(pairs),
        "variants_added": len(after.keys) - len(pairs),
        "variants_removed": len(before.keys) - len(pairs),
        "alt_freq_changed": int((~same).sum()),
        "max_abs_delta_alt_freq": None,
        "max_delta_variant": None,
        "alt_freq_before": None,
        "alt_freq_after": None,
        "obs_ct_total_before": int(before.obs_ct.sum()),
        "obs_ct_total_after": int(after.obs_ct.sum()),
        "obs_ct_changed": int((d_obs != 0).sum()),
        "max_abs_delta_obs_ct": int(np.abs(d_obs).max()) if d_obs.size else 0,
    }
    if np.isfinite(delta).any():
        k = int(np.nanargmax(delta))
        out.update(
            max_abs_delta_alt_freq=float(delta[k]),
            max_delta_variant=after.keys[int(a[k])][1],
            alt_freq_before=float(fb[k]),
            alt_freq_after=float(fa[k]),
        )
    return out


def _provenance(directory: Path, files: tuple[str, ...]) -> dict[str, Any] | None:
    for name in files:
        if name.endswith(".provenance.json"):
            try:
                provenance: dict[str, Any] = json.loads((directory / name).read_text())
                return provenance
            except (OSError, ValueError):
                return None
    return None


def _count_rows(path: Path) -> int | None:
    try:
        with path.open() as f:
            return sum(1 for line in f if line.strip()) - 1
    except OSError:
        return None


def build_report(
    run: RunRow,
    job: JobRow | None,
    *,
    spec: dict[str, Any],
    previous: RunRow | None,
    results_dir: Path,
    finished_at: str,
    error: str = "",
) -> dict[str, Any]:
    """The report of ``run``, whose job (``job``; None if it could not be submitted) has finished.

    ``previous`` is the schedule's latest earlier DONE run, whose report (and result files under
    ``results_dir``) the change section compares with.
    """
    state = job.state if job is not None else "FAILED"
    error = job.error if job is not None else error
    options = spec.get("options") or {}
    report: dict[str, Any] = {
        "report_id": run.id,
        "schedule_id": run.schedule_id,
        "schedule": run.schedule_name,
        "owner": run.owner,
        "run": run.run_no,
        "trigger": run.trigger,
        "slot": run.slot,
        "fired_at": run.fired_at,
        "finished_at": finished_at,
        "job_id": job.id if job is not None else "",
        "state": state,
        "error": error,
        "analyses": list(spec.get("analyses", ())),
        "privacy": spec.get("privacy", ""),
        "dp": (
            {"epsilon": float(options["dp_epsilon"]), "delta": float(options["dp_delta"])}
            if "dp_epsilon" in options and "dp_delta" in options
            else None
        ),
        "dataset": spec.get("dataset", "") or "(each site's default)",
        "refused": [],
        "failed_sites": [],
        "sites": {},
        "participants_total": None,
        "n_variants": None,
        "files": [],
        "variant_counts": {},
        "previous": None,
        "change": None,
    }
    if job is None:
        return report
    for s in job.sites:
        # counts as the site reported them: multiples of count_granularity (fedstat.counts)
        report["sites"][s.site] = {
            "state": s.state,
            "participants": s.cohort_size,
            "count_granularity": s.count_granularity,
        }
        if s.state == "REFUSED":
            report["refused"].append({"site": s.site, "reason": s.detail})
        elif s.state == "FAILED":
            report["failed_sites"].append({"site": s.site, "reason": s.detail})
    if state != DONE:
        return report
    directory = results_dir / job.id
    report["files"] = list(job.result_files)
    prov = _provenance(directory, job.result_files)
    if prov is not None:
        for site, info in prov.get("sites", {}).items():
            entry = report["sites"].setdefault(site, {"state": "DONE"})
            entry["participants"] = int(info["participants"])
            entry["count_granularity"] = int(info.get("count_granularity", entry.get("count_granularity", 1)))
        report["participants_total"] = int(prov["participants_total"])
        report["n_variants"] = int(prov["n_variants"])
    else:
        report["participants_total"] = sum(s["participants"] for s in report["sites"].values())
    for name in job.result_files:
        if name.endswith(_PER_VARIANT):
            report["variant_counts"][name] = _count_rows(directory / name)
    if previous is not None and previous.report is not None:
        report["previous"] = {
            "report_id": previous.id,
            "run": previous.run_no,
            "job_id": previous.job_id,
            "finished_at": previous.finished_at,
        }
        report["change"] = _change(previous.report, report, results_dir)
    return report


def _delta(before: int | None, after: int | None) -> dict[str, int | None]:
    d = after - before if before is not None and after is not None else None
    return {"before": before, "after": after, "delta": d}


def _change(prev: dict[str, Any], cur: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    sites = sorted(set(prev["sites"]) | set(cur["sites"]))
    change: dict[str, Any] = {
        "participants_total": _delta(prev["participants_total"], cur["participants_total"]),
        "sites": {
            s: _delta(prev["sites"].get(s, {}).get("participants"), cur["sites"].get(s, {}).get("participants"))
            for s in sites
        },
        "n_variants": _delta(prev["n_variants"], cur["n_variants"]),
        "afreq": None,
    }
    before = next((f for f in prev["files"] if f.endswith(".afreq")), None)
    after = next((f for f in cur["files"] if f.endswith(".afreq")), None)
    if before and after:
        paths = (results_dir / prev["job_id"] / before, results_dir / cur["job_id"] / after)
        if all(p.is_file() for p in paths):
            change["afreq"] = {"file": after, **afreq_change(read_afreq(paths[0]), read_afreq(paths[1]))}
        else:
            change["afreq"] = {
                "file": after,
                "unavailable": "the previous run's .afreq is no longer on the coordinator",
            }
    return change


def _signed(d: int | None) -> str:
    return "" if d is None else f" ({d:+d})"


def _g(x: float | None) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def render_text(report: dict[str, Any]) -> str:
    """The report as a few lines of text (``fedstat reports get``)."""
    r = report
    lines = [
        f"report {r['report_id']}: schedule {r['schedule']} ({r['schedule_id']}), run {r['run']}, owner {r['owner']}",
        f"  ran for {r['slot']} ({r['trigger']}); fired {r['fired_at']}, finished {r['finished_at']}",
        f"  job {r['job_id'] or '(not submitted)'}: {r['state']}",
    ]
    dp = f" (ε={r['dp']['epsilon']:g}, δ={r['dp']['delta']:g})" if r["dp"] else ""
    lines.append(
        f"  analyses: {' '.join('--' + a for a in r['analyses'])}   privacy: {r['privacy']}{dp}   dataset: {r['dataset']}"
    )
    if r["state"] != DONE:
        lines.append(f"  FAILED: {r['error'] or 'no reason recorded'}" if r["state"] == "FAILED" else f"  {r['state']}")
        for x in r["refused"]:
            lines.append(f"  site {x['site']} refused: {x['reason']}")
        for x in r["failed_sites"]:
            lines.append(f"  site {x['site']} failed: {x['reason']}")
        return "\n".join(lines) + "\n"
    per_site = ", ".join(
        f"{s} {describe_count(v.get('participants', 0), v.get('count_granularity', 1), '').strip()}"
        for s, v in sorted(r["sites"].items())
    )
    granularities = {v.get("count_granularity", 1) for v in r["sites"].values()}
    if WITHHELD in granularities:
        lines.append("  participants: withheld by the sites (differential privacy)")
    else:
        coarse = "at least " if granularities - {1} else ""  # sites round their counts down
        lines.append(f"  participants: {coarse}{r['participants_total']} in all ({per_site})")
    lines.append(f"  variants: {r['n_variants']}")
    lines.append(f"  files: {', '.join(r['files'])}")
    if r["previous"] is None:
        lines.append("  change: none to show (this schedule's first successful run)")
        return "\n".join(lines) + "\n"
    p, c = r["previous"], r["change"]
    lines.append(f"  change since run {p['run']} (report {p['report_id']}, job {p['job_id']}, {p['finished_at']}):")
    t = c["participants_total"]
    lines.append(f"    participants: {t['before']} -> {t['after']}{_signed(t['delta'])}")
    for s, d in c["sites"].items():
        if d["delta"] != 0:
            lines.append(f"      site {s}: {d['before']} -> {d['after']}{_signed(d['delta'])}")
    v = c["n_variants"]
    lines.append(f"    variants: {v['before']} -> {v['after']}{_signed(v['delta'])}")
    a = c["afreq"]
    if a is not None and "unavailable" in a:
        lines.append(f"    {a['file']}: cannot compare: {a['unavailable']}")
    elif a is not None:
        lines.append(
            f"    {a['file']}: ALT_FREQS changed at {a['alt_freq_changed']} of {a['variants_in_both']} variants"
            + (
                f"; largest |Δ| {_g(a['max_abs_delta_alt_freq'])} at {a['max_delta_variant']} "
                f"({_g(a['alt_freq_before'])} -> {_g(a['alt_freq_after'])})"
                if a["max_delta_variant"] is not None
                else ""
            )
        )
        lines.append(
            f"      OBS_CT total {a['obs_ct_total_before']} -> {a['obs_ct_total_after']}"
            f"{_signed(a['obs_ct_total_after'] - a['obs_ct_total_before'])}; changed at {a['obs_ct_changed']} "
            f"variants (largest |Δ| {a['max_abs_delta_obs_ct']})"
        )
        if a["variants_added"] or a["variants_removed"]:
            lines.append(f"      variants added {a['variants_added']}, removed {a['variants_removed']}")
    return "\n".join(lines) + "\n"


def summary_line(report: dict[str, Any] | None, *, state: str, error: str) -> str:
    """One line for ``fedstat reports list``."""
    if report is None:
        return state
    if report["state"] != DONE:
        refused = "; ".join(f"{x['site']} refused" for x in report["refused"])
        return f"{report['state']}: {refused or report['error']}"
    text = f"{report['participants_total']} participants, {report['n_variants']} variants"
    change = report["change"]
    if change is not None and change["participants_total"]["delta"] is not None:
        text += f" ({change['participants_total']['delta']:+d} participants"
        a = change["afreq"]
        if a is not None and "alt_freq_changed" in a:
            text += f", ALT_FREQS changed at {a['alt_freq_changed']}"
        text += ")"
    return text
