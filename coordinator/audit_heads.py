"""The coordinator's copy of every site's signed audit head (:mod:`fedstat.audit_head`).

Sites attach their signed head to each reply to a job offer and to each round's final progress
message. :class:`AuditHeads` takes each one off the site's stream as it is routed and hands it to
one worker thread, which verifies its signature against the certificate of the site's mTLS
session and keeps the latest per site in the store
(:meth:`coordinator.store.Store.put_audit_heads`), in arrival order, the heads waiting at a time in
one transaction — so keeping them costs the rounds no fsync. A head that goes backwards — a lower
seq, or another hash at the same seq — or a site reporting that its log lacks the kept head is
logged as an audit alarm and kept beside the kept head; nothing is overwritten. A head that does
not verify is refused, logged and never stored. At connect the site gets the kept head back
(:meth:`AuditHeads.welcome_head`) and checks its log against it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import sqlite3
import threading

from fedstat.audit_head import SignedHead, check_head, head_from_pb, head_to_pb
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

_Item = tuple[str, bytes, site_pb2.AuditHead]


class AuditHeads:
    """Verifies and keeps the sites' signed audit heads in ``store`` (on its own thread until :meth:`close`)."""

    def __init__(self, store: Store):
        self.store = store
        #: what became of the heads so far: "kept", "refused", "open" (not kept: an alarm is open), "stale" (not
        #: kept: an older head arriving late) or an alarm kind
        self.counts: collections.Counter[str] = collections.Counter()
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="audit-heads", daemon=True)
        self._thread.start()

    def observe(self, site: str, certificate: bytes, msg: site_pb2.SiteMessage) -> None:
        """Queue the head ``msg`` carries, if any (``site``: the session's name, ``certificate``: its PEM)."""
        kind = msg.WhichOneof("kind")
        if kind in ("decision", "progress") and getattr(msg, kind).HasField("audit_head"):
            head = site_pb2.AuditHead()
            head.CopyFrom(getattr(msg, kind).audit_head)
            self._queue.put((site, certificate, head))

    def flush(self) -> None:
        """Wait until every head queued so far is verified and kept (or refused)."""
        self._queue.join()

    def close(self) -> None:
        """Keep what is queued, then stop the worker (before the store is closed)."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def welcome_head(self, site: str) -> site_pb2.AuditHead | None:
        """The kept head of ``site`` for its Welcome, or None."""
        head = self.store.audit_heads().get(site)
        return None if head is None else head_to_pb(head)

    # --- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty() and batch[-1] is not None:
                batch.append(self._queue.get_nowait())
            try:
                self._keep([item for item in batch if item is not None])
            except (sqlite3.Error, FedstatError) as exc:  # the store closed under us, or the disk failed
                log.error("cannot keep %d audit head(s): %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return

    def _verified(self, site: str, certificate: bytes, pb: site_pb2.AuditHead) -> SignedHead | None:
        try:
            head = head_from_pb(pb)
            if head.site != site:
                raise FedstatError(f"it names site {head.site}")
            check_head(head, certificate_pem=certificate)
        except FedstatError as exc:
            self.counts["refused"] += 1
            log.warning("site %s sent an audit head that does not check out (%s); not kept", site, exc)
            return None
        return dataclasses.replace(head, certificate=certificate)  # keep what the mTLS handshake verified

    def _keep(self, items: list[_Item]) -> None:
        verified = [(site, h) for site, cert, pb in items if (h := self._verified(site, cert, pb)) is not None]
        if not verified:
            return
        outcomes = self.store.put_audit_heads(verified)
        kept = None
        for (site, head), outcome in zip(verified, outcomes, strict=True):
            self.counts[outcome or "kept"] += 1
            if outcome in _ALARM_TEXT:
                kept = kept or self.store.audit_heads()
                log.error(
                    "AUDIT ALARM: site %s signed audit head %s, %s (kept head: %s). Both heads are kept; see "
                    "`fedstat coordinator audit-heads`",
                    site,
                    head.describe(),
                    _ALARM_TEXT[outcome],
                    kept[site].describe() if site in kept else "none",
                )
