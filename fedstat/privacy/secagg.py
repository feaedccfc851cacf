"""Privacy mode ``secagg`` (the default): pairwise additive masks over the ring Z/2^64.

Every participant of a round attempt makes a fresh X25519 key pair and signs its public key with
its certificate key over the job, round, attempt, its name and the participant list
(:func:`key_transcript`). The coordinator relays the signed keys; each site checks every peer's
certificate against the consortium CA and every signature before it masks anything, so a
coordinator that substitutes, replays or drops a key, or tells sites different participant
lists, is detected and the job stops (:func:`verify_round_keys`).

For each pair (a, b) the X25519 secret is expanded with HKDF-SHA256 (info: job, round,
attempt, a, b) into a pair seed, and per array into an AES-128-CTR key; the keystream, read as
little-endian uint64, is the pair's mask for that array, addressed by element offset so chunks
can be masked independently. Site a adds the mask of each peer after it in sorted order and
subtracts the mask of each peer before it; the masks cancel in the sum over all participants,
and each site's masked vector alone is uniform on the ring.

Encodings (:class:`ProtectedChunk.encoding`):

- ``ring64``: integer sums, exact (two's complement int64 in Z/2^64);
- ``ring64x2``: real sums, two limbs per element: ``hi = round(x·2^16)`` and the remainder
  ``lo = round((x·2^16 − hi)·2^48)``, so the total is ``Σhi·2^-16 + Σlo·2^-64``: each site's value
  is carried to 2^-64 (finer than float64 for |x| ≥ 2^-11), totals up to 2^46 ≈ 7·10^13 in
  magnitude. A site refuses (PrivacyError) a value whose encoding could wrap the ring when summed
  over the round's participants; the ring never wraps silently.

A round with fewer than two participants is refused: its "sum" would be one site's sums.

References
----------
Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017
(pairwise masking; this mode is its honest-but-curious variant with restart-on-dropout).
RFC 7748 (X25519), RFC 5869 (HKDF).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from fedstat.errors import PrivacyError, ProtocolError
from fedstat.pki import issued_by_bundle, verify_statement
from fedstat.privacy.base import (
    MAX_CHUNK_BYTES,
    Aggregator,
    PlannedArray,
    PrivacyMode,
    ProtectedChunk,
    Protector,
    RoundContext,
)

PROTOCOL = b"fedstat/secagg/v1"
HI_FRAC_BITS = 16  # hi limb: 2^-16 steps
LO_SHIFT = 48  # lo limb: the remainder in 2^-64 steps
_HI_SCALE = float(2**HI_FRAC_BITS)
_LO_SCALE = float(2**LO_SHIFT)


@dataclass(frozen=True)
class SignedRoundKey:
    """One participant's ephemeral public key for a round attempt, as it travels."""

    site: str
    public_key: bytes  # 32 bytes, X25519
    signature: bytes  # DER ECDSA-SHA256 over key_transcript(...)
    certificate: bytes  # the site's PEM certificate


def key_transcript(ctx: RoundContext, site: str, public_key: bytes) -> bytes:
    """The bytes a site signs: protocol, job, round, attempt, site, participants, the round's
    digest (its computation, parameters and the coordinator's arrays) and key."""
    fields = [
        PROTOCOL,
        ctx.job_id.encode(),
        str(ctx.round).encode(),
        str(ctx.attempt).encode(),
        site.encode(),
        ",".join(sorted(ctx.participants)).encode(),
        ctx.round_digest.encode(),
        public_key.hex().encode(),
    ]
    return b"\x00".join(fields)


