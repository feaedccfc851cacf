"""Privacy mode ``paillier``: sites encrypt under the analyst's key; only the analyst can decrypt.

The analyst's client generates a Paillier key pair (:func:`fedstat.privacy.paillier_crypto.generate_keypair`,
``phe``-compatible) and puts only the public key in the job spec (option ``paillier_public_key``).
Each site encodes its sums into the ring Z/2^64 exactly as secure aggregation does (``ring64`` for
integer sums, two ``ring64x2`` limbs per real sum, see :mod:`fedstat.privacy.secagg`), adds its
pairwise masks (below), packs the ring words into slots of 64 + 8 bits (28 per 2048-bit plaintext, 42 per 3072-bit one) and encrypts
them with the fast encryptor. The coordinator multiplies the ciphertexts of every participant
(adding the plaintexts) and, holding no private key, sends the products to the analyst's client
(``Analyst.Decrypt``), which decrypts them and returns the slot sums: the same ring totals secure
aggregation would have unmasked, bit for bit. So results in this mode equal ``secagg`` exactly, and
``none`` to the fixed-point precision of ``ring64x2`` (2^-64 per site value).

Packing grid
------------
Ring word ``w`` of an array lives in slot ``w mod S`` of ciphertext ``⌊w / S⌋`` (S slots per
plaintext), whatever chunk it was sent in: a chunk covers the ciphertexts its words touch and
leaves the slots outside its words zero, so chunks of different sites, cut at different block
boundaries, still multiply slot-aligned. Each slot receives at most one nonzero word per site;
8 bits of headroom hold the sum over up to 256 sites without a carry.

Masks under the encryption
--------------------------
Before packing, each site adds the pairwise masks of secure aggregation (the same signed X25519
round keys, :mod:`fedstat.privacy.secagg`) to its ring words; they cancel in the slot sums over
all participants. So a single site's ciphertext decrypts to a uniformly random vector: the key
holder learns one site's sums neither from a coordinator that presents one site's ciphertext as
a total nor by colluding with the coordinator (unless every other site joins in). Slot sums stay
below 256 · 2^64, so the 8 headroom bits still hold.

Trust
-----
See docs/privacy.md. The analyst's client (:class:`AnalystDecryptor`) decrypts only requests of its
own job, each (round, array, ciphertext) once and each round under one attempt only, and only
products that every site of the job's participant list vouched for with a signed contribution
statement for that round attempt (:mod:`fedstat.privacy.contribution`; the protector hashes the
chunks it yields, the agent signs the digest at the end of the round).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gmpy2 import mpz
from phe import PaillierPublicKey

from fedstat.errors import InputError, PrivacyError, ProtocolError
from fedstat.privacy.base import (
    MAX_CHUNK_BYTES,
    Aggregator,
    PlannedArray,
    PrivacyMode,
    ProtectedChunk,
    Protector,
    RoundContext,
)
from fedstat.privacy.contribution import ChunkDigest, Contribution, verify_contributions
from fedstat.privacy.dpmode import NoisyMode
from fedstat.privacy.paillier_crypto import (
    PaillierDecryptor,
    PaillierEncryptor,
    SlotLayout,
    ciphertext_bytes,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    public_key_from_bytes,
)
from fedstat.privacy.secagg import RoundKeyPair, SecAggProtector, decode_reals, encode_ints, encode_reals

#: Job option holding the analyst's public key (``public_key_to_bytes`` JSON text).
PUBLIC_KEY_OPTION = "paillier_public_key"
#: Slot headroom: sums over up to 2^8 = 256 sites never carry into the next slot.
HEADROOM_BITS = 8
#: Ring words per element, by chunk encoding.
WORDS = {"paillier-ring64": 1, "paillier-ring64x2": 2}


def layout_for(public_key: PaillierPublicKey) -> SlotLayout:
    """The slot layout of every array of a job under ``public_key``: 64-bit ring words, 8 bits headroom."""
    return SlotLayout.for_key(public_key, value_bits=64, headroom_bits=HEADROOM_BITS)


def job_public_key(options: Mapping[str, str]) -> PaillierPublicKey:
    """The job's public key from its options; InputError when missing or malformed."""
    raw = options.get(PUBLIC_KEY_OPTION, "")
    if not raw:
        raise InputError(
            f"--privacy paillier needs the analyst's public key in option {PUBLIC_KEY_OPTION} "
            "(fedstat's client adds it when it submits)"
        )
    try:
        return public_key_from_bytes(raw.encode())
    except PrivacyError as exc:
        raise InputError(f"option {PUBLIC_KEY_OPTION}: {exc}") from None


