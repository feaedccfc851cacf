"""The coordinator's copy of every site's signed audit head (:mod:`fedstat.audit_head`).

Sites attach their signed head to each reply to a job offer and to each round's final progress
message. :class:`AuditHeads` takes each one off the site's stream before it is routed, verifies
its signature against the certificate of the site's mTLS session, and keeps the latest per site in
the store (:meth:`coordinator.store.Store.put_audit_head`). A head that goes backwards — a lower
seq, or another hash at the same seq — or a site reporting that its log lacks the kept head is
logged as an audit alarm and kept beside the kept head; nothing is overwritten. A head that does
not verify is refused, logged and never stored. At connect the site gets the kept head back
(:meth:`AuditHeads.welcome_head`) and checks its log against it.
"""

from __future__ import annotations

import dataclasses
import logging

from fedstat.audit_head import check_head, head_from_pb, head_to_pb
from fedstat.errors import FedstatError
from fedstat.wire import site_pb2

from .store import Store

log = logging.getLogger("fedstat.coordinator.audit")

#: What each alarm kind means, for the log line.
_ALARM_TEXT = {
    "truncated": "a lower seq than the head it signed before: records were removed from its audit log",
    "rewritten": "another hash at the seq of the head it signed before: its audit log was rewritten",
    "reported": "and reports that its audit log no longer holds the head the coordinator keeps",
}


class AuditHeads:
    """Verifies and keeps the sites' signed audit heads in ``store``."""

    def __init__(self, store: Store):
        self.store = store
        self.refused = 0  # heads refused because their signature or fields did not check out

    def observe(self, site: str, certificate: bytes, msg: site_pb2.SiteMessage) -> str:
        """Keep the head ``msg`` carries, if any (``site``: the session's name, ``certificate``: its
        PEM). Returns what happened: ``""`` (no head), ``"kept"``, ``"refused"``, ``"open"`` (an
        alarm is open: not kept) or the new alarm's kind. Never raises for a bad head."""
        kind = msg.WhichOneof("kind")
        if kind not in ("decision", "progress") or not getattr(msg, kind).HasField("audit_head"):
            return ""
        try:
            head = head_from_pb(getattr(msg, kind).audit_head)
            if head.site != site:
                raise FedstatError(f"it names site {head.site}")
            check_head(head, certificate_pem=certificate)
        except FedstatError as exc:
            self.refused += 1
            log.warning("site %s sent an audit head that does not check out (%s); not kept", site, exc)
            return "refused"
        head = dataclasses.replace(head, certificate=certificate)  # keep what the mTLS handshake verified
        outcome = self.store.put_audit_head(site, head)
        if outcome in _ALARM_TEXT:
            kept = self.store.audit_heads().get(site)
            log.error(
                "AUDIT ALARM: site %s signed audit head %s, %s (kept head: %s). Both heads are kept; see "
                "`fedstat coordinator audit-heads`",
                site,
                head.describe(),
                _ALARM_TEXT[outcome],
                kept.describe() if kept else "none",
            )
            return outcome
        return outcome or "kept"

    def welcome_head(self, site: str) -> site_pb2.AuditHead | None:
        """The kept head of ``site`` for its Welcome, or None."""
        head = self.store.audit_heads().get(site)
        return None if head is None else head_to_pb(head)
