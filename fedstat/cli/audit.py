"""``fedstat site audit verify|show`` and ``fedstat coordinator audit-heads``.

A site's operator checks its hash-chained audit log (``verify``), optionally against the signed
head the coordinator keeps for the site (``--against FILE``, a file exported with
``fedstat coordinator audit-heads --out FILE``); the coordinator's operator lists, exports and
acts on the sites' signed audit heads and their alarms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedstat.errors import InputError


def add_site_audit_parser(site: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = site.add_parser("audit", help="the site's hash-chained audit log: verify it or show records")
    s.add_argument("audit_action", choices=("verify", "show"))
    s.add_argument("--config", required=True, type=Path)
    s.add_argument(
        "--against",
        type=Path,
        metavar="FILE",
        help="verify: also check the log holds the signed head the coordinator keeps for this site "
        "(FILE from `fedstat coordinator audit-heads --out FILE`); detects records cut from the end and "
        "edits, deletions or reorderings even when the whole chain and its anchor were rewritten",
    )
    s.add_argument("--analyst", help="show: records of this analyst (certificate name)")
    s.add_argument("--job", help="show: records of this job id")
    s.add_argument("--since", help="show: from this date/time (ISO, UTC)")
    s.add_argument("--until", help="show: before this date/time (ISO, UTC)")


def add_coordinator_parser(coordinator: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = coordinator.add_parser(
        "audit-heads",
        help="the sites' signed audit heads the coordinator keeps, and their alarms (exit 1 while one is open)",
        epilog="a site's operator checks its log with `fedstat site audit verify --against FILE`",
    )
    s.add_argument("--config", required=True, type=Path)
    s.add_argument("--out", type=Path, metavar="FILE", help="write the heads and alarms as JSON to FILE")
    act = s.add_mutually_exclusive_group()
    act.add_argument(
        "--resolve", metavar="SITE", help="close SITE's open alarms (e.g. its log was restored); needs --note"
    )
    act.add_argument(
        "--accept-new-log",
        metavar="SITE",
        help="accept that SITE's audit log starts again (lost, not restorable): its alarms are closed, the head "
        "kept until now is kept as evidence and its next head is kept; needs --note",
    )
    s.add_argument("--note", default="", help="why (kept with the alarm)")


def _site_verify(args: argparse.Namespace) -> int:
    from fedstat.audit_head import check_head, read_heads  # noqa: PLC0415
    from fedstat.config import load_site_config  # noqa: PLC0415
    from fedstat.pki import identity_from_pem  # noqa: PLC0415
    from site_agent import audit_verify as audit  # noqa: PLC0415

    config = load_site_config(args.config)
    path = config.state_dir / "audit.log"
    head = None
    if args.against is not None:
        ca_pem, cert_pem, _ = config.tls.load()
        name = identity_from_pem(cert_pem).name
        heads = read_heads(args.against)
        head = heads.heads.get(name)
        if head is None:
            raise InputError(f"{args.against} holds no audit head for site {name} (sites: {', '.join(heads.heads)})")
        check_head(head, ca_pem=ca_pem, site=name)  # AuthError: not a head this site signed
        for alarm in heads.alarms:
            if alarm.site == name and not alarm.resolved_at:
                print(f"note: the coordinator holds an open audit alarm for {name}: {alarm.kind}, {alarm.at}")
    result = audit.verify(path, against=None if head is None else (head.seq, head.hash))
    if result.ok:
        against = "" if head is None else f"; it holds the coordinator's signed head {head.describe()}"
        print(f"{path}: OK, {result.n_records} records, hash chain and head intact{against}")
        return 0
    where = f"at line {result.first_bad_line}" if result.first_bad_line else "at its end"
    print(f"{path}: TAMPERED or damaged {where}: {result.problem}", file=sys.stderr)
    if result.against_problem and result.against_problem != result.problem:
        print(f"{path}: against the coordinator's head: {result.against_problem}", file=sys.stderr)
    return 1


def run_site_audit(args: argparse.Namespace) -> int:
    from fedstat.config import load_site_config  # noqa: PLC0415
    from site_agent import audit_verify as audit  # noqa: PLC0415

    if args.audit_action == "verify":
        return _site_verify(args)
    path = load_site_config(args.config).state_dir / "audit.log"
    for record in audit.show(path, analyst=args.analyst, job_id=args.job, since=args.since, until=args.until):
        print(audit.format_record(record))
    return 0


def run_audit_heads(args: argparse.Namespace) -> int:
    from coordinator.store import Store  # noqa: PLC0415
    from fedstat.audit_head import write_heads  # noqa: PLC0415
    from fedstat.config import load_coordinator_config  # noqa: PLC0415

    site = args.resolve or args.accept_new_log
    if site and not args.note.strip():
        raise InputError("--resolve / --accept-new-log need --note saying what was done (it is kept with the alarm)")
    store = Store(load_coordinator_config(args.config).db_path)
    try:
        if site:
            n = store.resolve_audit_alarms(site, args.note.strip(), new_log=bool(args.accept_new_log))
            what = "its next head is kept as the start of a new log" if args.accept_new_log else "its head is kept"
            print(f"site {site}: {n} open alarm(s) closed; {what}")
        heads, alarms = store.audit_heads(), store.audit_head_alarms()
    finally:
        store.close()
    for name, head in heads.items():
        print(f"{name}: {head.describe()}{' (reported a conflict)' if head.conflict else ''}")
    for a in alarms:
        state = f"resolved {a.resolved_at}: {a.note}" if a.resolved_at else "OPEN"
        kept = a.kept.describe() if a.kept else "none"
        offending = a.offending.describe() if a.offending else "none"
        print(f"ALARM {a.site} {a.kind} at {a.at}: kept {kept}; offending {offending} [{state}]")
    if args.out is not None:
        write_heads(args.out, heads.values(), alarms)
        print(f"wrote {len(heads)} head(s) and {len(alarms)} alarm(s) to {args.out}")
    return 1 if any(not a.resolved_at for a in alarms) else 0
