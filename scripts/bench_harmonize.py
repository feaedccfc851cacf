#!/usr/bin/env python3
"""Harmonization time through the real daemons (issue 17's ``--freq`` setting, issue 14's O1).

Simulates three sites (AFR .bed, EAS .vcf, EUR .pgen with REF/ALT swaps) with --variants variants,
starts a poc consortium (coordinator + three site agents over mutual TLS), submits ``--freq``
--jobs times and prints the harmonization phase's time from each job's log ("harmonized N
variants ... in X s") and the job's wall time.

    python scripts/bench_harmonize.py --variants 47000 --samples 900 --jobs 5

Run it against another checkout (e.g. before a change) with PYTHONPATH=<that checkout>.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=47_000)
    ap.add_argument("--samples", type=int, default=900, help="participants in all (three sites)")
    ap.add_argument("--jobs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import fedstat
    from fedstat.cli.main import main as cli
    from fedstat.client import Client
    from fedstat.simulate import simulate_consortium

    ws = args.workdir or Path(tempfile.mkdtemp(prefix="fedstat-bench-harmonize-"))
    shutil.rmtree(ws, ignore_errors=True)
    per = args.samples // 3
    truth = simulate_consortium(
        ws / "data",
        sites={"AFR": per, "EAS": per, "EUR": per},
        n_variants=args.variants,
        seed=17,
        formats={"AFR": "bed", "EUR": "pgen", "EAS": "vcf"},
        swap_fraction={"EUR": 0.05},
    )
    workspace = ws / "consortium"
    site_args = [a for s in ("AFR", "EAS", "EUR") for a in ("--site", f"{s}={truth.site_dir(s)}")]
    profile = str(workspace / "analyst.toml")
    assert cli(["poc", "prepare", "--workspace", str(workspace), *site_args]) == 0
    assert cli(["poc", "start", "--workspace", str(workspace)]) == 0
    seconds, walls = [], []
    try:
        from fedstat.jobs import JobSpec

        with Client.from_profile(profile) as c:
            for k in range(args.jobs):
                t0 = time.monotonic()
                job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name=f"f{k}")).job_id)
                walls.append(time.monotonic() - t0)
                log = "\n".join(c.get(job.job_id).log)
                m = re.search(r"harmonized (\d+) variants .* in ([0-9.]+) s", log)
                assert m, log
                seconds.append(float(m.group(2)))
                print(f"job {k + 1}: harmonized {m.group(1)} variants in {m.group(2)} s; job {walls[-1]:.2f} s")
    finally:
        cli(["poc", "stop", "--workspace", str(workspace)])
    print(
        f"fedstat {fedstat.__file__}: {args.variants} variants x 3 sites, harmonization median "
        f"{statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f}); "
        f"job median {statistics.median(walls):.2f} s"
    )
    if args.workdir is None:
        shutil.rmtree(ws, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
