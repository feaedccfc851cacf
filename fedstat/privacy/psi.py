"""Private harmonization: the coordinator learns the variants present at every site, nothing else.

The sites of a job agree on a group key K that the coordinator relays but never holds, send keyed
hashes of their variant keys under K, and reveal the plaintext keys only of the hashes every site
holds. The steps (the coordinator relays every message):

1. **Signed keys.** Each participant makes a fresh X25519 key pair and signs its public key as a
   secure-aggregation round key of round 0 whose digest is :data:`HARMONIZE_DIGEST`
   (:func:`fedstat.privacy.secagg.key_transcript`: job, exchange number, site, participants), so
   the coordinator cannot substitute a key, and a harmonization key is never valid for a round.
2. **Sealed shares.** Each site draws a random 32-byte share and seals it for every peer with
   ChaCha20-Poly1305 under HKDF(X25519(a, b); job, exchange, sender, recipient).
   ``K = HKDF(shares in site order; job, exchange, participants)``: every share counts, so no site
   alone chooses K, and a changed, dropped or replayed share fails to open.
3. **Keyed hashes.** A variant's key is what :func:`fedstat.data.variants.harmonize` joins on:
   chromosome (as written), position and the two alleles sorted. Each site sends a 16-byte
   pseudorandom function of it under K (:func:`variant_prf`) for every variant whose key it lists
   once, sorted by value (so their order says nothing about positions), and the number of keys it
   lists more than once.
4. **Confirmed intersection.** The coordinator sends every site the hashes present at all sites.
   A site checks it holds each of them, then sends ``HMAC-SHA256(K; job, exchange, site,
   SHA-256(intersection))``. The coordinator relays all these tags; a site reveals (chromosome,
   position, ID, REF, ALT of those variants, in its file order) only when every participant's tag
   confirms the very same intersection. A coordinator that sends one site a list with a hash
   only that site holds is refused by the others' tags: the coordinator cannot make a site reveal
   a variant that is not at every participant (without a participating site's help).

Then :func:`fedstat.data.variants.harmonize` runs on the revealed tables: the variant list, its
order, orientation and IDs equal those of a harmonization of the full lists.

What the coordinator still learns: each site's number of distinct keys and duplicates, and for
every subset of sites how many hashes exactly that subset holds (the sizes of the Venn regions),
but not which variants they are. A site that colludes with the coordinator gives it K, and with
it every other site's variant list by trial hashing of candidate keys.

References
----------
Meadows, "A more efficient cryptographic matchmaking protocol", IEEE S&P 1986; De Cristofaro and
Tsudik, "Practical private set intersection protocols", FC 2010 (keyed-hash PSI with a key
unknown to the server). RFC 7748 (X25519), RFC 5869 (HKDF), RFC 8439 (ChaCha20-Poly1305),
RFC 7693 (BLAKE2); Bellare, Kilian and Rogaway, "The security of the cipher block chaining
message authentication code", JCSS 2000 (CBC-MAC is a PRF on fixed-length inputs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedstat.data.variants import VariantTable
from fedstat.errors import PrivacyError, ProtocolError
from fedstat.privacy.base import RoundContext
from fedstat.privacy.secagg import RoundKeyPair, SignedRoundKey, verify_round_keys

PROTOCOL = b"fedstat/harmonize/v1"
#: The round digest a harmonization key is signed over (never a round's SHA-256 hex digest).
HARMONIZE_DIGEST = "harmonize/v1"
HARMONIZE_ROUND = 0
HASH_BYTES = 16
SHARE_BYTES = 32
TAG_BYTES = 32


def harmonize_context(job_id: str, attempt: int, participants: Sequence[str]) -> RoundContext:
    """The signed context of one harmonization exchange (round 0, :data:`HARMONIZE_DIGEST`)."""
    return RoundContext(
        job_id=job_id,
        round=HARMONIZE_ROUND,
        attempt=attempt,
        participants=tuple(sorted(participants)),
        round_digest=HARMONIZE_DIGEST,
    )


def _info(ctx: RoundContext, *parts: str) -> bytes:
    return b"\x00".join([PROTOCOL, ctx.job_id.encode(), str(ctx.attempt).encode(), *(p.encode() for p in parts)])


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True)
class SealedShare:
    """One site's share of the group key, sealed for one peer."""

    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes


class GroupKeyAgreement:
    """One site's side of the group-key agreement of one exchange (kept only in memory).

    ``signed`` → the coordinator relays every signed key → ``seal_shares`` → the coordinator
    relays the sealed shares → ``open_shares`` returns K.
    """

    def __init__(self, ctx: RoundContext, site: str):
        if site not in ctx.participants:
            raise ProtocolError("the harmonization request does not list this site among its participants")
        self.ctx, self.site = ctx, site
        self._pair = RoundKeyPair()
        self._share = secrets.token_bytes(SHARE_BYTES)
        self._own: SignedRoundKey | None = None
        self._peers: dict[str, bytes] | None = None

    def signed(self, *, signing_key_pem: bytes, certificate_pem: bytes) -> SignedRoundKey:
        self._own = self._pair.signed(
            self.ctx, self.site, signing_key_pem=signing_key_pem, certificate_pem=certificate_pem
        )
        return self._own

    def _pair_key(self, sender: str, recipient: str) -> bytes:
        assert self._peers is not None
        peer = recipient if sender == self.site else sender
        return _hkdf(self._pair.exchange(self._peers[peer]), _info(self.ctx, "share", sender, recipient))

    def seal_shares(
        self,
        keys: Sequence[SignedRoundKey],
        *,
        ca_pem: bytes,
        revoked: Callable[[x509.Certificate], bool] | None = None,
    ) -> list[SealedShare]:
        """Verify every participant's signed key (PrivacyError on any substitution) and seal this
        site's share for each peer."""
        if self._own is None:
            raise ProtocolError("harmonization keys relayed before this site made its key")
        if self._peers is not None:
            raise ProtocolError("harmonization keys relayed twice in one exchange")
        try:
            self._peers = verify_round_keys(self.ctx, keys, ca_pem=ca_pem, own=self._own, revoked=revoked)
        except PrivacyError as exc:
            raise PrivacyError(f"harmonization: {exc}") from None
        out = []
        for peer in sorted(self._peers):
            nonce = secrets.token_bytes(12)
            aad = _info(self.ctx, "share", self.site, peer)
            sealed = ChaCha20Poly1305(self._pair_key(self.site, peer)).encrypt(nonce, self._share, aad)
            out.append(SealedShare(sender=self.site, recipient=peer, nonce=nonce, ciphertext=sealed))
        return out

    def open_shares(self, sealed: Sequence[SealedShare]) -> bytes:
        """The group key K from every peer's share sealed for this site. PrivacyError when a share
        is missing, doubled, addressed elsewhere or does not open (the coordinator changed it)."""
        if self._peers is None:
            raise ProtocolError("harmonization shares relayed before the keys")
        shares = {self.site: self._share}
        for s in sealed:
            if s.recipient != self.site or s.sender not in self._peers or s.sender in shares:
                raise PrivacyError(
                    f"harmonization: a share from {s.sender!r} to {s.recipient!r} is not one this site expects "
                    "(doubled, misaddressed or from a non-participant); key agreement tampered with, aborting the job"
                )
            try:
                aad = _info(self.ctx, "share", s.sender, self.site)
                share = ChaCha20Poly1305(self._pair_key(s.sender, self.site)).decrypt(s.nonce, s.ciphertext, aad)
            except (InvalidTag, ValueError):
                raise PrivacyError(
                    f"harmonization: the share site {s.sender} sealed for this site does not open (changed or "
                    "substituted in transit); key agreement tampered with, aborting the job"
                ) from None
            shares[s.sender] = share
        missing = sorted(set(self.ctx.participants) - set(shares))
        if missing:
            raise PrivacyError(f"harmonization: no share from site(s) {', '.join(missing)}; aborting the job")
        material = b"".join(shares[p] for p in sorted(shares))
        return _hkdf(material, _info(self.ctx, "group", ",".join(self.ctx.participants)))


@dataclass(frozen=True)
class HashedVariants:
    """A site's keyed hashes of the variant keys it lists once.

    Attributes
    ----------
    hashes : [array, shape: (n_unique,), dtype S16] sorted by value
    rows : [array, shape: (n_unique,), dtype int64] the file row of each hash
    n_duplicate : distinct keys listed more than once (dropped, as :func:`harmonize` drops them)
    """

    hashes: np.ndarray
    rows: np.ndarray
    n_duplicate: int

    def select(self, intersection: np.ndarray) -> np.ndarray:
        """File rows (ascending) of ``intersection``, which must be sorted, distinct and all held
        here; ProtocolError otherwise (the coordinator asks for a variant this site lacks)."""
        if len(intersection) > 1 and not np.all(intersection[1:] > intersection[:-1]):
            raise ProtocolError("the harmonization intersection is not a sorted list of distinct hashes")
        held = _held(intersection, self.hashes)
        if not np.all(held):
            raise ProtocolError(
                f"the coordinator's harmonization intersection holds {int((~held).sum())} hash(es) this site does "
                "not hold; it is not the intersection, so this site reveals nothing (a deviating coordinator)"
            )
        return np.sort(self.rows[np.searchsorted(self.hashes, intersection)])


