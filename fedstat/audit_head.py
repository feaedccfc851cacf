"""Signed audit heads: a site's signed statement of the last record of its audit log.

A site's audit log (``site_agent/audit_log.py``) is hash-chained, so each record's hash commits to every
record before it. What a chain alone cannot show is records cut from the end, or a whole chain
rewritten by someone who can write the files. So each site signs its *head* — the seq and hash of
its last record, and the time — with its certificate key and sends it with every reply to a job
offer and at the end of every round. The coordinator verifies the signature against the site's
mTLS certificate and keeps the latest head per site (``coordinator/audit_heads.py``):

- a head with a lower seq than the one kept, or another hash at the same seq, is the site's own
  signed proof that its log was cut or rewritten: the coordinator raises an alarm and keeps both;
- at each connection the coordinator sends the kept head back (``Welcome.audit_head``); the site
  checks that its log still holds that record and refuses jobs when it does not;
- ``fedstat coordinator audit-heads --out FILE`` exports the kept heads, and
  ``fedstat site audit verify --against FILE`` checks a site's log against its head there.

A head names no participant and no count of participants: a record number, a digest and a time.
This module holds the statement, its signature, its checks, the wire and file forms and the rule
by which a new head may replace a kept one (:func:`classify`); no daemon code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from fedstat.errors import AuthError, InputError, ProtocolError
from fedstat.formats.atomic import atomic_write_bytes
from fedstat.pki import identity_from_subject, issued_by_bundle, sign_statement, verify_statement
from fedstat.wire import site_pb2

__all__ = [
    "HEADS_FORMAT",
    "HeadAlarm",
    "HeadsFile",
    "SignedHead",
    "check_head",
    "classify",
    "head_from_json",
    "head_from_pb",
    "head_statement",
    "head_to_json",
    "head_to_pb",
    "read_heads",
    "sign_head",
    "write_heads",
]

#: First line of every signed head statement (domain separation from specs and round keys).
STATEMENT_PREFIX = b"fedstat audit head v1\n"
#: ``format`` of an exported heads file.
HEADS_FORMAT = "fedstat-audit-heads/1"
#: Alarm kinds: a lower seq, another hash at the same seq, a site reporting it lacks the kept head.
ALARM_KINDS = ("truncated", "rewritten", "reported")
#: Largest accepted signature (DER ECDSA P-256 is at most 72 bytes) and certificate.
MAX_SIGNATURE, MAX_CERTIFICATE = 256, 16384

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class SignedHead:
    """One site's signed audit head.

    Attributes
    ----------
    site : the site's certificate name
    seq : the last record's seq (0, 1, …)
    hash : that record's ``hash`` field (hex SHA-256; it commits to every earlier record)
    time : when the head was signed, UTC ISO-8601
    signature : DER ECDSA-SHA256 by the site's certificate key over :func:`head_statement`
    certificate : the signer's PEM certificate
    conflict : the site found its log does not hold the head the coordinator sent it at connect
    """

    site: str
    seq: int
    hash: str
    time: str
    signature: bytes
    certificate: bytes
    conflict: bool = False

    def statement(self) -> bytes:
        return head_statement(self.site, self.seq, self.hash, self.time, conflict=self.conflict)

    def describe(self) -> str:
        """``seq 12 (hash 1a2b3c4d5e6f, signed 2026-…)`` for messages."""
        return f"seq {self.seq} (hash {self.hash[:12]}, signed {self.time})"


def _checked(site: Any, seq: Any, digest: Any, time: Any) -> None:
    """ProtocolError naming the field of a head that is malformed (never echoing it whole)."""
    if not isinstance(site, str) or not _NAME.match(site):
        raise ProtocolError("audit head: 'site' is not a site name (1-64 letters, digits, '-', '_', '.')")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise ProtocolError("audit head: 'seq' is not an integer in [0, 2^63)")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise ProtocolError("audit head: 'hash' is not 64 lower-case hex digits")
    try:
        t = dt.datetime.fromisoformat(time) if isinstance(time, str) and len(time) <= 40 else None
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise ProtocolError("audit head: 'time' is not an ISO-8601 time with a time zone")


def head_statement(site: str, seq: int, digest: str, time: str, *, conflict: bool = False) -> bytes:
    """The bytes a site signs: a fixed prefix, then the canonical JSON of the head's fields."""
    _checked(site, seq, digest, time)
    body = {"conflict": bool(conflict), "hash": digest, "seq": seq, "site": site, "time": time}
    return STATEMENT_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sign_head(
    site: str,
    seq: int,
    digest: str,
    *,
    key_pem: bytes,
    certificate_pem: bytes,
    conflict: bool = False,
    time: str | None = None,
) -> SignedHead:
    """Sign ``(site, seq, hash, time)`` with the site's certificate key (``time`` defaults to now)."""
    time = time or _now()
    statement = head_statement(site, seq, digest, time, conflict=conflict)
    return SignedHead(
        site=site,
        seq=seq,
        hash=digest,
        time=time,
        signature=sign_statement(key_pem, statement),
        certificate=certificate_pem,
        conflict=conflict,
    )


