#!/usr/bin/env python3
"""Build the checked-in conformance fixture ``tests/data/consortium/``.

Simulates a small three-site consortium with a fixed seed (AFR as PLINK 1 bed, EUR as pgen
with REF/ALT swaps and missing calls, EAS as VCF), then runs plink2 on the pooled samples::

    plink2 --pfile pooled/genotypes --freq --geno-counts --hardy --missing \\
        --out expected/pooled

and keeps ``expected/pooled.{afreq,gcount,hardy,vmiss}`` (the ``.smiss`` per-sample report
and the ``.log``, which holds host names and times, are dropped). For variant QC it also runs::

    plink2 --pfile pooled/genotypes <QC flags> --write-snplist --out expected/qc-<name>

for each entry of ``QC_RUNS``, keeping the ``.snplist`` and, from the log, how many variants each
filter removed (``expected/qc-<name>.removed``: one ``filter<TAB>count`` line each).

For variant selection (plink2's load-time filters) it writes two variant ID lists,
``select/extract.txt`` and ``select/exclude.txt`` (every 5th and every 3rd pooled ID, with mixed
whitespace and IDs absent from the data, as analysts' files have them), and runs each entry of
``SELECT_RUNS`` the same way into ``expected/sel-<name>.snplist`` and ``.removed``.

Usage::

    python scripts/make_fixtures.py            # (re)write tests/data/consortium
    python scripts/make_fixtures.py --check    # regenerate in a temp dir, exit 1 on any diff

``--check`` compares every file byte for byte, except ``.gz`` files (compared after
decompression, since zlib builds may differ) and ``.pgen`` files (compared by decoded
genotypes when their bytes differ, since pgenlib versions may encode differently).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "consortium"

# The fixture's parameters: change them and re-run this script, then commit the result.
PARAMS = {
    "seed": 20240917,
    "n_variants": 1500,
    "sites": {"AFR": 160, "EAS": 140, "EUR": 180},
    "formats": {"AFR": "bed", "EAS": "vcf", "EUR": "pgen"},
    "swap_fraction": {"EUR": 0.10},
    "missing_rate": {"EUR": 0.02},
    "fst": 0.05,
    "monomorphic_fraction": 0.004,
    "rare_fraction": 0.05,
    "hwe_outlier_fraction": 0.004,
    "all_missing_fraction": 0.001,
}
PLINK2_FLAGS = ("--freq", "--geno-counts", "--hardy", "--missing")
KEEP_EXTENSIONS = ("afreq", "gcount", "hardy", "vmiss")
#: Variant QC runs: name -> plink2 flags (thresholds chosen so that each filter removes variants).
QC_RUNS = {
    "maf": ("--maf", "0.05"),
    "geno": ("--geno", "0.01"),
    "hwe": ("--hwe", "1e-3"),
    "all": ("--maf", "0.2", "--geno", "0.005", "--hwe", "0.01"),
    "mind": ("--mind", "0.021", "--geno", "0.01"),  # --mind runs first: --geno counts the samples left
}
#: Variant selection runs: name -> plink2 flags; ``{select}`` is the fixture's select/ directory. The
#: last two check that the selection comes before --mind and the variant QC filters.
SELECT_RUNS = {
    "chr": ("--chr", "1-4,22"),
    "not-chr": ("--not-chr", "2-21"),
    "bp": ("--chr", "chr3", "--from-bp", "214494", "--to-bp", "430984"),
    "extract": ("--extract", "{select}/extract.txt"),
    "exclude": ("--exclude", "{select}/exclude.txt"),
    "extract-maf": ("--extract", "{select}/extract.txt", "--exclude", "{select}/exclude.txt", "--maf", "0.05"),
    "chr-mind": ("--chr", "1-11", "--mind", "0.021", "--geno", "0.01"),
}
_REMOVED = (  # plink2 2.00a3.5 log lines -> filter name
    (re.compile(r"^(\d+) samples? removed due to missing genotype data \(--mind\)"), "mind"),
    (re.compile(r"--geno: (\d+) variants? removed"), "geno"),
    (re.compile(r"--hwe: (\d+) variants? removed"), "hwe"),
    (re.compile(r"^(\d+) variants? removed due to allele frequency threshold"), "maf"),
)


def build(out_dir: Path, plink2: str) -> None:
    """Simulate into ``out_dir`` and run plink2 on the pooled data."""
    from fedstat.simulate import simulate_consortium

    for sub in (*PARAMS["sites"], "pooled", "expected", "select"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    simulate_consortium(
        out_dir,
        sites=PARAMS["sites"],
        n_variants=PARAMS["n_variants"],
        seed=PARAMS["seed"],
        formats=PARAMS["formats"],
        swap_fraction=PARAMS["swap_fraction"],
        missing_rate=PARAMS["missing_rate"],
        fst=PARAMS["fst"],
        monomorphic_fraction=PARAMS["monomorphic_fraction"],
        rare_fraction=PARAMS["rare_fraction"],
        hwe_outlier_fraction=PARAMS["hwe_outlier_fraction"],
        all_missing_fraction=PARAMS["all_missing_fraction"],
    )
    (out_dir / "consortium.json").write_text(json.dumps(PARAMS, indent=2, sort_keys=True) + "\n")
    expected = out_dir / "expected"
    expected.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            plink2,
            "--pfile",
            str(out_dir / "pooled" / "genotypes"),
            *PLINK2_FLAGS,
            "--threads",
            "1",
            "--out",
            str(Path(tmp) / "pooled"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"plink2 failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        for ext in KEEP_EXTENSIONS:
            shutil.copyfile(Path(tmp) / f"pooled.{ext}", expected / f"pooled.{ext}")
        select = _write_id_lists(out_dir)
        runs = {f"qc-{n}": f for n, f in QC_RUNS.items()}
        runs.update({f"sel-{n}": tuple(a.format(select=select) for a in f) for n, f in SELECT_RUNS.items()})
        for name, flags in runs.items():
            prefix = Path(tmp) / name
            cmd = [plink2, "--pfile", str(out_dir / "pooled" / "genotypes"), *flags, "--write-snplist"]
            done = subprocess.run(
                [*cmd, "--threads", "1", "--out", str(prefix)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"plink2 {' '.join(flags)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                )
            shutil.copyfile(prefix.with_suffix(".snplist"), expected / f"{name}.snplist")
            removed = []
            for line in prefix.with_suffix(".log").read_text().splitlines():
                for pattern, filt in _REMOVED:
                    m = pattern.search(line)
                    if m:
                        removed.append(f"{filt}\t{m.group(1)}\n")
            (expected / f"{name}.removed").write_text("".join(removed))


def _write_id_lists(out_dir: Path) -> Path:
    """``select/extract.txt`` (every 5th pooled ID) and ``select/exclude.txt`` (every 3rd), each with
    mixed whitespace (spaces, tabs, blank and CRLF lines) and two IDs absent from the data."""
    ids = [line.split("\t")[2] for line in (out_dir / "pooled" / "genotypes.pvar").read_text().splitlines()[1:]]
    select = out_dir / "select"
    select.mkdir()
    for name, step in (("extract", 5), ("exclude", 3)):
        chosen = [*ids[::step], "rs_absent_1", "rs_absent_2"]
        seps = ("\n", " ", "\t", "\r\n", "  \n\n")
        text = "".join(f"{i}{seps[k % len(seps)]}" for k, i in enumerate(chosen))
        (select / f"{name}.txt").write_bytes(text.encode())
    return select


def _pgen_genotypes(path: Path):
    import numpy as np
    import pgenlib

    reader = pgenlib.PgenReader(str(path).encode())
    try:
        n_var, n_samples = reader.get_variant_ct(), reader.get_raw_sample_ct()
        buf = np.empty((n_var, n_samples), dtype=np.int8)
        if n_var:
            reader.read_range(0, n_var, buf)
        return buf
    finally:
        reader.close()


def _same(a: Path, b: Path) -> bool:
    if a.read_bytes() == b.read_bytes():
        return True
    if a.suffix == ".gz":
        return gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    if a.suffix == ".pgen":
        import numpy as np

        return bool(np.array_equal(_pgen_genotypes(a), _pgen_genotypes(b)))
    return False


def compare(checked_in: Path, fresh: Path) -> list[str]:
    """Relative paths that differ, are missing from ``checked_in`` or are extra there."""

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    old, new = files(checked_in), files(fresh)
    problems = [f"missing: {rel}" for rel in sorted(new - old)]
    problems += [f"extra: {rel}" for rel in sorted(old - new)]
    problems += [f"differs: {rel}" for rel in sorted(old & new) if not _same(checked_in / rel, fresh / rel)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="regenerate into a temporary directory and fail on any difference"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"fixture directory (default {DEFAULT_OUT.relative_to(REPO)})"
    )
    parser.add_argument("--plink2", default="plink2", help="plink2 executable (2.00a3.5)")
    args = parser.parse_args(argv)

    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


def build_or_check(out: Path, build_fn, *, check: bool, script: str) -> int:  # type: ignore[no-untyped-def]
    """Build a fixture into ``out``, or (``check``) rebuild it in a temp dir and report differences."""
    if not check:
        build_fn(out)
        total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"wrote {out} ({total / 1e6:.2f} MB)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / out.name
        build_fn(fresh)
        problems = compare(out, fresh)
    if problems:
        print(f"fixture {out} is out of date; re-run scripts/{script}:")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"fixture {out} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
