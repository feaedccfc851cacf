"""``fedstat schedule`` and ``fedstat reports``: recurring jobs on the coordinator and their reports."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from fedstat.cli.common import add_profile
from fedstat.errors import FedstatError, InputError, JobFailed

if TYPE_CHECKING:
    from fedstat.client import Client
    from fedstat.jobs import JobSpec
    from fedstat.wire import analyst_pb2

EPILOG_ADD = """\
cron expressions (UTC): minute hour day-of-month month day-of-week, each *, a number, a range a-b,
a step */n or a-b/n, or a list a,b; months and weekdays may be names (JAN, MON). Aliases:
@hourly, @daily, @weekly (Sundays 00:00), @monthly, @yearly.
  "*/5 * * * *"     every 5 minutes
  "0 6 * * MON"     Mondays at 06:00 UTC
  "30 2 1 * *"      the 1st of each month at 02:30 UTC

examples:
  fedstat schedule add --profile W/analyst.toml --name weekly-afreq --cron "0 6 * * MON" \\
      --freq --privacy dp --epsilon 1 --delta 1e-6 --dataset main
  fedstat schedule add --profile W/analyst.toml --name qc-counts --cron @daily --missing --hardy

Each run is an ordinary job submitted as you (with your certificate, so each site checks you as
for your own jobs, and charges a --privacy dp run to its budget). A finished run leaves a report
(`fedstat reports list`) with the change since the schedule's previous successful run. Runs missed
while the coordinator was down run once when it is back; a slot that comes while the previous run
is still going is skipped.
"""

EPILOG_REPORTS = """\
examples:
  fedstat reports list --profile W/analyst.toml --schedule weekly-afreq
  fedstat reports get --profile W/analyst.toml rpt-20261123-060002-3fa9c1
  fedstat reports get --profile W/analyst.toml rpt-20261123-060002-3fa9c1 --json > report.json
