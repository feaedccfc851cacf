#!/usr/bin/env python3
"""Build ``tests/data/pca_dosage/``: ``--pca`` on imputed dosages at a mixed consortium, and plink2.

Three sites of distinct ancestry (Balding–Nichols F = 0.1 from one ancestral population): AFR and
EUR hold imputed dosages (``plink2 --vcf … dosage=DS --make-pgen``), EAS hard calls only (a PLINK1
``.bed``). The dosages are as imputation returns them: soft ALT dosages at three decimals, some
exactly integral (stored by plink2 as hard calls only), many far from an integer (plink2's hard call
is then missing while the dosage is present, so a hard-call PCA would see them as missing); EUR
lists a tenth of the variants with REF and ALT exchanged (its dosages ``2 - d``). No dosage is
missing (imputed data has none), so plink2's pairwise missingness correction of the relationship
matrix does not apply and the federated PCA equals plink2's exactly (docs/pca.md). Special variants:
all 0 (monomorphic), all 0.5 at the dosage sites (every hard call there missing), all 1 at AFR.

The reference outputs are plink2 2.00a3.5 on the pooled VCF imported the same way (the EAS samples
with integral dosages, which plink2 stores as hard calls): ``--pca 5 allele-wts`` and ``--freq``;
and ``--pca 5 allele-wts`` on the pooled hard calls (``--make-pgen erase-dosage``), which differ.
The pooled genotypes are not kept (the tests read the sites' files)::

    python scripts/make_pca_dosage_fixture.py           # rebuild tests/data/pca_dosage (commit the result)
    python scripts/make_pca_dosage_fixture.py --check   # rebuild in a temp dir, fail on any difference
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
DEFAULT_OUT = REPO / "tests" / "data" / "pca_dosage"
SITES = {"AFR": 90, "EAS": 80, "EUR": 100}
DOSAGE_SITES = ("AFR", "EUR")
SEED = 20261205
N_VARIANTS = 200
FST = 0.1
N_PCS = 5
QT_SHIFT = {"AFR": 0.6, "EAS": 0.0, "EUR": -0.4}


def _genotypes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per site (variants, samples) ALT counts 0/1/2 from Balding–Nichols site frequencies."""
    p = rng.uniform(0.05, 0.5, N_VARIANTS)
    a, b = p * (1 - FST) / FST, (1 - p) * (1 - FST) / FST
    out = {}
    for site, n in SITES.items():
        q = np.clip(rng.beta(a, b), 0.01, 0.99)
        out[site] = rng.binomial(2, q[:, None], (N_VARIANTS, n)).astype(np.float64)
    return out


def _dosages(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Imputed ALT dosages in [0, 2] at three decimals around the true counts ``g``; none missing."""
    d = np.round(np.clip(g + rng.normal(0.0, 0.3, g.shape), 0.0, 2.0), 3)
    certain = rng.random(g.shape) < 0.3  # imputed with certainty: an integral dosage
    d[certain] = g[certain]
    return d


def _vcf(path: Path, ids: list[str], d: np.ndarray, swapped: np.ndarray, *, ds: bool) -> None:
    fmt = "GT:DS" if ds else "GT"
    lines = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=1,length=10000000>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        *(['##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">'] if ds else []),
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]),
    ]
    for v in range(d.shape[0]):
        ref, alt = ("G", "A") if swapped[v] else ("A", "G")
        row = 2.0 - d[v] if swapped[v] else d[v]
        cells = []
        for x in row.tolist():
            gt = ("0/0", "0/1", "1/1")[int(np.floor(x + 0.5))]
            cells.append(f"{gt}:{x:.3f}" if ds else gt)
        lines.append("\t".join(["1", str(10000 + 97 * v), f"rs{v + 1}", ref, alt, ".", ".", ".", fmt, *cells]))
    path.write_text("\n".join(lines) + "\n")


def _samples(site: str, ids: list[str], rng: np.random.Generator) -> str:
    """samples.tsv: QT (shifted by ancestry), AGE, SEX."""
    rows = ["#FID\tIID\tQT\tAGE\tSEX"]
    for iid in ids:
        qt = rng.normal(QT_SHIFT[site], 1.0)
        rows.append(f"{iid}\t{iid}\t{qt:.6f}\t{int(rng.integers(20, 80))}\t{int(rng.integers(1, 3))}")
    return "\n".join(rows) + "\n"


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def build(out_dir: Path, plink2: str) -> None:
    for sub in (*SITES, "expected"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    g = _genotypes(rng)
    d = {s: _dosages(g[s], rng) if s in DOSAGE_SITES else g[s] for s in SITES}
    for s in SITES:
        d[s][0] = 0.0  # monomorphic everywhere
    for s in DOSAGE_SITES:
        d[s][1] = 0.5  # soft everywhere at the dosage sites: every hard call there is missing
    d["AFR"][2] = 1.0  # a constant hard call at one site
    swapped = rng.random(N_VARIANTS) < 0.1
    ids = {s: [f"{s}_{i:05d}" for i in range(1, n + 1)] for s, n in SITES.items()}
    imp = ["--double-id", "--threads", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for site in SITES:
            (out_dir / site).mkdir()
            (out_dir / site / "samples.tsv").write_text(_samples(site, ids[site], rng))
            flip = swapped if site == "EUR" else np.zeros(N_VARIANTS, dtype=bool)
            dosage = site in DOSAGE_SITES
            _vcf(t / f"{site}.vcf", ids[site], d[site], flip, ds=dosage)
            if dosage:
                _run(
                    [plink2, "--vcf", str(t / f"{site}.vcf"), "dosage=DS", *imp, "--make-pgen", "--out", str(t / site)]
                )
                exts = ("pgen", "pvar", "psam")
            else:
                _run([plink2, "--vcf", str(t / f"{site}.vcf"), *imp, "--make-bed", "--out", str(t / site)])
                exts = ("bed", "bim", "fam")
            for ext in exts:
                shutil.copyfile(t / f"{site}.{ext}", out_dir / site / f"genotypes.{ext}")
        all_ids = [i for s in SITES for i in ids[s]]
        _vcf(t / "pooled.vcf", all_ids, np.hstack([d[s] for s in SITES]), np.zeros(N_VARIANTS, dtype=bool), ds=True)
        _run([plink2, "--vcf", str(t / "pooled.vcf"), "dosage=DS", *imp, "--make-pgen", "--out", str(t / "pooled")])
        base = [plink2, "--pfile", str(t / "pooled"), "--threads", "1"]
        _run([*base, "--pca", str(N_PCS), "allele-wts", "--freq", "--out", str(t / "dosage")])
        _run([*base, "--make-pgen", "erase-dosage", "--out", str(t / "hard")])
        _run([plink2, "--pfile", str(t / "hard"), "--threads", "1", "--pca", str(N_PCS), "allele-wts",
              "--out", str(t / "hardcalls")])  # fmt: skip
        expected = out_dir / "expected"
        expected.mkdir()
        for name in ("dosage.eigenval", "dosage.eigenvec", "dosage.eigenvec.allele", "dosage.afreq",
                     "hardcalls.eigenval"):  # fmt: skip
            shutil.copyfile(t / name, expected / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
