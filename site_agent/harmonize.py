"""A site's side of private harmonization (fedstat.privacy.psi) for one job.

The job's worker hands every harmonization message here, in order; each step returns the
messages to send. The coordinator learns this site's keyed hashes (under a key it never holds),
and the plaintext keys only of the variants every participant confirmed holding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography import x509

from fedstat.data.variants import SitePlan
from fedstat.errors import PolicyRefused, ProtocolError
from fedstat.privacy import psi
from fedstat.protocol import (
    HashAssembler,
    hash_chunks,
    keys_chunks,
    round_key_to_pb,
    round_keys_from_pb,
    shares_from_pb,
    shares_to_pb,
)
from fedstat.wire import site_pb2


@dataclass(frozen=True)
class SiteIdentity:
    """What the site signs and verifies with."""

    name: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    revoked: Callable[[x509.Certificate], bool] | None
    min_sites: int


#: most harmonization exchanges one job may start at a site: the first, and one for each of a few
#: reconnects (a deviating coordinator looping exchanges would cost the site a hash pass each)
MAX_EXCHANGES = 8


class SiteHarmonizer:
    """One job's harmonization exchanges at this site (a later exchange replaces an earlier one)."""

    def __init__(
        self,
        job_id: str,
        identity: SiteIdentity,
        genotypes,  # noqa: ANN001 - a GenotypeSource (its variants and skipped counts)
        *,
        sites: tuple[str, ...] = (),
        on_reveal: Callable[[tuple[str, ...], int, int], None] | None = None,
        key_index: Callable[[], psi.KeyIndex] | None = None,
    ):
        """``sites``: the signed spec's --sites (empty: any); ``on_reveal(participants, n_revealed,
        n_hashed)`` is called before the site reveals the intersection's keys (its audit record);
        ``key_index()`` gives the keyless part of the hashing of ``genotypes``' variants (the agent
        keeps one per dataset; None: computed for this job)."""
        self.job_id, self.me, self.genotypes, self.job_sites = job_id, identity, genotypes, tuple(sorted(sites))
        self.on_reveal = on_reveal
        self._key_index = key_index or (lambda: psi.key_index(genotypes.variants))
        self.attempt = -1
        self.participants: tuple[str, ...] | None = None  # pinned at the job's first exchange
        self._agreement: psi.GroupKeyAgreement | None = None
        self._key: bytes | None = None
        self._hashed: psi.HashedVariants | None = None
        self._intersection: HashAssembler | None = None
        self._common: np.ndarray | None = None
        self._revealed: dict[int, np.ndarray] = {}  # exchange -> file rows revealed, ascending
        self.exchanges = 0  # exchanges started for the job (capped: MAX_EXCHANGES)
        self._index: psi.KeyIndex | None = None

    def _out(self, **kind) -> site_pb2.SiteMessage:  # noqa: ANN003
        return site_pb2.SiteMessage(**kind)

    def handle(self, msg: site_pb2.CoordinatorMessage) -> Iterator[site_pb2.SiteMessage]:
        kind = msg.WhichOneof("kind")
        if kind == "keys_request":
            yield self._start(msg.keys_request)
            if self._index is None:  # the keyless part of the hashing, while the keys go round
                self._index = self._key_index()
            return
        assert kind in ("harmonize", "intersection"), kind  # the agent hands this class nothing else
        body = getattr(msg, kind)
        if body.attempt != self.attempt or self._agreement is None:
            raise ProtocolError(f"harmonization message for exchange {body.attempt}, which this site did not start")
        if kind == "intersection":
            tag = self._confirm(body)
            if tag is not None:
                yield tag
        elif body.peer_keys:
            shares = self._agreement.seal_shares(
                round_keys_from_pb(body.peer_keys), ca_pem=self.me.ca_pem, revoked=self.me.revoked
            )
            yield self._out(
                harmonize_shares=site_pb2.HarmonizeShares(
                    job_id=self.job_id, attempt=self.attempt, shares=shares_to_pb(shares)
                )
            )
        elif body.tags or self._common is not None:
            yield from self._reveal(body)
        else:
            yield from self._hashes(body)

    def _start(self, req: site_pb2.KeysRequest) -> site_pb2.SiteMessage:
        participants = tuple(sorted(req.participants))
        if len(set(participants)) != len(participants) or self.me.name not in participants:
            raise ProtocolError("the harmonization request does not list this site once among its participants")
        if len(participants) < self.me.min_sites:
            raise PolicyRefused(
                f"harmonization over {len(participants)} site(s) is below this site's minimum of "
                f"{self.me.min_sites} (policy min_sites): this site reveals its variants only where at least "
                f"{self.me.min_sites} sites hold them"
            )
        if self.job_sites and participants != self.job_sites:
            raise ProtocolError("the harmonization request names other sites than the job's signed --sites")
        if self.participants is not None and participants != self.participants:
            raise ProtocolError(
                "the harmonization request names other sites than this job's first harmonization; a job is "
                "harmonized over one site set (another set would reveal another intersection)"
            )
        if req.attempt <= self.attempt:
            raise ProtocolError(f"harmonization exchange {req.attempt} is not newer than exchange {self.attempt}")
        self.exchanges += 1
        if self.exchanges > MAX_EXCHANGES:
            raise ProtocolError(
                f"harmonization exchange {req.attempt}: more than {MAX_EXCHANGES} exchanges for one job at this "
                "site (one, and one more for each reconnect); each costs a pass over the variants"
            )
        self.participants, self.attempt = participants, req.attempt
        # the reveal of an older exchange is needed no more (a plan names the latest or the one before)
        self._revealed = {a: r for a, r in self._revealed.items() if a >= self.attempt - 1}
        ctx = psi.harmonize_context(self.job_id, req.attempt, participants)
        self._agreement = psi.GroupKeyAgreement(ctx, self.me.name)
        self._key = self._hashed = self._common = None
        self._intersection = None
        signed = self._agreement.signed(signing_key_pem=self.me.key_pem, certificate_pem=self.me.cert_pem)
        return self._out(round_key=round_key_to_pb(self.job_id, psi.HARMONIZE_ROUND, req.attempt, signed))

    def _hashes(self, relay: site_pb2.HarmonizeRelay) -> Iterator[site_pb2.SiteMessage]:
        assert self._agreement is not None
        if self._key is not None:
            raise ProtocolError("harmonization shares relayed twice in one exchange")
        self._key = self._agreement.open_shares(shares_from_pb(relay.shares))
        g = self.genotypes
        self._hashed = psi.hash_variants(self._index if self._index is not None else g.variants, self._key)
        self._intersection = HashAssembler("the harmonization intersection", max_hashes=len(self._hashed.hashes))
        for chunk in hash_chunks(
            self.job_id,
            self.attempt,
            self._hashed,
            multiallelic=g.multiallelic_skipped,
            non_snv=getattr(g, "non_snv_skipped", 0),
            multiallelic_split=getattr(g, "multiallelic_split", 0),
        ):
            yield self._out(keys=chunk)

    def _confirm(self, chunk: site_pb2.HarmonizeIntersection) -> site_pb2.SiteMessage | None:
        if self._intersection is None or self._hashed is None or self._common is not None:
            raise ProtocolError("a harmonization intersection arrived before this site's hashes were sent")
        if not self._intersection.add(chunk):
            return None
        common = self._intersection.hashes()
        rows = self._hashed.select(common)  # raises unless this site holds every hash
        self._common = common
        self._revealed[self.attempt] = rows
        assert self._key is not None and self._agreement is not None
        tag = psi.intersection_tag(self._key, self._agreement.ctx, self.me.name, common)
        return self._out(
            harmonize_tag=site_pb2.HarmonizeTag(job_id=self.job_id, attempt=self.attempt, site=self.me.name, tag=tag)
        )

    def _reveal(self, relay: site_pb2.HarmonizeRelay) -> Iterator[site_pb2.SiteMessage]:
        if self._common is None or self._key is None or self._agreement is None:
            raise ProtocolError("harmonization confirmations relayed before the intersection")
        tags: dict[str, bytes] = {}
        for t in relay.tags:
            if t.site in tags:
                raise ProtocolError(f"two confirmations of the intersection for site {t.site}")
            tags[t.site] = t.tag
        psi.check_tags(self._key, self._agreement.ctx, self._common, tags)
        rows = self._revealed[self.attempt]
        self._key = None  # the exchange is over: nothing more is hashed or revealed under K
        if self.on_reveal is not None:
            assert self.participants is not None and self._hashed is not None
            self.on_reveal(self.participants, len(rows), len(self._hashed.hashes))
        for chunk in keys_chunks(self.job_id, self.genotypes.variants.take(rows), attempt=self.attempt):
            yield self._out(keys=chunk)

    def site_plan(self, plan: SitePlan, attempt: int) -> SitePlan:
        """The coordinator's plan (over the rows revealed in exchange ``attempt``) in file rows."""
        rows = self._revealed.get(attempt)
        if rows is None:
            raise ProtocolError(
                f"the variant plan refers to harmonization exchange {attempt}, which this site did not run"
            )
        idx = plan.local_index
        if idx.size and (idx.min() < 0 or idx.max() >= len(rows)):
            raise ProtocolError("the coordinator's variant plan names variants this site did not reveal")
        return SitePlan(local_index=rows[idx], flip=plan.flip)


def reveal_recorder(
    audit: Callable[[], Any], *, job_id: str, analyst: str, dataset: str
) -> Callable[[tuple[str, ...], int, int], None]:
    """``on_reveal`` writing the site's audit record of a harmonization (``audit()``: the site's
    AuditLog): which sites learnt how many variant keys (counts of variants only)."""

    def record(sites: tuple[str, ...], n_revealed: int, n_hashed: int) -> None:
        audit().append(
            event="harmonize",
            job_id=job_id,
            analyst=analyst,
            dataset=dataset,
            sites=list(sites),
            reason=f"revealed the keys of the {n_revealed} variants every site confirmed holding; "
            f"keyed hashes of {n_hashed} sent",
        )

    return record
