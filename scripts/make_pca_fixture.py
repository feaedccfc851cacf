#!/usr/bin/env python3
"""Build the stratification fixture ``tests/data/pca/`` and its plink2 reference outputs.

Three sites with distinct ancestries (Balding–Nichols F = 0.1 from one ancestral population;
AFR PLINK1 .bed, EAS VCF, EUR PLINK2 .pgen with REF/ALT swaps) whose phenotypes are confounded
by ancestry: QT is shifted and CC's case share differs by site, so an uncorrected GWAS is
inflated and principal components correct it. Genotypes are complete, so plink2's missingness
correction of the relationship matrix does not apply (see docs/pca.md; tests/test_pca.py checks
the case with missing calls on tests/data/consortium). plink2 refuses covariates of such
different scales (AGE against PCs) unless ``--covar-variance-standardize``, which leaves every
ADD test unchanged; fedstat refuses them as plink2 does, and takes the same flag.

Reference outputs (plink2 2.00a3.5 on the pooled data)::

    expected/pipeline.eigenval, .eigenvec.allele, .eigenvec   --maf 0.01 --geno 0.05 --hwe 1e-6 --pca 10 allele-wts
    expected/pcs.QT.glm.linear, pcs.CC.glm.logistic.hybrid    the same filters, --glm hide-covar with AGE, SEX, PC1-PC10
                                                              from pipeline.eigenvec
    expected/nopcs.QT.glm.linear, nopcs.CC.glm.logistic.hybrid  the same without the PCs
    expected/hwe-controls.snplist                             --keep <CC controls> --hwe 1e-6 (alone)

    python scripts/make_pca_fixture.py           # rebuild tests/data/pca (commit the result)
    python scripts/make_pca_fixture.py --check   # rebuild in a temp dir, fail on any difference
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_or_check  # noqa: E402
from make_gwas_fixture import _run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "pca"

PARAMS = {
    "seed": 20261122,
    "n_variants": 2000,
    "sites": {"AFR": 200, "EAS": 170, "EUR": 230},
    "formats": {"AFR": "bed", "EAS": "vcf", "EUR": "pgen"},
    "swap_fraction": {"EUR": 0.10},
    "fst": 0.1,
    "monomorphic_fraction": 0.005,
    "rare_fraction": 0.05,
    "hwe_outlier_fraction": 0.003,
    "n_causal": 10,
    "heritability": 0.3,
}
#: Per-site phenotype confounding: QT shift (SD units) and the share of controls turned into cases.
CONFOUNDING = {"AFR": (0.6, 0.35), "EAS": (0.0, 0.0), "EUR": (-0.4, 0.0)}
QC_FLAGS = ["--maf", "0.01", "--geno", "0.05", "--hwe", "1e-6"]
N_PCS = 10


def _confound(out_dir: Path, sites: list[str]) -> None:
    """Shift QT and raise the case share by site, in every samples.tsv (pooled and per site)."""
    rng = np.random.default_rng(PARAMS["seed"] + 1)
    pooled = out_dir / "pooled" / "samples.tsv"
    header, *rows = pooled.read_text().splitlines()
    cols = header.split("\t")
    qt, cc = cols.index("QT"), cols.index("CC")
    lines = {s: [header] for s in sites}
    out = [header]
    for row in rows:
        r = row.split("\t")
        site = r[0].split("_")[0]
        shift, flip = CONFOUNDING[site]
        if r[qt] != "NA":
            r[qt] = f"{float(r[qt]) + shift:.6f}"
        if r[cc] == "1" and rng.random() < flip:
            r[cc] = "2"
        line = "\t".join(r)
        out.append(line)
        lines[site].append(line)
    pooled.write_text("\n".join(out) + "\n")
    for s in sites:
        (out_dir / s / "samples.tsv").write_text("\n".join(lines[s]) + "\n")


def build(out_dir: Path, plink2: str) -> None:
    from fedstat.simulate import simulate_consortium

    for sub in (*PARAMS["sites"], "pooled", "expected"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = PARAMS
    simulate_consortium(
        out_dir,
        sites=p["sites"],
        n_variants=p["n_variants"],
        seed=p["seed"],
        formats=p["formats"],
        swap_fraction=p["swap_fraction"],
        fst=p["fst"],
        monomorphic_fraction=p["monomorphic_fraction"],
        rare_fraction=p["rare_fraction"],
        hwe_outlier_fraction=p["hwe_outlier_fraction"],
        n_causal=p["n_causal"],
        heritability=p["heritability"],
    )
    _confound(out_dir, sorted(p["sites"]))
    (out_dir / "consortium.json").write_text(
        json.dumps({**p, "confounding": CONFOUNDING, "qc": QC_FLAGS, "pcs": N_PCS}, indent=2, sort_keys=True) + "\n"
    )
    expected = out_dir / "expected"
    expected.mkdir()
    pooled = out_dir / "pooled"
    base = [plink2, "--pfile", str(pooled / "genotypes"), *QC_FLAGS, "--threads", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run([*base, "--pca", str(N_PCS), "allele-wts", "--out", str(t / "pipeline")])
        # one covariate file: AGE, SEX from samples.tsv and the pooled PCs
        pcs = {}
        for line in (t / "pipeline.eigenvec").read_text().splitlines()[1:]:
            f = line.split("\t")
            pcs[f[1]] = f[2:]
        header, *rows = (pooled / "samples.tsv").read_text().splitlines()
        cols = header.split("\t")
        covar = ["#FID\tIID\tAGE\tSEX\t" + "\t".join(f"PC{i}" for i in range(1, N_PCS + 1))]
        for row in rows:
            r = dict(zip(cols, row.split("\t"), strict=True))
            covar.append("\t".join([r["#FID"], r["IID"], r["AGE"], r["SEX"], *pcs[r["IID"]]]))
        (t / "covar.tsv").write_text("\n".join(covar) + "\n")
        pheno = ["--pheno", str(pooled / "samples.tsv"), "--pheno-name", "QT,CC"]
        _run([*base, *pheno, "--covar", str(t / "covar.tsv"), "--covar-name", f"AGE,SEX,PC1-PC{N_PCS}",
              "--covar-variance-standardize", "--glm", "hide-covar", "--out", str(t / "pcs")])  # fmt: skip
        _run([*base, *pheno, "--covar", str(t / "covar.tsv"), "--covar-name", "AGE,SEX",
              "--covar-variance-standardize", "--glm", "hide-covar", "--out", str(t / "nopcs")])  # fmt: skip
        # the same pipeline on the phenotypes' common cohort (--require-pheno), as fedstat runs it when the
        # sites' release ledgers need one cohort for every round
        require = ["--pheno", str(pooled / "samples.tsv"), "--pheno-name", "QT,CC", "--require-pheno"]
        _run([*base, *require, "--pca", str(N_PCS), "allele-wts", "--out", str(t / "required")])
        kept = {}
        for line in (t / "required.eigenvec").read_text().splitlines()[1:]:
            f = line.split("\t")
            kept[f[1]] = f[2:]
        covar_req = [covar[0]]
        for row in rows:
            r = dict(zip(cols, row.split("\t"), strict=True))
            if r["IID"] in kept:
                covar_req.append("\t".join([r["#FID"], r["IID"], r["AGE"], r["SEX"], *kept[r["IID"]]]))
        (t / "covar-required.tsv").write_text("\n".join(covar_req) + "\n")
        _run([*base, *require, "--covar", str(t / "covar-required.tsv"), "--covar-name", f"AGE,SEX,PC1-PC{N_PCS}",
              "--covar-variance-standardize", "--glm", "hide-covar", "--out", str(t / "required-pcs")])  # fmt: skip
        # --hwe in the controls of CC only: plink2 on the controls alone keeps these variants
        controls = [r.split("\t")[:2] for r in rows if dict(zip(cols, r.split("\t"), strict=True))["CC"] == "1"]
        (t / "controls.txt").write_text("".join(f"{f}\t{i}\n" for f, i in controls))
        _run([*base[:3], "--keep", str(t / "controls.txt"), "--hwe", "1e-6", "--write-snplist", "--threads", "1",
              "--out", str(t / "hwe-controls")])  # fmt: skip
        for f in sorted(t.iterdir()):
            if (
                f.name.startswith(("pipeline.eigen", "required.eigenval"))
                or ".glm." in f.name
                or f.name == "hwe-controls.snplist"
            ):
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
