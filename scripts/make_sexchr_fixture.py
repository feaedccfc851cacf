#!/usr/bin/env python3
"""Build ``tests/data/sexchr/``: chrX, chrY and MT at three sites, and plink2 on the pooled data.

120 participants (40 per site): 15 males, 15 females and 10 of unknown sex at every site. The variants: chr1 (diploid, for comparison), chrX outside the pseudo-autosomal
regions, chrX positions inside PAR1/PAR2 still coded ``X`` (plink2 counts them as chrX without
``--split-par``), ``PAR1`` and ``XY`` (diploid), chrY and MT. Male hets on chrX and chrY, female and
unknown-sex calls on chrY, hets on MT and missing calls everywhere. Each site keeps its sexes where
its format does:

- AFR: ``.bed/.bim/.fam`` (sex in .fam column 5; chromosomes coded 23/24/25/26 in the .bim);
- EAS: ``genotypes.vcf.gz`` (no sex in a VCF: ``samples.tsv`` has a ``SEX`` column; chromosomes
  ``chrX``/``chrY``/``chrM``); EAS lists a fifth of the variants with REF and ALT exchanged;
- EUR: ``.pgen/.pvar/.psam`` (the .psam ``SEX`` column).

The reference outputs are plink2 2.00a3.5 on the pooled ``.pgen`` (the same sexes in its .psam):
``--freq --geno-counts --hardy --missing variant-only``, which writes ``.afreq``, ``.gcount``,
``.hardy`` (chr1, PAR1, XY), ``.hardy.x`` and ``.vmiss``; and the same with ``--split-par b37`` on
the pooled data less PAR1 (``splitpar.*``). ``dosage/`` holds the same participants with soft
dosages on chr1, X, Y and MT in ``.pgen`` dosage tracks, and plink2's ``--freq`` (from the
dosages) ``--geno-counts --missing`` on them.

For ``--glm`` every ``samples.tsv`` also holds a case/control phenotype ``CC`` and a covariate
``AGE`` (drawn from their own seed, so the genotypes and the reports above stay as they were; none
missing, so each site's regressions run over one cohort and its sexes), and ``expected/glm.*`` is
plink2's ``--glm`` (its defaults: ``xchr-model 2``, SEX added on chrX, chrY over the males, chrY/MT
haploid) on ``QT`` and ``CC`` with ``AGE`` (``--covar-variance-standardize``),
``dosage/expected/glm.*`` the same on the dosages. The first leaves out ``Y_2900042``, the one
variant without a missing call in its regression (among the males): plink2 2.00a3.5 reports
``CORR_TOO_HIGH`` for many variants with no missing call, on autosomes too, which fedstat does not
mimic::

    python scripts/make_sexchr_fixture.py           # rebuild tests/data/sexchr (commit the result)
    python scripts/make_sexchr_fixture.py --check   # rebuild in a temp dir, fail on any difference
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_or_check  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "sexchr"
SITES = ("AFR", "EAS", "EUR")
SEED = 20261205
GLM_SEED = 20261206  # CC and AGE: their own stream, so the rest of the fixture is unchanged
#: plink2 2.00a3.5 writes CORR_TOO_HIGH for this variant (no missing call among the males)
GLM_EXCLUDE = "Y_2900042"
PER_SITE = 40
#: (chromosome, first position, count, step); PAR1 of GRCh37 ends at 2699520
LAYOUT = (
    ("1", 100_000, 8, 1013),
    ("X", 60_001, 3, 500_000),  # inside PAR1 but coded X
    ("X", 3_000_000, 24, 4_001),
    ("X", 155_000_000, 2, 10_000),  # inside PAR2 but coded X
    ("Y", 2_800_000, 8, 50_021),
    ("XY", 60_002, 3, 1_000),
    ("MT", 100, 8, 1_500),
    ("PAR1", 70_000, 3, 2_000),
)
#: the sites' spelling of each chromosome (plink2 reads them all as the same code)
SPELLING = {
    "AFR": {"X": "23", "Y": "24", "XY": "25", "MT": "26"},
    "EAS": {"1": "chr1", "X": "chrX", "Y": "chrY", "XY": "chrXY", "MT": "chrM"},
    "EUR": {},
}


def _samples(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Sample IDs (site prefix) and sexes (1 male, 2 female, 0 unknown), site by site."""
    ids, sex = [], []
    for site in SITES:
        # 15 males, 15 females, 10 of unknown sex: each group as large as the sites' min_group (10),
        # so that the release ledger allows the sums by sex (tests/test_sexchr.py tests smaller ones)
        s = rng.permutation([1] * 15 + [2] * 15 + [0] * 10)
        ids += [f"{site}_{i + 1:03d}" for i in range(PER_SITE)]
        sex += s.tolist()
    return ids, np.asarray(sex)