class RoundKeyPair:
    """A site's fresh X25519 key pair for one round attempt (kept only in memory)."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public_key = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def signed(self, ctx: RoundContext, site: str, *, signing_key_pem: bytes, certificate_pem: bytes) -> SignedRoundKey:
        key = serialization.load_pem_private_key(signing_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PrivacyError("the site's certificate key is not an ECDSA key; re-issue it with `fedstat ca issue`")
        signature = key.sign(key_transcript(ctx, site, self.public_key), ec.ECDSA(hashes.SHA256()))
        return SignedRoundKey(site=site, public_key=self.public_key, signature=signature, certificate=certificate_pem)

    def exchange(self, peer_public: bytes) -> bytes:
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def verify_round_keys(
    ctx: RoundContext,
    keys: Sequence[SignedRoundKey],
    *,
    ca_pem: bytes,
    own: SignedRoundKey,
    now: dt.datetime | None = None,
    revoked: Callable[[x509.Certificate], bool] | None = None,
) -> dict[str, bytes]:
    """Check every participant's signed key; return the peers' public keys by site name.

    Raises
    ------
    PrivacyError
        a key is missing, duplicated, for a non-participant, signed by a certificate the
        consortium CA did not issue (or expired, revoked, or not a site's), or its signature does not
        verify; or this site's own key came back altered. Each means the coordinator (or the
        network) tampered with the key exchange: the round must not proceed.
    """
    now = now or dt.datetime.now(dt.UTC)
    by_site: dict[str, SignedRoundKey] = {}
    for k in keys:
        if k.site in by_site:
            raise PrivacyError(f"secure aggregation: two round keys for site {k.site}; key exchange tampered with")
        by_site[k.site] = k
    if sorted(by_site) != sorted(ctx.participants):
        raise PrivacyError(
            "secure aggregation: the round keys received are for "
            f"{', '.join(sorted(by_site)) or 'no site'}, the participants are {', '.join(sorted(ctx.participants))}"
        )
    mine = by_site.get(own.site)
    if mine is None or mine.public_key != own.public_key:
        raise PrivacyError(
            "secure aggregation: this site's own round key came back altered; key substitution detected, aborting the job"
        )
    peers: dict[str, bytes] = {}
    for site, k in by_site.items():
        if site == own.site:
            continue
        cert = verified_site_certificate(
            k.certificate,
            site,
            ca_pem=ca_pem,
            now=now,
            revoked=revoked,
            what=f"secure aggregation: site {site}'s round key",
            consequence="key substitution suspected, aborting the job",
        )
        if not verify_statement(cert, key_transcript(ctx, site, k.public_key), k.signature):
            raise PrivacyError(
                f"secure aggregation: site {site}'s round key signature does not verify (for job {ctx.job_id}, "
                f"round {ctx.round}, attempt {ctx.attempt}); key substitution detected, aborting the job"
            )
        if len(k.public_key) != 32:
            raise PrivacyError(f"secure aggregation: site {site}'s round key is not a 32-byte X25519 key")
        peers[site] = k.public_key
    return peers


def verified_site_certificate(
    pem: bytes,
    site: str,
    *,
    ca_pem: bytes,
    now: dt.datetime,
    revoked: Callable[[x509.Certificate], bool] | None,
    what: str,
    consequence: str,
) -> x509.Certificate:
    """Site ``site``'s certificate ``pem`` as a peer or the analyst trusts it: issued by the consortium
    CA (``ca_pem``, a bundle while the CA is rotated), naming that site in the ``site`` role, valid at
    ``now``, not revoked, with an ECDSA key. ``what`` names the signed item it came with (e.g.
    ``"secure aggregation: site EUR's round key"``) and ``consequence`` what the refusal means.

    Raises
    ------
    PrivacyError
        naming the site and which of these failed.
    """
    label = what.split(":", 1)[0]
    try:
        cert = x509.load_pem_x509_certificate(pem)
        if not issued_by_bundle(cert, ca_pem):
            raise InvalidSignature()
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PrivacyError(f"{what} comes with a certificate the consortium CA did not issue; {consequence}") from exc
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not cn or cn[0].value != site or not ou or ou[0].value != "site":
        item = what.split(":", 1)[-1].strip()
        raise PrivacyError(f"{label}: the certificate sent with {item} is not site {site}'s; {consequence}")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PrivacyError(f"{label}: site {site}'s certificate is not valid now")
    if revoked is not None and revoked(cert):
        raise PrivacyError(f"{label}: site {site}'s certificate has been revoked; refusing what it signed")
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise PrivacyError(f"{label}: site {site}'s certificate key is not an ECDSA key")
    return cert


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def _keystream(key: bytes, start: int, count: int) -> np.ndarray:
    """``count`` uint64 words of AES-128-CTR keystream from word ``start`` on."""
    block, skip = divmod(start, 2)  # two 8-byte words per 16-byte AES block
    enc = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
    stream = enc.update(bytes(8 * (skip + count)))
    return np.frombuffer(stream, dtype="<u8", offset=8 * skip, count=count)


def encode_ints(values: np.ndarray, n_parties: int) -> np.ndarray:
    """Integer sums as ring elements; PrivacyError when a total over ``n_parties`` could wrap."""
    v = np.asarray(values, dtype=np.int64)
    limit = (1 << 62) // max(1, n_parties)
    if v.size and int(np.abs(v).max()) >= limit:
        raise PrivacyError(f"secure aggregation: an integer sum exceeds the ring's headroom ({limit:.3g})")
    return v.view(np.uint64)


def encode_reals(values: np.ndarray, n_parties: int) -> np.ndarray:
    """Real sums as interleaved (hi, lo) ring limbs, shape (2n,)."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise PrivacyError("secure aggregation: cannot encode a non-finite sum (NaN or infinity)")
    scaled = x * _HI_SCALE
    hi = np.rint(scaled)
    limit = float(2**62) / max(1, n_parties)
    if hi.size and float(np.abs(hi).max()) >= limit:
        raise PrivacyError(
            f"secure aggregation: a real-valued sum exceeds the fixed-point range (|total| < {limit / _HI_SCALE:.3g})"
        )
    lo = np.rint((scaled - hi) * _LO_SCALE)  # exact: |scaled − hi| ≤ ½, a multiple of scaled's ulp
    out = np.empty(2 * x.size, dtype=np.int64)
    out[0::2] = hi.astype(np.int64)
    out[1::2] = lo.astype(np.int64)
    return out.view(np.uint64)


