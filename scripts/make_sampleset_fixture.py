#!/usr/bin/env python3
"""Build ``tests/data/samplesets/``: each site's ``unrelated`` sample set, and plink2 ``--keep`` of their union.

The genotypes are the consortium fixture's (``tests/data/consortium``: AFR .bed, EAS VCF, EUR .pgen
with REF/ALT swaps and missing calls, and the pooled .pgen). Each site's set is a seeded random
three quarters of its participants, in shuffled order, written in one of the plink2 ``--keep``
layouts a site operator may use:

- ``AFR/unrelated.txt``: a ``#FID IID`` header, tab-separated;
- ``EAS/unrelated.txt``: no header, ``FID IID`` separated by spaces;
- ``EUR/unrelated.txt``: a comment line, then ``#FID IID NOTE`` with a third column (ignored).

The reference output is plink2 2.00a3.5 on the pooled data over the union of the three files
(plink2's ``--keep`` takes several files)::

    plink2 --pfile pooled/genotypes --keep AFR/unrelated.txt EAS/unrelated.txt EUR/unrelated.txt \\
        --freq --out expected/unrelated

    python scripts/make_sampleset_fixture.py           # rebuild tests/data/samplesets (commit it)
    python scripts/make_sampleset_fixture.py --check   # rebuild in a temp dir, fail on any difference
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
CONSORTIUM = REPO / "tests" / "data" / "consortium"
DEFAULT_OUT = REPO / "tests" / "data" / "samplesets"
SITES = ("AFR", "EAS", "EUR")
SEED = 20261211
FRACTION = 0.75


def _ids(site: str) -> list[tuple[str, str]]:
    lines = (CONSORTIUM / site / "samples.tsv").read_text().splitlines()
    assert lines[0].startswith("#FID\tIID"), "the consortium fixture's tables have FID and IID"
    return [(f[0], f[1]) for f in (line.split("\t") for line in lines[1:])]


def _write_set(path: Path, site: str, members: list[tuple[str, str]]) -> None:
    if site == "AFR":
        text = "#FID\tIID\n" + "".join(f"{f}\t{i}\n" for f, i in members)
    elif site == "EAS":
        text = "".join(f"{f} {i}\n" for f, i in members)
    else:
        text = "# unrelated: one of each pair with kinship > 0.0884 removed\n#FID IID NOTE\n"
        text += "".join(f"{f} {i} kept\n" for f, i in members)
    path.write_text(text)


def build(out_dir: Path, plink2: str) -> None:
    rng = np.random.default_rng(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for site in SITES:
        ids = _ids(site)
        chosen = rng.permutation(len(ids))[: int(FRACTION * len(ids))]
        (out_dir / site).mkdir(exist_ok=True)
        files.append(out_dir / site / "unrelated.txt")
        _write_set(files[-1], site, [ids[k] for k in chosen])
    (out_dir / "expected").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "unrelated"
        cmd = [plink2, "--pfile", str(CONSORTIUM / "pooled" / "genotypes"), "--keep", *map(str, files)]
        cmd += ["--freq", "--threads", "1", "--out", str(prefix)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        n_kept = sum(int(FRACTION * len(_ids(s))) for s in SITES)
        if f"--keep: {n_kept} samples remaining." not in done.stdout:
            raise RuntimeError(f"plink2 did not keep the {n_kept} samples of the three sets:\n{done.stdout}")
        (out_dir / "expected" / "unrelated.afreq").write_bytes(prefix.with_suffix(".afreq").read_bytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    args = ap.parse_args(argv)
    return build_or_check(args.out, lambda out: build(out, args.plink2), check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
