"""Paillier encryption of packed ring values: the cryptographic core of ``--privacy paillier``.

Keys are :mod:`phe` keys (``phe.PaillierPublicKey`` / ``phe.PaillierPrivateKey``, g = n + 1), so
a ciphertext made here decrypts with ``PaillierPrivateKey.raw_decrypt`` (pass ``int(c)``) and a
``raw_encrypt`` ciphertext from ``phe`` adds to ours. Only the public key travels (:func:`public_key_to_bytes`).
This module is pure: no networking, no protocol state.

Slot layout
-----------
A vector of values is cut into groups of ``slots`` values; each group becomes one plaintext

    m = Σ_{j=0}^{slots-1} v_j · 2^(j · slot_bits),      slot_bits = value_bits + headroom_bits,

with value ``k · slots + j`` of the vector in slot ``j`` (least significant first) of plaintext
``k``; unused slots of the last plaintext are zero. ``slots = ⌊(|n| − 1) / slot_bits⌋``, so every
packed plaintext, and every sum of at most ``2^headroom_bits`` of them, stays below
``2^(|n|−1) < n``: slot sums never carry into the next slot and never wrap modulo n. For a
2048-bit key, 64-bit ring values with 8 bits of headroom (256 summands) give 28 slots of 72 bits,
32-bit counts give 51 slots of 40 bits.

After decryption each slot is read back modulo ``2^min(slot_bits, 64)``:

* ``value_bits = 64`` (two's-complement ring elements, :mod:`fedstat.privacy.secagg`'s encodings): the
  slot sum reduced mod 2^64, i.e. the ring sum, which decodes to the signed fixed-point total;
* ``value_bits < 64`` (non-negative counts; the layout requires ``slot_bits ≤ 64``): the exact
  sum of the counts, which cannot exceed ``2^slot_bits − 1``.

Fast encryption
---------------
Encryption is ``c = (1 + m·n) · h^x mod n²``. With g = n + 1, ``g^m = 1 + m·n (mod n²)`` needs no
exponentiation. The obfuscator ``r^n`` of textbook Paillier (a |n|-bit exponent) is replaced by
the Damgård–Jurik–Nielsen short-exponent form ``h^x`` with ``h = r0^n mod n²`` computed once per
process from a random unit ``r0`` and ``x`` a fresh random exponent of ⌈|n|/2⌉ bits. Because h is
fixed, ``h^x`` comes from a fixed-base table ``T[i][d] = h^(d · 2^(w·i))`` (``w``-bit windows):
``h^x = Π_i T[i][x_i]`` costs about |n|/(2w) multiplications mod n² and no squarings. All
randomness (``r0``, every ``x``) comes from :mod:`secrets`.

gmpy2 arithmetic holds the GIL, so the table only scales across cores in processes: the default
backend runs the table in ``workers`` spawned processes, each with its own ``r0`` and table (the
pool is spawned, never forked, because the site agent runs gRPC threads). The ``"thread"``
backend instead computes ``h^x`` with ``gmpy2.powmod_exp_list``, which releases the GIL but has
no table; ``"inline"`` uses the table in the calling process on one core.

Security
--------
Semantic security rests on the decisional composite residuosity assumption (as for Paillier)
together with a short-exponent assumption: for x uniform below ``2^⌈|n|/2⌉``, ``h^x`` is
computationally indistinguishable from a uniform element of the subgroup ⟨h⟩ of n-th residues.
This is the assumption of Damgård, Jurik and Nielsen's efficient variant, which takes exponents
of about |n|/2 bits; the best known attack on a short exponent, Pollard's lambda method, costs
about 2^(|x|/2) = 2^512 group operations for a 2048-bit key, far beyond the ~112-bit strength of
factoring n itself. ``h`` and ``r0`` never leave the process that made them.

References
----------
P. Paillier, "Public-key cryptosystems based on composite degree residuosity classes",
EUROCRYPT 1999. I. Damgård, M. Jurik, J. B. Nielsen, "A generalization of Paillier's public-key
system with applications to electronic voting", Int. J. Inf. Secur. 9 (2010) 371–385.
E. F. Brickell, D. M. Gordon, K. S. McCurley, D. B. Wilson, "Fast exponentiation with
precomputation", EUROCRYPT 1992 (fixed-base tables). python-paillier (``phe``) 1.5: key
generation, key objects, ``raw_decrypt``.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import queue
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe import (
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
)

from fedstat.errors import PrivacyError

#: Modulus sizes accepted for keys generated here and for public keys received from a peer.
SUPPORTED_KEY_BITS = (2048, 3072)
#: Default modulus size: about 112-bit security (NIST SP 800-57).
DEFAULT_KEY_BITS = 2048
#: Default headroom: slot sums of up to 2^8 = 256 contributions never carry into the next slot.
DEFAULT_HEADROOM_BITS = 8
#: Most memory one fixed-base table may take (ciphertext-sized entries), per process.
TABLE_BUDGET_BYTES = 128 << 20
#: ``alg`` of a serialized public key: Paillier with g = n + 1 (phe's name for it).
PUBLIC_KEY_ALG = "PAI-GN1"

#: Longest serialized public key accepted (a 3072-bit n in hex is 768 characters).
_MAX_PUBLIC_KEY_BYTES = 4096
#: How long a worker process may take to start and build its table.
_WORKER_START_TIMEOUT_S = 60.0

Backend = Literal["process", "thread", "inline"]


@functools.cache
def _small_primes_product() -> int:
    """Product of the odd primes below 2^16: a modulus sharing one of them is malformed."""
    return math.prod(p for p in range(3, 1 << 16, 2) if gmpy2.is_prime(p))


# --- keys ---------------------------------------------------------------------------------------


def _check_key_bits(bits: int, what: str) -> None:
    if bits < min(SUPPORTED_KEY_BITS):
        raise PrivacyError(
            f"{what} Paillier modulus has {bits} bits; keys below {min(SUPPORTED_KEY_BITS)} bits are refused"
        )
    if bits not in SUPPORTED_KEY_BITS:
        supported = ", ".join(map(str, SUPPORTED_KEY_BITS))
        raise PrivacyError(f"{what} Paillier modulus has {bits} bits; supported sizes are {supported}")


def generate_keypair(bits: int = DEFAULT_KEY_BITS) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh Paillier key pair (g = n + 1) from ``phe``'s key generation.

    Parameters
    ----------
    bits : modulus size, one of :data:`SUPPORTED_KEY_BITS`; anything below 2048 is refused

    Returns
    -------
    (phe.PaillierPublicKey, phe.PaillierPrivateKey)
    """
    _check_key_bits(bits, "requested")
    public_key, private_key = generate_paillier_keypair(n_length=bits)
    return public_key, private_key


