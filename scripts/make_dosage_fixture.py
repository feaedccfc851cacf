#!/usr/bin/env python3
"""Build ``tests/data/dosage/``: imputed dosages at three sites, and plink2 on the pooled data.

The participants and their sample tables are the GWAS fixture's (``tests/data/gwas``: QT, CC, AGE,
SEX, ...); the genotypes are new, simulated as imputation returns them: soft ALT dosages (``DS``)
rounded to three decimals, some exactly integral (stored by plink2 as hard calls only), some far
from an integer (plink2's hard call is then missing while the dosage is present), a few missing
altogether. Each site's VCF is imported by ``plink2 --vcf … dosage=DS --make-pgen``, as a site
would convert its imputation server's output; EUR lists a tenth of the variants with REF and ALT
exchanged (its dosages ``2 - d``). Special variants: all dosages 0 (monomorphic), all 0.5 (a
constant soft dosage), all 1 (a constant hard call).

The reference outputs are plink2 2.00a3.5 on the pooled VCF imported the same way: ``--freq
--geno-counts --hardy --missing`` and ``--glm`` on QT and CC with AGE and SEX, all on the
phenotypes' and covariates' common cohort (``--require-pheno --require-covar``: one cohort for every
release, as the sites' release ledgers need it); MaCH r² (``--freq cols=+machr2``, ``machr2.afreq``)
and ``--geno --hwe --mach-r2-filter`` (``r2filter.snplist``, the log's removal lines in
``r2filter.removed``) and ``--geno --maf`` (``maf.*``: on the dosage frequencies) on the same cohort.

``edge/`` holds MaCH r²'s edge cases at three small sites (AFR a hard-call .pgen imported from GT
alone, EAS and EUR dosages, EUR with REF/ALT exchanged on some variants): monomorphic REF and ALT,
a soft dosage constant at the dosage sites, hard calls only (with and without hets: r² = 2 exactly), a variant missing
at most samples, one observed at a single sample, one missing everywhere; ``edge/expected`` has
plink2's ``--freq cols=+machr2`` and a ``--mach-r2-filter`` at those bounds::

    python scripts/make_dosage_fixture.py           # rebuild tests/data/dosage (commit the result)
    python scripts/make_dosage_fixture.py --check   # rebuild in a temp dir, fail on any difference
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_or_check  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GWAS = REPO / "tests" / "data" / "gwas"
DEFAULT_OUT = REPO / "tests" / "data" / "dosage"
SITES = ("AFR", "EAS", "EUR")
SEED = 20261204
N_VARIANTS = 240
COVARS = "AGE,SEX"


def _dosages(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(variants, samples) ALT dosages in [0, 2] at three decimals; NaN missing."""
    p = rng.uniform(0.03, 0.6, N_VARIANTS)
    g = rng.binomial(2, p[:, None], (N_VARIANTS, n_samples)).astype(np.float64)
    d = np.clip(g + rng.normal(0.0, 0.3, g.shape), 0.0, 2.0)
    d = np.round(d, 3)
    certain = rng.random(g.shape) < 0.25  # imputed with certainty: an integral dosage
    d[certain] = g[certain]
    d[rng.random(g.shape) < 0.01] = np.nan
    d[0] = 0.0  # monomorphic
    d[1] = 0.5  # a constant soft dosage
    d[2] = 1.0  # a constant hard call
    return d


