#!/usr/bin/env python3
"""Load test: several analysts submit many jobs at once to a three-site consortium.

What it shows: the coordinator queues concurrent submissions and runs at most
``max_concurrent_jobs`` of them at a time, the sites keep up with that many jobs in flight, and
no job is lost or mixed up with another -- every job finishes DONE, its results name its own job
id and analyst, and jobs of the same kind give the very same numbers.

Steps:

1. simulate a small three-site consortium (AFR as .bed, EUR as .pgen with REF/ALT swaps and
   missing calls, EAS as .vcf; phenotypes QT and CC, covariates AGE and SEX -- as ``fedstat demo``);
2. ``fedstat poc prepare`` a workspace, issue one analyst certificate and profile per analyst
   (alice, bob, carol, dave, ...), set the coordinator's ``max_concurrent_jobs``;
3. ``fedstat poc start`` (a coordinator and three site agents as daemons over mutual TLS);
4. run one reference job of each kind serially (privacy secagg);
5. submit --jobs jobs at once from --analysts analysts (one thread per job, one Client per
   analyst), cycling through the kinds ``--freq``, ``--hardy``, ``--geno-counts --missing``,
   ``--glm`` on QT with AGE,SEX, ``--assoc`` on CC, and the privacy modes secagg and none (or
   the list given with --privacy, e.g. secagg,none,paillier), while a poller samples how many
   jobs are RUNNING;
6. fetch every job's files and check them; print the numbers; stop the daemons (always).

Exit status 0 when every job completed correctly, 1 otherwise.

Examples::

    python scripts/load.py                                   # 24 jobs, 4 analysts, 4 at a time
    python scripts/load.py --jobs 40 --analysts 6 --concurrent 2
    python scripts/load.py --paillier --workdir /tmp/fedstat-load --keep
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fedstat import pki  # noqa: E402
from fedstat.cli import poc  # noqa: E402
from fedstat.client import Client, read_table  # noqa: E402
from fedstat.jobs import JobSpec  # noqa: E402

SITES = {"AFR": "bed", "EUR": "pgen", "EAS": "vcf"}
ANALYST_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
MARKER = "fedstat-load-workdir"


@dataclass(frozen=True)
class Kind:
    """One kind of job: its spec fields and the result files compared across jobs.

    ``integer``: the tables come from integer counts only, so every privacy mode must give the
    same bytes; otherwise (--glm) modes are compared numerically.
    """

    name: str
    analyses: tuple[str, ...]
    pheno: tuple[str, ...] = ()
    covar: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    integer: bool = True

    def spec(self, out_name: str, privacy: str, block_size: int) -> JobSpec:
        return JobSpec(
            analyses=self.analyses,
            pheno_names=self.pheno,
            covar_names=self.covar,
            privacy=privacy,
            purpose="GRU",
            out_name=out_name,
            block_size=block_size,
        ).validated()


KINDS = (
    Kind("freq", ("freq",), suffixes=("afreq",)),
    Kind("hardy", ("hardy",), suffixes=("hardy",)),
    Kind("counts", ("geno-counts", "missing"), suffixes=("gcount", "vmiss")),
    Kind("glm", ("glm",), pheno=("QT",), covar=("AGE", "SEX"), suffixes=("QT.glm.linear",), integer=False),
    Kind("assoc", ("assoc",), pheno=("CC",), suffixes=("assoc",)),
)


@dataclass
class Job:
    index: int
    analyst: str
    kind: Kind
    privacy: str
    out_name: str
    block_size: int = 0
    job_id: str = ""
    submitted: float = 0.0  # monotonic seconds
    running: float | None = None  # first time the job was seen RUNNING (watch stream)
    finished: float | None = None  # when its final state arrived
    fetched: float | None = None
    state: str = ""
    error: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"#{self.index:02d} {self.analyst}/{self.kind.name}/{self.privacy} {self.job_id or '(no id)'}"


HELP_DESCRIPTION = """\
Load test for fedstat: several analysts submit many jobs at once to a three-site consortium of
real daemons (a coordinator and three site agents over mutual TLS on loopback, as `fedstat poc`).

