"""Issue 14's O2 through the real coordinator and site agents (mTLS): every offer reply and every
round's end carries the site's signed audit head, the coordinator keeps the latest, and a site whose
log was cut or rewritten (chain and anchor rewritten, so a plain verify passes) is caught at its
next connection and by `fedstat site audit verify --against`, refuses jobs with its reason, and
works again once its operator restores the log or the consortium accepts a new one."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from fedstat.cli.main import main
from fedstat.client import Client
from fedstat.jobs import JobSpec
from site_agent.audit_verify import show
from tests import audit_tamper
from tests.conftest import GWAS_SITES, analyst_profile

FREQ = JobSpec(analyses=("freq",), out_name="f")


def cli(args: list[str]) -> int:
    """The `fedstat` command, leaving the test's logging as it was (the command routes it to stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(args)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def _run(port: int, session_pki, spec: JobSpec = FREQ):
    with Client(analyst_profile(session_pki, port)) as c:
        return c.wait(c.submit(spec).job_id, raise_on_failure=False)


def _restart(coord, agents: dict, name: str) -> None:
    """Stop a site's agent, close its audit log, and start a new agent on the same state directory."""
    from site_agent.agent import SiteAgent

    old = agents[name]
    old.stop()
    if old._audit is not None:
        old._audit.close()
    agent = SiteAgent(old.config)
    threading.Thread(target=agent.run, daemon=True).start()
    agents[name] = agent
    deadline = time.monotonic() + 20
    while not agent.connected.is_set():
        assert time.monotonic() < deadline, f"site {name} did not reconnect"
        time.sleep(0.05)


def _coordinator_toml(session_pki, coord, tmp_path: Path) -> Path:
    tls = session_pki.tls("coordinator")
    path = tmp_path / "coordinator-cli.toml"
    path.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:0"\nstate_dir = "{coord.config.state_dir}"\n\n'
        f'[tls]\nca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
    )
    return path


def test_audit_heads__the_coordinator_keeps_each_sites_head_after_every_offer_reply_and_round(
    session_pki, consortium, consortium_agents
):
    coord, port = consortium
    assert _run(port, session_pki).state == "DONE"
    coord.audit_heads.flush()  # heads are kept off the message path, on their own thread
    kept = coord.store.audit_heads()
    for name in GWAS_SITES:  # the round's end carried the head after its release record
        assert (kept[name].seq, kept[name].hash) == consortium_agents[name].audit.head
        assert kept[name].seq == 2  # offer, harmonize, release
    refused = _run(port, session_pki, JobSpec(analyses=("freq",), pheno_names=("NOPE",), out_name="x"))
    assert refused.state == "FAILED"
    deadline = time.monotonic() + 10
    while any(coord.store.audit_heads()[n].seq != 3 for n in GWAS_SITES):  # a refusal's reply carries it too
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert coord.store.audit_head_alarms() == []


