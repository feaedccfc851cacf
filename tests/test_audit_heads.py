"""Signed audit heads: signing and checking, the coordinator's rule for keeping them, the site's
check of its log against the coordinator's copy, and `verify --against` on logs cut, edited,
reordered or with a record deleted and the whole chain and anchor rewritten."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from coordinator.audit_heads import AuditHeads
from coordinator.store import Store
from fedstat import pki
from fedstat.audit_head import (
    SignedHead,
    check_head,
    classify,
    head_from_pb,
    head_to_pb,
    read_heads,
    sign_head,
    write_heads,
)
from fedstat.cli.main import main as cli
from fedstat.errors import AuthError, InputError, PolicyRefused, ProtocolError
from fedstat.wire import site_pb2
from site_agent.audit_anchor import AuditAnchor
from site_agent.audit_log import AuditLog
from site_agent.audit_verify import verify
from tests import audit_tamper


def _pems(session_pki, name: str) -> tuple[bytes, bytes]:
    tls = session_pki.tls(name)
    return tls.key.read_bytes(), tls.cert.read_bytes()


def _head(session_pki, site: str, seq: int, digest: str = "a" * 64, **kw) -> SignedHead:
    key, cert = _pems(session_pki, site)
    return sign_head(site, seq, digest, key_pem=key, certificate_pem=cert, **kw)


def _ca(session_pki) -> bytes:
    return (session_pki.ca / "ca.pem").read_bytes()


def _log(path: Path, n: int) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append(event="offer", job_id=f"job-{i}", decision="accepted", reason=f"record {i}")
    return log


# --- the signed statement -----------------------------------------------------------------


def test_sign_head__verifies_with_its_certificate_and_survives_the_wire(session_pki):
    head = _head(session_pki, "EUR", 7, "b" * 64)
    check_head(head, ca_pem=_ca(session_pki), site="EUR")
    back = head_from_pb(site_pb2.AuditHead.FromString(head_to_pb(head).SerializeToString()))
    assert back == head
    check_head(back, certificate_pem=session_pki.tls("EUR").cert.read_bytes())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: dataclasses.replace(h, seq=h.seq + 1), "is not signed by site EUR's certificate key"),
        (lambda h: dataclasses.replace(h, hash="c" * 64), "is not signed by site EUR's certificate key"),
        (lambda h: dataclasses.replace(h, conflict=True), "is not signed by site EUR's certificate key"),
        (lambda h: dataclasses.replace(h, site="AFR"), "names site AFR but is checked against site:EUR"),
    ],
)
def test_check_head__a_changed_head_is_refused(session_pki, change, message):
    with pytest.raises(AuthError, match=message):
        check_head(change(_head(session_pki, "EUR", 7)), ca_pem=_ca(session_pki))


def test_check_head__a_head_signed_by_another_key_or_outside_the_ca_is_refused(session_pki, tmp_path):
    afr_key, _ = _pems(session_pki, "AFR")
    eur_cert = session_pki.tls("EUR").cert.read_bytes()
    forged = sign_head("EUR", 3, "a" * 64, key_pem=afr_key, certificate_pem=eur_cert)  # AFR's key, EUR's name
    with pytest.raises(AuthError, match="is not signed by site EUR's certificate key"):
        check_head(forged, ca_pem=_ca(session_pki))
    pki.issue(session_pki.root / "rogue-ca", tmp_path, name="EUR", role="site")
    rogue = sign_head(
        "EUR",
        3,
        "a" * 64,
        key_pem=(tmp_path / "EUR.key").read_bytes(),
        certificate_pem=(tmp_path / "EUR.pem").read_bytes(),
    )
    check_head(rogue)  # self-consistent …
    with pytest.raises(AuthError, match="was not issued by the consortium CA"):
        check_head(rogue, ca_pem=_ca(session_pki))  # … but not the consortium's
    with pytest.raises(AuthError, match="is site EUR's, not site AFR's"):
        check_head(_head(session_pki, "EUR", 3), site="AFR")


def test_head_from_pb__malformed_fields_are_a_protocol_error(session_pki):
    good = head_to_pb(_head(session_pki, "EUR", 1))
    for field, value, message in [
        ("hash", "xyz", "'hash' is not 64 lower-case hex digits"),
        ("time", "yesterday", "'time' is not an ISO-8601 time"),
        ("site", "EUR; DROP", "'site' is not a site name"),
        ("signature", b"s" * 300, "signature or certificate longer than"),
    ]:
        bad = site_pb2.AuditHead()
        bad.CopyFrom(good)
        setattr(bad, field, value)
        with pytest.raises(ProtocolError, match=message):
            head_from_pb(bad)


def test_classify__only_a_first_or_later_head_replaces_the_kept_one(session_pki):
    kept = _head(session_pki, "EUR", 10, "a" * 64)
    assert classify(None, kept) == ""
    assert classify(kept, _head(session_pki, "EUR", 11, "b" * 64)) == ""
    assert classify(kept, _head(session_pki, "EUR", 10, "a" * 64)) == ""  # the same record signed again
    assert classify(kept, _head(session_pki, "EUR", 9, "b" * 64)) == "truncated"  # signed after the kept head
    older = _head(session_pki, "EUR", 9, "b" * 64, time="2026-01-01T00:00:00.000000Z")
    assert classify(kept, older) == "stale"  # signed before it: the log held 9 records then, no proof of a cut
    assert classify(kept, _head(session_pki, "EUR", 10, "b" * 64)) == "rewritten"
    assert classify(kept, _head(session_pki, "EUR", 12, "b" * 64, conflict=True)) == "reported"
    reset = _head(session_pki, "EUR", 0, "c" * 64, conflict=True)  # first head after an accepted new log
    assert classify(reset, _head(session_pki, "EUR", 1, "d" * 64, conflict=True)) == ""


# --- the coordinator's copy ---------------------------------------------------------------


def test_store_put_audit_head__keeps_the_latest_and_both_heads_of_a_truncation(session_pki, tmp_path):
    store = Store(tmp_path / "c.db")
    h10, h12 = _head(session_pki, "EUR", 10, "a" * 64), _head(session_pki, "EUR", 12, "b" * 64)
    assert store.put_audit_head("EUR", h10) == "" and store.put_audit_head("EUR", h12) == ""
    assert store.audit_heads() == {"EUR": h12}
    lower = _head(session_pki, "EUR", 11, "c" * 64)
    late = _head(session_pki, "EUR", 11, "c" * 64, time="2026-01-01T00:00:00.000000Z")
    assert store.put_audit_head("EUR", late) == "stale" and store.audit_head_alarms() == []
    assert store.put_audit_head("EUR", lower) == "truncated"
    assert store.audit_heads() == {"EUR": h12}  # never goes backwards
    (alarm,) = store.audit_head_alarms(open_only=True)
    assert (alarm.site, alarm.kind, alarm.kept, alarm.offending, alarm.resolved_at) == (
        "EUR",
        "truncated",
        h12,
        lower,
        "",
    )
    # while the alarm is open the kept head is frozen: a higher head after a cut proves nothing
    assert store.put_audit_head("EUR", _head(session_pki, "EUR", 40, "d" * 64)) == "open"
    assert store.put_audit_head("EUR", _head(session_pki, "EUR", 3, "e" * 64)) == "open"  # one open alarm per kind
    assert store.put_audit_head("EUR", _head(session_pki, "EUR", 12, "f" * 64)) == "rewritten"
    assert store.audit_heads() == {"EUR": h12} and len(store.audit_head_alarms()) == 2
    store.close()
    store = Store(tmp_path / "c.db")  # it survives a restart
    assert store.audit_heads() == {"EUR": h12} and len(store.audit_head_alarms(open_only=True)) == 2
    with pytest.raises(InputError, match="site 'AFR' has no open audit alarm"):
        store.resolve_audit_alarms("AFR", "nothing")
    assert store.resolve_audit_alarms("EUR", "log restored from the backup of 3 Dec") == 2
    assert store.audit_head_alarms(open_only=True) == []
    assert store.audit_head_alarms()[0].note == "log restored from the backup of 3 Dec"
    h13 = _head(session_pki, "EUR", 13, "a" * 64)
    assert store.put_audit_head("EUR", h13) == "" and store.audit_heads() == {"EUR": h13}


def test_store_resolve_audit_alarms__a_new_log_keeps_the_old_head_as_evidence(session_pki, tmp_path):
    store = Store(tmp_path / "c.db")
    h30 = _head(session_pki, "AFR", 30)
    store.put_audit_head("AFR", h30)
    assert store.put_audit_head("AFR", _head(session_pki, "AFR", 2, conflict=True)) == "reported"
    assert store.resolve_audit_alarms("AFR", "disk lost; new log from 3 Dec", new_log=True) == 1
    reset = store.audit_head_alarms()[-1]
    assert (reset.kind, reset.kept, reset.offending, reset.note) == (
        "reset",
        h30,
        None,
        "disk lost; new log from 3 Dec",
    )
    fresh = _head(session_pki, "AFR", 3, conflict=True)
    assert store.put_audit_head("AFR", fresh) == "" and store.audit_heads() == {"AFR": fresh}


def _decision(head: SignedHead) -> site_pb2.SiteMessage:
    return site_pb2.SiteMessage(decision=site_pb2.JobDecision(job_id="j", accept=False, audit_head=head_to_pb(head)))


def _observed(heads: AuditHeads, site: str, cert: bytes, msg: site_pb2.SiteMessage) -> dict[str, int]:
    """What became of the head ``msg`` carries (counts added by it)."""
    before = dict(heads.counts)
    heads.observe(site, cert, msg)
    heads.flush()
    return {k: v - before.get(k, 0) for k, v in heads.counts.items() if v != before.get(k, 0)}


def test_audit_heads_observe__a_forged_head_is_refused_and_not_kept(session_pki, tmp_path, caplog):
    store = Store(tmp_path / "c.db")
    heads = AuditHeads(store)
    eur_cert = session_pki.tls("EUR").cert.read_bytes()
    assert _observed(heads, "EUR", eur_cert, _decision(_head(session_pki, "EUR", 5))) == {"kept": 1}
    forged = dataclasses.replace(_head(session_pki, "EUR", 9), seq=90)  # signature over seq 9
    assert _observed(heads, "EUR", eur_cert, _decision(forged)) == {"refused": 1}
    assert "site EUR sent an audit head that does not check out" in caplog.text
    afr = _head(session_pki, "AFR", 50)  # another site's genuine head, relayed on EUR's session
    assert _observed(heads, "EUR", eur_cert, _decision(afr)) == {"refused": 1}
    assert _observed(heads, "AFR", session_pki.tls("AFR").cert.read_bytes(), _decision(afr)) == {"kept": 1}
    # signed with AFR's key but checked against the session's certificate: EUR's session cannot pass it off
    assert _observed(heads, "AFR", eur_cert, _decision(_head(session_pki, "AFR", 60))) == {"refused": 1}
    assert store.audit_heads()["EUR"].seq == 5 and store.audit_heads()["AFR"].seq == 50
    assert store.audit_head_alarms() == []
    progress = site_pb2.SiteMessage(progress=site_pb2.RoundProgress(job_id="j", finished=True))
    assert _observed(heads, "EUR", eur_cert, progress) == {}  # no head attached: nothing to do
    assert heads.welcome_head("EUR") == head_to_pb(store.audit_heads()["EUR"])
    assert heads.welcome_head("EAS") is None
    heads.close()


def test_audit_heads_observe__a_lower_seq_is_flagged_as_an_alarm(session_pki, tmp_path, caplog):
    store = Store(tmp_path / "c.db")
    heads = AuditHeads(store)
    cert = session_pki.tls("EUR").cert.read_bytes()
    for seq in (18, 20):  # queued together: kept in order, in one transaction
        heads.observe("EUR", cert, _decision(_head(session_pki, "EUR", seq)))
    heads.flush()
    done = site_pb2.RoundProgress(job_id="j", finished=True, audit_head=head_to_pb(_head(session_pki, "EUR", 17)))
    assert _observed(heads, "EUR", cert, site_pb2.SiteMessage(progress=done)) == {"truncated": 1}
    assert heads.counts["kept"] == 2
    assert "AUDIT ALARM: site EUR signed audit head seq 17" in caplog.text
    assert "records were removed from its audit log (kept head: seq 20" in caplog.text
    assert [a.kind for a in store.audit_head_alarms()] == ["truncated"] and store.audit_heads()["EUR"].seq == 20
    heads.close()
    store.close()
    heads.close()  # closing twice is harmless


# --- the site's log against a signed head -------------------------------------------------


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (audit_tamper.cut_last(3), "the log ends at seq 6 but this site signed an audit head at seq 9: 3 record"),
        (audit_tamper.edit_first, "record seq 9 is not the one this site signed"),
        (audit_tamper.delete_second, "the log ends at seq 8 but this site signed an audit head at seq 9"),
        (audit_tamper.swap_first_two, "record seq 9 is not the one this site signed"),
    ],
)
def test_verify_against__detects_a_cut_edit_deletion_and_reordering_with_the_chain_rewritten(tmp_path, how, message):
    path = tmp_path / "audit.log"
    with _log(path, 10) as log:
        signed = log.head
    audit_tamper.tamper(path, how)  # a plain verify passes (asserted inside)
    result = verify(path, against=signed)
    assert not result.ok and message in result.against_problem and result.against_problem in result.problems


def test_verify_against__an_intact_log_that_grew_since_passes(tmp_path):
    path = tmp_path / "audit.log"
    with _log(path, 4) as log:
        signed = log.head
        log.append(event="release", job_id="job-9", round=1)
    result = verify(path, against=signed)
    assert result.ok and result.against_problem == "" and result.n_records == 5
    mid = audit_tamper.records(path)[2]
    assert verify(path, against=(2, mid["hash"])).ok


def _anchor(session_pki, path: Path) -> AuditAnchor:
    opened: list[AuditLog] = []

    def open_log() -> AuditLog:
        if not opened:
            opened.append(AuditLog(path))
        return opened[0]

    anchor = AuditAnchor("EUR", path, open_log)
    anchor.opened = opened  # type: ignore[attr-defined]
    return anchor


def test_audit_anchor__a_cut_log_raises_the_alarm_and_jobs_are_refused(session_pki, tmp_path, caplog):
    path = tmp_path / "audit.log"
    with _log(path, 6) as log:
        seq, digest = log.head
    key, cert = _pems(session_pki, "EUR")
    kept = sign_head("EUR", seq, digest, key_pem=key, certificate_pem=cert)
    backup = {p.name: p.read_bytes() for p in (path, path.with_name("audit.log.head"))}
    audit_tamper.tamper(path, audit_tamper.cut_last(2))
    anchor = _anchor(session_pki, path)
    anchor.check(site_pb2.Welcome(audit_head=head_to_pb(kept)), ca_pem=_ca(session_pki))
    assert "AUDIT ALARM" in caplog.text and "2 record(s) were removed from the end" in anchor.alarm
    with pytest.raises(
        PolicyRefused, match=r"site EUR's audit log no longer holds record seq 5, which the site signed"
    ):
        anchor.refuse_if_alarmed()
    *_, alarm = audit_tamper.records(path)
    assert alarm["event"] == "audit_alarm" and "removed from the end" in alarm["reason"]
    head = anchor.signed_head(key_pem=key, certificate_pem=cert)
    assert head is not None and head.conflict and head.seq == 4  # the cut log's records 0-3 and the alarm
    sent: list[site_pb2.SiteMessage] = []
    anchor.send(sent.append, _decision(_head(session_pki, "EUR", 0)), key_pem=key, certificate_pem=cert)
    assert sent[0].decision.audit_head.conflict and sent[0].decision.audit_head.seq == 4
    # the operator restores the log: at the next connection the alarm is gone
    anchor.opened[0].close()  # type: ignore[attr-defined]
    for name, data in backup.items():
        (tmp_path / name).write_bytes(data)
    anchor = _anchor(session_pki, path)
    anchor.check(site_pb2.Welcome(audit_head=head_to_pb(kept)), ca_pem=_ca(session_pki))
    assert anchor.alarm == ""
    anchor.refuse_if_alarmed()


def test_audit_anchor__a_head_this_site_did_not_sign_is_ignored(session_pki, tmp_path, caplog):
    path = tmp_path / "audit.log"
    _log(path, 2).close()
    anchor = _anchor(session_pki, path)
    forged = dataclasses.replace(_head(session_pki, "EUR", 900), seq=901)  # a coordinator's invention
    anchor.check(site_pb2.Welcome(audit_head=head_to_pb(forged)), ca_pem=_ca(session_pki))
    assert anchor.alarm == "" and "is not one this site signed" in caplog.text
    assert audit_tamper.records(path)[-1]["event"] == "audit_check"
    anchor.check(site_pb2.Welcome(), ca_pem=_ca(session_pki))  # the coordinator keeps no head yet
    assert anchor.alarm == ""


# --- the heads file and the commands ------------------------------------------------------


def test_heads_file__round_trip_and_malformed(session_pki, tmp_path):
    store = Store(tmp_path / "c.db")
    store.put_audit_head("EUR", _head(session_pki, "EUR", 8))
    store.put_audit_head("EUR", _head(session_pki, "EUR", 2))
    out = write_heads(tmp_path / "heads.json", store.audit_heads().values(), store.audit_head_alarms())
    back = read_heads(out)
    assert back.heads == store.audit_heads() and back.alarms == tuple(store.audit_head_alarms())
    doc = json.loads(out.read_text())
    doc["heads"][0]["seq"] = "eight"
    out.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="heads.json: a head or alarm is malformed"):
        read_heads(out)
    out.write_text("{}")
    with pytest.raises(InputError, match="not an audit heads file"):
        read_heads(out)


def test_site_audit_verify_against__cli(session_pki, tmp_path, capsys):
    config = audit_tamper.site_toml(session_pki, tmp_path / "state", "EUR", tmp_path / "site.toml")
    log_path = tmp_path / "state" / "audit.log"
    log_path.parent.mkdir()
    with _log(log_path, 5) as log:
        seq, digest = log.head
    key, cert = _pems(session_pki, "EUR")
    heads = tmp_path / "heads.json"
    write_heads(heads, [sign_head("EUR", seq, digest, key_pem=key, certificate_pem=cert)])
    assert cli(["site", "audit", "verify", "--config", str(config), "--against", str(heads)]) == 0
    assert (
        "OK, 5 records, hash chain and head intact; it holds the coordinator's signed head seq 4"
        in capsys.readouterr().out
    )
    audit_tamper.tamper(log_path, audit_tamper.cut_last(1))
    assert cli(["site", "audit", "verify", "--config", str(config)]) == 0  # the attack passes a plain verify
    capsys.readouterr()
    assert cli(["site", "audit", "verify", "--config", str(config), "--against", str(heads)]) == 1
    assert "TAMPERED or damaged at its end" in (err := capsys.readouterr().err) and "1 record(s) were removed" in err
    # a heads file whose head was changed after signing is refused, not trusted
    doc = json.loads(heads.read_text())
    doc["heads"][0]["seq"] = 3
    heads.write_text(json.dumps(doc))
    assert cli(["site", "audit", "verify", "--config", str(config), "--against", str(heads)]) == 3
    assert "is not signed by site EUR's certificate key" in capsys.readouterr().err
    write_heads(heads, [])
    assert cli(["site", "audit", "verify", "--config", str(config), "--against", str(heads)]) == 2
    assert "holds no audit head for site EUR" in capsys.readouterr().err


def test_store__a_database_from_before_audit_heads_gets_the_tables(session_pki, tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("CREATE TABLE sites (name TEXT PRIMARY KEY, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL)")
    db.execute("INSERT INTO sites VALUES ('EUR', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
    db.commit()
    db.close()
    store = Store(tmp_path / "old.db")
    assert store.audit_heads() == {} and store.audit_head_alarms() == []
    head = _head(session_pki, "EUR", 4)
    assert store.put_audit_head("EUR", head) == "" and store.audit_heads() == {"EUR": head}
    store.close()
