"""The job engine: runs federated jobs through offer, harmonization, rounds and result writing.

Each job runs on a worker thread and talks to the sites only through their sessions' outboxes
and its own inbox. Every phase change is written to the store first, so the analyst sees
progress and a failure always leaves the job FAILED with a reason that names the site.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import fedstat
from fedstat.bounds import round_arrays
from fedstat.computations import COMPUTATIONS
from fedstat.config import CoordinatorConfig
from fedstat.counts import WITHHELD, describe_count
from fedstat.data.categories import merged_levels
from fedstat.data.variants import Harmonization, VariantTable
from fedstat.errors import (
    FedstatError,
    JobFailed,
    PolicyRefused,
    ProtocolError,
    SiteDropped,
    SiteUnavailable,
)
from fedstat.formats.atomic import atomic_write_text
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec, RoundPlan, plan_job, seeded_randomness
from fedstat.pki import RevocationList
from fedstat.privacy.base import RoundContext
from fedstat.privacy.contribution import ChunkDigest, Contribution
from fedstat.privacy.modes import get_mode
from fedstat.privacy.paillier import job_public_key
from fedstat.protocol import (
    chunk_from_pb,
    contribution_from_pb,
    plan_chunks,
    round_data_messages,
    round_digest,
    spec_to_pb,
)
from fedstat.report.gwas import JobContext
from fedstat.wire import site_pb2

from .decryptors import DecryptorRegistry
from .harmonizer import Exchange, Revealed, harmonize_revealed, select_variants, site_rows, variants_digest
from .sessions import Inbox, SiteRegistry, SiteSession
from .store import CANCELLED, DONE, FAILED, RUNNING, Store

log = logging.getLogger("fedstat.coordinator")


class _Cancelled(Exception):
    pass


class JobEngine:
    """Accepts jobs, runs them on a bounded pool of worker threads, records everything."""

    def __init__(
        self,
        config: CoordinatorConfig,
        store: Store,
        registry: SiteRegistry,
        *,
        revocations: RevocationList | None = None,
    ):
        self.config, self.store, self.registry = config, store, registry
        self.revocations = revocations
        self.decryptors = DecryptorRegistry()  # --privacy paillier: the analysts' clients holding the keys
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrent_jobs, thread_name_prefix="job")
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._shutting_down = False

    def submit(self, spec: JobSpec, analyst: str, *, certificate: bytes = b"", signature: bytes = b"") -> str:
        """Persist and start a job; ``signature`` is the analyst's over ``spec.signing_bytes()``,
        forwarded in every offer (sites verify it; the coordinator holds no key to make one)."""
        spec = spec.validated()
        if get_mode(spec.privacy).needs_public_key:
            job_public_key(spec.options)  # the analyst's key must come with the job
        job_id = self.store.create_job(analyst, spec.to_json(), certificate=certificate, signature=signature)
        self._start(job_id)
        return job_id

    def resume_unfinished(self) -> None:
        """Jobs left QUEUED or RUNNING by a previous process (a crash, a kill -9, a drained
        shutdown) run again: QUEUED ones from the start, RUNNING ones from their last completed
        round, once their sites have reconnected (each round's totals are in the store)."""
        for job_id in self.store.unfinished_jobs():
            job = self.store.get_job(job_id)
            if job.state == RUNNING:
                self.store.log(job_id, "the coordinator restarted; resuming the job")
            self._start(job_id)

    def _start(self, job_id: str) -> None:
        with self._lock:
            self._cancel[job_id] = threading.Event()
        self._pool.submit(self._run, job_id)

    def cancel(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job.finished:
            return
        with self._lock:
            ev = self._cancel.get(job_id)
        if ev is not None:
            ev.set()
        if self.store.finish_job(job_id, CANCELLED, error="cancelled by the analyst"):
            self.store.log(job_id, "cancelled by the analyst")
            for s in job.sites:
                session = self.registry.get(s.site)
                if session is not None:
                    session.send(
                        site_pb2.CoordinatorMessage(cancel=site_pb2.CancelJob(job_id=job_id, reason="cancelled"))
                    )

    def shutdown(self) -> None:
        """Stop every job at its next step; RUNNING jobs stay RUNNING and resume at the next start."""
        self._shutting_down = True
        with self._lock:
            events = list(self._cancel.values())
        for ev in events:
            ev.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job_id: str) -> None:
        with self._lock:
            cancel = self._cancel[job_id]
        inbox = self.registry.open_inbox(job_id)
        runner = _JobRunner(self, job_id, inbox, cancel)
        try:
            runner.run()
        except _Cancelled:
            # by the analyst (already CANCELLED) or by a coordinator shutdown (still RUNNING: it
            # resumes from its last completed round when the coordinator starts again)
            if self._shutting_down and not self.store.get_job(job_id).finished:
                self.store.log(job_id, "the coordinator is shutting down; the job resumes when it restarts")
                runner.notify_sites_cancel("the coordinator is shutting down; the job resumes when it restarts")
            else:
                runner.notify_sites_cancel("cancelled")
        except FedstatError as exc:
            reason = str(exc)
            log.warning("job %s failed: %s", job_id, reason)
            if self.store.finish_job(job_id, FAILED, error=reason):
                self.store.log(job_id, f"failed: {reason}")
            runner.notify_sites_cancel(reason)
        except Exception as exc:  # noqa: BLE001 - last resort: never leave a job RUNNING
            log.exception("job %s: internal error", job_id)
            reason = f"internal error in the coordinator ({type(exc).__name__}); see the coordinator log"
            self.store.finish_job(job_id, FAILED, error=reason)
            runner.notify_sites_cancel("coordinator internal error")
        finally:
            self.registry.close_inbox(job_id)
            self.decryptors.close_job(job_id)
            if self.store.get_job(job_id).finished:
                self.store.drop_round_totals(job_id)
            with self._lock:
                self._cancel.pop(job_id, None)


class _JobRunner:
    """One job's run. Phases: offer → harmonize → rounds → write."""

    def __init__(self, engine: JobEngine, job_id: str, inbox: Inbox, cancel: threading.Event):
        self.engine, self.job_id, self.inbox, self.cancel = engine, job_id, inbox, cancel
        self.store = engine.store
        self.sites: dict[str, SiteSession] = {}
        # participants per site now (after any --mind), as the site reports them: rounded down to a
        # multiple of granularity[site] (0 there: withheld under dp); never exact unless that is 1
        self.cohort: dict[str, int] = {}
        self.granularity: dict[str, int] = {}
        self.accepted: dict[str, str] = {}  # each site's cohort fingerprint when it accepted the job
        self.state_rounds: list[tuple[int, RoundPlan]] = []  # rounds whose effect stays at the sites
        self.min_cell: dict[str, int] = {}  # each accepting site's min_cell_count (disclosure control)
        self.levels: dict[str, dict[str, tuple[str, ...]]] = {}  # each site's categories of categorical covariates
        self.settled: set[str] = set()  # sites that refused or failed: keep their state
        self.round_no = 0
        self.unmasked = False  # some round's totals have been combined (released to the coordinator)
        self.attempt = 0  # bumped when a round is retried or the analysis restarts without a dropped site
        self.analyst = ""
        self.certificate = b""  # the analyst's certificate, forwarded with offers
        self.signature = b""  # the analyst's signature of the spec, forwarded with offers
        self.variants_digest = ""
        self.tables: dict[str, VariantTable] = {}  # per site, the variant keys it revealed (the intersection)
        self.harmonized: Harmonization | None = None
        self.spec = JobSpec(analyses=())  # the job's spec, once harmonize() has run
        self.exchanges = 0  # private harmonization exchanges run (each has its own number)
        self.plan_exchange: dict[str, int] = {}  # per site, the exchange its plan's rows refer to

    # --- helpers ----------------------------------------------------------------------------

    def log(self, line: str) -> None:
        self.store.log(self.job_id, line)

    def phase(self, phase: str, **fields: Any) -> None:
        self.store.update_job(self.job_id, phase=phase, **fields)

    def send(self, site: str, **kind: Any) -> None:
        session = self.sites[site]
        if session.closed.is_set():
            raise SiteDropped(site, f"site {site} disconnected")
        session.send(site_pb2.CoordinatorMessage(**kind))

    def notify_sites_cancel(self, reason: str) -> None:
        for name, session in self.sites.items():
            if name in self.settled:
                continue
            if not session.closed.is_set():
                session.send(site_pb2.CoordinatorMessage(cancel=site_pb2.CancelJob(job_id=self.job_id, reason=reason)))
            self.store.set_site(self.job_id, name, state="CANCELLED")

    def receive(self, deadline: float, what: str, pending: Callable[[], list[str]]) -> tuple[str, site_pb2.SiteMessage]:
        """Next message for this job; raises on cancel, deadline, disconnect or a site error."""
        while True:
            if self.cancel.is_set():
                raise _Cancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SiteUnavailable(f"timed out waiting for {what} from site(s) {', '.join(pending())}")
            try:
                site, msg = self.inbox.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if site not in self.sites:
                continue
            if msg is None:
                if self.sites[site] is self.engine.registry.get(site):
                    continue  # an older session of a site that is still connected
                self.settled.add(site)
                self.store.set_site(self.job_id, site, state="FAILED", detail="disconnected")
                raise SiteDropped(site, f"site {site} disconnected during {what}")
            if msg.WhichOneof("kind") == "error":
                err = msg.error
                self.settled.add(site)
                self.store.set_site(self.job_id, site, state="FAILED", detail=err.message)
                raise JobFailed(f"site {site}: {err.message}")
            return site, msg

    # --- phases -------------------------------------------------------------------------

    def run(self) -> None:
        job = self.store.get_job(self.job_id)
        spec = JobSpec.from_json(job.spec)
        self.certificate, last_attempt, self.variants_digest, self.signature = self.store.job_extra(self.job_id)
        resumed = job.state == RUNNING  # left RUNNING by a coordinator that stopped or crashed
        done = self.store.completed_rounds(self.job_id) if resumed else []
        if resumed:
            self.attempt = last_attempt + 1  # fresh round keys: never reuse an attempt's masks
        self.store.update_job(self.job_id, state=RUNNING, phase="offer")
        if not resumed:
            self.log(
                f"job started by {job.analyst}: {' '.join('--' + a for a in spec.analyses)} privacy={spec.privacy} "
                f"purpose={spec.purpose or 'GRU'}"
            )
        self.choose_sites(spec, resume_from=job if resumed else None, done=done)
        # before any offer: a site must not spend budget or effort on a job that cannot be released
        if get_mode(spec.privacy).protects_site_sums and len(self.sites) < self.engine.config.min_sites:
            raise PolicyRefused(
                f"privacy mode {spec.privacy} releases sums over at least {self.engine.config.min_sites} sites "
                f"(min_sites); this job has {len(self.sites)}: {', '.join(sorted(self.sites))}"
            )
        self.analyst = job.analyst
        before = {s.site: s.cohort_fingerprint for s in job.sites} if resumed else None
        self.offer(list(self.sites), spec, resumed=resumed, previous=before)
        harmonized = self.harmonize(spec)
        sums = None
        while True:
            analysis = plan_job(spec, self.job_context(spec, job), harmonized.variants)
            if done:
                sums = self.replay(analysis, done)
                done = []
                self.restore_site_state(spec, len(harmonized.variants))
            try:
                self.run_rounds(spec, analysis, len(harmonized.variants), sums)
                break
            except SiteDropped as exc:
                self.drop_site(spec, exc)
                sums = None
        for line in analysis.log_lines():
            self.log(line)
        self.phase("write")
        t0 = time.monotonic()
        files = self.write_results(spec, analysis, harmonized.variants)
        self.log(f"results written in {time.monotonic() - t0:.2f} s")
        self.store.update_job(self.job_id, result_files=[f.name for f in files])
        for name in self.sites:
            self.store.set_site(self.job_id, name, state="DONE")
        if self.store.finish_job(self.job_id, DONE):
            self.log(f"done: {len(files)} result file(s)")
        for session in self.sites.values():  # the sites free the job (and any encryptor)
            session.send(site_pb2.CoordinatorMessage(cancel=site_pb2.CancelJob(job_id=self.job_id, reason="done")))

    def replay(self, analysis: Any, done: list[tuple[int, str, tuple[str, ...], dict[str, np.ndarray]]]) -> Any:
        """Bring a resumed job's analysis to where it was: feed it the stored totals of every
        completed round (the analyses are deterministic given their inputs), then go on live."""
        sums = None
        for round_no, computation, participants, totals in done:
            plan = analysis.next_round(sums)
            if plan is None or plan.computation != computation or set(participants) != set(self.sites):
                raise JobFailed(
                    f"cannot resume after round {round_no}: the stored round does not match the job's plan; "
                    "submit the job again"
                )
            if COMPUTATIONS[plan.computation].changes_site_state:
                self.state_rounds.append((round_no, plan))
            sums = totals
        self.round_no = done[-1][0]
        self.unmasked = True
        self.log(f"resumed after round {self.round_no} from the stored totals; going on with attempt {self.attempt}")
        return sums

    def job_context(self, spec: JobSpec, job: Any) -> JobContext:
        return JobContext(
            job_id=self.job_id,
            created_at=job.created_at,
            analyst=job.analyst,
            privacy=spec.privacy,
            sites=tuple((s, self.cohort.get(s, 0)) for s in sorted(self.sites)),
            spec=spec.to_json(),
            genome_assembly=spec.options.get("genome_assembly", "NR"),
            min_cell_count=max((self.min_cell.get(s, 0) for s in self.sites), default=0),
            categories=merged_levels(spec.covar_names, {s: self.levels.get(s, {}) for s in sorted(self.sites)}),
        )

    def run_rounds(self, spec: JobSpec, analysis: Any, n_variants: int, sums: Any = None) -> None:
        first = self.round_no + 1 if sums is None else self.round_no
        while True:
            t0 = time.monotonic()
            plan = analysis.next_round(sums)
            if self.round_no >= first:
                self.log(f"round {self.round_no} combined and analysed in {time.monotonic() - t0:.2f} s")
            if plan is None:
                return
            self.round_no += 1
            t0 = time.monotonic()
            while True:
                try:
                    sums = self.run_round(spec, self.round_no, plan, n_variants)
                    break
                except SiteDropped as exc:
                    self.recover_site(spec, exc)  # raises SiteDropped when the site does not come back
                    self.attempt += 1
                    self.restore_site_state(spec, n_variants)
                    self.log(f"retrying round {self.round_no} as attempt {self.attempt} (fresh keys)")
            self.unmasked = True
            if COMPUTATIONS[plan.computation].changes_site_state:
                self.state_rounds.append((self.round_no, plan))
            seconds = time.monotonic() - t0
            self.store.save_round(
                self.job_id,
                self.round_no,
                attempt=self.attempt,
                computation=plan.computation,
                participants=tuple(sorted(self.sites)),
                seconds=seconds,
                totals=sums,
            )
            self.log(f"round {self.round_no} sums received from all sites in {seconds:.2f} s")

    def restore_site_state(self, spec: JobSpec, n_variants: int) -> None:
        """Sites offered the job again start from their original cohort: run the earlier rounds that
        changed it (--mind, PC scores) again, in order, before going on (each is idempotent at the
        sites that still hold their state)."""
        for round_no, plan in self.state_rounds:
            self.log(f"round {round_no} ({plan.computation}) run again so every site holds its result")
            self.run_round(spec, round_no, plan, n_variants, combine=False)  # its totals are known already

    def recover_site(self, spec: JobSpec, exc: SiteDropped) -> None:
        """A site dropped mid-round: wait up to ``site_reconnect_s`` for it to reconnect, offer it the
        job again (its DP budget is charged once per job, so never twice) and send it its variant
        plan; every site then retries the round under a new attempt number."""
        site = exc.site
        wait = self.engine.config.site_reconnect_s
        self.store.set_site(self.job_id, site, state="RECONNECTING", detail="disconnected")
        self.log(f"site {site} disconnected during round {self.round_no}; waiting up to {wait:g} s for it to reconnect")
        session = self.engine.registry.wait_for(site, wait, cancelled=self.cancel)
        if self.cancel.is_set():
            raise _Cancelled()
        if session is None:
            raise SiteDropped(
                site, f"site {site} disconnected during round {self.round_no} and did not reconnect within {wait:g} s"
            )
        self.sites[site] = session
        self.settled.discard(site)
        self.offer([site], spec, resumed=True, previous={site: self.accepted.get(site, "")})
        self.send_plan(site, recheck=True)
        self.log(f"site {site} reconnected and accepted the job again")

    def drop_site(self, spec: JobSpec, exc: SiteDropped) -> None:
        """Go on without a site that dropped and did not come back in time: every round restarts
        (fresh keys) over the remaining sites, as long as the consortium's minimum still holds."""
        site = exc.site
        self.settled.add(site)
        self.store.set_site(self.job_id, site, state="FAILED", detail="disconnected")
        remaining = sorted(s for s in self.sites if s != site)
        minimum = self.engine.config.min_sites  # the consortium's floor for going on without a site
        if self.unmasked:
            # the totals of a completed round include the site: the same rounds over the others
            # would differ from them by exactly its sums (Bonawitz et al. 2017), so never re-run
            raise SiteUnavailable(
                f"{exc}; round totals including it were already released, and the same rounds over the remaining "
                "sites would reveal its sums by difference, so the job stops here. Submit it again when the site "
                "is back (each site's release ledger decides on the new job)"
            ) from None
        if spec.sites or len(remaining) < minimum:
            why = "the job names its sites" if spec.sites else f"{len(remaining)} would remain, min_sites is {minimum}"
            raise SiteUnavailable(f"{exc} ({why})") from None
        del self.sites[site]
        self.cohort.pop(site, None)
        self.state_rounds = []  # the analysis starts again, and with it every round
        self.attempt += 1
        self.store.drop_round_totals(self.job_id)  # the rounds so far included the dropped site
        self.log(
            f"{exc}; restarting the analysis without it over {', '.join(remaining)} "
            f"(attempt {self.attempt}, fresh keys)"
        )

    def choose_sites(self, spec: JobSpec, *, resume_from: Any = None, done: list[Any] | None = None) -> None:
        if resume_from is not None:  # the sites the job ran on, once they have reconnected
            expected = (
                list(done[-1][2])
                if done
                else [s.site for s in resume_from.sites if s.state not in ("REFUSED", "FAILED", "CANCELLED")]
            )
            expected = expected or list(spec.sites)
            wait = self.engine.config.site_reconnect_s
            self.phase("waiting for sites")
            for name in expected:
                if self.engine.registry.wait_for(name, wait, cancelled=self.cancel) is None:
                    if self.cancel.is_set():
                        raise _Cancelled()
                    raise SiteUnavailable(
                        f"cannot resume: site {name} did not reconnect within {wait:g} s of the coordinator's restart"
                    )
            spec = replace(spec, sites=tuple(expected)) if expected else spec
        connected = {s.name: s for s in self.engine.registry.connected()}
        revoked = [n for n, s in connected.items() if self.revoked(s)]
        for name in revoked:
            self.log(f"site {name}: its certificate has been revoked; it takes no part")
            connected[name].close()
            del connected[name]
        if spec.sites:
            missing = [s for s in spec.sites if s not in connected]
            if missing:
                raise SiteUnavailable(
                    f"site(s) {', '.join(missing)} not connected; connected: {', '.join(connected) or 'none'}"
                )
            self.sites = {s: connected[s] for s in spec.sites}
        else:
            self.sites = connected
        if not self.sites:
            raise SiteUnavailable("no site is connected to the coordinator")
        for name in self.sites:
            self.store.set_site(self.job_id, name, state="OFFERED")
        self.log(f"sites: {', '.join(self.sites)}")

    def revoked(self, session: SiteSession) -> bool:
        revocations = self.engine.revocations
        if revocations is None or not session.certificate:
            return False
        try:
            return revocations.is_revoked_pem(session.certificate)
        except FedstatError:
            return True  # an unreadable CRL: fail closed

    def offer(self, names: list[str], spec: JobSpec, *, resumed: bool, previous: dict[str, str] | None = None) -> None:
        """Offer the job to ``names`` and collect their decisions. A re-offer (``resumed``) must find
        each site's cohort as it was (the totals of earlier rounds were computed over it): ``previous``
        holds each site's keyed cohort fingerprint, since no site reports its exact cohort size."""
        roles = sorted(self.engine.config.access.roles(self.analyst))
        offer = site_pb2.JobOffer(
            job_id=self.job_id,
            spec=spec_to_pb(spec),
            analyst=self.analyst,
            analyst_certificate=self.certificate,
            analyst_roles=roles,
            resumed=resumed,
            spec_signature=self.signature,
        )
        for name in names:
            self.send(name, offer=offer)
        waiting = set(names)
        deadline = time.monotonic() + self.engine.config.offer_timeout_s
        while waiting:
            site, msg = self.receive(deadline, "a decision on the job", lambda: sorted(waiting))
            kind = msg.WhichOneof("kind")
            if site not in waiting:
                continue  # another site's late message of an abandoned round attempt
            if kind != "decision":
                raise ProtocolError(f"site {site} sent {kind} before deciding on the job")
            d = msg.decision
            if not d.accept:
                self.settled.add(site)
                self.store.set_site(self.job_id, site, state="REFUSED", detail=d.reason)
                raise PolicyRefused(f"site {site} refused the job: {d.reason}")
            before = (previous or {}).get(site)
            if before and before != d.cohort_fingerprint:
                raise JobFailed(
                    f"cannot go on: site {site}'s cohort changed since the job's earlier rounds (its cohort "
                    "fingerprint differs: consent withdrawn or data changed); submit the job again"
                )
            g = int(d.count_granularity)
            self.cohort[site], self.granularity[site] = int(d.cohort_size), g
            self.accepted[site] = d.cohort_fingerprint
            self.min_cell[site] = int(d.min_cell_count)
            self.levels[site] = {c.covariate: tuple(c.levels) for c in d.covariate_levels}
            self.store.set_site(
                self.job_id,
                site,
                state="ACCEPTED",
                cohort_size=int(d.cohort_size),
                count_granularity=g,
                cohort_fingerprint=d.cohort_fingerprint,
            )
            consent = (
                f", {describe_count(int(d.consent_excluded), g, 'excluded by consent')}"
                if g != WITHHELD and (d.consent_excluded or g > 1)
                else ""
            )
            again = " again" if resumed else ""
            self.log(
                f"site {site} accepted{again}: {describe_count(int(d.cohort_size), g)}{consent}, {d.n_variants} variants"
            )
            if d.dp_budget:
                self.log(f"site {site} differential privacy budget: {d.dp_budget}")
            waiting.discard(site)

    def harmonize(self, spec: JobSpec) -> Harmonization:
        """Harmonize the sites' variants and select the job's (:func:`coordinator.harmonizer.select_variants`)."""
        self.phase("harmonize")
        t0 = time.monotonic()
        revealed = self.private_keys(list(self.sites))
        h = harmonize_revealed(revealed)
        n_harmonized = len(h.variants)
        h, selected = select_variants(h, spec)
        self.spec = spec  # a re-harmonization after a reconnect selects as this one did
        digest = variants_digest(h.variants)
        if self.variants_digest and digest != self.variants_digest:
            raise JobFailed("cannot resume: the sites' variants changed since the job started; submit the job again")
        if not self.variants_digest:
            self.store.set_job_extra(self.job_id, variants_digest=digest)
            self.variants_digest = digest
        self.tables, self.harmonized = revealed.tables, h
        self.plan_exchange = dict.fromkeys(self.sites, self.exchanges)
        self.log(
            f"harmonized {n_harmonized} variants present at all {len(self.sites)} sites; "
            f"{h.n_excluded} excluded (absent at some sites) in {time.monotonic() - t0:.2f} s"
        )
        for line in selected:
            self.log(line)
        for name in self.sites:
            plan = h.plans[name]
            if plan.n_flipped:
                self.log(f"site {name}: {plan.n_flipped} variants have REF/ALT swapped; flipped at the site")
            if h.n_duplicate[name]:
                self.log(f"site {name}: {h.n_duplicate[name]} duplicated variants excluded")
            self.send_plan(name)
        return h

    def private_keys(self, names: list[str]) -> Revealed:
        """Run one private harmonization exchange (fedstat.privacy.psi) among ``names``: the sites
        reveal the plaintext keys of the variants present at all of them, nothing else."""
        self.exchanges += 1
        revealed = Exchange(self, names, self.exchanges, self.engine.config.round_timeout_s).run()
        for line in revealed.file_notes():
            self.log(line)
        return revealed

    def send_plan(self, site: str, *, recheck: bool = False) -> None:
        """Send a site its part of the harmonization. After a reconnect the site no longer holds the
        exchange the plan was made from: harmonize again (a fresh exchange among all the job's sites)
        and check that the variant list and the site's variants in it are unchanged."""
        assert self.harmonized is not None
        if recheck:
            old = site_rows(self.tables[site], self.harmonized.plans[site].local_index)
            revealed = self.private_keys(list(self.sites))
            again, _ = select_variants(harmonize_revealed(revealed), self.spec)
            new = site_rows(revealed.tables[site], again.plans[site].local_index)
            if variants_digest(again.variants) != self.variants_digest or variants_digest(new) != variants_digest(old):
                raise JobFailed(f"site {site}'s variants changed while the job ran; submit the job again")
            self.tables[site] = revealed.tables[site]
            self.harmonized = replace(self.harmonized, plans={**self.harmonized.plans, site: again.plans[site]})
            self.plan_exchange[site] = self.exchanges
        for chunk in plan_chunks(self.job_id, self.harmonized.plans[site], attempt=self.plan_exchange[site]):
            self.send(site, plan=chunk)

    def run_round(
        self, spec: JobSpec, round_no: int, plan: RoundPlan, n_variants: int, *, combine: bool = True
    ) -> dict[str, np.ndarray]:
        """Run one round attempt at every site; its totals, or nothing when ``combine`` is false (a round
        run again only to rebuild the sites' state: nothing is unmasked or decrypted a second time)."""
        participants = tuple(sorted(self.sites))
        attempt = self.attempt
        ctx = RoundContext(job_id=self.job_id, round=round_no, attempt=attempt, participants=participants)
        mode = get_mode(spec.privacy)
        # a mode whose totals the analyst decrypts: each site signs a digest of the chunks it sent,
        # checked here against what arrived and forwarded with the decryption requests
        received = {s: ChunkDigest() for s in participants} if mode.needs_public_key else None
        contributions: dict[str, Contribution] = {}
        arrays = dict(plan.arrays)
        if plan.variants is not None:
            arrays["variants"] = np.asarray(plan.variants, dtype=np.int64)
            n_variants = len(plan.variants)
        aggregator = mode.aggregator(
            ctx,
            options=spec.options,
            decrypt=partial(self.decrypt_with_analyst, contributions) if mode.needs_public_key else None,
            expected=round_arrays(plan, n_variants),  # every site's chunks are checked against it first
        )
        self.phase(f"round {round_no}", round=round_no)
        self.log(f"round {round_no}: {plan.computation} over {n_variants} variants")
        ctx = replace(ctx, round_digest=round_digest(plan.computation, plan.params, arrays, plan.variants is not None))
        peer_keys = self.exchange_round_keys(ctx) if mode.needs_round_keys else []
        request = site_pb2.RoundRequest(
            job_id=self.job_id,
            round=round_no,
            attempt=attempt,
            analysis=plan.computation,
            params=dict(plan.params),
            participants=participants,
            arrays=sorted(arrays),
            subset=plan.variants is not None,
            peer_keys=peer_keys,
        )
        data = list(round_data_messages(self.job_id, round_no, attempt, arrays))
        for name in participants:
            self.store.set_site(self.job_id, name, state="RUNNING", blocks_done=0, blocks_total=0)
            for part in data:
                self.send(name, round_data=part)
            self.send(name, round=request)
        waiting = set(participants)
        deadline = time.monotonic() + self.engine.config.round_timeout_s
        while waiting:
            site, msg = self.receive(deadline, f"round {round_no} sums", lambda: sorted(waiting))
            kind = msg.WhichOneof("kind")
            if kind == "sums":
                if (msg.sums.round, msg.sums.attempt) != (round_no, attempt):
                    continue
                chunk = chunk_from_pb(msg.sums.chunk)
                aggregator.add(site, chunk)
                if received is not None:
                    received[site].update(chunk)
            elif kind == "progress":
                p = msg.progress
                if (p.round, p.attempt) != (round_no, attempt):
                    continue
                self.store.set_site(self.job_id, site, blocks_done=int(p.blocks_done), blocks_total=int(p.blocks_total))
                if p.finished:
                    self.note_cohort(site, int(p.cohort_size), int(p.count_granularity), plan.computation)
                    if not aggregator.complete(site):
                        raise ProtocolError(f"site {site} finished round {round_no} without sending every sum")
                    if received is not None:
                        statement = contribution_from_pb(p.contribution)
                        if not p.HasField("contribution") or not statement.covers(ctx, site, received[site].digest()):
                            raise ProtocolError(
                                f"site {site}'s signed contribution to round {round_no} is missing or does not cover "
                                "the chunks it sent; the analyst's client decrypts only totals every site vouched for"
                            )
                        contributions[site] = statement
                    waiting.discard(site)
            elif kind == "round_key":
                continue  # a late key of an earlier attempt
            else:
                raise ProtocolError(f"site {site} sent {kind} during round {round_no}")
        if not combine:
            return {}
        t0 = time.monotonic()
        totals = aggregator.result()
        if mode.needs_public_key:
            self.log(f"round {round_no} totals decrypted by the analyst's client in {time.monotonic() - t0:.2f} s")
        if mode.adds_noise:  # noisy counts below zero carry no information: clip (post-processing)
            totals = {k: np.maximum(v, 0) if v.dtype.kind == "i" else v for k, v in totals.items()}
        return totals

    def note_cohort(self, site: str, size: int, granularity: int, computation: str) -> None:
        """Log a site's cohort after a round that may change it (e.g. --mind), as the site reports
        it: coarsened to ``granularity`` (the number removed is never stated), or withheld."""
        before = self.cohort.get(site, 0)
        entry = COMPUTATIONS[computation]
        if granularity == WITHHELD or not (size != before or entry.changes_site_state):
            return
        self.log(
            f"site {site}: after {entry.label}, {describe_count(size, granularity)} remain "
            f"(before: {describe_count(before, granularity)})"
        )
        self.cohort[site] = size
        self.store.set_site(self.job_id, site, cohort_size=size)

    def decrypt_with_analyst(
        self, contributions: dict[str, Contribution], ctx: RoundContext, sums: Any, public_key: Any
    ) -> Any:
        """--privacy paillier: the analyst's client (the key holder) decrypts the summed ciphertexts,
        given every participant's signed statement of its contribution to the round attempt."""
        self.phase(f"round {ctx.round} decrypt", round=ctx.round)
        try:
            return self.engine.decryptors.decrypt(
                ctx,
                sums,
                contributions=[contributions[s] for s in sorted(contributions)],
                public_key=public_key,
                attach_timeout_s=self.engine.config.offer_timeout_s,
                reply_timeout_s=self.engine.config.round_timeout_s,
                cancelled=self.cancel.is_set,
            )
        except JobFailed:
            if self.cancel.is_set():
                raise _Cancelled() from None
            raise

    def exchange_round_keys(self, ctx: RoundContext) -> list[site_pb2.RoundKey]:
        """Collect every participant's signed ephemeral key for this round attempt. The coordinator
        only relays them: each site verifies the others' signatures against the consortium CA."""
        request = site_pb2.RoundKeyRequest(
            job_id=self.job_id,
            round=ctx.round,
            attempt=ctx.attempt,
            participants=ctx.participants,
            round_digest=ctx.round_digest,
        )
        for name in ctx.participants:
            self.send(name, key_request=request)
        keys: dict[str, site_pb2.RoundKey] = {}
        config = self.engine.config
        deadline = time.monotonic() + min(config.offer_timeout_s, config.round_timeout_s)
        while len(keys) < len(ctx.participants):
            site, msg = self.receive(
                deadline, f"round {ctx.round} keys", lambda: sorted(set(ctx.participants) - set(keys))
            )
            if msg.WhichOneof("kind") != "round_key":
                raise ProtocolError(
                    f"site {site} sent {msg.WhichOneof('kind')} during the round {ctx.round} key exchange"
                )
            k = msg.round_key
            if (k.round, k.attempt) != (ctx.round, ctx.attempt):
                continue
            if k.site != site:
                raise ProtocolError(f"site {site} sent a round key in the name of {k.site!r}")
            keys[site] = k
        return [keys[s] for s in ctx.participants]

    def write_results(self, spec: JobSpec, analysis: Any, variants: VariantTable) -> list[Path]:
        final = self.engine.config.results_dir / self.job_id
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        files = write_result(analysis.result(variants), staging / spec.out_name)
        job = self.store.get_job(self.job_id)
        provenance = {
            "fedstat_version": fedstat.__version__,
            "job_id": self.job_id,
            "analyst": job.analyst,
            "created_at": job.created_at,
            "spec": spec.to_json(),
            "privacy": {
                "mode": spec.privacy,
                "dp_budget_spent": (
                    {"epsilon": float(spec.options["dp_epsilon"]), "delta": float(spec.options["dp_delta"])}
                    if get_mode(spec.privacy).adds_noise
                    else None
                ),
            },
            "sites": {  # as each site reported them: multiples of count_granularity (fedstat.counts)
                name: {"participants": self.cohort.get(name, 0), "count_granularity": self.granularity.get(name, 1)}
                for name in sorted(self.sites)
            },
            "participants_total": int(sum(self.cohort.values())),
            "n_variants": len(variants),
            "log": [line for line in self.store.get_job(self.job_id).log],
            "files": [f.name for f in files],
            "seeds": seeded_randomness(spec),
        }
        prov = staging / f"{spec.out_name}.provenance.json"
        atomic_write_text(prov, [json.dumps(provenance, indent=2, sort_keys=True) + "\n"])
        files.append(prov)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return [final / f.name for f in files]