def _variants() -> list[tuple[str, int]]:
    return [(c, start + k * step) for c, start, n, step in LAYOUT for k in range(n)]


def _genotypes(chroms: list[str], sex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(variants, samples) ALT counts 0/1/2, -1 missing, as arrays and sequencers return them:
    males mostly hemizygous on X/Y (a few hets, as genotyping errors give), everyone mostly
    homoplasmic on MT, females' chrY calls mostly missing but some called."""
    n = sex.size
    male = sex == 1
    g = np.empty((len(chroms), n), dtype=np.int64)
    for v, c in enumerate(chroms):
        p = rng.uniform(0.1, 0.7)
        diploid = rng.binomial(2, p, n)
        haploid = 2 * rng.binomial(1, p, n)
        if c in ("X", "Y"):
            row = np.where(male, haploid, diploid)
            row[male & (rng.random(n) < 0.06)] = 1  # male hets
        elif c == "MT":
            row = haploid.copy()
            row[rng.random(n) < 0.08] = 1
        else:
            row = diploid
        if c == "Y":
            row[~male & (rng.random(n) < 0.6)] = -1  # most female/unknown chrY calls missing, not all
        row[rng.random(n) < 0.04] = -1
        g[v] = row
    return g


def _vcf(path: Path, site: str, ids: list[str], g: np.ndarray, swapped: np.ndarray) -> None:
    spell = SPELLING[site]
    lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]))
    for v, (c, pos) in enumerate(_variants()):
        ref, alt = ("G", "A") if swapped[v] else ("A", "G")
        row = np.where(g[v] >= 0, 2 - g[v], -1) if swapped[v] else g[v]
        cells = [("./.", "0/0", "0/1", "1/1")[x + 1] for x in row.tolist()]
        lines.append("\t".join([spell.get(c, c), str(pos), f"{c}_{pos}", ref, alt, ".", ".", ".", "GT", *cells]))
    path.write_text("\n".join(lines) + "\n")


def _dosage_vcf(path: Path, ids: list[str], d: np.ndarray, layout: list[tuple[str, int]]) -> None:
    lines = [
        "##fileformat=VCFv4.2",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]),
    ]
    for v, (c, pos) in enumerate(layout):
        cells = ["./.:." if np.isnan(x) else f"{('0/0', '0/1', '1/1')[int(np.floor(x + 0.5))]}:{x:.3f}" for x in d[v]]
        lines.append("\t".join([c, str(pos), f"{c}_{pos}", "A", "G", ".", ".", ".", "GT:DS", *cells]))
    path.write_text("\n".join(lines) + "\n")


