"""Privacy mode ``none``: sums travel in plaintext inside mutual TLS.

The coordinator sees each site's per-variant sums (never individual genotypes). Integer sums
travel as exact int64, real sums as float64. Sites may refuse this mode in their policy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fedstat.errors import ProtocolError
from fedstat.privacy.base import (
    Aggregator,
    PlannedArray,
    PrivacyMode,
    ProtectedChunk,
    Protector,
    RoundContext,
    split_chunks,
)

_DTYPES = {"i64": np.dtype("<i8"), "f64": np.dtype("<f8")}


class _PlainProtector(Protector):
    def protect(
        self, name: str, offset: int, total_length: int, values: np.ndarray, shape: tuple[int, ...] = ()
    ) -> Iterator[ProtectedChunk]:
        if np.issubdtype(values.dtype, np.integer):
            enc, arr = "i64", values.astype("<i8", copy=False)
        else:
            enc, arr = "f64", values.astype("<f8", copy=False)
        for rel, piece in split_chunks(arr):
            yield ProtectedChunk(
                name=name,
                offset=offset + rel,
                length=len(piece),
                total_length=total_length,
                encoding=enc,
                data=piece.tobytes(),
                shape=shape,
            )


class _PlainAggregator(Aggregator):
    encodings = {True: "i64", False: "f64"}

    def __init__(self, ctx: RoundContext, expected: Mapping[str, PlannedArray] | None = None):
        super().__init__(ctx, expected)
        self._sums: dict[str, np.ndarray] = {}

    def _accumulate(self, site: str, chunk: ProtectedChunk) -> None:
        dtype = _DTYPES.get(chunk.encoding)
        if dtype is None:
            raise ProtocolError(f"site {site}: encoding {chunk.encoding!r} is not valid in privacy mode none")
        if len(chunk.data) != chunk.length * dtype.itemsize:
            raise ProtocolError(
                f"site {site}: chunk of {chunk.name!r} has {len(chunk.data)} bytes for {chunk.length} elements"
            )
        values = np.frombuffer(chunk.data, dtype=dtype)
        total = self._sums.get(chunk.name)
        if total is None:
            total = self._sums[chunk.name] = np.zeros(chunk.total_length, dtype=dtype.newbyteorder("="))
        elif total.dtype.kind != dtype.kind:
            raise ProtocolError(f"site {site}: array {chunk.name!r} mixes encodings")
        total[chunk.offset : chunk.offset + chunk.length] += values

    def _totals(self) -> dict[str, np.ndarray]:
        return dict(self._sums)


class NoneMode(PrivacyMode):
    name = "none"

    def protector(self, ctx: RoundContext, site: str, keys: Any = None, *, noise: Any = None) -> Protector:
        return _PlainProtector(ctx, site)

    def aggregator(
        self,
        ctx: RoundContext,
        *,
        options: Mapping[str, str] | None = None,
        decrypt: Any = None,
        expected: Mapping[str, PlannedArray] | None = None,
    ) -> Aggregator:
        return _PlainAggregator(ctx, expected)
