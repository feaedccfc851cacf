"""The site's release ledger: differencing control for exact releases.

Every round a site computes releases sums over some groups of its participants: the job's cohort,
each phenotype's regression cohort (after NA removal), the cases and the controls of ``--assoc``…
Two exact sums over groups that differ by one person reveal that person (Denning's tracker), and
combinations of many releases can isolate a person even when every pair differs by many. The
ledger keeps, per dataset and durably, the partition of the dataset's participants into *atoms*:
the participants that share one membership pattern across every group the site has ever released
sums over, and which atoms each released group covers (the atoms × groups matrix ``M``).

A linear combination ``Σ c_g S(g)`` of released sums weighs every participant of an atom alike, so
it is a combination of atom sums ``w = M c``; it combines the values of the participants of the
atoms where ``w ≠ 0``. A release is allowed when, with it, every nonzero combination weighs at
least ``min_group`` participants. That holds at once when every atom has ``min_group`` members (the
cheap sufficient rule of Chin & Özsoyoğlu 1982); otherwise :func:`isolates` checks it exactly over
the combinations that are zero on every big atom (their minimal-support vectors, enumerated). It
lets through, for example, a GWAS of a second phenotype after one of the first when one participant
misses both (everyone's, QT's and CC's sums cannot be combined to isolate them), and refuses the
release that would (``QT ∩ CC``: all − QT − CC + QT∩CC is that participant). Repeating a group is always allowed.

Participants are keyed by a keyed hash of their genotype-file ID, so the ledger follows them when
the dataset grows or is reordered; the groups themselves never leave the site.

The same rule, one level up, over *sites*: for each identical round (computation, parameters and
this site's groups), the ledger keeps the site sets it took part in, and refuses a site set that
would isolate one site's sums against an earlier one (the job over four sites, then over three:
every one of the three refuses, protecting the fourth).

Residual risk (documented in docs/privacy.md): per-variant sums leave out participants whose call
is missing at that variant, so at such a variant an atom can be smaller than ``min_group``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import os
import secrets
import sqlite3
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedstat.errors import PolicyRefused

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partition (
    dataset TEXT PRIMARY KEY,
    keys BLOB NOT NULL,      -- sorted uint64 keyed hashes of participant IDs (zlib)
    labels BLOB NOT NULL,    -- int64 atom label per key, 0 = in no released group (zlib)
    releases INTEGER NOT NULL,
    cover BLOB              -- bool (atoms + 1, groups): which atoms each released group covers (zlib); NULL = not kept yet
);
CREATE TABLE IF NOT EXISTS jobs (
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    spec_digest TEXT NOT NULL,  -- the spec the site accepted the job with
    PRIMARY KEY (dataset, job_id)
);
CREATE TABLE IF NOT EXISTS noisy_rounds (
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,   -- the one attempt whose noisy sums this site released
    PRIMARY KEY (dataset, job_id, round)
);
CREATE TABLE IF NOT EXISTS site_sets (
    dataset TEXT NOT NULL,
    query TEXT NOT NULL,     -- digest of (computation, parameters, this site's groups)
    sites TEXT NOT NULL,     -- JSON list of site names, sorted
    PRIMARY KEY (dataset, query, sites)
);
"""


class DifferencingRefused(PolicyRefused):
    """A release would let released sums be combined to single out fewer than ``min_group``
    participants (or one site's sums); nothing was computed or recorded."""


@dataclass(frozen=True)
class Release:
    """What the ledger accepted: the groups' fingerprints (for the audit log) and whether the
    partition changed (a new group) or the release repeats earlier ones."""

    fingerprints: tuple[str, ...]
    new_groups: bool


