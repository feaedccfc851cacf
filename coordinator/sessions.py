"""Connected site agents and the routing of their messages to running jobs.

Each site agent holds one bidirectional stream. Its outgoing messages are queued on its
:class:`SiteSession`; its incoming messages are routed by job id to that job's inbox. A
disconnect is delivered to every job inbox as ``(site, None)``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TypeAlias

from fedstat.wire import common_pb2, site_pb2

from .store import now_iso

log = logging.getLogger("fedstat.coordinator")

#: A job's inbox: ``(site, message)``, and ``(site, None)`` when that site disconnects.
Inbox: TypeAlias = queue.Queue[tuple[str, site_pb2.SiteMessage | None]]


@dataclass
class SiteSession:
    name: str
    hello: site_pb2.Hello
    certificate: bytes = b""  # the site's certificate (PEM) as the TLS handshake verified it
    since: str = field(default_factory=now_iso)
    outbox: queue.Queue[site_pb2.CoordinatorMessage | None] = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)
    _policy_updates: dict[str, common_pb2.DisclosurePolicy] = field(default_factory=dict)
    _policy_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, msg: site_pb2.CoordinatorMessage) -> None:
        if not self.closed.is_set():
            self.outbox.put(msg)

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.outbox.put(None)

    @property
    def datasets(self) -> list[common_pb2.DatasetInfo]:
        return list(self.hello.datasets)

    def policies(self) -> list[common_pb2.DisclosurePolicy]:
        """The site's latest stated settings, one per dataset."""
        with self._policy_lock:
            latest = {p.dataset: p for p in self.hello.policies}
            latest.update(self._policy_updates)
            ordered = [p.dataset for p in self.hello.policies] + sorted(
                set(latest) - {p.dataset for p in self.hello.policies}
            )
        out = []
        for name in ordered:  # the site's default dataset first
            q = common_pb2.DisclosurePolicy()
            q.CopyFrom(latest[name])
            q.site = self.name  # the certificate's name, whatever the site wrote
            out.append(q)
        return out

    def update_policy(self, policy: common_pb2.DisclosurePolicy) -> None:
        with self._policy_lock:
            self._policy_updates[policy.dataset] = policy


class SiteRegistry:
    """The live site sessions and the per-job message inboxes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, SiteSession] = {}
        self._inboxes: dict[str, Inbox] = {}

    def attach(self, name: str, hello: site_pb2.Hello, *, certificate: bytes = b"") -> SiteSession:
        """Register a newly connected site; an older session under the same name is closed."""
        session = SiteSession(name=name, hello=hello, certificate=certificate)
        with self._lock:
            old = self._sessions.get(name)
            self._sessions[name] = session
            inboxes = list(self._inboxes.values())
        if old is not None:
            old.close()
            for inbox in inboxes:
                inbox.put((name, None))
        log.info("site %s connected (%d dataset(s))", name, len(hello.datasets))
        return session

    def detach(self, session: SiteSession) -> None:
        with self._lock:
            current = self._sessions.get(session.name) is session
            if current:
                del self._sessions[session.name]
            inboxes = list(self._inboxes.values())
        session.close()
        if current:
            log.info("site %s disconnected", session.name)
            for inbox in inboxes:
                inbox.put((session.name, None))

    def get(self, name: str) -> SiteSession | None:
        with self._lock:
            return self._sessions.get(name)

    def connected(self) -> list[SiteSession]:
        with self._lock:
            return sorted(self._sessions.values(), key=lambda s: s.name)

    def wait_for(self, name: str, timeout: float, *, cancelled: threading.Event | None = None) -> SiteSession | None:
        """The site's session once it is connected (a reconnect after a drop), or None at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            session = self.get(name)
            if session is not None and not session.closed.is_set():
                return session
            if time.monotonic() >= deadline or (cancelled is not None and cancelled.is_set()):
                return None
            time.sleep(0.1)

    def open_inbox(self, job_id: str) -> Inbox:
        inbox: Inbox = queue.Queue()
        with self._lock:
            self._inboxes[job_id] = inbox
        return inbox

    def close_inbox(self, job_id: str) -> None:
        with self._lock:
            self._inboxes.pop(job_id, None)

    def route(self, site: str, msg: site_pb2.SiteMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "policy":
            session = self.get(site)
            if session is not None:
                session.update_policy(msg.policy)
            return
        job_id = getattr(msg, kind).job_id if kind and kind != "hello" else ""
        with self._lock:
            inbox = self._inboxes.get(job_id)
        if inbox is None:
            log.debug("dropping %s from site %s for job %r (not running)", kind, site, job_id)
            return
        inbox.put((site, msg))
