"""The coordinator's state: one embedded SQLite database (WAL) for jobs, per-site status and logs.

Every state change of a job is written here before it is acted on, so a restarted coordinator
knows what was running. Job specs are stored as JSON (never pickle). Nothing here holds a
participant-level value: only job specs, aggregate counts and progress.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.audit_head import HeadAlarm, SignedHead, classify, head_from_json, head_to_json
from fedstat.errors import InputError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"
FINISHED = (DONE, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    analyst TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    round INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    result_files TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_sites (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    cohort_size INTEGER NOT NULL DEFAULT 0,
    blocks_done INTEGER NOT NULL DEFAULT 0,
    blocks_total INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, site)
);
CREATE TABLE IF NOT EXISTS job_log (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    ts TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_log_job ON job_log(job_id);
CREATE TABLE IF NOT EXISTS rounds (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    computation TEXT NOT NULL,
    participants TEXT NOT NULL,
    seconds REAL NOT NULL,
    finished_at TEXT NOT NULL,
    totals BLOB,
    PRIMARY KEY (job_id, round)
);
CREATE INDEX IF NOT EXISTS rounds_finished ON rounds(finished_at);
CREATE TABLE IF NOT EXISTS sites (
    name TEXT PRIMARY KEY,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    cron TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    owner_cert TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    next_run_at TEXT NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    id TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    schedule_name TEXT NOT NULL,
    owner TEXT NOT NULL,
    run_no INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    slot TEXT NOT NULL,
    fired_at TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    report_json TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS schedule_runs_schedule ON schedule_runs(schedule_id, run_no);
-- signed audit heads (fedstat.audit_head): the latest verified head per site, and every head that
-- could not replace it (a proof that the site's log was cut or rewritten), kept as evidence
CREATE TABLE IF NOT EXISTS audit_heads (
    site TEXT PRIMARY KEY,
    head_json TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head_alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    kind TEXT NOT NULL,
    kept_json TEXT NOT NULL DEFAULT '',
    offending_json TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    resolved_at TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_head_alarms_site ON audit_head_alarms(site, resolved_at);
"""


