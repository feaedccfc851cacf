"""Signed contribution statements: which sites' protected chunks a decrypted total is made of.

Under a mode whose totals a key holder decrypts (``paillier``), each site keeps a running SHA-256
over the protected chunks of a round in the order it sends them (:class:`ChunkDigest`: name,
offset, length, total length, encoding, shape and data of each) and, at the end of the round,
signs a :class:`Contribution` over (job, round, attempt, site, sorted participants, round digest,
chunk digest) with its certificate key. The coordinator checks that each statement covers the
chunks it received from that site and forwards every participant's statement with the round's
decryption requests; the analyst's client verifies them (:func:`verify_contributions`) before
it decrypts anything.

What this binds: the analyst decrypts a round only when every site of the round's participant
list vouches, with a signature the consortium CA's certificate verifies, that it contributed to
exactly this job, round and attempt over exactly these participants. What it does not bind: the
analyst never sees the ciphertexts, so it cannot check that the product it is given is the product
of the signed chunks; the pairwise masks under the encryption make a product over any other set
of ciphertexts decrypt to uniform noise (see :mod:`fedstat.privacy.paillier`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

from fedstat.errors import FedstatError, PrivacyError
from fedstat.pki import sign_statement, verify_statement
from fedstat.privacy.base import ProtectedChunk, Protector, RoundContext
from fedstat.privacy.secagg import verified_site_certificate

PROTOCOL = b"fedstat/contribution/v1"


class ChunkDigest:
    """A running SHA-256 over protected chunks in the order they are sent (or received)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, chunk: ProtectedChunk) -> None:
        fields = (
            chunk.name.encode(),
            str(chunk.offset).encode(),
            str(chunk.length).encode(),
            str(chunk.total_length).encode(),
            chunk.encoding.encode(),
            ",".join(map(str, chunk.shape)).encode(),
            chunk.data,
        )
        for f in fields:  # length-prefixed: no two chunk sequences hash the same input
            self._hash.update(len(f).to_bytes(8, "big"))
            self._hash.update(f)

    def digest(self) -> bytes:
        return self._hash.digest()


@dataclass(frozen=True)
class Contribution:
    """A site's signed statement of what it contributed to one round attempt."""

    job_id: str
    round: int
    attempt: int
    site: str
    participants: tuple[str, ...]  # sorted
    round_digest: str  # fedstat.protocol.round_digest of the round computed
    chunks_digest: bytes  # ChunkDigest of the site's protected chunks of the round
    signature: bytes = b""  # DER ECDSA-SHA256 over transcript()
    certificate: bytes = b""  # the site's PEM certificate

    def transcript(self) -> bytes:
        """The bytes the site signs."""
        fields = [
            PROTOCOL,
            self.job_id.encode(),
            str(self.round).encode(),
            str(self.attempt).encode(),
            self.site.encode(),
            ",".join(sorted(self.participants)).encode(),
            self.round_digest.encode(),
            self.chunks_digest.hex().encode(),
        ]
        return b"\x00".join(fields)

    @classmethod
    def signed(
        cls, ctx: RoundContext, site: str, chunks_digest: bytes, *, key_pem: bytes, certificate_pem: bytes
    ) -> Contribution:
        """The statement of ``site`` for round ``ctx``, signed with its certificate key."""
        unsigned = cls(
            job_id=ctx.job_id,
            round=ctx.round,
            attempt=ctx.attempt,
            site=site,
            participants=tuple(sorted(ctx.participants)),
            round_digest=ctx.round_digest,
            chunks_digest=chunks_digest,
        )
        signature = sign_statement(key_pem, unsigned.transcript())
        return cls(**{**vars(unsigned), "signature": signature, "certificate": certificate_pem})

    @classmethod
    def of(cls, protector: Protector, *, key_pem: bytes, certificate_pem: bytes) -> Contribution | None:
        """The signed statement of what ``protector`` yielded in its round, if its mode needs one."""
        digest = protector.contribution_digest()
        if digest is None:
            return None
        return cls.signed(protector.ctx, protector.site, digest, key_pem=key_pem, certificate_pem=certificate_pem)

    def covers(self, ctx: RoundContext, site: str, chunks_digest: bytes) -> bool:
        """Whether this is ``site``'s statement of round ``ctx`` over the chunks hashed to ``chunks_digest``."""
        return (self.job_id, self.round, self.attempt, self.site, self.participants, self.round_digest) == (
            ctx.job_id,
            ctx.round,
            ctx.attempt,
            site,
            tuple(sorted(ctx.participants)),
            ctx.round_digest,
        ) and self.chunks_digest == chunks_digest


