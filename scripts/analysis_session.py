#!/usr/bin/env python3
"""A realistic analysis session against a poc consortium: how many legitimate jobs the sites refuse.

Issue 14's acceptance asks that the release gate and ledger refuse attacks without refusing
ordinary work. This script simulates a three-site consortium (as ``fedstat demo`` does: AFR as
PLINK1 .bed, EUR as .pgen with swapped alleles and missing calls, EAS as VCF; QT and CC with 3%
missing values each, AGE and SEX), starts it as real daemons over mutual TLS, and runs the
20 jobs an analyst typically runs in a first week, in order, through the ``fedstat`` command.
It prints each job's outcome and, for a refused or failed one, the reason, then the count.

    python scripts/analysis_session.py                      # 3 x 400 participants x 3000 variants
    python scripts/analysis_session.py --design common      # phenotypes on their common cohort
    python scripts/analysis_session.py --samples 3000 --variants 20000

Every site keeps its release ledger across the session (the jobs are differenced against each
other, as an attacker's would be), so the order matters: it is the order a person would use.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SITES = ("AFR", "EAS", "EUR")
FORMATS = {"AFR": "bed", "EUR": "pgen", "EAS": "vcf"}

COV = ["--covar-name", "AGE,SEX"]
QC = ["--maf", "0.01", "--geno", "0.05", "--hwe", "1e-6"]

#: (what the analyst wants, the plink2-style flags)
SESSION: list[tuple[str, list[str]]] = [
    ("allele frequencies over everyone", ["--freq"]),
    ("genotype counts", ["--geno-counts"]),
    ("Hardy-Weinberg", ["--hardy"]),
    ("missingness", ["--missing"]),
    ("the four together (as the demo)", ["--freq", "--geno-counts", "--hardy", "--missing"]),
    ("QC'd frequencies", [*QC, "--freq"]),
    ("frequencies of common variants", ["--maf", "0.05", "--freq"]),
    ("--mind then frequencies", ["--mind", "0.1", "--freq"]),
    ("PCA after QC", [*QC, "--pca", "5"]),
    ("linear GWAS of QT", ["--glm", "--pheno-name", "QT", *COV]),
    ("the same job again (a repeat)", ["--glm", "--pheno-name", "QT", *COV]),
    ("linear GWAS of QT, AGE only", ["--glm", "--pheno-name", "QT", "--covar-name", "AGE"]),
    ("logistic GWAS of CC", ["--glm", "--pheno-name", "CC", *COV]),
    ("both phenotypes on their common cohort", ["--glm", "--pheno-name", "QT,CC", "--require-pheno", *COV]),
    ("allelic test of CC", ["--assoc", "--pheno-name", "CC"]),
    ("genotypic tests of CC", ["--model", "--pheno-name", "CC"]),
    ("HWE in controls, then frequencies", ["--hwe", "1e-6", "controls", "--pheno-name", "CC", "--freq"]),
    (
        "the one-command pipeline (QC, PCA, PC-adjusted GWAS)",
        [*QC, "--pca", "5", "--glm", "--pheno-name", "CC", "--covar-name", "AGE,SEX,PC1-PC5"],
    ),
    (
        "pipeline for both phenotypes, common cohort",
        [*QC, "--pca", "5", "--glm", "--pheno-name", "QT,CC", "--require-pheno", "--covar-name", "AGE,SEX,PC1-PC5"],
    ),
    ("frequencies again at the end (a repeat)", ["--freq"]),
]


#: The same analyst, who read the README first: phenotypes analysed together on their common cohort
#: (--require-pheno) from the start, so no phenotype's cohort is released alone beside another's.
COMMON: list[tuple[str, list[str]]] = [
    *SESSION[:9],
    ("GWAS of QT and CC on their common cohort", ["--glm", "--pheno-name", "QT,CC", "--require-pheno", *COV]),
    ("the same job again (a repeat)", ["--glm", "--pheno-name", "QT,CC", "--require-pheno", *COV]),
    ("the same, AGE only", ["--glm", "--pheno-name", "QT,CC", "--require-pheno", "--covar-name", "AGE"]),
    ("the same with firth", ["--glm", "firth", "--pheno-name", "QT,CC", "--require-pheno", *COV]),
    ("QC'd GWAS of both", [*QC, "--glm", "--pheno-name", "QT,CC", "--require-pheno", *COV]),
    ("allelic test of CC, common cohort", ["--assoc", "--pheno-name", "CC", "--require-pheno", "QT,CC"]),
    ("genotypic tests of CC, common cohort", ["--model", "--pheno-name", "CC", "--require-pheno", "QT,CC"]),
    (
        "HWE in controls, common cohort, then frequencies",
        ["--hwe", "1e-6", "controls", "--pheno-name", "CC", "--require-pheno", "QT,CC", "--freq"],
    ),
    SESSION[18],
    ("the pipeline again (a repeat)", SESSION[18][1]),
    SESSION[19],
]
DESIGNS = {"separate": SESSION, "common": COMMON}


def _fedstat(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fedstat.cli.main", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"`fedstat {' '.join(argv)}` failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _reason(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    interesting = [ln for ln in lines if "refus" in ln.lower() or "error" in ln.lower() or "failed" in ln.lower()]
    return (interesting or lines or ["(no message)"])[-1][:400]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1200, help="participants over the three sites")
    ap.add_argument("--variants", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fedstat-session"))
    ap.add_argument(
        "--design",
        choices=sorted(DESIGNS),
        default="separate",
        help="separate: each phenotype analysed on its own cohort (as many analysts start); common: "
        "phenotypes analysed together on their common cohort from the start (--require-pheno)",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from fedstat.simulate import simulate_consortium  # noqa: PLC0415

    shutil.rmtree(args.work, ignore_errors=True)
    per = args.samples // 3
    truth = simulate_consortium(
        args.work / "data",
        sites={s: per for s in SITES},
        n_variants=args.variants,
        seed=args.seed,
        formats=FORMATS,
        swap_fraction={"EUR": 0.05},
        missing_rate={"EUR": 0.01, "AFR": 0.002},
    )
    ws = args.work / "consortium"
    site_args = [a for s in SITES for a in ("--site", f"{s}={truth.site_dir(s)}")]
    _fedstat("poc", "prepare", "--workspace", str(ws), *site_args)
    _fedstat("poc", "start", "--workspace", str(ws))
    profile = str(ws / "analyst.toml")
    outcomes: list[tuple[int, str, str, float, str]] = []
    try:
        for k, (what, flags) in enumerate(DESIGNS[args.design], start=1):
            t0 = time.monotonic()
            proc = _fedstat(
                "submit", "--profile", profile, *flags, "--out", str(args.work / "out" / f"job{k:02d}"), check=False
            )
            took = time.monotonic() - t0
            state = "ran" if proc.returncode == 0 else "REFUSED/FAILED"
            outcomes.append((k, what, state, took, "" if proc.returncode == 0 else _reason(proc)))
            print(f"{k:>2}. {state:<15} {took:6.1f} s  {what}: fedstat submit {' '.join(flags)}", flush=True)
            if proc.returncode != 0:
                print(f"      reason: {outcomes[-1][4]}", flush=True)
    finally:
        _fedstat("poc", "stop", "--workspace", str(ws), check=False)
    refused = [o for o in outcomes if o[2] != "ran"]
    print(
        f"\n{len(outcomes)} jobs, {len(outcomes) - len(refused)} ran, {len(refused)} refused or failed "
        f"({args.design} design; {args.samples} participants at 3 sites, {args.variants} variants, secagg, "
        "min_group 10)"
    )
    for k, what, _, _, reason in refused:
        print(f"  job {k} ({what}): {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