def check_head(
    head: SignedHead, *, certificate_pem: bytes | None = None, ca_pem: bytes | None = None, site: str | None = None
) -> None:
    """Refuse a head that its site did not sign.

    The signature must verify with ``certificate_pem`` (the coordinator passes the certificate the
    site's mTLS session presented) or else the head's own certificate, whose subject must be a
    site named ``head.site``; with ``ca_pem`` that certificate must be issued by the consortium CA;
    with ``site`` the head must be that site's.

    Raises
    ------
    AuthError
        naming what does not hold
    """
    pem = certificate_pem if certificate_pem is not None else head.certificate
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise AuthError(f"the audit head of site {head.site} carries no valid PEM certificate") from None
    ident = identity_from_subject(cert.subject)
    if ident.role != "site" or ident.name != head.site:
        raise AuthError(f"the audit head names site {head.site} but is checked against {ident}'s certificate")
    if site is not None and head.site != site:
        raise AuthError(f"the audit head is site {head.site}'s, not site {site}'s")
    if ca_pem is not None and not issued_by_bundle(cert, ca_pem):
        raise AuthError(f"the certificate of site {head.site}'s audit head was not issued by the consortium CA")
    if not verify_statement(cert, head.statement(), head.signature):
        raise AuthError(
            f"the audit head {head.describe()} is not signed by site {head.site}'s certificate key (forged or changed)"
        )


def classify(kept: SignedHead | None, new: SignedHead) -> str:
    """How a verified ``new`` head of a site relates to the ``kept`` one: ``""`` when it may replace it
    (the first head, a higher seq, or the same record signed again), ``"stale"`` for a lower seq
    signed *before* the kept head (a late copy of an older head, e.g. from a closing stream: the log
    held fewer records then; not kept, no alarm), or one of :data:`ALARM_KINDS`:

    - ``truncated``: a lower seq signed after the kept head; the site signed both, so records were cut;
    - ``rewritten``: the same seq with another hash; the log was rewritten from there or before;
    - ``reported``: the site itself reports its log does not hold the head it was sent at connect
      (unless the kept head is such a report too: the first head after an accepted new log).
    """
    if new.conflict and kept is not None and not kept.conflict:
        return "reported"
    if kept is None:
        return ""
    if new.seq < kept.seq:
        return "truncated" if _signed_at(new) >= _signed_at(kept) else "stale"
    if new.seq == kept.seq and new.hash != kept.hash:
        return "rewritten"
    return ""


def _signed_at(head: SignedHead) -> dt.datetime:
    return dt.datetime.fromisoformat(head.time)


# --- wire and JSON forms -------------------------------------------------------------------


def head_to_pb(head: SignedHead) -> site_pb2.AuditHead:
    return site_pb2.AuditHead(
        site=head.site,
        seq=head.seq,
        hash=head.hash,
        time=head.time,
        signature=head.signature,
        certificate=head.certificate,
        conflict=head.conflict,
    )


def _sized(head: SignedHead) -> SignedHead:
    if len(head.signature) > MAX_SIGNATURE or len(head.certificate) > MAX_CERTIFICATE:
        raise ProtocolError(
            f"audit head: signature or certificate longer than {MAX_SIGNATURE} / {MAX_CERTIFICATE} bytes"
        )
    _checked(head.site, head.seq, head.hash, head.time)
    return head