def verify_contributions(
    statements: Sequence[Contribution],
    *,
    job_id: str,
    round_no: int,
    attempt: int,
    ca_pem: bytes,
    now: dt.datetime | None = None,
    revoked: Callable[[x509.Certificate], bool] | None = None,
) -> tuple[str, ...]:
    """Check the statements forwarded with a decryption request; return the round's participants.

    Every statement must be for this job, round and attempt, all must name the same participants
    and round digest, there must be exactly one from each participant and none from anyone else,
    and each must be signed by its site's certificate key under a certificate the consortium CA
    issued to that site (valid now, not revoked).

    Raises
    ------
    PrivacyError
        naming what was wrong: the coordinator must not have this round decrypted.
    """
    where = f"round {round_no} (attempt {attempt}) of job {job_id}"
    if not statements:
        raise PrivacyError(
            f"paillier: refusing to decrypt {where}: the coordinator forwarded no signed contribution "
            "statement of the sites; without them the product could be over any set of ciphertexts"
        )
    by_site: dict[str, Contribution] = {}
    for s in statements:
        if (s.job_id, s.round, s.attempt) != (job_id, round_no, attempt):
            raise PrivacyError(
                f"paillier: refusing to decrypt {where}: site {s.site}'s contribution statement is for round "
                f"{s.round} (attempt {s.attempt}) of job {s.job_id} (a replayed statement)"
            )
        if s.site in by_site:
            raise PrivacyError(f"paillier: refusing to decrypt {where}: two contribution statements from site {s.site}")
        by_site[s.site] = s
    first = statements[0]
    if any((s.participants, s.round_digest) != (first.participants, first.round_digest) for s in statements):
        raise PrivacyError(
            f"paillier: refusing to decrypt {where}: the sites' contribution statements disagree on the round's "
            "participants or on what it computed (the coordinator told sites different things)"
        )
    participants = tuple(sorted(first.participants))
    missing = sorted(set(participants) - set(by_site))
    if missing:
        raise PrivacyError(
            f"paillier: refusing to decrypt {where}: no signed contribution from site(s) {', '.join(missing)}, "
            f"participant(s) of the round ({', '.join(participants)})"
        )
    extra = sorted(set(by_site) - set(participants))
    if extra:
        raise PrivacyError(
            f"paillier: refusing to decrypt {where}: a contribution statement from site(s) {', '.join(extra)}, "
            f"not among the round's participants ({', '.join(participants)})"
        )
    now = now or dt.datetime.now(dt.UTC)
    for site, s in sorted(by_site.items()):
        try:
            cert = verified_site_certificate(
                s.certificate,
                site,
                ca_pem=ca_pem,
                now=now,
                revoked=revoked,
                what=f"paillier: site {site}'s contribution statement",
                consequence=f"refusing to decrypt {where}",
            )
        except PrivacyError:
            raise
        except FedstatError as exc:  # e.g. a stale CRL: revocation cannot be checked
            raise PrivacyError(f"paillier: refusing to decrypt {where}: {exc}") from exc
        if not verify_statement(cert, s.transcript(), s.signature):
            raise PrivacyError(
                f"paillier: refusing to decrypt {where}: site {site}'s contribution statement signature does not "
                "verify (forged or changed after signing)"
            )
    return participants


__all__ = ["ChunkDigest", "Contribution", "verify_contributions"]