"""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schedule`` and ``reports`` commands to the ``fedstat`` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    schedule = sub.add_parser(
        "schedule",
        help='recurring jobs on the coordinator, e.g. a weekly allele-frequency report (cron "0 6 * * MON")',
        description="Schedules run a job template at the slots of a cron expression (UTC) and keep a report of "
        "each run.",
        epilog=EPILOG_ADD,
        formatter_class=raw,
    ).add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    p = schedule.add_parser(
        "add",
        help='add a schedule: --name, --cron "*/5 * * * *" and the job\'s flags (as fedstat submit)',
        epilog=EPILOG_ADD,
        formatter_class=raw,
    )
    add_profile(p)
    p.add_argument("--name", required=True, help="a name for it, unique among yours, e.g. weekly-afreq")
    p.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help='when it runs, in UTC: five fields or an alias, e.g. "0 6 * * MON" or @daily (see below)',
    )
    g = p.add_argument_group("analyses (plink2 flags, as fedstat submit)")
    g.add_argument("--freq", action="store_true", help="allele frequencies → <out>.afreq (reports compare them)")
    g.add_argument("--geno-counts", action="store_true", help="genotype counts → <out>.gcount")
    g.add_argument("--hardy", action="store_true", help="exact Hardy–Weinberg test → <out>.hardy")
    g.add_argument("--missing", action="store_true", help="variant missingness → <out>.vmiss")
    p.add_argument(
        "--privacy",
        default="secagg",
        help="secagg (default), dp (with --epsilon/--delta, charged to each site's budget at every run; a site "
        "whose budget is spent refuses and the report says so) or none; paillier cannot be scheduled",
    )
    p.add_argument("--epsilon", type=float, metavar="E", help="--privacy dp: each run's ε")
    p.add_argument("--delta", type=float, metavar="D", help="--privacy dp: each run's δ, e.g. 1e-6")
    p.add_argument("--dataset", default="", help="dataset name at each site (default: each site's first)")
    p.add_argument("--purpose", default="GRU", metavar="DUO", help="purpose of use as a DUO code (default GRU)")
    p.add_argument("--sites", default="", metavar="A,B", help="sites to run on (default: every connected site)")
    p.add_argument("--out", default="", metavar="NAME", help="result file prefix (default: the schedule's name)")

    p = schedule.add_parser("list", help="your schedules: cron, next run, runs so far")
    add_profile(p)
    p.add_argument("--all", action="store_true", help="every analyst's schedules (needs the view-all role)")
    p = schedule.add_parser("remove", help="remove a schedule (its reports stay)")
    add_profile(p)
    p.add_argument("schedule", metavar="NAME_OR_ID")
    p = schedule.add_parser("run-now", help="start a run of a schedule now, outside its slots")
    add_profile(p)
    p.add_argument("schedule", metavar="NAME_OR_ID")
    p.add_argument("--wait", action="store_true", help="wait for the run's report and print it")

    reports = sub.add_parser(
        "reports",
        help="reports of scheduled runs, each with the change since the schedule's previous run",
        epilog=EPILOG_REPORTS,
        formatter_class=raw,
    ).add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    p = reports.add_parser(
        "list", help="reports, newest first, one line each", epilog=EPILOG_REPORTS, formatter_class=raw
    )
    add_profile(p)
    p.add_argument("--schedule", default="", metavar="NAME_OR_ID", help="only this schedule's reports")
    p.add_argument("--all", action="store_true", help="every analyst's reports (needs the view-all role)")
    p.add_argument("--limit", type=int, default=20)
    p = reports.add_parser("get", help="one report in full", epilog=EPILOG_REPORTS, formatter_class=raw)
    add_profile(p)
    p.add_argument("report_id", metavar="REPORT_ID")
    p.add_argument("--json", action="store_true", help="print the report's JSON document instead of its text")


def _spec(args: argparse.Namespace) -> JobSpec:
    from fedstat.jobs import JobSpec  # noqa: PLC0415

    flags = (("freq", args.freq), ("geno-counts", args.geno_counts), ("hardy", args.hardy), ("missing", args.missing))
    options = {}
    if args.epsilon is not None:
        options["dp_epsilon"] = repr(args.epsilon)
    if args.delta is not None:
        options["dp_delta"] = repr(args.delta)
    return JobSpec(
        analyses=tuple(a for a, on in flags if on),
        privacy=args.privacy,
        purpose=args.purpose,
        sites=tuple(x.strip() for x in args.sites.split(",") if x.strip()),
        out_name=args.out or args.name,
        dataset=args.dataset,
        options=options,
    ).validated()


def _print_schedule(s: analyst_pb2.Schedule, *, owner: bool) -> None:
    analyses = " ".join("--" + a for a in s.spec.analyses)
    who = f"  owner {s.owner}" if owner else ""
    print(
        f"{s.schedule_id}  {s.name:<20} {s.cron!r:<16} next {s.next_run_at}  runs {s.runs:<4} "
        f"{analyses} privacy={s.spec.privacy}{who}"
    )


def _wait_for_report(c: Client, report_id: str, poll_s: float = 1.0) -> analyst_pb2.Report:
    while True:
        r = c.report(report_id)
        if r.state not in ("PENDING", "RUNNING"):
            return r
        time.sleep(poll_s)


def run(args: argparse.Namespace) -> int:
    from fedstat.client import Client  # noqa: PLC0415

    if args.command == "schedule" and args.schedule_command == "add":
        from coordinator.cron import parse_cron  # noqa: PLC0415

        parse_cron(args.cron)  # a bad expression is named here, before any connection
        spec = _spec(args)
    with Client.from_profile(args.profile) as c:
        if args.command == "schedule":
            if args.schedule_command == "add":
                s = c.add_schedule(args.name, args.cron, spec)
                print(f"schedule {s.name} added ({s.schedule_id}): {s.cron!r} UTC, first run {s.next_run_at}")
            elif args.schedule_command == "list":
                rows = c.schedules(all_analysts=args.all)
                if not rows:
                    print("no schedules yet; add one with `fedstat schedule add`")
                for s in rows:
                    _print_schedule(s, owner=args.all)
            elif args.schedule_command == "remove":
                s = c.remove_schedule(args.schedule)
                print(f"schedule {s.name} ({s.schedule_id}) removed; its reports stay")
            elif args.schedule_command == "run-now":
                r = c.run_schedule_now(args.schedule)
                print(
                    f"run {r.run} of schedule {r.schedule_name} started as job {r.job_id or '-'}; report {r.report_id}"
                )
                if args.wait:
                    r = _wait_for_report(c, r.report_id)
                    sys.stdout.write(r.text)
                    if r.state != "DONE":
                        raise JobFailed(f"run {r.run} of schedule {r.schedule_name} {r.state}: {r.error}")
            else:
                raise FedstatError(f"unknown schedule command {args.schedule_command}")
            return 0
        if args.reports_command == "list":
            reports = c.reports(schedule=args.schedule, all_analysts=args.all, limit=args.limit)
            if not reports:
                print("no reports yet")
            for r in reports:
                print(f"{r.report_id}  {r.schedule_name:<20} run {r.run:<4} {r.state:<9} {r.fired_at}  {r.summary}")
            return 0
        if args.reports_command == "get":
            r = c.report(args.report_id)
            if r.state in ("PENDING", "RUNNING"):
                print(f"report {r.report_id}: run {r.run} of schedule {r.schedule_name} is {r.state} (job {r.job_id})")
            else:
                sys.stdout.write((r.json + "\n") if args.json else r.text)
            return 0
    raise InputError(f"unknown reports command {args.reports_command}")
