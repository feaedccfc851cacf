"""The site's release ledger: differencing control for exact releases.

Every round a site computes releases sums over some groups of its participants: the job's cohort,
each phenotype's regression cohort (after NA removal), the cases and the controls of ``--assoc``…
Two exact sums over groups that differ by one person reveal that person (Denning's tracker), and
combinations of many releases can isolate a person even when every pair differs by many. The
ledger keeps, per dataset and durably, the partition of the dataset's participants into *atoms*:
the participants that share one membership pattern across every group the site has ever released
sums over. A new release is allowed only if every atom it creates or splits has at least
``min_group`` members; then no linear combination of released sums singles out fewer than
``min_group`` participants (a sufficient condition; Chin & Özsoyoğlu 1982). Repeating a group, or
releasing a union of existing atoms, splits nothing and is always allowed.

Why not an exact test over rational combinations: a rule that lets an atom below ``min_group``
stand as long as no rational combination of released sums is supported on fewer than ``min_group``
participants is unsound here, because the sums are of integer genotypes 0/1/2. Groups
P∪X∪{p}, X∪{p}∪Q and P∪Q∪{p} (P, X, Q ten people each) pass it, yet A + B − C = 2·S(X) + x_p
tells x_p mod 2 (heterozygous or not) at every variant; four groups give x_p mod 3, the genotype
itself (``tests/test_release_ledger.py``). The atom rule refuses both.

Participants are keyed by a keyed hash of their genotype-file ID, so the ledger follows them when
the dataset grows or is reordered; the groups themselves never leave the site.

The same rule, one level up, over *sites*: for each group this site released sums over, in any
computation with any parameters and beside any other groups, the ledger keeps the site sets it took part in, and refuses
a site set that would isolate one site's sums against an earlier one (the job over four sites,
then over three: every one of the three refuses, protecting the fourth). Computations are not told
apart: ``--freq`` over four sites and a QC or ``--glm`` round over three of them release the same
genotype counts (``--glm``'s genotype sums are functions of them).

Residual risk (documented in docs/privacy.md): per-variant sums leave out participants whose call
is missing at that variant, so at such a variant an atom can be smaller than ``min_group``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    releases INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    spec_digest TEXT NOT NULL,  -- the spec the site accepted the job with
    PRIMARY KEY (dataset, job_id)
);
CREATE TABLE IF NOT EXISTS plans (
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    sites TEXT NOT NULL,        -- JSON list of the harmonization's sites, sorted
    digest TEXT NOT NULL,       -- SHA-256 of the site's plan in its file rows (rows, flips)
    PRIMARY KEY (dataset, job_id, sites)
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
        computation, params : the round (named in refusals; the site-set rule keys on ``groups`` alone)
        sites : the sites whose sums the round adds up

        Raises
        ------
        DifferencingRefused
            Naming the rule and what to do; no participant count appears in the message.
        """
        names = sorted(groups)
        masks = [np.asarray(groups[n], dtype=bool) for n in names]
        fingerprints = tuple(hashlib.sha256(_pack_key_set(keys[m])).hexdigest()[:16] for m in masks)
        # the site rule's "queries" are the groups, one by one: sums of any computation over a group
        # (allele counts, QC counts, --model's all-samples table, a --glm round's genotype sums)
        # difference sums over the same group from any other computation
        # (and their union: cases and controls add up to the cohort)
        union = hashlib.sha256(_pack_key_set(keys[np.logical_or.reduce(masks)])).hexdigest()[:16] if masks else ""
        queries = sorted(
            {hashlib.sha256(json.dumps(["group", f]).encode()).hexdigest() for f in (*fingerprints, union) if f}
        )
        site_key = json.dumps(sorted(set(sites)))
        with self._lock, self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                stored_keys, labels, n_releases = self._load(con, dataset)
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
                if small_atoms(full, after, self.min_group):
                    raise DifferencingRefused(
                        f"{computation}: together with earlier releases of dataset {dataset}, these sums would single "
                        f"out fewer than {self.min_group} participants (policy min_group): the cohort differs from one "
                        "released before by only a few people (another purpose, phenotype missingness, --mind, new "
                        "participants). Analyse a cohort released before, or one that differs from it by at least "
                        f"{self.min_group} participants; for --glm/--assoc on phenotypes or covariates with a few "
                        "missing values, add --require-pheno/--require-covar so that every round uses one cohort, "
                        "and analyse several phenotypes on their common cohort from the start (--require-pheno A,B "
                        "names them for an analysis of one)"
                    )
                if not self.allow_site_differencing:
                    for query in queries:
                        self._check_sites(con, dataset, query, set(sites), computation)
                # a refinement changes the partition iff it adds atoms or releases someone new
                changed = np.unique(after).size != np.unique(full).size or not np.array_equal(after == 0, full == 0)
                if changed or all_keys.size != stored_keys.size:
                    con.execute(
                        "INSERT OR REPLACE INTO partition (dataset, keys, labels, releases) VALUES (?, ?, ?, ?)",
                        (dataset, _pack(all_keys), _pack(after if changed else full), n_releases + 1),
                    )
                con.executemany(
                    "INSERT OR IGNORE INTO site_sets (dataset, query, sites) VALUES (?, ?, ?)",
                    [(dataset, query, site_key) for query in queries],
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

    def bind_plan(self, dataset: str, job_id: str, sites: Sequence[str], digest: str) -> None:
        """Record the variant plan (digest of its file rows and flips) a job's rounds are computed
        with over ``sites``; refuse another one for the same job and sites, even after a re-offer
        (the same round over another plan, e.g. with flipped alleles, would difference this
        site's own variants against each other)."""
        key = json.dumps(sorted(set(sites)))
        with self._lock, self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO plans (dataset, job_id, sites, digest) VALUES (?, ?, ?, ?)",
                (dataset, job_id, key, digest),
            )
            row = con.execute(
                "SELECT digest FROM plans WHERE dataset = ? AND job_id = ? AND sites = ?", (dataset, job_id, key)
            ).fetchone()
        if row[0] != digest:
            raise DifferencingRefused(
                f"job {job_id}: the coordinator sent this site another variant plan than the one the job's rounds "
                "were computed with; a job's variants and their orientation never change (submit a new job)"
            )

    def noisy_round(self, dataset: str, job_id: str, round_no: int, attempt: int) -> int:
        """Record that this site releases round ``round_no`` of a differentially private job (in
        ``attempt``) and return how many rounds of the job it has released so far, this one
        included (each is charged: sequential composition). Refuse a round released before, in any
        attempt or the same one again: fresh noise for each release would let an averaging
        coordinator cut it."""
        with self._lock, self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(
                    "SELECT attempt FROM noisy_rounds WHERE dataset = ? AND job_id = ? AND round = ?",
                    (dataset, job_id, round_no),
                ).fetchone()
                if row is None:
                    con.execute(
                        "INSERT INTO noisy_rounds (dataset, job_id, round, attempt) VALUES (?, ?, ?, ?)",
                        (dataset, job_id, round_no, attempt),
                    )
                (released,) = con.execute(
                    "SELECT COUNT(*) FROM noisy_rounds WHERE dataset = ? AND job_id = ?", (dataset, job_id)
                ).fetchone()
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        if row is not None:
            raise DifferencingRefused(
                f"round {round_no} of job {job_id} was released by this site under differential privacy already "
                f"(attempt {int(row[0])}); its noise is drawn once, so it is not released again: submit the job "
                "again (a new job is charged to the budget again)"
            )
        return int(released)

    @staticmethod
    def _load(con: sqlite3.Connection, dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
        row = con.execute("SELECT keys, labels, releases FROM partition WHERE dataset = ?", (dataset,)).fetchone()
        if row is None:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), 0
        return _unpack(row[0], np.uint64), _unpack(row[1], np.int64), int(row[2])

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


def _pack_key_set(keys: np.ndarray) -> bytes:
    return np.sort(np.asarray(keys, dtype=np.uint64)).tobytes()