#: Job columns added after the first release, with their declarations.
_JOB_COLUMNS_ADDED = {
    "analyst_cert": "TEXT NOT NULL DEFAULT ''",  # the submitter's certificate (PEM), forwarded in offers
    "attempt": "INTEGER NOT NULL DEFAULT 0",  # the last round attempt used; a resumed job goes on above it
    "variants_digest": "TEXT NOT NULL DEFAULT ''",  # the harmonized variant list, checked on resume
    "spec_signature": "TEXT NOT NULL DEFAULT ''",  # hex: the analyst's signature of the spec, forwarded in offers
}
#: Schedule columns added after the first release.
_SCHEDULE_COLUMNS_ADDED = {
    "spec_signature": "TEXT NOT NULL DEFAULT ''",  # hex: the owner's signature of the template
}
#: job_sites columns added after the first release.
_SITE_COLUMNS_ADDED = {
    # cohort_size is a multiple of it as the site reported it (0: withheld under dp; see fedstat.counts)
    "count_granularity": "INTEGER NOT NULL DEFAULT 1",
    "cohort_fingerprint": "TEXT NOT NULL DEFAULT ''",  # the site's keyed cohort fingerprint, checked on resume
}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_job_id() -> str:
    """Sortable, unguessable job id, e.g. ``20261121-081502-3fa9c1``."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(frozen=True)
class SiteRow:
    site: str
    state: str
    detail: str
    cohort_size: int  # as the site reported it: a multiple of count_granularity (fedstat.counts)
    blocks_done: int
    blocks_total: int
    count_granularity: int = 1
    cohort_fingerprint: str = ""


@dataclass(frozen=True)
class JobRow:
    id: str
    analyst: str
    spec: dict[str, Any]
    state: str
    phase: str
    round: int
    error: str
    result_files: tuple[str, ...]
    created_at: str
    updated_at: str
    seq: int
    sites: tuple[SiteRow, ...] = field(default=())
    log: tuple[str, ...] = field(default=())

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


#: States of a schedule's run: PENDING (claimed, job not yet submitted), RUNNING (its job is
#: unfinished), then its job's final state, with the report written.
PENDING = "PENDING"


@dataclass(frozen=True)
class ScheduleRow:
    """A recurring job: its cron expression, the job template and its owner (who it runs as)."""

    id: str
    owner: str
    name: str
    cron: str
    spec: dict[str, Any]
    owner_cert: bytes
    created_at: str
    next_run_at: str  # ISO 8601 UTC: the next slot not yet run
    runs: int  # runs so far (scheduled, missed and run-now)
    spec_signature: bytes = b""  # the owner's signature of the template (sites verify it on every run)


@dataclass(frozen=True)
class RunRow:
    """One run of a schedule and, once its job has finished, its report (``report`` is JSON)."""

    id: str  # the report id
    schedule_id: str
    schedule_name: str
    owner: str
    run_no: int
    trigger: str  # "schedule", "missed" (run late after the coordinator was down) or "run-now"
    slot: str  # the cron slot it ran for (the request time for run-now)
    fired_at: str
    job_id: str
    state: str
    error: str
    finished_at: str
    report: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class Store:
    """Thread-safe access to the coordinator database. One connection, serialised by a lock."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed round survives a power cut
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        for table, added in (
            ("jobs", _JOB_COLUMNS_ADDED),
            ("schedules", _SCHEDULE_COLUMNS_ADDED),
            ("job_sites", _SITE_COLUMNS_ADDED),
        ):  # databases made by earlier versions
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for column, decl in added.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- jobs ---------------------------------------------------------------------------

    def create_job(
        self, analyst: str, spec: dict[str, Any], *, certificate: bytes = b"", signature: bytes = b""
    ) -> str:
        job_id, ts = new_job_id(), now_iso()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, analyst, spec_json, state, phase, created_at, updated_at, analyst_cert, "
                "spec_signature) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (
                    job_id,
                    analyst,
                    json.dumps(spec, sort_keys=True),
                    QUEUED,
                    ts,
                    ts,
                    certificate.decode(),
                    signature.hex(),
                ),
            )
        return job_id

    def job_extra(self, job_id: str) -> tuple[bytes, int, str, bytes]:
        """(analyst certificate PEM, last round attempt, harmonized variants digest, spec signature)."""
        with self._lock:
            r = self._db.execute(
                "SELECT analyst_cert, attempt, variants_digest, spec_signature FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if r is None:
            raise InputError(f"no job with id {job_id!r}")
        return r[0].encode(), int(r[1]), r[2], bytes.fromhex(r[3])

    def set_job_extra(self, job_id: str, *, attempt: int | None = None, variants_digest: str | None = None) -> None:
        with self._tx() as db:
            if attempt is not None:
                db.execute("UPDATE jobs SET attempt = MAX(attempt, ?) WHERE id = ?", (attempt, job_id))
            if variants_digest is not None:
                db.execute("UPDATE jobs SET variants_digest = ? WHERE id = ?", (variants_digest, job_id))

    # --- rounds -------------------------------------------------------------------------

    def save_round(
        self,
        job_id: str,
        round_no: int,
        *,
        attempt: int,
        computation: str,
        participants: tuple[str, ...],
        seconds: float,
        totals: dict[str, Any],
    ) -> None:
        """Record a completed round with its global totals (aggregates over every participating
        site, never one site's sums), so a restarted coordinator resumes after it."""
        buf = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in totals.items()}  # numeric; loaded without pickle
        np.savez(buf, **arrays)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO rounds (job_id, round, attempt, computation, participants, seconds, "
                "finished_at, totals) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    round_no,
                    attempt,
                    computation,
                    json.dumps(list(participants)),
                    seconds,
                    now_iso(),
                    buf.getvalue(),
                ),
            )
            db.execute("UPDATE jobs SET attempt = MAX(attempt, ?) WHERE id = ?", (attempt, job_id))

    def completed_rounds(self, job_id: str) -> list[tuple[int, str, tuple[str, ...], dict[str, Any]]]:
        """(round, computation, participants, totals) of every completed round, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT round, computation, participants, totals FROM rounds WHERE job_id = ? AND totals IS NOT NULL "
                "ORDER BY round",
                (job_id,),
            ).fetchall()
        out = []
        for round_no, computation, participants, blob in rows:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                totals = {k: z[k] for k in z.files}
            out.append((int(round_no), computation, tuple(json.loads(participants)), totals))
        return out

    def drop_round_totals(self, job_id: str) -> None:
        """The job is finished: its intermediate totals are no longer needed (latencies stay)."""
        with self._tx() as db:
            db.execute("UPDATE rounds SET totals = NULL WHERE job_id = ?", (job_id,))

    def round_latencies(self, *, hours: float = 24) -> list[tuple[str, int, float, float, float]]:
        """(computation, count, mean s, p95 s, max s) of rounds completed in the last ``hours``."""
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat(timespec="seconds")
        since = since.replace("+00:00", "Z")
        with self._lock:
            rows = self._db.execute(
                "SELECT computation, seconds FROM rounds WHERE finished_at >= ? ORDER BY computation", (since,)
            ).fetchall()
        by: dict[str, list[float]] = {}
        for c, sec in rows:
            by.setdefault(c, []).append(float(sec))
        out = []
        for c, xs in sorted(by.items()):
            xs.sort()
            p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
            out.append((c, len(xs), sum(xs) / len(xs), p95, xs[-1]))
        return out

    def count_jobs_by_state(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = {s: 0 for s in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)}
        counts.update({s: int(n) for s, n in rows})
        return counts

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set job columns (state, phase, round, error, result_files) and bump its sequence."""
        allowed = {"state", "phase", "round", "error", "result_files"}
        if not fields.keys() <= allowed:
            raise ValueError(f"cannot update {sorted(fields.keys() - allowed)}")
        if "result_files" in fields:
            fields["result_files"] = json.dumps(list(fields["result_files"]))
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET {sets}, updated_at = ?, seq = seq + 1 WHERE id = ?",  # noqa: S608 - keys checked above
                (*fields.values(), now_iso(), job_id),
            )

    def finish_job(self, job_id: str, state: str, *, error: str = "") -> bool:
        """Move an unfinished job to a final state; False when it had already finished."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, error = ?, phase = ?, updated_at = ?, seq = seq + 1 "
                "WHERE id = ? AND state NOT IN (?, ?, ?)",
                (state, error, state.lower(), now_iso(), job_id, *FINISHED),
            )
            return cur.rowcount == 1

    def set_site(self, job_id: str, site: str, **fields: Any) -> None:
        allowed = {"state", "detail", "cohort_size", "blocks_done", "blocks_total", "count_granularity"}
        allowed.add("cohort_fingerprint")
        if not fields.keys() <= allowed:
            raise ValueError(f"cannot update {sorted(fields.keys() - allowed)}")
        with self._tx() as db:
            db.execute(
                "INSERT INTO job_sites (job_id, site, state) VALUES (?, ?, ?) ON CONFLICT(job_id, site) DO NOTHING",
                (job_id, site, fields.get("state", "PENDING")),
            )
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                db.execute(
                    f"UPDATE job_sites SET {sets} WHERE job_id = ? AND site = ?",  # noqa: S608
                    (*fields.values(), job_id, site),
                )
            db.execute("UPDATE jobs SET seq = seq + 1, updated_at = ? WHERE id = ?", (now_iso(), job_id))

    def log(self, job_id: str, line: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO job_log (job_id, ts, line) VALUES (?, ?, ?)", (job_id, now_iso(), line))
            db.execute("UPDATE jobs SET seq = seq + 1 WHERE id = ?", (job_id,))

    def _row(self, r: tuple[Any, ...], *, detail: bool) -> JobRow:
        job = JobRow(
            id=r[0],
            analyst=r[1],
            spec=json.loads(r[2]),
            state=r[3],
            phase=r[4],
            round=r[5],
            error=r[6],
            result_files=tuple(json.loads(r[7])),
            created_at=r[8],
            updated_at=r[9],
            seq=r[10],
        )
        if not detail:
            return job
        sites = tuple(
            SiteRow(*s)
            for s in self._db.execute(
                "SELECT site, state, detail, cohort_size, blocks_done, blocks_total, count_granularity, "
                "cohort_fingerprint FROM job_sites "
                "WHERE job_id = ? ORDER BY site",
                (job.id,),
            )
        )
        log = tuple(
            f"{ts} {line}"
            for ts, line in self._db.execute("SELECT ts, line FROM job_log WHERE job_id = ? ORDER BY rowid", (job.id,))
        )
        return JobRow(**{**job.__dict__, "sites": sites, "log": log})

    _COLS = "id, analyst, spec_json, state, phase, round, error, result_files, created_at, updated_at, seq"

    def get_job(self, job_id: str) -> JobRow:
        with self._lock:
            r = self._db.execute(f"SELECT {self._COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if r is None:
                raise InputError(f"no job with id {job_id!r}")
            return self._row(r, detail=True)

    def job_seq(self, job_id: str) -> int:
        with self._lock:
            r = self._db.execute("SELECT seq FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if r is None:
            raise InputError(f"no job with id {job_id!r}")
        return int(r[0])

    def list_jobs(self, *, limit: int = 50, analyst: str | None = None, state: str | None = None) -> list[JobRow]:
        conds, args = [], []
        if analyst:
            conds.append("analyst = ?")
            args.append(analyst)
        if state:
            conds.append("state = ?")
            args.append(state)
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLS} FROM jobs {where} ORDER BY created_at DESC, id DESC LIMIT ?",  # noqa: S608
                (*args, limit),
            ).fetchall()
            return [self._row(r, detail=True) for r in rows]

    def unfinished_jobs(self) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM jobs WHERE state IN (?, ?) ORDER BY created_at", (QUEUED, RUNNING)
                )
            ]

    # --- sites --------------------------------------------------------------------------

    def site_seen(self, name: str) -> None:
        ts = now_iso()
        with self._tx() as db:
            db.execute(
                "INSERT INTO sites (name, first_seen, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_seen = excluded.last_seen",
                (name, ts, ts),
            )

    # --- signed audit heads of the sites -------------------------------------------------

    def put_audit_head(self, site: str, head: SignedHead) -> str:
        """Keep ``site``'s verified head as its latest, unless :func:`fedstat.audit_head.classify` finds
        it cannot replace the kept one: then the kept head stays and the new one is kept beside it as
        an alarm (one open alarm per site and kind). While an alarm is open the kept head is frozen.

        Returns the new alarm's kind, ``"open"`` (not kept: an alarm is open), ``"stale"`` (not kept: a
        lower seq signed before the kept head) or ``""`` (kept).
        """
        return self.put_audit_heads([(site, head)])[0]

    def put_audit_heads(self, heads: list[tuple[str, SignedHead]]) -> list[str]:
        """:meth:`put_audit_head` for each ``(site, head)`` in order, in one transaction (one fsync)."""
        with self._tx() as db:
            return [self._put_audit_head(db, site, head) for site, head in heads]

    @staticmethod
    def _put_audit_head(db: sqlite3.Connection, site: str, head: SignedHead) -> str:
        row = db.execute("SELECT head_json FROM audit_heads WHERE site = ?", (site,)).fetchone()
        kept = None if row is None else head_from_json(json.loads(row[0]))
        kinds = {
            r[0] for r in db.execute("SELECT kind FROM audit_head_alarms WHERE site = ? AND resolved_at = ''", (site,))
        }
        kind = classify(kept, head)
        if kind == "stale":  # an older head arriving late: the log held fewer records when it was signed
            return kind
        if kind:
            if kind in kinds:
                return "open"
            db.execute(
                "INSERT INTO audit_head_alarms (site, kind, kept_json, offending_json, at) VALUES (?, ?, ?, ?, ?)",
                (site, kind, json.dumps(head_to_json(kept)) if kept else "", json.dumps(head_to_json(head)), now_iso()),
            )
            return kind
        if kinds:
            return "open"
        if kept is None or head.seq > kept.seq or head.time > kept.time:
            db.execute(
                "INSERT INTO audit_heads (site, head_json, updated_at) VALUES (?, ?, ?) ON CONFLICT(site) "
                "DO UPDATE SET head_json = excluded.head_json, updated_at = excluded.updated_at",
                (site, json.dumps(head_to_json(head)), now_iso()),
            )
        return ""

    def audit_heads(self) -> dict[str, SignedHead]:
        """The latest verified head kept for each site."""
        with self._lock:
            rows = self._db.execute("SELECT site, head_json FROM audit_heads ORDER BY site").fetchall()
        return {site: head_from_json(json.loads(text)) for site, text in rows}

    def audit_head_alarms(self, *, site: str | None = None, open_only: bool = False) -> list[HeadAlarm]:
        """Alarms in the order they were raised."""
        conds, args = [], []
        if site is not None:
            conds.append("site = ?")
            args.append(site)
        if open_only:
            conds.append("resolved_at = ''")
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT site, kind, at, kept_json, offending_json, resolved_at, note FROM audit_head_alarms "  # noqa: S608
                f"{where} ORDER BY id",
                args,
            ).fetchall()
        return [
            HeadAlarm(
                site=r[0],
                kind=r[1],
                at=r[2],
                kept=head_from_json(json.loads(r[3])) if r[3] else None,
                offending=head_from_json(json.loads(r[4])) if r[4] else None,
                resolved_at=r[5],
                note=r[6],
            )
            for r in rows
        ]

    def resolve_audit_alarms(self, site: str, note: str, *, new_log: bool = False) -> int:
        """The operator has acted on ``site``'s alarms: they are resolved with ``note`` (the kept head
        is unfrozen). With ``new_log`` the consortium accepts that the site's audit log starts again:
        the kept head also moves to an alarm of kind ``reset`` (evidence) and the site's next head is
        kept. Returns the number of open alarms resolved; InputError when there is nothing to act on."""
        ts = now_iso()
        with self._tx() as db:
            row = db.execute("SELECT head_json FROM audit_heads WHERE site = ?", (site,)).fetchone()
            n = db.execute(
                "UPDATE audit_head_alarms SET resolved_at = ?, note = ? WHERE site = ? AND resolved_at = ''",
                (ts, note, site),
            ).rowcount
            if n == 0 and (row is None or not new_log):
                raise InputError(
                    f"site {site!r} has no open audit alarm"
                    + ("" if row is not None else " and the coordinator keeps no audit head for it")
                )
            if new_log and row is not None:
                db.execute(
                    "INSERT INTO audit_head_alarms (site, kind, kept_json, at, resolved_at, note) "
                    "VALUES (?, 'reset', ?, ?, ?, ?)",
                    (site, row[0], ts, ts, note),
                )
                db.execute("DELETE FROM audit_heads WHERE site = ?", (site,))
        return n

    # --- schedules and their reports ------------------------------------------------------

    _SCHED_COLS = "id, owner, name, cron, spec_json, owner_cert, created_at, next_run_at, runs, spec_signature"
    _RUN_COLS = (
        "id, schedule_id, schedule_name, owner, run_no, trigger, slot, fired_at, job_id, state, error, "
        "finished_at, report_json"
    )

    @staticmethod
    def _schedule(r: tuple[Any, ...]) -> ScheduleRow:
        return ScheduleRow(
            r[0], r[1], r[2], r[3], json.loads(r[4]), r[5].encode(), r[6], r[7], int(r[8]), bytes.fromhex(r[9])
        )

    @staticmethod
    def _run(r: tuple[Any, ...]) -> RunRow:
        return RunRow(*(*r[:4], int(r[4]), *r[5:12], json.loads(r[12]) if r[12] else None))

    def create_schedule(
        self,
        owner: str,
        name: str,
        cron: str,
        spec: dict[str, Any],
        *,
        certificate: bytes,
        next_run_at: str,
        signature: bytes = b"",
    ) -> ScheduleRow:
        schedule_id = "sch-" + secrets.token_hex(4)
        try:
            with self._tx() as db:
                db.execute(
                    f"INSERT INTO schedules ({self._SCHED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",  # noqa: S608
                    (
                        schedule_id,
                        owner,
                        name,
                        cron,
                        json.dumps(spec, sort_keys=True),
                        certificate.decode(),
                        now_iso(),
                        next_run_at,
                        signature.hex(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise InputError(
                f"you already have a schedule named {name!r}; remove it first or pick another name"
            ) from None
        return self.get_schedule(schedule_id)

    def get_schedule(self, schedule_id: str) -> ScheduleRow:
        with self._lock:
            r = self._db.execute(f"SELECT {self._SCHED_COLS} FROM schedules WHERE id = ?", (schedule_id,)).fetchone()  # noqa: S608
        if r is None:
            raise InputError(f"no schedule with id {schedule_id!r}")
        return self._schedule(r)

    def find_schedule(self, owner: str, name_or_id: str) -> ScheduleRow | None:
        """A schedule by id (anyone's), else by name among ``owner``'s."""
        with self._lock:
            r = self._db.execute(
                f"SELECT {self._SCHED_COLS} FROM schedules WHERE id = ? OR (owner = ? AND name = ?) "  # noqa: S608
                "ORDER BY id = ? DESC LIMIT 1",
                (name_or_id, owner, name_or_id, name_or_id),
            ).fetchone()
        return None if r is None else self._schedule(r)

    def list_schedules(self, *, owner: str | None = None) -> list[ScheduleRow]:
        where, args = ("WHERE owner = ?", (owner,)) if owner else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._SCHED_COLS} FROM schedules {where} ORDER BY owner, name",
                args,  # noqa: S608
            ).fetchall()
        return [self._schedule(r) for r in rows]

    def delete_schedule(self, schedule_id: str) -> None:
        """Forget a schedule; its reports stay (they carry its name and owner)."""
        with self._tx() as db:
            db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def advance_schedule(self, schedule_id: str, *, expected: str, next_run_at: str) -> bool:
        """Move a schedule's next slot on, if it is still ``expected`` (False: someone else did)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE schedules SET next_run_at = ? WHERE id = ? AND next_run_at = ?",
                (next_run_at, schedule_id, expected),
            )
            return cur.rowcount == 1

    def claim_run(
        self,
        schedule: ScheduleRow,
        *,
        trigger: str,
        slot: str,
        fired_at: str,
        expected_next: str | None = None,
        next_run_at: str | None = None,
    ) -> RunRow | None:
        """Record a new run of ``schedule`` (state PENDING) and, for a slot, move the schedule to its
        next slot in the same transaction, so a run is never started twice nor lost on a crash.
        None when the slot was already claimed or the schedule was removed."""
        run_id = "rpt-" + new_job_id()
        with self._tx() as db:
            if next_run_at is not None:
                cur = db.execute(
                    "UPDATE schedules SET next_run_at = ?, runs = runs + 1 WHERE id = ? AND next_run_at = ?",
                    (next_run_at, schedule.id, expected_next),
                )
            else:
                cur = db.execute("UPDATE schedules SET runs = runs + 1 WHERE id = ?", (schedule.id,))
            if cur.rowcount != 1:
                return None
            (run_no,) = db.execute("SELECT runs FROM schedules WHERE id = ?", (schedule.id,)).fetchone()
            db.execute(
                f"INSERT INTO schedule_runs ({self._RUN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, '', '', '')",  # noqa: S608
                (run_id, schedule.id, schedule.name, schedule.owner, run_no, trigger, slot, fired_at, PENDING),
            )
        return self.get_run(run_id)

    def set_run_job(self, run_id: str, job_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE schedule_runs SET job_id = ?, state = ? WHERE id = ?", (job_id, RUNNING, run_id))

    def finish_run(self, run_id: str, state: str, *, error: str, finished_at: str, report: dict[str, Any]) -> None:
        """Store a run's final state and its report, in one transaction (a report is whole or absent)."""
        with self._tx() as db:
            db.execute(
                "UPDATE schedule_runs SET state = ?, error = ?, finished_at = ?, report_json = ? WHERE id = ?",
                (state, error, finished_at, json.dumps(report, sort_keys=True), run_id),
            )

    def get_run(self, run_id: str) -> RunRow:
        with self._lock:
            r = self._db.execute(f"SELECT {self._RUN_COLS} FROM schedule_runs WHERE id = ?", (run_id,)).fetchone()  # noqa: S608
        if r is None:
            raise InputError(f"no report with id {run_id!r}")
        return self._run(r)

    def list_runs(
        self,
        *,
        owner: str | None = None,
        schedule_name: str | None = None,
        schedule_id: str | None = None,
        unfinished: bool = False,
        limit: int = 1000,
    ) -> list[RunRow]:
        """Runs newest first (``unfinished``: only PENDING and RUNNING ones, oldest first)."""
        conds, args = [], []
        for col, value in (("owner", owner), ("schedule_name", schedule_name), ("schedule_id", schedule_id)):
            if value:
                conds.append(f"{col} = ?")
                args.append(value)
        if unfinished:
            conds.append("state IN (?, ?)")
            args += [PENDING, RUNNING]
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        order = "ASC" if unfinished else "DESC"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._RUN_COLS} FROM schedule_runs {where} ORDER BY fired_at {order}, run_no {order} LIMIT ?",  # noqa: S608
                (*args, limit),
            ).fetchall()
        return [self._run(r) for r in rows]

    def previous_done_run(self, schedule_id: str, run_no: int) -> RunRow | None:
        """The latest earlier run of the schedule whose job finished DONE (what a report compares with)."""
        with self._lock:
            r = self._db.execute(
                f"SELECT {self._RUN_COLS} FROM schedule_runs WHERE schedule_id = ? AND run_no < ? AND state = ? "  # noqa: S608
                "AND report_json != '' ORDER BY run_no DESC LIMIT 1",
                (schedule_id, run_no, DONE),
            ).fetchone()
        return None if r is None else self._run(r)
