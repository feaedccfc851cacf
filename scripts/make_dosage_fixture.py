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
release, as the sites' release ledgers need it)::

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
    for sub in (*SITES, "pooled", "expected"):
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
