#!/usr/bin/env python3
"""Benchmark: federated GWAS with fedstat against plink2 on the pooled data, in one run.

Simulates a three-site consortium (or reuses one from --data), runs ``plink2 --glm`` on the
pooled data, then runs the same analysis federated: a coordinator and three site agents as
real daemons over mutual TLS on loopback, in the default privacy mode, submitted through the
``fedstat`` CLI. Prints wall time (submit -> files written), peak memory of every process and
the ratios, and checks that the results agree.

    python scripts/bench_gwas.py --samples 15000 --variants 90000            # linear (QT)
    python scripts/bench_gwas.py --samples 15000 --variants 90000 --pheno CC # logistic
    python scripts/bench_gwas.py --samples 15000 --variants 90000 --dosage   # on imputed dosages

``--dosage`` turns the simulated hard calls into soft dosages (each call plus Gaussian noise, sd
0.2, clipped to [0, 2], at 1/1000) written as dosage ``.pgen`` files at every site and in the
pooled data (one sample's dosage is the same in both; REF/ALT-swapped site rows hold 2 - d), and
both plink2 and fedstat analyse the dosages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SITES = ("AFR", "EAS", "EUR")


def _vmhwm_kib(pid: int) -> int:
    """Peak resident set size of a running process (VmHWM), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def simulate(data: Path, samples: int, variants: int, seed: int) -> None:
    from fedstat.simulate import simulate_consortium

    per = samples // 3
    sizes = {"AFR": per, "EAS": per, "EUR": samples - 2 * per}
    t0 = time.monotonic()
    simulate_consortium(
        data,
        sites=sizes,
        n_variants=variants,
        seed=seed,
        formats={"AFR": "bed", "EAS": "pgen", "EUR": "pgen"},
        swap_fraction={"EUR": 0.05},
        missing_rate={"EUR": 0.01, "AFR": 0.002},
        n_causal=50,
    )
    print(f"simulated {samples} samples x {variants} variants in {time.monotonic() - t0:.0f} s", flush=True)


def to_dosages(data: Path, out: Path, seed: int) -> None:
    """Soft-dosage copies of a simulated consortium's genotypes (see the module docstring)."""
    import pgenlib

    from fedstat.data.genotypes import open_genotypes

    t0 = time.monotonic()
    pooled = open_genotypes(data / "pooled")
    pv_of = {
        (c, int(p)): i for i, (c, p) in enumerate(zip(pooled.variants.chrom, pooled.variants.pos.tolist(), strict=True))
    }
    pooled_ref = pooled.variants.ref
    pooled_iid = {iid: j for j, iid in enumerate(pooled.samples.iid)}
    for site in (*SITES, "pooled"):
        src = open_genotypes(data / site)
        (out / site).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / site / "samples.tsv", out / site / "samples.tsv")
        vt = src.variants
        rows = ["#CHROM\tPOS\tID\tREF\tALT"]
        rows += [
            f"{c}\t{p}\t{i}\t{r}\t{a}" for c, p, i, r, a in zip(vt.chrom, vt.pos, vt.id, vt.ref, vt.alt, strict=True)
        ]
        (out / site / "genotypes.pvar").write_text("\n".join(rows) + "\n")
        psam = ["#FID\tIID"] + [
            f"{f}\t{i}" for f, i in zip(src.samples.fid or src.samples.iid, src.samples.iid, strict=True)
        ]
        (out / site / "genotypes.psam").write_text("\n".join(psam) + "\n")
        cols = np.array([pooled_iid[i] for i in src.samples.iid])
        n = src.n_samples
        writer = pgenlib.PgenWriter(
            os.fsencode(out / site / "genotypes.pgen"), n, variant_ct=len(vt), nonref_flags=False, dosage_present=True
        )
        for offset, block in src.read_blocks(np.arange(len(vt)), block_size=2048):
            for k in range(block.shape[0]):
                v = offset + k
                pv = pv_of[(vt.chrom[v], int(vt.pos[v]))]
                sign = 1.0 if vt.ref[v] == pooled_ref[pv] else -1.0  # a swapped row holds 2 - d
                noise = np.random.default_rng([seed, pv]).normal(0.0, 0.2, pooled.n_samples)[cols]
                g = block[k].astype(np.float64)
                d = np.where(g >= 0, np.round(np.clip(g + sign * noise, 0.0, 2.0), 3), -9.0)
                writer.append_dosages(d.astype(np.float32))
        writer.close()
    print(f"wrote dosage copies in {time.monotonic() - t0:.0f} s", flush=True)


def run_plink2(data: Path, out: Path, pheno: str, covars: str, threads: int) -> tuple[float, int]:
    pooled = data / "pooled"
    cmd = [
        "plink2",
        "--pfile",
        str(pooled / "genotypes"),
        "--pheno",
        str(pooled / "samples.tsv"),
        "--pheno-name",
        pheno,
        "--covar",
        str(pooled / "samples.tsv"),
        "--covar-name",
        covars,
        "--glm",
        "hide-covar",
        "--threads",
        str(threads),
        "--out",
        str(out / "plink2"),
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss: the child's peak resident set, KiB
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"plink2 failed with exit code {proc.returncode}; see {out / 'plink2.log'}")
    return wall, int(usage.ru_maxrss)


