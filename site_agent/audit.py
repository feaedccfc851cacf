"""The site's tamper-evident audit log: one hash-chained line of JSON per event, append-only.

Every site records what it was asked and what it did: each job offer with the analyst, the job
spec's digest, the decision and its reason, the cohort size after consent, the privacy budget
charged, each round and the end of the job. :class:`AuditLog` appends, :func:`verify` checks the
chain, :func:`show` and :func:`format_record` read it back.

File format
-----------
``audit.log`` holds one record per line: canonical JSON (:func:`canonical_json`: sorted keys, no
spaces, ASCII with ``\\u`` escapes) followed by ``\\n``. Fields:

seq : 0, 1, 2, … in file order
time : when the record was written, UTC ISO-8601 with microseconds, e.g. ``2025-05-01T09:30:00.000000Z``
prev : hex SHA-256 of the previous record's line (its canonical JSON, without the newline);
    :data:`GENESIS` for seq 0
hash : hex SHA-256 of the canonical JSON of the record without its ``hash`` field
payload : any of :data:`PAYLOAD_FIELDS` (see :func:`validate_payload`)

Beside it, ``audit.log.head`` (the *head anchor*) holds ``{"seq", "hash", "line_sha256"}`` of the
last record (seq -1 and :data:`GENESIS` for an empty log). It is replaced atomically (write, fsync,
rename, fsync of the directory) after each append.

What is detected, and what is not
---------------------------------
:func:`verify` reports, naming the file and line: an edited record (its hash no longer matches),
a removed, inserted or reordered record (seq gap, or ``prev`` not the previous line's digest),
a truncated or garbled line, and — through the head anchor — records removed from the end, which a
hash chain alone cannot reveal. The chain is unkeyed: someone who can write the files can rewrite
the whole chain and the anchor consistently, and that is not detectable locally. So the head
``(seq, hash)`` (:attr:`AuditLog.head`) is signed and kept where the site's administrators cannot
write: the agent sends it to the coordinator with every offer reply and round
(:mod:`site_agent.audit_anchor`, :mod:`fedstat.audit_head`), and ``verify(..., against=(seq,
hash))`` checks the log still holds that record, which detects such a rewrite up to that record.

Crashes
-------
A record is written with one ``write`` of the whole line on a descriptor opened with ``O_APPEND``,
then ``fsync``; the head anchor is replaced after that. A crash can therefore leave (a) the tail of
the file a partial line, and (b) the anchor one record behind the log. Neither is repaired silently:

- the partial line stays in the file and :func:`verify` reports it (``ok`` is False from then on,
  so an operator looks). Reopening the log ends the partial line with a newline (the only change
  ever made to existing bytes: an append) and chains the next record from the last valid record;
  :func:`verify` steps over such a line and still checks every record after it. A partial line
  that is in fact a complete, valid record missing only its newline becomes the chain's tail.
- an anchor exactly one record behind (and matching that record) is accepted by :func:`verify` and
  rewritten when the log is next opened.

Any other disagreement between the anchor and the log (anchor missing, unreadable, ahead of the
log, or naming a different record) makes :class:`AuditLog` refuse to open, because appending would
overwrite the evidence; run :func:`verify`, keep both files as evidence, and move them aside to
start a new log.

One writer at a time: :class:`AuditLog` holds an exclusive ``flock`` on the log while open, so a
second instance (in this or another process) is refused. Appends from many threads of one
instance are serialised by a lock. POSIX only (``fcntl``).

No participant-level data
-------------------------
The log holds only counts (cohort size, consent exclusions), names (analyst, job, dataset,
analyses, privacy mode, purpose), digests and budget figures. Nothing about a single participant is
ever written: not a sample ID, genotype, phenotype or per-sample value. :func:`validate_payload`
(in :mod:`site_agent.audit_schema`, re-exported here) enforces the schema and
:func:`check_no_participant_data` refuses anything shaped like
per-participant data (lists of numbers, long lists, arrays, runs of numbers in text); its error
messages name the field and the shape, never the value.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fedstat.errors import InputError

from .audit_schema import (
    _HEX64,
    DECISIONS,
    DP_FIELDS,
    GENESIS,
    MAX_LIST_ITEMS,
    MAX_NUMBERS_IN_TEXT,
    MAX_REASON,
    MAX_TEXT,
    PAYLOAD_FIELDS,
    RESERVED_FIELDS,
    AuditError,
    AuditPayloadError,
    _line_digest,
    _parse_line,
    _parse_time,
    _record_hash,
    _sha256,
    canonical_json,
    check_no_participant_data,
    spec_digest,
    validate_payload,
)

__all__ = [
    "DECISIONS",
    "DP_FIELDS",
    "GENESIS",
    "MAX_LIST_ITEMS",
    "MAX_NUMBERS_IN_TEXT",
    "MAX_REASON",
    "MAX_TEXT",
    "PAYLOAD_FIELDS",
    "RESERVED_FIELDS",
    "AuditError",
    "AuditLog",
    "AuditPayloadError",
    "VerifyResult",
    "canonical_json",
    "check_no_participant_data",
    "format_record",
    "show",
    "spec_digest",
    "validate_payload",
    "verify",
]

log = logging.getLogger("fedstat.site.audit")

# --- the log's files ---------------------------------------------------------------------


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


@dataclass(frozen=True)
class _Head:
    seq: int
    hash: str
    line_sha256: str


def _read_head(head_path: Path) -> _Head | None:
    """The anchor, or None when the file does not exist; AuditError when it is unreadable."""
    try:
        text = head_path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"{head_path}: cannot read the audit head anchor ({type(exc).__name__})") from exc
    try:
        obj = json.loads(text)
        head = _Head(seq=obj["seq"], hash=obj["hash"], line_sha256=obj["line_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"{head_path}: the audit head anchor is not valid (expected seq, hash, line_sha256)") from exc
    if (
        isinstance(head.seq, bool)
        or not isinstance(head.seq, int)
        or head.seq < -1
        or not all(isinstance(h, str) and _HEX64.match(h) for h in (head.hash, head.line_sha256))
    ):
        raise AuditError(f"{head_path}: the audit head anchor is not valid (expected seq, hash, line_sha256)")
    return head


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_head(head_path: Path, head: _Head) -> None:
    """Replace the anchor atomically: write a temporary file, fsync, rename, fsync the directory."""
    tmp = head_path.with_name(head_path.name + ".tmp")
    data = (canonical_json({"seq": head.seq, "hash": head.hash, "line_sha256": head.line_sha256}) + "\n").encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, head_path)
        _fsync_dir(head_path.parent)
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
        record, _ = _parse_line(text)
        if record is not None:
            return record, _line_digest(text), start, debris
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
    with the head anchor are checked (the whole chain is :func:`verify`'s job). Use as a context
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
        self.head_path = _head_path(self.path)
        self._clock = clock
        self._lock = threading.Lock()
        self._head = _Head(seq=-1, hash=GENESIS, line_sha256=GENESIS)
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
        tail = _Head(seq=last_seq, hash=GENESIS if last is None else last["hash"], line_sha256=last_digest)

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
        head = _read_head(self.head_path)
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
                        self._head = _Head(seq=landed["seq"], hash=landed["hash"], line_sha256=digest)
                ends_open = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot read the audit log: {exc.strerror}") from exc
            record = {
                **fields,
                "seq": self._head.seq + 1,
                "time": _format_time(self._clock()),
                "prev": self._head.line_sha256,
            }
            record["hash"] = _record_hash(record)
            line = canonical_json(record)
            data = ("\n" if ends_open else "").encode() + line.encode("ascii") + b"\n"
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                self._torn = True  # the next append looks at what was written before going on
                raise AuditError(f"{self.path}: cannot write to the audit log: {exc.strerror}") from exc
            self._size, self._torn = size + len(data), False
            self._head = _Head(seq=record["seq"], hash=record["hash"], line_sha256=_sha256(line))
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


# --- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found.

    Attributes
    ----------
    ok : no problem at all
    n_records : records whose hash and place in the chain checked out
    first_bad_line : 1-based line of the first problem; None when ok or when only the head anchor disagrees
    problem : the first problem, naming the file and line ("" when ok)
    problems : every problem found, in file order (verify steps over truncated or garbled lines and
        stops at the first break of the chain)
    against_problem : with ``against``: why the log does not hold that signed head ("" when it does)
    """

    ok: bool
    n_records: int
    first_bad_line: int | None
    problem: str
    problems: tuple[str, ...] = ()
    against_problem: str = ""


