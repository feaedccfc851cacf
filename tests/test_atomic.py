"""The one atomic writer (fedstat/formats/atomic.py): a reader sees the old file or the new one,
private files never exist with wider permissions, and a planted temporary file is not followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

import pytest

from fedstat.formats.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_bytes__replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "key.pem"
    dest.write_bytes(b"old")
    atomic_write_bytes(dest, b"new contents" * 1000, file_mode=0o600, sync_dir=True)
    assert dest.read_bytes() == b"new contents" * 1000
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]


def test_write_bytes__a_stale_wide_temporary_is_replaced_not_reused(tmp_path: Path) -> None:
    dest = tmp_path / "key.pem"
    stale = tmp_path / "key.pem.tmp"
    stale.write_bytes(b"left by a crash")
    stale.chmod(0o666)
    atomic_write_bytes(dest, b"secret", file_mode=0o600)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600 and dest.read_bytes() == b"secret"


def test_write_bytes__a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / "out.tmp").symlink_to(victim)
    atomic_write_bytes(tmp_path / "out", b"data", file_mode=0o600)
    assert victim.read_bytes() == b"untouched"
    assert (tmp_path / "out").read_bytes() == b"data" and not (tmp_path / "out").is_symlink()


def test_write_text__owner_write_removed_by_mode_still_writes(tmp_path: Path) -> None:
    dest = tmp_path / "ro.txt"
    atomic_write_text(dest, ["a\n", "b\n"], file_mode=0o400)
    assert dest.read_text() == "a\nb\n" and stat.S_IMODE(dest.stat().st_mode) == 0o400


def test_write_text__error_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "t.txt"
    dest.write_text("old\n")

    def boom(fh: TextIO) -> None:
        fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_text(dest, boom)
    assert dest.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["t.txt"]


def test_atomic_path__a_writer_that_opens_the_file_itself(tmp_path: Path) -> None:
    dest = tmp_path / "plot.png"
    with atomic_path(dest) as tmp:
        assert tmp.name == "plot.png.tmp" and not dest.exists()
        tmp.write_bytes(b"png")
    assert dest.read_bytes() == b"png" and not tmp.exists()
    with pytest.raises(ValueError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError
    assert dest.read_bytes() == b"png" and not tmp.exists()
