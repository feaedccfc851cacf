"""Checking and reading a site's audit log (:mod:`site_agent.audit_log` writes it and describes
its files): :func:`verify` checks the chain and the head anchor, :func:`show` and
:func:`format_record` read the records back.

What is detected, and what is not
---------------------------------
:func:`verify` reports, naming the file and line: an edited record (its hash no longer matches),
a removed, inserted or reordered record (seq gap, or ``prev`` not the previous line's digest),
a truncated or garbled line, and — through the head anchor — records removed from the end, which a
hash chain alone cannot reveal. The chain is unkeyed: someone who can write the files can rewrite
the whole chain and the anchor consistently, and that is not detectable locally. So the head
``(seq, hash)`` (:attr:`~site_agent.audit_log.AuditLog.head`) is signed and kept where the site's
administrators cannot write: the agent sends it to the coordinator with every offer reply and round
(:mod:`site_agent.audit_anchor`, :mod:`fedstat.audit_head`), and ``verify(..., against=(seq,
hash))`` checks the log still holds that record, which detects such a rewrite up to that record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fedstat.errors import InputError

from .audit_log import Head, head_path_for, read_head
from .audit_schema import GENESIS, AuditError, line_digest, parse_line, parse_time

__all__ = ["VerifyResult", "format_record", "show", "verify"]

log = logging.getLogger("fedstat.site.audit")


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
                record, why = parse_line(text)
                if record is None:
                    problems.append(f"{path} line {lineno}: {why}")
                    first_bad = first_bad or lineno
                    continue
                broken = _chain_break(record, n, last_digest)
                if broken:
                    problems.append(f"{path} line {lineno}: {broken}")
                    first_bad, chain_broken = first_bad or lineno, True
                    break
                if against is not None and record["seq"] == against[0]:
                    found = record["hash"]
                n, last_digest, before_last, last = n + 1, line_digest(text), last, record
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc
    if check_head and not chain_broken:
        head_problem = _check_head(head_path_for(path), last, before_last, last_digest, n_lines)
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


def _chain_break(record: Mapping[str, Any], seq: int, prev: str) -> str:
    """Why ``record`` cannot follow the chain where record ``seq`` after line digest ``prev`` is
    expected, or ""."""
    if record["seq"] != seq:
        return f"seq {record['seq']} where {seq} was expected (a record was removed, inserted or moved)"
    if record["prev"] != prev:
        return "prev does not match the previous record's digest (a record was edited, removed, inserted or moved)"
    return ""


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
        head = read_head(head_path)
    except AuditError as exc:
        return str(exc)
    last_seq = -1 if last is None else int(last["seq"])
    if head is None:
        if n_lines == 0:
            return ""
        return f"{head_path}: the head anchor is missing, so records removed from the end cannot be ruled out"
    if head == Head(last_seq, GENESIS if last is None else last["hash"], last_digest):
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
                    t = parse_time(record["time"])
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