def validate_public_key(public_key: PaillierPublicKey | int) -> PaillierPublicKey:
    """Check a public key received from a peer; return it as a ``phe`` key.

    Refuses (:class:`~fedstat.errors.PrivacyError`) a modulus that is not an integer, whose size
    is not in :data:`SUPPORTED_KEY_BITS`, that is even, has a prime factor below 2^16, is a
    perfect square or is prime. These checks catch malformed and trivially weak keys; they cannot
    prove that n is a product of two large primes.
    """
    n = public_key.n if isinstance(public_key, PaillierPublicKey) else public_key
    if isinstance(n, bool) or not isinstance(n, int | mpz):
        raise PrivacyError(f"Paillier public key modulus must be an integer, not {type(n).__name__}")
    n = int(n)
    if n <= 0:
        raise PrivacyError("Paillier public key modulus must be positive")
    _check_key_bits(n.bit_length(), "received")
    if n % 2 == 0:
        raise PrivacyError("received Paillier modulus is even; a modulus must be a product of two odd primes")
    if gmpy2.gcd(n, _small_primes_product()) != 1:
        raise PrivacyError("received Paillier modulus has a prime factor below 2^16")
    if gmpy2.is_square(n):
        raise PrivacyError("received Paillier modulus is a perfect square; p and q must differ")
    if gmpy2.is_prime(n, 25):
        raise PrivacyError("received Paillier modulus is prime; it must be a product of two primes")
    return public_key if isinstance(public_key, PaillierPublicKey) else PaillierPublicKey(n)


