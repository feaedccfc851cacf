"""The coordinator daemon: gRPC server with mutual TLS, the analyst API and the site gateway.

Servicers are thin: convert the request, call the engine or the store, convert the reply.
Authorization (which role may call which service) lives in :class:`RoleInterceptor`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import fedstat
from fedstat.config import CoordinatorConfig
from fedstat.errors import AuthError, FedstatError
from fedstat.net import SERVER_OPTIONS, peer_identity, server_credentials, status_for
from fedstat.protocol import spec_from_pb, spec_to_pb
from fedstat.wire import analyst_pb2, analyst_pb2_grpc, common_pb2, site_pb2, site_pb2_grpc

from .engine import JobEngine
from .sessions import SiteRegistry
from .store import JobRow, Store

log = logging.getLogger("fedstat.coordinator")

#: Which certificate role may call which service.
SERVICE_ROLES = {
    "/fedstat.v1.SiteGateway/": "site",
    "/fedstat.v1.Analyst/": "analyst",
}
RESULT_CHUNK_BYTES = 1 << 20


class RoleInterceptor(grpc.ServerInterceptor):
    """Allows a call only when the peer's verified certificate has the service's role."""

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        role = next((r for prefix, r in SERVICE_ROLES.items() if method.startswith(prefix)), None)
        if handler is None or role is None:
            return handler  # e.g. the health service: any certificate from the consortium CA

        def guard(behavior: Any) -> Any:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                ident = peer_identity(context)
                if ident is None:
                    log.warning("refused %s: no client certificate", method)
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
                if ident.role != role:
                    log.warning("refused %s for %s: role %r may not call it", method, ident.name, ident.role)
                    context.abort(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"certificate role {ident.role!r} may not call {method}; it needs role {role!r}",
                    )
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


def job_to_pb(job: JobRow) -> analyst_pb2.JobStatus:
    from fedstat.jobs import JobSpec  # noqa: PLC0415

    return analyst_pb2.JobStatus(
        job_id=job.id,
        state=job.state,
        analyst=job.analyst,
        spec=spec_to_pb(JobSpec.from_json(job.spec)),
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
            )
            for s in job.sites
        ],
    )


class AnalystService(analyst_pb2_grpc.AnalystServicer):
    def __init__(self, engine: JobEngine, store: Store, registry: SiteRegistry, results_dir: Path):
        self.engine, self.store, self.registry, self.results_dir = engine, store, registry, results_dir

    def _own_job(self, job_id: str, context: grpc.ServicerContext) -> JobRow:
        ident = peer_identity(context)
        try:
            job = self.store.get_job(job_id)
        except FedstatError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        assert ident is not None
        if job.analyst != ident.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job with id {job_id!r}")
        return job

    def Submit(self, request: analyst_pb2.SubmitRequest, context: grpc.ServicerContext) -> analyst_pb2.JobStatus:  # noqa: N802
        ident = peer_identity(context)
        assert ident is not None
        try:
            job_id = self.engine.submit(spec_from_pb(request.spec), ident.name)
        except FedstatError as exc:
            _abort(context, exc)
        log.info("job %s submitted by %s", job_id, ident.name)
        return job_to_pb(self.store.get_job(job_id))

    def GetJob(self, request: analyst_pb2.GetJobRequest, context: grpc.ServicerContext) -> analyst_pb2.JobStatus:  # noqa: N802
        return job_to_pb(self._own_job(request.job_id, context))

    def ListJobs(
        self, request: analyst_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> analyst_pb2.ListJobsResponse:  # noqa: N802
        ident = peer_identity(context)
        assert ident is not None
        jobs = self.store.list_jobs(limit=request.limit or 50, analyst=ident.name)
        return analyst_pb2.ListJobsResponse(jobs=[job_to_pb(j) for j in jobs])

    def CancelJob(self, request: analyst_pb2.CancelJobRequest, context: grpc.ServicerContext) -> analyst_pb2.JobStatus:  # noqa: N802
        self._own_job(request.job_id, context)
        self.engine.cancel(request.job_id)
        return job_to_pb(self.store.get_job(request.job_id))

    def WatchJob(
        self, request: analyst_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[analyst_pb2.JobStatus]:  # noqa: N802
        job = self._own_job(request.job_id, context)
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
        return analyst_pb2.ListSitesResponse(
            sites=[
                analyst_pb2.ConnectedSite(
                    site=s.name, connected_since=s.since, datasets=s.datasets, agent_version=s.hello.agent_version
                )
                for s in self.registry.connected()
            ]
        )

    def Decrypt(
        self, request_iterator: Iterator[analyst_pb2.DecryptReply], context: grpc.ServicerContext
    ) -> Iterator[analyst_pb2.DecryptRequest]:  # noqa: N802
        """--privacy paillier: the submitting analyst's client attaches as its job's decryptor."""
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        job = self._own_job(first.job_id, context)
        from fedstat.jobs import JobSpec  # noqa: PLC0415
        from fedstat.privacy.base import get_mode  # noqa: PLC0415

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


def strictest_policy(policies: list[common_pb2.DisclosurePolicy]) -> common_pb2.DisclosurePolicy:
    """What a job over every one of ``policies`` must satisfy: the strictest value of each setting."""
    from fedstat.privacy.base import STRENGTH  # noqa: PLC0415

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
    )


class SiteGatewayService(site_pb2_grpc.SiteGatewayServicer):
    def __init__(self, registry: SiteRegistry, store: Store):
        self.registry, self.store = registry, store

    def Connect(
        self, request_iterator: Iterator[site_pb2.SiteMessage], context: grpc.ServicerContext
    ) -> Iterator[site_pb2.CoordinatorMessage]:  # noqa: N802
        ident = peer_identity(context)
        assert ident is not None
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if first.WhichOneof("kind") != "hello":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message on the site stream must be Hello")
        session = self.registry.attach(ident.name, first.hello)
        self.store.site_seen(ident.name)

        def pump() -> None:
            try:
                for msg in request_iterator:
                    self.registry.route(ident.name, msg)
            except grpc.RpcError:
                pass
            finally:
                self.registry.detach(session)

        threading.Thread(target=pump, name=f"site-{ident.name}", daemon=True).start()
        context.add_callback(lambda: self.registry.detach(session))
        yield site_pb2.CoordinatorMessage(
            welcome=site_pb2.Welcome(coordinator_version=fedstat.__version__, site_name=ident.name)
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
        self.store = Store(config.db_path)
        self.registry = SiteRegistry()
        self.engine = JobEngine(config, self.store, self.registry)
        # Site streams each hold a thread for their lifetime; leave room for analysts' calls.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="rpc"),
            interceptors=[RoleInterceptor()],
            options=SERVER_OPTIONS,
        )
        analyst_pb2_grpc.add_AnalystServicer_to_server(
            AnalystService(self.engine, self.store, self.registry, config.results_dir), self.server
        )
        site_pb2_grpc.add_SiteGatewayServicer_to_server(SiteGatewayService(self.registry, self.store), self.server)
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
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("coordinator %s serving on port %d", fedstat.__version__, self.port)

    def stop(self, grace: float = 5.0) -> None:
        """Drain: report NOT_SERVING, close site streams, stop jobs, stop the server."""
        self.health.enter_graceful_shutdown()
        for s in self.registry.connected():
            s.close()
        self.engine.shutdown()
        self.server.stop(grace).wait()
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


__all__ = ["AuthError", "Coordinator", "running_coordinator", "serve"]