It simulates the consortium's data, prepares and starts the daemons, issues one certificate and
profile per analyst, runs one reference job of each kind serially, then submits --jobs jobs at
once (one thread per job, one Client per analyst) and waits for them all, sampling how many run
at once. Job i is submitted by analyst i mod --analysts and runs kind i mod 5:

  freq    --freq                              -> .afreq
  hardy   --hardy                             -> .hardy
  counts  --geno-counts --missing             -> .gcount, .vmiss
  glm     --glm --pheno-name QT --covar-name AGE,SEX  -> .QT.glm.linear
  assoc   --assoc --pheno-name CC             -> .assoc

in the privacy modes of --privacy, which change every 5 jobs (so each kind runs in each mode).

It checks that
  - every job ends DONE, and at most --concurrent jobs were RUNNING at any sampled moment;
  - no job is lost or mixed up: each job's provenance.json names its own job id, analyst and
    spec, its files carry its own prefix, each analyst's job list holds all of their jobs and
    none of anyone else's, and the coordinator's database holds exactly the jobs submitted;
  - jobs of a kind give the same results as the serial reference: byte-identical tables (also
    across privacy modes for count tables; --glm across modes to 1e-6 if not identical).

It prints the numbers -- jobs, analysts, limits, wall time, latency per job (min/median/p95/max,
split into queued and running), throughput, most jobs RUNNING and QUEUED at once -- and exits 0
when all jobs completed correctly, 1 otherwise. The daemons are always stopped at the end.
"""

HELP_EPILOG = """\
examples:
  python scripts/load.py                                      # 24 jobs, 4 analysts, 4 at a time
  python scripts/load.py --jobs 40 --analysts 6 --concurrent 2
  python scripts/load.py --privacy secagg,none,paillier --workdir /tmp/fedstat-load --keep
  python scripts/load.py --samples 3000 --variants 10000 --site-concurrent 1

