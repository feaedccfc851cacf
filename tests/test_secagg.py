"""Secure aggregation core: masks cancel, encodings are exact, key tampering is detected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedstat import pki
from fedstat.errors import PrivacyError
from fedstat.privacy.base import RoundContext
from fedstat.privacy.secagg import (
    RoundKeyPair,
    SecAggAggregator,
    SecAggProtector,
    decode_reals,
    encode_reals,
    verify_round_keys,
)

SITES = ("AFR", "EAS", "EUR")


def _exchange(session_pki, ctx: RoundContext):
    """Each site's key pair, signed key, and verified peer keys, as the agents would hold them."""
    ca = (session_pki.ca / "ca.pem").read_bytes()
    pairs = {s: RoundKeyPair() for s in ctx.participants}
    signed = {
        s: pairs[s].signed(
            ctx,
            s,
            signing_key_pem=session_pki.tls(s).key.read_bytes(),
            certificate_pem=session_pki.tls(s).cert.read_bytes(),
        )
        for s in ctx.participants
    }
    return ca, pairs, signed


def _protect_all(session_pki, ctx, arrays):
    ca, pairs, signed = _exchange(session_pki, ctx)
    agg = SecAggAggregator(ctx)
    seen = {}
    for s in ctx.participants:
        peers = verify_round_keys(ctx, list(signed.values()), ca_pem=ca, own=signed[s])
        prot = SecAggProtector(ctx, s, pairs[s], peers)
        for name, values in arrays[s].items():
            # two pieces at odd offsets: masks are addressed by element, not by call
            half = len(values) // 2 + 1
            for off, part in ((0, values[:half]), (half, values[half:])):
                for chunk in prot.protect(name, off, len(values), part):
                    seen.setdefault((s, name), []).append(chunk)
                    agg.add(s, chunk)
    return agg.result(), seen


def test_secagg__totals_equal_plain_sums(session_pki):
    ctx = RoundContext(job_id="j1", round=1, attempt=0, participants=SITES)
    rng = np.random.default_rng(7)
    arrays = {
        s: {"counts": rng.integers(-1000, 10**9, 1001), "xty": rng.normal(0, 1e6, 1001) * rng.random(1001)}
        for s in SITES
    }
    totals, _ = _protect_all(session_pki, ctx, arrays)
    assert totals["counts"].dtype == np.int64
    assert np.array_equal(totals["counts"], sum(arrays[s]["counts"] for s in SITES))
    exact = np.sum([arrays[s]["xty"] for s in SITES], axis=0, dtype=np.longdouble)
    assert np.max(np.abs(totals["xty"] - exact.astype(np.float64)) / np.abs(exact).clip(1e-300)) < 1e-15


def test_secagg__masked_vectors_are_uniform_and_unrelated_to_the_sums(session_pki):
    """What the coordinator receives from one site: bits are fair coins, no correlation with the values."""
    ctx = RoundContext(job_id="j2", round=3, attempt=1, participants=SITES)
    n = 20000
    counts = np.arange(n, dtype=np.int64) % 7  # a highly structured true sum
    arrays = {s: {"counts": counts} for s in SITES}
    _, seen = _protect_all(session_pki, ctx, arrays)
    masked = np.concatenate([np.frombuffer(c.data, dtype="<u8") for c in seen[("EAS", "counts")]])
    assert not np.array_equal(masked, counts.view(np.uint64))
    bits = np.unpackbits(masked.view(np.uint8))
    # 1.28M fair bits: the share of ones is within 6 sd of ½
    assert abs(bits.mean() - 0.5) < 6 * 0.5 / np.sqrt(bits.size)
    top = (masked >> np.uint64(11)).astype(np.float64)  # 53 high bits as a uniform real
    r = np.corrcoef(top, counts)[0, 1]
    assert abs(r) < 6 / np.sqrt(n)


def test_secagg__fresh_masks_per_attempt(session_pki):
    arrays = {s: {"a": np.zeros(64, dtype=np.int64)} for s in SITES}
    masks = []
    for attempt in (0, 1):
        ctx = RoundContext(job_id="j3", round=1, attempt=attempt, participants=SITES)
        _, seen = _protect_all(session_pki, ctx, arrays)
        masks.append(seen[("AFR", "a")][0].data)
    assert masks[0] != masks[1]