def verify(
    path: str | os.PathLike[str], *, check_head: bool = True, against: tuple[int, str] | None = None
) -> VerifyResult:
    """Check an audit log: every record's hash, the seq order, the ``prev`` chain and the head anchor.

    A line that is not a valid record (truncated by a crash, garbled, or edited) is a problem; it
    is stepped over, and the next record must chain from the last valid one, as :class:`AuditLog`
    continues after a crash. A seq out of order or a ``prev`` that does not match ends the check.
    The head anchor must name the last record, or the one before it (a crash between writing a
    record and moving the anchor); ``check_head=False`` skips it, e.g. for a copy of the log alone.

    ``against=(seq, hash)`` is a head this site signed and the coordinator kept
    (:mod:`fedstat.audit_head`): the unbroken chain must reach record ``seq`` and its hash must be
    ``hash``. As a record's hash commits to every record before it, this detects records removed
    from the end (anchor rewritten too), and any edit, deletion, insertion or reordering up to that
    record even when the whole chain and anchor were rewritten consistently.

    Raises
    ------
    AuditError
        the log does not exist or cannot be read (content problems are reported, not raised)
    """
    path = Path(path)
    problems: list[str] = []
    first_bad: int | None = None
    n, last_digest = 0, GENESIS
    last: dict[str, Any] | None = None
    before_last: dict[str, Any] | None = None
    n_lines, chain_broken = 0, False
    found: str | None = None  # the hash of record `against` seq, once the chain reaches it
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                n_lines = lineno
                if not raw.endswith(b"\n"):
                    problems.append(
                        f"{path} line {lineno}: truncated record, no newline at the end of the file (a write interrupted "
                        "by a crash, or the file was cut)"
                    )
                    first_bad = first_bad or lineno
                    continue
                text = raw[:-1]
                record, why = _parse_line(text)
                if record is None:
                    problems.append(f"{path} line {lineno}: {why}")
                    first_bad = first_bad or lineno
                    continue
                if record["seq"] != n:
                    problems.append(
                        f"{path} line {lineno}: seq {record['seq']} where {n} was expected (a record was removed, "
                        "inserted or moved)"
                    )
                    first_bad, chain_broken = first_bad or lineno, True
                    break
                if record["prev"] != last_digest:
                    problems.append(
                        f"{path} line {lineno}: prev does not match the previous record's digest (a record was "
                        "edited, removed, inserted or moved)"
                    )
                    first_bad, chain_broken = first_bad or lineno, True
                    break
                if against is not None and record["seq"] == against[0]:
                    found = record["hash"]
                n, last_digest, before_last, last = n + 1, _line_digest(text), last, record
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc
    if check_head and not chain_broken:
        head_problem = _check_head(_head_path(path), last, before_last, last_digest, n_lines)
        if head_problem:
            problems.append(head_problem)
    against_problem = "" if against is None else _check_against(path, against, found, n, chain_broken)
    if against_problem:
        problems.append(against_problem)
    return VerifyResult(
        ok=not problems,
        n_records=n,
        first_bad_line=first_bad,
        problem=problems[0] if problems else "",
        problems=tuple(problems),
        against_problem=against_problem,
    )