def head_from_pb(pb: site_pb2.AuditHead) -> SignedHead:
    """The head a peer sent, its fields checked (ProtocolError naming a malformed one); not its signature."""
    return _sized(
        SignedHead(
            site=pb.site,
            seq=int(pb.seq),
            hash=pb.hash,
            time=pb.time,
            signature=bytes(pb.signature),
            certificate=bytes(pb.certificate),
            conflict=bool(pb.conflict),
        )
    )


def head_to_json(head: SignedHead) -> dict[str, Any]:
    return {
        "site": head.site,
        "seq": head.seq,
        "hash": head.hash,
        "time": head.time,
        "conflict": head.conflict,
        "signature": head.signature.hex(),
        "certificate": head.certificate.decode("ascii"),
    }


def head_from_json(obj: Any) -> SignedHead:
    """A head from its JSON form; InputError naming what is missing or malformed."""
    if not isinstance(obj, Mapping):
        raise InputError("an audit head must be a JSON object")
    try:
        head = SignedHead(
            site=obj["site"],
            seq=obj["seq"],
            hash=obj["hash"],
            time=obj["time"],
            signature=bytes.fromhex(obj["signature"]),
            certificate=str(obj["certificate"]).encode("ascii"),
            conflict=bool(obj.get("conflict", False)),
        )
        return _sized(head)
    except (KeyError, TypeError, ValueError, ProtocolError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        raise InputError(f"not an audit head ({what}); expected site, seq, hash, time, signature, certificate") from exc


@dataclass(frozen=True)
class HeadAlarm:
    """A head that could not replace the kept one (:func:`classify`), kept beside it as evidence.

    For kind ``reset`` the coordinator's operator accepted a new log for the site: ``kept`` is the
    head it held until then and ``offending`` is None."""

    site: str
    kind: str  # one of ALARM_KINDS, or "reset"
    at: str
    kept: SignedHead | None
    offending: SignedHead | None
    resolved_at: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "kind": self.kind,
            "at": self.at,
            "kept": None if self.kept is None else head_to_json(self.kept),
            "offending": None if self.offending is None else head_to_json(self.offending),
            "resolved_at": self.resolved_at,
            "note": self.note,
        }


@dataclass(frozen=True)
class HeadsFile:
    """An exported heads file: the latest head kept per site, and every alarm."""

    exported_at: str
    heads: dict[str, SignedHead]
    alarms: tuple[HeadAlarm, ...] = ()


def write_heads(path: str | Path, heads: Iterable[SignedHead], alarms: Iterable[HeadAlarm] = ()) -> Path:
    """Write the heads (and alarms) as JSON to ``path``; returns the path."""
    path = Path(path)
    doc = {
        "format": HEADS_FORMAT,
        "exported_at": _now(),
        "heads": [head_to_json(h) for h in sorted(heads, key=lambda h: h.site)],
        "alarms": [a.to_json() for a in alarms],
    }
    try:
        atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("ascii"))
    except OSError as exc:
        raise InputError(f"{path}: cannot write the audit heads: {exc.strerror}") from exc
    return path


def read_heads(path: str | Path) -> HeadsFile:
    """Read a heads file written by :func:`write_heads`; InputError naming the file and the problem.
    Signatures are not checked here (:func:`check_head`)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="ascii"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the audit heads: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON audit heads file") from exc
    if not isinstance(doc, dict) or doc.get("format") != HEADS_FORMAT:
        raise InputError(f"{path}: not an audit heads file (format {HEADS_FORMAT!r} expected)")
    try:
        heads = [head_from_json(h) for h in doc["heads"]]
        alarms = tuple(
            HeadAlarm(
                site=a["site"],
                kind=a["kind"],
                at=a["at"],
                kept=None if a.get("kept") is None else head_from_json(a["kept"]),
                offending=None if a.get("offending") is None else head_from_json(a["offending"]),
                resolved_at=a.get("resolved_at", ""),
                note=a.get("note", ""),
            )
            for a in doc.get("alarms", [])
        )
    except (KeyError, TypeError, InputError) as exc:
        raise InputError(f"{path}: a head or alarm is malformed: {exc}") from exc
    by_site = {h.site: h for h in heads}
    if len(by_site) != len(heads):
        raise InputError(f"{path}: more than one head for one site")
    return HeadsFile(exported_at=str(doc.get("exported_at", "")), heads=by_site, alarms=alarms)
