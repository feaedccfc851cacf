"""The analysts' decryptors of ``--privacy paillier`` jobs, and how a round's totals are decrypted.

The analyst's client that submitted a Paillier job holds the only private key. It attaches to the
coordinator's ``Analyst.Decrypt`` stream for that job (:class:`DecryptorRegistry`); after each
round the job engine sends the summed ciphertexts there (:meth:`DecryptorRegistry.decrypt`) and
waits for the ring totals. The coordinator never holds the private key, and what it sends was
multiplied over every participant of the round; each request carries every participant's signed
statement of its contribution to the round attempt, without which the client decrypts nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from phe import PaillierPublicKey

from fedstat.errors import JobFailed, PrivacyError, ProtocolError, SiteUnavailable
from fedstat.privacy.base import MAX_CHUNK_BYTES, RoundContext
from fedstat.privacy.contribution import Contribution
from fedstat.privacy.paillier import EncryptedSum, layout_for
from fedstat.privacy.paillier_crypto import ciphertext_bytes, ciphertexts_to_bytes
from fedstat.protocol import contribution_to_pb
from fedstat.wire import analyst_pb2


@dataclass
class DecryptorSession:
    """One attached client: requests go out on ``outbox``, its replies arrive on ``replies``."""

    job_id: str
    analyst: str
    outbox: queue.Queue[analyst_pb2.DecryptRequest | None] = field(default_factory=queue.Queue)
    replies: queue.Queue[analyst_pb2.DecryptReply | None] = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.outbox.put(None)
            self.replies.put(None)


class DecryptorRegistry:
    """Attached decryptors by job id (one per job; a reattaching client replaces the old stream)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sessions: dict[str, DecryptorSession] = {}

    def attach(self, job_id: str, analyst: str) -> DecryptorSession:
        session = DecryptorSession(job_id=job_id, analyst=analyst)
        with self._cond:
            old = self._sessions.get(job_id)
            self._sessions[job_id] = session
            self._cond.notify_all()
        if old is not None:
            old.close()
        return session

    def attached(self) -> int:
        with self._cond:
            return sum(not s.closed.is_set() for s in self._sessions.values())

    def detach(self, session: DecryptorSession) -> None:
        with self._cond:
            if self._sessions.get(session.job_id) is session:
                del self._sessions[session.job_id]
        session.close()

    def close_job(self, job_id: str) -> None:
        """The job is over: end its decryptor stream."""
        with self._cond:
            session = self._sessions.pop(job_id, None)
        if session is not None:
            session.close()

    def wait_for(self, job_id: str, deadline: float, cancelled: Callable[[], bool]) -> DecryptorSession:
        with self._cond:
            while True:
                session = self._sessions.get(job_id)
                if session is not None and not session.closed.is_set():
                    return session
                if cancelled():
                    raise JobFailed("cancelled")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SiteUnavailable(
                        "privacy mode paillier: the analyst's client, which holds the private key, is not connected "
                        "to decrypt the round totals; keep `fedstat` (or Client.wait) running until the job ends"
                    )
                self._cond.wait(min(remaining, 0.5))

    def decrypt(
        self,
        ctx: RoundContext,
        sums: Sequence[EncryptedSum],
        *,
        contributions: Sequence[Contribution] = (),
        public_key: PaillierPublicKey,
        attach_timeout_s: float,
        reply_timeout_s: float,
        cancelled: Callable[[], bool],
    ) -> Mapping[str, np.ndarray]:
        """Send every summed array to the job's decryptor, each request with every participant's signed
        ``contributions`` to the round attempt; the ring words of each array, by name."""
        session = self.wait_for(ctx.job_id, time.monotonic() + attach_timeout_s, cancelled)
        statements = [contribution_to_pb(c) for c in contributions]
        slots = layout_for(public_key).slots
        per = max(1, MAX_CHUNK_BYTES // ciphertext_bytes(public_key))
        words: dict[str, np.ndarray] = {}
        pending: set[tuple[str, int]] = set()
        for s in sums:
            words[s.name] = np.zeros(len(s.ciphertexts) * slots, dtype=np.uint64)
            for first in range(0, len(s.ciphertexts), per):
                part = s.ciphertexts[first : first + per]
                session.outbox.put(
                    analyst_pb2.DecryptRequest(
                        job_id=ctx.job_id,
                        round=ctx.round,
                        attempt=ctx.attempt,
                        name=s.name,
                        first=first,
                        total=len(s.ciphertexts),
                        ciphertexts=ciphertexts_to_bytes(part, public_key),
                        summands=s.summands,
                        contributions=statements,
                    )
                )
                pending.add((s.name, first))
        sizes = {s.name: len(s.ciphertexts) for s in sums}
        deadline = time.monotonic() + reply_timeout_s
        while pending:
            if cancelled():
                raise JobFailed("cancelled")
            try:
                reply = session.replies.get(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise SiteUnavailable(
                        f"privacy mode paillier: the analyst's client did not decrypt round {ctx.round} "
                        f"within {reply_timeout_s:.0f} s"
                    ) from None
                continue
            if reply is None:
                raise SiteUnavailable(
                    f"privacy mode paillier: the analyst's client disconnected while decrypting round {ctx.round}"
                )
            if reply.error:
                raise PrivacyError(f"the analyst's client refused to decrypt round {ctx.round}: {reply.error}")
            if (reply.round, reply.attempt) != (ctx.round, ctx.attempt):
                continue
            key = (reply.name, int(reply.first))
            if key not in pending:
                raise ProtocolError(
                    f"the analyst's client answered a request not made ({reply.name!r} at {reply.first})"
                )
            n_ct = min(per, sizes[reply.name] - key[1])
            if len(reply.words) != 8 * n_ct * slots:
                raise ProtocolError(
                    f"the analyst's client returned {len(reply.words)} bytes for {n_ct} ciphertexts of {reply.name!r}"
                )
            words[reply.name][key[1] * slots : (key[1] + n_ct) * slots] = np.frombuffer(reply.words, dtype="<u8")
            pending.discard(key)
        return words


__all__ = ["DecryptorRegistry", "DecryptorSession"]
