#!/usr/bin/env python3
"""Build ``tests/data/cols/``: plink2 2.00a3.5 ``--glm cols=`` and ``--freq cols=`` outputs.

No new genotypes: the inputs are the pooled files of three existing fixtures, each restricted to a
few dozen variants so the reference files stay small:

- ``tests/data/gwas`` (hard calls; QT and CC with AGE, SEX, BATCH, PC1, PC2), ``--chr 1`` (37
  variants, one of them separating cases from controls, one monomorphic): ``--glm`` with the column
  sets of :data:`GLM_RUNS`;
- ``tests/data/dosage`` (imputed dosages; QT and CC with AGE, SEX on the phenotypes' and
  covariates' common cohort), ``--chr 1 --to-bp 17663`` (its first 80 variants): ``--freq`` and
  ``--glm`` with :data:`DOSAGE_FREQ_COLS` and :data:`DOSAGE_GLM_COLS` (what the daemons' test runs);
- ``tests/data/consortium`` (hard calls with missing calls), ``--chr 1``: ``--freq`` with the
  column sets of :data:`FREQ_RUNS`.

::

    python scripts/make_cols_fixture.py           # rebuild tests/data/cols (commit the result)
    python scripts/make_cols_fixture.py --check   # rebuild in a temp dir, fail on any difference
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_or_check  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
DEFAULT_OUT = DATA / "cols"
GWAS_COVARS = "AGE,SEX,BATCH,PC1-PC2"
DOSAGE_COVARS = "AGE,SEX"
DOSAGE_RANGE = ("--chr", "1", "--to-bp", "17663")

#: (output prefix, --glm modifiers, extra flags) on the GWAS fixture's QT and CC, --chr 1
GLM_RUNS = (
    # case/control counts and frequencies (the linear file leaves the cc columns out, as plink2 does)
    ("ccfreq", ("hide-covar", "cols=+a1freq,+a1freqcc,+a1countcc,+totallelecc"), ()),
    # a named set: no FIRTH?, TEST or ERRCODE; logistic shows BETA and SE on the log-odds scale
    ("short", ("hide-covar", "cols=chrom,pos,ref,alt,a1freq,beta,se,p"), ()),
    # every column fedstat writes, with covariate rows and --ci (log-odds bounds under beta); the
    # first 12 variants (five rows each)
    (
        "every",
        (
            "cols=chrom,pos,ref,alt1,alt,ax,a1count,totallele,a1countcc,totallelecc,a1freq,a1freqcc,"
            "firth,test,nobs,beta,orbeta,se,ci,tz,p,err",
        ),
        ("--ci", "0.95", "--to-bp", "107109"),
    ),
    # edits of the default under no-firth (no FIRTH? column anyway) and --ci: odds-ratio bounds
    ("minus", ("no-firth", "hide-covar", "cols=-chrom,-ref,-nobs,-tz,+ax,+a1count,+totallele"), ("--ci", "0.9")),
)
#: --freq cols= on the consortium fixture, --chr 1: (output prefix, descriptor)
FREQ_RUNS = (
    ("freq_all", "chrom,pos,ref,alt1,alt,reffreq,alt1freq,freq,nobs"),
    ("freq_eq", "+pos,-altfreq,+eq"),
    ("freq_eqz", "-altfreq,+eqz"),
    ("freq_alteq", "-altfreq,+alteq,+reffreq"),
    ("freq_alteqz", "-altfreq,+alteqz"),
    ("freq_numeq", "-altfreq,+numeq"),
    ("freq_altnumeq", "-altfreq,+altnumeq,-chrom"),
    ("freq_nobs", "nobs"),
)
#: the daemons' test on the dosage fixture
DOSAGE_FREQ_COLS = "+pos,+reffreq,+alt1freq"
DOSAGE_GLM_COLS = "+ax,+a1count,+totallele,+a1countcc,+totallelecc,+a1freq,+a1freqcc"


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def build(out_dir: Path, plink2: str) -> None:
    shutil.rmtree(out_dir / "expected", ignore_errors=True)
    expected = out_dir / "expected"
    expected.mkdir(parents=True)
    gwas = DATA / "gwas" / "pooled"
    dosage = DATA / "dosage" / "pooled"
    consortium = DATA / "consortium" / "pooled"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        common = ["--threads", "1"]
        for prefix, modifiers, extra in GLM_RUNS:
            samples = str(gwas / "samples.tsv")
            _run([plink2, "--pfile", str(gwas / "genotypes"), "--chr", "1", "--pheno", samples, "--pheno-name",
                  "QT,CC", "--covar", samples, "--covar-name", GWAS_COVARS, *extra, "--glm", *modifiers, *common,
                  "--out", str(t / prefix)])  # fmt: skip
        for prefix, cols in FREQ_RUNS:
            _run([plink2, "--pfile", str(consortium / "genotypes"), "--chr", "1", "--freq", f"cols={cols}", *common,
                  "--out", str(t / prefix)])  # fmt: skip
        samples = str(dosage / "samples.tsv")
        cohort = ["--pheno", samples, "--pheno-name", "QT,CC", "--require-pheno", "--covar", samples,
                  "--covar-name", DOSAGE_COVARS, "--require-covar"]  # fmt: skip
        _run([plink2, "--pfile", str(dosage / "genotypes"), *DOSAGE_RANGE, *cohort, "--freq",
              f"cols={DOSAGE_FREQ_COLS}", "--glm", "hide-covar", f"cols={DOSAGE_GLM_COLS}", *common,
              "--out", str(t / "dosage")])  # fmt: skip
        for f in sorted(t.iterdir()):
            if ".glm." in f.name or f.suffix == ".afreq":
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
