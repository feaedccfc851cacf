"""Conversions between fedstat's dataclasses and the wire messages (``fedstat.wire``).

The daemons and the analyst client use these; the numeric core never sees protobuf.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from fedstat.data.variants import SitePlan, VariantTable
from fedstat.errors import ProtocolError, shown
from fedstat.jobs import JobSpec
from fedstat.privacy.base import ProtectedChunk
from fedstat.privacy.contribution import Contribution
from fedstat.privacy.psi import HASH_BYTES, HashedVariants, SealedShare, as_hashes
from fedstat.privacy.secagg import SignedRoundKey
from fedstat.wire import common_pb2, site_pb2

#: Variants per key or plan chunk: ~40 bytes a variant keeps a chunk near 1 MiB at most.
VARIANTS_PER_CHUNK = 25_000


def spec_to_pb(spec: JobSpec) -> common_pb2.JobSpec:
    return common_pb2.JobSpec(
        analyses=spec.analyses,
        pheno_names=spec.pheno_names,
        covar_names=spec.covar_names,
        privacy=spec.privacy,
        purpose=spec.purpose,
        sites=spec.sites,
        out_name=spec.out_name,
        block_size=spec.block_size,
        dataset=spec.dataset,
        options=dict(spec.options),
    )


def spec_from_pb(pb: common_pb2.JobSpec) -> JobSpec:
    return JobSpec(
        analyses=tuple(pb.analyses),
        pheno_names=tuple(pb.pheno_names),
        covar_names=tuple(pb.covar_names),
        privacy=pb.privacy or "secagg",  # an unset field means the default mode, never a weaker one
        purpose=pb.purpose,
        sites=tuple(pb.sites),
        out_name=pb.out_name or "fedstat",
        block_size=pb.block_size,
        dataset=pb.dataset,
        options=dict(pb.options),
    )


def chunk_to_pb(c: ProtectedChunk) -> common_pb2.SumsChunk:
    return common_pb2.SumsChunk(
        name=c.name,
        offset=c.offset,
        length=c.length,
        total_length=c.total_length,
        encoding=c.encoding,
        data=c.data,
        shape=c.shape,
    )


def chunk_from_pb(pb: common_pb2.SumsChunk) -> ProtectedChunk:
    return ProtectedChunk(
        name=pb.name,
        offset=pb.offset,
        length=pb.length,
        total_length=pb.total_length,
        encoding=pb.encoding,
        data=pb.data,
        shape=tuple(pb.shape),
    )


def contribution_to_pb(c: Contribution) -> site_pb2.Contribution:
    return site_pb2.Contribution(**vars(c))  # the same field names


def contribution_from_pb(pb: site_pb2.Contribution) -> Contribution:
    fields = {f.name: getattr(pb, f.name) for f in dataclasses.fields(Contribution)}
    return Contribution(**{**fields, "participants": tuple(pb.participants)})


#: Most elements one coordinator-sent array or plan may declare (2^28: 2 GiB of int64), so a
#: malformed or hostile message cannot make a site allocate without bound.
MAX_DECLARED_ELEMENTS = 1 << 28


def _declared(what: str, total: int, limit: int = MAX_DECLARED_ELEMENTS) -> int:
    if not 0 <= total <= limit:
        raise ProtocolError(f"{what} declares {total} elements; at most {limit} are accepted")
    return int(total)


def keys_chunks(
    job_id: str, vt: VariantTable, *, multiallelic: int = 0, non_snv: int = 0, attempt: int = 0
) -> Iterator[site_pb2.KeysChunk]:
    """Split the variant keys a site reveals (the harmonization intersection) into KeysChunk
    messages (always at least one)."""
    n = len(vt)
    for start in range(0, max(n, 1), VARIANTS_PER_CHUNK):
        sl = slice(start, min(n, start + VARIANTS_PER_CHUNK))
        yield site_pb2.KeysChunk(
            job_id=job_id,
            offset=start,
            total=n,
            keys=common_pb2.VariantKeys(
                chrom=[str(x) for x in vt.chrom[sl]],
                pos=vt.pos[sl].tolist(),
                id=[str(x) for x in vt.id[sl]],
                ref=[str(x) for x in vt.ref[sl]],
                alt=[str(x) for x in vt.alt[sl]],
            ),
            multiallelic_skipped=multiallelic if start == 0 else 0,
            non_snv_skipped=non_snv if start == 0 else 0,
            attempt=attempt,
            revealed=True,
        )


#: Keyed hashes per chunk (16 bytes each: 1 MiB).
HASHES_PER_CHUNK = 65_536


def hash_chunks(
    job_id: str,
    attempt: int,
    hashed: HashedVariants,
    *,
    multiallelic: int,
    non_snv: int,
    multiallelic_split: int = 0,
) -> Iterator[site_pb2.KeysChunk]:
    """A site's keyed variant hashes (sorted) as KeysChunk messages, with its file's counts."""
    n = len(hashed.hashes)
    for start, piece in _hash_pieces(hashed.hashes):
        yield site_pb2.KeysChunk(
            job_id=job_id,
            attempt=attempt,
            offset=start,
            total=n,
            hashes=piece,
            multiallelic_skipped=multiallelic if start == 0 else 0,
            non_snv_skipped=non_snv if start == 0 else 0,
            multiallelic_split=multiallelic_split if start == 0 else 0,
            duplicates=hashed.n_duplicate if start == 0 else 0,
        )


def intersection_chunks(job_id: str, attempt: int, hashes: np.ndarray) -> Iterator[site_pb2.HarmonizeIntersection]:
    for start, piece in _hash_pieces(hashes):
        yield site_pb2.HarmonizeIntersection(
            job_id=job_id, attempt=attempt, offset=start, total=len(hashes), hashes=piece
        )


def _hash_pieces(hashes: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) pieces of a hash list of HASHES_PER_CHUNK hashes each (always at least one)."""
    data = np.ascontiguousarray(hashes).tobytes()
    n = len(hashes)
    for start in range(0, max(n, 1), HASHES_PER_CHUNK):
        yield start, data[start * HASH_BYTES : min(n, start + HASHES_PER_CHUNK) * HASH_BYTES]


