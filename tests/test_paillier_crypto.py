"""Packed Paillier core: ring and count round trips, phe interoperability, refusal of bad input."""

from __future__ import annotations

import functools

import gmpy2
import numpy as np
import pytest
from phe import PaillierPublicKey, generate_paillier_keypair

from fedstat.errors import PrivacyError
from fedstat.privacy import paillier_crypto
from fedstat.privacy.paillier_crypto import (
    EncryptedVector,
    PaillierDecryptor,
    PaillierEncryptor,
    SlotLayout,
    add_ciphertexts,
    add_encrypted,
    ciphertext_bytes,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    default_window_bits,
    generate_keypair,
    public_key_from_bytes,
    public_key_to_bytes,
    validate_public_key,
)

# Small fixed-base windows keep table building fast in tests; the arithmetic is the same.
WINDOW = 4
U64_MAX = np.iinfo(np.uint64).max


def encode_fixed(values, *, frac_bits=24):
    """Signed reals as uint64 ring elements: round(x · 2^f) in two's complement (the ring Z/2^64)."""
    return np.rint(np.asarray(values, dtype=np.float64) * 2.0**frac_bits).astype(np.int64).view(np.uint64)


def decode_fixed(ring, *, frac_bits=24):
    """A sum of :func:`encode_fixed` ring elements back to float64."""
    return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0**frac_bits


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def keys3072():
    return generate_keypair(3072)


@pytest.fixture(scope="module")
def encryptor(keys):
    with PaillierEncryptor(keys[0], backend="inline", window_bits=WINDOW) as enc:
        yield enc


@pytest.fixture(scope="module")
def decryptor(keys):
    return PaillierDecryptor(keys[1], threads=2)


def _sum(vectors, public_key):
    total = vectors[0]
    for v in vectors[1:]:
        total = add_encrypted(total, v, public_key)
    return total


# --- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [512, 1024, 2047])
def test_generate_keypair__refuses_keys_below_2048_bits(bits):
    with pytest.raises(PrivacyError, match="below 2048 bits are refused"):
        generate_keypair(bits)


def test_generate_keypair__refuses_unsupported_sizes():
    with pytest.raises(PrivacyError, match="supported sizes are 2048, 3072"):
        generate_keypair(2560)


def test_generate_keypair__gives_phe_keys_of_the_requested_size(keys, keys3072):
    for (public_key, private_key), bits in ((keys, 2048), (keys3072, 3072)):
        assert isinstance(public_key, PaillierPublicKey)
        assert public_key.n.bit_length() == bits
        assert private_key.p * private_key.q == public_key.n
        assert public_key.g == public_key.n + 1


def test_public_key_from_bytes__round_trips_only_the_public_modulus(keys):
    public_key, private_key = keys
    data = public_key_to_bytes(public_key)
    assert format(private_key.p, "x") not in data.decode()
    assert public_key_from_bytes(data) == public_key


@functools.cache
def _bad_moduli():
    q = int(gmpy2.next_prime(1 << 2046))
    p = int(gmpy2.next_prime(3 << 1022))
    small, _ = generate_paillier_keypair(n_length=1024)
    return {
        "1024-bit": (small.n, "below 2048 bits are refused"),
        "tiny": (15, "below 2048 bits are refused"),
        "4096-bit": ((1 << 4095) + 1, "supported sizes are 2048, 3072"),
        "even": (3 * q + 1, "even"),
        "small factor": (3 * q, "prime factor below 2"),
        "square": (p * p, "perfect square"),
        "prime": (int(gmpy2.next_prime(1 << 2047)), "is prime"),
    }


@pytest.mark.parametrize("case", ["1024-bit", "tiny", "4096-bit", "even", "small factor", "square", "prime"])
def test_public_key_from_bytes__rejects_bad_moduli(case):
    n, message = _bad_moduli()[case]
    data = public_key_to_bytes(PaillierPublicKey(n))
    with pytest.raises(PrivacyError, match=message):
        public_key_from_bytes(data)
    with pytest.raises(PrivacyError, match=message):
        validate_public_key(n)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"{not json", "not UTF-8 JSON"),
        (b'["PAI-GN1", "abc"]', "exactly the keys"),
        (b'{"alg": "PAI-GN1", "n": "ab", "p": "1"}', "exactly the keys"),
        (b'{"alg": "RSA", "n": "ab"}', "has alg 'RSA'"),
        (b'{"alg": "PAI-GN1", "n": 12345}', "hexadecimal string"),
        (b'{"alg": "PAI-GN1", "n": "-1f"}', "hexadecimal string"),
        (b'{"alg": "PAI-GN1", "n": ""}', "hexadecimal string"),
        (b" " * 5000, "at most 4096"),
    ],
)
def test_public_key_from_bytes__rejects_malformed_documents(data, message):
    with pytest.raises(PrivacyError, match=message):
        public_key_from_bytes(data)


