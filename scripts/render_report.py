#!/usr/bin/env python3
"""Render an HTML file (e.g. ``<out>.report.html``) to a PNG with headless Chromium.

Used by CI to check that the report renders, and by people who want a picture of it::

    python scripts/render_report.py results/job.report.html job.png [--width 1280 --height 2000]

Chromium runs headless with a throw-away profile, no sandbox (CI containers run as root),
no GPU, and with its background networking, component updates and sync switched off, so the
render touches nothing outside the file. Exit status 0 when a non-empty PNG was written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None = None) -> str:
    """Path of a Chromium binary: ``explicit``, ``$CHROMIUM``, or the first on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM"), *CANDIDATES):
        if name and (found := shutil.which(name)):
            return found
    raise FileNotFoundError(
        "no Chromium found (tried $CHROMIUM and " + ", ".join(CANDIDATES) + "); apt-get install chromium"
    )


def render(
    html_path: str | Path,
    png_path: str | Path,
    *,
    width: int = 1280,
    height: int = 2000,
    chromium: str | None = None,
    timeout: float = 90.0,
) -> Path:
    """Screenshot ``html_path`` into ``png_path``; returns ``png_path``.

    Raises
    ------
    FileNotFoundError
        If the HTML file or Chromium is missing.
    RuntimeError
        If Chromium fails or writes no image.
    """
    html_file = Path(html_path).resolve()
    if not html_file.is_file():
        raise FileNotFoundError(f"no such HTML file: {html_file}")
    out = Path(png_path).resolve()
    out.unlink(missing_ok=True)
    binary = find_chromium(chromium)
    with tempfile.TemporaryDirectory(prefix="fedstat-chromium-") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            html_file.as_uri(),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"Chromium did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = "\n".join((done.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium failed (exit {done.returncode}) rendering {html_file}:\n{tail}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--chromium", default=None, help="Chromium binary (default: $CHROMIUM or chromium on PATH)")
    ap.add_argument("--timeout", type=float, default=90.0)
    args = ap.parse_args(argv)
    try:
        out = render(
            args.html, args.png, width=args.width, height=args.height, chromium=args.chromium, timeout=args.timeout
        )
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"render_report: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