def run_fedstat(data: Path, work: Path, pheno: str, covars: str, privacy: str) -> tuple[float, dict[str, int], Path]:
    from fedstat.cli import poc

    ws = work / "consortium"
    shutil.rmtree(ws, ignore_errors=True)
    fedstat = [sys.executable, "-P", "-m", "fedstat.cli.main"]
    subprocess.run(
        [
            *fedstat,
            "poc",
            "prepare",
            "--workspace",
            str(ws),
            *[a for s in SITES for a in ("--site", f"{s}={data / s}")],
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([*fedstat, "poc", "start", "--workspace", str(ws)], check=True, stdout=subprocess.DEVNULL)
    try:
        out = work / f"fedstat-out-{privacy}" / "gwas"
        t0 = time.monotonic()
        subprocess.run(
            [
                *fedstat,
                "submit",
                "--profile",
                str(ws / "analyst.toml"),
                "--glm",
                "--pheno-name",
                pheno,
                "--covar-name",
                covars,
                "--privacy",
                privacy,
                "--out",
                str(out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.monotonic() - t0
        peaks = {c: _vmhwm_kib(int((ws / "run" / f"{c}.pid").read_text())) for c in ("coordinator", *SITES)}
    finally:
        poc.stop(ws)
    return wall, peaks, out


def compare(plink_file: Path, ours_file: Path) -> str:
    import pandas as pd

    a = pd.read_csv(plink_file, sep="\t", na_values=["NA", "nan"])
    b = pd.read_csv(ours_file, sep="\t", na_values=["NA", "nan"])
    assert len(a) == len(b), f"{len(a)} plink2 rows vs {len(b)} fedstat rows"
    same_cols = [c for c in ("OBS_CT", "A1", "ERRCODE", "FIRTH?") if c in a]
    mismatched = {c: int((a[c].astype(str) != b[c].astype(str)).sum()) for c in same_cols}
    # numeric columns compared where the rows test the same allele (A1 ties at frequency ½ can differ)
    ok = a["P"].notna() & b["P"].notna() & (a["P"] > 0) & (b["P"] > 0) & (a["A1"] == b["A1"])
    dlogp = np.abs(np.log10(a.loc[ok, "P"]) - np.log10(b.loc[ok, "P"])).max()
    stat = "T_STAT" if "T_STAT" in a else "Z_STAT"
    se = "SE" if "SE" in a else "LOG(OR)_SE"
    # BETA = STAT·SE: |ΔBETA|/SE from the statistic, not from OR printed to 6 digits (log(1.00305) vs
    # log(1.00306) alone is 2e-4 SE when SE is 0.02)
    dbeta = (np.abs(a.loc[ok, stat] * a.loc[ok, se] - b.loc[ok, stat] * b.loc[ok, se]) / a.loc[ok, se]).max()
    return f"max |dlog10 P| = {dlogp:.2e}, max |dBETA|/SE = {dbeta:.2e} (same-A1 rows), mismatched {mismatched}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=15000)
    ap.add_argument("--variants", type=int, default=90000)
    ap.add_argument("--pheno", default="QT", help="QT (linear) or CC (logistic)")
    ap.add_argument("--covars", default="AGE,SEX")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fedstat-bench"))
    ap.add_argument("--data", type=Path, help="reuse a simulated consortium")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="plink2 --threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--dosage", action="store_true", help="analyse soft dosages (dosage .pgen files) instead of hard calls"
    )
    ap.add_argument(
        "--modes",
        default="secagg",
        help="privacy modes to run fedstat in, comma-separated (default: secagg, the default mode); "
        "with several, each one's cost relative to the first is printed",
    )
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or args.work / f"data-{args.samples}x{args.variants}"
    if not (data / "pooled" / "genotypes.pgen").exists():
        simulate(data, args.samples, args.variants, args.seed)
    if args.dosage:
        hard, data = data, data.with_name(data.name + "-dosage")
        if not (data / "pooled" / "genotypes.pgen").exists():
            to_dosages(hard, data, args.seed)
    t_plink, m_plink = run_plink2(data, args.work, args.pheno, args.covars, args.threads)
    ext = "glm.linear" if args.pheno == "QT" else "glm.logistic.hybrid"
    runs = {}
    for mode in modes:
        t_fed, peaks, out = run_fedstat(data, args.work, args.pheno, args.covars, mode)
        agreement = compare(args.work / f"plink2.{args.pheno}.{ext}", out.parent / f"gwas.{args.pheno}.{ext}")
        runs[mode] = (t_fed, peaks, agreement)
    print()
    print(
        f"GWAS {args.pheno} ({'linear' if args.pheno == 'QT' else 'logistic'}), covariates {args.covars}"
        f"{', soft dosages' if args.dosage else ''}: "
        f"{args.samples} samples x {args.variants} variants, 3 sites, {os.cpu_count()} cores"
    )
    print(f"{'':<34}{'wall s':>10}{'peak MiB':>12}")
    print(f"{'plink2 (pooled, ' + str(args.threads) + ' threads)':<34}{t_plink:>10.1f}{m_plink / 1024:>12.0f}")
    for mode, (t_fed, peaks, _) in runs.items():
        print(f"{'fedstat (federated, mTLS, ' + mode + ')':<34}{t_fed:>10.1f}{max(peaks.values()) / 1024:>12.0f}")
        for comp, kib in peaks.items():
            print(f"{'  ' + comp:<34}{'':>10}{kib / 1024:>12.0f}")
    for mode, (t_fed, _, agreement) in runs.items():
        print(f"speed-up fedstat ({mode}) vs plink2: {t_plink / t_fed:.2f}x; agreement: {agreement}")
    base = "none" if "none" in runs else modes[0]  # each mode's wall time as a multiple of plaintext sums'
    for mode in modes:
        if mode != base:
            print(f"cost of {mode} relative to {base}: {runs[mode][0] / runs[base][0]:.3f}x the wall time")
    print(
        json.dumps(
            {
                "plink2_s": t_plink,
                "plink2_peak_kib": m_plink,
                "fedstat": {m: {"s": r[0], "speedup": t_plink / r[0], "peak_kib": r[1]} for m, r in runs.items()},
                "self_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
