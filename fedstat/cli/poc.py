"""``fedstat poc``: a whole consortium on one machine, as real daemons over real mutual TLS.

Workspace layout (everything a real deployment has, in one directory)::

    W/poc.json                  the sites and the coordinator address
    W/ca/ca.pem, ca.key         the consortium CA
    W/coordinator/              coordinator.toml, its certificate and key, state/ (SQLite, results)
    W/sites/<NAME>/             site.toml, its certificate and key, state/ (caches)
    W/analyst.toml              the analyst profile (W/analyst/ holds its certificate and key)
    W/run/<component>.pid       pids of running daemons
    W/logs/<component>.log      their logs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

import grpc

from fedstat import pki
from fedstat.errors import ConfigError, FedstatError, InputError, SiteUnavailable
from fedstat.jobs import KNOWN_ANALYSES

COORDINATOR = "coordinator"
START_TIMEOUT_S = 180.0
#: ``[[datasets]]`` keys ``prepare`` can set per site: how a VCF's dosages or a BGEN's REF are read
DATASET_OPTIONS = ("vcf_dosage", "bgen_ref")
_CHILDREN: list[subprocess.Popen[bytes]] = []


class PocMeta(TypedDict):
    """``W/poc.json``: what ``prepare`` set up, read by the other commands."""

    address: str  # the coordinator's host:port
    sites: dict[str, str]  # site name -> its directory
    analyst: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_str(p: Path | str) -> str:
    return json.dumps(str(p))  # a JSON string literal is a valid TOML basic string


def prepare(
    workspace: Path,
    sites: dict[str, Path],
    *,
    analyst: str = "analyst",
    port: int = 0,
    check: bool = True,
    dataset_options: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Create certificates and configs for a coordinator, the sites and one analyst.

    ``dataset_options`` gives a site's ``[[datasets]]`` entry keys from :data:`DATASET_OPTIONS`
    (``{"VCF": {"vcf_dosage": "DS"}}``); the site's config loader validates their values."""
    dataset_options = dataset_options or {}
    for name, options in dataset_options.items():
        if name not in sites:
            raise InputError(f"--dataset-option for site {name}, which no --site names")
        for key in options:
            if key not in DATASET_OPTIONS:
                raise InputError(f"--dataset-option {name}:{key}: expected one of {', '.join(DATASET_OPTIONS)}")
    from fedstat.data.genotypes import find_genotype_source  # noqa: PLC0415

    workspace = workspace.resolve()
    if (workspace / "poc.json").exists():
        raise InputError(f"{workspace} already holds a prepared consortium; use another --workspace or delete it")
    for name, data in sites.items():
        if not data.is_dir():
            raise InputError(f"site {name}: data directory {data} does not exist")
        find_genotype_source(data)
        if not (data / "samples.tsv").is_file():
            raise InputError(f"site {name}: {data / 'samples.tsv'} not found")
    port = port or _free_port()
    address = f"localhost:{port}"
    pki.init_ca(workspace / "ca")
    ca = workspace / "ca"
    cdir = workspace / COORDINATOR
    pki.issue(ca, cdir, name=COORDINATOR, role="coordinator", hosts=("localhost", "127.0.0.1"))
    (cdir / "coordinator.toml").write_text(
        "[coordinator]\n"
        f"listen = {_toml_str(f'127.0.0.1:{port}')}\n"
        'state_dir = "state"\n'
        "offer_timeout_s = 120\n"
        "round_timeout_s = 3600\n"
        "site_reconnect_s = 120\n"
        "max_concurrent_jobs = 2\n\n"
        "[tls]\n"
        'ca = "../ca/ca.pem"\n'
        'cert = "coordinator.pem"\n'
        'key = "coordinator.key"\n'
        'crl = "../ca/crl.pem"\n\n'
        "[access]                          # analyst roles: submit, view-own, view-all, admin\n"
        'default = ["submit", "view-own"]\n'
        f'analysts = {{ {_toml_str(analyst)} = ["admin"] }}   # the poc\'s analyst also operates it\n'
    )
    for name, data in sites.items():
        sdir = workspace / "sites" / name
        pki.issue(ca, sdir, name=name, role="site")
        (sdir / "site.toml").write_text(
            "[site]\n"
            f"coordinator = {_toml_str(address)}\n"
            'state_dir = "state"\n'
            "block_size = 4096\n\n"
            "[tls]\n"
            'ca = "../../ca/ca.pem"\n'
            f"cert = {_toml_str(name + '.pem')}\n"
            f"key = {_toml_str(name + '.key')}\n"
            'crl = "../../ca/crl.pem"\n\n'
            "[[datasets]]\n"
            'name = "main"\n'
            f"path = {_toml_str(data.resolve())}\n"
            + "".join(f"{k} = {_toml_str(v)}\n" for k, v in dataset_options.get(name, {}).items())
            + "\n"
            "[policy]\n"
            f"allowed_analyses = {json.dumps(list(KNOWN_ANALYSES))}\n"
            'allowed_privacy = ["secagg", "paillier", "dp", "paillier,dp", "none"]\n'
            "min_cohort = 1\n"
            "min_group = 10                   # release ledger: no combination of sums singles out fewer\n"
            "min_cell_count = 0               # DataSHIELD's nfilter.tab would be 3\n"
            "max_params_ratio = 0.33\n"
        )
    pki.issue(ca, workspace / "analyst", name=analyst, role="analyst")
    (workspace / "analyst.toml").write_text(
        "[analyst]\n"
        f"coordinator = {_toml_str(address)}\n\n"
        "[tls]\n"
        'ca = "ca/ca.pem"\n'
        f"cert = {_toml_str('analyst/' + analyst + '.pem')}\n"
        f"key = {_toml_str('analyst/' + analyst + '.key')}\n"
        'crl = "ca/crl.pem"               # refuse a coordinator the consortium revoked\n'
    )
    (workspace / "poc.json").write_text(
        json.dumps(
            {"address": address, "sites": {n: str(d.resolve()) for n, d in sites.items()}, "analyst": analyst}, indent=2
        )
        + "\n"
    )
    if check:
        from fedstat.config import load_site_config  # noqa: PLC0415
        from site_agent.agent import SiteAgent  # noqa: PLC0415

        for name in sites:
            agent = SiteAgent(load_site_config(workspace / "sites" / name / "site.toml"))
            agent.load_datasets()
            for ds in agent.datasets.values():
                print(f"site {name}: {ds.genotypes.format}, {ds.n_samples} samples, {ds.genotypes.n_variants} variants")
                ds.close()
            for problem in agent.problems.values():
                raise InputError(f"site {name}: {problem}")
    return workspace


