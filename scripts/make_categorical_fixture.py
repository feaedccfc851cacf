#!/usr/bin/env python3
"""Build ``tests/data/categorical/``: categorical covariates, and plink2's ``--glm`` with them.

The genotypes are the GWAS fixture's (``tests/data/gwas``: AFR .bed, EAS VCF, EUR .pgen, and the
pooled .pgen); the sample tables are its tables with three columns added:

- ``CENTRE``: a categorical covariate with categories ``East``, ``north``, ``south``, ``west9``
  and ``west10`` (plink2's natural order puts ``East`` first, letters compared as capitals, and
  ``west9`` before ``west10``), ``NONE`` (missing) for some participants; EAS holds only three of
  the categories, and ``west10`` is held at AFR only. Every category a site holds has at least 10
  members there, as a site's ``min_group`` requires.
- ``ARRAY``: a second categorical covariate, ``axiom``/``gsa``, so that two expand in order.
- ``CCW``: the case/control ``CC`` with every ``west10`` participant a control: the category
  separates the phenotype, and plink2's default firth-fallback then fits every variant by Firth.
- ``CCS``: the case/control ``CC`` with every participant of SEX 2 a control: a numeric covariate
  holding two values separates the phenotype, and again firth-fallback goes Firth everywhere.
- ``YOB``: a year of birth, whose scale is too far from SEX's for plink2's single-precision fit:
  plink2 stops (``expected/yob.error.txt``) unless ``--covar-variance-standardize`` rescales it
  (``vstd.*``: every quantitative covariate; ``vstdyob.*``: YOB only).

The covariates are named in the file's column order (``AGE,SEX,CENTRE,ARRAY``), which is the
order plink2 gives them in the design, whatever order ``--covar-name`` lists. Reference outputs
are plink2 2.00a3.5 on the pooled data, chromosomes 1-2, with ``--require-pheno QT CC CCW
--require-covar`` (one cohort for every release), covariate rows shown::

    python scripts/make_categorical_fixture.py           # rebuild tests/data/categorical (commit it)
    python scripts/make_categorical_fixture.py --check   # rebuild in a temp dir, fail on any difference
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_or_check  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GWAS = REPO / "tests" / "data" / "gwas"
DEFAULT_OUT = REPO / "tests" / "data" / "categorical"
SITES = ("AFR", "EAS", "EUR")
SEED = 20261205
COVARS = "AGE,SEX,CENTRE,ARRAY"
CHROMS = "1-2"  # 74 of the fixture's 800 variants keep the expected files small
#: the categories each site holds, with their weights
CENTRES = {
    "AFR": {"East": 0.2, "north": 0.2, "south": 0.2, "west9": 0.2, "west10": 0.2},
    "EAS": {"north": 0.4, "south": 0.3, "west9": 0.3},
    "EUR": {"East": 0.25, "north": 0.15, "south": 0.25, "west9": 0.15, "west10": 0.2},
}


def _columns(site: str, n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    levels = list(CENTRES[site])
    weights = np.array(list(CENTRES[site].values()))
    centre = [levels[k] for k in rng.choice(len(levels), size=n, p=weights / weights.sum())]
    for i in np.flatnonzero(rng.random(n) < 0.04):
        centre[i] = "NONE"
    array = ["axiom" if x < 0.45 else "gsa" for x in rng.random(n)]
    return centre, array


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


def build(out_dir: Path, plink2: str) -> None:
    rng = np.random.default_rng(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    pooled_lines: list[str] = []
    header = ""
    for site in SITES:
        lines = (GWAS / site / "samples.tsv").read_text().splitlines()
        head = lines[0].split("\t")
        cc = head.index("CC")
        centre, array = _columns(site, len(lines) - 1, rng)
        header = lines[0] + "\tCENTRE\tARRAY\tCCW\tYOB\tCCS"
        sex = head.index("SEX")
        yob = rng.integers(1940, 2001, size=len(lines) - 1)
        rows = []
        for line, c, a, y in zip(lines[1:], centre, array, yob.tolist(), strict=True):
            fields = line.split("\t")
            ccw = "1" if c == "west10" and fields[cc] in ("1", "2") else fields[cc]
            ccs = "1" if fields[sex] == "2" and fields[cc] in ("1", "2") else fields[cc]
            rows.append(f"{line}\t{c}\t{a}\t{ccw}\t{y}\t{ccs}")
        (out_dir / site).mkdir(exist_ok=True)
        (out_dir / site / "samples.tsv").write_text("\n".join([header, *rows]) + "\n")
        pooled_lines.extend(rows)
    (out_dir / "pooled").mkdir(exist_ok=True)
    samples = out_dir / "pooled" / "samples.tsv"
    samples.write_text("\n".join([header, *pooled_lines]) + "\n")
    expected = out_dir / "expected"
    expected.mkdir(exist_ok=True)
    genotypes = str(GWAS / "pooled" / "genotypes")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        common = ["--pfile", genotypes, "--pheno", str(samples), "--covar", str(samples),
                  "--covar-name", COVARS, "--require-covar", "--chr", CHROMS, "--threads", "1"]  # fmt: skip
        # every run on one cohort (the sites' release ledgers refuse cohorts a few people apart):
        # plink2 requires the phenotypes loaded, and analyses them all; the files kept are listed
        common += ["--pheno-name", "QT,CC,CCW", "--require-pheno", "QT", "CC", "CCW"]
        _run([plink2, *common, "--glm", "--out", str(t / "cat")])
        _run([plink2, *common[:-6], "--pheno-name", "QT,CC,CCW,CCS", "--require-pheno", "QT", "CC", "CCW", "CCS", "--glm",
              "--out", str(t / "sexsep")])  # fmt: skip
        _run([plink2, *common, "--glm", "firth", "--out", str(t / "firth")])
        yob = [x if x != COVARS else f"{COVARS},YOB" for x in common]
        done = subprocess.run([plink2, *yob, "--glm", "--out", str(t / "yob")],
                              capture_output=True, text=True, check=False)  # fmt: skip
        log = (t / "yob.log").read_text()
        error = log[log.index("Error:") :].split("\n\n")[0] if "Error:" in log else ""
        if done.returncode == 0 or "scales vary too widely" not in error:
            raise RuntimeError("plink2 --glm with YOB was expected to stop on the covariates' scales")
        (expected / "yob.error.txt").write_text(" ".join(error.split()) + "\n")  # unwrapped
        _run([plink2, *yob, "--glm", "--covar-variance-standardize", "--out", str(t / "vstd")])
        _run([plink2, *yob, "--glm", "--covar-variance-standardize", "YOB", "--out", str(t / "vstdyob")])
        keep = [
            "cat.QT.glm.linear", "cat.CC.glm.logistic.hybrid", "cat.CCW.glm.logistic.hybrid", "firth.CC.glm.firth",
            "vstd.QT.glm.linear", "vstd.CC.glm.logistic.hybrid", "vstdyob.QT.glm.linear",
            "sexsep.CCS.glm.logistic.hybrid",
        ]  # fmt: skip
        for name in keep:
            (expected / name).write_bytes((t / name).read_bytes())
        for stem in ("vstd", "vstdyob"):  # what plink2 says it transformed
            lines = (t / f"{stem}.log").read_text().splitlines()
            (expected / f"{stem}.log.txt").write_text("".join(f"{x}\n" for x in lines if "standardize:" in x))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