def _check_against(path: Path, against: tuple[int, str], found: str | None, n: int, chain_broken: bool) -> str:
    """Why the log does not hold the signed head ``against`` (seq, hash), or ""."""
    seq, digest = against
    if found == digest:
        return ""
    if found is not None:
        return (
            f"{path}: record seq {seq} is not the one this site signed as its audit head (hash {digest[:12]}…): "
            f"that record or one before it was edited, removed, inserted or moved, and the chain rewritten"
        )
    if chain_broken:
        return f"{path}: the chain breaks before record seq {seq}, which this site signed as its audit head"
    return (
        f"{path}: the log ends at seq {n - 1} but this site signed an audit head at seq {seq}: "
        f"{seq - n + 1} record(s) were removed from the end"
    )


def _check_head(
    head_path: Path, last: dict[str, Any] | None, before_last: dict[str, Any] | None, last_digest: str, n_lines: int
) -> str:
    """The head anchor's disagreement with the log's last valid record, or ""."""
    try:
        head = _read_head(head_path)
    except AuditError as exc:
        return str(exc)
    last_seq = -1 if last is None else int(last["seq"])
    if head is None:
        if n_lines == 0:
            return ""
        return f"{head_path}: the head anchor is missing, so records removed from the end cannot be ruled out"
    if head == _Head(last_seq, GENESIS if last is None else last["hash"], last_digest):
        return ""
    if last is not None and head.seq == last_seq - 1 and head.line_sha256 == last["prev"]:
        expected = GENESIS if before_last is None else before_last["hash"]
        if head.hash == expected:
            return ""  # a crash between the record's write and the anchor's update
    if head.seq > last_seq:
        return (
            f"{head_path}: the head anchor names seq {head.seq} but the log's last record is seq {last_seq}: "
            f"{head.seq - last_seq} record(s) were removed from the end"
        )
    return f"{head_path}: the head anchor (seq {head.seq}) does not match the log's records"