def test_audit_heads__a_cut_or_rewritten_log_is_caught_at_reconnect_and_by_verify_against(
    session_pki, consortium, consortium_agents, tmp_path, capsys
):
    coord, port = consortium
    agents = consortium_agents
    for _ in range(2):
        assert _run(port, session_pki).state == "DONE"
    coord.audit_heads.flush()
    coordinator_toml = _coordinator_toml(session_pki, coord, tmp_path)
    heads_file = tmp_path / "heads.json"
    assert cli(["coordinator", "audit-heads", "--config", str(coordinator_toml), "--out", str(heads_file)]) == 0
    assert "wrote 3 head(s) and 0 alarm(s)" in capsys.readouterr().out
    kept = coord.store.audit_heads()
    assert kept["EUR"].seq == kept["AFR"].seq == 5  # two jobs: offer, harmonize, release each

    # the attack: with the agents stopped, EUR's last 2 records are cut and AFR's first record is edited;
    # each chain and its anchor are rewritten, so a plain verify passes at both sites
    backup = tmp_path / "EUR-backup"
    for name in ("EUR", "AFR"):
        agents[name].stop()
        agents[name]._audit.close()
    shutil.copytree(tmp_path / "EUR", backup)
    audit_tamper.tamper(tmp_path / "EUR" / "audit.log", audit_tamper.cut_last(2))
    audit_tamper.tamper(tmp_path / "AFR" / "audit.log", audit_tamper.edit_first)
    eur_toml, afr_toml = (
        audit_tamper.site_toml(session_pki, tmp_path / n, n, tmp_path / f"{n}-cli.toml") for n in ("EUR", "AFR")
    )
    assert cli(["site", "audit", "verify", "--config", str(eur_toml)]) == 0
    capsys.readouterr()
    assert cli(["site", "audit", "verify", "--config", str(eur_toml), "--against", str(heads_file)]) == 1
    assert "the log ends at seq 3 but this site signed an audit head at seq 5" in capsys.readouterr().err
    assert cli(["site", "audit", "verify", "--config", str(afr_toml), "--against", str(heads_file)]) == 1
    assert "record seq 5 is not the one this site signed" in capsys.readouterr().err

    # at reconnect each site finds the coordinator's head missing from its log and refuses jobs
    for name in ("EUR", "AFR"):
        _restart(coord, agents, name)
    assert "2 record(s) were removed from the end" in agents["EUR"].anchor.alarm
    assert "record seq 5 is not the one this site signed" in agents["AFR"].anchor.alarm
    job = _run(port, session_pki)
    assert job.state == "FAILED"
    assert "audit log no longer holds record seq 5, which the site signed to the coordinator" in job.error
    assert "the site takes no job until its operator restores the log or the consortium accepts a new one" in job.error
    for name in ("EUR", "AFR"):
        events = [r["event"] for r in show(tmp_path / name / "audit.log")]
        assert "audit_alarm" in events
    deadline = time.monotonic() + 10
    while {a.site for a in coord.store.audit_head_alarms()} != {"EUR", "AFR"}:  # the refusals' heads report it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {(a.site, a.kind) for a in coord.store.audit_head_alarms()} == {("EUR", "reported"), ("AFR", "reported")}
    now = coord.store.audit_heads()  # the coordinator's copy does not move while an alarm is open
    assert now["EUR"] == kept["EUR"] and now["AFR"] == kept["AFR"] and now["EAS"].seq == 6
    capsys.readouterr()
    assert cli(["coordinator", "audit-heads", "--config", str(coordinator_toml)]) == 1
    assert "ALARM EUR reported" in capsys.readouterr().out

    # the operators act: EUR's log is restored from its backup; AFR's cannot be, and a new log is accepted
    for name in ("EUR", "AFR"):
        agents[name].stop()
        agents[name]._audit.close()
    shutil.rmtree(tmp_path / "EUR")
    shutil.copytree(backup, tmp_path / "EUR")
    evidence = tmp_path / "AFR-evidence"
    evidence.mkdir()
    for f in ("audit.log", "audit.log.head"):
        (tmp_path / "AFR" / f).rename(evidence / f)
    assert cli(["coordinator", "audit-heads", "--config", str(coordinator_toml), "--resolve", "EUR"]) == 2
    assert "need --note" in capsys.readouterr().err
    args = ["coordinator", "audit-heads", "--config", str(coordinator_toml)]
    assert cli([*args, "--resolve", "EUR", "--note", "restored from backup"]) == 1  # AFR's alarm is still open
    assert cli([*args, "--accept-new-log", "AFR", "--note", "log lost; evidence kept"]) == 0
    for name in ("EUR", "AFR"):
        _restart(coord, agents, name)
    assert _run(port, session_pki).state == "DONE"
    coord.audit_heads.flush()
    now = coord.store.audit_heads()
    assert now["EUR"].seq == 8 and now["AFR"].seq == 2  # EUR's restored log went on; AFR's new log began
    assert [a.kind for a in coord.store.audit_head_alarms(site="AFR")] == ["reported", "reset"]
    assert coord.store.audit_head_alarms(open_only=True) == []