def test_validate_public_key__rejects_non_integers():
    for bad in ("123", 1.5, True):
        with pytest.raises(PrivacyError, match="must be an integer"):
            validate_public_key(bad)


# --- slot layout ----------------------------------------------------------------------------------


def test_slot_layout__slot_counts_worked_by_hand():
    # (2048 - 1) // 72 = 28, (2048 - 1) // 40 = 51, (3072 - 1) // 72 = 42
    assert SlotLayout(2048).slots == 28
    assert SlotLayout(2048, value_bits=32).slots == 51
    assert SlotLayout(3072).slots == 42
    assert SlotLayout(2048, headroom_bits=2).slots == 31
    assert SlotLayout(2048).max_summands == 256
    assert SlotLayout(2048).n_plaintexts(0) == 0
    assert SlotLayout(2048).n_plaintexts(57) == 3


def test_slot_layout__refuses_impossible_layouts():
    with pytest.raises(PrivacyError, match="below 2048 bits"):
        SlotLayout(1024)
    with pytest.raises(PrivacyError, match="1..64 bits"):
        SlotLayout(2048, value_bits=65)
    with pytest.raises(PrivacyError, match="exceed 64 bits"):
        SlotLayout(2048, value_bits=60, headroom_bits=8)
    with pytest.raises(PrivacyError, match="non-negative"):
        SlotLayout(2048, headroom_bits=-1)


def test_pack__layout_puts_value_k_in_slot_k_mod_slots():
    layout = SlotLayout(2048, value_bits=32)
    values = np.arange(1, 60, dtype=np.uint64)
    packed = layout.pack(values)
    assert len(packed) == 2
    assert packed[0] == sum(v << (40 * j) for j, v in enumerate(range(1, 52)))
    assert packed[1] == sum(v << (40 * j) for j, v in enumerate(range(52, 60)))
    np.testing.assert_array_equal(layout.unpack(packed, len(values)), values)


def test_pack__refuses_values_it_cannot_pack_faithfully():
    counts = SlotLayout(2048, value_bits=32)
    with pytest.raises(PrivacyError, match="declared 32-bit"):
        counts.pack(np.array([1 << 32], dtype=np.uint64))
    with pytest.raises(PrivacyError, match="negative"):
        counts.pack(np.array([3, -1], dtype=np.int64))
    with pytest.raises(PrivacyError, match="integer values"):
        SlotLayout(2048).pack(np.array([0.5]))
    with pytest.raises(PrivacyError, match="1-D"):
        SlotLayout(2048).pack(np.zeros((2, 2), dtype=np.uint64))


def test_unpack__refuses_overflowing_plaintexts_and_dirty_padding():
    layout = SlotLayout(2048)
    with pytest.raises(PrivacyError, match="exceeds the slot layout"):
        layout.unpack([1 << (28 * 72)], 28)
    with pytest.raises(PrivacyError, match="padding slots"):
        layout.unpack([1 << 72], 1)
    with pytest.raises(PrivacyError, match="cannot hold exactly"):
        layout.unpack([0, 0], 5)


def test_default_window_bits__fits_the_table_budget():
    # ceil(1024 / 11) = 94 rows of 2^11 entries of 512 bytes = 98.6 MB; 12 bits would be 180 MB
    assert default_window_bits(2048) == 11
    # ceil(1536 / 10) = 154 rows of 2^10 entries of 768 bytes = 121 MB; 11 bits would be 220 MB
    assert default_window_bits(3072) == 10


# --- encryption, summation, decryption ------------------------------------------------------------


