"""Scheduled aggregate reports, without daemons: cron parsing and fire times, the scheduler's slots
(each once; missed ones once after a restart; skipped while a run goes on), and reports with
their change since the previous run, worked by hand. The real daemons: tests/test_schedule_e2e.py."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from coordinator.cron import parse_cron
from coordinator.reports import afreq_change, read_afreq, render_text, summary_line
from coordinator.scheduler import Scheduler
from coordinator.store import DONE, FAILED, Store
from fedstat.config import AccessConfig
from fedstat.errors import InputError, PolicyRefused
from fedstat.jobs import JobSpec
from fedstat.wire import analyst_pb2
from tests import test_access

ca, coordinator_with_access = test_access.ca, test_access.coordinator_with_access  # fixtures


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


# --- cron ----------------------------------------------------------------------------------


def test_parse_cron__lists_ranges_steps_names():
    c = parse_cron("*/20 1-10/3 5/10 JAN,jun-AUG MON-FRI")
    assert c.minutes == {0, 20, 40}
    assert c.hours == {1, 4, 7, 10}
    assert c.days == {5, 15, 25}
    assert c.months == {1, 6, 7, 8}
    assert c.weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * 7").weekdays == {0} == parse_cron("0 0 * * SUN").weekdays
    assert parse_cron("0,30 * * * *").minutes == {0, 30}


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", utc(2026, 3, 4, 10, 30), utc(2026, 3, 4, 11, 0)),
        ("@daily", utc(2026, 3, 4, 10, 30), utc(2026, 3, 5, 0, 0)),
        ("@midnight", utc(2026, 3, 4, 0, 0), utc(2026, 3, 5, 0, 0)),
        ("@weekly", utc(2026, 1, 1, 12, 0), utc(2026, 1, 4, 0, 0)),  # 2026-01-01 is a Thursday
        ("@monthly", utc(2026, 1, 31, 23, 59), utc(2026, 2, 1, 0, 0)),
        ("@yearly", utc(2026, 6, 1), utc(2027, 1, 1)),
    ],
)
def test_next_after__aliases(alias, after, expected):
    assert parse_cron(alias).next_after(after) == expected


def test_next_after__strictly_later_in_whole_minutes():
    every = parse_cron("* * * * *")
    assert every.next_after(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 1)
    assert every.next_after(dt.datetime(2026, 1, 1, 10, 0, 30, 5, tzinfo=dt.UTC)) == utc(2026, 1, 1, 10, 1)
    c = parse_cron("*/15 9-17 * * MON-FRI")
    times = [c.next_after(utc(2026, 1, 2, 17, 50))]  # a Friday, after the last slot of the day
    for _ in range(2):
        times.append(c.next_after(times[-1]))
    assert times == [utc(2026, 1, 5, 9, 0), utc(2026, 1, 5, 9, 15), utc(2026, 1, 5, 9, 30)]
    with pytest.raises(ValueError, match="timezone-aware"):
        every.next_after(dt.datetime(2026, 1, 1))


def test_next_after__day_of_month_or_day_of_week_as_vixie_cron():
    # both restricted: the 13th OR a Friday
    c = parse_cron("0 0 13 * FRI")
    t, got = utc(2026, 1, 1), []
    for _ in range(4):
        t = c.next_after(t)
        got.append(t.date())
    assert got == [dt.date(2026, 1, 2), dt.date(2026, 1, 9), dt.date(2026, 1, 13), dt.date(2026, 1, 16)]
    # only the day of month restricted: the 29th of February, i.e. the next leap year
    assert parse_cron("0 12 29 2 *").next_after(utc(2026, 1, 1)) == utc(2028, 2, 29, 12, 0)
    # "*/2" in the day-of-week field counts as unrestricted (as Vixie cron), so the 1st alone decides
    assert parse_cron("0 0 1 * */2").next_after(utc(2026, 1, 1)) == utc(2026, 2, 1)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "empty cron expression"),
        ("* * *", "has 3 field(s); expected 5: minute hour day-of-month month day-of-week"),
        ("60 * * * *", "cron minute field '60': 60 is out of range (allowed 0-59)"),
        ("* 24 * * *", "cron hour field '24': 24 is out of range (allowed 0-23)"),
        ("* * 0 * *", "cron day of month field '0': 0 is out of range (allowed 1-31)"),
        ("* * * 13 *", "cron month field '13': 13 is out of range (allowed 1-12 or JAN-DEC)"),
        ("* * * * 8", "cron day of week field '8': 8 is out of range (allowed 0-7 or SUN-SAT)"),
        ("*/0 * * * *", "cron minute field '*/0': step '0' must be a positive whole number"),
        ("5-1 * * * *", "cron minute field '5-1': range '5-1' runs backwards"),
        ("* * * FOO *", "cron month field 'FOO': 'FOO' is not a number or a name"),
        ("1,,2 * * * *", "cron minute field '1,,2': empty list item"),
        ("0 0 31 2 *", "never fires"),
        ("@fortnightly", "unknown cron alias '@fortnightly'"),
    ],
)
def test_parse_cron__errors_name_the_bad_field(expr, message):
    with pytest.raises(InputError) as info:
        parse_cron(expr)
    assert message in str(info.value)


# --- the scheduler --------------------------------------------------------------------------

FREQ = JobSpec(analyses=("freq",), out_name="f")


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Engine:
    """Stands in for the job engine: records each job in the store as submitted."""

    def __init__(self, store: Store):
        self.store, self.submitted = store, []

    def submit(self, spec: JobSpec, analyst: str, *, certificate: bytes = b"", signature: bytes = b"") -> str:
        job_id = self.store.create_job(analyst, spec.validated().to_json(), certificate=certificate)
        self.submitted.append((job_id, analyst, certificate))
        return job_id


def _scheduler(store: Store, clock: Clock, tmp_path: Path, **kw) -> tuple[Scheduler, Engine]:
    engine = Engine(store)
    kw.setdefault("access", AccessConfig())
    kw.setdefault("startup_grace_s", 0.0)
    return Scheduler(store, engine.submit, results_dir=tmp_path / "results", clock=clock, **kw), engine


def _finish_freq(
    store: Store, results: Path, job_id: str, sites: dict[str, int], rows: list[tuple[str, float, int]]
) -> None:
    """Finish a job DONE as the engine does: per-site counts, an .afreq table and provenance."""
    d = results / job_id
    d.mkdir(parents=True)
    lines = ["#CHROM\tID\tREF\tALT\tALT_FREQS\tOBS_CT"]
    lines += [f"1\t{vid}\tA\tG\t{freq:g}\t{obs}" for vid, freq, obs in rows]
    (d / "f.afreq").write_text("\n".join(lines) + "\n")
    prov = {
        "sites": {s: {"participants": n} for s, n in sites.items()},
        "participants_total": sum(sites.values()),
        "n_variants": len(rows),
    }
    (d / "f.provenance.json").write_text(json.dumps(prov))
    for s, n in sites.items():
        store.set_site(job_id, s, state="DONE", cohort_size=n)
    store.update_job(job_id, result_files=["f.afreq", "f.provenance.json"])
    assert store.finish_job(job_id, DONE)


def test_scheduler__each_slot_runs_once_as_the_owner(tmp_path):
    store, clock = Store(tmp_path / "db.sqlite"), Clock(utc(2026, 5, 1, 10, 5))
    sched, engine = _scheduler(store, clock, tmp_path)
    row = sched.add("alice", "hourly-freq", "@hourly", FREQ, certificate=b"PEM")
    assert row.next_run_at == "2026-05-01T11:00:00Z"
    clock.now = utc(2026, 5, 1, 10, 59, 59)
    sched.tick()
    assert engine.submitted == []
    clock.now = utc(2026, 5, 1, 11, 0, 0)
    sched.tick()
    clock.now = utc(2026, 5, 1, 11, 0, 30)
    sched.tick()
    assert [(a, c) for _, a, c in engine.submitted] == [("alice", b"PEM")]  # as the owner, with their certificate
    (run,) = store.list_runs()
    assert (run.run_no, run.trigger, run.slot, run.state) == (1, "schedule", "2026-05-01T11:00:00Z", "RUNNING")
    assert store.get_schedule(row.id).next_run_at == "2026-05-01T12:00:00Z"
    assert "run 1 of schedule hourly-freq" in store.get_job(run.job_id).log[-1]
    _finish_freq(store, tmp_path / "results", run.job_id, {"A": 10, "B": 20, "C": 30}, [("rs1", 0.5, 120)])
    clock.now = utc(2026, 5, 1, 12, 0, 5)
    sched.tick()
    assert len(engine.submitted) == 2
    runs = store.list_runs()
    assert [(r.run_no, r.state) for r in runs] == [(2, "RUNNING"), (1, "DONE")]
    assert runs[1].report["participants_total"] == 60 and runs[1].report["change"] is None


def test_scheduler__slots_missed_while_down_run_once_after_restart(tmp_path):
    db, clock = tmp_path / "db.sqlite", Clock(utc(2026, 5, 1, 10, 5))
    store = Store(db)
    sched, _ = _scheduler(store, clock, tmp_path)
    row = sched.add("alice", "hourly-freq", "0 * * * *", FREQ, certificate=b"PEM")
    store.close()  # the coordinator goes down at 10:05 and comes back at 15:30: 11, 12, 13, 14, 15 missed
    clock.now = utc(2026, 5, 1, 15, 30)
    store = Store(db)
    sched, engine = _scheduler(store, clock, tmp_path)
    sched.start()
    sched.stop()  # the thread is not needed; tick() is called below
    assert [s.name for s in store.list_schedules(owner="alice")] == ["hourly-freq"]  # it survived the restart
    sched.tick()
    clock.now = utc(2026, 5, 1, 15, 31)
    sched.tick()
    assert len(engine.submitted) == 1
    (run,) = store.list_runs()
    assert (run.trigger, run.slot, run.fired_at) == ("missed", "2026-05-01T15:00:00Z", "2026-05-01T15:30:00Z")
    assert store.get_schedule(row.id).next_run_at == "2026-05-01T16:00:00Z"
    assert "5 slot(s) missed while the coordinator was down, the last 2026-05-01T15:00:00Z; run once" in "\n".join(
        store.get_job(run.job_id).log
    )
    _finish_freq(store, tmp_path / "results", run.job_id, {"A": 1, "B": 1, "C": 1}, [("rs1", 0.5, 6)])
    clock.now = utc(2026, 5, 1, 16, 0)
    sched.tick()
    assert len(engine.submitted) == 2
    assert store.list_runs()[0].trigger == "schedule"


def test_scheduler__after_restart_waits_for_the_previous_runs_sites(tmp_path):
    store, clock = Store(tmp_path / "db.sqlite"), Clock(utc(2026, 5, 1, 10, 59))
    connected: set[str] = set()
    sched, engine = _scheduler(store, clock, tmp_path, connected=lambda: connected, startup_grace_s=60, min_sites=3)
    sched.add("alice", "s", "0 * * * *", FREQ, certificate=b"")
    clock.now = utc(2026, 5, 1, 11, 0, 10)
    sched._started = clock.now  # a start (as start() does) just after the slot
    sched.tick()
    connected.update({"A", "B"})
    sched.tick()
    assert engine.submitted == []  # fewer than min_sites are back
    connected.add("C")
    sched.tick()
    assert len(engine.submitted) == 1
    _finish_freq(store, tmp_path / "results", engine.submitted[0][0], {"A": 1, "B": 1, "C": 1}, [("rs1", 0.5, 6)])
    sched.tick()
    # a new start: the next run waits for A, B and C (its previous run's sites) until the grace ends
    clock.now = utc(2026, 5, 1, 12, 0, 1)
    sched._started = clock.now
    connected.clear()
    connected.update({"A", "B", "D"})
    sched.tick()
    assert len(engine.submitted) == 1
    clock.now = utc(2026, 5, 1, 12, 1, 1)  # the grace is over: run with whoever is there
    sched.tick()
    assert len(engine.submitted) == 2


def test_scheduler__a_slot_is_skipped_while_the_previous_run_goes_on(tmp_path):
    store, clock = Store(tmp_path / "db.sqlite"), Clock(utc(2026, 5, 1, 10, 0, 30))
    sched, engine = _scheduler(store, clock, tmp_path)
    row = sched.add("alice", "every-minute", "* * * * *", FREQ, certificate=b"")
    for minute in (1, 2, 3):
        clock.now = utc(2026, 5, 1, 10, minute, 1)
        sched.tick()
    assert len(engine.submitted) == 1 and store.get_schedule(row.id).next_run_at == "2026-05-01T10:04:00Z"
    with pytest.raises(PolicyRefused, match="run 1 of schedule every-minute is still going"):
        sched.run_now(store.get_schedule(row.id))


def test_scheduler__add_validates_and_run_now_reports_an_owner_without_the_submit_role(tmp_path):
    store, clock = Store(tmp_path / "db.sqlite"), Clock(utc(2026, 5, 1, 10, 0))
    sched, engine = _scheduler(store, clock, tmp_path, access=AccessConfig(analysts=(("bob", ("view-own",)),)))
    with pytest.raises(InputError, match="cron minute field '99'"):
        sched.add("alice", "x", "99 * * * *", FREQ, certificate=b"")
    with pytest.raises(InputError, match="schedule name 'a b' must be"):
        sched.add("alice", "a b", "@daily", FREQ, certificate=b"")
    with pytest.raises(InputError, match="--privacy paillier cannot be scheduled"):
        sched.add("alice", "p", "@daily", JobSpec(analyses=("freq",), privacy="paillier"), certificate=b"")
    with pytest.raises(InputError, match="no analysis requested"):
        sched.add("alice", "n", "@daily", JobSpec(analyses=()), certificate=b"")
    sched.add("alice", "daily", "@daily", FREQ, certificate=b"")
    with pytest.raises(InputError, match="you already have a schedule named 'daily'"):
        sched.add("alice", "daily", "@hourly", FREQ, certificate=b"")
    bobs = sched.add("bob", "daily", "@daily", FREQ, certificate=b"")  # names are per owner
    assert store.find_schedule("alice", bobs.id) == bobs and store.find_schedule("alice", "daily").owner == "alice"
    run = sched.run_now(bobs)  # bob has lost the submit role since he added it
    assert engine.submitted == [] and run.state == FAILED
    assert (
        run.report["error"]
        == "the run could not start: the schedule's owner bob no longer holds the role 'submit' on this coordinator"
    )
    assert "FAILED: the run could not start: the schedule's owner bob no longer holds" in render_text(run.report)


# --- reports ------------------------------------------------------------------------------


def test_afreq_change__worked_by_hand(tmp_path):
    before = tmp_path / "a.afreq"
    after = tmp_path / "b.afreq"
    before.write_text(
        "#CHROM\tID\tREF\tALT\tALT_FREQS\tOBS_CT\n1\trs1\tA\tG\t0.5\t100\n1\trs2\tC\tT\t0.1\t100\n"
        "1\trs3\tG\tA\tnan\t0\n1\trs4\tA\tC\t0.2\t100\n"
    )
    after.write_text(
        "#CHROM\tID\tREF\tALT\tALT_FREQS\tOBS_CT\n1\trs1\tA\tG\t0.5\t140\n1\trs2\tC\tT\t0.175\t140\n"
        "1\trs3\tG\tA\tnan\t0\n1\trs5\tT\tG\t0.3\t140\n"
    )
    ch = afreq_change(read_afreq(before), read_afreq(after))
    assert ch == {
        "variants_before": 4,
        "variants_after": 4,
        "variants_in_both": 3,
        "variants_added": 1,
        "variants_removed": 1,
        "alt_freq_changed": 1,  # rs2 only: rs1 unchanged, rs3 nan -> nan
        "max_abs_delta_alt_freq": pytest.approx(0.075),
        "max_delta_variant": "rs2",
        "alt_freq_before": 0.1,
        "alt_freq_after": 0.175,
        "obs_ct_total_before": 300,
        "obs_ct_total_after": 420,
        "obs_ct_changed": 2,
        "max_abs_delta_obs_ct": 40,
    }


def test_reports__change_since_the_last_successful_run_and_a_refusal_named(tmp_path):
    store, clock = Store(tmp_path / "db.sqlite"), Clock(utc(2026, 5, 1, 10, 0))
    results = tmp_path / "results"
    sched, engine = _scheduler(store, clock, tmp_path)
    row = sched.add("alice", "weekly", "@weekly", FREQ, certificate=b"")

    def run_and_finish(finish) -> dict:
        clock.now += dt.timedelta(minutes=1)
        run = sched.run_now(store.get_schedule(row.id))
        finish(run.job_id)
        sched.tick()
        return store.get_run(run.id).report

    first = run_and_finish(
        lambda j: _finish_freq(store, results, j, {"AFR": 200, "EUR": 200}, [("rs1", 0.25, 800), ("rs2", 0.5, 780)])
    )
    reason = "privacy budget of dataset 'main' exceeded: this job needs rho=1.4 but only rho=0.4869 remains"

    def refuse(job_id: str) -> None:
        store.set_site(job_id, "AFR", state="ACCEPTED", cohort_size=200)
        store.set_site(job_id, "EUR", state="REFUSED", detail=reason)
        store.finish_job(job_id, FAILED, error=f"site EUR refused the job: {reason}")

    failed = run_and_finish(refuse)
    third = run_and_finish(
        lambda j: _finish_freq(store, results, j, {"AFR": 200, "EUR": 300}, [("rs1", 0.25, 1000), ("rs2", 0.53, 990)])
    )
    assert first["state"] == DONE and first["previous"] is None and first["participants_total"] == 400
    assert "change: none to show (this schedule's first successful run)" in render_text(first)

    assert failed["state"] == FAILED and failed["change"] is None
    assert failed["refused"] == [{"site": "EUR", "reason": reason}]
    text = render_text(failed)
    assert f"FAILED: site EUR refused the job: {reason}" in text and f"site EUR refused: {reason}" in text
    assert summary_line(failed, state=FAILED, error="") == "FAILED: EUR refused"

    assert third["previous"]["run"] == 1  # compared with the last DONE run, not the refused one
    ch = third["change"]
    assert ch["participants_total"] == {"before": 400, "after": 500, "delta": 100}
    assert ch["sites"] == {
        "AFR": {"before": 200, "after": 200, "delta": 0},
        "EUR": {"before": 200, "after": 300, "delta": 100},
    }
    assert ch["afreq"]["alt_freq_changed"] == 1 and ch["afreq"]["max_delta_variant"] == "rs2"
    assert ch["afreq"]["max_abs_delta_alt_freq"] == pytest.approx(0.03)
    assert (ch["afreq"]["obs_ct_total_before"], ch["afreq"]["obs_ct_total_after"]) == (1580, 1990)
    text = render_text(third)
    assert "participants: 400 -> 500 (+100)" in text and "site EUR: 200 -> 300 (+100)" in text
    assert "ALT_FREQS changed at 1 of 2 variants; largest |Δ| 0.03 at rs2 (0.5 -> 0.53)" in text
    assert "OBS_CT total 1580 -> 1990 (+410); changed at 2 variants (largest |Δ| 210)" in text
    assert (
        summary_line(third, state=DONE, error="")
        == "500 participants, 2 variants (+100 participants, ALT_FREQS changed at 1)"
    )


# --- the analyst API: roles -----------------------------------------------------------------


def test_schedule_rpcs__roles_own_and_others(ca, coordinator_with_access):
    """alice: submit + view-own (the default); bob: view-own only; carol: admin."""
    import grpc

    from fedstat.errors import AuthError

    _client = test_access._client

    coord = coordinator_with_access
    coord.scheduler.tick_s = 0.1
    with _client(ca, coord, "alice") as alice, _client(ca, coord, "bob") as bob, _client(ca, coord, "carol") as carol:
        with pytest.raises(InputError, match="cron hour field '25': 25 is out of range"):
            alice.add_schedule("a1", "0 25 * * *", FREQ)
        s = alice.add_schedule("a1", "@daily", FREQ)
        assert (s.owner, s.name, s.cron, list(s.spec.analyses)) == ("alice", "a1", "@daily", ["freq"])
        assert s.next_run_at.endswith("T00:00:00Z") and s.schedule_id.startswith("sch-")
        with pytest.raises(AuthError, match="lacks the role 'submit'.*AddSchedule"):
            bob.add_schedule("b1", "@daily", FREQ)
        assert bob.schedules() == []
        with pytest.raises(AuthError, match="lacks the role 'view-all' to list every analyst's schedules"):
            bob.schedules(all_analysts=True)
        assert [(x.owner, x.name) for x in carol.schedules(all_analysts=True)] == [("alice", "a1")]
        with pytest.raises(AuthError, match="lacks the role 'submit'.*RunScheduleNow"):
            bob.run_schedule_now(s.schedule_id)
        # another analyst's schedule is found by id only, and only by someone who may act on it
        with pytest.raises(grpc.RpcError) as info:
            carol._stub.RemoveSchedule(analyst_pb2.ScheduleRef(schedule="a1"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        pending = alice.run_schedule_now("a1")  # no site is connected: the job fails, the report says why
        assert (pending.run, pending.trigger, pending.state) == (1, "run-now", "RUNNING") and pending.job_id
        deadline = dt.datetime.now() + dt.timedelta(seconds=20)
        while (report := alice.report(pending.report_id)).state == "RUNNING":
            assert dt.datetime.now() < deadline, "no report"
            time.sleep(0.1)
        assert report.state == "FAILED" and report.error == "no site is connected to the coordinator"
        assert "FAILED: no site is connected to the coordinator" in report.text
        assert json.loads(report.json)["job_id"] == pending.job_id
        with pytest.raises(InputError, match="no report with id"):
            bob.report(pending.report_id)  # view-own: not another's report
        assert carol.report(pending.report_id).report_id == pending.report_id  # admin (view-all)
        assert [r.report_id for r in alice.reports(schedule="a1")] == [pending.report_id]
        assert bob.reports() == [] and len(carol.reports(all_analysts=True)) == 1

        removed = carol.remove_schedule(s.schedule_id)  # an admin may, by id
        assert removed.name == "a1" and alice.schedules() == []
        assert [r.report_id for r in alice.reports(schedule="a1")] == [pending.report_id]  # reports stay


# --- the command line ---------------------------------------------------------------------


def test_cli__schedule_help_teaches_cron_and_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from fedstat.cli.main import build_parser, main

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["schedule", "add", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--cron EXPR", '"*/5 * * * *"     every 5 minutes', "@weekly", "examples:", "--epsilon", "--freq"):
        assert text in out
    profile = ["--profile", str(tmp_path / "nope.toml")]
    rc = main(["schedule", "add", *profile, "--name", "x", "--cron", "61 * * * *", "--freq"])
    assert (rc, capsys.readouterr().err) == (
        2,
        "fedstat: error: cron minute field '61': 61 is out of range (allowed 0-59)\n",
    )
    rc = main(["schedule", "add", *profile, "--name", "x", "--cron", "@daily"])
    assert rc == 2 and "no analysis requested" in capsys.readouterr().err
    rc = main(["reports", "list", *profile])
    assert (
        rc == 2 and capsys.readouterr().err == f"fedstat: error: config file {tmp_path / 'nope.toml'} does not exist\n"
    )
