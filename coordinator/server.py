"""The coordinator daemon: gRPC server with mutual TLS, the analyst API and the site gateway.

Servicers are thin: convert the request, call the engine or the store, convert the reply.
Authorization (which role may call which service) lives in :class:`RoleInterceptor`.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import fedstat
from fedstat.config import AccessConfig, CoordinatorConfig
from fedstat.errors import AuthError, FedstatError, shown
from fedstat.jobs import JobSpec
from fedstat.net import SERVER_OPTIONS, peer_certificate, peer_identity, server_credentials, status_for
from fedstat.pki import RevocationList, identity_from_subject
from fedstat.privacy.base import STRENGTH
from fedstat.privacy.modes import get_mode
from fedstat.protocol import spec_from_pb, spec_to_pb
from fedstat.wire import analyst_pb2, analyst_pb2_grpc, common_pb2, site_pb2, site_pb2_grpc

from .audit_heads import AuditHeads
from .engine import JobEngine
from .reports import render_text, summary_line
from .scheduler import Scheduler
from .sessions import SiteRegistry, SiteSession
from .store import JobRow, RunRow, ScheduleRow, Store, now_iso

log = logging.getLogger("fedstat.coordinator")

#: Which certificate role may call which service.
SERVICE_ROLES = {
    "/fedstat.v1.SiteGateway/": "site",
    "/fedstat.v1.Analyst/": "analyst",
}
#: Which analyst role each analyst method needs (see fedstat.config.ANALYST_ROLES); the servicer
#: further limits view-own callers to their own jobs.
METHOD_ROLES = {
    "Submit": "submit",
    "Decrypt": "submit",
    "GetJob": "view-own",
    "ListJobs": "view-own",
    "WatchJob": "view-own",
    "FetchResults": "view-own",
    "CancelJob": "view-own",
    "ListSites": "view-own",
    "SitePolicies": "view-own",
    "Status": "admin",
    "WhoAmI": "",
    # scheduled reports: changing or running a schedule is submitting jobs; another analyst's
    # schedule can be removed or run by an admin, and seen with view-all (as jobs are)
    "AddSchedule": "submit",
    "RemoveSchedule": "submit",
    "RunScheduleNow": "submit",
    "ListSchedules": "view-own",
    "ListReports": "view-own",
    "GetReport": "view-own",
}
RESULT_CHUNK_BYTES = 1 << 20
#: Every open stream (a site's connection, a WatchJob, a Paillier decryptor) holds one server
#: thread for its lifetime. Watches are capped so that they can never take the threads that
#: sites, decryptors and short calls need; a client over the cap polls instead.
MAX_WATCHES, MAX_WATCHES_PER_ANALYST = 256, 16
RPC_THREADS = MAX_WATCHES + 1000 + 64  # watches + up to MAX_SITES site streams + everything else


class WatchLimiter:
    """Counts open WatchJob streams, in all and per analyst."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def acquire(self, analyst: str) -> bool:
        with self._lock:
            mine, total = self._open.get(analyst, 0), sum(self._open.values())
            if mine >= MAX_WATCHES_PER_ANALYST or total >= MAX_WATCHES:
                return False
            self._open[analyst] = mine + 1
            return True

    def release(self, analyst: str) -> None:
        with self._lock:
            self._open[analyst] -= 1
            if not self._open[analyst]:
                del self._open[analyst]


