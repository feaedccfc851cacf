#!/usr/bin/env python3
"""Benchmark: fedstat's packed Paillier against plain ``phe`` 1.5, in one run on this machine.

Times ``phe`` encryption, decryption and addition on a small sample (one value per
ciphertext), then fedstat's packed encryption of three parties' vectors of ``--values`` values
with each backend (process pool with fixed-base tables, threads of ``powmod_exp_list``, inline
on one core), the homomorphic 3-party sum and its CRT decryption, checks the decrypted sum
against numpy, and prints a side-by-side table with the speed-up over ``phe`` and whether
encryption reaches 100,000 values/s.

Rates are wall-clock. The ``busy`` column is the share of the machine's CPU that *other*
processes used while a row was timed (from /proc); rates are only comparable when it is near 0.

    python scripts/bench_paillier.py                                  # 2048-bit, 64-bit ring values
    python scripts/bench_paillier.py --value-bits 32                  # 32-bit counts
    python scripts/bench_paillier.py --bits 3072 --values 50000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.privacy.paillier_crypto import (
    PaillierDecryptor,
    PaillierEncryptor,
    SlotLayout,
    add_encrypted,
    generate_keypair,
)

TARGET_VALUES_PER_S = 100_000


@dataclass(frozen=True)
class Row:
    """One line of the table: an operation by one method, as a rate.

    Attributes
    ----------
    operation : ``"encrypt"``, ``"add"`` or ``"decrypt"``
    method : who did it, and how
    values : values processed (slots, for packed ciphertexts)
    ciphertexts : ciphertexts processed
    seconds : wall-clock time
    busy : share of the machine's CPU used by other processes meanwhile (None if unknown)
    """

    operation: str
    method: str
    values: int
    ciphertexts: int
    seconds: float
    busy: float | None

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds

    @property
    def ciphertexts_per_s(self) -> float:
        return self.ciphertexts / self.seconds


def _machine_busy_s() -> float | None:
    """CPU-seconds all processes have used since boot (user..steal of /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_cpu_s() -> float:
    """CPU-seconds used by this process and its live children (the encryption workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    for child in multiprocessing.active_children():
        try:
            stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """Run ``fn``; return (its result, wall seconds, other processes' share of the machine)."""
    busy0, own0, t0 = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    busy1, own1 = _machine_busy_s(), _own_cpu_s()
    if busy0 is None or busy1 is None:
        return result, seconds, None
    others = (busy1 - busy0) - (own1 - own0)
    return result, seconds, min(1.0, max(0.0, others / (seconds * (os.cpu_count() or 1))))


def _values(rng: np.random.Generator, n: int, value_bits: int) -> np.ndarray:
    """Random values of the declared width; 64-bit values span the whole ring, so sums wrap."""
    if value_bits == 64:
        return rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    return rng.integers(0, 1 << value_bits, size=n, dtype=np.uint64)


def bench_phe(public_key, private_key, sample: np.ndarray) -> list[Row]:
    """Plain phe: one value per ciphertext, r^n obfuscation, default decryption."""
    values = [int(v) for v in sample]
    k = len(values)
    encrypted, t_enc, b_enc = timed(lambda: [public_key.encrypt(v) for v in values])
    sums, t_add, b_add = timed(lambda: [a + b for a, b in zip(encrypted, encrypted[::-1], strict=True)])
    decrypted, t_dec, b_dec = timed(lambda: [private_key.decrypt(e) for e in encrypted])
    assert decrypted == values, "phe round trip failed"
    assert private_key.decrypt(sums[0]) == values[0] + values[-1], "phe addition failed"
    return [
        Row("encrypt", "phe 1.5 (1 value/ciphertext)", k, k, t_enc, b_enc),
        Row("add", "phe 1.5 EncryptedNumber +", k, k, t_add, b_add),
        Row("decrypt", "phe 1.5 decrypt", k, k, t_dec, b_dec),
    ]


def bench_backend(
    public_key, layout: SlotLayout, parties: list[np.ndarray], backend: str, workers: int, window_bits: int | None
):
    """Encrypt every party's vector with one backend; returns (setup seconds, row, encrypted vectors)."""
    t0 = time.perf_counter()
    with PaillierEncryptor(public_key, backend=backend, workers=workers, window_bits=window_bits) as encryptor:
        setup = time.perf_counter() - t0
        encrypted, seconds, busy = timed(lambda: [encryptor.encrypt(v, layout) for v in parties])
    label = {
        "process": f"fedstat processes x{workers} (fixed-base table, w={encryptor.window_bits})",
        "thread": f"fedstat threads x{workers} (powmod_exp_list, no table)",
        "inline": f"fedstat inline x1 (fixed-base table, w={encryptor.window_bits})",
    }[backend]
    n_values = sum(len(v) for v in parties)
    n_ct = sum(len(e.ciphertexts) for e in encrypted)
    return setup, Row("encrypt", label, n_values, n_ct, seconds, busy), encrypted


def _busy_text(busy: float | None) -> str:
    return "?" if busy is None else f"{100 * busy:.0f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, choices=(2048, 3072), default=2048, help="modulus size")
    ap.add_argument("--values", type=int, default=200_000, help="values per party (3 parties)")
    ap.add_argument("--value-bits", type=int, choices=(64, 32), default=64, help="64: ring elements; 32: counts")
    ap.add_argument("--headroom-bits", type=int, default=8, help="slot headroom (2^h summands)")
    ap.add_argument("--threads", type=int, default=2, help="worker processes / threads (default 2 = cores here)")
    ap.add_argument("--window-bits", type=int, default=None, help="fixed-base window (default: by table budget)")
    ap.add_argument("--phe-sample", type=int, default=200, help="values for the plain phe baseline")
    ap.add_argument("--side-sample", type=int, default=20_000, help="values per party for inline/thread backends")
    ap.add_argument("--seed", type=int, default=7, help="seed of the test values only (never of the crypto)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    public_key, private_key = generate_keypair(args.bits)
    t_keygen = time.perf_counter() - t0
    layout = SlotLayout.for_key(public_key, value_bits=args.value_bits, headroom_bits=args.headroom_bits)
    parties = [_values(rng, args.values, args.value_bits) for _ in range(3)]
    print(
        f"Paillier {args.bits}-bit (keygen {t_keygen:.2f} s); {args.value_bits}-bit values + {args.headroom_bits} "
        f"headroom bits = {layout.slot_bits}-bit slots, {layout.slots} per ciphertext; {os.cpu_count()} cores",
        flush=True,
    )

    rows = bench_phe(public_key, private_key, parties[0][: args.phe_sample])
    phe_rate = {r.operation: r.values_per_s for r in rows}
    print(f"phe baseline: {rows[0].values_per_s:.0f} values/s encryption", flush=True)

    side = [v[: args.side_sample] for v in parties]
    setups = {}
    for backend, data in (("inline", side), ("thread", side), ("process", parties)):
        setups[backend], row, encrypted = bench_backend(
            public_key, layout, data, backend, args.threads, args.window_bits
        )
        rows.append(row)
        print(f"{backend}: {row.values_per_s:,.0f} values/s (setup {setups[backend]:.2f} s)", flush=True)
    main_row = rows[-1]

    total, t_add, b_add = timed(
        lambda: add_encrypted(add_encrypted(encrypted[0], encrypted[1], public_key), encrypted[2], public_key)
    )
    n_ct = len(total.ciphertexts)
    rows.append(Row("add", "fedstat add_encrypted (3 parties)", 2 * args.values, 2 * n_ct, t_add, b_add))

    decryptor = PaillierDecryptor(private_key, threads=args.threads)
    decrypted, t_dec, b_dec = timed(lambda: decryptor.decrypt(total))
    rows.append(Row("decrypt", f"fedstat CRT, threads x{args.threads}", args.values, n_ct, t_dec, b_dec))
    expected = parties[0] + parties[1] + parties[2]  # uint64 arithmetic wraps mod 2^64, as the ring does
    correct = bool(np.array_equal(decrypted, expected))

    print()
    print(f"{'operation':<9} {'method':<56} {'values/s':>12} {'ciphertexts/s':>14} {'vs phe':>8} {'busy':>5}")
    for r in rows:
        ratio = r.values_per_s / phe_rate[r.operation]
        print(
            f"{r.operation:<9} {r.method:<56} {r.values_per_s:>12,.0f} {r.ciphertexts_per_s:>14,.0f} "
            f"{ratio:>7,.0f}x {_busy_text(r.busy):>5}"
        )
    print()
    setup_text = ", ".join(f"{b} {s:.2f} s" for b, s in setups.items())
    print(f"encryptor setup (spawn + table): {setup_text}")
    kind = "ring sum mod 2^64" if args.value_bits == 64 else "exact count sum"
    print(f"3-party {kind} of {args.values:,} values decrypted correctly: {'yes' if correct else 'NO'}")
    met = main_row.values_per_s >= TARGET_VALUES_PER_S
    print(
        f"target >= {TARGET_VALUES_PER_S:,} values/s encryption ({args.bits}-bit, {args.value_bits}-bit values): "
        f"{'MET' if met else 'NOT MET'} ({main_row.values_per_s:,.0f} values/s, "
        f"{main_row.values_per_s / phe_rate['encrypt']:,.0f}x phe)"
    )
    if main_row.busy is not None and main_row.busy > 0.05:
        print(
            f"note: other processes used {_busy_text(main_row.busy)} of the machine while it was measured; "
            "rerun on an idle machine for a fair rate"
        )
    print(f"total {time.perf_counter() - t_start:.1f} s")
    if not correct:
        raise SystemExit("decrypted 3-party sum is wrong")


if __name__ == "__main__":
    main()