def _tags(values: np.ndarray, key: bytes, size: int) -> np.ndarray:
    """A keyed BLAKE2b tag of each distinct string in ``values``, as rows of ``size`` bytes."""
    out = b"".join(hashlib.blake2b(v.encode(), key=key, digest_size=size).digest() for v in values.tolist())
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, size)


@dataclass(frozen=True)
class KeyIndex:
    """The part of :func:`variant_prf` that needs no key, made once per variant table.

    Attributes
    ----------
    chroms : [array, shape: (n_chroms,), dtype object] the distinct chromosome names
    chrom_of : [array, shape: (n_variants,), dtype int64] each variant's row in ``chroms``
    pairs : [array, shape: (n_pairs,), dtype object] the distinct allele pairs, sorted within the
        pair and length-prefixed (``"1:AG"``)
    pair_of : [array, shape: (n_variants,), dtype int64] each variant's row in ``pairs``
    pos : [array, shape: (n_variants, 8), dtype uint8] positions, big-endian int64
    """

    chroms: np.ndarray
    chrom_of: np.ndarray
    pairs: np.ndarray
    pair_of: np.ndarray
    pos: np.ndarray

    def __len__(self) -> int:
        return len(self.chrom_of)


def key_index(vt: VariantTable) -> KeyIndex:
    """The join keys of ``vt`` (chromosome as written, position, the alleles sorted), factorised."""
    n = len(vt)
    ref, alt = vt.ref.astype(str), vt.alt.astype(str)
    swap = ref > alt
    lo, hi = np.where(swap, alt, ref), np.where(swap, ref, alt)
    chroms, chrom_of = np.unique(vt.chrom.astype(str), return_inverse=True)
    alleles, allele_of = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    allele_of = allele_of.reshape(-1)
    pairs, pair_of = np.unique(allele_of[:n] * len(alleles) + allele_of[n:], return_inverse=True)
    lo_u, hi_u = alleles[pairs // max(1, len(alleles))], alleles[pairs % max(1, len(alleles))]
    text = [f"{len(a)}:{a}{b}" for a, b in zip(lo_u.tolist(), hi_u.tolist(), strict=True)]
    return KeyIndex(
        chroms=chroms.astype(object),
        chrom_of=chrom_of.reshape(-1).astype(np.int64),
        pairs=np.array(text, dtype=object),
        pair_of=pair_of.reshape(-1).astype(np.int64),
        pos=np.ascontiguousarray(vt.pos.astype(">i8")).view(np.uint8).reshape(n, 8),
    )


def variant_prf(keys: VariantTable | KeyIndex, key: bytes) -> np.ndarray:
    """A 16-byte pseudorandom function under ``key`` of each variant's join key (chromosome as
    written, position, the two alleles sorted): [array, shape: (n_variants,), dtype S16].

    Vectorised for 10^5-10^7 variants: each distinct chromosome gets a keyed BLAKE2b-64 tag and
    each distinct allele pair a BLAKE2b-128 tag (few of either); the variant's two blocks
    ``chromosome tag ‖ position`` and ``allele tag`` go through AES-256 CBC-MAC (a PRF on
    fixed-length inputs) in two calls over all variants.
    """
    if len(key) != 32:
        raise PrivacyError("harmonization: the group key must be 32 bytes")
    index = keys if isinstance(keys, KeyIndex) else key_index(keys)
    n = len(index)
    if n == 0:
        return np.zeros(0, dtype=f"S{HASH_BYTES}")
    k_chrom, k_alleles, k_mac = (_hkdf(key, PROTOCOL + b"\x00prf\x00" + w) for w in (b"chrom", b"alleles", b"mac"))
    first = np.empty((n, 16), dtype=np.uint8)
    first[:, :8] = _tags(index.chroms, k_chrom, 8)[index.chrom_of]
    first[:, 8:] = index.pos
    second = _tags(index.pairs, k_alleles, 16)[index.pair_of]
    aes = Cipher(algorithms.AES(k_mac), modes.ECB())
    c1 = np.frombuffer(aes.encryptor().update(first.tobytes()), dtype=np.uint8).reshape(n, 16)
    c2 = aes.encryptor().update((c1 ^ second).tobytes())
    return np.frombuffer(c2, dtype=f"S{HASH_BYTES}")


def hash_variants(keys: VariantTable | KeyIndex, key: bytes) -> HashedVariants:
    """The keyed hashes (:func:`variant_prf`) of every variant key listed once, sorted."""
    arr = variant_prf(keys, key)
    words = np.frombuffer(arr.tobytes(), dtype=">u8").reshape(-1, 2)  # byte order = (word 0, word 1) order
    order = np.lexsort((words[:, 1], words[:, 0]))
    ranked = words[order]
    same = np.all(ranked[1:] == ranked[:-1], axis=1)  # equal to the next hash
    dup = np.zeros(len(arr), dtype=bool)
    dup[1:] |= same
    dup[:-1] |= same
    n_duplicate = int(np.count_nonzero(same & ~np.concatenate([[False], same[:-1]])))  # distinct keys listed twice
    keep = order[~dup]
    return HashedVariants(hashes=arr[keep], rows=keep.astype(np.int64), n_duplicate=n_duplicate)


def as_hashes(data: bytes) -> np.ndarray:
    """Wire bytes as an array of 16-byte hashes; ProtocolError when they are not whole hashes."""
    if len(data) % HASH_BYTES:
        raise ProtocolError(f"harmonization hashes must be {HASH_BYTES} bytes each")
    return np.frombuffer(data, dtype=f"S{HASH_BYTES}")


@dataclass(frozen=True)
class Intersection:
    """What the coordinator derives from the sites' hashes.

    Attributes
    ----------
    hashes : [array, shape: (n_common,), dtype S16] present at every site, sorted
    n_union : distinct hashes over all sites
    """

    hashes: np.ndarray
    n_union: int

    @property
    def n_excluded(self) -> int:
        return self.n_union - len(self.hashes)


def _held(values: np.ndarray, sorted_hashes: np.ndarray) -> np.ndarray:
    """For each of ``values``, whether the sorted array ``sorted_hashes`` holds it (bool mask)."""
    if not len(sorted_hashes):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_hashes, values)
    at[at == len(sorted_hashes)] = 0
    held: np.ndarray = sorted_hashes[at] == values
    return held


