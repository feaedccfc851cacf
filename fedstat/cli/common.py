"""Pieces the ``fedstat`` subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_profile"]


def add_profile(p: argparse.ArgumentParser) -> None:
    """The ``--profile`` every analyst command takes."""
    p.add_argument(
        "--profile",
        required=True,
        type=Path,
        metavar="TOML",
        help="analyst profile: coordinator address and your certificate (see README)",
    )
