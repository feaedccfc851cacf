"""``fedstat demo``: simulate a structured three-site consortium and run a job end to end.

Three sites (AFR as PLINK1 .bed, EUR as PLINK2 .pgen with some REF/ALT swaps and missing
calls, EAS as VCF) hold their own genotypes; a coordinator and three site agents run as
background daemons over mutual TLS on loopback; an analyst submits ``--freq --geno-counts
--hardy --missing``, lists jobs, fetches results, checks status, and everything is stopped.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable, Sequence

from fedstat.cli import poc
from fedstat.errors import InputError

SITES = ("AFR", "EAS", "EUR")
FORMATS = {"AFR": "bed", "EUR": "pgen", "EAS": "vcf"}


def _say(step: str) -> None:
    print(f"\n== {step}", flush=True)


def run(args: argparse.Namespace, *, cli: Callable[[Sequence[str]], int]) -> int:
    """The demo; ``cli`` runs one ``fedstat`` command line (the command's own entry point)."""
    from fedstat.simulate import simulate_consortium  # noqa: PLC0415

    if args.samples < 3 * 10 or args.variants < 100:
        raise InputError("the demo needs at least 30 samples and 100 variants")
    ws = args.workspace.resolve()
    if (ws / "consortium" / "poc.json").exists():
        poc.stop(ws / "consortium")
    shutil.rmtree(ws, ignore_errors=True)
    t0 = time.monotonic()

    per_site = args.samples // 3
    sizes = {"AFR": per_site, "EUR": per_site + args.samples % 3, "EAS": per_site}
    _say(f"simulating {args.samples} participants x {args.variants} variants at 3 sites with population structure")
    truth = simulate_consortium(
        ws / "data",
        sites=sizes,
        n_variants=args.variants,
        seed=args.seed,
        formats=FORMATS,
        swap_fraction={"EUR": 0.05},
        missing_rate={"EUR": 0.01, "AFR": 0.002},
    )
    for s in SITES:
        print(f"  {s}: {sizes[s]} participants, {FORMATS[s]} files in {truth.site_dir(s)}")

    workspace = ws / "consortium"
    site_args = [a for s in SITES for a in ("--site", f"{s}={truth.site_dir(s)}")]
    profile = str(workspace / "analyst.toml")
    out = str(ws / "results" / "run1")
    steps: list[tuple[str, list[str]]] = [
        (
            "prepare: consortium CA, certificates, configs",
            ["poc", "prepare", "--workspace", str(workspace), *site_args],
        ),
        ("start: coordinator + 3 site agents as daemons (mutual TLS)", ["poc", "start", "--workspace", str(workspace)]),
        (
            "submit: --freq --geno-counts --hardy --missing",
            ["submit", "--profile", profile, "--freq", "--geno-counts", "--hardy", "--missing", "--out", out],
        ),
        ("jobs list", ["jobs", "list", "--profile", profile]),
    ]
    try:
        for title, argv in steps:
            _say(f"fedstat {' '.join(argv[:2])}: {title}")
            rc = cli(argv)
            if rc != 0:
                return rc
        from fedstat.client import Client  # noqa: PLC0415

        with Client.from_profile(profile) as c:
            job_id = c.list_jobs(1)[0].job_id
        refetch = ["jobs", "results", "--profile", profile, job_id, "--out", str(ws / "results" / "fetched" / "run1")]
        _say("fedstat jobs results: fetch the finished job's files again")
        if (rc := cli(refetch)) != 0:
            return rc
        _say("fedstat poc status")
        cli(["poc", "status", "--workspace", str(workspace)])
    finally:
        _say("fedstat poc stop")
        cli(["poc", "stop", "--workspace", str(workspace)])

    afreq = ws / "results" / "run1.afreq"
    print(f"\nfirst rows of {afreq}:")
    with afreq.open() as f:
        for _, line in zip(range(4), f, strict=False):
            print("  " + line.rstrip())
    print(f"\ndemo finished in {time.monotonic() - t0:.1f} s. Results: {ws / 'results'}/")
    print(
        f"The consortium workspace stays in {workspace}: `fedstat poc start --workspace {workspace}` to run it again."
    )
    return 0