def test_encrypt__three_party_uint64_sum_wraps_mod_2_64(keys, encryptor, decryptor):
    public_key, _ = keys
    rng = np.random.default_rng(11)
    layout = SlotLayout.for_key(public_key)
    parties = [rng.integers(0, U64_MAX, size=61, dtype=np.uint64, endpoint=True) for _ in range(3)]
    parties[0][:3] = U64_MAX  # force wrap-around in the first slots
    parties[1][:3] = U64_MAX
    parties[2][:3] = [1, 2, U64_MAX]
    encrypted = [encryptor.encrypt(v, layout) for v in parties]
    assert [len(e.ciphertexts) for e in encrypted] == [3, 3, 3]
    total = decryptor.decrypt(_sum(encrypted, public_key))
    expected = parties[0] + parties[1] + parties[2]  # numpy uint64 wraps mod 2^64
    assert total.dtype == np.uint64
    np.testing.assert_array_equal(total, expected)
    assert total[0] == (2 * int(U64_MAX) + 1) % (1 << 64)
    for v, e in zip(parties, encrypted, strict=True):
        np.testing.assert_array_equal(decryptor.decrypt(e), v)


def test_encrypt__negative_fixed_point_values_sum_through_encode_fixed(keys, encryptor, decryptor):
    public_key, _ = keys
    layout = SlotLayout.for_key(public_key)
    sites = [np.array([-1.5, 2.25, -1e6, 0.0, 3.0]), np.array([0.5, -4.0, 2e6, -0.0, -7.125]), np.array([-2.0] * 5)]
    encrypted = [encryptor.encrypt(encode_fixed(x), layout) for x in sites]
    total = decode_fixed(decryptor.decrypt(_sum(encrypted, public_key)))
    np.testing.assert_array_equal(total, [-3.0, -3.75, 999998.0, -2.0, -6.125])


def test_encrypt__count_slots_give_exact_sums_beyond_32_bits(keys, encryptor, decryptor):
    public_key, _ = keys
    layout = SlotLayout.for_key(public_key, value_bits=32)
    rng = np.random.default_rng(5)
    parties = [rng.integers(0, 1 << 32, size=120, dtype=np.int64) for _ in range(3)]
    for p in parties:
        p[:2] = (1 << 32) - 1
    encrypted = [encryptor.encrypt(v, layout) for v in parties]
    assert len(encrypted[0].ciphertexts) == 3  # 51 counts per ciphertext
    total = decryptor.decrypt(_sum(encrypted, public_key))
    expected = sum(p.astype(np.uint64) for p in parties)
    np.testing.assert_array_equal(total, expected)
    assert int(total[0]) == 3 * ((1 << 32) - 1)


def test_encrypt__empty_vector(keys, encryptor, decryptor):
    layout = SlotLayout.for_key(keys[0])
    encrypted = encryptor.encrypt(np.zeros(0, dtype=np.uint64), layout)
    assert encrypted.ciphertexts == ()
    assert decryptor.decrypt(encrypted).shape == (0,)


def test_encrypt__same_plaintext_twice_gives_different_ciphertexts(encryptor):
    a, b = encryptor.encrypt_plaintexts([42, 42])
    assert a != b


def test_encrypt__obfuscation_exponents_come_from_secrets(keys, monkeypatch):
    public_key, private_key = keys
    with PaillierEncryptor(public_key, backend="inline", window_bits=WINDOW) as enc:
        monkeypatch.setattr(paillier_crypto.secrets, "randbits", lambda k: (1 << (k - 1)) + 12345)
        a, b = enc.encrypt_plaintexts([7, 7])
    assert a == b  # the only randomness per ciphertext is secrets.randbits
    assert private_key.raw_decrypt(int(a)) == 7


def test_encrypt_plaintexts__refuses_plaintexts_outside_0_n(keys, encryptor):
    with pytest.raises(PrivacyError, match=r"outside \[0, n\)"):
        encryptor.encrypt_plaintexts([keys[0].n])
    with pytest.raises(PrivacyError, match=r"outside \[0, n\)"):
        encryptor.encrypt_plaintexts([-1])