# --- reading -------------------------------------------------------------------------------


def _as_utc(value: str | date | None, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InputError(f"{name}: {value!r} is not an ISO-8601 date or time (e.g. 2025-05-01T09:30Z)") from exc
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise InputError(f"{name} must be an ISO-8601 text, a date or a datetime, not {type(value).__name__}")
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def show(
    path: str | os.PathLike[str],
    *,
    analyst: str | None = None,
    job_id: str | None = None,
    since: str | date | None = None,
    until: str | date | None = None,
) -> Iterator[dict[str, Any]]:
    """The records of a log, in file order, filtered by analyst, job and time (``since <= time < until``).

    ``since`` / ``until`` are ISO-8601 texts, dates or datetimes; without a time zone they are UTC.
    This reads, it does not check the chain (use :func:`verify`): a line that is not a JSON record
    (crash debris) is skipped with a warning naming the file and line.

    Raises
    ------
    AuditError
        the log does not exist or cannot be read
    InputError
        ``since`` or ``until`` is not a date or time
    """
    path = Path(path)
    lo, hi = _as_utc(since, "since"), _as_utc(until, "until")
    if not path.is_file():
        raise AuditError(f"{path}: no such audit log")
    return _show(path, analyst, job_id, lo, hi)


def _show(
    path: Path, analyst: str | None, job_id: str | None, lo: datetime | None, hi: datetime | None
) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    record = json.loads(raw)
                    t = _parse_time(record["time"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d: not an audit record, skipped (run verify)", path, lineno)
                    continue
                if analyst is not None and record.get("analyst") != analyst:
                    continue
                if job_id is not None and record.get("job_id") != job_id:
                    continue
                if (lo is not None and t < lo) or (hi is not None and t >= hi):
                    continue
                yield record
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def format_record(record: Mapping[str, Any]) -> str:
    """One human-readable line, e.g.
    ``2025-05-01T09:30:00.000000Z #3 offer analyst:alice job=J7 accepted analyses=freq,glm privacy=dp
    dataset=main cohort=118 consent-excluded=4 dp(epsilon=1 delta=1e-06 rho=0.0123 remaining=0.9)
    spec=1a2b3c4d5e6f — reason``."""
    parts = [str(record.get("time", "?")), f"#{record.get('seq', '?')}"]
    for key in ("event", "analyst"):
        if key in record:
            parts.append(str(record[key]))
    if "job_id" in record:
        parts.append(f"job={record['job_id']}")
    if "round" in record:
        parts.append(f"round={record['round']}")
    if "decision" in record:
        parts.append(str(record["decision"]))
    if "analyses" in record:
        parts.append("analyses=" + ",".join(map(str, record["analyses"])))
    for key in ("privacy", "purpose", "dataset"):
        if record.get(key):
            parts.append(f"{key}={record[key]}")
    if "cohort_size" in record:
        parts.append(f"cohort={record['cohort_size']}")
    if "consent_excluded" in record:
        parts.append(f"consent-excluded={record['consent_excluded']}")
    if isinstance(record.get("dp"), Mapping):
        dp = record["dp"]
        parts.append(
            "dp(" + " ".join(f"{k}={_number(dp[k])}" for k in ("epsilon", "delta", "rho", "remaining") if k in dp) + ")"
        )
    if "spec_digest" in record:
        parts.append(f"spec={str(record['spec_digest'])[:12]}")
    line = " ".join(parts)
    if record.get("reason"):
        line += " — " + " ".join(str(record["reason"]).split())
    return line
