"""The site's release ledger: atoms of released groups never smaller than min_group, across jobs and restarts."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from site_agent.release_ledger import DifferencingRefused, ReleaseLedger, refine, small_atoms

N = 60


def _ledger(tmp_path: Path, **kw) -> ReleaseLedger:
    return ReleaseLedger(tmp_path / "releases.sqlite", min_group=kw.pop("min_group", 10), **kw)


def _mask(members) -> np.ndarray:
    m = np.zeros(N, dtype=bool)
    m[list(members)] = True
    return m


def _release(ledger: ReleaseLedger, keys, groups, *, sites=("A", "B", "C"), computation="allele_counts", params=None):
    return ledger.release("main", keys, groups, computation=computation, params=params or {}, sites=list(sites))


@pytest.fixture
def keys(tmp_path: Path) -> np.ndarray:
    return _ledger(tmp_path).participant_keys([f"p{i}" for i in range(N)])


def test_release__identical_cohort_repeats_and_a_tracker_is_refused(tmp_path: Path, keys):
    ledger = _ledger(tmp_path)
    everyone = _mask(range(N))
    assert _release(ledger, keys, {"cohort": everyone}).new_groups
    assert not _release(ledger, keys, {"cohort": everyone}).new_groups  # repeating is always allowed
    with pytest.raises(DifferencingRefused, match="fewer than 10 participants"):
        _release(ledger, keys, {"cohort": _mask(range(1, N))})  # all but one: the tracker
    # a cohort that differs by at least min_group is allowed, and the refused one left no trace
    assert _release(ledger, keys, {"cohort": _mask(range(10, N))}).new_groups


def test_release__combination_of_releases_that_each_differ_by_many_is_refused(tmp_path: Path, keys):
    # A = 0..29, B = 20..49: atoms of 20, 10, 10; C = 0..19 + 25..49 would split the 10-atom 20..29
    # into 5 + 5, although C differs from A and from B by 20 or more participants
    ledger = _ledger(tmp_path)
    _release(ledger, keys, {"cohort": _mask(range(0, 30))})
    _release(ledger, keys, {"cohort": _mask(range(20, 50))})
    with pytest.raises(DifferencingRefused):
        _release(ledger, keys, {"cohort": _mask(list(range(0, 20)) + list(range(25, 50)))})
    # a union of existing atoms splits nothing
    assert not _release(ledger, keys, {"cohort": _mask(range(0, 50))}).new_groups


def test_release__groups_of_one_round_are_checked_together(tmp_path: Path, keys):
    ledger = _ledger(tmp_path)
    cases, controls = _mask(range(0, 25)), _mask(range(25, 55))  # 5 missing the phenotype
    with pytest.raises(DifferencingRefused):
        _release(ledger, keys, {"all": _mask(range(N)), "cases": cases, "controls": controls})
    assert _release(ledger, keys, {"all": cases | controls, "cases": cases, "controls": controls}).new_groups


def test_release__survives_a_restart_and_follows_participants_by_id(tmp_path: Path, keys):
    _release(_ledger(tmp_path), keys, {"cohort": _mask(range(N))})
    reopened = _ledger(tmp_path)
    # the dataset was reordered and grew by three participants: they are new to the ledger
    ids = [f"p{i}" for i in reversed(range(N))] + ["q1", "q2", "q3"]
    keys2 = reopened.participant_keys(ids)
    grown = np.ones(len(ids), dtype=bool)
    with pytest.raises(DifferencingRefused):  # the three newcomers would be the difference
        reopened.release(
            "main", keys2, {"cohort": grown}, computation="allele_counts", params={}, sites=["A", "B", "C"]
        )
    same = np.zeros(len(ids), dtype=bool)
    same[:N] = True  # the original participants, in the new order: a repeat
    assert not reopened.release(
        "main", keys2, {"cohort": same}, computation="allele_counts", params={}, sites=["A", "B", "C"]
    ).new_groups


def test_release__datasets_have_their_own_ledgers(tmp_path: Path, keys):
    ledger = _ledger(tmp_path)
    _release(ledger, keys, {"cohort": _mask(range(N))})
    ledger.release("other", keys, {"cohort": _mask(range(1, N))}, computation="x", params={}, sites=["A", "B"])


def test_release__site_set_isolating_one_site_is_refused_unless_allowed(tmp_path: Path, keys):
    ledger = _ledger(tmp_path)
    everyone = {"cohort": _mask(range(N))}
    _release(ledger, keys, everyone, sites=("A", "B", "C", "D"))
    with pytest.raises(DifferencingRefused, match="one site's own sums"):
        _release(ledger, keys, everyone, sites=("A", "B", "C"))
    _release(ledger, keys, everyone, sites=("A", "B", "C", "D"))  # the same set again
    _release(ledger, keys, everyone, sites=("A", "B"))  # differs by two sites
    # another computation over the same groups is the same query: QC counts (or --glm's genotype
    # sums) over three sites would give the fourth site's --freq counts
    with pytest.raises(DifferencingRefused, match="one site's own sums"):
        _release(ledger, keys, everyone, sites=("A", "B", "C"), computation="qc_counts")
    # a group released beside others is checked on its own: --model's all-samples table over three
    # sites beside its cases and controls would give the fourth site's --geno-counts counts too
    with pytest.raises(DifferencingRefused, match="one site's own sums"):
        _release(
            ledger,
            keys,
            {"all": _mask(range(N)), "cases": _mask(range(30)), "controls": _mask(range(30, N))},
            sites=("A", "B", "C"),
            computation="assoc_counts",
        )
    # other groups are another query
    _release(ledger, keys, {"cohort": _mask(range(10, N))}, sites=("A", "B", "C"), computation="qc_counts")
    relaxed = ReleaseLedger(tmp_path / "relaxed.sqlite", min_group=10, allow_site_differencing=True)
    _release(relaxed, keys, everyone, sites=("A", "B", "C", "D"))
    _release(relaxed, keys, everyone, sites=("A", "B", "C"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sets(st.integers(0, 19), min_size=1), min_size=1, max_size=6), st.integers(1, 5))
def test_refine__accepted_releases_never_isolate_fewer_than_min_group(groups, min_group):
    # brute force: after every accepted release, every non-empty pattern class has >= min_group
    # members, so no combination of released indicator vectors can isolate a smaller set
    n = 20
    labels = np.zeros(n, dtype=np.int64)
    accepted: list[np.ndarray] = []
    for g in groups:
        mask = np.isin(np.arange(n), list(g))
        after = refine(labels, [mask])
        if small_atoms(labels, after, min_group) == 0:
            labels = after
            accepted.append(mask)
    if not accepted:
        return
    patterns = np.stack(accepted, axis=1)
    seen = [tuple(p) for p in patterns if p.any()]
    for pattern in set(seen):
        assert seen.count(pattern) >= min_group
    # and refine's labels are exactly those pattern classes
    for i, j in itertools.combinations(range(n), 2):
        assert (labels[i] == labels[j]) == (tuple(patterns[i]) == tuple(patterns[j]))


def test_gate__min_cohort_after_every_step_and_nobody_left_are_refused_and_releases_audited(tmp_path: Path):
    from fedstat.config import SitePolicy
    from fedstat.data.dataset import open_dataset
    from fedstat.errors import PolicyRefused
    from site_agent.audit_log import AuditLog
    from site_agent.audit_verify import show
    from site_agent.gate import ReleaseGate
    from tests.conftest import GWAS

    dataset = open_dataset("main", GWAS / "EUR", cache_dir=tmp_path / "cache")
    members = np.arange(dataset.genotypes.n_samples)
    gate, audit = ReleaseGate(tmp_path), AuditLog(tmp_path / "audit.log")
    policy = SitePolicy(min_cohort=20)
    kw = dict(audit=audit, job_id="J", analyst="alice", computation="glm_linear", params={}, sites=["A", "B"])
    few = np.zeros(members.size, dtype=bool)
    few[:19] = True  # the phenotype's cohort, after NA removal, is below min_cohort
    with pytest.raises(PolicyRefused, match="fewer participants than this site's minimum of 20"):
        gate.clear(policy, dataset, members, {"QT": few}, round_no=2, **kw)
    with pytest.raises(PolicyRefused, match="no participant of this site is left"):
        gate.clear(policy, dataset, members, {"QT": np.zeros(members.size, dtype=bool)}, round_no=2, **kw)
    everyone = np.ones(members.size, dtype=bool)
    gate.clear(policy, dataset, members, {"QT": everyone}, round_no=2, **kw)
    (record,) = list(show(tmp_path / "audit.log"))
    assert record["event"] == "release" and record["cohort_size"] == members.size and record["round"] == 2
    assert record["computation"] == "glm_linear" and record["sites"] == ["A", "B"] and len(record["groups"]) == 1


def test_release__integer_genotypes_leak_through_unequal_weights_so_splitting_an_atom_is_refused(tmp_path: Path):
    # found by red-teaming an "exact" rational rule: with P, X, Q ten people each and p one person,
    # no rational combination of P∪X∪p, X∪p∪Q and P∪Q∪p is supported on fewer than 10 people, yet
    # A + B − C = 2·S(X) + x_p gives x_p mod 2 at every variant (genotypes are integers 0/1/2); with
    # G1..G4 below, G1 + G2 + G3 − G4 = x_a + 3·S(B) gives x_a mod 3: the genotype itself
    n = 41
    ledger = ReleaseLedger(tmp_path / "r.sqlite", min_group=10)
    ids = ledger.participant_keys([f"x{i}" for i in range(n)])

    def release(*parts, dataset):
        m = np.zeros(n, dtype=bool)
        m[[i for r in parts for i in r]] = True
        ledger.release(dataset, ids, {"g": m}, computation="allele_counts", params={}, sites=["A", "B"])
        return m.astype(np.int64)

    p, P, X, Q = [0], range(1, 11), range(11, 21), range(21, 31)
    a = release(P, X, p, dataset="parity")
    b = release(X, p, Q, dataset="parity")
    with pytest.raises(DifferencingRefused):
        release(P, Q, p, dataset="parity")
    c = np.isin(np.arange(n), [*P, *Q, *p]).astype(np.int64)
    x = np.random.default_rng(0).integers(0, 3, size=(n, 50))  # what C would have given away
    assert np.array_equal((a @ x + b @ x - c @ x) % 2, x[0] % 2)

    a1, B, Xs, Y, Z = [0], range(1, 11), range(11, 21), range(21, 31), range(31, 41)
    g = [release(a1, B, Xs, dataset="mod3"), release(B, Y, dataset="mod3"), release(B, Z, dataset="mod3")]
    with pytest.raises(DifferencingRefused):
        release(Xs, Y, Z, dataset="mod3")
    g4 = np.isin(np.arange(n), [*Xs, *Y, *Z]).astype(np.int64)
    assert np.array_equal(((g[0] + g[1] + g[2] - g4) @ x) % 3, x[0])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sets(st.integers(0, 11), min_size=1), min_size=1, max_size=5), st.integers(2, 4))
def test_release__no_integer_combination_of_accepted_releases_isolates_fewer_than_min_group(
    tmp_path_factory, groups, min_group
):
    # brute force over small integer combinations of the accepted groups' indicator vectors: none is
    # supported on 1 .. min_group-1 participants, nor gives such a set's values modulo 2 or 3
    # (zero modulo m on everyone else, nonzero modulo m on fewer than min_group)
    n = 12
    ledger = ReleaseLedger(tmp_path_factory.mktemp("l") / "r.sqlite", min_group=min_group)
    ids = ledger.participant_keys([f"x{i}" for i in range(n)])
    accepted: list[np.ndarray] = []
    for g in groups:
        mask = np.isin(np.arange(n), list(g))
        try:
            ledger.release("d", ids, {"g": mask}, computation="c", params={}, sites=["A", "B"])
        except DifferencingRefused:
            continue
        accepted.append(mask.astype(np.int64))
    if not accepted:
        return
    a = np.stack(accepted)  # (groups, n)
    for c in itertools.product(range(-3, 4), repeat=len(accepted)):
        w = np.asarray(c) @ a
        for m in (0, 2, 3):
            support = np.count_nonzero(w if m == 0 else w % m)
            assert support == 0 or support >= min_group, (c, m, support)


def test_release__site_rule_checks_the_union_of_a_rounds_groups(tmp_path: Path, keys):
    # cases and controls over three sites add up to the cohort released over four
    ledger = _ledger(tmp_path)
    _release(ledger, keys, {"cohort": _mask(range(N))}, sites=("A", "B", "C", "D"))
    with pytest.raises(DifferencingRefused, match="one site's own sums"):
        _release(
            ledger,
            keys,
            {"cases": _mask(range(30)), "controls": _mask(range(30, N))},
            sites=("A", "B", "C"),
            computation="assoc_counts",
        )
