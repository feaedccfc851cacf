"""The secure-sum seam: how a site's named sum arrays are protected and how totals are recovered.

A privacy mode knows sums, never statistics. Site side, a :class:`Protector` turns a block of a
named array into :class:`ProtectedChunk` objects; coordinator side, an :class:`Aggregator`
accepts every site's chunks (in any order, any interleaving) and returns only the totals.

Every chunk names its array, its offset in the full array and the full length, so a round's
arrays can be produced block by block at the site and combined incrementally at the
coordinator. Chunks stay well under gRPC's 4 MiB message limit (:data:`MAX_CHUNK_BYTES`).
Modes that work in a ring (secure aggregation) encode floats as fixed point (``ring64x2`` in
:mod:`fedstat.privacy.secagg`); the per-round :class:`RoundContext` carries what they need to
derive fresh keys (job, round, attempt, participants).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstat.errors import ProtocolError, shown

#: Largest payload of one chunk: 1 MiB, a quarter of gRPC's default 4 MiB message limit.
MAX_CHUNK_BYTES = 1 << 20
#: Most elements of one array an aggregator built without a round plan accepts (tests of a mode
#: alone; the coordinator always passes the plan, see :class:`Aggregator`).
MAX_UNPLANNED_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class RoundContext:
    """What a privacy mode may depend on: who takes part in which round of which job."""

    job_id: str
    round: int
    attempt: int
    participants: tuple[str, ...]
    round_digest: str = ""  # fedstat.protocol.round_digest: what the round computes (signed with the keys)


@dataclass(frozen=True)
class ProtectedChunk:
    """One protected slice of a named sum array, as it travels on the wire.

    Attributes
    ----------
    name : array name, e.g. ``"hom_ref"``
    offset : index of the first element within the full array
    length : number of elements in this chunk
    total_length : length of the full array
    encoding : how ``data`` is encoded (``"i64"``, ``"f64"``, ``"ring64"``, ...)
    data : the encoded elements, little-endian
    shape : shape of the full array (row-major; its product is ``total_length``); empty for 1-D
    """

    name: str
    offset: int
    length: int
    total_length: int
    encoding: str
    data: bytes
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class PlannedArray:
    """An array a round's plan lets each participant send: its whole shape, and whether it holds
    integer sums (exact encodings) or real ones (fixed-point or float encodings)."""

    shape: tuple[int, ...]
    integer: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Protector(abc.ABC):
    """Site side: protects slices of the site's sum arrays before they leave the site."""

    def __init__(self, ctx: RoundContext, site: str):
        self.ctx, self.site = ctx, site

    @abc.abstractmethod
    def protect(
        self, name: str, offset: int, total_length: int, values: np.ndarray, shape: tuple[int, ...] = ()
    ) -> Iterator[ProtectedChunk]:
        """Yield chunks covering the flat ``values`` (elements ``offset .. offset+len(values)`` of
        an array of ``total_length`` elements whose full shape is ``shape``)."""

    def contribution_digest(self) -> bytes | None:
        """For a mode whose totals a key holder decrypts: the digest of every chunk this protector
        yielded, in order (:class:`fedstat.privacy.contribution.ChunkDigest`), which the site signs
        at the end of the round; None for a mode that needs no such statement."""
        return None