def _load(workspace: Path) -> PocMeta:
    try:
        meta: PocMeta = json.loads((workspace / "poc.json").read_text())
        return meta
    except FileNotFoundError:
        raise ConfigError(
            f"{workspace} is not a prepared workspace: run `fedstat poc prepare --workspace {workspace} ...`"
        ) from None


def _pid(workspace: Path, component: str) -> int | None:
    try:
        pid = int((workspace / "run" / f"{component}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:  # reap it first if it is our own exited child (the demo starts and stops in one process)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _spawn(workspace: Path, component: str, args: list[str]) -> int:
    (workspace / "run").mkdir(exist_ok=True)
    (workspace / "logs").mkdir(exist_ok=True)
    with (workspace / "logs" / f"{component}.log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-P", "-m", "fedstat.cli.main", *args],  # -P: the cwd never shadows fedstat
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _CHILDREN.append(proc)  # a daemon outlives this command; keep the handle so it is not reaped as garbage
    (workspace / "run" / f"{component}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n    ".join(lines[-n:])


def _health(workspace: Path, timeout: float = 2.0) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    from fedstat.config import load_analyst_profile  # noqa: PLC0415
    from fedstat.net import secure_channel  # noqa: PLC0415

    profile = load_analyst_profile(workspace / "analyst.toml")
    channel = secure_channel(profile.coordinator, profile.tls)
    try:
        # types-grpcio-health-checking declares HealthStub without its RPC attributes (Check, Watch)
        stub = health_pb2_grpc.HealthStub(channel)
        resp: health_pb2.HealthCheckResponse = stub.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.RpcError as exc:
        return f"UNREACHABLE ({exc.code().name})"
    finally:
        channel.close()


def _connected_sites(workspace: Path) -> list[str]:
    from fedstat.client import Client  # noqa: PLC0415

    with Client.from_profile(workspace / "analyst.toml") as c:
        return [s.site for s in c.sites()]


def start(workspace: Path) -> None:
    """Start the coordinator, wait until it serves, start each site, wait until all connect."""
    workspace = workspace.resolve()
    meta = _load(workspace)
    components = [COORDINATOR, *meta["sites"]]
    running = [c for c in components if _pid(workspace, c)]
    if running:
        raise InputError(f"already running: {', '.join(running)}; `fedstat poc stop --workspace {workspace}` first")
    deadline = time.monotonic() + START_TIMEOUT_S
    _start_coordinator(workspace, deadline)
    print(f"coordinator serving at {meta['address']} (pid {_pid(workspace, COORDINATOR)})")
    for name in meta["sites"]:
        _start_site(workspace, name)
    pending = set(meta["sites"])
    while pending:
        pending -= set(_connected_sites(workspace))
        for name in list(pending):
            if not _pid(workspace, name):
                raise SiteUnavailable(
                    f"site {name} exited at start; its log says:\n    {_tail(workspace / 'logs' / f'{name}.log')}"
                )
        if time.monotonic() > deadline:
            raise SiteUnavailable(
                f"site(s) {', '.join(sorted(pending))} did not connect in time; see {workspace / 'logs'}"
            )
        if pending:
            time.sleep(0.3)
    for name in meta["sites"]:
        print(f"site {name} connected (pid {_pid(workspace, name)})")


def _start_coordinator(workspace: Path, deadline: float) -> None:
    """Spawn the coordinator and wait until its health service says SERVING."""
    _spawn(
        workspace, COORDINATOR, ["coordinator", "serve", "--config", str(workspace / COORDINATOR / "coordinator.toml")]
    )
    while _health(workspace, timeout=1.0) != "SERVING":
        if not _pid(workspace, COORDINATOR):
            raise SiteUnavailable(
                f"the coordinator exited at start; its log says:\n    {_tail(workspace / 'logs' / 'coordinator.log')}"
            )
        if time.monotonic() > deadline:
            raise SiteUnavailable(
                "the coordinator did not become healthy in time; see " + str(workspace / "logs" / "coordinator.log")
            )
        time.sleep(0.2)


def _start_site(workspace: Path, name: str) -> None:
    _spawn(workspace, name, ["site", "serve", "--config", str(workspace / "sites" / name / "site.toml")])


def _terminate(workspace: Path, component: str, sig: signal.Signals, timeout: float) -> bool:
    """Send ``sig`` to a running component, SIGKILL it after ``timeout``; False if it was not running."""
    pid = _pid(workspace, component)
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _pid(workspace, component) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid(workspace, component):
        os.kill(pid, signal.SIGKILL)
        while _pid(workspace, component):
            time.sleep(0.05)
    (workspace / "run" / f"{component}.pid").unlink(missing_ok=True)
    return True


def status(workspace: Path) -> list[tuple[str, int | None, str, str]]:
    """Rows of (component, pid, address, health) — printed by ``poc status``."""
    workspace = workspace.resolve()
    meta = _load(workspace)
    rows = []
    cpid = _pid(workspace, COORDINATOR)
    rows.append((COORDINATOR, cpid, meta["address"], _health(workspace) if cpid else "STOPPED"))
    connected = set(_connected_sites(workspace)) if cpid and rows[0][3] == "SERVING" else set()
    for name in meta["sites"]:
        pid = _pid(workspace, name)
        state = "CONNECTED" if name in connected else ("RUNNING, NOT CONNECTED" if pid else "STOPPED")
        rows.append((name, pid, f"dials {meta['address']}", state))
    return rows


def stop(workspace: Path, *, timeout: float = 15.0) -> list[str]:
    """SIGTERM every running component (sites first), SIGKILL what is left after ``timeout``."""
    workspace = workspace.resolve()
    meta = _load(workspace)
    stopped = []
    for component in [*meta["sites"], COORDINATOR]:
        if _terminate(workspace, component, signal.SIGTERM, timeout):
            stopped.append(component)
    return stopped


def restart(workspace: Path, component: str, *, sig: str = "TERM", down: float = 0.0) -> int:
    """Stop one component (SIGTERM drains, SIGKILL crashes it) and start it again; returns the new pid.

    The coordinator comes back on the same address and state (jobs resume from their last
    completed round); a site reconnects with its state (audit log, DP ledger) intact.
    """
    workspace = workspace.resolve()
    meta = _load(workspace)
    if component != COORDINATOR and component not in meta["sites"]:
        raise InputError(
            f"unknown component {component!r}; this workspace has: {', '.join([COORDINATOR, *meta['sites']])}"
        )
    _terminate(workspace, component, signal.SIGKILL if sig == "KILL" else signal.SIGTERM, 15.0)
    if down > 0:
        time.sleep(down)
    if component == COORDINATOR:
        _start_coordinator(workspace, time.monotonic() + START_TIMEOUT_S)
    else:
        _start_site(workspace, component)
    new = _pid(workspace, component)
    assert new is not None
    return new


def run(args: argparse.Namespace) -> int:
    if args.poc_command == "prepare":
        sites: dict[str, Path] = {}
        for item in args.site:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise InputError(f"--site {item!r}: expected NAME=DIR, e.g. --site AFR=data/afr")
            if name in sites:
                raise InputError(f"site {name} given twice")
            sites[name] = Path(path)
        options: dict[str, dict[str, str]] = {}
        for item in args.dataset_option or ():
            name, sep, setting = item.partition(":")
            key, eq, value = setting.partition("=")
            if not sep or not eq or not name or not key or not value:
                raise InputError(f"--dataset-option {item!r}: expected SITE:KEY=VALUE, e.g. VCF:vcf_dosage=DS")
            options.setdefault(name, {})[key] = value
        ws = prepare(
            args.workspace,
            sites,
            analyst=args.analyst,
            port=args.port,
            check=not args.skip_check,
            dataset_options=options,
        )
        print(f"prepared {ws}: coordinator, {len(sites)} site(s), analyst profile {ws / 'analyst.toml'}")
        print(f"next: fedstat poc start --workspace {args.workspace}")
        return 0
    if args.poc_command == "start":
        start(args.workspace)
        return 0
    if args.poc_command == "status":
        rows = status(args.workspace)
        for comp, pid, addr, health in rows:
            print(f"{comp:<12} pid {pid if pid else '-':<8} {addr:<24} {health}")
        return 0 if all(r[3] in ("SERVING", "CONNECTED") for r in rows) else 1
    if args.poc_command == "restart":
        pid = restart(args.workspace, args.component, sig=args.signal, down=args.down)
        print(f"{args.component} restarted (SIG{args.signal}), pid {pid}")
        return 0
    if args.poc_command == "stop":
        stopped = stop(args.workspace)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    raise FedstatError(f"unknown poc command {args.poc_command}")