def test_encrypt__refuses_a_layout_for_another_key_size(keys, encryptor):
    with pytest.raises(PrivacyError, match="3072-bit modulus"):
        encryptor.encrypt(np.zeros(3, dtype=np.uint64), SlotLayout(3072))


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_encryptor__parallel_backends_decrypt_to_the_same_sums(keys, decryptor, backend):
    public_key, _ = keys
    layout = SlotLayout.for_key(public_key)
    rng = np.random.default_rng(3)
    values = rng.integers(0, U64_MAX, size=28 * 9 + 5, dtype=np.uint64, endpoint=True)
    with PaillierEncryptor(public_key, backend=backend, workers=2, window_bits=WINDOW) as enc:
        encrypted = enc.encrypt(values, layout)
        again = enc.encrypt(values, layout)
    assert len(encrypted.ciphertexts) == 10
    assert set(encrypted.ciphertexts).isdisjoint(again.ciphertexts)
    np.testing.assert_array_equal(decryptor.decrypt(add_encrypted(encrypted, again, public_key)), values * np.uint64(2))


def test_encryptor__closed_encryptor_refuses_work(keys):
    enc = PaillierEncryptor(keys[0], backend="thread", workers=1)
    enc.close()
    with pytest.raises(PrivacyError, match="closed"):
        enc.encrypt_plaintexts([1])


def test_encrypt__3072_bit_key_round_trip(keys3072):
    public_key, private_key = keys3072
    layout = SlotLayout.for_key(public_key)
    rng = np.random.default_rng(9)
    parties = [rng.integers(0, U64_MAX, size=50, dtype=np.uint64, endpoint=True) for _ in range(3)]
    with PaillierEncryptor(public_key, backend="inline", window_bits=WINDOW) as enc:
        encrypted = [enc.encrypt(v, layout) for v in parties]
    assert len(encrypted[0].ciphertexts) == 2  # 42 slots per 3072-bit plaintext
    assert len(encrypted[0].to_bytes()) == 2 * 768
    total = PaillierDecryptor(private_key).decrypt(_sum(encrypted, public_key))
    np.testing.assert_array_equal(total, parties[0] + parties[1] + parties[2])


def test_add_encrypted__full_headroom_of_maximal_values_stays_below_n(keys, encryptor, decryptor):
    # 56 + 8 = 64-bit slots: 32 of them would fill all 2048 bits and a full sum could exceed n;
    # the layout takes (2048 - 1) // 64 = 31, and 256 maximal summands still decrypt exactly.
    public_key, _ = keys
    layout = SlotLayout.for_key(public_key, value_bits=56, headroom_bits=8)
    assert layout.slots == 31
    values = np.full(62, (1 << 56) - 1, dtype=np.uint64)
    one = encryptor.encrypt(values, layout)
    total = one
    for _ in range(255):
        total = add_encrypted(total, one, public_key)
    assert total.summands == 256
    np.testing.assert_array_equal(decryptor.decrypt(total), values * np.uint64(256))


def test_add_encrypted__refuses_more_summands_than_the_headroom(keys, encryptor, decryptor):
    public_key, _ = keys
    layout = SlotLayout.for_key(public_key, value_bits=32, headroom_bits=1)
    one = encryptor.encrypt(np.array([(1 << 32) - 1] * 4, dtype=np.uint64), layout)
    two = add_encrypted(one, one, public_key)
    np.testing.assert_array_equal(decryptor.decrypt(two), [(1 << 33) - 2] * 4)
    with pytest.raises(PrivacyError, match="exceeds the 1-bit slot headroom"):
        add_encrypted(two, one, public_key)
    with pytest.raises(PrivacyError, match="different slot layouts or lengths"):
        add_encrypted(one, encryptor.encrypt(np.array([1], dtype=np.uint64), layout), public_key)


def test_decrypt__refuses_a_vector_claiming_too_many_summands(keys, encryptor, decryptor):
    layout = SlotLayout.for_key(keys[0], headroom_bits=1)
    one = encryptor.encrypt(np.array([5], dtype=np.uint64), layout)
    forged = EncryptedVector(one.ciphertexts, 1, layout, summands=3)
    with pytest.raises(PrivacyError, match="3 summands exceed"):
        decryptor.decrypt(forged)


def test_decrypt_plaintexts__crt_matches_phe_raw_decrypt(keys, decryptor):
    public_key, private_key = keys
    plaintexts = [0, 1, public_key.n - 1, 123456789 << 1500]
    ciphertexts = [public_key.raw_encrypt(m) for m in plaintexts]
    assert [int(m) for m in decryptor.decrypt_plaintexts(ciphertexts)] == plaintexts
    single = PaillierDecryptor(private_key, threads=1)
    assert [int(m) for m in single.decrypt_plaintexts(ciphertexts)] == plaintexts


