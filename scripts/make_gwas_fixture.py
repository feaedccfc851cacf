#!/usr/bin/env python3
"""Build the GWAS conformance fixture ``tests/data/gwas/`` and its reference outputs.

A three-site consortium (AFR PLINK1 .bed, EAS VCF, EUR PLINK2 .pgen with REF/ALT swaps and
missing calls) with phenotypes QT (quantitative) and CC (case/control, 1/2) and covariates AGE,
SEX, BATCH (constant: plink2 excludes it with a warning), PC1, PC2. One rare variant separates
cases from controls (every ALT carrier is a case: Firth fallback); monomorphic variants are
included. The reference outputs are plink2 2.00a3.5 ``--glm`` (also with ``--ci 0.95 --adjust``,
and ``--adjust-file`` over those p-values) and PLINK 1.9 ``--assoc --model`` on the pooled data::

    python scripts/make_gwas_fixture.py           # rebuild tests/data/gwas (commit the result)
    python scripts/make_gwas_fixture.py --check   # rebuild in a temp dir, fail on any difference
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import _pgen_genotypes, build_or_check  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "gwas"

PARAMS = {
    "seed": 20261121,
    "n_variants": 800,
    "sites": {"AFR": 220, "EAS": 180, "EUR": 260},
    "formats": {"AFR": "bed", "EAS": "vcf", "EUR": "pgen"},
    "swap_fraction": {"EUR": 0.10},
    "missing_rate": {"EUR": 0.03, "AFR": 0.005},
    "fst": 0.05,
    "monomorphic_fraction": 0.005,
    "rare_fraction": 0.08,
    "n_causal": 12,
    "heritability": 0.4,
}
COVARS = "AGE,SEX,BATCH,PC1-PC2"

#: (output prefix, plink2 --glm modifiers); each run uses phenotypes QT and CC.
GLM_RUNS = (
    ("pooled", ("hide-covar",)),  # fedstat's default: firth-fallback, covariate rows hidden
    ("covar", ()),  # covariate rows shown
    ("firth", ("firth", "hide-covar")),  # Firth for every logistic test
    ("nofirth", ("no-firth", "hide-covar")),
)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _edit_tables(out_dir: Path, sites: list[str]) -> dict[str, object]:
    """Add BATCH, PC1, PC2 and plant a separating rare variant in CC; returns what was planted."""
    rng = np.random.default_rng(PARAMS["seed"] + 1)
    pooled = out_dir / "pooled"
    geno = _pgen_genotypes(pooled / "genotypes.pgen")  # (n_variants, n_samples), pooled sample order
    header, *rows = (pooled / "samples.tsv").read_text().splitlines()
    cols = header.split("\t")
    table = [r.split("\t") for r in rows]
    cc = cols.index("CC")
    alt_ct = np.where(geno < 0, 0, geno).sum(axis=1)
    carriers_ct = (geno > 0).sum(axis=1)
    candidates = np.flatnonzero((carriers_ct >= 3) & (carriers_ct <= 10) & (alt_ct <= 10))
    sep = int(candidates[0])
    for i in np.flatnonzero(geno[sep] > 0):
        table[i][cc] = "2"
    site_of = [r[0].split("_")[0] for r in table]
    shift = {s: k for k, s in enumerate(sites)}
    pcs = []
    for i in range(len(table)):
        pcs.append((rng.normal(1.5 * shift[site_of[i]], 1.0), rng.normal(-1.0 * shift[site_of[i]], 1.0)))
    new_header = "\t".join([*cols, "BATCH", "PC1", "PC2"])
    lines = {s: [new_header] for s in sites}
    pooled_lines = [new_header]
    for r, (p1, p2) in zip(table, pcs, strict=True):
        line = "\t".join([*r, "1", f"{p1:.6f}", f"{p2:.6f}"])
        pooled_lines.append(line)
        lines[r[0].split("_")[0]].append(line)
    (pooled / "samples.tsv").write_text("\n".join(pooled_lines) + "\n")
    for s in sites:
        (out_dir / s / "samples.tsv").write_text("\n".join(lines[s]) + "\n")
    return {"separating_variant_index": sep, "separating_carriers": int(carriers_ct[sep])}


def build(out_dir: Path, plink2: str, plink19: str) -> None:
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
        missing_rate=p["missing_rate"],
        fst=p["fst"],
        monomorphic_fraction=p["monomorphic_fraction"],
        rare_fraction=p["rare_fraction"],
        n_causal=p["n_causal"],
        heritability=p["heritability"],
    )
    planted = _edit_tables(out_dir, sorted(p["sites"]))
    (out_dir / "consortium.json").write_text(
        json.dumps({**p, "covariates": COVARS, "planted": planted}, indent=2, sort_keys=True) + "\n"
    )
    expected = out_dir / "expected"
    expected.mkdir()
    pooled = out_dir / "pooled"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)

        def glm(prefix: str, covar_flags: list[str], modifiers: tuple[str, ...]) -> None:
            pheno = str(pooled / "samples.tsv")
            _run(
                [
                    plink2,
                    "--pfile",
                    str(pooled / "genotypes"),
                    "--pheno",
                    pheno,
                    "--pheno-name",
                    "QT,CC",
                    *covar_flags,
                    "--glm",
                    *modifiers,
                    "--threads",
                    "1",
                    "--out",
                    str(t / prefix),
                ]
            )

        for prefix, modifiers in GLM_RUNS:
            glm(prefix, ["--covar", str(pooled / "samples.tsv"), "--covar-name", COVARS], modifiers)
        glm("nocovar", [], ("allow-no-covars",))
        # on the phenotypes' and covariates' common cohort, as the sites' release ledgers need it
        glm("required", ["--covar", str(pooled / "samples.tsv"), "--covar-name", COVARS, "--require-pheno",
                         "--require-covar"], ("hide-covar",))  # fmt: skip
        # --ci 0.95 and --adjust (fedstat computes both at the coordinator from the --glm results)
        glm("ci95", ["--covar", str(pooled / "samples.tsv"), "--covar-name", COVARS, "--ci", "0.95", "--adjust"],
            ("hide-covar",))  # fmt: skip
        # --adjust-file over plink2's own p-values: fedstat's --adjust fed the same values must
        # write the same bytes (tests/test_glm_ci_adjust.py)
        for pheno, ext in (("QT", "glm.linear"), ("CC", "glm.logistic.hybrid")):
            for name, mods in (("adjust", []), ("adjust_gc_log10", ["gc", "log10", "cols=+qq,+pos,+ref,+alt"])):
                _run([plink2, "--adjust-file", str(t / f"ci95.{pheno}.{ext}"), "test=ADD", *mods,
                      "--out", str(t / f"{name}.{pheno}")])  # fmt: skip
        # PLINK 1.9 --assoc / --model on the same data (it wants a .bed and a header without '#')
        _run([plink2, "--pfile", str(pooled / "genotypes"), "--make-bed", "--out", str(t / "bed")])
        text = (pooled / "samples.tsv").read_text()
        (t / "pheno.txt").write_text(text[1:] if text.startswith("#") else text)
        _run(
            [
                plink19,
                "--bfile",
                str(t / "bed"),
                "--pheno",
                str(t / "pheno.txt"),
                "--pheno-name",
                "CC",
                "--assoc",
                "--allow-no-sex",
                "--out",
                str(t / "pooled"),
            ]
        )
        _run(
            [
                plink19,
                "--bfile",
                str(t / "bed"),
                "--pheno",
                str(t / "pheno.txt"),
                "--pheno-name",
                "CC",
                "--model",
                "--allow-no-sex",
                "--out",
                str(t / "pooled"),
            ]
        )
        # fedstat --assoc --pheno-name CC --require-pheno: PLINK 1.9's --prune (samples missing the phenotype
        # left out first)
        for flag in ("--assoc", "--model"):
            _run([plink19, "--bfile", str(t / "bed"), "--pheno", str(t / "pheno.txt"), "--pheno-name", "CC", flag,
                  "--prune", "--allow-no-sex", "--out", str(t / "required")])  # fmt: skip
        keep = sorted(f for f in t.iterdir() if ".glm." in f.name or f.suffix in (".assoc", ".model", ".adjusted"))
        for f in keep:
            shutil.copyfile(f, expected / f.name)
        for log in sorted(t.glob("*.log")):
            if log.stem in ("pooled", "covar", "firth", "nofirth", "nocovar", "required"):
                warnings = [line for line in log.read_text().splitlines() if "arning" in line]
                if warnings:
                    (expected / f"{log.stem}.warnings.txt").write_text("\n".join(warnings) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    ap.add_argument("--plink1.9", dest="plink19", default="plink1.9")
    args = ap.parse_args(argv)
    return build_or_check(
        args.out, lambda out: build(out, args.plink2, args.plink19), check=args.check, script=Path(__file__).name
    )


if __name__ == "__main__":
    sys.exit(main())