class Aggregator(abc.ABC):
    """Coordinator side: combines every participant's chunks into the totals only.

    ``expected`` is the round's plan of arrays (:func:`fedstat.bounds.round_arrays`): every chunk
    is checked against it (array name, whole shape and length, integer or real encoding, at least
    one element per chunk) before anything is allocated for it, so a site's declared lengths never
    decide the coordinator's memory; a site is complete when it sent every planned element. Without
    a plan (tests of a mode alone) a chunk is checked against the site's earlier chunks and an array
    may declare at most :data:`MAX_UNPLANNED_ELEMENTS` elements.
    """

    #: the chunk encoding of integer sums and of real sums in this mode
    encodings: Mapping[bool, str] = {}

    def __init__(self, ctx: RoundContext, expected: Mapping[str, PlannedArray] | None = None):
        self.ctx = ctx
        self.expected = dict(expected) if expected is not None else None
        self._covered: dict[tuple[str, str], int] = {}
        self._lengths: dict[str, int] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        if self.expected is not None:  # every planned array must arrive in full, from every site
            self._lengths = {n: a.size for n, a in self.expected.items() if a.size}
            self._shapes = {n: a.shape for n, a in self.expected.items()}

    def _check_planned(self, site: str, chunk: ProtectedChunk) -> None:
        """ProtocolError naming the site and array when ``chunk`` is not what the round's plan has."""
        if self.expected is None:
            if not 0 <= chunk.total_length <= MAX_UNPLANNED_ELEMENTS:
                raise ProtocolError(
                    f"site {site}: array {shown(chunk.name)} declares {chunk.total_length} elements; without a "
                    f"round plan at most {MAX_UNPLANNED_ELEMENTS} are accepted"
                )
            return
        r, name = self.ctx.round, shown(chunk.name)
        planned = self.expected.get(chunk.name)
        if planned is None:
            raise ProtocolError(
                f"site {site} sent array {name}, which round {r}'s plan does not have "
                f"(planned: {', '.join(sorted(self.expected)) or 'none'}); refused before allocating anything"
            )
        shape = tuple(chunk.shape) or (chunk.total_length,)
        if shape != planned.shape or chunk.total_length != planned.size:
            raise ProtocolError(
                f"site {site}: array {name} declares shape {shown(shape)} of {chunk.total_length} elements; "
                f"round {r}'s plan has shape {planned.shape} ({planned.size} elements); refused before allocating"
            )
        kind = "integer" if planned.integer else "real"
        if chunk.encoding != self.encodings.get(planned.integer):
            raise ProtocolError(
                f"site {site}: array {name} comes encoded {shown(chunk.encoding)}; round {r}'s plan has {kind} sums, "
                f"encoded {self.encodings.get(planned.integer)!r} in this privacy mode"
            )
        if chunk.length < 1 or chunk.offset < 0:
            raise ProtocolError(
                f"site {site}: a chunk of array {name} carries no element (offset {chunk.offset}, length "
                f"{chunk.length}); each chunk must carry at least one, so a site sends at most {planned.size}"
            )

    def add(self, site: str, chunk: ProtectedChunk) -> None:
        """Accept one chunk from ``site`` (a participant of this round)."""
        if site not in self.ctx.participants:
            raise ProtocolError(f"site {site} is not a participant of round {self.ctx.round}")
        self._check_planned(site, chunk)  # before anything is allocated for it
        known = self._lengths.setdefault(chunk.name, chunk.total_length)
        shape = self._shapes.setdefault(chunk.name, tuple(chunk.shape) or (chunk.total_length,))
        if shape != (tuple(chunk.shape) or (chunk.total_length,)) or int(np.prod(shape)) != known:
            raise ProtocolError(f"site {site}: array {chunk.name!r} has inconsistent shape {tuple(chunk.shape)}")
        if known != chunk.total_length or chunk.offset < 0 or chunk.offset + chunk.length > chunk.total_length:
            raise ProtocolError(
                f"site {site}: chunk of {chunk.name!r} at {chunk.offset}+{chunk.length} does not fit "
                f"an array of length {known}"
            )
        key = (site, chunk.name)
        self._covered[key] = self._covered.get(key, 0) + chunk.length
        if self._covered[key] > chunk.total_length:
            raise ProtocolError(f"site {site} sent more than {chunk.total_length} elements of {chunk.name!r}")
        self._accumulate(site, chunk)

    def complete(self, site: str) -> bool:
        """Whether ``site`` has sent every element of every array seen so far."""
        return all(self._covered.get((site, n), 0) == length for n, length in self._lengths.items())

    def result(self) -> dict[str, np.ndarray]:
        """The totals over all participants; raises if any participant is incomplete."""
        missing = [s for s in self.ctx.participants if not self.complete(s)]
        if missing:
            raise ProtocolError(f"round {self.ctx.round} is incomplete: no full sums from {', '.join(missing)}")
        return {name: total.reshape(self._shapes[name]) for name, total in self._totals().items()}

    @abc.abstractmethod
    def _accumulate(self, site: str, chunk: ProtectedChunk) -> None: ...

    @abc.abstractmethod
    def _totals(self) -> dict[str, np.ndarray]:
        """Flat totals per array name (reshaped by :meth:`result`)."""


class PrivacyMode(abc.ABC):
    """A way to move sums from sites to the coordinator. The modes this version runs are listed in :mod:`fedstat.privacy.modes`."""

    name: str
    #: whether each round attempt starts with a signed key exchange among its participants;
    #: the site then passes ``keys`` (its key pair and the verified peer keys) to :meth:`protector`
    needs_round_keys: bool = False
    #: whether the coordinator never sees one site's sums (then a round needs the consortium's
    #: ``min_sites`` participants, and never fewer than two)
    protects_site_sums: bool = False
    #: whether the protector adds calibrated noise to every array (differential privacy; the site
    #: then passes the round's ``noise`` calibration to :meth:`protector`)
    adds_noise: bool = False
    #: whether sites encrypt under the analyst's public key (job option); the site then passes its
    #: job's encryptor as ``keys``, and the coordinator's aggregator needs ``decrypt``
    needs_public_key: bool = False

    @abc.abstractmethod
    def protector(self, ctx: RoundContext, site: str, keys: Any = None, *, noise: Any = None) -> Protector:
        """The site's protector for one round; a mode that ``adds_noise`` needs ``noise``
        (:class:`fedstat.privacy.dpmode.RoundNoise`) and noises every array it protects."""

    @abc.abstractmethod
    def aggregator(
        self,
        ctx: RoundContext,
        *,
        options: Mapping[str, str] | None = None,
        decrypt: Any = None,
        expected: Mapping[str, PlannedArray] | None = None,
    ) -> Aggregator:
        """The coordinator's combiner for one round; ``options`` are the job's options,
        ``decrypt`` the analyst's decryptor (used by modes that encrypt to the analyst) and
        ``expected`` the round's plan of arrays (see :class:`Aggregator`)."""


def split_chunks(values: np.ndarray, max_bytes: int = MAX_CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (relative offset, slice) pieces of a 1-D array, each at most ``max_bytes``."""
    per = max(1, max_bytes // max(1, values.dtype.itemsize))
    for start in range(0, len(values), per):
        yield start, values[start : start + per]


#: How strongly each mode protects a site's sums (disclosure control's ``weakest_privacy``):
#: plaintext < the coordinator sees only totals < totals carry differential-privacy noise.
STRENGTH = {"none": 0, "secagg": 1, "paillier": 1, "dp": 2, "paillier,dp": 2}
