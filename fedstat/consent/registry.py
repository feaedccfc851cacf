"""The site-local withdrawal registry: participants who withdrew consent, kept for good (SQLite).

A participant whose ``consent`` cell once said ``WITHDRAWN`` is recorded here and excluded from
every later job whatever a later ``samples.tsv`` says (:func:`fedstat.consent.select_participants`).
The database stores keyed hashes of participant IDs, never the IDs.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from fedstat.errors import InputError


class WithdrawalRegistry:
    """A site-local, persistent set of participants who withdrew consent.

    Once recorded, a participant stays withdrawn: :func:`~fedstat.consent.selection.select_participants` excludes them
    whatever a later ``samples.tsv`` says. Nothing ever removes an entry (a participant who
    re-consents needs a new participant ID, or a deliberate manual edit by the site).

    Storage
    -------
    ``path`` is an SQLite database (table ``withdrawn``, one row per participant) written in
    transactions, so a crash leaves either the old or the new set. It holds no IDs: each ID is
    stored as HMAC-SHA256 under a 32-byte random key kept in ``<path>.key`` (mode 0600, created
    once, never rewritten). The database alone (say, in a backup) therefore reveals only how
    many participants withdrew; with the key, one can test whether a given ID is in it, which
    the site can do anyway. The database also stores an HMAC fingerprint of the key, so a
    missing or substituted key file is an error rather than a registry that silently forgets.

    IDs are compared exactly (case-sensitive, as plink2 compares them). Use one ID form for a
    dataset every time (the IID, or ``FID + "\t" + IID`` when IIDs repeat across families).

    Parameters
    ----------
    path : the database file; it and ``<path>.key`` are created when missing

    Raises
    ------
    InputError
        When the database cannot be opened or is not a registry, or the key file is missing
        (for an existing registry), malformed, or does not belong to the database.
    """

    _KEY_BYTES = 32
    _FINGERPRINT_LABEL = b"fedstat withdrawal registry key check v1"
    _TIMEOUT_S = 30.0  # wait this long for another process's write transaction

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key_path = self.path.with_name(self.path.name + ".key")
        existed = self.path.exists()
        if not existed:
            # Create with owner-only permissions before SQLite opens it.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            con.execute("CREATE TABLE IF NOT EXISTS withdrawn (h BLOB PRIMARY KEY) WITHOUT ROWID")
            row = con.execute("SELECT value FROM meta WHERE name = 'key_fingerprint'").fetchone()
            if row is None:
                key = self._load_or_create_key()
                con.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('key_fingerprint', ?)", (self._fingerprint(key),)
                )
                row = con.execute("SELECT value FROM meta WHERE name = 'key_fingerprint'").fetchone()
            else:
                key = self._load_key()
        if not hmac.compare_digest(bytes(row[0]), self._fingerprint(key)):
            raise InputError(f"{self.key_path}: key does not belong to withdrawal registry {self.path}")
        self._key = key

    def __repr__(self) -> str:
        return f"WithdrawalRegistry({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=self._TIMEOUT_S)
        except sqlite3.Error as exc:
            raise InputError(f"{self.path}: cannot open withdrawal registry ({exc})") from exc
        try:
            con.execute("PRAGMA synchronous = FULL")  # a recorded withdrawal survives power loss
            with con:  # one transaction: committed on success, rolled back on error
                yield con
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a readable withdrawal registry ({exc})") from exc
        finally:
            con.close()

    def _fingerprint(self, key: bytes) -> bytes:
        return hmac.digest(key, self._FINGERPRINT_LABEL, "sha256")

    def _load_key(self) -> bytes:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"{self.key_path}: key of withdrawal registry {self.path} is missing; without it recorded "
                "withdrawals cannot be checked (restore the key file from backup)"
            ) from None
        except OSError as exc:
            raise InputError(f"{self.key_path}: cannot read registry key ({exc.strerror})") from exc
        if len(key) != self._KEY_BYTES:
            raise InputError(f"{self.key_path}: registry key must be {self._KEY_BYTES} bytes, found {len(key)}")
        return key

    def _load_or_create_key(self) -> bytes:
        if self.key_path.exists():
            return self._load_key()
        # Write a temporary file, then link it into place: the key appears complete or not at
        # all, and a concurrent creator's key is never overwritten.
        tmp = self.key_path.with_name(f"{self.key_path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(self._KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.key_path)
        finally:
            tmp.unlink(missing_ok=True)
        return self._load_key()

    def _hashes(self, ids: Iterable[str]) -> list[bytes]:
        key = self._key
        return [hmac.digest(key, i.encode("utf-8"), "sha256") for i in ids]

    def record(self, ids: Iterable[str]) -> int:
        """Mark participants withdrawn, for good.

        Parameters
        ----------
        ids : participant IDs (already-recorded ones are ignored)

        Returns
        -------
        int
            How many were newly recorded.
        """
        hashes = self._hashes(ids)
        if not hashes:
            return 0
        with self._connect() as con:
            before = con.total_changes
            con.executemany("INSERT OR IGNORE INTO withdrawn (h) VALUES (?)", ((h,) for h in hashes))
            return con.total_changes - before

    def is_withdrawn(self, ids: Iterable[str]) -> np.ndarray:
        """Which of ``ids`` have been recorded as withdrawn.

        Returns
        -------
        [array, shape: (n_ids,), dtype bool]
        """
        hashes = self._hashes(ids)
        with self._connect() as con:
            stored = {bytes(row[0]) for row in con.execute("SELECT h FROM withdrawn")}
        out = np.fromiter((h in stored for h in hashes), dtype=bool, count=len(hashes))
        assert out.shape == (len(hashes),)
        return out

    def __len__(self) -> int:
        """How many participants are recorded as withdrawn."""
        with self._connect() as con:
            (count,) = con.execute("SELECT COUNT(*) FROM withdrawn").fetchone()
        return int(count)