def _vcf(path: Path, ids: list[str], d: np.ndarray, swapped: np.ndarray) -> None:
    lines = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=1,length=10000000>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]),
    ]
    for v in range(d.shape[0]):
        ref, alt = ("G", "A") if swapped[v] else ("A", "G")
        row = 2.0 - d[v] if swapped[v] else d[v]
        cells = []
        for x in row.tolist():
            if np.isnan(x):
                cells.append("./.:.")
            else:
                k = int(np.floor(x + 0.5))
                gt = ("0/0", "0/1", "1/1")[k]
                cells.append(f"{gt}:{x:.3f}")
        lines.append("\t".join(["1", str(10000 + 97 * v), f"rs{v + 1}", ref, alt, ".", ".", ".", "GT:DS", *cells]))
    path.write_text("\n".join(lines) + "\n")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def build(out_dir: Path, plink2: str) -> None:
    for sub in (*SITES, "pooled", "expected", "edge"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    pooled_ids = [line.split("\t")[1] for line in (GWAS / "pooled" / "samples.tsv").read_text().splitlines()[1:]]
    d = _dosages(len(pooled_ids), rng)
    swapped = rng.random(N_VARIANTS) < 0.1
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for site in (*SITES, "pooled"):
            (out_dir / site).mkdir()
            shutil.copyfile(GWAS / site / "samples.tsv", out_dir / site / "samples.tsv")
            ids = [line.split("\t")[1] for line in (GWAS / site / "samples.tsv").read_text().splitlines()[1:]]
            cols = [pooled_ids.index(i) for i in ids]
            flip = swapped if site == "EUR" else np.zeros(N_VARIANTS, dtype=bool)
            _vcf(t / f"{site}.vcf", ids, d[:, cols], flip)
            _run([plink2, "--vcf", str(t / f"{site}.vcf"), "dosage=DS", "--double-id", "--make-pgen", "--threads", "1",
                  "--out", str(t / site)])  # fmt: skip
            for ext in ("pgen", "pvar", "psam"):
                shutil.copyfile(t / f"{site}.{ext}", out_dir / site / f"genotypes.{ext}")
        expected = out_dir / "expected"
        expected.mkdir()
        pooled = out_dir / "pooled"
        samples = str(pooled / "samples.tsv")
        _run([plink2, "--pfile", str(pooled / "genotypes"), "--pheno", samples, "--pheno-name", "QT,CC",
              "--require-pheno", "--covar", samples, "--covar-name", COVARS, "--require-covar", "--freq",
              "--geno-counts", "--hardy", "--missing", "variant-only", "--threads", "1",
              "--out", str(t / "required")])  # fmt: skip
        _run([plink2, "--pfile", str(pooled / "genotypes"), "--pheno", samples, "--pheno-name", "QT,CC",
              "--require-pheno", "--covar", samples, "--covar-name", COVARS, "--require-covar", "--glm",
              "hide-covar", "--threads", "1", "--out", str(t / "required")])  # fmt: skip
        for f in sorted(t.glob("required.*")):
            if f.suffix not in (".log", ".pgen", ".pvar", ".psam", ".vcf"):
                shutil.copyfile(f, expected / f.name)
        cohort = ["--pheno", samples, "--pheno-name", "QT,CC", "--require-pheno", "--covar", samples,
                  "--covar-name", COVARS, "--require-covar"]  # fmt: skip
        _run([plink2, "--pfile", str(pooled / "genotypes"), *cohort, "--freq", "cols=+machr2", "--threads", "1",
              "--out", str(t / "machr2")])  # fmt: skip
        shutil.copyfile(t / "machr2.afreq", expected / "machr2.afreq")
        _filter_run(plink2, pooled / "genotypes", [*cohort, *R2_FILTER], t / "r2filter", expected)
        _filter_run(plink2, pooled / "genotypes", [*cohort, *MAF_FILTER], t / "maf", expected)
        _build_edge(out_dir / "edge", plink2, t)


#: The QC run of the main fixture: --geno and --hwe (hard calls), then --mach-r2-filter (dosages).
R2_FILTER = ["--geno", "0.4", "--hwe", "1e-3", "--mach-r2-filter", "0.85", "0.95"]
#: --maf on the dosage frequencies (plink2's): --geno first, as plink2 orders them.
MAF_FILTER = ["--geno", "0.4", "--maf", "0.2"]
#: Log lines of a filter run kept in ``<name>.removed``.
_REMOVED_LINES = (
    "--geno:",
    "--hwe:",
    "allele frequency threshold",
    "--mach-r2-filter:",
    "variants remaining after main filters",
)


def _filter_run(plink2: str, pfile: Path, flags: list[str], prefix: Path, expected: Path) -> None:
    """plink2 ``flags --write-snplist``: keep the .snplist and the log's removal lines (``.removed``)."""
    _run([plink2, "--pfile", str(pfile), *flags, "--write-snplist", "--threads", "1", "--out", str(prefix)])
    shutil.copyfile(prefix.with_suffix(".snplist"), expected / f"{prefix.name}.snplist")
    log = prefix.with_suffix(".log").read_text().splitlines()
    kept = [line for line in log if any(k in line for k in _REMOVED_LINES)]
    (expected / f"{prefix.name}.removed").write_text("".join(f"{line}\n" for line in kept))


def _edge_dosages(rng: np.random.Generator, n: int) -> np.ndarray:
    """(variants, samples) ALT dosages of the edge cases, then soft ones; NaN missing."""
    g = rng.binomial(2, rng.uniform(0.1, 0.5, 12)[:, None], (12, n)).astype(np.float64)
    soft = np.round(np.clip(g + rng.normal(0.0, 0.3, g.shape), 0.0, 2.0), 3)
    soft[rng.random(soft.shape) < 0.03] = np.nan
    special = np.full((8, n), np.nan)  # the last one: missing everywhere
    special[0] = 0.0  # monomorphic REF: 0/0, nan
    special[1] = 2.0  # monomorphic ALT: nan
    special[2] = 0.25  # a constant soft dosage: r2 = 0
    special[3] = rng.binomial(2, 0.3, n)  # hard calls only
    special[4] = 2.0 * rng.binomial(1, 0.4, n)  # hard calls without hets: r2 = 2 exactly
    special[5, : n // 6] = soft[0, : n // 6]  # missing at most samples
    special[6, n // 2] = 1.234  # one sample observed
    return np.concatenate([special, soft])


def _build_edge(out_dir: Path, plink2: str, t: Path) -> None:
    """``edge/``: see the module docstring."""
    rng = np.random.default_rng(SEED + 1)
    sites = {"AFR": 30, "EAS": 25, "EUR": 35}
    n = sum(sites.values())
    d = _edge_dosages(rng, n)
    ids = [f"{s}_{i:03d}" for s, k in sites.items() for i in range(1, k + 1)]
    afr = np.array([i.startswith("AFR") for i in ids])
    d[:, afr] = np.where(np.isnan(d[:, afr]), np.nan, np.floor(d[:, afr] + 0.5))  # AFR: hard calls only
    swapped = rng.random(d.shape[0]) < 0.3
    expected = out_dir / "expected"
    expected.mkdir(parents=True)
    for site in (*sites, "pooled"):
        (out_dir / site).mkdir()
        cols = [k for k, i in enumerate(ids) if site == "pooled" or i.startswith(site)]
        flip = swapped if site == "EUR" else np.zeros(d.shape[0], dtype=bool)
        _vcf(t / f"edge{site}.vcf", [ids[k] for k in cols], d[:, cols], flip)
        dosage = [] if site == "AFR" else ["dosage=DS"]  # AFR's file has no dosage track
        _run([plink2, "--vcf", str(t / f"edge{site}.vcf"), *dosage, "--double-id", "--make-pgen", "--threads", "1",
              "--out", str(t / f"edge{site}")])  # fmt: skip
        for ext in ("pgen", "pvar", "psam"):
            shutil.copyfile(t / f"edge{site}.{ext}", out_dir / site / f"genotypes.{ext}")
        (out_dir / site / "samples.tsv").write_text("#FID\tIID\n" + "".join(f"{ids[k]}\t{ids[k]}\n" for k in cols))
    pooled = out_dir / "pooled" / "genotypes"
    _run([plink2, "--pfile", str(pooled), "--freq", "cols=+machr2", "--threads", "1", "--out", str(t / "edge")])
    shutil.copyfile(t / "edge.afreq", expected / "edge.afreq")
    _filter_run(plink2, pooled, ["--mach-r2-filter", "0.5", "2"], t / "edgefilter", expected)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
