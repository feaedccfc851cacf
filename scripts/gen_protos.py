#!/usr/bin/env python3
"""Regenerate fedstat/wire/ from protos/ (the only way generated code is made).

    python scripts/gen_protos.py           # regenerate in place
    python scripts/gen_protos.py --check   # fail (exit 1) if fedstat/wire/ is stale

Needs the ``dev`` extra (grpcio-tools, mypy-protobuf) at the versions pyproject.toml pins.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
WIRE = ROOT / "fedstat" / "wire"
INIT = '"""Generated gRPC/protobuf code. Do not edit: run scripts/gen_protos.py."""\n'


def generate(dest: Path) -> None:
    from grpc_tools import protoc  # noqa: PLC0415 - dev dependency only

    # protoc finds the mypy plugins on PATH: put this interpreter's scripts directory first.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    out = dest / "_out"
    out.mkdir(parents=True)
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *files,
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    # Flatten fedstat/v1/*.py into fedstat/wire/ and make the imports package-relative.
    for f in sorted((out / "fedstat" / "v1").iterdir()):
        text = f.read_text()
        text = re.sub(r"^from fedstat\.v1 import (\w+)", r"from fedstat.wire import \1", text, flags=re.M)
        text = re.sub(r"^import fedstat\.v1\.(\w+)", r"import fedstat.wire.\1", text, flags=re.M)
        text = text.replace("fedstat.v1.common_pb2", "fedstat.wire.common_pb2")
        (dest / f.name).write_text(text)
    shutil.rmtree(out)
    (dest / "__init__.py").write_text(INIT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with fedstat/wire/ instead of writing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "wire"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            names = sorted({p.name for p in fresh.iterdir()} | {p.name for p in WIRE.glob("*.py*")})
            stale = [
                n
                for n in names
                if not (WIRE / n).exists()
                or not (fresh / n).exists()
                or not filecmp.cmp(WIRE / n, fresh / n, shallow=False)
            ]
            if stale:
                print("fedstat/wire/ is stale; run python scripts/gen_protos.py. Differs: " + ", ".join(stale))
                return 1
            print("fedstat/wire/ is up to date")
            return 0
        for old in WIRE.glob("*.py*"):
            old.unlink()
        for f in fresh.iterdir():
            shutil.copy2(f, WIRE / f.name)
    print(f"regenerated {WIRE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