def intersect(site_hashes: Mapping[str, np.ndarray]) -> Intersection:
    """The hashes every site holds; each site's list is sorted and holds distinct hashes (binary
    searches: no sort of the concatenated lists)."""
    lists = list(site_hashes.values())
    if not lists:
        raise ProtocolError("harmonization needs at least one site's hashes")
    common = lists[0]
    for other in lists[1:]:
        common = common[_held(common, other)]
    n_union = 0
    for k, own in enumerate(lists):  # each list's hashes that no earlier list holds
        earlier = np.zeros(len(own), dtype=bool)
        for j in range(k):
            earlier |= _held(own, lists[j])
        n_union += int(np.count_nonzero(~earlier))
    return Intersection(hashes=common, n_union=n_union)


def intersection_tag(key: bytes, ctx: RoundContext, site: str, intersection: np.ndarray) -> bytes:
    """``site``'s confirmation that it holds every hash of ``intersection`` (HMAC-SHA256 under K)."""
    digest = hashlib.sha256(np.ascontiguousarray(intersection).tobytes()).digest()
    return hmac.new(key, _info(ctx, "confirm", site) + b"\x00" + digest, hashlib.sha256).digest()


def check_tags(key: bytes, ctx: RoundContext, intersection: np.ndarray, tags: Mapping[str, bytes]) -> None:
    """PrivacyError unless every participant confirmed this very intersection."""
    if sorted(tags) != sorted(ctx.participants):
        raise PrivacyError(
            "harmonization: confirmations of the intersection arrived for "
            f"{', '.join(sorted(tags)) or 'no site'}, the participants are {', '.join(ctx.participants)}; "
            "revealing nothing"
        )
    for site in ctx.participants:
        if not hmac.compare_digest(tags[site], intersection_tag(key, ctx, site, intersection)):
            raise PrivacyError(
                f"harmonization: site {site} did not confirm the intersection this site was sent (the coordinator "
                "sent the sites different intersections, or changed a confirmation); revealing nothing"
            )