class HashAssembler:
    """Collects chunked keyed hashes (a site's list at the coordinator, or the intersection at a
    site) into one sorted array; at most ``max_hashes`` are accepted."""

    def __init__(self, what: str, *, max_hashes: int = MAX_DECLARED_ELEMENTS) -> None:
        self.what, self.max_hashes = what, max_hashes
        self.total: int | None = None
        self.parts: dict[int, np.ndarray] = {}
        self.received = 0
        self.multiallelic = self.non_snv = self.duplicates = self.multiallelic_split = 0

    def add(self, c: site_pb2.KeysChunk | site_pb2.HarmonizeIntersection) -> bool:
        """Add a chunk; True when every hash arrived."""
        if self.total is None:
            self.total = _declared(self.what, c.total, self.max_hashes)
        if c.total != self.total:
            raise ProtocolError(f"{self.what}: chunks disagree on the number of hashes")
        hashes = as_hashes(c.hashes)
        if c.offset in self.parts or c.offset + len(hashes) > self.total:
            raise ProtocolError(f"{self.what}: a chunk repeats or reaches beyond the declared number of hashes")
        self.parts[c.offset] = hashes
        self.received += len(hashes)
        if isinstance(c, site_pb2.KeysChunk):
            self.multiallelic += c.multiallelic_skipped
            self.multiallelic_split += c.multiallelic_split
            self.non_snv += c.non_snv_skipped
            self.duplicates += c.duplicates
        return self.received >= self.total

    def hashes(self) -> np.ndarray:
        arr = np.concatenate([self.parts[o] for o in sorted(self.parts)]) if self.parts else as_hashes(b"")
        if len(arr) > 1 and not np.all(arr[1:] > arr[:-1]):
            raise ProtocolError(f"{self.what}: the hashes are not sorted and distinct")
        return arr


def shares_to_pb(shares: list[SealedShare]) -> list[site_pb2.HarmonizeShare]:
    return [
        site_pb2.HarmonizeShare(sender=s.sender, recipient=s.recipient, nonce=s.nonce, ciphertext=s.ciphertext)
        for s in shares
    ]


def shares_from_pb(shares: Iterable[site_pb2.HarmonizeShare]) -> list[SealedShare]:
    return [SealedShare(sender=s.sender, recipient=s.recipient, nonce=s.nonce, ciphertext=s.ciphertext) for s in shares]


def round_key_to_pb(job_id: str, ctx_round: int, attempt: int, k: SignedRoundKey) -> site_pb2.RoundKey:
    return site_pb2.RoundKey(
        job_id=job_id,
        round=ctx_round,
        attempt=attempt,
        site=k.site,
        public_key=k.public_key,
        signature=k.signature,
        certificate=k.certificate,
    )


