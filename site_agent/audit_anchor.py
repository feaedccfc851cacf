"""The site's side of signed audit heads (:mod:`fedstat.audit_head`).

:class:`AuditAnchor` signs the site's audit head and attaches it to every reply to a job offer and
to every round's final progress message, so the coordinator's copy is at most one release behind.
At each connection it checks the head the coordinator kept (``Welcome.audit_head``) against the
local log; when the log no longer holds that record it raises an *audit alarm*: it logs it, writes
an ``audit_alarm`` record, flags every head it signs from then on (``conflict``), and refuses
every job until the log is restored or the consortium accepts a new one (docs/operations.md,
"Audit alarms"). The alarm is worked out afresh at every connection, so a restored log clears it
at the next one, and an agent restarted on a cut log raises it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from fedstat.audit_head import SignedHead, check_head, head_from_pb, head_to_pb, sign_head
from fedstat.errors import AuthError, PolicyRefused, ProtocolError
from fedstat.wire import site_pb2

from .audit_log import AuditLog
from .audit_schema import AuditError
from .audit_verify import verify

log = logging.getLogger("fedstat.site.audit")

#: Where an operator reads what to do on an alarm (named in the refusal the analyst sees).
ALARM_HELP = 'docs/operations.md, "Audit alarms"'


class AuditAnchor:
    """Signs this site's audit heads, checks the coordinator's copy, and holds the audit alarm.

    Parameters
    ----------
    site : this site's certificate name
    path : the audit log (``state_dir/audit.log``)
    audit : returns the open :class:`AuditLog` (the agent opens it on first use)
    """

    def __init__(self, site: str, path: Path, audit: Callable[[], AuditLog]):
        self.site = site
        self.path = Path(path)
        self._audit = audit
        self._send_lock = threading.Lock()  # heads leave in the order they were signed
        self.alarm = ""  # why the log does not hold the coordinator's head; "" when it does
        self.kept: SignedHead | None = None  # the coordinator's head, as checked at this connection

    def check(self, welcome: site_pb2.Welcome, *, ca_pem: bytes) -> None:
        """At connect: the coordinator's kept head (``welcome.audit_head``; unset: it keeps none) must be
        a head this site signed, and its record must be in the local log."""
        self.alarm, self.kept = "", None
        if not welcome.HasField("audit_head"):
            return
        try:
            kept = head_from_pb(welcome.audit_head)
            check_head(kept, ca_pem=ca_pem, site=self.site)
        except (ProtocolError, AuthError) as exc:  # the coordinator's fault, not the log's: nothing to stop
            log.warning("the coordinator's copy of this site's audit head is not one this site signed: %s", exc)
            self._append(event="audit_check", reason=f"coordinator sent an audit head this site did not sign: {exc}")
            return
        self.kept = kept
        try:
            problem = verify(self.path, check_head=False, against=(kept.seq, kept.hash)).against_problem
        except AuditError as exc:
            problem = str(exc)
        if not problem:
            log.info("audit log holds the head the coordinator keeps (%s)", kept.describe())
            return
        self.alarm = problem
        log.error(
            "AUDIT ALARM: %s. The coordinator keeps this site's signed head %s; this site refuses jobs until its "
            "operator acts (%s)",
            problem,
            kept.describe(),
            ALARM_HELP,
        )
        self._append(event="audit_alarm", reason=f"{problem}; coordinator's head {kept.describe()}")

    def refuse_if_alarmed(self) -> None:
        """PolicyRefused, the reason the analyst sees, while an audit alarm is raised."""
        if self.alarm:
            seq = self.kept.seq if self.kept is not None else "?"
            raise PolicyRefused(
                f"site {self.site}'s audit log no longer holds record seq {seq}, which the site signed to the "
                "coordinator as its audit head (records were removed or rewritten); the site takes no job until "
                f"its operator restores the log or the consortium accepts a new one ({ALARM_HELP})"
            )

    def signed_head(self, *, key_pem: bytes, certificate_pem: bytes) -> SignedHead | None:
        """The current head, signed; None for an empty or unreadable log."""
        try:
            seq, digest = self._audit().head
        except AuditError as exc:
            log.warning("no audit head to sign: %s", exc)
            return None
        if seq < 0:
            return None
        return sign_head(
            self.site, seq, digest, key_pem=key_pem, certificate_pem=certificate_pem, conflict=bool(self.alarm)
        )

    def send(
        self,
        send: Callable[[site_pb2.SiteMessage], None],
        msg: site_pb2.SiteMessage,
        *,
        key_pem: bytes,
        certificate_pem: bytes,
    ) -> None:
        """``send(msg)`` with the signed head attached to its ``decision`` or ``progress``; signing and
        queueing under one lock, so the coordinator receives this site's heads in seq order."""
        kind = msg.WhichOneof("kind")
        assert kind is not None, "a message to send names its kind"
        part = getattr(msg, kind)
        with self._send_lock:
            head = self.signed_head(key_pem=key_pem, certificate_pem=certificate_pem)
            if head is not None:
                part.audit_head.CopyFrom(head_to_pb(head))
            send(msg)

    def _append(self, **fields: str) -> None:
        try:
            self._audit().append(**fields)
        except AuditError as exc:
            log.error("cannot write the %s record to the audit log: %s", fields.get("event"), exc)
