"""The registry of site computations: one entry declares each computation's arrays, its DP
sensitivities, its participant counts and whether it changes a site's cohort, and the daemons
branch on no computation name."""

from __future__ import annotations

import ast
from pathlib import Path

from fedstat.computations import COMPUTATIONS, LOCAL_COMPUTATIONS
from fedstat.stats import assoc, glm, pca
from fedstat.stats.base import declared_arrays
from tests.test_bounds import _rounds

ROOT = Path(__file__).resolve().parent.parent


def test_registry__holds_every_computation_of_the_analyses_once():
    assert set(COMPUTATIONS) == {
        "allele_counts",
        "allele_counts_sex",
        "sample_missing",
        "qc_counts",
        *pca.LOCAL_COMPUTATIONS,
        *assoc.LOCAL_COMPUTATIONS,
        *glm.LOCAL_COMPUTATIONS,
    }
    assert all(c.name == name and LOCAL_COMPUTATIONS[name] is c.kernel for name, c in COMPUTATIONS.items())


def test_registry__dp_and_count_declarations_name_what_the_computation_sends():
    for plan in _rounds(17):
        entry = COMPUTATIONS[plan.computation]
        sent = declared_arrays(entry.kernel, plan.params, plan.arrays)
        assert sent is not None
        for name in entry.count_arrays:  # a participant count: one integer for the cohort
            assert sent[name].integer and not sent[name].per_variant and sent[name].full_shape(17) == (1,)
        if entry.dp is None:
            continue
        # under dp every array it sends must be declared (the noisy protector refuses the rest),
        # per-variant arrays one count per variant, cohort arrays one count
        assert set(entry.dp.variant_arrays) | set(entry.dp.cohort_arrays) == set(sent), plan.computation
        assert all(sent[n].integer and sent[n].full_shape(17) == (17,) for n in entry.dp.variant_arrays)
        assert all(sent[n].integer and sent[n].full_shape(17) == (1,) for n in entry.dp.cohort_arrays)


def test_registry__computations_that_change_the_site_cohort_are_those_with_a_finish_step():
    for name, entry in COMPUTATIONS.items():
        assert entry.changes_site_state == hasattr(entry.kernel, "finish"), name


def test_daemons__branch_on_no_computation_name():
    # the site agent and the coordinator read the registry: no computation name is a literal there
    names = set(COMPUTATIONS)
    found = []
    for path in sorted([*(ROOT / "site_agent").glob("*.py"), *(ROOT / "coordinator").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found


def test_daemons__branch_on_no_analysis_name():
    # what an analysis means for a site's policy comes from fedstat.jobs (fitted_parameters,
    # checks_pooled_coding), not from analysis names in the daemons
    from fedstat.jobs import KNOWN_ANALYSES

    found = []
    for path in sorted([*(ROOT / "site_agent").glob("*.py"), *(ROOT / "coordinator").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
                consts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                if set(consts) & set(KNOWN_ANALYSES):
                    found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Set | ast.List | ast.Tuple):
                consts = [n.value for n in node.elts if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                if len(set(consts) & set(KNOWN_ANALYSES)) >= 2:
                    found.append(f"{path.name}:{node.lineno}")
    assert not found, found