def round_keys_from_pb(keys: Iterable[site_pb2.RoundKey]) -> list[SignedRoundKey]:
    return [
        SignedRoundKey(site=k.site, public_key=k.public_key, signature=k.signature, certificate=k.certificate)
        for k in keys
    ]


def plan_chunks(job_id: str, plan: SitePlan, *, attempt: int = 0) -> Iterator[site_pb2.VariantPlanChunk]:
    n = len(plan.local_index)
    for start in range(0, max(n, 1), VARIANTS_PER_CHUNK):
        stop = min(n, start + VARIANTS_PER_CHUNK)
        yield site_pb2.VariantPlanChunk(
            job_id=job_id,
            offset=start,
            total=n,
            local_index=plan.local_index[start:stop].astype("<i8").tobytes(),
            flip=plan.flip[start:stop].astype(np.uint8).tobytes(),
            attempt=attempt,
        )


class KeysAssembler:
    """Collects one site's revealed KeysChunk messages into a VariantTable."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.parts: dict[int, common_pb2.VariantKeys] = {}
        self.received = 0
        self.multiallelic = 0
        self.multiallelic_split = 0
        self.non_snv = 0

    def add(self, c: site_pb2.KeysChunk) -> bool:
        """Add a chunk; True when the table is complete."""
        if self.total is not None and c.total != self.total:
            raise ProtocolError("revealed variant key chunks disagree on the number of variants")
        self.total = c.total
        self.parts[c.offset] = c.keys
        self.received += len(c.keys.pos)
        self.multiallelic += c.multiallelic_skipped
        self.multiallelic_split += c.multiallelic_split
        self.non_snv += c.non_snv_skipped
        return self.received >= self.total

    def table(self) -> VariantTable:
        parts = [self.parts[off] for off in sorted(self.parts)]  # in offset order
        return VariantTable.from_lists(
            chrom=[v for p in parts for v in p.chrom],
            pos=[v for p in parts for v in p.pos],
            id=[v for p in parts for v in p.id],
            ref=[v for p in parts for v in p.ref],
            alt=[v for p in parts for v in p.alt],
        )


class PlanAssembler:
    """Collects VariantPlanChunk messages into a SitePlan at the site; a malformed chunk is a
    ProtocolError naming what was wrong."""

    def __init__(self, *, max_variants: int = MAX_DECLARED_ELEMENTS) -> None:
        self.total: int | None = None
        self.index: np.ndarray | None = None
        self.flip: np.ndarray | None = None
        self.received = 0
        self.max_variants = max_variants

    def add(self, c: site_pb2.VariantPlanChunk) -> bool:
        if self.index is None:
            self.total = _declared("the variant plan", c.total, self.max_variants)
            self.index = np.zeros(self.total, dtype=np.int64)
            self.flip = np.zeros(self.total, dtype=bool)
        assert self.flip is not None
        if c.total != self.total:
            raise ProtocolError("variant plan chunks disagree on the plan's length")
        if len(c.local_index) % 8 or len(c.flip) * 8 != len(c.local_index):
            raise ProtocolError("a variant plan chunk has malformed index or flip bytes")
        idx = np.frombuffer(c.local_index, dtype="<i8")
        if c.offset + len(idx) > self.total:
            raise ProtocolError("a variant plan chunk reaches beyond the plan's length")
        self.index[c.offset : c.offset + len(idx)] = idx
        self.flip[c.offset : c.offset + len(idx)] = np.frombuffer(c.flip, dtype=np.uint8).astype(bool)
        self.received += len(idx)
        return self.received >= (self.total or 0)

    def plan(self) -> SitePlan:
        assert self.index is not None and self.flip is not None
        return SitePlan(local_index=self.index, flip=self.flip)


def round_data_messages(
    job_id: str, round_no: int, attempt: int, arrays: dict[str, np.ndarray]
) -> Iterator[site_pb2.RoundData]:
    """Chunk the coordinator's global arrays for a round (public to the sites: no protection)."""
    from fedstat.privacy.base import split_chunks  # noqa: PLC0415

    for name, arr in arrays.items():
        arr = np.asarray(arr)
        enc, dtype = ("i64", "<i8") if np.issubdtype(arr.dtype, np.integer) else ("f64", "<f8")
        flat = np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
        pieces = list(split_chunks(flat)) or [(0, flat)]
        for rel, piece in pieces:
            yield site_pb2.RoundData(
                job_id=job_id,
                round=round_no,
                attempt=attempt,
                chunk=common_pb2.SumsChunk(
                    name=name,
                    offset=rel,
                    length=len(piece),
                    total_length=flat.size,
                    encoding=enc,
                    data=piece.tobytes(),
                    shape=arr.shape,
                ),
            )