def public_key_to_bytes(public_key: PaillierPublicKey) -> bytes:
    """Serialize a public key as compact UTF-8 JSON: ``{"alg": "PAI-GN1", "n": "<hex>"}``."""
    return json.dumps({"alg": PUBLIC_KEY_ALG, "n": format(public_key.n, "x")}, separators=(",", ":")).encode()


def public_key_from_bytes(data: bytes) -> PaillierPublicKey:
    """Parse and validate (:func:`validate_public_key`) a key made by :func:`public_key_to_bytes`."""
    if len(data) > _MAX_PUBLIC_KEY_BYTES:
        raise PrivacyError(
            f"serialized Paillier public key is {len(data)} bytes; at most {_MAX_PUBLIC_KEY_BYTES} expected"
        )
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrivacyError(f"serialized Paillier public key is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"alg", "n"}:
        raise PrivacyError('serialized Paillier public key must be a JSON object with exactly the keys "alg" and "n"')
    if doc["alg"] != PUBLIC_KEY_ALG:
        raise PrivacyError(f"serialized Paillier public key has alg {doc['alg']!r}; expected {PUBLIC_KEY_ALG!r}")
    n_hex = doc["n"]
    if not isinstance(n_hex, str) or not n_hex or any(c not in "0123456789abcdef" for c in n_hex):
        raise PrivacyError('serialized Paillier public key: "n" must be a lower-case hexadecimal string')
    return validate_public_key(int(n_hex, 16))


def ciphertext_bytes(public_key: PaillierPublicKey) -> int:
    """Width of one serialized ciphertext: ``2 · ⌈|n| / 8⌉`` bytes (room for any value below n²)."""
    return 2 * ((int(public_key.n.bit_length()) + 7) // 8)


# --- slot layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotLayout:
    """How values are packed into Paillier plaintexts (see the module docstring).

    Attributes
    ----------
    key_bits : bit length of the modulus n the plaintexts must stay below
    value_bits : width of one value: 64 for ring elements mod 2^64, fewer for non-negative counts
    headroom_bits : extra bits per slot, so up to ``2^headroom_bits`` vectors can be summed
    """

    key_bits: int
    value_bits: int = 64
    headroom_bits: int = DEFAULT_HEADROOM_BITS

    def __post_init__(self) -> None:
        _check_key_bits(self.key_bits, "slot layout's")
        if not 1 <= self.value_bits <= 64:
            raise PrivacyError(f"slot value width must be 1..64 bits, not {self.value_bits}")
        if self.headroom_bits < 0:
            raise PrivacyError(f"slot headroom must be non-negative, not {self.headroom_bits} bits")
        if self.value_bits < 64 and self.slot_bits > 64:
            raise PrivacyError(
                f"count slots of {self.value_bits} + {self.headroom_bits} headroom bits exceed 64 bits; "
                "exact count sums must fit uint64"
            )
        if self.slots < 1:
            raise PrivacyError(f"a {self.slot_bits}-bit slot does not fit a {self.key_bits}-bit plaintext")

    @classmethod
    def for_key(
        cls, public_key: PaillierPublicKey, *, value_bits: int = 64, headroom_bits: int = DEFAULT_HEADROOM_BITS
    ) -> SlotLayout:
        """The layout for ``public_key``'s modulus."""
        return cls(key_bits=public_key.n.bit_length(), value_bits=value_bits, headroom_bits=headroom_bits)

    @property
    def slot_bits(self) -> int:
        """Width of one slot: value bits plus headroom bits."""
        return self.value_bits + self.headroom_bits

    @property
    def slots(self) -> int:
        """Values per plaintext: ``⌊(key_bits − 1) / slot_bits⌋``, so every slot sum stays below n."""
        return (self.key_bits - 1) // self.slot_bits

    @property
    def max_summands(self) -> int:
        """Most vectors whose sum the slots hold without carrying: ``2^headroom_bits``."""
        return 1 << self.headroom_bits

    def n_plaintexts(self, length: int) -> int:
        """Plaintexts (= ciphertexts) needed for ``length`` values."""
        return -(-length // self.slots)

    def pack(self, values: np.ndarray) -> list[int]:
        """Pack values into plaintexts.

        Parameters
        ----------
        values : [array, shape: (n_values,), integer dtype] ring elements (``value_bits = 64``,
            two's complement) or non-negative counts below ``2^value_bits``

        Returns
        -------
        list of ``n_plaintexts(n_values)`` integers, each below ``2^(slots · slot_bits)``
        """
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise PrivacyError(f"packing needs a 1-D array, not shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise PrivacyError(f"packing needs integer values (uint64 ring elements or counts), not dtype {arr.dtype}")
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
            raise PrivacyError(
                "packing refuses negative integers: encode signed values as two's-complement uint64 ring elements"
            )
        if self.value_bits < 64 and arr.size and int(arr.max()) >> self.value_bits:
            raise PrivacyError(f"a value does not fit the declared {self.value_bits}-bit slot value width")
        flat = arr.astype(np.uint64, copy=False).tolist()
        per, width = self.slots, self.slot_bits
        out = []
        for start in range(0, len(flat), per):
            m = 0
            for v in reversed(flat[start : start + per]):
                m = (m << width) | v
            out.append(m)
        return out

    def unpack(self, plaintexts: Sequence[int], length: int) -> np.ndarray:
        """Read ``length`` slot sums back from (summed, decrypted) plaintexts.

        Returns
        -------
        [array, shape: (length,), dtype uint64] each slot mod ``2^min(slot_bits, 64)``: the ring sum
        mod 2^64 for 64-bit values, the exact sum for counts
        """
        if len(plaintexts) != self.n_plaintexts(length):
            raise PrivacyError(
                f"{len(plaintexts)} plaintexts cannot hold exactly {length} values of {self.slots} per plaintext"
            )
        per, width = self.slots, self.slot_bits
        limit = 1 << (per * width)
        mask = (1 << min(width, 64)) - 1
        flat: list[int] = []
        for m in plaintexts:
            m = int(m)
            if not 0 <= m < limit:
                raise PrivacyError(
                    "a decrypted plaintext exceeds the slot layout (a malformed ciphertext or too many summands)"
                )
            for _ in range(per):
                flat.append(m & mask)
                m >>= width
        if any(flat[length:]):
            raise PrivacyError("padding slots of the last plaintext are not zero (a malformed ciphertext)")
        return np.array(flat[:length], dtype=np.uint64)


# --- encrypted vectors and coordinator-side operations --------------------------------------------


@dataclass(frozen=True)
class EncryptedVector:
    """A vector of values encrypted in packed slots.

    Attributes
    ----------
    ciphertexts : one ciphertext (an integer in [1, n²)) per packed plaintext, in vector order
    length : number of values packed; the last plaintext's unused slots hold zeros
    layout : the slot layout the values were packed with
    summands : how many encrypted vectors were added into this one (1 when fresh); decryption
        refuses more than ``layout.max_summands``
    """

    ciphertexts: tuple[mpz, ...]
    length: int
    layout: SlotLayout
    summands: int = 1

    def __post_init__(self) -> None:
        if len(self.ciphertexts) != self.layout.n_plaintexts(self.length):
            raise PrivacyError(
                f"{len(self.ciphertexts)} ciphertexts cannot hold exactly {self.length} values "
                f"of {self.layout.slots} per ciphertext"
            )
        if self.summands < 1:
            raise PrivacyError(f"an encrypted vector has at least one summand, not {self.summands}")

    def to_bytes(self) -> bytes:
        """Ciphertexts as fixed-width big-endian bytes (:func:`ciphertexts_to_bytes`)."""
        return _to_fixed_width(self.ciphertexts, 2 * ((self.layout.key_bits + 7) // 8))

    @classmethod
    def from_bytes(
        cls, data: bytes, public_key: PaillierPublicKey, *, layout: SlotLayout, length: int, summands: int = 1
    ) -> EncryptedVector:
        """Parse and validate (:func:`ciphertexts_from_bytes`) a vector received from a peer."""
        _check_layout(layout, public_key)
        return cls(tuple(ciphertexts_from_bytes(data, public_key)), length, layout, summands)


def _check_layout(layout: SlotLayout, public_key: PaillierPublicKey) -> None:
    if layout.key_bits != public_key.n.bit_length():
        raise PrivacyError(
            f"slot layout is for a {layout.key_bits}-bit modulus but the key has {public_key.n.bit_length()} bits"
        )


def ciphertexts_to_bytes(ciphertexts: Sequence[int | mpz], public_key: PaillierPublicKey) -> bytes:
    """Serialize ciphertexts, each as exactly :func:`ciphertext_bytes` big-endian bytes."""
    return _to_fixed_width(ciphertexts, ciphertext_bytes(public_key))


def _to_fixed_width(ciphertexts: Sequence[int | mpz], width: int) -> bytes:
    try:
        return b"".join(int(c).to_bytes(width, "big") for c in ciphertexts)
    except OverflowError as exc:
        raise PrivacyError(f"a ciphertext does not fit {width} bytes (not below n² for this key)") from exc


def ciphertexts_from_bytes(data: bytes, public_key: PaillierPublicKey) -> list[mpz]:
    """Parse :func:`ciphertexts_to_bytes` output, refusing a ragged length or a value outside [1, n²)."""
    width = ciphertext_bytes(public_key)
    if len(data) % width:
        raise PrivacyError(
            f"ciphertext bytes: length {len(data)} is not a multiple of the {width}-byte ciphertext width"
        )
    nsquare = mpz(public_key.nsquare)
    out = []
    for i in range(0, len(data), width):
        c = mpz.from_bytes(data[i : i + width], "big")
        if not 0 < c < nsquare:
            raise PrivacyError(f"ciphertext bytes: ciphertext {i // width} is not in [1, n²) for this key")
        out.append(c)
    return out


def add_ciphertexts(a: Sequence[int | mpz], b: Sequence[int | mpz], public_key: PaillierPublicKey) -> list[mpz]:
    """Element-wise homomorphic sum: ``a_i · b_i mod n²`` (plaintexts add mod n).

    Works on lists of Python ints (e.g. ``phe``'s ``raw_encrypt`` output) or gmpy2 ``mpz``.
    """
    if len(a) != len(b):
        raise PrivacyError(f"cannot add ciphertext vectors of lengths {len(a)} and {len(b)}")
    nsquare = mpz(public_key.nsquare)
    return [mpz(x) * y % nsquare for x, y in zip(a, b, strict=True)]


def add_encrypted(a: EncryptedVector, b: EncryptedVector, public_key: PaillierPublicKey) -> EncryptedVector:
    """Homomorphic sum of two encrypted vectors of the same layout and length.

    Refuses a sum of more than ``layout.max_summands`` vectors, whose slots could carry.
    """
    if a.layout != b.layout or a.length != b.length:
        raise PrivacyError("cannot add encrypted vectors of different slot layouts or lengths")
    _check_layout(a.layout, public_key)
    summands = a.summands + b.summands
    if summands > a.layout.max_summands:
        raise PrivacyError(
            f"a sum of {summands} encrypted vectors exceeds the {a.layout.headroom_bits}-bit slot headroom "
            f"({a.layout.max_summands} summands)"
        )
    return EncryptedVector(
        tuple(add_ciphertexts(a.ciphertexts, b.ciphertexts, public_key)), a.length, a.layout, summands
    )


# --- encryption -----------------------------------------------------------------------------------


def _random_unit(n: mpz) -> mpz:
    """A uniformly random r in [1, n) with gcd(r, n) = 1, from :mod:`secrets`."""
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return r


def _exponent_bits(n: mpz) -> int:
    """Bits of a short obfuscation exponent: ⌈|n| / 2⌉."""
    return (int(n.bit_length()) + 1) // 2


def default_window_bits(key_bits: int) -> int:
    """Widest fixed-base window (at most 12 bits) whose table fits :data:`TABLE_BUDGET_BYTES`.

    2048-bit keys get 11-bit windows (93 multiplications per obfuscator, a 99 MB table), 3072-bit
    keys 10-bit windows (153 multiplications, 121 MB).
    """
    entry = 2 * ((key_bits + 7) // 8)
    x_bits = (key_bits + 1) // 2
    fits = [w for w in range(2, 13) if -(-x_bits // w) * (1 << w) * entry <= TABLE_BUDGET_BYTES]
    return max(fits)


def _combine(plaintexts: Sequence[int], obfuscators: Sequence[mpz], n: mpz, nsquare: mpz) -> list[mpz]:
    """``(1 + m·n) · o mod n²`` computed as ``o + n · (m·o mod n)`` (since n·k mod n² = n·(k mod n))."""
    out = []
    for m, o in zip(plaintexts, obfuscators, strict=True):
        c = o + n * (m * o % n)
        out.append(c - nsquare if c >= nsquare else c)
    return out


class _FixedBaseObfuscator:
    """``h = r0^n mod n²`` for a fresh secret ``r0``, and the table ``T[i][d] = h^(d·2^(w·i))``."""

    def __init__(self, n: mpz, *, window_bits: int):
        self.n, self.nsquare = n, n * n
        self.x_bits, self.window_bits = _exponent_bits(n), window_bits
        base = gmpy2.powmod(_random_unit(n), n, self.nsquare)  # h = r0^n
        self._rows: list[list[mpz]] = []
        for _ in range(-(-self.x_bits // window_bits)):
            row, acc = [mpz(1)], mpz(1)
            for _d in range(1, 1 << window_bits):
                acc = acc * base % self.nsquare  # T[i][d] = T[i][d-1] · h^(2^(w·i))
                row.append(acc)
            self._rows.append(row)
            base = acc * base % self.nsquare  # h^(2^(w·(i+1)))

    def obfuscators(self, count: int) -> list[mpz]:
        """``count`` values ``h^x`` for fresh x uniform below 2^x_bits."""
        mask, w, nsquare, rows = (1 << self.window_bits) - 1, self.window_bits, self.nsquare, self._rows
        out = []
        for _ in range(count):
            x = secrets.randbits(self.x_bits)
            acc = rows[0][x & mask]
            for row in rows[1:]:
                x >>= w
                acc = acc * row[x & mask] % nsquare  # h^x = Π_i T[i][x_i]
            out.append(acc)
        return out

    def encrypt(self, plaintexts: Sequence[int]) -> list[mpz]:
        return _combine(plaintexts, self.obfuscators(len(plaintexts)), self.n, self.nsquare)


#: The table of a worker process (set by :func:`_worker_init`).
_WORKER: _FixedBaseObfuscator | None = None


def _worker_init(n: int, window_bits: int, ready: Any) -> None:
    global _WORKER
    _WORKER = _FixedBaseObfuscator(mpz(n), window_bits=window_bits)
    ready.put(True)


def _worker_encrypt(plaintexts: list[int]) -> bytes:
    assert _WORKER is not None, "worker used before its initializer ran"
    return _to_fixed_width(_WORKER.encrypt(plaintexts), 2 * ((_WORKER.n.bit_length() + 7) // 8))


class PaillierEncryptor:
    """Encrypts packed plaintexts under one public key, fast (see the module docstring).

    Parameters
    ----------
    public_key : the coordinator's public key (validated here)
    backend : ``"process"`` (fixed-base tables in ``workers`` spawned processes; fastest),
        ``"thread"`` (``workers`` threads of GIL-free ``gmpy2.powmod_exp_list``, no table) or
        ``"inline"`` (one fixed-base table in this process, one core)
    workers : processes or threads to use (ignored for ``"inline"``)
    window_bits : fixed-base window width; default :func:`default_window_bits`. Each table holds
        ``⌈|n|/(2w)⌉ · 2^w`` ciphertext-sized numbers.

    Use as a context manager, or call :meth:`close`, to stop the worker processes. As with any
    spawned process, the program's main module must be safe to import (``if __name__ == "__main__"``).
    """

    def __init__(
        self,
        public_key: PaillierPublicKey,
        *,
        backend: Backend = "process",
        workers: int = 2,
        window_bits: int | None = None,
    ):
        self.public_key = validate_public_key(public_key)
        self.backend, self.workers = backend, workers
        self._n = mpz(self.public_key.n)
        self._nsquare = self._n * self._n
        self.window_bits = default_window_bits(self._n.bit_length()) if window_bits is None else window_bits
        if workers < 1:
            raise PrivacyError(f"an encryptor needs at least one worker, not {workers}")
        if not 1 <= self.window_bits <= 16:
            raise PrivacyError(f"fixed-base window must be 1..16 bits, not {self.window_bits}")
        self._pool: Any = None
        self._threads: ThreadPoolExecutor | None = None
        self._inline: _FixedBaseObfuscator | None = None
        self._h = mpz(0)
        if backend == "inline":
            self._inline = _FixedBaseObfuscator(self._n, window_bits=self.window_bits)
        elif backend == "thread":
            self._h = gmpy2.powmod(_random_unit(self._n), self._n, self._nsquare)
            self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="paillier")
        elif backend == "process":
            self._start_pool()
        else:
            raise PrivacyError(f"unknown encryption backend {backend!r}; use 'process', 'thread' or 'inline'")

    def _start_pool(self) -> None:
        # spawn, never fork: the site agent's process runs gRPC threads
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        self._pool = ctx.Pool(self.workers, initializer=_worker_init, initargs=(int(self._n), self.window_bits, ready))
        try:
            for _ in range(self.workers):
                ready.get(timeout=_WORKER_START_TIMEOUT_S)
        except queue.Empty:
            self.close()
            raise PrivacyError(
                f"Paillier encryption workers did not start within {_WORKER_START_TIMEOUT_S:.0f} s"
            ) from None
        finally:
            ready.close()

    def __enter__(self) -> PaillierEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop worker processes or threads; the encryptor cannot be used afterwards."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None
        self._inline = None

    def encrypt_plaintexts(self, plaintexts: Sequence[int]) -> list[mpz]:
        """Encrypt raw plaintexts (integers in [0, n)); one fresh obfuscator each."""
        n = self._n
        plaintexts = [int(m) for m in plaintexts]
        if any(not 0 <= m < n for m in plaintexts):
            raise PrivacyError("a Paillier plaintext is outside [0, n)")
        if not plaintexts:
            return []
        if self._inline is not None:
            return self._inline.encrypt(plaintexts)
        per = max(1, min(256, -(-len(plaintexts) // (4 * self.workers))))
        chunks = [plaintexts[i : i + per] for i in range(0, len(plaintexts), per)]
        if self._pool is not None:
            blobs = self._pool.map(_worker_encrypt, chunks, chunksize=1)
            width = 2 * ((n.bit_length() + 7) // 8)
            return [mpz.from_bytes(blob[i : i + width], "big") for blob in blobs for i in range(0, len(blob), width)]
        if self._threads is not None:
            parts = self._threads.map(self._thread_encrypt, chunks)
            return [c for part in parts for c in part]
        raise PrivacyError("this Paillier encryptor is closed")

    def _thread_encrypt(self, plaintexts: list[int]) -> list[mpz]:
        exponents = [mpz(secrets.randbits(_exponent_bits(self._n))) for _ in plaintexts]
        obfuscators = gmpy2.powmod_exp_list(self._h, exponents, self._nsquare)  # releases the GIL
        return _combine(plaintexts, obfuscators, self._n, self._nsquare)

    def encrypt(self, values: np.ndarray, layout: SlotLayout) -> EncryptedVector:
        """Pack (:meth:`SlotLayout.pack`) and encrypt a vector of values.

        Parameters
        ----------
        values : [array, shape: (n_values,)] uint64 ring elements or non-negative counts
        layout : slot layout for this key

        Returns
        -------
        EncryptedVector with ``layout.n_plaintexts(n_values)`` ciphertexts and one summand
        """
        _check_layout(layout, self.public_key)
        packed = layout.pack(values)
        return EncryptedVector(tuple(self.encrypt_plaintexts(packed)), len(values), layout)


# --- decryption -----------------------------------------------------------------------------------


class PaillierDecryptor:
    """Decrypts with the Chinese remainder theorem, ``threads`` threads of GIL-free gmpy2.

    Per ciphertext: ``m_p = L(c^(p−1) mod p²) · h_p mod p`` and the same mod q, then
    ``m = m_p + p · ((m_q − m_p) · p⁻¹ mod q)``, with ``L(u) = (u − 1) / p`` (Paillier 1999, §7).
    The exponentiations run as ``gmpy2.powmod_base_list`` over each thread's share.
    """

    def __init__(self, private_key: PaillierPrivateKey, *, threads: int = 2):
        if threads < 1:
            raise PrivacyError(f"a decryptor needs at least one thread, not {threads}")
        self.public_key = private_key.public_key
        self.threads = threads
        self._n = mpz(self.public_key.n)
        self._nsquare = self._n * self._n
        self._p, self._q = mpz(private_key.p), mpz(private_key.q)
        self._psquare, self._qsquare = self._p * self._p, self._q * self._q
        self._hp, self._hq = mpz(private_key.hp), mpz(private_key.hq)
        self._p_inverse = mpz(private_key.p_inverse)

    def _decrypt_share(self, ciphertexts: list[mpz]) -> list[mpz]:
        p, q = self._p, self._q
        up = gmpy2.powmod_base_list([c % self._psquare for c in ciphertexts], p - 1, self._psquare)
        uq = gmpy2.powmod_base_list([c % self._qsquare for c in ciphertexts], q - 1, self._qsquare)
        out = []
        for a, b in zip(up, uq, strict=True):
            mp = (a - 1) // p * self._hp % p
            mq = (b - 1) // q * self._hq % q
            out.append(mp + p * ((mq - mp) * self._p_inverse % q))
        return out

    def decrypt_plaintexts(self, ciphertexts: Sequence[int | mpz]) -> list[mpz]:
        """Raw plaintexts in [0, n) of ciphertexts in [1, n²)."""
        cts = [mpz(c) for c in ciphertexts]
        if any(not 0 < c < self._nsquare for c in cts):
            raise PrivacyError("a ciphertext is not in [1, n²) for this key")
        if self.threads == 1 or len(cts) < 2:
            return self._decrypt_share(cts)
        per = -(-len(cts) // self.threads)
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="paillier-dec") as pool:
            parts = pool.map(self._decrypt_share, [cts[i : i + per] for i in range(0, len(cts), per)])
            return [m for part in parts for m in part]

    def decrypt(self, vector: EncryptedVector) -> np.ndarray:
        """Decrypt and unpack a (summed) vector.

        Returns
        -------
        [array, shape: (vector.length,), dtype uint64] slot sums, see :meth:`SlotLayout.unpack`
        """
        _check_layout(vector.layout, self.public_key)
        if vector.summands > vector.layout.max_summands:
            raise PrivacyError(f"{vector.summands} summands exceed the {vector.layout.headroom_bits}-bit slot headroom")
        return vector.layout.unpack(self.decrypt_plaintexts(vector.ciphertexts), vector.length)