class AccessInterceptor(grpc.ServerInterceptor):
    """Authentication and authorization for every call, in one place.

    A call passes when the peer's verified certificate is not revoked, its certificate role (OU)
    is the service's, and, for the analyst API, the analyst holds the method's role on this
    coordinator. Refusals are UNAUTHENTICATED (no or revoked certificate) or PERMISSION_DENIED
    (wrong role), with a message that names the missing role but echoes nothing the caller sent,
    and each is logged and counted.
    """

    def __init__(self, access: AccessConfig, revocations: RevocationList):
        self.access, self.revocations = access, revocations
        self.refused: dict[str, int] = {}  # by status code name, for `fedstat status`
        self._lock = threading.Lock()

    def refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str, log_line: str) -> None:
        with self._lock:
            self.refused[code.name] = self.refused.get(code.name, 0) + 1
        log.warning("refused %s", log_line)
        context.abort(code, message)

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        pem = peer_certificate(context)
        if pem is None:
            self.refuse(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "a client certificate is required",
                f"{method}: no client certificate",
            )
        assert pem is not None
        cert = x509.load_pem_x509_certificate(pem)
        ident = identity_from_subject(cert.subject)
        try:
            revoked = self.revocations.is_revoked(cert)
        except FedstatError as exc:  # the CRL became unreadable: fail closed
            log.error("revocation list: %s", exc)
            revoked = True
        if revoked:
            self.refuse(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "this certificate has been revoked by the consortium",
                f"{method} for {ident}: certificate revoked",
            )
        service = next((r for prefix, r in SERVICE_ROLES.items() if method.startswith(prefix)), None)
        if service is None:
            return  # e.g. the health service: any unrevoked certificate from the consortium CA
        if ident.role != service:
            self.refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate role {ident.role!r} may not call {method}; it needs role {service!r}",
                f"{method} for {ident}: certificate role may not call it",
            )
        if service == "analyst":
            needed = METHOD_ROLES.get(method.rsplit("/", 1)[-1], "admin")
            if needed and needed not in self.access.roles(ident.name):
                self.refuse(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"analyst {ident.name} lacks the role {needed!r} on this coordinator, which {method} needs",
                    f"{method} for {ident}: lacks role {needed!r}",
                )

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            return handler

        def guard(behavior: Any) -> Any:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                self.check(method, context)
                return behavior(request, context)

            return wrapped

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                guard(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                guard(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                guard(handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            guard(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )


def _abort(context: grpc.ServicerContext, exc: FedstatError) -> None:
    context.abort(status_for(exc), str(exc))


def job_to_pb(job: JobRow, *, id_lists: bool = True) -> analyst_pb2.JobStatus:
    """A job's status; ``id_lists=False`` (a list of jobs) leaves out the spec's --extract/--exclude
    variant IDs (up to 2 MB each), so that many jobs fit one message."""
    spec = JobSpec.from_json(job.spec)
    if not id_lists:
        spec = replace(spec, options={k: v for k, v in spec.options.items() if k not in ("extract", "exclude")})
    return analyst_pb2.JobStatus(
        job_id=job.id,
        state=job.state,
        analyst=job.analyst,
        spec=spec_to_pb(spec),
        created_at=job.created_at,
        updated_at=job.updated_at,
        phase=job.phase,
        round=job.round,
        error=job.error,
        log=list(job.log),
        result_files=list(job.result_files),
        sites=[
            analyst_pb2.SiteStatus(
                site=s.site,
                state=s.state,
                detail=s.detail,
                cohort_size=s.cohort_size,
                blocks_done=s.blocks_done,
                blocks_total=s.blocks_total,
                count_granularity=s.count_granularity,
            )
            for s in job.sites
        ],
    )


class AnalystService(analyst_pb2_grpc.AnalystServicer):
    def __init__(self, coordinator: Coordinator):
        self.coordinator = coordinator
        self.engine, self.store, self.registry = coordinator.engine, coordinator.store, coordinator.registry
        self.results_dir = coordinator.config.results_dir
        self.access = coordinator.config.access

    def _roles(self, context: grpc.ServicerContext) -> tuple[str, frozenset[str]]:
        ident = peer_identity(context)
        assert ident is not None  # the interceptor refused calls without a certificate
        return ident.name, self.access.roles(ident.name)

    def _own_job(self, job_id: str, context: grpc.ServicerContext, *, needs: str = "view-all") -> JobRow:
        """The job, if the caller submitted it or holds ``needs`` (another analyst's job is NOT_FOUND
        to a caller without it: job ids are not an oracle)."""
        name, roles = self._roles(context)
        try:
            job = self.store.get_job(job_id)
        except FedstatError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {shown(job_id)}")
        if job.analyst != name and needs not in roles:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {shown(job_id)}")
        return job

    def Submit(self, request: analyst_pb2.SubmitRequest, context: grpc.ServicerContext) -> analyst_pb2.JobStatus:  # noqa: N802
        ident = peer_identity(context)
        assert ident is not None
        try:
            job_id = self.engine.submit(
                spec_from_pb(request.spec),
                ident.name,
                certificate=peer_certificate(context) or b"",
                signature=request.spec_signature,
            )
        except FedstatError as exc:
            _abort(context, exc)
        log.info("job %s submitted by %s", job_id, ident.name)
        return job_to_pb(self.store.get_job(job_id))

    def GetJob(self, request: analyst_pb2.GetJobRequest, context: grpc.ServicerContext) -> analyst_pb2.JobStatus:  # noqa: N802
        return job_to_pb(self._own_job(request.job_id, context))

    def ListJobs(
        self, request: analyst_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.ListJobsResponse:  # noqa: N802
        name, roles = self._roles(context)
        if request.all_analysts and "view-all" not in roles:
            self.coordinator.interceptor.refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"analyst {name} lacks the role 'view-all' to list every analyst's jobs",
                f"ListJobs(all_analysts) for analyst:{name}: lacks role 'view-all'",
            )
        jobs = self.store.list_jobs(
            limit=min(request.limit or 50, 1000),
            analyst=None if request.all_analysts else name,
            state=request.state or None,
        )
        return analyst_pb2.ListJobsResponse(jobs=[job_to_pb(j, id_lists=False) for j in jobs])

    def CancelJob(self, request: analyst_pb2.CancelJobRequest, context: grpc.ServicerContext) -> analyst_pb2.JobStatus:  # noqa: N802
        job = self._own_job(request.job_id, context, needs="admin")
        name, _ = self._roles(context)
        if job.analyst != name:
            log.info("job %s cancelled by admin %s", job.id, name)
        self.engine.cancel(request.job_id)
        return job_to_pb(self.store.get_job(request.job_id))

    def WatchJob(
        self, request: analyst_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[analyst_pb2.JobStatus]:  # noqa: N802
        job = self._own_job(request.job_id, context)
        name, _ = self._roles(context)
        if not self.coordinator.watches.acquire(name):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many open job watches (at most {MAX_WATCHES_PER_ANALYST} per analyst, {MAX_WATCHES} in all); "
                "poll GetJob instead",
            )
        try:
            last_seq = -1
            while context.is_active():
                seq = self.store.job_seq(job.id)
                if seq != last_seq:
                    last_seq = seq
                    job = self.store.get_job(job.id)
                    yield job_to_pb(job)
                    if job.finished:
                        return
                time.sleep(0.2)
        finally:
            self.coordinator.watches.release(name)

    def FetchResults(
        self, request: analyst_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[analyst_pb2.ResultChunk]:  # noqa: N802
        job = self._own_job(request.job_id, context)
        if job.state != "DONE":
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"job {job.id} is {job.state}; results exist only for DONE jobs"
            )
        directory = self.results_dir / job.id
        for name in job.result_files:
            path = directory / name
            if not path.is_file():
                context.abort(
                    grpc.StatusCode.DATA_LOSS, f"result file {name} of job {job.id} is missing on the coordinator"
                )
            with path.open("rb") as f:
                offset = 0
                while True:
                    data = f.read(RESULT_CHUNK_BYTES)
                    last = len(data) < RESULT_CHUNK_BYTES
                    yield analyst_pb2.ResultChunk(file_name=name, offset=offset, data=data, last=last)
                    offset += len(data)
                    if last:
                        break

    def ListSites(
        self, request: analyst_pb2.ListSitesRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.ListSitesResponse:  # noqa: N802
        return analyst_pb2.ListSitesResponse(sites=[connected_site(s) for s in self.registry.connected()])

    def Decrypt(
        self, request_iterator: Iterator[analyst_pb2.DecryptReply], context: grpc.ServicerContext
    ) -> Iterator[analyst_pb2.DecryptRequest]:  # noqa: N802
        """--privacy paillier: the submitting analyst's client attaches as its job's decryptor."""
        try:
            first = next(request_iterator)
        except StopIteration:  # an empty or undecodable first message (a clean abort lets the server drain)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before its first message")
        job = self._own_job(first.job_id, context)
        if job.analyst != self._roles(context)[0]:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the analyst who submitted a job decrypts it")
        if not get_mode(JobSpec.from_json(job.spec).privacy).needs_public_key:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job.id} does not use --privacy paillier")
        if job.finished:
            return
        session = self.engine.decryptors.attach(job.id, job.analyst)

        def pump() -> None:
            try:
                for reply in request_iterator:
                    session.replies.put(reply)
            except grpc.RpcError:
                pass
            finally:
                self.engine.decryptors.detach(session)

        threading.Thread(target=pump, name=f"decrypt-{job.id}", daemon=True).start()
        context.add_callback(lambda: self.engine.decryptors.detach(session))
        while True:
            msg = session.outbox.get()
            if msg is None:
                return
            yield msg

    def SitePolicies(
        self, request: analyst_pb2.SitePoliciesRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.SitePoliciesResponse:  # noqa: N802
        """Each connected site's disclosure-control settings for a dataset, and the strictest."""
        chosen = []
        for session in self.registry.connected():
            policies = session.policies()
            match = [p for p in policies if p.dataset == request.dataset] if request.dataset else policies[:1]
            chosen.extend(match)
        return analyst_pb2.SitePoliciesResponse(sites=chosen, strictest=strictest_policy(chosen))

    def Status(self, request: analyst_pb2.StatusRequest, context: grpc.ServicerContext) -> analyst_pb2.StatusResponse:  # noqa: N802
        return self.coordinator.status()

    def WhoAmI(self, request: analyst_pb2.WhoAmIRequest, context: grpc.ServicerContext) -> analyst_pb2.WhoAmIResponse:  # noqa: N802
        ident = peer_identity(context)
        assert ident is not None
        return analyst_pb2.WhoAmIResponse(name=ident.name, role=ident.role, roles=sorted(self.access.roles(ident.name)))

    # --- scheduled reports ----------------------------------------------------------------

    def _schedule(self, ref: str, context: grpc.ServicerContext, *, needs: str) -> ScheduleRow:
        """The caller's schedule by name or id, or another analyst's by id if the caller holds
        ``needs`` (otherwise NOT_FOUND, as for jobs)."""
        name, roles = self._roles(context)
        schedule = self.store.find_schedule(name, ref)
        if schedule is None or (schedule.owner != name and needs not in roles):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no schedule named or with id {shown(ref)}")
        assert schedule is not None
        return schedule

    def _all_analysts(self, context: grpc.ServicerContext, what: str) -> None:
        name, roles = self._roles(context)
        if "view-all" not in roles:
            self.coordinator.interceptor.refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"analyst {name} lacks the role 'view-all' to list every analyst's {what}",
                f"List {what} (all_analysts) for analyst:{name}: lacks role 'view-all'",
            )

    def AddSchedule(
        self, request: analyst_pb2.AddScheduleRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.Schedule:  # noqa: N802
        name, _ = self._roles(context)
        try:
            row = self.coordinator.scheduler.add(
                name,
                request.name,
                request.cron,
                spec_from_pb(request.spec),
                certificate=peer_certificate(context) or b"",
                signature=request.spec_signature,
            )
        except FedstatError as exc:
            _abort(context, exc)
        return schedule_to_pb(row)

    def ListSchedules(
        self, request: analyst_pb2.ListSchedulesRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.ListSchedulesResponse:  # noqa: N802
        name, _ = self._roles(context)
        if request.all_analysts:
            self._all_analysts(context, "schedules")
        rows = self.store.list_schedules(owner=None if request.all_analysts else name)
        return analyst_pb2.ListSchedulesResponse(schedules=[schedule_to_pb(r) for r in rows])

    def RemoveSchedule(self, request: analyst_pb2.ScheduleRef, context: grpc.ServicerContext) -> analyst_pb2.Schedule:  # noqa: N802
        schedule = self._schedule(request.schedule, context, needs="admin")
        self.coordinator.scheduler.remove(schedule)
        return schedule_to_pb(schedule)

    def RunScheduleNow(self, request: analyst_pb2.ScheduleRef, context: grpc.ServicerContext) -> analyst_pb2.Report:  # noqa: N802
        schedule = self._schedule(request.schedule, context, needs="admin")
        try:
            run = self.coordinator.scheduler.run_now(schedule)
        except FedstatError as exc:
            _abort(context, exc)
        return report_to_pb(run, detail=True)

    def ListReports(
        self, request: analyst_pb2.ListReportsRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.ListReportsResponse:  # noqa: N802
        name, roles = self._roles(context)
        if request.all_analysts:
            self._all_analysts(context, "reports")
        owner = None if request.all_analysts else name
        schedule_id = schedule_name = None
        if request.schedule:
            found = self.store.find_schedule(name, request.schedule)
            if found is not None and (found.owner == name or "view-all" in roles):
                schedule_id = found.id
            else:  # a removed schedule's reports, by its name
                schedule_name = request.schedule
        runs = self.store.list_runs(
            owner=owner, schedule_id=schedule_id, schedule_name=schedule_name, limit=min(request.limit or 50, 1000)
        )
        return analyst_pb2.ListReportsResponse(reports=[report_to_pb(r, detail=False) for r in runs])

    def GetReport(self, request: analyst_pb2.GetReportRequest, context: grpc.ServicerContext) -> analyst_pb2.Report:  # noqa: N802
        name, roles = self._roles(context)
        try:
            run = self.store.get_run(request.report_id)
        except FedstatError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no report with id {shown(request.report_id)}")
        if run.owner != name and "view-all" not in roles:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no report with id {shown(request.report_id)}")
        return report_to_pb(run, detail=True)


def schedule_to_pb(row: ScheduleRow) -> analyst_pb2.Schedule:
    return analyst_pb2.Schedule(
        schedule_id=row.id,
        name=row.name,
        owner=row.owner,
        cron=row.cron,
        spec=spec_to_pb(JobSpec.from_json(row.spec)),
        created_at=row.created_at,
        next_run_at=row.next_run_at,
        runs=row.runs,
    )


def report_to_pb(run: RunRow, *, detail: bool) -> analyst_pb2.Report:
    pb = analyst_pb2.Report(
        report_id=run.id,
        schedule_id=run.schedule_id,
        schedule_name=run.schedule_name,
        owner=run.owner,
        run=run.run_no,
        trigger=run.trigger,
        slot=run.slot,
        fired_at=run.fired_at,
        job_id=run.job_id,
        state=run.state,
        error=run.error,
        finished_at=run.finished_at,
        summary=summary_line(run.report, state=run.state, error=run.error),
    )
    if detail and run.report is not None:
        pb.text = render_text(run.report)
        pb.json = json.dumps(run.report, indent=2, sort_keys=True)
    return pb


def connected_site(s: SiteSession) -> analyst_pb2.ConnectedSite:
    return analyst_pb2.ConnectedSite(
        site=s.name, connected_since=s.since, datasets=s.datasets, agent_version=s.hello.agent_version
    )


def strictest_policy(policies: list[common_pb2.DisclosurePolicy]) -> common_pb2.DisclosurePolicy:
    """What a job over every one of ``policies`` must satisfy: the strictest value of each setting."""
    if not policies:
        return common_pb2.DisclosurePolicy()
    analyses = [a for a in policies[0].allowed_analyses if all(a in p.allowed_analyses for p in policies)]
    modes = [m for m in policies[0].allowed_privacy if all(m in p.allowed_privacy for p in policies)]
    return common_pb2.DisclosurePolicy(
        site="",
        dataset=policies[0].dataset if len({p.dataset for p in policies}) == 1 else "",
        allowed_analyses=analyses,
        allowed_privacy=modes,
        weakest_privacy=max((p.weakest_privacy for p in policies), key=lambda m: STRENGTH.get(m, 0)),
        min_cohort=max(p.min_cohort for p in policies),
        min_cell_count=max(p.min_cell_count for p in policies),
        max_params_ratio=min(p.max_params_ratio for p in policies),
        min_sites=max(p.min_sites for p in policies),
        dp_epsilon_remaining=min(p.dp_epsilon_remaining for p in policies),
        dp_delta=min(p.dp_delta for p in policies),
        count_granularity=max(p.count_granularity for p in policies),
        dp_analyst_share=min(p.dp_analyst_share for p in policies),
        # names only: a set of the same name is each site's own
        set_names=[n for n in policies[0].set_names if all(n in p.set_names for p in policies)],
    )


class SiteGatewayService(site_pb2_grpc.SiteGatewayServicer):
    def __init__(self, registry: SiteRegistry, store: Store, audit_heads: AuditHeads):
        self.registry, self.store = registry, store
        self.audit_heads = audit_heads  # the sites' signed audit heads, verified and kept

    def Connect(
        self, request_iterator: Iterator[site_pb2.SiteMessage], context: grpc.ServicerContext
    ) -> Iterator[site_pb2.CoordinatorMessage]:  # noqa: N802
        ident = peer_identity(context)
        assert ident is not None
        try:
            first = next(request_iterator)
        except StopIteration:  # an empty or undecodable first message (a clean abort lets the server drain)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before its first message")
        if first.WhichOneof("kind") != "hello":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message on the site stream must be Hello")
        session = self.registry.attach(ident.name, first.hello, certificate=peer_certificate(context) or b"")
        self.store.site_seen(ident.name)

        def pump() -> None:
            try:
                for msg in request_iterator:
                    self.audit_heads.observe(ident.name, session.certificate, msg)
                    self.registry.route(ident.name, msg)
            except grpc.RpcError:
                pass
            finally:
                self.registry.detach(session)

        threading.Thread(target=pump, name=f"site-{ident.name}", daemon=True).start()
        context.add_callback(lambda: self.registry.detach(session))
        yield site_pb2.CoordinatorMessage(
            welcome=site_pb2.Welcome(
                coordinator_version=fedstat.__version__,
                site_name=ident.name,
                audit_head=self.audit_heads.welcome_head(ident.name),
            )
        )
        while True:
            msg = session.outbox.get()
            if msg is None:
                return
            yield msg


def _warm_up() -> None:
    from matplotlib import figure  # noqa: F401, PLC0415
    from matplotlib.backends import backend_agg  # noqa: F401, PLC0415 - what fedstat.report.plots uses


class Coordinator:
    """A running coordinator: server, store, registry and engine."""

    def __init__(self, config: CoordinatorConfig, *, address: str | None = None):
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        config.results_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.started_at = now_iso()
        self.store = Store(config.db_path)
        self.revocations = RevocationList(config.tls.crl, config.tls.ca)
        self.watches = WatchLimiter()
        self.registry = SiteRegistry()
        self.audit_heads = AuditHeads(self.store)
        self.engine = JobEngine(config, self.store, self.registry, revocations=self.revocations)
        self.scheduler = Scheduler(
            self.store,
            self.engine.submit,
            access=config.access,
            results_dir=config.results_dir,
            connected=lambda: [s.name for s in self.registry.connected()],
            min_sites=config.min_sites,
            revocations=self.revocations,
            startup_grace_s=min(config.site_reconnect_s, 120.0),
        )
        self.interceptor = AccessInterceptor(config.access, self.revocations)
        # Site streams each hold a thread for their lifetime; leave room for analysts' calls.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="rpc"),
            interceptors=[self.interceptor],
            options=SERVER_OPTIONS,
        )
        analyst_pb2_grpc.add_AnalystServicer_to_server(AnalystService(self), self.server)
        site_pb2_grpc.add_SiteGatewayServicer_to_server(
            SiteGatewayService(self.registry, self.store, self.audit_heads), self.server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_secure_port(address or config.listen, server_credentials(config.tls))
        if self.port == 0:
            raise FedstatError(f"cannot listen on {address or config.listen}")

    def start(self) -> None:
        # Import the plotting stack now, off the request path, so the first GWAS job does not pay
        # matplotlib's import time while the analyst waits.
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
        self.engine.resume_unfinished()
        self.server.start()
        self.scheduler.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("coordinator %s serving on port %d", fedstat.__version__, self.port)

    def status(self) -> analyst_pb2.StatusResponse:
        """Sites connected, jobs by state, round latencies of the last day (``fedstat status``)."""
        return analyst_pb2.StatusResponse(
            coordinator_version=fedstat.__version__,
            started_at=self.started_at,
            uptime_s=time.monotonic() - self.started,
            sites=[connected_site(s) for s in self.registry.connected()],
            jobs_by_state=self.store.count_jobs_by_state(),
            max_concurrent_jobs=self.config.max_concurrent_jobs,
            round_latencies=[
                analyst_pb2.RoundLatency(computation=c, count=n, mean_s=mean, p95_s=p95, max_s=mx)
                for c, n, mean, p95, mx in self.store.round_latencies(hours=24)
            ],
            decryptors_attached=self.engine.decryptors.attached(),
            refused_calls=self.interceptor.refused,
        )

    def stop(self, grace: float = 5.0) -> None:
        """Drain: report NOT_SERVING, close site streams, stop jobs, stop the server."""
        self.health.enter_graceful_shutdown()
        self.scheduler.stop()
        for s in self.registry.connected():
            s.close()
        self.engine.shutdown()
        self.server.stop(grace).wait()
        self.audit_heads.close()
        self.store.close()


@contextmanager
def running_coordinator(config: CoordinatorConfig, *, address: str | None = None) -> Iterator[Coordinator]:
    """Start a coordinator for the duration of a ``with`` block (tests use port 0)."""
    coord = Coordinator(config, address=address)
    coord.start()
    try:
        yield coord
    finally:
        coord.stop(grace=1.0)


def serve(config: CoordinatorConfig) -> None:
    """Run until SIGTERM or SIGINT; then drain gracefully."""
    coord = Coordinator(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    coord.start()
    stop.wait()
    log.info("shutting down")
    coord.stop()


__all__ = ["AccessInterceptor", "AuthError", "Coordinator", "running_coordinator", "serve"]