def round_digest(computation: str, params: Mapping[str, str], arrays: Mapping[str, np.ndarray], subset: bool) -> str:
    """SHA-256 of what a round computes: its computation, parameters and the coordinator's arrays
    (names, encodings, shapes and values, as :func:`round_data_messages` sends them).

    The coordinator puts it in each round-key request; each site signs it with its round key and
    recomputes it from the round it is asked to compute, so a coordinator that sends one site other
    parameters or arrays than the rest makes the key exchange fail: no sum is unmasked.
    """
    h = hashlib.sha256()
    h.update(json.dumps([computation, sorted(params.items()), bool(subset)], separators=(",", ":")).encode())
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        enc, dtype = ("i64", "<i8") if np.issubdtype(arr.dtype, np.integer) else ("f64", "<f8")
        flat = np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
        h.update(json.dumps([name, enc, list(arr.shape)]).encode())
        h.update(flat.tobytes())
    return h.hexdigest()


#: Most distinct arrays one round's coordinator data may hold when no limits are given.
MAX_ROUND_ARRAYS = 8


class RoundDataAssembler:
    """Collects RoundData chunks at a site into full arrays.

    ``limits`` (:func:`fedstat.bounds.round_input_limits`): the arrays the job's rounds may carry,
    each with its largest shape (anything with a ``check(name, shape, total)`` raising
    ProtocolError); any other array, or a larger one, is refused before anything is allocated.
    Without limits, at most :data:`MAX_ROUND_ARRAYS` arrays of :data:`MAX_DECLARED_ELEMENTS`
    elements each.
    """

    def __init__(self, limits: Mapping[str, Any] | None = None) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.received: dict[str, int] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.limits = dict(limits) if limits is not None else None

    def _check(self, c: common_pb2.SumsChunk) -> int:
        """The elements of a new array ``c`` starts; ProtocolError for an array no round carries,
        or one larger than the limits."""
        name = shown(c.name)
        if self.limits is None:
            if len(self.arrays) >= MAX_ROUND_ARRAYS:
                raise ProtocolError(f"the coordinator sent more than {MAX_ROUND_ARRAYS} round arrays for one round")
            return _declared(f"round array {name}", c.total_length)
        if c.name not in self.limits:
            raise ProtocolError(
                f"the coordinator sent round array {name}, which no round of this job carries "
                f"(at most: {', '.join(sorted(self.limits))}); refused before allocating anything"
            )
        self.limits[c.name].check(name, tuple(c.shape), int(c.total_length))
        return int(c.total_length)

    def add(self, c: common_pb2.SumsChunk) -> None:
        name = shown(c.name)
        dtype = {"i64": np.dtype("<i8"), "f64": np.dtype("<f8")}.get(c.encoding)
        if dtype is None:
            raise ProtocolError(f"round array {name} has unknown encoding {shown(c.encoding)}")
        flat = self.arrays.get(c.name)
        if flat is None:
            total = self._check(c)
            if int(np.prod(c.shape, dtype=np.int64)) != total and len(c.shape):
                raise ProtocolError(f"round array {name}: its shape does not match its length")
            flat = self.arrays[c.name] = np.zeros(total, dtype=dtype.newbyteorder("="))
            self.received[c.name] = 0
        if len(c.data) % dtype.itemsize:
            raise ProtocolError(f"round array {name}: chunk bytes are not whole values")
        values = np.frombuffer(c.data, dtype=dtype)
        if c.offset < 0 or c.offset + len(values) > flat.size:
            raise ProtocolError(f"round array {name}: chunk beyond its length")
        flat[c.offset : c.offset + len(values)] = values
        self.received[c.name] += len(values)
        self._shapes.setdefault(c.name, tuple(c.shape) or (c.total_length,))  # the first chunk's, as checked

    def complete(self, names: list[str]) -> bool:
        return all(n in self.arrays and self.received[n] == self.arrays[n].size for n in names)

    def result(self) -> dict[str, np.ndarray]:
        return {n: a.reshape(self._shapes[n]) for n, a in self.arrays.items()}
