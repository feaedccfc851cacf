"""Mutual TLS and roles: who may talk to the coordinator, and as what."""

from __future__ import annotations

import queue
import time

import grpc
import pytest

from fedstat.client import Client
from fedstat.errors import AuthError, SiteUnavailable
from fedstat.pki import TlsFiles
from fedstat.wire import analyst_pb2, analyst_pb2_grpc, site_pb2, site_pb2_grpc
from tests.conftest import analyst_profile


def _list_sites(channel: grpc.Channel) -> analyst_pb2.ListSitesResponse:
    return analyst_pb2_grpc.AnalystStub(channel).ListSites(analyst_pb2.ListSitesRequest(), timeout=5)


def test_coordinator__accepts_analyst_from_consortium_ca(session_pki, coordinator):
    _, port = coordinator
    with Client(analyst_profile(session_pki, port)) as c:
        assert c.sites() == []
        assert c.list_jobs() == []


def test_coordinator__refuses_client_without_certificate(session_pki, coordinator):
    _, port = coordinator
    creds = grpc.ssl_channel_credentials(root_certificates=(session_pki.ca / "ca.pem").read_bytes())
    with grpc.secure_channel(f"localhost:{port}", creds) as ch, pytest.raises(grpc.RpcError) as info:
        _list_sites(ch)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_coordinator__refuses_certificate_from_another_ca(session_pki, coordinator):
    _, port = coordinator
    rogue = TlsFiles(
        ca=session_pki.ca / "ca.pem",
        cert=session_pki.root / "rogue" / "alice.pem",
        key=session_pki.root / "rogue" / "alice.key",
    )
    from fedstat.config import AnalystProfile

    profile = AnalystProfile(path=session_pki.root / "x.toml", coordinator=f"localhost:{port}", tls=rogue)
    with Client(profile, timeout=5) as c, pytest.raises(SiteUnavailable, match="cannot reach the coordinator"):
        c.sites()


def test_coordinator__refuses_plaintext_client(coordinator):
    _, port = coordinator
    with grpc.insecure_channel(f"localhost:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        _list_sites(ch)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_role_interceptor__site_certificate_cannot_use_analyst_api(session_pki, coordinator):
    _, port = coordinator
    from fedstat.net import secure_channel

    with secure_channel(f"localhost:{port}", session_pki.tls("AFR")) as ch, pytest.raises(grpc.RpcError) as info:
        _list_sites(ch)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "role 'site'" in info.value.details()


def test_role_interceptor__analyst_certificate_cannot_join_as_site(session_pki, coordinator):
    coord, port = coordinator
    from fedstat.net import secure_channel

    hello = site_pb2.SiteMessage(hello=site_pb2.Hello(agent_version="test"))
    with secure_channel(f"localhost:{port}", session_pki.tls("alice")) as ch:
        call = site_pb2_grpc.SiteGatewayStub(ch).Connect(iter([hello]), timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            next(call)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert coord.registry.connected() == []


def test_site_identity__comes_from_certificate_subject(session_pki, coordinator):
    coord, port = coordinator
    from fedstat.net import secure_channel

    outbox: queue.Queue = queue.Queue()
    outbox.put(site_pb2.SiteMessage(hello=site_pb2.Hello(agent_version="test")))
    with secure_channel(f"localhost:{port}", session_pki.tls("EUR")) as ch:
        call = site_pb2_grpc.SiteGatewayStub(ch).Connect(iter(outbox.get, None), timeout=5)
        first = next(call)
        assert first.welcome.site_name == "EUR"
        assert [s.name for s in coord.registry.connected()] == ["EUR"]
        outbox.put(None)  # half-close: the coordinator forgets the site
        for _ in range(50):
            if not coord.registry.connected():
                break
            time.sleep(0.05)
        assert coord.registry.connected() == []


def test_jobs__analyst_sees_only_own_jobs(session_pki, coordinator):
    _, port = coordinator
    from fedstat.jobs import JobSpec

    with Client(analyst_profile(session_pki, port, "alice")) as alice:
        job = alice.submit(JobSpec(analyses=("freq",), out_name="x"))
        done = alice.wait(job.job_id, raise_on_failure=False)
        assert done.state == "FAILED"
        assert "no site is connected" in done.error
    with Client(analyst_profile(session_pki, port, "bob")) as bob:
        assert bob.list_jobs() == []
        from fedstat.errors import InputError

        with pytest.raises(InputError, match="no job"):
            bob.get(job.job_id)


def test_error_from_rpc__permission_denied_is_auth_error(session_pki, coordinator):
    _, port = coordinator
    from fedstat.config import AnalystProfile

    profile = AnalystProfile(
        path=session_pki.root / "x.toml", coordinator=f"localhost:{port}", tls=session_pki.tls("AFR")
    )
    with Client(profile) as c, pytest.raises(AuthError, match="may not call"):
        c.list_jobs()