def _build_dosage(
    out_dir: Path, plink2: str, ids: list[str], sex: np.ndarray, rng: np.random.Generator, t: Path
) -> None:
    """``dosage/``: soft ALT dosages (plink2's import of DS) on chr1, X, Y and MT at the three sites,
    and plink2's ``--freq`` (from the dosages: a male's counts half) with ``--geno-counts --missing``,
    and ``--freq cols=+machr2``."""
    layout = [("1", 1000 + 10 * i) for i in range(4)] + [("X", 3_000_000 + 100 * i) for i in range(10)]
    layout += [("Y", 3_000_000 + 100 * i) for i in range(6)] + [("MT", 100 + 10 * i) for i in range(6)]
    g = rng.binomial(2, rng.uniform(0.1, 0.6, (len(layout), 1)), (len(layout), len(ids))).astype(np.float64)
    d = np.round(np.clip(g + rng.normal(0.0, 0.35, g.shape), 0.0, 2.0), 3)
    certain = rng.random(d.shape) < 0.3
    d[certain] = np.round(d[certain])
    d[rng.random(d.shape) < 0.05] = np.nan
    for site in (*SITES, "pooled"):
        sd = out_dir / site
        sd.mkdir(parents=True)
        cols = [k for k, i in enumerate(ids) if site == "pooled" or i.startswith(site)]
        _dosage_vcf(t / f"d{site}.vcf", [ids[k] for k in cols], d[:, cols], layout)
        (t / f"d{site}.sex").write_text("".join(f"{ids[k]}\t{ids[k]}\t{sex[k]}\n" for k in cols))
        _run([plink2, "--vcf", str(t / f"d{site}.vcf"), "dosage=DS", "--double-id", "--update-sex",
              str(t / f"d{site}.sex"), "--make-pgen", "--threads", "1", "--out", str(t / f"d{site}")])  # fmt: skip
        for ext in ("pgen", "pvar", "psam"):
            shutil.copyfile(t / f"d{site}.{ext}", sd / f"genotypes.{ext}")
        (sd / "samples.tsv").write_text("#FID\tIID\n" + "".join(f"{ids[k]}\t{ids[k]}\n" for k in cols))
    (out_dir / "expected").mkdir()
    glm_rng = np.random.default_rng(GLM_SEED + 1)
    qt = np.round(glm_rng.normal(0, 1, len(ids)), 3)
    cc, age = _glm_columns(glm_rng, len(ids))
    for site in (*SITES, "pooled"):
        cols = [k for k, i in enumerate(ids) if site == "pooled" or i.startswith(site)]
        rows = "".join(f"{ids[k]}\t{ids[k]}\t{qt[k]}\t{cc[k] or 'NA'}\t{age[k]}\n" for k in cols)
        (out_dir / site / "samples.tsv").write_text("#FID\tIID\tQT\tCC\tAGE\n" + rows)
    _glm(plink2, out_dir / "pooled" / "genotypes", out_dir / "pooled" / "samples.tsv", t / "dglm")
    _run([plink2, "--pfile", str(out_dir / "pooled" / "genotypes"), "--freq", "--geno-counts", "--missing",
          "variant-only", "--threads", "1", "--out", str(t / "dosage")])  # fmt: skip
    for ext in ("afreq", "gcount", "vmiss"):
        shutil.copyfile(t / f"dosage.{ext}", out_dir / "expected" / f"dosage.{ext}")
    # MaCH r²: NA on X and MT, the males' halved on Y
    _run([plink2, "--pfile", str(out_dir / "pooled" / "genotypes"), "--freq", "cols=+machr2", "--threads", "1",
          "--out", str(t / "machr2")])  # fmt: skip
    shutil.copyfile(t / "machr2.afreq", out_dir / "expected" / "machr2.afreq")
    for ext in ("QT.glm.linear", "CC.glm.logistic.hybrid"):
        shutil.copyfile(t / f"dglm.{ext}", out_dir / "expected" / f"glm.{ext}")


