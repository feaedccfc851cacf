"""The site's tamper-evident audit log: one hash-chained line of JSON per event, append-only.

Every site records what it was asked and what it did: each job offer with the analyst, the job
spec's digest, the decision and its reason, the cohort size after consent, the privacy budget
charged, each round and the end of the job. :class:`AuditLog` appends; the record's schema is in
:mod:`site_agent.audit_schema`; :mod:`site_agent.audit_verify` checks the chain (``verify``) and
reads it back (``show``, ``format_record``).

File format
-----------
``audit.log`` holds one record per line: canonical JSON (:func:`~site_agent.audit_schema.canonical_json`:
sorted keys, no spaces, ASCII with ``\\u`` escapes) followed by ``\\n``. Fields:

seq : 0, 1, 2, … in file order
time : when the record was written, UTC ISO-8601 with microseconds, e.g. ``2025-05-01T09:30:00.000000Z``
prev : hex SHA-256 of the previous record's line (its canonical JSON, without the newline);
    :data:`~site_agent.audit_schema.GENESIS` for seq 0
hash : hex SHA-256 of the canonical JSON of the record without its ``hash`` field
payload : any of :data:`~site_agent.audit_schema.PAYLOAD_FIELDS` (see
    :func:`~site_agent.audit_schema.validate_payload`)

Beside it, ``audit.log.head`` (the *head anchor*) holds ``{"seq", "hash", "line_sha256"}`` of the
last record (seq -1 and ``GENESIS`` for an empty log). It is replaced atomically after each append
(:func:`fedstat.formats.atomic.atomic_write_bytes`: write, fsync, rename, fsync of the directory).
What the chain and the anchor detect, and what they do not, is told in :mod:`site_agent.audit_verify`.

Crashes
-------
A record is written with one ``write`` of the whole line on a descriptor opened with ``O_APPEND``,
then ``fsync``; the head anchor is replaced after that. A crash can therefore leave (a) the tail of
the file a partial line, and (b) the anchor one record behind the log. Neither is repaired silently:

- the partial line stays in the file and ``verify`` reports it (``ok`` is False from then on,
  so an operator looks). Reopening the log ends the partial line with a newline (the only change
  ever made to existing bytes: an append) and chains the next record from the last valid record;
  ``verify`` steps over such a line and still checks every record after it. A partial line
  that is in fact a complete, valid record missing only its newline becomes the chain's tail.
- an anchor exactly one record behind (and matching that record) is accepted by ``verify`` and
  rewritten when the log is next opened.

Any other disagreement between the anchor and the log (anchor missing, unreadable, ahead of the
log, or naming a different record) makes :class:`AuditLog` refuse to open, because appending would
overwrite the evidence; run ``verify``, keep both files as evidence, and move them aside to
start a new log.

One writer at a time: :class:`AuditLog` holds an exclusive ``flock`` on the log while open, so a
second instance (in this or another process) is refused. Appends from many threads of one
instance are serialised by a lock. POSIX only (``fcntl``).

No participant-level data
-------------------------
The log holds only counts (cohort size, consent exclusions), names (analyst, job, dataset,
analyses, privacy mode, purpose), digests and budget figures. Nothing about a single participant is
ever written: not a sample ID, genotype, phenotype or per-sample value. Every payload passes
:func:`~site_agent.audit_schema.validate_payload`, which enforces the schema and refuses anything
shaped like per-participant data (lists of numbers, long lists, arrays, runs of numbers in text);
its error messages name the field and the shape, never the value.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedstat.formats.atomic import atomic_write_bytes

from .audit_schema import (
    GENESIS,
    HEX64,
    AuditError,
    canonical_json,
    line_digest,
    parse_line,
    record_hash,
    sha256,
    validate_payload,
)

__all__ = ["AuditLog"]

log = logging.getLogger("fedstat.site.audit")

# --- the log's files ---------------------------------------------------------------------


def head_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".head")


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    line_sha256: str


def read_head(head_path: Path) -> Head | None:
    """The anchor, or None when the file does not exist; AuditError when it is unreadable."""
    try:
        text = head_path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"{head_path}: cannot read the audit head anchor ({type(exc).__name__})") from exc
    try:
        obj = json.loads(text)
        head = Head(seq=obj["seq"], hash=obj["hash"], line_sha256=obj["line_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"{head_path}: the audit head anchor is not valid (expected seq, hash, line_sha256)") from exc
    if (
        isinstance(head.seq, bool)
        or not isinstance(head.seq, int)
        or head.seq < -1
        or not all(isinstance(h, str) and HEX64.match(h) for h in (head.hash, head.line_sha256))
    ):
        raise AuditError(f"{head_path}: the audit head anchor is not valid (expected seq, hash, line_sha256)")
    return head


def _write_head(head_path: Path, head: Head) -> None:
    """Replace the anchor atomically (:func:`~fedstat.formats.atomic.atomic_write_bytes`)."""
    data = (canonical_json({"seq": head.seq, "hash": head.hash, "line_sha256": head.line_sha256}) + "\n").encode()
    try:
        atomic_write_bytes(head_path, data, file_mode=0o640, sync_dir=True)
    except OSError as exc:
        raise AuditError(f"{head_path}: cannot write the audit head anchor: {exc.strerror}") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _lines_backwards(fd: int, size: int, block: int = 1 << 16) -> Iterator[tuple[int, bytes]]:
    """``(start offset, line without newline)`` from the end: first the bytes after the last newline
    (``b""`` when the file ends with one), then each complete line, last to first."""
    pos, buf = size, b""
    while pos > 0:
        n = min(block, pos)
        pos -= n
        buf = os.pread(fd, n, pos) + buf
        while (i := buf.rfind(b"\n")) >= 0:
            yield pos + i + 1, buf[i + 1 :]
            buf = buf[:i]
    yield 0, buf


def _last_record(fd: int, size: int) -> tuple[dict[str, Any] | None, str, int, int]:
    """The last valid record of the file, its line digest, its line's offset, and how many lines
    after it are not records; ``(None, GENESIS, 0, n)`` when there is none."""
    debris = 0
    for start, text in _lines_backwards(fd, size):
        if not text and start == size:  # the file ends with a newline (or is empty)
            continue
        record, _ = parse_line(text)
        if record is not None:
            return record, line_digest(text), start, debris
        debris += 1
    return None, GENESIS, 0, debris


def _line_number(fd: int, offset: int, block: int = 1 << 20) -> int:
    """1-based number of the line starting at ``offset``."""
    count, pos = 0, 0
    while pos < offset:
        chunk = os.pread(fd, min(block, offset - pos), pos)
        if not chunk:
            break
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count + 1


# --- the writer ----------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise AuditError("the audit clock returned a time without a time zone")
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """An open audit log: appends hash-chained records, thread-safe and crash-safe.

    Opening creates the log (and its head anchor) if needed, takes an exclusive lock on it, and
    reads the last complete record to continue the chain: that record's own hash and its agreement
    with the head anchor are checked (the whole chain is :func:`site_agent.audit_verify.verify`'s job). Use as a context
    manager, or call :meth:`close`.

    Parameters
    ----------
    path : the log file, e.g. ``<state dir>/audit.log``; the anchor is ``audit.log.head`` beside it
    clock : returns the current time (timezone-aware); tests pass a fixed clock

    Raises
    ------
    AuditError
        the log is open elsewhere, cannot be opened, or disagrees with its head anchor (see the
        module notes: appending would destroy the evidence)
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], datetime] = _utc_now):
        self.path = Path(path)
        self.head_path = head_path_for(self.path)
        self._clock = clock
        self._lock = threading.Lock()
        self._head = Head(seq=-1, hash=GENESIS, line_sha256=GENESIS)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot open the audit log: {exc.strerror}") from exc
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise AuditError(
                    f"{self.path}: the audit log is already open for writing (one writer at a time)"
                ) from exc
            self._open_tail()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    def _open_tail(self) -> None:
        assert self._fd is not None
        fd = self._fd
        size = os.fstat(fd).st_size
        last, last_digest, last_start, debris = _last_record(fd, size)
        last_seq = -1 if last is None else int(last["seq"])
        tail = Head(seq=last_seq, hash=GENESIS if last is None else last["hash"], line_sha256=last_digest)

        def where() -> str:  # for messages only: numbering the line reads the whole file
            if last is None:
                return "the log holds no valid record"
            return f"the last valid record is seq {last_seq} (line {_line_number(fd, last_start)})"

        if debris:
            log.warning(
                "%s: %d line(s) after the last record are not records (crash mid-write?); kept in place, "
                "verify reports them, the chain continues from %s",
                self.path,
                debris,
                "the start" if last is None else f"seq {last_seq}",
            )
        head = read_head(self.head_path)
        if head is None:
            if size:
                raise AuditError(
                    f"{self.head_path}: the head anchor of a non-empty audit log is missing, so records removed from "
                    f"the end could not be detected; {where()}. Keep both files as evidence and start a new log"
                )
            _write_head(self.head_path, tail)
        elif head != tail:
            lagging = last is not None and head.seq == last_seq - 1 and head.line_sha256 == last["prev"]
            if not lagging:
                what = (
                    f"names seq {head.seq} but {where()}: records were removed from the end (or garbled)"
                    if head.seq > last_seq
                    else f"names seq {head.seq}, which does not match the log ({where()})"
                )
                raise AuditError(
                    f"{self.head_path}: the audit head anchor {what}. Run verify, keep both files as evidence and "
                    "start a new log"
                )
            log.info("%s: head anchor was one record behind (crash before it was updated); rewritten", self.head_path)
            _write_head(self.head_path, tail)
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a crash left a partial line: end it, keep it
            try:
                _write_all(fd, b"\n")
                os.fsync(fd)
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot write to the audit log: {exc.strerror}") from exc
            size += 1
        self._head = tail
        self._size = size
        self._torn = False  # set when a write fails part-way: the next record then starts on a new line

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record; ``(-1, GENESIS)`` for an empty log. Keep it off-site to anchor the log."""
        with self._lock:
            return self._head.seq, self._head.hash

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, **payload: Any) -> dict[str, Any]:
        """Write one record (fields as in :func:`validate_payload`), fsync it, move the head anchor.

        Returns
        -------
        the record as written, with ``seq``, ``time``, ``prev`` and ``hash``

        Raises
        ------
        AuditPayloadError
            the payload is invalid (nothing is written)
        AuditError
            the log is closed, was changed on disk by someone else, or cannot be written
        """
        fields = validate_payload(payload)
        with self._lock:
            if self._fd is None:
                raise AuditError(f"{self.path}: the audit log is closed")
            fd = self._fd
            try:
                size = os.fstat(fd).st_size
                if size != self._size and not self._torn:
                    raise AuditError(
                        f"{self.path}: the audit log changed on disk since it was opened ({self._size} bytes "
                        f"expected, {size} found); run verify"
                    )
                if self._torn:  # a failed append may have written part of its line, or all of it
                    landed, digest, _, _ = _last_record(fd, size)
                    if landed is not None and (landed["seq"], landed["prev"]) == (
                        self._head.seq + 1,
                        self._head.line_sha256,
                    ):
                        self._head = Head(seq=landed["seq"], hash=landed["hash"], line_sha256=digest)
                ends_open = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot read the audit log: {exc.strerror}") from exc
            record = {
                **fields,
                "seq": self._head.seq + 1,
                "time": _format_time(self._clock()),
                "prev": self._head.line_sha256,
            }
            record["hash"] = record_hash(record)
            line = canonical_json(record)
            data = ("\n" if ends_open else "").encode() + line.encode("ascii") + b"\n"
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                self._torn = True  # the next append looks at what was written before going on
                raise AuditError(f"{self.path}: cannot write to the audit log: {exc.strerror}") from exc
            self._size, self._torn = size + len(data), False
            self._head = Head(seq=record["seq"], hash=record["hash"], line_sha256=sha256(line))
            _write_head(self.head_path, self._head)
            return dict(record)

    def close(self) -> None:
        """Release the lock and the file; appending afterwards raises :class:`AuditError`."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, seq={self._head.seq})"
