"""Identities and roles: revocation, CA rotation, analyst roles on the coordinator, and site
access rules. Each refusal is the right gRPC status with a message that says what is missing."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import grpc
import pytest

from fedstat import pki
from fedstat.client import Client
from fedstat.config import AccessConfig, AccessRule, AnalystProfile, CoordinatorConfig, load_coordinator_config
from fedstat.errors import AuthError, ConfigError, JobFailed, PrivacyError
from fedstat.jobs import JobSpec
from fedstat.pki import RevocationList, TlsFiles
from fedstat.wire import analyst_pb2, analyst_pb2_grpc
from tests.conftest import analyst_profile
from tests.test_secagg_e2e import _run


@pytest.fixture()
def ca(tmp_path: Path) -> Path:
    """A fresh consortium CA with a coordinator and four analysts."""
    root = tmp_path / "ca"
    pki.init_ca(root)
    pki.issue(root, tmp_path / "certs", name="coordinator", role="coordinator", hosts=("localhost", "127.0.0.1"))
    for name in ("alice", "bob", "carol", "dave"):
        pki.issue(root, tmp_path / "certs", name=name, role="analyst")
    return root


def _tls(ca: Path, name: str) -> TlsFiles:
    certs = ca.parent / "certs"
    return TlsFiles(ca=ca / "ca.pem", cert=certs / f"{name}.pem", key=certs / f"{name}.key", crl=ca / "crl.pem")


@pytest.fixture()
def coordinator_with_access(ca: Path, tmp_path: Path):
    from coordinator.server import running_coordinator

    cfg = CoordinatorConfig(
        path=tmp_path / "coordinator.toml",
        listen="127.0.0.1:0",
        state_dir=tmp_path / "state",
        tls=_tls(ca, "coordinator"),
        access=AccessConfig(analysts=(("carol", ("admin",)), ("dave", ()), ("bob", ("view-own",)))),
    )
    with running_coordinator(cfg) as coord:
        yield coord


def _client(ca: Path, coord, name: str) -> Client:
    return Client(AnalystProfile(path=Path("x.toml"), coordinator=f"localhost:{coord.port}", tls=_tls(ca, name)))


def _code(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_revoked_certificate__refused_unauthenticated_and_logged(ca, coordinator_with_access, caplog):
    coord = coordinator_with_access
    with _client(ca, coord, "alice") as c:
        assert c.sites() == []  # accepted before the revocation
    serial = pki.revoke(ca, cert=ca.parent / "certs" / "alice.pem", reason="key_compromise")
    assert [e.serial for e in pki.revoked_entries(ca)] == [serial]
    with (
        caplog.at_level(logging.WARNING, logger="fedstat.coordinator"),
        _client(ca, coord, "alice") as c,
        pytest.raises(AuthError, match="revoked by the consortium"),
    ):
        c.sites()  # the coordinator re-reads the CRL when it changes: no restart
    assert "Analyst/ListSites for analyst:alice: certificate revoked" in caplog.text
    with _client(ca, coord, "bob") as c:
        assert c.sites() == []  # everyone else is unaffected
    assert coord.status().refused_calls["UNAUTHENTICATED"] == 1


def test_revoke__twice_is_harmless_and_needs_one_certificate(ca):
    cert = ca.parent / "certs" / "bob.pem"
    assert pki.revoke(ca, cert=cert) == pki.revoke(ca, cert=cert)
    assert len(pki.revoked_entries(ca)) == 1
    with pytest.raises(Exception, match="exactly one certificate"):
        pki.revoke(ca)
    other = ca.parent / "other"
    pki.init_ca(other)
    pki.issue(other, other, name="eve", role="analyst")
    with pytest.raises(Exception, match="was not issued by the CA"):
        pki.revoke(ca, cert=other / "eve.pem")


def test_revocation_list__refuses_a_crl_the_ca_did_not_sign(ca, tmp_path):
    other = tmp_path / "other"
    pki.init_ca(other)
    with pytest.raises(ConfigError, match="not signed by the consortium CA"):
        RevocationList(other / "crl.pem", (ca / "ca.pem").read_bytes())
    with pytest.raises(ConfigError, match="cannot read|No such file"):
        RevocationList(tmp_path / "missing.pem", (ca / "ca.pem").read_bytes())


def test_analyst_roles__submit_view_own_view_all_admin(ca, coordinator_with_access):
    coord = coordinator_with_access
    spec = analyst_pb2.SubmitRequest()
    with _client(ca, coord, "dave") as c:  # no role at all
        code, details = _code(lambda: analyst_pb2_grpc.AnalystStub(c._channel).ListJobs(analyst_pb2.ListJobsRequest()))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert (
            details
            == "analyst dave lacks the role 'view-own' on this coordinator, which /fedstat.v1.Analyst/ListJobs needs"
        )
        who = c._stub.WhoAmI(analyst_pb2.WhoAmIRequest())
        assert (who.name, who.role, list(who.roles)) == ("dave", "analyst", [])
    with _client(ca, coord, "bob") as c:  # view-own: may look, may not submit
        assert c.list_jobs() == []
        code, details = _code(lambda: c._stub.Submit(spec))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "lacks the role 'submit'" in details
        code, _ = _code(lambda: c._stub.Status(analyst_pb2.StatusRequest()))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    # alice (default roles) submits; no site is connected, so the job fails fast, but it exists
    with _client(ca, coord, "alice") as c:
        job = c.submit(JobSpec(analyses=("freq",), out_name="f"))
        done = c.wait(job.job_id, raise_on_failure=False)
        assert done.state == "FAILED" and "no site is connected" in done.error
        code, _ = _code(lambda: c._stub.ListJobs(analyst_pb2.ListJobsRequest(all_analysts=True)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    with _client(ca, coord, "bob") as c:  # another analyst's job is not found for view-own
        with pytest.raises(Exception, match="no job with id"):
            c.get(job.job_id)
    with _client(ca, coord, "carol") as c:  # admin: view all, status
        assert c.get(job.job_id).analyst == "alice"
        listed = c._stub.ListJobs(analyst_pb2.ListJobsRequest(all_analysts=True, state="FAILED")).jobs
        assert [j.job_id for j in listed] == [job.job_id]
        status = c._stub.Status(analyst_pb2.StatusRequest())
        assert status.jobs_by_state["FAILED"] == 1 and status.jobs_by_state["RUNNING"] == 0
        assert status.refused_calls["PERMISSION_DENIED"] == 4
        assert status.max_concurrent_jobs == 2


def test_access_config__roles_from_toml(tmp_path):
    path = tmp_path / "coordinator.toml"
    path.write_text(
        '[coordinator]\nlisten = "127.0.0.1:1"\n[tls]\nca = "a"\ncert = "b"\nkey = "c"\n'
        '[access]\ndefault = ["view-own"]\nanalysts = { ops = ["admin"], reader = ["view-all"] }\n'
    )
    access = load_coordinator_config(path).access
    assert access.roles("ops") == {"submit", "view-own", "view-all", "admin"}
    assert access.roles("reader") == {"view-all", "view-own"}
    assert access.roles("anyone") == {"view-own"}
    path.write_text(path.read_text().replace('"admin"', '"root"'))
    with pytest.raises(ConfigError, match="access.analysts.ops: unknown role\\(s\\) 'root'"):
        load_coordinator_config(path)


def test_rotate_ca__old_and_new_certificates_both_accepted_without_restart(ca, coordinator_with_access, tmp_path):
    coord = coordinator_with_access
    old_ca = (ca / "ca.pem").read_bytes()
    pki.rotate_ca(ca)
    bundle = (ca / "ca.pem").read_bytes()
    assert bundle.count(b"BEGIN CERTIFICATE") == 2 and bundle.endswith(old_ca)
    pki.issue(ca, tmp_path / "new", name="erin", role="analyst")  # issued by the new CA
    new = TlsFiles(ca=ca / "ca.pem", cert=tmp_path / "new" / "erin.pem", key=tmp_path / "new" / "erin.key")
    deadline = time.monotonic() + 10
    while True:  # the coordinator reloads its CA bundle at the next handshake
        try:
            with Client(AnalystProfile(path=Path("x"), coordinator=f"localhost:{coord.port}", tls=new), timeout=3) as c:
                assert c.sites() == []
            break
        except Exception:
            assert time.monotonic() < deadline, "the coordinator did not pick up the rotated CA bundle"
            time.sleep(0.3)
    with _client(ca, coord, "alice") as c:  # issued by the old CA: still valid
        assert c.sites() == []
    assert pki.revoked_entries(ca) == []  # the CRL was re-signed by the new CA, entries kept
    pki.revoke(ca, cert=ca.parent / "certs" / "alice.pem")
    with _client(ca, coord, "alice") as c, pytest.raises(AuthError, match="revoked"):
        c.sites()


def test_site_policy_access__excludes_analyst_and_analysis(session_pki, consortium, consortium_agents, tmp_path):
    _, port = consortium
    rules = (AccessRule(who=("alice",), analyses=("freq", "hardy")), AccessRule(who=("role:admin",)))
    agent = consortium_agents["EUR"]
    agent.config = dataclasses.replace(agent.config, policy=dataclasses.replace(agent.config.policy, access=rules))
    spec = JobSpec(analyses=("freq",), out_name="f")
    _run(session_pki, port, tmp_path / "ok", spec)  # alice may run --freq
    with pytest.raises(
        JobFailed, match=r"site EUR refused the job: analyst alice may not run --missing on dataset main"
    ):
        _run(session_pki, port, tmp_path / "no", JobSpec(analyses=("freq", "missing"), out_name="f"))
    with Client(analyst_profile(session_pki, port, "bob")) as c:
        job = c.submit(spec)
        done = c.wait(job.job_id, raise_on_failure=False)
    assert done.state == "FAILED"
    assert (
        done.error
        == "site EUR refused the job: analyst bob may not run jobs on dataset main at this site (policy access)"
    )
    from site_agent.audit_verify import show

    records = list(show(agent.config.state_dir / "audit.log", job_id=job.job_id))
    assert [(r["analyst"], r["decision"]) for r in records] == [("bob", "refused")]
    assert "policy access" in records[0]["reason"]


def test_site__refuses_an_analyst_its_crl_revokes_and_a_forged_certificate(
    session_pki, consortium, consortium_agents, tmp_path
):
    _, port = consortium
    ca = session_pki.ca
    crl_dir = tmp_path / "crl"  # a CRL only this site holds: the coordinator does not know yet
    crl_dir.mkdir()
    for f in ("ca.pem", "ca.key"):
        (crl_dir / f).write_bytes((ca / f).read_bytes())
    pki.revoke(crl_dir, cert=session_pki.root / "bob.pem")
    agent = consortium_agents["AFR"]
    agent.revocations = RevocationList(crl_dir / "crl.pem", (ca / "ca.pem").read_bytes())
    with Client(analyst_profile(session_pki, port, "bob")) as c:
        done = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert done.error == "site AFR refused the job: analyst bob's certificate has been revoked"
    _run(session_pki, port, tmp_path / "ok", JobSpec(analyses=("freq",), out_name="f"))  # alice still runs


def test_verify_round_keys__refuses_a_revoked_peer(session_pki):
    from fedstat.privacy.base import RoundContext
    from fedstat.privacy.secagg import RoundKeyPair, verify_round_keys

    ctx = RoundContext(job_id="j", round=1, attempt=0, participants=("AFR", "EUR"))
    signed = {}
    for site in ctx.participants:
        tls = session_pki.tls(site)
        signed[site] = RoundKeyPair().signed(
            ctx, site, signing_key_pem=tls.key.read_bytes(), certificate_pem=tls.cert.read_bytes()
        )
    ca_pem = (session_pki.ca / "ca.pem").read_bytes()
    keys = list(signed.values())
    assert set(verify_round_keys(ctx, keys, ca_pem=ca_pem, own=signed["AFR"])) == {"EUR"}
    eur_serial = pki.x509.load_pem_x509_certificate(session_pki.tls("EUR").cert.read_bytes()).serial_number
    with pytest.raises(PrivacyError, match="site EUR's certificate has been revoked"):
        verify_round_keys(ctx, keys, ca_pem=ca_pem, own=signed["AFR"], revoked=lambda c: c.serial_number == eur_serial)


def test_watch_limit__a_client_over_the_cap_polls_instead(ca, coordinator_with_access):
    from coordinator.server import MAX_WATCHES_PER_ANALYST

    coord = coordinator_with_access
    for _ in range(MAX_WATCHES_PER_ANALYST):  # alice already holds as many watches as she may
        assert coord.watches.acquire("alice")
    with _client(ca, coord, "alice") as c:
        job = c.submit(JobSpec(analyses=("freq",), out_name="f"))
        code, details = _code(lambda: next(iter(c._stub.WatchJob(analyst_pb2.GetJobRequest(job_id=job.job_id)))))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "poll GetJob instead" in details
        done = c.wait(job.job_id, raise_on_failure=False)  # falls back to polling
    assert done.state == "FAILED"
    assert coord.watches.acquire("bob")  # the cap is per analyst


def test_site_concurrency__rounds_computed_at_once_stay_within_the_site_limit(
    session_pki, consortium, consortium_agents, tmp_path
):
    """Three jobs at once (the coordinator runs two): each site computes one round at a time when
    its max_concurrent_jobs is 1, and every job still completes with the same results."""
    import threading

    coord, port = consortium
    for agent in consortium_agents.values():
        agent.config = dataclasses.replace(
            agent.config, max_concurrent_jobs=1, block_size=8
        )  # slower rounds, so jobs overlap
        agent._compute = threading.BoundedSemaphore(LIMIT)
        agent.peak_rounds_running = 0
    spec = JobSpec(
        analyses=("glm",),
        pheno_names=("QT",),
        covar_names=("AGE",),
        out_name="g",
        privacy="none",
        options={"require_pheno": "1"},  # one cohort for every round (the sites' release ledgers)
    )
    with Client(analyst_profile(session_pki, port)) as c:
        ids = [c.submit(spec).job_id for _ in range(3)]
        jobs = [c.wait(j) for j in ids]
        tables = {c.fetch_results(j, tmp_path / j)[0].read_bytes() for j in ids}
    assert [j.state for j in jobs] == ["DONE"] * 3
    assert len(tables) == 1  # no job mixed up with another
    assert {a.peak_rounds_running for a in consortium_agents.values()} == {LIMIT}


LIMIT = 1


def test_client__refuses_a_coordinator_its_crl_revokes(ca, coordinator_with_access):
    coord = coordinator_with_access
    with _client(ca, coord, "alice") as c:
        assert c.sites() == []
    pki.revoke(ca, cert=ca.parent / "certs" / "coordinator.pem", reason="key_compromise")
    with pytest.raises(AuthError, match=r"the coordinator at localhost:\d+ presents a revoked certificate"):
        _client(ca, coord, "alice")


def test_revocation_list__a_stale_crl_fails_closed_until_re_signed(ca, monkeypatch, capsys):
    import datetime as dt

    from fedstat.cli.main import main as cli

    crl = RevocationList(ca / "crl.pem", (ca / "ca.pem").read_bytes())
    assert crl.serials() == frozenset()

    class _Later:  # the clock 31 days on: past the CRL's nextUpdate
        UTC, timedelta = dt.UTC, dt.timedelta

        class datetime(dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return dt.datetime.now(tz) + dt.timedelta(days=pki.CRL_VALID_DAYS + 1)

    with monkeypatch.context() as m:
        m.setattr(pki, "dt", _Later)
        with pytest.raises(ConfigError, match=r"crl.pem is stale \(its nextUpdate was .*fedstat ca crl CA_DIR"):
            crl.serials()
    # the CA holder re-signs it; the same revocations stay, valid for another CRL_VALID_DAYS
    pki.revoke(ca, cert=ca.parent / "certs" / "bob.pem")
    assert cli(["ca", "crl", str(ca)]) == 0
    assert f"valid for {pki.CRL_VALID_DAYS} days" in capsys.readouterr().out
    assert len(crl.serials()) == 1 and len(pki.revoked_entries(ca)) == 1


def test_site__refuses_offers_once_the_coordinator_certificate_is_revoked(
    session_pki, consortium, consortium_agents, tmp_path
):
    _, port = consortium
    ca = session_pki.ca
    crl_dir = tmp_path / "crl"  # a CRL only this site holds
    crl_dir.mkdir()
    for f in ("ca.pem", "ca.key"):
        (crl_dir / f).write_bytes((ca / f).read_bytes())
    agent = consortium_agents["AFR"]
    agent._coordinator_pem = (session_pki.root / "coordinator.pem").read_bytes()  # as seen at connect
    pki.revoke(crl_dir, cert=session_pki.root / "coordinator.pem")
    agent.revocations = RevocationList(crl_dir / "crl.pem", (ca / "ca.pem").read_bytes())
    with Client(analyst_profile(session_pki, port)) as c:
        done = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert done.error == (
        "site AFR refused the job: the coordinator's certificate has been revoked; this site takes no job from it"
    )