def decode_reals(ring: np.ndarray) -> np.ndarray:
    """Totals from summed (hi, lo) limbs."""
    signed = np.asarray(ring, dtype=np.uint64).view(np.int64)
    return signed[0::2].astype(np.float64) / _HI_SCALE + signed[1::2].astype(np.float64) / 2.0**64


class SecAggProtector(Protector):
    """Site side: encodes a site's sums into the ring and adds its pairwise masks."""

    def __init__(self, ctx: RoundContext, site: str, keypair: RoundKeyPair, peers: Mapping[str, bytes]):
        super().__init__(ctx, site)
        if len(ctx.participants) < 2:
            raise PrivacyError("secure aggregation needs at least two participants; refusing to release a lone sum")
        if set(peers) != set(ctx.participants) - {site}:
            raise PrivacyError("secure aggregation: the peer keys do not match the round's participants")
        self._pairs: list[tuple[int, bytes]] = []
        for peer, public in sorted(peers.items()):
            a, b = sorted((site, peer))
            info = b"\x00".join(
                [PROTOCOL, b"pair", ctx.job_id.encode(), str(ctx.round).encode(), str(ctx.attempt).encode()]
                + [a.encode(), b.encode()]
            )
            seed = _hkdf(keypair.exchange(public), info, 32)
            self._pairs.append((1 if site < peer else -1, seed))
        self._array_keys: dict[str, list[tuple[int, bytes]]] = {}

    def mask(self, name: str, start: int, count: int) -> np.ndarray:
        """This site's net mask for words ``start .. start+count`` of array ``name`` (uint64)."""
        keys = self._array_keys.get(name)
        if keys is None:
            keys = self._array_keys[name] = [
                (sign, _hkdf(seed, PROTOCOL + b"\x00array\x00" + name.encode(), 16)) for sign, seed in self._pairs
            ]
        mask = np.zeros(count, dtype=np.uint64)
        for sign, key in keys:
            stream = _keystream(key, start, count)
            if sign > 0:
                mask += stream  # wraps mod 2^64 by design
            else:
                mask -= stream
        return mask

    def protect(
        self, name: str, offset: int, total_length: int, values: np.ndarray, shape: tuple[int, ...] = ()
    ) -> Iterator[ProtectedChunk]:
        n_parties = len(self.ctx.participants)
        if np.issubdtype(values.dtype, np.integer):
            enc, words, ring = "ring64", 1, encode_ints(values, n_parties)
        else:
            enc, words, ring = "ring64x2", 2, encode_reals(values, n_parties)
        per = max(1, MAX_CHUNK_BYTES // (8 * words))
        for rel in range(0, len(values), per):
            count = min(per, len(values) - rel)
            piece = ring[words * rel : words * (rel + count)]
            masked = piece + self.mask(name, words * (offset + rel), words * count)
            yield ProtectedChunk(
                name=name,
                offset=offset + rel,
                length=count,
                total_length=total_length,
                encoding=enc,
                data=masked.astype("<u8", copy=False).tobytes(),
                shape=shape,
            )


class SecAggAggregator(Aggregator):
    """Coordinator side: adds masked ring vectors; only the total (masks cancelled) is decoded."""

    encodings = {True: "ring64", False: "ring64x2"}

    def __init__(self, ctx: RoundContext, expected: Mapping[str, PlannedArray] | None = None):
        super().__init__(ctx, expected)
        if len(ctx.participants) < 2:
            raise PrivacyError(
                "secure aggregation needs at least two participants; a lone site's sum is never released"
            )
        self._sums: dict[str, np.ndarray] = {}
        self._enc: dict[str, str] = {}

    def _accumulate(self, site: str, chunk: ProtectedChunk) -> None:
        words = {"ring64": 1, "ring64x2": 2}.get(chunk.encoding)
        if words is None:
            raise ProtocolError(f"site {site}: encoding {chunk.encoding!r} is not valid in privacy mode secagg")
        if self._enc.setdefault(chunk.name, chunk.encoding) != chunk.encoding:
            raise ProtocolError(f"site {site}: array {chunk.name!r} mixes encodings")
        if len(chunk.data) != 8 * words * chunk.length:
            raise ProtocolError(
                f"site {site}: chunk of {chunk.name!r} has {len(chunk.data)} bytes for {chunk.length} elements"
            )
        total = self._sums.get(chunk.name)
        if total is None:
            total = self._sums[chunk.name] = np.zeros(words * chunk.total_length, dtype=np.uint64)
        lo = words * chunk.offset
        total[lo : lo + words * chunk.length] += np.frombuffer(chunk.data, dtype="<u8")

    def _totals(self) -> dict[str, np.ndarray]:
        out = {}
        for name, ring in self._sums.items():
            out[name] = ring.view(np.int64).copy() if self._enc[name] == "ring64" else decode_reals(ring)
        return out


class SecAggMode(PrivacyMode):
    name = "secagg"
    needs_round_keys = True
    protects_site_sums = True

    def protector(
        self,
        ctx: RoundContext,
        site: str,
        keys: tuple[RoundKeyPair, Mapping[str, bytes]] | None = None,
        *,
        noise: Any = None,
    ) -> Protector:
        if keys is None:
            raise PrivacyError("secure aggregation needs the round's verified peer keys")
        keypair, peers = keys
        return SecAggProtector(ctx, site, keypair, peers)

    def aggregator(
        self,
        ctx: RoundContext,
        *,
        options: Mapping[str, str] | None = None,
        decrypt: Any = None,
        expected: Mapping[str, PlannedArray] | None = None,
    ) -> Aggregator:
        return SecAggAggregator(ctx, expected)