def _raw_site(session_pki, port: int, name: str):
    """A raw site stream over mTLS as ``name``: (outbox, (channel, call), welcome)."""
    import queue

    from fedstat.net import secure_channel
    from fedstat.wire import site_pb2, site_pb2_grpc

    outbox: queue.Queue = queue.Queue()
    outbox.put(site_pb2.SiteMessage(hello=site_pb2.Hello(agent_version="test")))
    channel = secure_channel(f"localhost:{port}", session_pki.tls(name))
    call = site_pb2_grpc.SiteGatewayStub(channel).Connect(iter(outbox.get, None), timeout=30)
    return outbox, (channel, call), next(call).welcome


def test_audit_heads__forged_heads_are_refused_and_a_lower_seq_is_flagged_by_the_running_coordinator(
    session_pki, coordinator
):
    import dataclasses

    from fedstat.audit_head import check_head, head_from_pb, head_to_pb, sign_head
    from fedstat.wire import site_pb2

    coord, port = coordinator
    key, cert = (session_pki.tls("EUR").key.read_bytes(), session_pki.tls("EUR").cert.read_bytes())

    def reply(head) -> site_pb2.SiteMessage:
        return site_pb2.SiteMessage(decision=site_pb2.JobDecision(job_id="j", audit_head=head_to_pb(head)))

    def settle(outbox) -> None:  # a marker behind the heads: once its head is kept, the ones before were seen
        nonlocal marker
        marker += 1
        outbox.put(reply(sign_head("EAS", marker, "f" * 64, key_pem=eas_key, certificate_pem=eas_cert)))
        deadline = time.monotonic() + 10
        while coord.store.audit_heads().get("EAS", None) is None or coord.store.audit_heads()["EAS"].seq != marker:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    eas_key, eas_cert = session_pki.tls("EAS").key.read_bytes(), session_pki.tls("EAS").cert.read_bytes()
    marker = 0
    outbox, channel, welcome = _raw_site(session_pki, port, "EUR")
    eas_outbox, eas_channel, _ = _raw_site(session_pki, port, "EAS")
    assert not welcome.HasField("audit_head")  # nothing kept yet
    good = sign_head("EUR", 5, "a" * 64, key_pem=key, certificate_pem=cert)
    outbox.put(reply(good))
    outbox.put(reply(dataclasses.replace(sign_head("EUR", 7, "b" * 64, key_pem=key, certificate_pem=cert), seq=9)))
    afr = session_pki.tls("AFR")
    outbox.put(
        reply(sign_head("AFR", 8, "c" * 64, key_pem=afr.key.read_bytes(), certificate_pem=afr.cert.read_bytes()))
    )
    outbox.put(reply(sign_head("EUR", 3, "d" * 64, key_pem=key, certificate_pem=cert)))  # genuinely signed, lower
    deadline = time.monotonic() + 10
    while not coord.store.audit_head_alarms():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    settle(eas_outbox)
    assert coord.store.audit_heads()["EUR"].seq == 5  # the forged and the other site's heads were not kept
    ((site, kind, lower),) = [(a.site, a.kind, a.offending.seq) for a in coord.store.audit_head_alarms()]
    assert (site, kind, lower) == ("EUR", "truncated", 3)
    outbox.put(None)
    channel[0].close()
    # at the next connection the coordinator hands EUR back the head it keeps, signed by EUR
    outbox, channel, welcome = _raw_site(session_pki, port, "EUR")
    kept = head_from_pb(welcome.audit_head)
    check_head(kept, ca_pem=session_pki.tls("EUR").ca.read_bytes(), site="EUR")
    assert (kept.seq, kept.hash) == (5, "a" * 64)
    for box, ch in ((outbox, channel), (eas_outbox, eas_channel)):
        box.put(None)
        ch[0].close()