def _glm_columns(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A case/control phenotype (1/2) and an AGE covariate for ``n`` participants, none missing: every
    regression of a site then runs over one cohort (or its sexes), which its release ledger allows."""
    return rng.integers(1, 3, n).astype(np.int64), rng.integers(20, 80, n).astype(np.int64)


def _glm(plink2: str, pfile: Path, table: Path, out: Path, *extra: str) -> None:
    """plink2's default ``--glm`` on QT and CC with AGE (standardized, as plink2 advises for its
    single-precision logistic fit; covariate rows shown)."""
    _run([plink2, "--pfile", str(pfile), "--pheno", str(table), "--pheno-name", "QT,CC", "--covar", str(table),
          "--covar-name", "AGE", "--covar-variance-standardize", *extra, "--glm", "--threads", "1", "--out",
          str(out)])  # fmt: skip


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def build(out_dir: Path, plink2: str) -> None:
    for sub in (*SITES, "pooled", "expected", "dosage"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    ids, sex = _samples(rng)
    chroms = [c for c, _ in _variants()]
    g = _genotypes(chroms, sex, rng)
    swapped = rng.random(len(chroms)) < 0.2
    qt = np.round(rng.normal(0, 1, len(ids)), 3)
    cc, age = _glm_columns(np.random.default_rng(GLM_SEED), len(ids))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for site in (*SITES, "pooled"):
            d = out_dir / site
            d.mkdir()
            cols = [k for k, i in enumerate(ids) if site == "pooled" or i.startswith(site)]
            site_ids = [ids[k] for k in cols]
            table = ["#FID\tIID\tQT" + ("\tSEX" if site == "EAS" else "") + "\tCC\tAGE"]
            for k in cols:
                sex_field = "\t" + ("NA" if sex[k] == 0 else str(sex[k])) if site == "EAS" else ""
                table.append(f"{ids[k]}\t{ids[k]}\t{qt[k]}{sex_field}\t{cc[k] or 'NA'}\t{age[k]}")
            (d / "samples.tsv").write_text("\n".join(table) + "\n")
            (t / f"{site}.sex").write_text("".join(f"{ids[k]}\t{ids[k]}\t{sex[k]}\n" for k in cols))
            flip = swapped if site == "EAS" else np.zeros(len(chroms), dtype=bool)
            _vcf(t / f"{site}.vcf", site if site != "pooled" else "EUR", site_ids, g[:, cols], flip)
            if site == "EAS":
                with open(t / "EAS.vcf", "rb") as src, gzip.GzipFile(d / "genotypes.vcf.gz", "wb", mtime=0) as dst:
                    shutil.copyfileobj(src, dst)
                continue
            make = "--make-bed" if site == "AFR" else "--make-pgen"
            _run([plink2, "--vcf", str(t / f"{site}.vcf"), "--double-id", "--update-sex", str(t / f"{site}.sex"),
                  make, "--threads", "1", "--out", str(t / site)])  # fmt: skip
            for ext in ("bed", "bim", "fam") if site == "AFR" else ("pgen", "pvar", "psam"):
                shutil.copyfile(t / f"{site}.{ext}", d / f"genotypes.{ext}")
            if site == "AFR":  # plink2 writes X/Y/XY/MT; AFR's .bim keeps PLINK 1's numeric codes
                bim = [line.split("\t") for line in (d / "genotypes.bim").read_text().splitlines()]
                text = "".join("\t".join([SPELLING["AFR"].get(f[0], f[0]), *f[1:]]) + "\n" for f in bim)
                (d / "genotypes.bim").write_text(text)
        expected = out_dir / "expected"
        expected.mkdir()
        _run([plink2, "--pfile", str(out_dir / "pooled" / "genotypes"), "--freq", "--geno-counts", "--hardy",
              "--missing", "variant-only", "--threads", "1", "--out", str(t / "pooled")])  # fmt: skip
        # --split-par b37 on the pooled data less PAR1 (plink2 refuses a dataset that holds PAR1)
        _run([plink2, "--pfile", str(out_dir / "pooled" / "genotypes"), "--not-chr", "PAR1", "--make-pgen",
              "--threads", "1", "--out", str(t / "nopar")])  # fmt: skip
        _run([plink2, "--pfile", str(t / "nopar"), "--split-par", "b37", "--freq", "--geno-counts", "--hardy",
              "--missing", "variant-only", "--threads", "1", "--out", str(t / "splitpar")])  # fmt: skip
        for f in sorted([*t.glob("pooled.*"), *t.glob("splitpar.*")]):
            if f.suffix not in (".log", ".vcf", ".sex", ".pgen", ".pvar", ".psam"):
                shutil.copyfile(f, expected / f.name)
        pooled = out_dir / "pooled"
        _glm(plink2, pooled / "genotypes", pooled / "samples.tsv", t / "glm", "--exclude-snp", GLM_EXCLUDE)
        for ext in ("QT.glm.linear", "CC.glm.logistic.hybrid"):
            shutil.copyfile(t / f"glm.{ext}", expected / f"glm.{ext}")
        _build_dosage(out_dir / "dosage", plink2, ids, sex, rng, t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
