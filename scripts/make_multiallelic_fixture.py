#!/usr/bin/env python3
"""Build ``tests/data/multiallelic/``: multiallelic sites held three ways, and plink2 on the pooled data.

The participants and their sample tables are the GWAS fixture's (``tests/data/gwas``: QT, CC, AGE,
SEX, ...); the genotypes are new, drawn allele by allele at 36 sites on chromosome 1: biallelic
SNVs, triallelic and quadallelic SNV sites, triallelic sites with a non-SNV ALT (an insertion, a
``*``), a site whose every split record is an indel, a biallelic indel, and an ALT nobody carries.
The sites hold the same kind of data in different forms:

* AFR: a ``.pgen`` with multiallelic rows (``plink2 --vcf F --make-pgen`` keeps them);
* EAS: a VCF holding each multiallelic site as one record (``A`` > ``C,T``);
* EUR: a ``.pgen`` holding each multiallelic site as separate biallelic records (as ``bcftools
  norm -m-`` writes them: the other ALTs as REF, the ID kept), with REF and ALT exchanged on a few.

``pooled/`` is every participant's data in the AFR form. The reference outputs are plink2 2.00a3.5
on it after splitting it as fedstat does, ``--make-pgen multiallelics=- varid-dup``, then keeping
SNVs (``--snps-only just-acgt``): ``--freq --geno-counts --hardy --missing`` and ``--glm`` on QT
and CC with AGE and SEX, on the phenotypes' and covariates' common cohort (``required.*``), and the
four reports on every participant (``all.*``)::

    python scripts/make_multiallelic_fixture.py           # rebuild tests/data/multiallelic (commit it)
    python scripts/make_multiallelic_fixture.py --check   # rebuild in a temp dir, fail on any difference
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
DEFAULT_OUT = REPO / "tests" / "data" / "multiallelic"
SITES = ("AFR", "EAS", "EUR")
SEED = 20261205
COVARS = "AGE,SEX"
#: (REF, ALTs) of each kind of site, cycled over the positions
KINDS = (
    ("A", ("G",)),
    ("A", ("C", "T")),
    ("C", ("T",)),
    ("G", ("A", "C", "T")),
    ("C", ("T", "CA")),  # an insertion beside an SNV
    ("G", ("C",)),
    ("T", ("C", "*")),  # a spanning deletion beside an SNV
    ("T", ("G", "A")),
    ("AT", ("A", "GT")),  # every split record an indel
    ("G", ("GA",)),  # a biallelic indel
    ("C", ("A", "G")),
    ("T", ("A",)),
)
N_SITES = 36
#: positions whose last ALT nobody carries (its split record is monomorphic)
ABSENT_ALT = (13,)
#: EUR exchanges REF and ALT on these split or biallelic records (by position index, ALT index)
EUR_SWAPPED = ((0, 1), (1, 2), (3, 1), (10, 1), (14, 1))


def _alleles(n_samples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per site, (n_samples, 2) allele indices (0 = REF), -1 where the call is missing."""
    out = []
    for v in range(N_SITES):
        n_alleles = 1 + len(KINDS[v % len(KINDS)][1])
        p = rng.dirichlet(np.full(n_alleles, 1.5))
        if v in ABSENT_ALT:
            p[-1] = 0.0
            p /= p.sum()
        a = rng.choice(n_alleles, size=(n_samples, 2), p=p)
        a[rng.random(n_samples) < 0.04] = -1
        out.append(a)
    return out


def _call(pair: np.ndarray) -> str:
    return "./." if pair[0] < 0 else f"{pair[0]}/{pair[1]}"


def _header(ids: list[str]) -> list[str]:
    return [
        "##fileformat=VCFv4.2",
        "##contig=<ID=1,length=10000000>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]),
    ]


def _record(v: int, ref: str, alts: tuple[str, ...], calls: list[str]) -> str:
    return "\t".join(["1", str(10000 + 100 * v), f"rs{v + 1}", ref, ",".join(alts), ".", ".", ".", "GT", *calls])


