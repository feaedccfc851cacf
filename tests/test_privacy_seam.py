"""The secure-sum seam: chunking, coverage checks, the none mode, fixed-point ring encoding."""

from __future__ import annotations

import numpy as np
import pytest

from fedstat.errors import PrivacyError, ProtocolError
from fedstat.privacy.base import MAX_CHUNK_BYTES, RoundContext, split_chunks
from fedstat.privacy.modes import get_mode

CTX = RoundContext(job_id="j", round=1, attempt=0, participants=("A", "B", "C"))


def _send(mode, site, name, arr, block=7):
    out = []
    for off in range(0, len(arr), block):
        out.extend(mode.protector(CTX, site).protect(name, off, len(arr), arr[off : off + block]))
    return out


def test_none_mode__totals_equal_sum_of_sites_in_any_order():
    rng = np.random.default_rng(1)
    mode = get_mode("none")
    arrays = {s: (rng.integers(0, 1000, 50), rng.normal(size=50)) for s in CTX.participants}
    chunks = [(s, c) for s, (i, f) in arrays.items() for c in _send(mode, s, "n", i) + _send(mode, s, "x", f)]
    rng.shuffle(chunks)
    agg = mode.aggregator(CTX)
    for s, c in chunks:
        agg.add(s, c)
    tot = agg.result()
    np.testing.assert_array_equal(tot["n"], sum(a[0] for a in arrays.values()))
    assert tot["n"].dtype == np.int64
    np.testing.assert_allclose(tot["x"], sum(a[1] for a in arrays.values()), rtol=0, atol=1e-12)


def test_aggregator__incomplete_site_is_an_error():
    mode = get_mode("none")
    agg = mode.aggregator(CTX)
    for s in ("A", "B"):
        for c in _send(mode, s, "n", np.arange(10)):
            agg.add(s, c)
    for c in _send(mode, "C", "n", np.arange(10))[:-1]:
        agg.add("C", c)
    assert not agg.complete("C")
    with pytest.raises(ProtocolError, match="no full sums from C"):
        agg.result()


def test_aggregator__rejects_non_participant_and_overlong_chunks():
    mode = get_mode("none")
    agg = mode.aggregator(CTX)
    (chunk,) = _send(mode, "A", "n", np.arange(5), block=5)
    with pytest.raises(ProtocolError, match="not a participant"):
        agg.add("Z", chunk)
    agg.add("A", chunk)
    with pytest.raises(ProtocolError, match="more than 5"):
        agg.add("A", chunk)


def test_split_chunks__stay_under_the_limit():
    arr = np.zeros(MAX_CHUNK_BYTES // 8 * 2 + 3, dtype=np.int64)
    pieces = list(split_chunks(arr))
    assert [len(p) for _, p in pieces] == [MAX_CHUNK_BYTES // 8, MAX_CHUNK_BYTES // 8, 3]
    assert all(p.nbytes <= MAX_CHUNK_BYTES for _, p in pieces)


def test_get_mode__unknown_mode_lists_available():
    with pytest.raises(PrivacyError, match="available: dp, none, paillier, paillier,dp, secagg"):
        get_mode("magic")
