"""The site agent daemon: dials out to the coordinator, decides on jobs, computes protected sums.

The agent opens its datasets once at start (building the binary cache of a VCF/BCF the first
time), then holds one bidirectional stream to the coordinator, reconnecting with exponential
backoff. Each job runs on its own worker thread, in message order; a cancel stops it at the next
block. Only aggregate counts and protected per-variant sums ever leave the site.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import random
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

import fedstat
from fedstat.bounds import RoundTallies, check_round_inputs, round_input_limits
from fedstat.computations import COMPUTATIONS, Computation
from fedstat.config import SiteConfig
from fedstat.consent import DiseaseOntology, load_obo
from fedstat.data.dataset import Dataset, open_dataset
from fedstat.data.variants import SitePlan
from fedstat.errors import (
    AuthError,
    FedstatError,
    InputError,
    PolicyRefused,
    ProtocolError,
    SiteUnavailable,
)
from fedstat.jobs import JobSpec, check_round, check_round_variants
from fedstat.net import secure_channel, server_certificate
from fedstat.pki import (
    RevocationList,
    identity_from_pem,
)
from fedstat.privacy import psi
from fedstat.privacy.base import RoundContext
from fedstat.privacy.contribution import Contribution
from fedstat.privacy.dp import BudgetLedger, epsilon_to_rho
from fedstat.privacy.dpmode import RoundNoise
from fedstat.privacy.modes import get_mode
from fedstat.privacy.secagg import RoundKeyPair, SignedRoundKey, verify_round_keys
from fedstat.protocol import (
    PlanAssembler,
    RoundDataAssembler,
    chunk_to_pb,
    contribution_to_pb,
    round_digest,
    spec_from_pb,
)
from fedstat.stats.base import RoundInput, SiteUpdate, genotype_values, release_groups, run_local, updated_cohort
from fedstat.wire import common_pb2, site_pb2, site_pb2_grpc

from .audit_anchor import AuditAnchor
from .audit_log import AuditLog
from .audit_schema import spec_digest
from .gate import ReleaseGate, reported_count
from .harmonize import SiteHarmonizer, SiteIdentity, reveal_recorder
from .job import Job, build_cohort, covariate_levels_pb
from .offers import check_analyst, dp_fields, record_offer
from .policy import ConsentSetup, check_access, decide

log = logging.getLogger("fedstat.site")

BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0


class SiteAgent:
    """One site's agent. ``run()`` blocks until ``stop()``."""

    def __init__(self, config: SiteConfig):
        self.config = config
        self._ca_pem, self._cert_pem, self._key_pem = config.tls.load()
        self.name = identity_from_pem(self._cert_pem).name
        self.revocations = RevocationList(config.tls.crl, config.tls.ca)
        # at most max_concurrent_jobs rounds are computed at once (CPU and memory are bounded by
        # it times the block size); other jobs' rounds wait their turn
        self._compute = threading.BoundedSemaphore(config.max_concurrent_jobs)
        self._rounds_lock = threading.Lock()
        self.rounds_running = 0
        self.peak_rounds_running = 0  # the most rounds this agent ever computed at once
        self.datasets: dict[str, Dataset] = {}
        self._key_indexes: dict[str, psi.KeyIndex] = {}  # per loaded dataset (private harmonization)
        self.problems: dict[str, str] = {}
        self._stop = threading.Event()
        self._ontology: DiseaseOntology | None = None
        self._audit: AuditLog | None = None
        # signs the audit head sent with offer replies and round ends; checks the coordinator's copy at connect
        self.anchor = AuditAnchor(self.name, config.state_dir / "audit.log", lambda: self.audit)
        self.gate = ReleaseGate(config.state_dir)  # every round's sums are cleared here before they leave
        self._coordinator_pem = b""  # the coordinator's certificate, as presented at the last connection
        self._jobs: dict[str, Job] = {}
        self.tallies = RoundTallies()  # rounds and attempts computed per job, held to its spec's caps
        self._outbox: queue.Queue[site_pb2.SiteMessage | None] | None = None
        self._call: grpc.Call | None = None
        self.connected = threading.Event()

    # --- datasets -------------------------------------------------------------------------

    def load_datasets(self) -> None:
        """Open every configured dataset; a broken one is recorded and reported, not fatal."""
        self._key_indexes.clear()
        if self.config.policy.disease_ontology is not None:
            self._ontology = load_obo(self.config.policy.disease_ontology)
            log.info("disease ontology %s: %d terms", self.config.policy.disease_ontology, len(self._ontology))
        for ds in self.config.datasets:
            try:
                cache, threads, sets = self.config.cache_dir / ds.name, self.config.threads, ds.sample_sets
                opened = open_dataset(
                    ds.name, ds.path, cache_dir=cache, threads=threads, options=ds.import_options, sample_sets=sets
                )
                d, g = opened, opened.genotypes
                self.datasets[ds.name] = d
                log.info("dataset %s: %s, %d samples, %d variants", ds.name, g.format, d.n_samples, g.n_variants)
            except FedstatError as exc:
                self.problems[ds.name] = str(exc)
                log.error("dataset %s cannot be used: %s", ds.name, exc)
            except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # a reader's own error: name its kind only
                self.problems[ds.name] = (
                    f"cannot be read ({type(exc).__name__} in the reader); see `fedstat site check`"
                )
                log.error("dataset %s cannot be used: %s in the reader", ds.name, type(exc).__name__)

    def _key_index(self, dataset: str) -> psi.KeyIndex:
        """The keyless part of private harmonization's hashing of a dataset's variants (kept while loaded)."""
        if dataset not in self._key_indexes:
            self._key_indexes[dataset] = psi.key_index(self.datasets[dataset].genotypes.variants)
        return self._key_indexes[dataset]

    def _hello(self) -> site_pb2.SiteMessage:
        infos = []
        for ds in self.config.datasets:
            d = self.datasets.get(ds.name)
            if d is None:
                infos.append(common_pb2.DatasetInfo(name=ds.name, ok=False, problem=self.problems.get(ds.name, "")))
            else:
                infos.append(
                    common_pb2.DatasetInfo(
                        name=ds.name, format=d.genotypes.format, n_variants=d.genotypes.n_variants, ok=True
                    )
                )
        policies = [self._policy(ds.name) for ds in self.config.datasets if ds.name in self.datasets]
        return site_pb2.SiteMessage(
            hello=site_pb2.Hello(agent_version=fedstat.__version__, datasets=infos, policies=policies)
        )

    def _ledger(self) -> BudgetLedger:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        return BudgetLedger(
            self.config.state_dir / "dp-budget.sqlite",
            total_epsilon=self.config.policy.dp_epsilon_total,
            total_delta=self.config.policy.dp_delta,
            analyst_share=self.config.policy.dp_analyst_share,
        )

    def _policy(self, dataset: str) -> common_pb2.DisclosurePolicy:
        """This site's disclosure-control settings for ``dataset``, as analysts may list them."""
        p = self.config.policy
        return common_pb2.DisclosurePolicy(
            site=self.name,
            dataset=dataset,
            allowed_analyses=p.allowed_analyses,
            allowed_privacy=[m for m in p.allowed_privacy if p.accepts_privacy(m)],
            weakest_privacy=p.weakest_privacy,
            min_cohort=p.min_cohort,
            min_cell_count=p.min_cell_count,
            max_params_ratio=p.max_params_ratio,
            min_sites=p.min_sites,
            dp_epsilon_remaining=self._ledger().remaining(dataset).epsilon,
            dp_delta=p.dp_delta,
            count_granularity=p.granularity,
            dp_analyst_share=p.dp_analyst_share,
            set_names=list(self.datasets[dataset].sample_sets),  # the operator's names only, never members
        )

    # --- connection -----------------------------------------------------------------------

    def run(self) -> None:
        self.load_datasets()
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._session()
            except FedstatError as exc:
                log.warning("cannot connect to %s: %s", self.config.coordinator, exc)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                log.warning(
                    "connection to %s lost (%s): %s",
                    self.config.coordinator,
                    code.name if code else "?",
                    exc.details() if hasattr(exc, "details") else exc,
                )
            finally:
                self.connected.clear()
                self._abort_jobs("connection to the coordinator lost")
            if self._stop.is_set():
                break
            if time.monotonic() - started > 60:
                backoff = BACKOFF_START_S
            delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret
            log.info("reconnecting in %.1f s", delay)
            self._stop.wait(delay)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _session(self) -> None:
        # re-read the certificate files (a rotated certificate is used from the next connection)
        self._ca_pem, self._cert_pem, self._key_pem = self.config.tls.load()
        self._check_coordinator()
        channel = secure_channel(self.config.coordinator, self.config.tls)
        outbox: queue.Queue[site_pb2.SiteMessage | None] = queue.Queue(maxsize=256)
        outbox.put(self._hello())
        self._outbox = outbox
        try:
            call = site_pb2_grpc.SiteGatewayStub(channel).Connect(iter(outbox.get, None))
            self._call = call
            for msg in call:
                self._dispatch(msg)
        finally:
            self._outbox = None
            try:
                outbox.put_nowait(None)
            except queue.Full:
                pass
            channel.close()

    def _check_coordinator(self) -> None:
        """Refuse to talk to a coordinator whose certificate the consortium has revoked."""
        if self.config.tls.crl is None:
            return
        try:
            pem = server_certificate(self.config.coordinator, self.config.tls)
        except (OSError, ssl.SSLError) as exc:
            raise SiteUnavailable(f"TLS handshake with {self.config.coordinator} failed: {exc}") from exc
        if self.revocations.is_revoked_pem(pem):
            raise AuthError(
                f"the coordinator at {self.config.coordinator} presents a revoked certificate; not connecting"
            )
        self._coordinator_pem = pem  # checked again on every offer

    def send(self, msg: site_pb2.SiteMessage) -> None:
        outbox = self._outbox
        if outbox is None:
            raise ProtocolError("not connected to the coordinator")
        while True:
            try:
                outbox.put(msg, timeout=1.0)
                return
            except queue.Full:
                if self._outbox is not outbox:
                    raise ProtocolError("connection to the coordinator lost") from None

    def stop(self) -> None:
        self._stop.set()
        self._abort_jobs("the site agent is shutting down")
        if self._call is not None:
            self._call.cancel()
        for d in self.datasets.values():
            d.close()

    def _abort_jobs(self, reason: str) -> None:
        for job in list(self._jobs.values()):
            job.end()
        if self._jobs:
            log.info("stopped %d job(s): %s", len(self._jobs), reason)
        self._jobs.clear()

    # --- messages -------------------------------------------------------------------------

    def _dispatch(self, msg: site_pb2.CoordinatorMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "welcome" and self.connected.is_set():
            log.warning("ignoring a second Welcome from the coordinator on the same connection")
        elif kind == "welcome":
            self.anchor.check(msg.welcome, ca_pem=self._ca_pem)  # does the log hold the coordinator's copy of its head?
            self.connected.set()
            log.info("connected to coordinator %s as %s", self.config.coordinator, msg.welcome.site_name)
        elif kind == "offer":
            try:
                self._offer(msg.offer)
            except Exception as exc:  # noqa: BLE001 - one bad offer must not drop the connection
                log.exception("job %s: internal error deciding on the offer", msg.offer.job_id)
                self._report_error(
                    msg.offer.job_id,
                    FedstatError(f"internal error at the site deciding on the job ({type(exc).__name__}); see its log"),
                )
        elif kind == "cancel":
            job = self._jobs.pop(msg.cancel.job_id, None)
            if job is not None:
                job.end()
                if msg.cancel.reason == "done":
                    log.info("job %s finished", job.job_id)
                else:
                    log.info("job %s cancelled by the coordinator: %s", job.job_id, msg.cancel.reason)
        elif kind in ("keys_request", "plan", "round", "round_data", "key_request", "harmonize", "intersection"):
            job = self._jobs.get(getattr(msg, kind).job_id)
            if job is not None:
                job.inbox.put(msg)
        else:
            log.warning("ignoring unknown message %r from the coordinator", kind)

    @property
    def audit(self) -> AuditLog:
        """The site's hash-chained audit log (``state_dir/audit.log``), opened on first use."""
        if self._audit is None:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
            self._audit = AuditLog(self.config.state_dir / "audit.log")
        return self._audit

    def _offer(self, offer: site_pb2.JobOffer) -> None:
        spec = spec_from_pb(offer.spec)
        try:
            self.anchor.refuse_if_alarmed()  # an audit log cut since the coordinator's copy: no job
            spec.validated()  # the coordinator validated it too; a site checks for itself
            try:
                ds_name = self.config.dataset(spec.dataset).name
            except FedstatError as exc:
                raise PolicyRefused(str(exc)) from exc
            dataset = self.datasets.get(ds_name)
            if dataset is None:
                raise InputError(f"dataset {ds_name} cannot be used: {self.problems.get(ds_name, 'not loaded')}")
            ds_config = self.config.dataset(ds_name)
            if self._coordinator_pem and self.revocations.is_revoked_pem(self._coordinator_pem):
                raise PolicyRefused("the coordinator's certificate has been revoked; this site takes no job from it")
            check_analyst(offer, spec, ca_pem=self._ca_pem, revocations=self.revocations)
            check_access(spec, self.config.policy, ds_name, offer.analyst, frozenset(offer.analyst_roles))
            (self.config.state_dir / "consent").mkdir(parents=True, exist_ok=True)
            consent = ConsentSetup(
                registry_path=self.config.state_dir / "consent" / f"{ds_name}.withdrawals.sqlite",
                default=ds_config.consent_default,
                ontology=self._ontology,
                cleared=self.config.policy.consent_cleared,
            )
            decision = decide(spec, self.config.policy, dataset, consent)
            members = decision.members
            cohort = build_cohort(spec, dataset, members, decision.zero_dropped)
            # the job's spec is fixed once accepted: a re-offer of the job id with another spec is refused
            self.gate.ledger(self.config.policy).bind_job(ds_name, offer.job_id, spec_digest(spec.to_json()))
            noisy = get_mode(spec.privacy).adds_noise
            # under dp: the budget is checked now and charged when this site first releases
            dp_note = self._charge_budget(offer.job_id, ds_name, spec, offer.analyst, dry_run=True) if noisy else ""
        except FedstatError as exc:
            log.info("refused job %s from %s: %s", offer.job_id, offer.analyst, exc)
            record_offer(self.audit, offer, spec, self.config.datasets[0].name, decision="refused", reason=str(exc))
            self._send_with_head(
                site_pb2.SiteMessage(decision=site_pb2.JobDecision(job_id=offer.job_id, accept=False, reason=str(exc)))
            )
            return
        job = Job(
            job_id=offer.job_id, spec=spec, dataset=dataset, members=members, cohort=cohort, analyst=offer.analyst
        )
        job.plan_parts = PlanAssembler(max_variants=dataset.genotypes.n_variants)  # a plan never names more
        identity = SiteIdentity(  # what the job's private harmonization signs and verifies with
            self.name,
            self._key_pem,
            self._cert_pem,
            self._ca_pem,
            self.revocations.is_revoked,
            self.config.policy.min_sites,
        )
        audited = reveal_recorder(lambda: self.audit, job_id=job.job_id, analyst=offer.analyst, dataset=ds_name)
        job.harmonizer = SiteHarmonizer(
            job.job_id,
            identity,
            dataset.genotypes,
            sites=spec.sites,
            on_reveal=audited,
            key_index=lambda: self._key_index(ds_name),
        )
        old = self._jobs.get(job.job_id)
        if old is not None:  # re-offered while it runs (the coordinator recovers another site): it starts over
            old.end()
            if old.harmonizer is not None:  # on the same sites as before: a re-offer never widens what is revealed
                job.harmonizer.participants = old.harmonizer.participants
        self._jobs[job.job_id] = job
        threading.Thread(target=self._job_worker, args=(job,), name=f"job-{job.job_id}", daemon=True).start()
        excluded = decision.consent.n_excluded if decision.consent is not None else 0
        # the counts leave the site only through the gate: coarsened, or withheld under dp
        cohort_size, granularity = reported_count(self.config.policy, len(members), noisy=noisy)
        consent_excluded, _ = reported_count(self.config.policy, excluded, noisy=noisy)
        record_offer(
            self.audit,
            offer,
            spec,
            self.config.datasets[0].name,
            decision="accepted",
            cohort_size=len(members),
            consent_excluded=excluded,
            reason=dp_note or "policy, consent and budget checks passed",
            dp=dp_fields(spec) if dp_note else None,
        )
        log.info(
            "accepted job %s from %s: %s (%d participants, %d excluded by consent for purpose %s)",
            job.job_id,
            offer.analyst,
            ", ".join(spec.analyses),
            len(members),
            excluded,
            spec.purpose or "GRU",
        )
        self._send_with_head(
            site_pb2.SiteMessage(
                decision=site_pb2.JobDecision(
                    job_id=job.job_id,
                    accept=True,
                    cohort_size=cohort_size,
                    n_variants=dataset.genotypes.n_variants,
                    consent_excluded=consent_excluded,
                    dp_budget=dp_note,
                    min_cell_count=self.config.policy.min_cell_count,
                    count_granularity=granularity,
                    cohort_fingerprint=self.gate.cohort_fingerprint(dataset, self.config.policy, job.job_id, members),
                    covariate_levels=covariate_levels_pb(decision.levels),
                )
            )
        )

    def _charge_budget(
        self,
        job_id: str,
        dataset: str,
        spec: JobSpec,
        analyst: str,
        *,
        dry_run: bool = False,
        round_no: int | None = None,
        rounds: int = 1,
    ) -> str:
        """Charge the job's ρ for its ``rounds`` noisy rounds released so far to the dataset's ledger
        (each round is noised for the job's ε, δ: sequential composition; idempotent per job and
        count), or with ``dry_run``
        only check it fits; BudgetExceeded (a PolicyRefused stating what remains) when it would
        overspend the dataset or the analyst's share of it (policy ``dp_analyst_share``). A charge
        (for round ``round_no``) is audited as a ``dp_charge`` record: ε, δ, the ρ it added (0 after
        the job's first release) and the ρ remaining."""
        epsilon, delta = float(spec.options["dp_epsilon"]), float(spec.options["dp_delta"])
        receipt = self._ledger().charge(
            dataset,
            job_id,
            rounds * epsilon_to_rho(epsilon, delta),
            detail=f"{','.join(spec.analyses)} eps={epsilon} delta={delta} rounds={rounds}",
            dry_run=dry_run,
            analyst=analyst,
        )
        r = receipt.remaining
        if not dry_run:
            dp = {"epsilon": epsilon, "delta": delta, "rho": receipt.rho_added, "remaining": r.rho}
            self.audit.append(event="dp_charge", job_id=job_id, dataset=dataset, round=round_no, dp=dp)
        verb = "will charge at its first release" if dry_run else "charged"
        return (
            f"{verb} ε={epsilon:g}, δ={delta:g} (ρ={receipt.rho_job:.4g}); remaining ρ={r.rho:.4g} "
            f"(ε={r.epsilon:.3g} at δ={r.delta:g})"
        )

    def _job_worker(self, job: Job) -> None:
        try:
            while not job.cancelled.is_set():
                msg = job.inbox.get()
                if msg is None:
                    return
                kind = msg.WhichOneof("kind")
                if kind in ("keys_request", "harmonize", "intersection"):
                    assert job.harmonizer is not None
                    for out in job.harmonizer.handle(msg):
                        self.send(out)
                elif kind == "plan":
                    if job.plan_parts.add(msg.plan):
                        assembled = job.plan_parts.plan()
                        job.plan_parts = PlanAssembler(max_variants=job.dataset.genotypes.n_variants)
                        self._fix_plan(job, assembled, msg.plan.attempt)
                elif kind == "round_data":
                    self._round_data(job, msg.round_data)
                elif kind == "key_request":
                    self._round_key(job, msg.key_request)
                elif kind == "round":
                    with self._compute, self._counting_round():
                        self._round(job, msg.round)
        except FedstatError as exc:
            log.error("job %s failed at this site: %s", job.job_id, exc)
            self._report_error(job.job_id, exc)
        except Exception as exc:  # noqa: BLE001 - report, never leave the coordinator waiting
            log.exception("job %s: internal error at this site", job.job_id)
            self._report_error(
                job.job_id, FedstatError(f"internal error at the site ({type(exc).__name__}); see the site log")
            )
        finally:
            job.release()

    @contextlib.contextmanager
    def _counting_round(self) -> Iterator[None]:
        with self._rounds_lock:
            self.rounds_running += 1
            self.peak_rounds_running = max(self.peak_rounds_running, self.rounds_running)
        try:
            yield
        finally:
            with self._rounds_lock:
                self.rounds_running -= 1

    def _report_error(self, job_id: str, exc: FedstatError) -> None:
        try:
            self.send(
                site_pb2.SiteMessage(error=site_pb2.SiteError(job_id=job_id, kind=type(exc).__name__, message=str(exc)))
            )
        except ProtocolError:
            pass

    def _fix_plan(self, job: Job, assembled: SitePlan, attempt: int) -> None:
        """Take the harmonized plan the coordinator sent, in this site's file rows. A job's plan never
        changes: a second plan (a re-harmonization after a reconnect) must be the same, and so must
        a re-offered job's, durably (with another plan the same round's sums, released twice, would
        difference one site's variants against each other)."""
        assert job.harmonizer is not None and job.harmonizer.participants is not None
        plan = job.harmonizer.site_plan(assembled, attempt)
        if plan.local_index.size and (
            plan.local_index.min() < 0 or plan.local_index.max() >= job.dataset.genotypes.n_variants
        ):
            raise ProtocolError("the coordinator's variant plan names variants this site does not have")
        if job.plan is not None and not (
            np.array_equal(job.plan.local_index, plan.local_index) and np.array_equal(job.plan.flip, plan.flip)
        ):
            raise ProtocolError(
                "the coordinator sent another variant plan for a job whose plan was fixed; a job's variants and "
                "orientation never change (a deviating coordinator)"
            )
        digest = hashlib.sha256(
            np.ascontiguousarray(plan.local_index, dtype="<i8").tobytes()
            + np.asarray(plan.flip, dtype=np.uint8).tobytes()
        ).hexdigest()
        ledger = self.gate.ledger(self.config.policy)
        ledger.bind_plan(job.dataset.name, job.job_id, job.harmonizer.participants, digest)
        job.plan = plan

    def _round_key(self, job: Job, req: site_pb2.RoundKeyRequest) -> None:
        """A fresh signed X25519 key for one round attempt (secure aggregation)."""
        participants = tuple(req.participants)
        if self.name not in participants:
            raise ProtocolError("the key request does not list this site among the round's participants")
        self.tallies.admit(job.job_id, job.spec, req.round, req.attempt)  # no key beyond the spec's caps
        if (req.round, req.attempt) in job.keyed:
            raise ProtocolError(
                f"round {req.round} (attempt {req.attempt}): a second key request for a round attempt this site "
                "already keyed; each attempt is computed once (a deviating coordinator)"
            )
        job.keyed.add((req.round, req.attempt))
        if len(set(participants)) < self.config.policy.min_sites:
            raise PolicyRefused(
                f"secure aggregation over {len(set(participants))} site(s) is below this site's minimum of "
                f"{self.config.policy.min_sites} (policy min_sites)"
            )
        ctx = RoundContext(
            job_id=job.job_id,
            round=req.round,
            attempt=req.attempt,
            participants=participants,
            round_digest=req.round_digest,
        )
        pair = RoundKeyPair()
        signed = pair.signed(ctx, self.name, signing_key_pem=self._key_pem, certificate_pem=self._cert_pem)
        job.round_keys = {k: v for k, v in job.round_keys.items() if k[0] >= req.round}  # forget old rounds
        job.round_keys[(req.round, req.attempt)] = (pair, signed, req.round_digest)
        self.send(
            site_pb2.SiteMessage(
                round_key=site_pb2.RoundKey(
                    job_id=job.job_id,
                    round=req.round,
                    attempt=req.attempt,
                    site=self.name,
                    public_key=signed.public_key,
                    signature=signed.signature,
                    certificate=signed.certificate,
                )
            )
        )

    def _round_data(self, job: Job, d: site_pb2.RoundData) -> None:
        """Collect the coordinator's arrays for the next round, bounded by what the signed spec's rounds
        need over the harmonized variants; only one round's arrays are held (each round's come right
        before its request, so arrays of another round that was never requested are dropped)."""
        if job.plan is None:
            raise ProtocolError(f"round {d.round}: round arrays arrived before the variant plan")
        key = (d.round, d.attempt)
        if key not in job.round_data:
            limits = round_input_limits(job.spec, len(job.plan.local_index), categorical=len(job.cohort.categories))
            job.round_data = {key: RoundDataAssembler(limits)}
        job.round_data[key].add(d.chunk)

    def _verified_keys(
        self, job: Job, req: site_pb2.RoundRequest, ctx: RoundContext
    ) -> tuple[RoundKeyPair, dict[str, bytes]]:
        mine = job.round_keys.pop((req.round, req.attempt), None)
        if mine is None:
            raise ProtocolError(f"round {req.round} (attempt {req.attempt}) requested without a key exchange")
        pair, signed, digest = mine
        if digest != ctx.round_digest:
            raise ProtocolError(
                f"round {req.round}: the coordinator asks for another computation, other parameters or other arrays "
                "than the round this site's key was signed for; not computing it (a deviating coordinator)"
            )
        keys = [
            SignedRoundKey(site=k.site, public_key=k.public_key, signature=k.signature, certificate=k.certificate)
            for k in req.peer_keys
        ]
        return pair, verify_round_keys(ctx, keys, ca_pem=self._ca_pem, own=signed, revoked=self.revocations.is_revoked)

    def _round(self, job: Job, req: site_pb2.RoundRequest) -> None:
        if job.plan is None:
            raise ProtocolError(f"round {req.round} requested before the variant plan arrived")
        entry = COMPUTATIONS.get(req.analysis)
        if entry is None:
            raise ProtocolError(
                f"unknown local computation {req.analysis!r}; this agent is fedstat {fedstat.__version__}"
            )
        compute = entry.kernel
        if self.name not in req.participants:
            raise ProtocolError("this site is not listed among the round's participants")
        received = job.round_data.pop((req.round, req.attempt), RoundDataAssembler())
        if not received.complete(list(req.arrays)):
            raise ProtocolError(f"round {req.round}: the coordinator's round arrays arrived incomplete")
        arrays = received.result()
        digest = round_digest(req.analysis, dict(req.params), arrays, req.subset)  # what this site will compute
        check_round(job.spec, req.analysis, dict(req.params))
        self.tallies.admit(job.job_id, job.spec, req.round, req.attempt)
        plan = job.plan
        n_global = len(plan.local_index)
        variants = arrays.pop("variants") if req.subset else np.arange(n_global, dtype=np.int64)
        check_round_variants(req.round, req.analysis, req.params, variants, plan, job.dataset.genotypes.variants)
        check_round_inputs(arrays, len(variants))
        inp = RoundInput(params=dict(req.params), arrays=arrays, variants=variants)
        ctx = RoundContext(
            job_id=job.job_id,
            round=req.round,
            attempt=req.attempt,
            participants=tuple(req.participants),
            round_digest=digest,
        )
        mode = get_mode(job.spec.privacy)
        keys: Any = self._verified_keys(job, req, ctx) if mode.needs_round_keys else None
        if mode.needs_public_key:
            from fedstat.privacy.paillier import PaillierKeys  # noqa: PLC0415

            keys = PaillierKeys(keypair=keys[0], peers=keys[1], encryptor=self._encryptor(job))
        n = len(variants)
        noise = self._round_noise(job, req, entry, n) if mode.adds_noise else None
        protector = mode.protector(ctx, self.name, keys, noise=noise)  # under dp it noises every array

        def send_array(name: str, offset: int, total: int, values: np.ndarray, shape: tuple[int, ...]) -> None:
            for chunk in protector.protect(name, offset, total, values, shape):
                self.send(
                    site_pb2.SiteMessage(
                        sums=site_pb2.SumsMessage(
                            job_id=job.job_id, round=req.round, attempt=req.attempt, chunk=chunk_to_pb(chunk)
                        )
                    )
                )

        self.gate.clear(
            self.config.policy,
            job.dataset,
            job.members,
            release_groups(compute, job.cohort, inp),
            audit=self.audit,
            job_id=job.job_id,
            analyst=job.analyst,
            round_no=req.round,
            computation=req.analysis,
            params=dict(req.params),
            sites=list(req.participants),
        )
        if noise is not None:
            # noise is drawn once per (job, round): a retried attempt would let averaging cut it, so a
            # round this site released under dp is never released again; the job is charged now
            released = self.gate.ledger(self.config.policy).noisy_round(
                job.dataset.name, job.job_id, req.round, req.attempt
            )
            note = self._charge_budget(
                job.job_id, job.dataset.name, job.spec, job.analyst, round_no=req.round, rounds=released
            )
            log.info("job %s: differential privacy budget %s", job.job_id, note)
            self.send(site_pb2.SiteMessage(policy=self._policy(job.dataset.name)))
        block_size = job.spec.block_size or self.config.block_size
        n_blocks = (n + block_size - 1) // block_size

        def read_blocks() -> Iterator[tuple[int, np.ndarray]]:
            blocks = job.dataset.genotypes.read_blocks(
                plan.local_index[variants],
                flip=plan.flip[variants],
                sample_index=job.members,
                block_size=block_size,
                values=genotype_values(compute, inp.params),
            )
            return _checked(blocks, block_size, job.cancelled)

        def on_block(done: int) -> None:
            self._progress(job, req, done, n_blocks, finished=False)

        update = None
        for out in run_local(compute, job.cohort, inp, read_blocks, on_block=on_block):
            if job.cancelled.is_set():
                return
            if isinstance(out, SiteUpdate):
                update = out
                continue
            values = self.gate.outgoing(
                self.config.policy, entry.count_arrays, out.name, out.values, noisy=mode.adds_noise
            )
            send_array(out.name, out.offset, out.total, values, out.shape)
        if update is not None:
            if update.keep is not None:
                removed = int(job.cohort.n - np.count_nonzero(update.keep))
                job.members = job.members[np.asarray(update.keep, dtype=bool)]
                log.info("job %s: %d participants removed by %s", job.job_id, removed, req.analysis)
            job.cohort = updated_cohort(job.cohort, update)
        # under a mode whose totals the analyst decrypts, this site vouches for what it sent to this round attempt
        statement = Contribution.of(protector, key_pem=self._key_pem, certificate_pem=self._cert_pem)
        contribution = contribution_to_pb(statement) if statement is not None else None
        self._progress(job, req, n_blocks, n_blocks, finished=True, contribution=contribution)

    def _encryptor(self, job: Job) -> Any:
        """The job's Paillier encryptor under the analyst's public key (one per job, all rounds):
        fixed-base tables in ``threads`` worker processes, or in this process for one thread."""
        if job.encryptor is None:
            from fedstat.privacy.paillier import job_public_key  # noqa: PLC0415
            from fedstat.privacy.paillier_crypto import PaillierEncryptor  # noqa: PLC0415

            threads = self.config.threads
            t0 = time.monotonic()
            job.encryptor = PaillierEncryptor(
                job_public_key(job.spec.options), backend="process" if threads > 1 else "inline", workers=threads
            )
            log.info("job %s: Paillier encryptor ready in %.1f s", job.job_id, time.monotonic() - t0)
        return job.encryptor

    def _round_noise(self, job: Job, req: site_pb2.RoundRequest, entry: Computation, n_variants: int) -> RoundNoise:
        """What the dp protector calibrates this round's noise from (fedstat.privacy.dpmode)."""
        return RoundNoise(
            epsilon=float(job.spec.options["dp_epsilon"]),
            delta=float(job.spec.options["dp_delta"]),
            computation=req.analysis,
            n_variants=n_variants,
            k_min=max(1, min(self.config.policy.min_sites, len(set(req.participants)))),
            declaration=entry.dp,
        )

    def _send_with_head(self, msg: site_pb2.SiteMessage) -> None:
        """Send an offer reply or a round's end with this site's signed audit head attached."""
        self.anchor.send(self.send, msg, key_pem=self._key_pem, certificate_pem=self._cert_pem)

    def _progress(self, job: Job, req: site_pb2.RoundRequest, done: int, total: int, **fields: Any) -> None:
        """``fields``: ``finished`` and, on the round's last progress, a signed ``contribution``."""
        noisy = get_mode(job.spec.privacy).adds_noise
        cohort_size, granularity = reported_count(self.config.policy, job.cohort.n, noisy=noisy)
        (self._send_with_head if fields.get("finished") else self.send)(
            site_pb2.SiteMessage(
                progress=site_pb2.RoundProgress(
                    job_id=job.job_id,
                    round=req.round,
                    attempt=req.attempt,
                    blocks_done=done,
                    blocks_total=total,
                    cohort_size=cohort_size,
                    count_granularity=granularity,
                    **fields,
                )
            )
        )


def _checked(
    blocks: Iterator[tuple[int, np.ndarray]], block_size: int, cancelled: threading.Event
) -> Iterator[tuple[int, np.ndarray]]:
    for offset, block in blocks:
        assert block.shape[0] <= block_size  # an array, or a GenotypeBlock of two
        if cancelled.is_set():
            return
        yield offset, block


def serve(config: SiteConfig) -> None:
    """Run the agent until SIGTERM or SIGINT."""
    agent = SiteAgent(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    agent.run()