With --keep (or --workdir) the daemons' logs stay in DIR/consortium/logs and every job's files in
DIR/results/{reference,load}/<job prefix>/.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scripts/load.py",
        description=HELP_DESCRIPTION,
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = ap.add_argument_group("load")
    g.add_argument("--jobs", type=int, default=24, metavar="N", help="jobs submitted at once (default 24)")
    g.add_argument(
        "--analysts",
        type=int,
        default=4,
        metavar="N",
        help=f"analysts submitting, each with its own certificate and Client: {', '.join(ANALYST_NAMES[:4])}, "
        f"... (1-{len(ANALYST_NAMES)}, default 4)",
    )
    g.add_argument(
        "--concurrent",
        type=int,
        default=4,
        metavar="N",
        help="the coordinator's max_concurrent_jobs: jobs running at once, the rest wait QUEUED (default 4)",
    )
    g.add_argument(
        "--site-concurrent",
        type=int,
        default=None,
        metavar="N",
        help="each site agent's max_concurrent_jobs: rounds it computes at once, the others wait their "
        "turn (default: the site agent's own default)",
    )
    g.add_argument(
        "--privacy",
        default="secagg,none",
        metavar="A,B",
        help="privacy modes the jobs cycle through: any of secagg, none, paillier (default secagg,none). "
        "For paillier this script's clients hold the keys and decrypt, as `fedstat submit` does",
    )
    g.add_argument("--paillier", action="store_true", help="add paillier to --privacy (slower)")
    g.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="seconds to wait for all jobs before reporting the unfinished ones as failures (default 900)",
    )
    g = ap.add_argument_group("data and files")
    g.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where data, the consortium workspace and results go (default: a fresh temporary directory, "
        "deleted at the end unless --keep). An existing DIR is reused (emptied) only if this script made it",
    )
    g.add_argument("--keep", action="store_true", help="keep the temporary working directory (data, logs, results)")
    g.add_argument("--samples", type=int, default=1200, help="participants over the three sites (default 1200)")
    g.add_argument("--variants", type=int, default=2000, help="variants at every site (default 2000)")
    g.add_argument(
        "--block-size",
        type=int,
        default=0,
        metavar="N",
        help="variants per block at the sites, for every job (default 0: each site's default)",
    )
    g.add_argument("--seed", type=int, default=2026, help="simulation seed (default 2026)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    if not 1 <= args.analysts <= len(ANALYST_NAMES):
        ap.error(f"--analysts must be between 1 and {len(ANALYST_NAMES)}")
    if args.concurrent < 1:
        ap.error("--concurrent must be at least 1")
    if args.site_concurrent is not None and args.site_concurrent < 1:
        ap.error("--site-concurrent must be at least 1")
    args.privacy = [m.strip() for m in args.privacy.split(",") if m.strip()]
    if args.paillier and "paillier" not in args.privacy:
        args.privacy.append("paillier")
    bad = [m for m in args.privacy if m not in ("secagg", "none", "paillier")]
    if bad or not args.privacy or len(set(args.privacy)) != len(args.privacy):
        ap.error("--privacy: a list of distinct modes among secagg, none, paillier")
    if args.block_size < 0:
        ap.error("--block-size must be 0 (the sites' default) or more")
    if args.samples < 60 or args.variants < 100:
        ap.error("--samples must be at least 60 and --variants at least 100")
    return args


# --- setup ----------------------------------------------------------------------------------


def prepare_workdir(workdir: Path | None) -> tuple[Path, bool]:
    """The working directory and whether it is a temporary one."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="fedstat-load-")), True
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise SystemExit(f"{workdir} is not empty and was not made by this script; give another --workdir")
        if (workdir / "consortium" / "poc.json").exists():
            poc.stop(workdir / "consortium")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, False


def simulate(workdir: Path, samples: int, variants: int, seed: int) -> dict[str, Path]:
    from fedstat.simulate import simulate_consortium  # noqa: PLC0415

    per = samples // 3
    sizes = {"AFR": per, "EAS": per, "EUR": samples - 2 * per}
    truth = simulate_consortium(
        workdir / "data",
        sites=sizes,
        n_variants=variants,
        seed=seed,
        formats=SITES,
        swap_fraction={"EUR": 0.05},
        missing_rate={"EUR": 0.01, "AFR": 0.002},
        # no missing phenotypes: the job kinds mix cohorts (--freq over everyone, --glm over those with
        # QT), which the sites' release ledgers refuse when they differ by a few participants
        pheno_missing_rate=0.0,
    )
    return {s: truth.site_dir(s) for s in SITES}


def set_table_key(toml: Path, table: str, key: str, value: int) -> None:
    """Set ``key = value`` in ``[table]`` of a TOML file the poc wrote, keeping every other key."""
    text = toml.read_text()
    line = f"{key} = {value}\n"
    head = re.search(rf"(?m)^\[{re.escape(table)}\][ \t]*\n", text)
    if head is None:
        raise SystemExit(f"{toml} has no [{table}] table")
    end = re.search(r"(?m)^\[", text[head.end() :])
    body_end = head.end() + (end.start() if end else len(text) - head.end())
    body = text[head.end() : body_end]
    if re.search(rf"(?m)^{key}\s*=", body):
        body = re.sub(rf"(?m)^{key}\s*=.*\n?", line, body, count=1)
    else:
        body = line + body
    toml.write_text(text[: head.end()] + body + text[body_end:])


def set_max_concurrent(coordinator_toml: Path, n: int) -> None:
    from fedstat.config import load_coordinator_config  # noqa: PLC0415

    set_table_key(coordinator_toml, "coordinator", "max_concurrent_jobs", n)
    got = load_coordinator_config(coordinator_toml).max_concurrent_jobs
    if got != n:
        raise SystemExit(f"could not set max_concurrent_jobs in {coordinator_toml} (reads back {got})")


def site_concurrency(ws: Path, n: int | None) -> dict[str, int | None]:
    """Set (when ``n``) and read back each site's max_concurrent_jobs; None where this version
    of the site agent has no such setting."""
    from fedstat.config import load_site_config  # noqa: PLC0415

    got: dict[str, int | None] = {}
    for site in SITES:
        toml = ws / "sites" / site / "site.toml"
        if n is not None:
            set_table_key(toml, "site", "max_concurrent_jobs", n)
        got[site] = getattr(load_site_config(toml), "max_concurrent_jobs", None)
    return got


def may_view_all(coordinator_toml: Path, analyst: str) -> bool:
    """Whether the coordinator's access settings let ``analyst`` see other analysts' jobs."""
    from fedstat.config import load_coordinator_config  # noqa: PLC0415

    access = getattr(load_coordinator_config(coordinator_toml), "access", None)
    return access is not None and "view-all" in access.roles(analyst)


def add_analysts(ws: Path, names: list[str]) -> dict[str, Path]:
    """One certificate and one profile per analyst, in the format of ``ws/analyst.toml``."""
    template = (ws / "analyst.toml").read_text()
    default = json.loads((ws / "poc.json").read_text())["analyst"]
    profiles = {}
    for name in names:
        pki.issue(ws / "ca", ws / "analysts", name=name, role="analyst")
        text = template.replace(f'"analyst/{default}.pem"', f'"analysts/{name}.pem"').replace(
            f'"analyst/{default}.key"', f'"analysts/{name}.key"'
        )
        if f"analysts/{name}.pem" not in text or f"analysts/{name}.key" not in text:
            raise SystemExit(f"unexpected analyst profile format in {ws / 'analyst.toml'}")
        profiles[name] = ws / f"{name}.toml"
        profiles[name].write_text(text)
    return profiles


# --- observing the coordinator ---------------------------------------------------------------


class Poller(threading.Thread):
    """Samples how many jobs run at once, two ways, until stopped.

    ``db``: a read-only snapshot of the coordinator's SQLite database -- one consistent count of
    RUNNING jobs (and, per site, of RUNNING jobs the site has accepted) at a time.
    ``api``: each analyst's ``Client.list_jobs()``; the analysts are asked one after another, so a
    sample may count a job that just ended together with one that just started.
    """

    def __init__(self, db_path: Path, clients: dict[str, Client], limit: int, interval: float = 0.1):
        super().__init__(name="poller", daemon=True)
        self.db_path, self.clients, self.limit, self.interval = db_path, clients, limit, interval
        self.stop = threading.Event()
        self.max_db = 0
        self.max_db_queued = 0
        self.max_site: dict[str, int] = {}
        self.max_api = 0
        self.samples_db = 0
        self.samples_api = 0
        self.errors: list[str] = []

    def _db_sample(self, con: sqlite3.Connection) -> None:
        counts = dict(con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        self.max_db = max(self.max_db, int(counts.get("RUNNING", 0)))
        self.max_db_queued = max(self.max_db_queued, int(counts.get("QUEUED", 0)))
        rows = con.execute(
            "SELECT s.site, COUNT(*) FROM job_sites s JOIN jobs j ON j.id = s.job_id "
            "WHERE j.state = 'RUNNING' AND s.state IN ('ACCEPTED', 'RUNNING') GROUP BY s.site"
        ).fetchall()
        for site, n in rows:
            self.max_site[site] = max(self.max_site.get(site, 0), int(n))
        self.samples_db += 1

    def _api_sample(self) -> None:
        running = 0
        for c in self.clients.values():
            running += sum(1 for j in c.list_jobs(self.limit) if j.state == "RUNNING")
        self.max_api = max(self.max_api, running)
        self.samples_api += 1

    def stored_jobs(self) -> dict[str, str] | None:
        """Every job in the coordinator's database, with its analyst (None if unreadable)."""
        try:
            con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                return dict(con.execute("SELECT id, analyst FROM jobs").fetchall())
            finally:
                con.close()
        except sqlite3.Error as exc:
            self.errors.append(f"database: {exc}")
            return None

    def run(self) -> None:
        con = None
        tick = 0
        while not self.stop.is_set():
            try:
                if con is None:
                    con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
                self._db_sample(con)
            except sqlite3.Error as exc:
                if len(self.errors) < 5:
                    self.errors.append(f"database: {exc}")
                con = None
            if tick % 5 == 0:
                try:
                    self._api_sample()
                except Exception as exc:  # noqa: BLE001 - keep sampling; report at the end
                    if len(self.errors) < 5:
                        self.errors.append(f"api: {exc}")
            tick += 1
            self.stop.wait(self.interval)
        if con is not None:
            con.close()


# --- running and checking jobs ----------------------------------------------------------------


def run_job(client: Client, job: Job, out_dir: Path, start: threading.Barrier | None) -> None:
    """Submit (after the barrier), wait, fetch. Everything that goes wrong ends in job.problems."""
    spec = job.kind.spec(job.out_name, job.privacy, job.block_size)

    def progress(status: object) -> None:
        state = status.state  # type: ignore[attr-defined]
        if state != "QUEUED" and job.running is None:
            job.running = time.monotonic()

    try:
        if start is not None:
            start.wait()
        job.submitted = time.monotonic()
        status = client.submit(spec)
        job.job_id = status.job_id
        final = client.wait(job.job_id, progress=progress, raise_on_failure=False)
        job.finished = time.monotonic()
        job.state, job.error = final.state, final.error
        if final.state != "DONE":
            job.problems.append(f"ended {final.state}: {final.error or 'no reason recorded'}")
            return
        if final.analyst != job.analyst:
            job.problems.append(f"status names analyst {final.analyst!r}, not {job.analyst!r}")
        files = client.fetch_results(job.job_id, out_dir / job.out_name)
        job.fetched = time.monotonic()
        job.files = {f.name: f for f in files}
        if sorted(job.files) != sorted(final.result_files):
            job.problems.append(f"fetched {sorted(job.files)} but the status lists {sorted(final.result_files)}")
    except Exception as exc:  # noqa: BLE001 - a load test reports every failure
        job.problems.append(f"{type(exc).__name__}: {exc}")


def check_job(job: Job) -> None:
    """The job's files are its own: provenance names its id, analyst and spec; names carry its prefix."""
    if job.state != "DONE" or job.problems:
        return
    for name in job.files:
        if not name.startswith(job.out_name + "."):
            job.problems.append(f"result file {name} does not carry this job's prefix {job.out_name}")
    prov_path = job.files.get(f"{job.out_name}.provenance.json")
    if prov_path is None:
        job.problems.append("no provenance.json among the results")
        return
    prov = json.loads(prov_path.read_text())
    expected = job.kind.spec(job.out_name, job.privacy, job.block_size)
    if prov.get("job_id") != job.job_id:
        job.problems.append(f"provenance names job {prov.get('job_id')!r}, not {job.job_id}")
    if prov.get("analyst") != job.analyst:
        job.problems.append(f"provenance names analyst {prov.get('analyst')!r}, not {job.analyst}")
    spec = prov.get("spec", {})
    for key in ("out_name", "privacy"):
        if spec.get(key) != getattr(expected, key):
            job.problems.append(f"provenance spec {key} is {spec.get(key)!r}, expected {getattr(expected, key)!r}")
    for key in ("analyses", "pheno_names", "covar_names"):
        if tuple(spec.get(key, ())) != getattr(expected, key):
            job.problems.append(f"provenance spec {key} is {spec.get(key)!r}, expected {getattr(expected, key)!r}")
    if sorted(prov.get("sites", {})) != sorted(SITES):
        job.problems.append(f"provenance sites are {sorted(prov.get('sites', {}))}, expected {sorted(SITES)}")
    for suffix in job.kind.suffixes:
        if f"{job.out_name}.{suffix}" not in job.files:
            job.problems.append(f"missing result file {job.out_name}.{suffix}")


def max_rel_diff(a: Path, b: Path) -> float:
    """Largest relative difference between the numeric columns of two tables of the same layout."""
    ta, tb = read_table(a), read_table(b)
    if list(ta.columns) != list(tb.columns) or len(ta) != len(tb):
        return float("inf")
    worst = 0.0
    for col in ta.columns:
        x, y = ta[col], tb[col]
        if x.dtype.kind in "fiu" and y.dtype.kind in "fiu":
            xa, ya = x.to_numpy(float), y.to_numpy(float)
            if not np.array_equal(np.isnan(xa), np.isnan(ya)):
                return float("inf")
            ok = ~np.isnan(xa)
            if ok.any():
                d = np.abs(xa[ok] - ya[ok]) / np.maximum(np.abs(ya[ok]), 1e-300)
                d[(xa[ok] == ya[ok])] = 0.0
                worst = max(worst, float(d.max()))
        elif not x.equals(y):
            return float("inf")
    return worst


def compare(jobs: list[Job], refs: dict[str, Job]) -> list[str]:
    """Every job's main tables against the serial reference of its kind (secagg).

    Same privacy mode, or an integer table: byte-identical. --glm under another mode: the
    numbers agree to 1e-6 relative (fixed-point encodings differ from plaintext floats)."""
    notes: list[str] = []
    glm_modes: dict[str, float] = {}
    for job in jobs:
        if job.state != "DONE" or job.problems:
            continue
        ref = refs[job.kind.name]
        for suffix in job.kind.suffixes:
            mine = job.files.get(f"{job.out_name}.{suffix}")
            theirs = ref.files.get(f"{ref.out_name}.{suffix}")
            if mine is None or theirs is None:
                continue
            if mine.read_bytes() == theirs.read_bytes():
                if not job.kind.integer:
                    glm_modes.setdefault(job.privacy, 0.0)
                continue
            if job.kind.integer or job.privacy == ref.privacy:
                job.problems.append(f"{mine.name} differs from the reference job's {theirs.name}")
                continue
            d = max_rel_diff(mine, theirs)
            glm_modes[job.privacy] = max(glm_modes.get(job.privacy, 0.0), d)
            if not d <= 1e-6:
                job.problems.append(f"{mine.name} differs from the reference {theirs.name}: max rel. diff {d:.3g}")
    for mode, d in sorted(glm_modes.items()):
        how = "byte-identical" if d == 0 else f"max relative difference {d:.2g}"
        notes.append(f"--glm under {mode} vs the secagg reference: {how}")
    return notes


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q, method="linear")) if values else float("nan")


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, temporary = prepare_workdir(args.workdir)
    (workdir / MARKER).write_text("made by scripts/load.py; safe to delete\n")
    ws = workdir / "consortium"
    started_daemons = False
    t_all = time.monotonic()
    try:
        print(f"== simulating {args.samples} participants x {args.variants} variants at 3 sites", flush=True)
        t0 = time.monotonic()
        data = simulate(workdir, args.samples, args.variants, args.seed)
        print(f"   done in {time.monotonic() - t0:.1f} s", flush=True)

        print("== preparing the consortium workspace", flush=True)
        poc.prepare(ws, data)
        coordinator_toml = ws / poc.COORDINATOR / "coordinator.toml"
        set_max_concurrent(coordinator_toml, args.concurrent)
        site_limits = site_concurrency(ws, args.site_concurrent)
        names = list(ANALYST_NAMES[: args.analysts])
        profiles = add_analysts(ws, names)
        print(
            f"   coordinator max_concurrent_jobs = {args.concurrent}; sites' max_concurrent_jobs = "
            + ", ".join(f"{k} {v if v is not None else '(no such setting)'}" for k, v in site_limits.items())
            + f"; analysts: {', '.join(names)}",
            flush=True,
        )

        print("== starting the coordinator and 3 site agents", flush=True)
        started_daemons = True
        poc.start(ws)

        privacies = args.privacy
        results = workdir / "results"

        print(f"== reference: one job of each of {len(KINDS)} kinds, one after another (secagg)", flush=True)
        refs: dict[str, Job] = {}
        with Client.from_profile(ws / "analyst.toml") as ref_client:
            default_analyst = json.loads((ws / "poc.json").read_text())["analyst"]
            for kind in KINDS:
                ref = Job(-1, default_analyst, kind, "secagg", f"ref-{kind.name}", args.block_size)
                run_job(ref_client, ref, results / "reference", None)
                check_job(ref)
                took = (ref.finished or time.monotonic()) - ref.submitted
                print(f"   {kind.name:<7} {ref.job_id} {ref.state or 'not finished'} in {took:.1f} s", flush=True)
                if ref.problems:
                    print("reference job failed: " + "; ".join(ref.problems), file=sys.stderr)
                    return 1
                refs[kind.name] = ref
        serial_mean = statistics.mean(r.finished - r.submitted for r in refs.values())  # type: ignore[operator]

        jobs = []
        for i in range(args.jobs):
            kind = KINDS[i % len(KINDS)]
            privacy = privacies[(i // len(KINDS)) % len(privacies)]
            analyst = names[i % len(names)]
            jobs.append(Job(i, analyst, kind, privacy, f"load{i:03d}-{analyst}-{kind.name}-{privacy}", args.block_size))

        clients = {n: Client.from_profile(profiles[n]) for n in names}
        try:
            from fedstat.config import load_coordinator_config  # noqa: PLC0415

            db_path = load_coordinator_config(coordinator_toml).db_path
            poller = Poller(db_path, clients, limit=args.jobs + len(KINDS) + 10)
            barrier = threading.Barrier(len(jobs))
            threads = [
                threading.Thread(
                    target=run_job,
                    args=(clients[j.analyst], j, results / "load", barrier),
                    name=f"job{j.index}",
                    daemon=True,
                )
                for j in jobs
            ]
            print(
                f"== load: {len(jobs)} jobs at once from {len(names)} analysts "
                f"({', '.join(k.name for k in KINDS)} x {', '.join(privacies)}), "
                f"{args.concurrent} may run at a time",
                flush=True,
            )
            poller.start()
            t_load = time.monotonic()
            for t in threads:
                t.start()
            deadline = t_load + args.timeout
            last_report = t_load
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                for t in threads:
                    t.join(timeout=0.5)
                    if time.monotonic() - last_report >= 10:
                        done = sum(1 for j in jobs if j.finished is not None)
                        print(
                            f"   {time.monotonic() - t_load:5.0f} s: {done}/{len(jobs)} finished, "
                            f"most running at once so far {poller.max_db}",
                            flush=True,
                        )
                        last_report = time.monotonic()
                    if time.monotonic() >= deadline:
                        break
            wall = max((j.finished for j in jobs if j.finished is not None), default=time.monotonic()) - t_load
            poller.stop.set()
            poller.join(timeout=10)

            hung = [j for j in jobs if j.finished is None and not j.problems]
            for j in hung:
                try:
                    st = clients[j.analyst].get(j.job_id) if j.job_id else None
                    where = f"{st.state} at {st.phase!r}" if st is not None else "never submitted"
                except Exception as exc:  # noqa: BLE001
                    where = f"status unknown ({exc})"
                j.problems.append(f"not finished after {args.timeout:.0f} s: {where}")

            # nothing lost, nothing leaked: each analyst lists exactly their own jobs
            listed: dict[str, dict[str, str]] = {}
            for n, c in clients.items():
                listed[n] = {s.job_id: s.analyst for s in c.list_jobs(args.jobs + len(KINDS) + 10)}
        finally:
            for c in clients.values():
                c.close()

        global_problems: list[str] = []
        owner = {j.job_id: j.analyst for j in jobs if j.job_id}
        owner.update({r.job_id: r.analyst for r in refs.values()})
        for n in names:
            mine = {j.job_id for j in jobs if j.analyst == n and j.job_id}
            lost = sorted(mine - set(listed[n]))
            if lost:
                global_problems.append(f"analyst {n}'s job list lacks their job(s) {', '.join(lost)}")
            foreign = sorted(set(listed[n]) - mine)
            if foreign and not may_view_all(coordinator_toml, n):
                global_problems.append(f"analyst {n} (view-own) is shown others' job(s) {', '.join(foreign)}")
            for job_id, who in listed[n].items():
                if job_id in owner and who != owner[job_id]:
                    global_problems.append(f"job {job_id} is listed as {who!r}'s but {owner[job_id]} submitted it")
                elif job_id not in owner:
                    global_problems.append(f"analyst {n}'s job list shows job {job_id}, which nobody submitted")
        ids = [j.job_id for j in jobs if j.job_id]
        if len(set(ids)) != len(ids):
            global_problems.append("two submissions were given the same job id")
        stored = poller.stored_jobs()
        if stored is not None and stored != owner:
            missing = sorted(set(owner) - set(stored))
            extra = sorted(set(stored) - set(owner))
            wrong = sorted(k for k in set(owner) & set(stored) if owner[k] != stored[k])
            global_problems.append(
                f"the coordinator's database: missing {missing}, unexpected {extra}, wrong analyst {wrong}"
            )

        for j in jobs:
            check_job(j)
        notes = compare(jobs, refs)
        if poller.max_db > args.concurrent:
            global_problems.append(
                f"{poller.max_db} jobs were RUNNING at once, above max_concurrent_jobs = {args.concurrent}"
            )
        for site, n in poller.max_site.items():
            if n > args.concurrent:
                global_problems.append(f"site {site} worked on {n} jobs at once, above {args.concurrent}")
        if poller.samples_db == 0:
            global_problems.append("could not sample the coordinator's job states: " + "; ".join(poller.errors))

        # --- report ---
        latencies = [j.finished - j.submitted for j in jobs if j.finished is not None]
        queued = [j.running - j.submitted for j in jobs if j.running is not None]
        running = [j.finished - j.running for j in jobs if j.finished is not None and j.running is not None]
        ok = [j for j in jobs if j.state == "DONE" and not j.problems]
        failures = [j for j in jobs if j.problems]

        print("\n== report")
        print(f"jobs                 {len(jobs)} submitted at once, {len(ok)} completed correctly")
        kinds = {k.name: sum(1 for j in jobs if j.kind is k) for k in KINDS}
        print("  by kind            " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
        print("  by privacy         " + ", ".join(f"{p} {sum(1 for j in jobs if j.privacy == p)}" for p in privacies))
        print("  by analyst         " + ", ".join(f"{n} {sum(1 for j in jobs if j.analyst == n)}" for n in names))
        print(f"analysts             {len(names)} ({', '.join(names)}), each with its own certificate and Client")
        print(
            f"sites                {len(SITES)} ({', '.join(f'{s}:{f}' for s, f in SITES.items())}), "
            f"{args.samples} participants x {args.variants} variants"
        )
        print(f"concurrency limit    coordinator max_concurrent_jobs = {args.concurrent}")
        if any(v is not None for v in site_limits.values()):
            print(
                "site limits          max_concurrent_jobs (rounds computed at once) "
                + ", ".join(f"{k} {v}" for k, v in site_limits.items())
            )
        print(
            f"most RUNNING at once {poller.max_db} (database snapshots, {poller.samples_db} samples); "
            f"{poller.max_api} (analysts' job lists, asked one after another, {poller.samples_api} samples); "
            f"most QUEUED at once {poller.max_db_queued}"
        )
        if poller.max_site:
            print(
                "most jobs at a site  "
                + ", ".join(f"{s} {n}" for s, n in sorted(poller.max_site.items()))
                + " (accepted or running, at once)"
            )
        print(
            f"wall time            {wall:.1f} s for the load (first submit to last job finished); "
            f"{time.monotonic() - t_all:.1f} s in all"
        )
        if latencies:
            print(
                "latency per job      submit->finished: "
                f"min {min(latencies):.1f} s, median {statistics.median(latencies):.1f} s, "
                f"p95 {pct(latencies, 95):.1f} s, max {max(latencies):.1f} s"
            )
        if queued and running:
            print(
                f"  of which queued    median {statistics.median(queued):.1f} s, max {max(queued):.1f} s; "
                f"running median {statistics.median(running):.1f} s, max {max(running):.1f} s"
            )
        print(f"serial reference     {serial_mean:.1f} s per job on average (one at a time)")
        if wall > 0:
            print(f"throughput           {len(ok) / wall * 60:.1f} jobs/min")
        for note in notes:
            print(f"check                {note}")
        if poller.errors:
            print("poller errors        " + "; ".join(poller.errors))

        if failures or global_problems or len(ok) != len(jobs):
            print(f"\nFAILED: {len(jobs) - len(ok)} of {len(jobs)} jobs did not complete correctly")
            for j in failures:
                for p in j.problems:
                    print(f"  {j.label}: {p}")
            for p in global_problems:
                print(f"  {p}")
            print(f"logs: {ws / 'logs'}" + ("" if args.keep or not temporary else " (add --keep to keep them)"))
            return 1
        print(
            f"\nall {len(jobs)} jobs completed correctly: each DONE, each provenance.json names its own job id "
            f"and analyst, no job lost or listed under another analyst, every table equals the serial "
            f"reference of its kind, at most {poller.max_db} of {args.concurrent} allowed ran at once"
        )
        return 0
    finally:
        if started_daemons:
            stopped = poc.stop(ws)
            print(f"== stopped: {', '.join(stopped) if stopped else 'nothing was running'}", flush=True)
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"working directory kept: {workdir}")


if __name__ == "__main__":
    sys.exit(main())