def _vcf_joined(path: Path, ids: list[str], alleles: list[np.ndarray]) -> None:
    """One record per site, multiallelic sites as one record."""
    lines = _header(ids)
    for v, a in enumerate(alleles):
        ref, alts = KINDS[v % len(KINDS)]
        lines.append(_record(v, ref, alts, [_call(pair) for pair in a]))
    path.write_text("\n".join(lines) + "\n")


def _vcf_split(path: Path, ids: list[str], alleles: list[np.ndarray]) -> None:
    """One biallelic record per ALT, as bcftools norm -m- writes them; REF and ALT exchanged on
    EUR_SWAPPED."""
    lines = _header(ids)
    for v, a in enumerate(alleles):
        ref, alts = KINDS[v % len(KINDS)]
        for k, alt in enumerate(alts, start=1):
            b = np.where(a < 0, -1, (a == k).astype(int))  # the other ALTs as REF
            swap = (v, k) in EUR_SWAPPED
            if swap:
                b = np.where(b < 0, -1, 1 - b)
            lines.append(_record(v, *((alt, (ref,)) if swap else (ref, (alt,))), [_call(pair) for pair in b]))
    path.write_text("\n".join(lines) + "\n")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _pgen(plink2: str, vcf: Path, out_dir: Path, tmp: Path) -> None:
    _run([plink2, "--vcf", str(vcf), "--double-id", "--make-pgen", "--threads", "1", "--out", str(tmp / vcf.stem)])
    for ext in ("pgen", "pvar", "psam"):
        shutil.copyfile(tmp / f"{vcf.stem}.{ext}", out_dir / f"genotypes.{ext}")


def build(out_dir: Path, plink2: str) -> None:
    for sub in (*SITES, "pooled", "expected"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    pooled_ids = [line.split("\t")[1] for line in (GWAS / "pooled" / "samples.tsv").read_text().splitlines()[1:]]
    alleles = _alleles(len(pooled_ids), rng)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for site in (*SITES, "pooled"):
            (out_dir / site).mkdir()
            shutil.copyfile(GWAS / site / "samples.tsv", out_dir / site / "samples.tsv")
            ids = [line.split("\t")[1] for line in (GWAS / site / "samples.tsv").read_text().splitlines()[1:]]
            cols = [pooled_ids.index(i) for i in ids]
            mine = [a[cols] for a in alleles]
            if site == "EAS":
                _vcf_joined(out_dir / site / "genotypes.vcf", ids, mine)
            elif site == "EUR":
                _vcf_split(t / f"{site}.vcf", ids, mine)
                _pgen(plink2, t / f"{site}.vcf", out_dir / site, t)
            else:
                _vcf_joined(t / f"{site}.vcf", ids, mine)
                _pgen(plink2, t / f"{site}.vcf", out_dir / site, t)
        expected = out_dir / "expected"
        expected.mkdir()
        pooled = out_dir / "pooled"
        samples = str(pooled / "samples.tsv")
        _run([plink2, "--pfile", str(pooled / "genotypes"), "--make-pgen", "multiallelics=-", "varid-dup",
              "--threads", "1", "--out", str(t / "split")])  # fmt: skip
        common = [plink2, "--pfile", str(t / "split"), "--snps-only", "just-acgt", "--pheno", samples,
                  "--pheno-name", "QT,CC", "--require-pheno", "--covar", samples, "--covar-name", COVARS,
                  "--require-covar", "--threads", "1", "--out", str(t / "required")]  # fmt: skip
        _run([*common, "--freq", "--geno-counts", "--hardy", "--missing", "variant-only"])
        _run([*common, "--glm", "hide-covar"])
        # every participant, no cohort filter: the in-process test's reference
        _run([plink2, "--pfile", str(t / "split"), "--snps-only", "just-acgt", "--freq", "--geno-counts", "--hardy",
              "--missing", "variant-only", "--threads", "1", "--out", str(t / "all")])  # fmt: skip
        for f in sorted([*t.glob("required.*"), *t.glob("all.*")]):
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
