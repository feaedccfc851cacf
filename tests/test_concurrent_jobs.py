"""Two ``--glm`` jobs at once share nothing: interleaved rounds and real threads give each job its serial answer.

The jobs use the same phenotype and covariate *names* (so their round specs are identical) over
different participants and values: a cache keyed by the spec, or by ``id()`` of a cohort or
design that has been freed and whose address another job's object now has, hands one job the
other's regression design. Sites get a fresh Cohort object every round for that reason (the
addresses of freed objects are reused at once by CPython). A finished job leaves nothing of its
participants reachable (no module-level cache holds a cohort, a design or arrays built from them).
"""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from fedstat.stats.base import Cohort, Output, RoundInput, release_groups, run_local
from fedstat.stats.glm import LOCAL_COMPUTATIONS, GlmJob, GlmResult
from tests import glm_harness as h

PHENOS = ("QT", "CC")
MODIFIERS = frozenset()  # firth-fallback: logistic rounds, then Firth rounds for separated variants
BLOCK = 96


@dataclass(frozen=True)
class _Site:
    members: np.ndarray  # columns of the pooled genotype matrix
    columns: dict[str, np.ndarray]

    def cohort(self) -> Cohort:
        """A new Cohort object (new columns mapping, same arrays) each time, as a new job would build."""
        return Cohort(n=int(self.members.size), columns=dict(self.columns))


def _sites(variant: str) -> list[_Site]:
    """Three sites of the pooled data. ``"A"``: as sampled. ``"B"``: the phenotypes permuted among each
    site's participants (same sizes, other values). ``"C"``: every third participant left out."""
    pooled = h.load_pooled()
    rng = np.random.default_rng(15)
    out = []
    for s in range(len(h.SITES)):
        idx = np.flatnonzero(pooled.site_of == s)
        if variant == "C":
            idx = idx[np.arange(idx.size) % 3 != 0]
        cols = {c: np.asarray(pooled.table.column(c), dtype=np.float64)[idx] for c in (*PHENOS, *h.COVARS)}
        if variant == "B":
            perm = rng.permutation(idx.size)
            cols = cols | {p: cols[p][perm] for p in PHENOS}
        out.append(_Site(idx, cols))
    return out


def _rounds(job: GlmJob, sites: list[_Site]) -> Iterator[str]:
    """Drive ``job`` as the daemons do (one RoundInput per site and round, release groups first),
    yielding after each round so that callers can interleave jobs."""
    geno = h.load_pooled().geno
    sums = None
    while (plan := job.next_round(sums)) is not None:
        comp = LOCAL_COMPUTATIONS[plan.computation]
        vidx = np.arange(geno.shape[0]) if plan.variants is None else np.asarray(plan.variants)
        total: dict[str, np.ndarray] = {}
        for site in sites:
            cohort = site.cohort()
            inp = RoundInput(params=dict(plan.params), arrays=dict(plan.arrays), variants=vidx)
            release_groups(comp, cohort, inp)

            def read_blocks(site: _Site = site, vidx: np.ndarray = vidx) -> Iterator[tuple[int, np.ndarray]]:
                for start in range(0, vidx.size, BLOCK):
                    yield start, np.ascontiguousarray(geno[vidx[start : start + BLOCK]][:, site.members])

            parts: dict[str, np.ndarray] = {}
            shapes: dict[str, tuple[int, ...]] = {}
            for out in run_local(comp, cohort, inp, read_blocks):
                assert isinstance(out, Output)
                arr = parts.setdefault(out.name, np.zeros(out.total, dtype=out.values.dtype))
                arr[out.offset : out.offset + out.values.size] = out.values
                shapes[out.name] = out.shape
            for key, arr in parts.items():
                full = arr.reshape(shapes[key])
                total[key] = total[key] + full if key in total else full
            del cohort, inp
        sums = total
        yield plan.computation


def _job() -> GlmJob:
    return GlmJob(PHENOS, h.COVARS, MODIFIERS)


def _run(job: GlmJob, sites: list[_Site]) -> GlmJob:
    for _ in _rounds(job, sites):
        pass
    return job


def _assert_same(got: GlmJob, want: GlmJob) -> None:
    assert sorted(got.results) == sorted(want.results) == sorted(PHENOS)
    assert got.log_lines() == want.log_lines()
    for name in PHENOS:
        a, b = got.results[name], want.results[name]
        assert (a.n_samples, a.n_cases, a.n_controls, a.tests) == (b.n_samples, b.n_cases, b.n_controls, b.tests)
        for field in ("beta", "se", "stat", "log_p", "a1_freq"):
            assert np.array_equal(getattr(a, field), getattr(b, field), equal_nan=True), (name, field)
        for field in ("obs_ct", "a1_is_ref", "firth"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)
        assert a.errcode.tolist() == b.errcode.tolist(), name


@pytest.fixture(scope="module")
def serial() -> dict[str, GlmJob]:
    jobs = {v: _run(_job(), _sites(v)) for v in "ABC"}
    for name in PHENOS:  # the jobs differ, so a mix-up between them shows
        a, b, c = (jobs[v].results[name] for v in "ABC")
        assert not np.array_equal(a.beta, b.beta, equal_nan=True)
        assert not np.array_equal(a.beta, c.beta, equal_nan=True)
    assert any(jobs["A"].results["CC"].firth), "the jobs should run Firth rounds too"
    return jobs


def test_concurrent_jobs__interleaved_rounds_equal_serial(serial):
    jobs = {v: _job() for v in "ABC"}
    steps = {v: _rounds(jobs[v], _sites(v)) for v in "ABC"}
    rounds = {v: 0 for v in "ABC"}
    while steps:  # round-robin: A's round, B's round, C's round, A's next round, ...
        for v in list(steps):
            if next(steps[v], None) is None:
                del steps[v]
            else:
                rounds[v] += 1
    assert min(rounds.values()) > 3
    for v in "ABC":
        _assert_same(jobs[v], serial[v])


def test_concurrent_jobs__threads_equal_serial(serial):
    variants = "ABCABC"
    start = threading.Barrier(len(variants))

    def run(v: str) -> GlmJob:
        start.wait()
        return _run(_job(), _sites(v))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        with ThreadPoolExecutor(max_workers=len(variants)) as pool:
            done = list(pool.map(run, variants))
    finally:
        sys.setswitchinterval(interval)
    for v, job in zip(variants, done, strict=True):
        _assert_same(job, serial[v])


def test_concurrent_jobs__a_finished_job_keeps_nothing_of_its_participants():
    sites = _sites("C")
    cohorts: list[weakref.ref[Cohort]] = []
    arrays: list[weakref.ref[np.ndarray]] = []

    class _Tracked(_Site):
        def cohort(self) -> Cohort:
            cohort = super().cohort()
            cohorts.append(weakref.ref(cohort))
            return cohort

    tracked = [_Tracked(s.members, {k: v.copy() for k, v in s.columns.items()}) for s in sites]
    arrays.extend(weakref.ref(v) for s in tracked for v in s.columns.values())
    job = _run(_job(), tracked)
    results: list[GlmResult] = list(job.results.values())
    assert len(results) == 2 and cohorts and arrays
    del job, tracked, sites, results
    gc.collect()
    assert [r for r in cohorts if r() is not None] == []
    assert [r for r in arrays if r() is not None] == []