# --- interoperability with phe --------------------------------------------------------------------


def test_phe_raw_decrypt__decrypts_our_packed_ciphertext(keys, encryptor):
    public_key, private_key = keys
    layout = SlotLayout.for_key(public_key)
    values = np.random.default_rng(2).integers(0, U64_MAX, size=28, dtype=np.uint64, endpoint=True)
    (ciphertext,) = encryptor.encrypt(values, layout).ciphertexts
    (packed,) = layout.pack(values)
    assert private_key.raw_decrypt(int(ciphertext)) == packed


def test_add_ciphertexts__adds_phe_raw_encrypt_ciphertexts_to_ours(keys, encryptor, decryptor):
    public_key, private_key = keys
    layout = SlotLayout.for_key(public_key)
    ours = np.array([1, U64_MAX, 1 << 40], dtype=np.uint64)
    theirs = np.array([2, 5, 1 << 41], dtype=np.uint64)
    (ct_ours,) = encryptor.encrypt(ours, layout).ciphertexts
    (packed_theirs,) = layout.pack(theirs)
    ct_theirs = public_key.raw_encrypt(packed_theirs)  # a Python int from phe
    (total,) = add_ciphertexts([ct_theirs], [ct_ours], public_key)
    np.testing.assert_array_equal(layout.unpack(decryptor.decrypt_plaintexts([total]), 3), ours + theirs)
    np.testing.assert_array_equal(layout.unpack([private_key.raw_decrypt(int(total))], 3), ours + theirs)


def test_add_ciphertexts__refuses_vectors_of_different_lengths(keys):
    with pytest.raises(PrivacyError, match="lengths 2 and 1"):
        add_ciphertexts([1, 2], [3], keys[0])


# --- ciphertext bytes -----------------------------------------------------------------------------


def test_ciphertexts_to_bytes__fixed_width_big_endian_round_trip(keys, encryptor):
    public_key, _ = keys
    ciphertexts = encryptor.encrypt_plaintexts([0, 1, 2]) + [1]  # 1 encodes in a single low byte
    data = ciphertexts_to_bytes(ciphertexts, public_key)
    assert ciphertext_bytes(public_key) == 512
    assert len(data) == 4 * 512
    assert data[-512:] == bytes(511) + b"\x01"
    assert ciphertexts_from_bytes(data, public_key) == ciphertexts


def test_ciphertexts_from_bytes__rejects_malformed_bytes(keys):
    public_key, _ = keys
    good = ciphertexts_to_bytes([5, 7], public_key)
    with pytest.raises(PrivacyError, match="not a multiple of the 512-byte"):
        ciphertexts_from_bytes(good[:-1], public_key)
    with pytest.raises(PrivacyError, match=r"ciphertext 1 is not in \[1, n²\)"):
        ciphertexts_from_bytes(good[:512] + b"\xff" * 512, public_key)
    with pytest.raises(PrivacyError, match=r"ciphertext 1 is not in \[1, n²\)"):
        ciphertexts_from_bytes(good[:512] + public_key.nsquare.to_bytes(512, "big"), public_key)
    with pytest.raises(PrivacyError, match=r"ciphertext 0 is not in \[1, n²\)"):
        ciphertexts_from_bytes(bytes(512), public_key)


def test_ciphertexts_to_bytes__refuses_values_wider_than_the_width(keys):
    with pytest.raises(PrivacyError, match="does not fit 512 bytes"):
        ciphertexts_to_bytes([1 << 4096], keys[0])


def test_encrypted_vector_from_bytes__round_trip_and_count_check(keys, encryptor, decryptor):
    public_key, _ = keys
    layout = SlotLayout.for_key(public_key)
    values = np.arange(30, dtype=np.uint64)
    data = encryptor.encrypt(values, layout).to_bytes()
    assert len(data) == 2 * 512
    parsed = EncryptedVector.from_bytes(data, public_key, layout=layout, length=30)
    np.testing.assert_array_equal(decryptor.decrypt(parsed), values)
    with pytest.raises(PrivacyError, match="2 ciphertexts cannot hold exactly 70 values"):
        EncryptedVector.from_bytes(data, public_key, layout=layout, length=70)
