"""The coordinator's scheduler: recurring jobs from cron expressions, each run an ordinary job,
each finished run a report kept with the schedule's history.

A schedule holds a job template (a :class:`~fedstat.jobs.JobSpec`), a cron expression (UTC) and
its owner: the analyst who added it, whose certificate goes with every run's job offer so that
each site checks that analyst exactly as for a job they submit themselves (roles, consent,
differential-privacy budget). A thread wakes every ``tick_s`` seconds and

1. writes the report of every run whose job has finished (:mod:`coordinator.reports`);
2. starts every schedule whose next slot has come. The slot is claimed and the schedule moved to
   its next slot in one transaction, so a run is never started twice; slots missed while the
   coordinator was down collapse into ONE run (trigger ``missed``) when it is back, and a slot
   that comes while the previous run is still going is skipped (logged), never queued up.

Time is UTC wall-clock time from an injectable ``clock``; :meth:`Scheduler.tick` does one pass,
so tests drive the scheduler without threads or waiting.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fedstat.config import AccessConfig
from fedstat.errors import FedstatError, InputError, PolicyRefused
from fedstat.jobs import JobSpec
from fedstat.pki import RevocationList
from fedstat.privacy.modes import get_mode

from .cron import parse_cron
from .reports import build_report
from .store import JobRow, RunRow, ScheduleRow, Store

log = logging.getLogger("fedstat.coordinator")

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: A slot run later than this after its time (the coordinator was down) is reported as ``missed``.
LATE_S = 60.0
#: Most slots counted when saying how many were missed (a long outage of a every-minute schedule).
_COUNT_CAP = 100_000


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Scheduler:
    """Fires due schedules and writes reports of finished runs.

    Parameters
    ----------
    store : the coordinator's store (schedules, runs, jobs)
    submit : ``submit(spec, analyst, certificate=...) -> job_id``, the job engine's submit
    access : analyst roles; a run starts only while its owner still holds ``submit``
    results_dir : where finished jobs' files are (the reports compare ``.afreq`` tables)
    connected : names of the sites connected now
    min_sites : the coordinator's min_sites (how many sites a run waits for right after a restart)
    revocations : a run of an owner whose certificate was revoked fails instead of starting
    clock : UTC now, injectable for tests
    startup_grace_s : right after start, a due schedule waits up to this long for its sites to
        reconnect (the sites of its previous run, or ``min_sites`` sites)
    """

    def __init__(
        self,
        store: Store,
        submit: Callable[..., str],
        *,
        access: AccessConfig,
        results_dir: Path,
        connected: Callable[[], Iterable[str]] = frozenset,
        min_sites: int = 3,
        revocations: RevocationList | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        tick_s: float = 1.0,
        startup_grace_s: float = 60.0,
    ):
        self.store, self.submit, self.access, self.results_dir = store, submit, access, Path(results_dir)
        self.connected, self.min_sites, self.revocations = connected, min_sites, revocations
        self.clock, self.tick_s, self.startup_grace_s = clock, tick_s, startup_grace_s
        self._lock = threading.RLock()  # one pass or run-now at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: dt.datetime | None = None

    # --- what analysts do -------------------------------------------------------------------

    def add(
        self, owner: str, name: str, cron: str, spec: JobSpec, *, certificate: bytes, signature: bytes = b""
    ) -> ScheduleRow:
        """Validate and store a schedule; its first run is at the cron expression's next slot."""
        if not _NAME_RE.match(name or ""):
            raise InputError(f"schedule name {name!r} must be 1-64 letters, digits, _ . - (e.g. weekly-afreq)")
        parsed = parse_cron(cron)
        spec = spec.validated()
        if get_mode(spec.privacy).needs_public_key:
            raise InputError(
                f"--privacy {spec.privacy} cannot be scheduled: its totals are decrypted by the submitting "
                "analyst's running client, and a scheduled run has none; use secagg or dp"
            )
        nxt = parsed.next_after(self.clock())
        row = self.store.create_schedule(
            owner, name, parsed.text, spec.to_json(), certificate=certificate, next_run_at=iso(nxt), signature=signature
        )
        log.info("schedule %s (%s) added by %s: %r, first run %s", row.name, row.id, owner, row.cron, row.next_run_at)
        return row

    def remove(self, schedule: ScheduleRow) -> None:
        """Stop a schedule; its reports stay, and a run in progress still gets its report."""
        self.store.delete_schedule(schedule.id)
        log.info("schedule %s (%s) of %s removed", schedule.name, schedule.id, schedule.owner)

    def run_now(self, schedule: ScheduleRow) -> RunRow:
        """Start a run at once (trigger ``run-now``); the schedule's slots are unchanged."""
        with self._lock:
            busy = self.store.list_runs(schedule_id=schedule.id, unfinished=True)
            if busy:
                raise PolicyRefused(
                    f"run {busy[0].run_no} of schedule {schedule.name} is still going (job {busy[0].job_id or 'starting'}); "
                    "wait for its report"
                )
            now = iso(self.clock())
            run = self.store.claim_run(schedule, trigger="run-now", slot=now, fired_at=now)
            if run is None:
                raise InputError(f"schedule {schedule.name} was removed")
            self._submit(run, schedule)
            return self.store.get_run(run.id)

    # --- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._started = self.clock()
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad pass; it is logged
                log.exception("scheduler pass failed")

    def _recover(self) -> None:
        """Runs claimed by a previous process that crashed before submitting their job: submit now."""
        for run in self.store.list_runs(unfinished=True):
            if not run.job_id:
                try:
                    schedule = self.store.get_schedule(run.schedule_id)
                except InputError:
                    self._finish(run, None, spec={}, error="the schedule was removed before its run could start")
                    continue
                self._submit(run, schedule)

    def tick(self) -> None:
        """One pass: reports of finished runs, then due schedules."""
        with self._lock:
            now = self.clock()
            self._collect_reports()
            for schedule in self.store.list_schedules():
                if parse_iso(schedule.next_run_at) <= now and self._ready(schedule, now):
                    self._fire(schedule, now)

    # --- internals ----------------------------------------------------------------------------

    def _ready(self, schedule: ScheduleRow, now: dt.datetime) -> bool:
        """After a restart, wait (up to the grace period) until the sites a run needs are back."""
        if self._started is None or (now - self._started).total_seconds() >= self.startup_grace_s:
            return True
        connected = set(self.connected())
        expected = set(schedule.spec.get("sites") or ())
        if not expected:
            last = self.store.previous_done_run(schedule.id, schedule.runs + 1)
            if last is not None and last.report is not None:
                expected = {s for s, v in last.report["sites"].items() if v.get("participants")}
        return expected <= connected if expected else len(connected) >= self.min_sites

    def _fire(self, schedule: ScheduleRow, now: dt.datetime) -> None:
        cron = parse_cron(schedule.cron)
        due = parse_iso(schedule.next_run_at)
        slots, last, t = 1, due, due
        while slots < _COUNT_CAP:
            t = cron.next_after(t)
            if t > now:
                break
            slots, last = slots + 1, t
        nxt = cron.next_after(now)
        busy = self.store.list_runs(schedule_id=schedule.id, unfinished=True)
        if busy:
            if self.store.advance_schedule(schedule.id, expected=schedule.next_run_at, next_run_at=iso(nxt)):
                log.warning(
                    "schedule %s (%s): slot %s skipped: run %d (job %s) is still going",
                    schedule.name,
                    schedule.id,
                    iso(last),
                    busy[0].run_no,
                    busy[0].job_id,
                )
            return
        late = slots > 1 or (now - due).total_seconds() > LATE_S
        run = self.store.claim_run(
            schedule,
            trigger="missed" if late else "schedule",
            slot=iso(last),
            fired_at=iso(now),
            expected_next=schedule.next_run_at,
            next_run_at=iso(nxt),
        )
        if run is None:
            return
        if late:
            log.warning(
                "schedule %s (%s): %d slot(s) from %s to %s were missed (the coordinator was down); running once now",
                schedule.name,
                schedule.id,
                slots,
                iso(due),
                iso(last),
            )
        self._submit(run, schedule, missed=slots if late else 0)

    def _submit(self, run: RunRow, schedule: ScheduleRow, *, missed: int = 0) -> None:
        owner = schedule.owner
        try:
            if "submit" not in self.access.roles(owner):
                raise PolicyRefused(
                    f"the schedule's owner {owner} no longer holds the role 'submit' on this coordinator"
                )
            if self.revocations is not None and schedule.owner_cert and self._revoked(schedule.owner_cert):
                raise PolicyRefused(f"the certificate of the schedule's owner {owner} has been revoked")
            job_id = self.submit(
                JobSpec.from_json(schedule.spec),
                owner,
                certificate=schedule.owner_cert,
                signature=schedule.spec_signature,
            )
        except FedstatError as exc:
            log.warning("schedule %s (%s): run %d not started: %s", schedule.name, schedule.id, run.run_no, exc)
            self._finish(run, None, spec=schedule.spec, error=f"the run could not start: {exc}")
            return
        self.store.set_run_job(run.id, job_id)
        why = {"schedule": f"slot {run.slot}", "run-now": "run now"}.get(
            run.trigger, f"{missed} slot(s) missed while the coordinator was down, the last {run.slot}; run once"
        )
        self.store.log(job_id, f"run {run.run_no} of schedule {schedule.name} ({schedule.id}): {why}")
        log.info("schedule %s (%s): run %d started as job %s", schedule.name, schedule.id, run.run_no, job_id)

    def _revoked(self, pem: bytes) -> bool:
        assert self.revocations is not None
        try:
            return self.revocations.is_revoked_pem(pem)
        except (FedstatError, ValueError):
            return True  # an unreadable CRL or certificate: fail closed

    def _collect_reports(self) -> None:
        for run in self.store.list_runs(unfinished=True):
            if not run.job_id:
                continue
            job = self.store.get_job(run.job_id)
            if job.finished:
                self._finish(run, job, spec=job.spec)

    def _finish(self, run: RunRow, job: JobRow | None, *, spec: dict[str, Any], error: str = "") -> None:
        finished_at = iso(self.clock())
        report = build_report(
            run,
            job,
            spec=spec,
            previous=self.store.previous_done_run(run.schedule_id, run.run_no),
            results_dir=self.results_dir,
            finished_at=finished_at,
            error=error,
        )
        self.store.finish_run(run.id, report["state"], error=report["error"], finished_at=finished_at, report=report)
        log.info("report %s written: schedule %s run %d %s", run.id, run.schedule_name, run.run_no, report["state"])