def refine(labels: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """The atom labels after releasing sums over ``groups``.

    Parameters
    ----------
    labels : [array, shape: (n,), dtype int64] current atom of each participant; 0 = in no
        released group
    groups : each [array, shape: (n,), dtype bool], a group's members

    Returns
    -------
    [array, shape: (n,), dtype int64]; label 0 still means "in no released group".
    """
    out = np.asarray(labels, dtype=np.int64)
    for g in groups:
        key = out * 2 + np.asarray(g, dtype=np.int64)  # (atom, in g): the membership pattern so far
        uniq, inverse = np.unique(key, return_inverse=True)
        out = inverse.astype(np.int64) + (0 if uniq.size and uniq[0] == 0 else 1)  # keep 0 for key 0
    return out


def small_atoms(before: np.ndarray, after: np.ndarray, min_group: int) -> int:
    """How many atoms of ``after`` are new or split from ``before`` and smaller than ``min_group``.

    An atom whose members were in no released group before (label 0) is new; an atom smaller than
    the one its members shared before is split. An atom neither new nor split adds nothing a
    combination of sums could isolate.
    """
    released = after != 0
    if not released.any():
        return 0
    a = after[released]
    b = before[released]
    size_after = np.bincount(a)
    size_before = np.bincount(before)
    # every atom of `after` lies inside one atom of `before` (refinement): take its parent
    parent = np.zeros(size_after.size, dtype=np.int64)
    parent[a] = b
    atoms = np.flatnonzero(size_after)
    changed = (parent[atoms] == 0) | (size_after[atoms] < size_before[parent[atoms]])
    return int(np.count_nonzero(changed & (size_after[atoms] < min_group)))


def cover_after(cover: np.ndarray, before: np.ndarray, after: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """The atoms × groups matrix after a release over ``groups``.

    Parameters
    ----------
    cover : [array, shape: (atoms_before + 1, n_groups), dtype bool] row ``a``: which released
        groups atom ``a`` of ``before`` lies in (row 0, "in no released group", is all False)
    before, after : [array, shape: (n,), dtype int64] atom labels before and after the release
        (``after`` refines ``before``: see :func:`refine`)
    groups : each [array, shape: (n,), dtype bool], a group of the release

    Returns
    -------
    [array, shape: (atoms_after + 1, n_groups'), dtype bool]; a group equal to one released
    before adds no column.
    """
    n_atoms = int(after.max(initial=0))
    parent = np.zeros(n_atoms + 1, dtype=np.int64)
    parent[after] = before  # every atom of `after` lies inside one atom of `before`
    out = cover[parent]
    out[0] = False
    for g in groups:
        col = np.zeros(n_atoms + 1, dtype=bool)
        col[after[np.asarray(g, dtype=bool)]] = True
        col[0] = False
        if not (out == col[:, None]).all(axis=0).any():
            out = np.concatenate([out, col[:, None]], axis=1)
    return out


def isolates(cover: np.ndarray, sizes: np.ndarray, min_group: int) -> bool:
    """Whether some linear combination of the released groups' sums weighs fewer than
    ``min_group`` participants.

    A combination ``w = M c`` (``M = cover[1:]`` over nonempty atoms, ``c`` a coefficient per
    group) weighs the participants of the atoms where ``w ≠ 0``. One that is nonzero on an atom of
    at least ``min_group`` members weighs enough; the others form the subspace
    ``V = {M_small c : M_big c = 0}`` over the small atoms. Every nonzero vector of ``V`` contains
    the support of an *elementary* vector of ``V`` (one of minimal support), and each elementary
    vector is the one vector of ``V`` (up to scale) that is zero on some ``dim V − 1`` coordinates.
    So the answer is whether an elementary vector of ``V`` weighs fewer than ``min_group``:
    enumerated exactly, modulo two random 31-bit primes (a spurious zero modulo a prime only
    makes the check stricter; a missed dimension needs both primes to divide a nonzero minor).

    Parameters
    ----------
    cover : [array, shape: (atoms + 1, n_groups), dtype bool] (see :func:`cover_after`)
    sizes : [array, shape: (atoms + 1,), dtype int64] members per atom (index 0 ignored)
    min_group : the fewest participants a combination may weigh

    Returns
    -------
    True also when ``V`` has too many elementary vectors to enumerate (:data:`MAX_ELEMENTARY`):
    the ledger then refuses, as the sufficient atom rule would.
    """
    rows = np.flatnonzero(sizes[1:]) + 1
    m = cover[rows].astype(np.int64)
    big = sizes[rows] >= min_group
    if big.all():
        return False
    return any(_light_combination(m, big, sizes[rows][~big], min_group, _random_prime()) for _ in range(2))


#: most elementary vectors :func:`isolates` enumerates before it refuses as the atom rule would
MAX_ELEMENTARY = 20_000


def _light_combination(m: np.ndarray, big: np.ndarray, small_sizes: np.ndarray, min_group: int, p: int) -> bool:
    coefficients = _nullspace(m[big], p)  # c with M_big c = 0: [shape: (n_groups, k)]
    if coefficients.shape[1] == 0:
        return False
    w = m[~big] @ coefficients % p  # their combinations over the small atoms: [shape: (n_small, k)]
    basis, _ = _rref(w.T, p)
    basis = basis[basis.any(axis=1)]  # a basis of V: [shape: (dim V, n_small)]
    dim = basis.shape[0]
    if dim == 0:
        return False
    if math.comb(basis.shape[1], dim - 1) > MAX_ELEMENTARY:
        return True
    for zeros in itertools.combinations(range(basis.shape[1]), dim - 1):
        y = _nullspace(basis[:, list(zeros)].T, p)  # y with (yᵀ basis)[zeros] = 0
        if y.shape[1] != 1:
            continue
        v = y[:, 0] @ basis % p
        if 0 < small_sizes[v != 0].sum() < min_group:
            return True
    return False


def _rref(a: np.ndarray, p: int) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form of ``a`` over GF(p) (p < 2^31, so products fit int64) and its pivot columns."""
    a = np.asarray(a, dtype=np.int64) % p
    pivots: list[int] = []
    r = 0
    for c in range(a.shape[1]):
        if r == a.shape[0]:
            break
        nz = np.flatnonzero(a[r:, c])
        if nz.size == 0:
            continue
        pivot = r + int(nz[0])
        a[[r, pivot]] = a[[pivot, r]]
        a[r] = a[r] * pow(int(a[r, c]), p - 2, p) % p
        factors = a[:, c].copy()
        factors[r] = 0
        a = (a - np.outer(factors, a[r])) % p
        pivots.append(c)
        r += 1
    return a, pivots


def _nullspace(a: np.ndarray, p: int) -> np.ndarray:
    """A basis of ``{x : a x = 0}`` over GF(p): [shape: (a.shape[1], nullity)]."""
    r, pivots = _rref(a, p)
    n = a.shape[1]
    free = [c for c in range(n) if c not in set(pivots)]
    basis = np.zeros((n, len(free)), dtype=np.int64)
    for j, f in enumerate(free):
        basis[f, j] = 1
        for i, c in enumerate(pivots):
            basis[c, j] = -r[i, f] % p
    return basis


def _random_prime() -> int:
    """A uniformly drawn prime in [2^30, 2^31) (cryptographic randomness: a job designer cannot aim at it)."""
    while True:
        n = secrets.randbelow(1 << 30) | (1 << 30) | 1
        if _is_prime(n):
            return n


def _is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for n < 4,759,123,141 (bases 2, 7, 61)."""
    if n < 2:
        return False
    for q in (2, 3, 5, 7, 11, 13, 61):
        if n % q == 0:
            return n == q
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 7, 61):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _pack(a: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(a).tobytes(), 6)


def _unpack(b: bytes, dtype: type) -> np.ndarray:
    return np.frombuffer(zlib.decompress(b), dtype=dtype).copy()


class ReleaseLedger:
    """The durable ledger (one SQLite file per site, one partition per dataset).

    Parameters
    ----------
    path : the database file (created when missing); the key for participant hashes lives in
        ``<path>.key`` (mode 0600)
    min_group : the smallest group a combination of releases may single out (site policy)
    allow_site_differencing : the consortium publishes per-site results anyway: skip the site-set rule
    """

    def __init__(self, path: Path, *, min_group: int, allow_site_differencing: bool = False):
        self.path = Path(path)
        self.min_group = int(min_group)
        self.allow_site_differencing = allow_site_differencing
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key_path = self.path.with_name(self.path.name + ".key")
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        self._key = key_path.read_bytes()
        with self._connect() as con:
            con.executescript(_SCHEMA)
            columns = {r[1] for r in con.execute("PRAGMA table_info(partition)")}
            if "cover" not in columns:  # a ledger made before the groups were kept (see _load)
                con.execute("ALTER TABLE partition ADD COLUMN cover BLOB")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def participant_keys(self, ids: Sequence[str]) -> np.ndarray:
        """[array, shape: (len(ids),), dtype uint64] keyed hashes of participant IDs."""
        out = np.empty(len(ids), dtype=np.uint64)
        for i, pid in enumerate(ids):
            digest = hmac.new(self._key, pid.encode("utf-8"), hashlib.blake2b).digest()
            out[i] = int.from_bytes(digest[:8], "little")
        return out

    def fingerprint(self, job_id: str, keys: np.ndarray) -> str:
        """HMAC (site secret) of ``job_id`` and the sorted keyed IDs ``keys``: a cohort's fingerprint."""
        mac = hmac.new(self._key, b"cohort-fingerprint\0" + job_id.encode("utf-8") + b"\0", hashlib.sha256)
        mac.update(np.sort(np.asarray(keys, dtype=np.uint64)).astype("<u8").tobytes())
        return mac.hexdigest()[:32]

    def release(
        self,
        dataset: str,
        keys: np.ndarray,
        groups: Mapping[str, np.ndarray],
        *,
        computation: str,
        params: Mapping[str, str],
        sites: Sequence[str],
    ) -> Release:
        """Check a release over ``groups`` and record it, or refuse it.

        Parameters
        ----------
        dataset : the dataset's name
        keys : [array, shape: (n,), dtype uint64] :meth:`participant_keys` of the dataset's
            participants (genotype-file order)
        groups : name -> [array, shape: (n,), dtype bool] members of each group the round
            releases sums over
        computation, params : the round (with ``groups``, the "query" of the site-set rule)
        sites : the sites whose sums the round adds up

        Raises
        ------
        DifferencingRefused
            Naming the rule and what to do; no participant count appears in the message.
        """
        names = sorted(groups)
        masks = [np.asarray(groups[n], dtype=bool) for n in names]
        fingerprints = tuple(hashlib.sha256(_pack_key_set(keys[m])).hexdigest()[:16] for m in masks)
        query = hashlib.sha256(
            json.dumps([computation, sorted(params.items()), list(zip(names, fingerprints, strict=True))]).encode()
        ).hexdigest()
        site_key = json.dumps(sorted(set(sites)))
        with self._lock, self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                stored_keys, labels, n_releases, cover = self._load(con, dataset)
                n_groups = cover.shape[1]
                all_keys = np.union1d(stored_keys, keys)  # sorted; participants new to the ledger get 0
                full = np.zeros(all_keys.size, dtype=np.int64)
                full[np.searchsorted(all_keys, stored_keys)] = labels
                pos = np.searchsorted(all_keys, keys)
                full_groups = []
                for m in masks:
                    g = np.zeros(all_keys.size, dtype=bool)
                    g[pos[m]] = True
                    full_groups.append(g)
                after = refine(full, full_groups)
                cover = cover_after(cover, full, after, full_groups)
                # an atom below min_group may stand (see the module docstring) while no combination
                # of released sums isolates it: checked on every release, as a group that splits
                # nothing (a union of atoms) can still complete such a combination
                if isolates(cover, np.bincount(after, minlength=cover.shape[0]), self.min_group):
                    raise DifferencingRefused(
                        f"{computation}: together with earlier releases of dataset {dataset}, these sums would single "
                        f"out fewer than {self.min_group} participants (policy min_group): the cohort differs from one "
                        "released before by only a few people (another purpose, phenotype missingness, --mind, new "
                        "participants). Analyse a cohort released before, or one that differs from it by at least "
                        f"{self.min_group} participants; for --glm/--assoc on phenotypes or covariates with a few "
                        "missing values, add --require-pheno/--require-covar so that every round uses one cohort, "
                        "and keep to one design: phenotypes analysed one by one and then on their common cohort "
                        "can be combined to isolate the participants missing all of them"
                    )
                if not self.allow_site_differencing:
                    self._check_sites(con, dataset, query, set(sites), computation)
                # a refinement changes the partition iff it adds atoms or releases someone new
                changed = np.unique(after).size != np.unique(full).size or not np.array_equal(after == 0, full == 0)
                if changed or all_keys.size != stored_keys.size or cover.shape[1] != n_groups:
                    con.execute(
                        "INSERT OR REPLACE INTO partition (dataset, keys, labels, releases, cover) VALUES (?, ?, ?, ?, ?)",
                        (dataset, _pack(all_keys), _pack(after), n_releases + 1, _pack_cover(cover)),
                    )
                con.execute(
                    "INSERT OR IGNORE INTO site_sets (dataset, query, sites) VALUES (?, ?, ?)",
                    (dataset, query, site_key),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return Release(fingerprints=fingerprints, new_groups=changed)

    def bind_job(self, dataset: str, job_id: str, spec_digest: str) -> None:
        """Record the spec a job was first offered with; refuse the job id again with another spec
        (a coordinator re-offering a job under a changed spec, e.g. for a fresh DP draw)."""
        with self._lock, self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO jobs (dataset, job_id, spec_digest) VALUES (?, ?, ?)",
                (dataset, job_id, spec_digest),
            )
            row = con.execute(
                "SELECT spec_digest FROM jobs WHERE dataset = ? AND job_id = ?", (dataset, job_id)
            ).fetchone()
        if row[0] != spec_digest:
            raise DifferencingRefused(
                f"job {job_id} was offered to this site before with another spec; a job's spec never changes "
                "(submit a new job)"
            )

    def noisy_round(self, dataset: str, job_id: str, round_no: int, attempt: int) -> None:
        """Record that this site releases round ``round_no`` of a differentially private job in
        ``attempt``; refuse any other attempt of the same round (fresh noise for each attempt would let
        an averaging coordinator cut it, while the budget is charged once)."""
        with self._lock, self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO noisy_rounds (dataset, job_id, round, attempt) VALUES (?, ?, ?, ?)",
                (dataset, job_id, round_no, attempt),
            )
            row = con.execute(
                "SELECT attempt FROM noisy_rounds WHERE dataset = ? AND job_id = ? AND round = ?",
                (dataset, job_id, round_no),
            ).fetchone()
        if int(row[0]) != attempt:
            raise DifferencingRefused(
                f"round {round_no} of job {job_id} was released by this site under differential privacy already "
                "(another attempt); its noise is drawn once, so it is not released again: submit the job again "
                "(a new job is charged to the budget again)"
            )

    @staticmethod
    def _load(con: sqlite3.Connection, dataset: str) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """(participant keys, atom labels, number of releases, atoms × groups cover) of ``dataset``."""
        row = con.execute(
            "SELECT keys, labels, releases, cover FROM partition WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), 0, np.zeros((1, 0), dtype=bool)
        labels = _unpack(row[1], np.int64)
        if row[3] is None:
            # a ledger from before the groups were kept: take every atom as a released group (its
            # sums may be derivable), which only ever refuses more
            n_atoms = int(labels.max(initial=0))
            cover = np.zeros((n_atoms + 1, n_atoms), dtype=bool)
            cover[np.arange(1, n_atoms + 1), np.arange(n_atoms)] = True
        else:
            cover = _unpack_cover(row[3])
        return _unpack(row[0], np.uint64), labels, int(row[2]), cover

    def _check_sites(
        self, con: sqlite3.Connection, dataset: str, query: str, sites: set[str], computation: str
    ) -> None:
        """The site-level rule: over the site sets of this identical round, no site may be alone in an atom."""
        rows = con.execute("SELECT sites FROM site_sets WHERE dataset = ? AND query = ?", (dataset, query)).fetchall()
        earlier = [set(json.loads(r[0])) for r in rows]
        if not earlier or sites in earlier:
            return
        names = sorted(set().union(*earlier, sites))
        index = {n: i for i, n in enumerate(names)}
        labels = np.zeros(len(names), dtype=np.int64)
        before = labels
        for s in earlier:
            before = refine(before, [np.isin(np.arange(len(names)), [index[n] for n in s])])
        after = refine(before, [np.isin(np.arange(len(names)), [index[n] for n in sites])])
        if small_atoms(before, after, 2):
            raise DifferencingRefused(
                f"{computation}: this site released the same sums before over another set of sites; with this set "
                "the difference would be one site's own sums (policy allow_site_differencing is off). Run the job "
                "over the same sites as before, or over sets that differ by at least two sites"
            )


def _pack_cover(cover: np.ndarray) -> bytes:
    rows, cols = cover.shape
    return rows.to_bytes(8, "little") + cols.to_bytes(8, "little") + zlib.compress(np.packbits(cover).tobytes(), 6)


def _unpack_cover(b: bytes) -> np.ndarray:
    rows, cols = int.from_bytes(b[:8], "little"), int.from_bytes(b[8:16], "little")
    bits = np.unpackbits(np.frombuffer(zlib.decompress(b[16:]), dtype=np.uint8), count=rows * cols)
    return bits.astype(bool).reshape(rows, cols)


def _pack_key_set(keys: np.ndarray) -> bytes:
    return np.sort(np.asarray(keys, dtype=np.uint64)).tobytes()