def test_encode_reals__two_limbs_carry_each_value_to_2_pow_minus_64():
    x = np.array([0.0, 1.0, -1.0, 1e-12, 123456.789, -7.5e12, 3.0e-5 + 1e-19])
    back = decode_reals(encode_reals(x, 3))
    assert np.max(np.abs(back - x)) <= 2.0**-64
    big = np.abs(x) >= 2.0**-11  # float64's own resolution is coarser there: exact
    assert np.array_equal(back[big], x[big])


def test_encode_reals__overflow_and_non_finite_refused():
    with pytest.raises(PrivacyError, match="fixed-point range"):
        encode_reals(np.array([1e14]), 3)
    with pytest.raises(PrivacyError, match="non-finite"):
        encode_reals(np.array([np.nan]), 3)


def test_verify_round_keys__substituted_key_detected(session_pki):
    ctx = RoundContext(job_id="j4", round=2, attempt=0, participants=SITES)
    ca, pairs, signed = _exchange(session_pki, ctx)
    forged = dataclasses.replace(signed["EUR"], public_key=RoundKeyPair().public_key)
    keys = [signed["AFR"], signed["EAS"], forged]
    with pytest.raises(PrivacyError, match="EUR's round key signature does not verify"):
        verify_round_keys(ctx, keys, ca_pem=ca, own=signed["AFR"])


def test_verify_round_keys__replayed_key_from_another_round_detected(session_pki):
    ctx = RoundContext(job_id="j5", round=2, attempt=0, participants=SITES)
    ca, _, signed = _exchange(session_pki, ctx)
    later = dataclasses.replace(ctx, attempt=1)
    with pytest.raises(PrivacyError, match="does not verify"):
        verify_round_keys(later, list(signed.values()), ca_pem=ca, own=signed["AFR"])


def test_verify_round_keys__coordinator_key_with_its_own_certificate_detected(session_pki):
    """The coordinator signs a key of its own with its (genuine, CA-issued) certificate."""
    ctx = RoundContext(job_id="j6", round=1, attempt=0, participants=SITES)
    ca, _, signed = _exchange(session_pki, ctx)
    mine = RoundKeyPair().signed(
        ctx,
        "EUR",
        signing_key_pem=session_pki.tls("coordinator").key.read_bytes(),
        certificate_pem=session_pki.tls("coordinator").cert.read_bytes(),
    )
    with pytest.raises(PrivacyError, match="is not site EUR's"):
        verify_round_keys(ctx, [signed["AFR"], signed["EAS"], mine], ca_pem=ca, own=signed["AFR"])


def test_verify_round_keys__certificate_from_another_ca_detected(session_pki, tmp_path):
    ctx = RoundContext(job_id="j7", round=1, attempt=0, participants=SITES)
    ca, _, signed = _exchange(session_pki, ctx)
    pki.issue(session_pki.root / "rogue-ca", tmp_path, name="EUR", role="site")
    rogue = RoundKeyPair().signed(
        ctx,
        "EUR",
        signing_key_pem=(tmp_path / "EUR.key").read_bytes(),
        certificate_pem=(tmp_path / "EUR.pem").read_bytes(),
    )
    with pytest.raises(PrivacyError, match="did not issue"):
        verify_round_keys(ctx, [signed["AFR"], signed["EAS"], rogue], ca_pem=ca, own=signed["AFR"])


def test_verify_round_keys__participant_list_mismatch_detected(session_pki):
    ctx = RoundContext(job_id="j8", round=1, attempt=0, participants=SITES)
    ca, _, signed = _exchange(session_pki, ctx)
    with pytest.raises(PrivacyError, match="participants are"):
        verify_round_keys(ctx, [signed["AFR"], signed["EAS"]], ca_pem=ca, own=signed["AFR"])


def test_secagg__a_lone_site_is_never_aggregated():
    ctx = RoundContext(job_id="j9", round=1, attempt=0, participants=("AFR",))
    with pytest.raises(PrivacyError, match="lone"):
        SecAggAggregator(ctx)