def _span(words: int, offset: int, length: int, slots: int) -> tuple[int, int, int]:
    """(first ciphertext, number of ciphertexts, first word) of elements offset..offset+length."""
    w0 = words * offset
    k0 = w0 // slots
    k1 = (w0 + words * length - 1) // slots
    return k0, k1 - k0 + 1, w0


def n_ciphertexts(words: int, total_length: int, slots: int) -> int:
    return -(-(words * total_length) // slots)


@dataclass(frozen=True)
class PaillierKeys:
    """What a site protects one round with: its verified round keys (for the pairwise masks) and
    the job's encryptor under the analyst's public key."""

    keypair: RoundKeyPair
    peers: Mapping[str, bytes]
    encryptor: PaillierEncryptor


class PaillierProtector(Protector):
    """Site side: ring-encodes a site's sums, adds its pairwise masks, packs the words on the job's
    grid and encrypts them."""

    def __init__(self, ctx: RoundContext, site: str, keys: PaillierKeys):
        super().__init__(ctx, site)
        if len(ctx.participants) < 2:
            raise PrivacyError("paillier: a round needs at least two participants; refusing to release a lone sum")
        self._masks = SecAggProtector(ctx, site, keys.keypair, keys.peers)
        self.encryptor = keys.encryptor
        self.public_key = keys.encryptor.public_key
        self.layout = layout_for(self.public_key)
        if len(ctx.participants) > self.layout.max_summands:
            raise PrivacyError(f"paillier: at most {self.layout.max_summands} sites fit the slot headroom")
        self._ct_bytes = ciphertext_bytes(self.public_key)
        self._sent = ChunkDigest()  # what this site vouches for at the end of the round

    def contribution_digest(self) -> bytes:
        return self._sent.digest()

    def protect(
        self, name: str, offset: int, total_length: int, values: np.ndarray, shape: tuple[int, ...] = ()
    ) -> Iterator[ProtectedChunk]:
        n_parties = len(self.ctx.participants)
        if np.issubdtype(values.dtype, np.integer):
            enc, ring = "paillier-ring64", encode_ints(values, n_parties)
        else:
            enc, ring = "paillier-ring64x2", encode_reals(values, n_parties)
        words, slots = WORDS[enc], self.layout.slots
        per = max(1, ((MAX_CHUNK_BYTES // self._ct_bytes - 2) * slots) // words)
        for rel in range(0, len(values), per):
            count = min(per, len(values) - rel)
            k0, n_ct, w0 = _span(words, offset + rel, count, slots)
            grid = np.zeros(n_ct * slots, dtype=np.uint64)
            start = w0 - k0 * slots
            piece = ring[words * rel : words * (rel + count)]
            grid[start : start + words * count] = piece + self._masks.mask(name, w0, words * count)  # wraps mod 2^64
            ciphertexts = self.encryptor.encrypt_plaintexts(self.layout.pack(grid))
            chunk = ProtectedChunk(
                name=name,
                offset=offset + rel,
                length=count,
                total_length=total_length,
                encoding=enc,
                data=ciphertexts_to_bytes(ciphertexts, self.public_key),
                shape=shape,
            )
            self._sent.update(chunk)
            yield chunk


@dataclass(frozen=True)
class EncryptedSum:
    """One array's summed ciphertexts, as the coordinator asks the analyst's client to decrypt them."""

    name: str
    ciphertexts: Sequence[mpz]
    n_words: int  # ring words of the array (the last ciphertext's unused slots are zero)
    summands: int  # participants whose ciphertexts were multiplied in


#: The coordinator's way to have the analyst decrypt: (round context, sums, public key) → ring words per array.
Decrypt = Callable[[RoundContext, Sequence[EncryptedSum], PaillierPublicKey], Mapping[str, np.ndarray]]


class PaillierAggregator(Aggregator):
    """Coordinator side: multiplies ciphertexts slot-aligned; the totals come back from the analyst."""

    encodings = {True: "paillier-ring64", False: "paillier-ring64x2"}

    def __init__(
        self,
        ctx: RoundContext,
        public_key: PaillierPublicKey,
        decrypt: Decrypt | None,
        expected: Mapping[str, PlannedArray] | None = None,
    ):
        super().__init__(ctx, expected)
        if len(ctx.participants) < 2:
            raise PrivacyError("paillier: a lone site's sum is never released; a round needs two participants")
        self.public_key = public_key
        self.layout = layout_for(public_key)
        self._decrypt = decrypt
        self._nsquare = mpz(public_key.nsquare)
        self._ct_bytes = ciphertext_bytes(public_key)
        self._products: dict[str, list[mpz]] = {}
        self._enc: dict[str, str] = {}

    def _accumulate(self, site: str, chunk: ProtectedChunk) -> None:
        words = WORDS.get(chunk.encoding)
        if words is None:
            raise ProtocolError(f"site {site}: encoding {chunk.encoding!r} is not valid in privacy mode paillier")
        if self._enc.setdefault(chunk.name, chunk.encoding) != chunk.encoding:
            raise ProtocolError(f"site {site}: array {chunk.name!r} mixes encodings")
        slots = self.layout.slots
        k0, n_ct, _ = _span(words, chunk.offset, chunk.length, slots)
        if len(chunk.data) != n_ct * self._ct_bytes:
            raise ProtocolError(
                f"site {site}: chunk of {chunk.name!r} has {len(chunk.data)} bytes; {n_ct} ciphertexts of "
                f"{self._ct_bytes} bytes expected"
            )
        try:
            ciphertexts = ciphertexts_from_bytes(chunk.data, self.public_key)
        except PrivacyError as exc:
            raise ProtocolError(f"site {site}: chunk of {chunk.name!r}: {exc}") from None
        products = self._products.get(chunk.name)
        if products is None:
            products = self._products[chunk.name] = [mpz(1)] * n_ciphertexts(words, chunk.total_length, slots)
        nsquare = self._nsquare
        for i, c in enumerate(ciphertexts, start=k0):
            products[i] = products[i] * c % nsquare

    def _totals(self) -> dict[str, np.ndarray]:
        if self._decrypt is None:
            raise PrivacyError("paillier: the coordinator holds no private key; totals need the analyst's decryptor")
        sums = [
            EncryptedSum(
                name=name,
                ciphertexts=products,
                n_words=WORDS[self._enc[name]] * self._lengths[name],
                summands=len(self.ctx.participants),
            )
            for name, products in self._products.items()
        ]
        words_by_name = self._decrypt(self.ctx, sums, self.public_key)
        out: dict[str, np.ndarray] = {}
        for s in sums:
            ring = np.asarray(words_by_name.get(s.name, ()), dtype=np.uint64)
            if ring.size < s.n_words:
                raise ProtocolError(
                    f"the analyst's decryptor returned {ring.size} words of {s.name!r}, not {s.n_words}"
                )
            ring = ring[: s.n_words]
            out[s.name] = ring.view(np.int64).copy() if self._enc[s.name] == "paillier-ring64" else decode_reals(ring)
        return out


class PaillierMode(PrivacyMode):
    name = "paillier"
    protects_site_sums = True
    needs_public_key = True
    needs_round_keys = True  # the pairwise masks under the encryption

    def protector(self, ctx: RoundContext, site: str, keys: Any = None, *, noise: Any = None) -> Protector:
        if not isinstance(keys, PaillierKeys):
            raise PrivacyError("paillier: the site needs its verified round keys and the job's encryptor")
        return PaillierProtector(ctx, site, keys)

    def aggregator(
        self,
        ctx: RoundContext,
        *,
        options: Mapping[str, str] | None = None,
        decrypt: Decrypt | None = None,
        expected: Mapping[str, PlannedArray] | None = None,
    ) -> Aggregator:
        return PaillierAggregator(ctx, job_public_key(options or {}), decrypt, expected)


class PaillierDpMode(NoisyMode, PaillierMode):
    """``paillier,dp``: sites add distributed discrete Gaussian noise (as in ``dp``), then encrypt."""

    name = "paillier,dp"


# --- the analyst's side ------------------------------------------------------------------------


class AnalystDecryptor:
    """Held by the analyst's client for one job: decrypts summed ciphertexts, each at most once, and
    only products every participant of the job has vouched for.

    Refuses (PrivacyError) a request for another job; one without a valid signed contribution
    statement (:mod:`fedstat.privacy.contribution`) from exactly the round's participants, all for
    this job, round and attempt, each under a certificate the consortium CA (``ca_pem``) issued to
    that site and not revoked (``revoked``); a participant set other than the job's: the analyst's
    signed ``sites`` when it named them, otherwise the set of the first round decrypted (a job never
    re-runs over another site set); a product whose claimed ``summands`` is not the number of
    statements, or fewer than two; a second attempt of a round already (even partly) decrypted; any
    position of a (round, array) it already decrypted whatever offset the coordinator states; and
    any ciphertext value it decrypted before under any name. An honest coordinator never asks twice
    (a round is decrypted once, after every site's sums arrived), and a second answer over another
    set of sites could difference one site out.
    """

    def __init__(
        self,
        job_id: str,
        decryptor: PaillierDecryptor,
        *,
        ca_pem: bytes,
        sites: Sequence[str] = (),
        revoked: Callable[[Any], bool] | None = None,
    ):
        self.job_id = job_id
        self.decryptor = decryptor
        self.public_key = decryptor.public_key
        self.layout = layout_for(self.public_key)
        self._ca_pem = ca_pem
        self._revoked = revoked
        self._signed_sites = tuple(sorted(sites))  # the spec's --sites, signed by the analyst
        self._sites: tuple[str, ...] = self._signed_sites  # or fixed at the first round decrypted
        self._attempts: dict[int, int] = {}  # round -> the one attempt decrypted
        self._statements: dict[int, frozenset[tuple[str, bytes, str]]] = {}  # round -> the contributions decrypted
        self._done: set[tuple[int, str, int]] = set()  # (round, array, ciphertext position)
        self._seen: set[bytes] = set()  # digests of every ciphertext decrypted
        self._lock = threading.Lock()
        self.n_decrypted = 0

    def decrypt(
        self,
        *,
        job_id: str,
        round_no: int,
        attempt: int,
        name: str,
        first: int,
        summands: int,
        data: bytes,
        contributions: Sequence[Contribution],
    ) -> np.ndarray:
        """The ring words (every slot, uint64) of the ciphertexts in ``data``."""
        if job_id != self.job_id:
            raise PrivacyError(f"paillier: asked to decrypt for job {job_id}, this key belongs to job {self.job_id}")
        if summands < 2:
            raise PrivacyError(
                f"paillier: refusing to decrypt {name!r} of round {round_no}: it would be one site's sums"
            )
        participants = verify_contributions(
            contributions, job_id=job_id, round_no=round_no, attempt=attempt, ca_pem=self._ca_pem, revoked=self._revoked
        )
        if summands != len(contributions):
            raise PrivacyError(
                f"paillier: refusing to decrypt {name!r} of round {round_no}: the coordinator says {summands} sites' "
                f"ciphertexts were multiplied in, but forwards {len(contributions)} signed contributions"
            )
        ciphertexts = ciphertexts_from_bytes(data, self.public_key)
        keys = [(round_no, name, first + i) for i in range(len(ciphertexts))]
        width = len(data) // max(len(ciphertexts), 1)
        digests = {hashlib.sha256(data[i * width : (i + 1) * width]).digest() for i in range(len(ciphertexts))}
        with self._lock:
            self._check_sites(round_no, participants)
            done_attempt = self._attempts.get(round_no, attempt)
            if done_attempt != attempt:
                raise PrivacyError(
                    f"paillier: refusing to decrypt round {round_no} again under attempt {attempt}: it was decrypted "
                    f"under attempt {done_attempt}; each round of a job is decrypted under one attempt only"
                )
            statements = frozenset((c.site, bytes(c.chunks_digest), c.round_digest) for c in contributions)
            if self._statements.get(round_no, statements) != statements:
                raise PrivacyError(
                    f"paillier: refusing to decrypt {name!r} of round {round_no}: the round was decrypted with other "
                    "signed contributions (its sites computed it again); each round is decrypted from one set of "
                    "ciphertexts only"
                )
            if any(k in self._done for k in keys) or digests & self._seen or len(digests) < len(ciphertexts):
                raise PrivacyError(
                    f"paillier: the coordinator asked again to decrypt {name!r} of round {round_no} "
                    f"(attempt {attempt}), or a ciphertext already decrypted; refusing: each total is decrypted once"
                )
            self._sites = participants
            self._attempts[round_no] = attempt
            self._statements[round_no] = statements
            self._done.update(keys)
            self._seen.update(digests)
        plaintexts = self.decryptor.decrypt_plaintexts(ciphertexts)
        self.n_decrypted += len(plaintexts)
        return self.layout.unpack(plaintexts, len(plaintexts) * self.layout.slots)

    def _check_sites(self, round_no: int, participants: tuple[str, ...]) -> None:
        """The round's participants must be the job's: its signed --sites, or those of its first round decrypted."""
        if not self._sites or participants == self._sites:
            return
        job_sites = ", ".join(self._sites)
        whose = (
            f"the job's signed site list (--sites) is {job_sites}"
            if self._signed_sites
            else f"the job's earlier rounds were decrypted over {job_sites}, and a job never re-runs over another site set"
        )
        raise PrivacyError(
            f"paillier: refusing to decrypt round {round_no}: its contributions come from {', '.join(participants)}; "
            f"{whose}"
        )
