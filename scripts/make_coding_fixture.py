#!/usr/bin/env python3
"""Build ``tests/data/coding/``: how plink2 reads phenotype and covariate columns, and dosage files.

The genotypes are the GWAS fixture's (``tests/data/gwas``: AFR .bed, EAS VCF, EUR .pgen, and the
pooled .pgen); this fixture adds sample tables whose columns are coded the way real cohorts code
them, and plink2 2.00a3.5's ``--glm`` on the pooled data:

- ``B01``: a 0/1 covariate (a batch or sex indicator): a number to plink2, zeros included;
- ``C012``: a 0/1/2 covariate (a count), a number too;
- ``QT2``: a quantitative phenotype that depends on both (so dropping or recoding either changes
  every row);
- ``CC12M``: a case/control phenotype coded 1/2 with missing values written ``0``, ``-9`` and ``NA``;
- ``P01``: a phenotype coded 0/1, which plink2 reads as case/control with 0 = missing, so every
  sample is a control and ``--glm`` stops (its error is kept in ``expected/p01.error.txt``);
- ``CAT``: a text (categorical) column with values ``A``/``B``/``C``, in every table, never used by
  the reference runs (plink2 reads it as categorical).

``dosage/`` holds small imputed-data files: ``gtds.vcf`` (GT and DS), ``dsonly.vcf`` (DS, no GT)
and ``dosage.pgen`` made from ``gtds.vcf`` by ``plink2 --vcf … dosage=DS --make-pgen``::

    python scripts/make_coding_fixture.py           # rebuild tests/data/coding (commit the result)
    python scripts/make_coding_fixture.py --check   # rebuild in a temp dir, fail on any difference
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
DEFAULT_OUT = REPO / "tests" / "data" / "coding"
SITES = ("AFR", "EAS", "EUR")
SEED = 20261202
PHENOS = "QT2,CC12M"
COVARS = "AGE,B01,C012"
DOSAGE_SAMPLES, DOSAGE_VARIANTS = 24, 12


def _tables(out_dir: Path) -> None:
    """Write the pooled and per-site sample tables (rows in the GWAS fixture's pooled order)."""
    rng = np.random.default_rng(SEED)
    header, *rows = (GWAS / "pooled" / "samples.tsv").read_text().splitlines()
    cols = header.split("\t")
    table = [r.split("\t") for r in rows]
    n = len(table)
    qt, cc, age = (np.array([r[cols.index(c)] for r in table]) for c in ("QT", "CC", "AGE"))
    b01 = rng.integers(0, 2, n)
    c012 = rng.choice(3, n, p=(0.5, 0.35, 0.15))
    qt_value = np.array([float("nan") if v == "NA" else float(v) for v in qt])
    qt2 = qt_value + 0.9 * b01 + 0.4 * c012 + rng.normal(0.0, 0.3, n)
    cc12m = cc.astype(object)
    for token, share in (("0", 0.05), ("-9", 0.05), ("NA", 0.05)):
        cc12m[rng.random(n) < share] = token
    p01 = rng.integers(0, 2, n)
    cat = rng.choice(np.array(["A", "B", "C"]), n)
    new_header = "\t".join(["#FID", "IID", "QT2", "CC12M", "P01", "AGE", "B01", "C012", "CAT"])
    lines = {s: [new_header] for s in SITES}
    pooled = [new_header]
    for i, r in enumerate(table):
        line = "\t".join(
            [
                r[0],
                r[1],
                "NA" if np.isnan(qt2[i]) else f"{qt2[i]:.5f}",
                str(cc12m[i]),
                str(p01[i]),
                age[i],
                str(b01[i]),
                str(c012[i]),
                str(cat[i]),
            ]
        )
        pooled.append(line)
        lines[r[0].split("_")[0]].append(line)
    for site, text in (*lines.items(), ("pooled", pooled)):
        (out_dir / site).mkdir(parents=True, exist_ok=True)
        (out_dir / site / "samples.tsv").write_text("\n".join(text) + "\n")


def _dosage_vcfs(out_dir: Path) -> None:
    """Two small VCFs with soft dosages: GT+DS, and DS alone."""
    rng = np.random.default_rng(SEED + 1)
    ds = rng.uniform(0.0, 2.0, (DOSAGE_VARIANTS, DOSAGE_SAMPLES)).round(3)
    names = "\t".join(f"d{i:02d}" for i in range(DOSAGE_SAMPLES))
    for name, with_gt in (("gtds.vcf", True), ("dsonly.vcf", False)):
        lines = ["##fileformat=VCFv4.2", "##contig=<ID=1,length=1000000>"]
        if with_gt:
            lines.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
        lines.append('##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">')
        lines.append(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{names}")
        for v in range(DOSAGE_VARIANTS):
            if with_gt:
                cells = [f"{('0/0', '0/1', '1/1')[int(round(x))]}:{x:g}" for x in ds[v]]
            else:
                cells = [f"{x:g}" for x in ds[v]]
            fmt = "GT:DS" if with_gt else "DS"
            lines.append(f"1\t{1000 + 17 * v}\trs{v + 1}\tA\tG\t.\t.\t.\t{fmt}\t" + "\t".join(cells))
        (out_dir / "dosage" / name).write_text("\n".join(lines) + "\n")


def _run(cmd: list[str], *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if ok and done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def build(out_dir: Path, plink2: str) -> None:
    for sub in (*SITES, "pooled", "expected", "dosage"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / "expected").mkdir(parents=True)
    (out_dir / "dosage").mkdir()
    _tables(out_dir)
    _dosage_vcfs(out_dir)
    samples = str(out_dir / "pooled" / "samples.tsv")
    genotypes = str(GWAS / "pooled" / "genotypes")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run(
            [plink2, "--pfile", genotypes, "--pheno", samples, "--pheno-name", PHENOS, "--covar", samples,
             "--covar-name", COVARS, "--glm", "--threads", "1", "--out", str(t / "coding")]
        )  # fmt: skip
        # the same on the phenotypes' common cohort, as the daemons run it (--require-pheno: the sites'
        # release ledgers need one cohort for every round)
        _run(
            [plink2, "--pfile", genotypes, "--pheno", samples, "--pheno-name", PHENOS, "--require-pheno", "--covar",
             samples, "--covar-name", COVARS, "--glm", "--threads", "1", "--out", str(t / "required")]
        )  # fmt: skip
        for f in sorted([*t.glob("coding.*.glm.*"), *t.glob("required.*.glm.*")]):
            shutil.copyfile(f, out_dir / "expected" / f.name)
        # a 0/1 phenotype: plink2 reads it as case/control with 0 missing, all controls, and stops
        done = _run(
            [plink2, "--pfile", genotypes, "--pheno", samples, "--pheno-name", "P01", "--covar", samples,
             "--covar-name", "AGE", "--glm", "--threads", "1", "--out", str(t / "p01")],
            ok=False,
        )  # fmt: skip
        errors = [line for line in (t / "p01.log").read_text().splitlines() if line.startswith("Error")]
        if done.returncode == 0 or not errors:
            raise RuntimeError("plink2 --glm on the 0/1 phenotype P01 was expected to fail")
        (out_dir / "expected" / "p01.error.txt").write_text("\n".join(errors) + "\n")
        # a dosage .pgen as plink2 writes it from imputed data
        _run([plink2, "--vcf", str(out_dir / "dosage" / "gtds.vcf"), "dosage=DS", "--make-pgen",
              "--threads", "1", "--out", str(t / "dosage")])  # fmt: skip
        for ext in ("pgen", "pvar", "psam"):
            shutil.copyfile(t / f"dosage.{ext}", out_dir / "dosage" / f"dosage.{ext}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
