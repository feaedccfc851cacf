"""Issue 14 O3 and req. 3: bounds before allocation at both ends of a round, and caps on rounds and attempts.

- Every array a site sends is checked against the round's plan of arrays (each local computation's
  ``sum_arrays`` declaration) before the coordinator allocates anything for it: a chunk declaring
  2^40 elements, a huge shape, an array not in the plan, a wrong encoding, empty or surplus chunks
  are refused with the site and array named (unit tests per aggregator; attacks from a fake site
  over mTLS, with the coordinator's memory traced).
- A site bounds the coordinator's round arrays by the signed spec, and refuses rounds and attempts
  beyond what the spec needs (``fedstat.bounds.round_caps``; a deviating coordinator asking for
  one more is refused).
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from fedstat.bounds import (
    MAX_ATTEMPTS_PER_ROUND,
    InputLimit,
    RoundCaps,
    RoundTally,
    check_round_inputs,
    round_arrays,
    round_caps,
    round_input_limits,
)
from fedstat.client import Client
from fedstat.computations import LOCAL_COMPUTATIONS
from fedstat.errors import ProtocolError
from fedstat.jobs import JobSpec
from fedstat.privacy.base import PlannedArray, ProtectedChunk, RoundContext
from fedstat.privacy.modes import get_mode
from fedstat.protocol import RoundDataAssembler
from fedstat.stats import glm_logistic, pca
from fedstat.stats.base import Cohort, Output, RoundInput, RoundPlan, run_local
from fedstat.stats.glm_common import PhenoSpec, encode_specs
from fedstat.wire import common_pb2
from tests.conftest import analyst_profile
from tests.test_job_protocol import FakeSite, _wait_connected

CTX = RoundContext(job_id="j", round=1, attempt=0, participants=("A", "B"))
PLAN = {"n": PlannedArray((3,), True), "x": PlannedArray((3, 2), False)}
MB = 1 << 20


# --- the declarations: what each local computation sends is what it declares ---------------------


def _cohort(n: int = 40) -> Cohort:
    rng = np.random.default_rng(3)
    return Cohort(
        n=n,
        columns={
            "CC": rng.integers(1, 3, n).astype(np.float64),
            "QT": rng.normal(size=n),
            "AGE": rng.normal(50, 5, n),
        },
        sex=rng.integers(0, 3, n).astype(np.int8),  # male, female, unknown
    )


def _rounds(n_var: int) -> list[RoundPlan]:
    rng = np.random.default_rng(4)
    lin = encode_specs([PhenoSpec("QT", False, ("AGE",), ("AGE",)), PhenoSpec("CC", False, (), ())])
    logi = encode_specs([PhenoSpec("CC", True, ("AGE",), ("AGE",))])
    # chrX's regression (SEX appended) and chrY's (the males only), as fedstat.stats.glm_sexchr plans them
    lin_x = encode_specs([PhenoSpec("QT", False, ("AGE", "SEX"), ("AGE", "SEX"), sex="x")])
    logi_y = encode_specs([PhenoSpec("CC", True, ("AGE",), ("AGE",), sex="male")])
    freq = rng.uniform(0.1, 0.9, n_var)
    coef = rng.normal(scale=0.1, size=(n_var, 3))
    return [
        RoundPlan("allele_counts"),
        RoundPlan("allele_counts_sex", params={"sex": "male"}),
        RoundPlan("sample_missing", params={"mind": "0.1"}),
        RoundPlan("qc_counts", params={"controls": "CC"}),
        RoundPlan("pca_multiply", arrays={"freq": freq, "v": rng.normal(size=(n_var, 5))}),
        RoundPlan("pca_scores", params={"names": "PC1,PC2"}, arrays={"freq": freq, "w": rng.normal(size=(n_var, 2))}),
        RoundPlan("assoc_counts", params={"pheno": "CC"}),
        RoundPlan("glm_describe", params={"columns": json.dumps(["CC", "QT", "AGE"])}),
        RoundPlan("glm_linear", params={"spec": lin}),
        RoundPlan("glm_logistic", params={"spec": logi}, arrays={"coef": coef, "firth": np.zeros(n_var)}),
        RoundPlan("glm_logistic", params={"spec": logi}, arrays={"coef": coef, "firth": np.ones(n_var)}),
        RoundPlan("glm_describe_males"),
        RoundPlan("glm_linear", params={"spec": lin_x}),
        RoundPlan("glm_logistic", params={"spec": logi_y}, arrays={"coef": coef, "firth": np.ones(n_var)}),
    ]


def test_sum_arrays__every_local_computation_sends_exactly_what_it_declares():
    n_var, cohort = 23, _cohort()
    geno = np.random.default_rng(5).integers(-1, 3, size=(n_var, cohort.n)).astype(np.int8)
    geno[geno < 0] = -9
    plans = _rounds(n_var)
    assert {p.computation for p in plans} == set(LOCAL_COMPUTATIONS)
    for plan in plans:
        inp = RoundInput(params=plan.params, arrays=plan.arrays, variants=np.arange(n_var))

        def blocks():
            for start in range(0, n_var, 10):
                yield start, geno[start : start + 10]

        sent = {
            o.name: (o.shape, o.values.dtype.kind == "i")
            for o in run_local(LOCAL_COMPUTATIONS[plan.computation], cohort, inp, blocks)
            if isinstance(o, Output)
        }
        planned = round_arrays(plan, n_var)
        assert sent == {name: (a.shape, a.integer) for name, a in planned.items()}, plan.computation


def test_run_local__an_array_the_computation_did_not_declare_is_refused_at_the_site():
    class Undeclared:
        def sum_arrays(self, params, arrays):
            return {}

        def cohort_sums(self, cohort, inp):
            return {"secret": np.array([1], dtype=np.int64)}

        def block_sums(self, block, cohort, inp, rows):
            return {}

    inp = RoundInput(params={}, arrays={}, variants=np.arange(0))
    with pytest.raises(ProtocolError, match="sends array 'secret' of shape"):
        list(run_local(Undeclared(), _cohort(), inp, lambda: iter(())))


def test_round_arrays__an_unknown_computation_has_no_plan():
    with pytest.raises(ProtocolError, match="'who_knows' declares no arrays"):
        round_arrays(RoundPlan("who_knows"), 10)


# --- the coordinator: each aggregator checks chunks against the plan before allocating -----------


@pytest.fixture(scope="module")
def paillier_key():
    from fedstat.privacy.paillier_crypto import generate_keypair

    return generate_keypair(2048)[0]


def _aggregator(mode: str, key, plan=PLAN):
    if mode == "paillier":
        from fedstat.privacy.paillier import PaillierAggregator

        return PaillierAggregator(CTX, key, None, plan)
    return get_mode(mode).aggregator(CTX, expected=plan)


def _chunk(mode: str, **fields) -> ProtectedChunk:
    enc = {"none": "i64", "secagg": "ring64", "paillier": "paillier-ring64"}[mode]
    base = {"name": "n", "offset": 0, "length": 1, "total_length": 3, "encoding": enc, "data": bytes(8), "shape": (3,)}
    return ProtectedChunk(**(base | fields))


HOSTILE = [
    ({"total_length": 1 << 40, "shape": ()}, r"site B: array 'n' declares shape \(1099511627776,\) of 1099511627776"),
    ({"total_length": 1 << 40, "shape": (1 << 20, 1 << 20)}, r"declares shape \(1048576, 1048576\)"),
    ({"name": "secret"}, r"site B sent array 'secret', which round 1's plan does not have \(planned: n, x\)"),
    ({"encoding": "f64"}, r"site B: array 'n' comes encoded 'f64'; round 1's plan has integer sums"),
    ({"length": 0, "data": b""}, r"site B: a chunk of array 'n' carries no element"),
]


@pytest.mark.parametrize("mode", ["none", "secagg", "paillier"])
@pytest.mark.parametrize(("fields", "message"), HOSTILE)
def test_aggregator__a_chunk_outside_the_plan_is_refused_before_anything_is_allocated(
    mode, fields, message, paillier_key
):
    agg = _aggregator(mode, paillier_key)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=message):
            agg.add("B", _chunk(mode, **fields))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB
    assert not agg.complete("B")


def test_aggregator__without_a_plan_a_declared_length_is_still_capped(paillier_key):
    for mode in ("none", "secagg", "paillier"):
        agg = _aggregator(mode, paillier_key, plan=None)
        with pytest.raises(ProtocolError, match="without a round plan at most 16777216 are accepted"):
            agg.add("B", _chunk(mode, total_length=1 << 40, shape=()))


@pytest.mark.parametrize("mode", ["none", "secagg"])
def test_aggregator__surplus_chunks_are_refused_and_every_planned_array_must_arrive(mode):
    agg = _aggregator(mode, None)
    protector = get_mode(mode).protector if mode == "none" else None
    if protector is None:  # secagg's masks need round keys; plain ring words suffice for the checks
        for off in range(3):
            agg.add("B", _chunk(mode, offset=off))
    else:
        for c in protector(CTX, "B").protect("n", 0, 3, np.arange(3)):
            agg.add("B", c)
    with pytest.raises(ProtocolError, match="site B sent more than 3 elements of 'n'"):
        agg.add("B", _chunk(mode, offset=2))
    assert not agg.complete("B")  # 'x' is planned and has not arrived


def test_aggregator__chunks_as_planned_are_summed():
    mode = get_mode("none")
    agg = mode.aggregator(CTX, expected=PLAN)
    x = np.arange(6.0).reshape(3, 2)
    for site in CTX.participants:
        p = mode.protector(CTX, site)
        for c in [*p.protect("n", 0, 3, np.array([1, 2, 3])), *p.protect("x", 0, 6, x.reshape(-1), (3, 2))]:
            agg.add(site, c)
    totals = agg.result()
    assert totals["n"].tolist() == [2, 4, 6] and totals["x"].tolist() == (2 * x).tolist()


# --- the site: the coordinator's round arrays are bounded by the signed spec ----------------------


def _round_chunk(name: str, total: int, shape=()) -> common_pb2.SumsChunk:
    return common_pb2.SumsChunk(
        name=name, offset=0, length=1, total_length=total, encoding="f64", data=bytes(8), shape=shape
    )


def test_round_input_limits__variants_times_the_widths_the_spec_allows():
    spec = JobSpec(
        analyses=("pca", "glm"), pheno_names=("CC",), covar_names=("AGE", "PC1-PC3"), options={"pca": "3"}
    ).validated()
    assert round_input_limits(spec, 100) == {
        "variants": InputLimit(100),
        "freq": InputLimit(100),
        "v": InputLimit(100, pca.basis_width(3)),
        "w": InputLimit(100, 3),
        "coef": InputLimit(100, 7),  # [1, g, AGE, PC1, PC2, PC3] and chrX's SEX
        "firth": InputLimit(100),
    }
    assert round_input_limits(JobSpec(analyses=("freq",)).validated(), 100) == {"variants": InputLimit(100)}


PCA_SPEC = JobSpec(analyses=("pca",), options={"pca": "3"})


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (_round_chunk("coef", 1 << 40), r"round array 'coef', which no round of this job carries"),
        (_round_chunk("variants", 1 << 40), r"declares shape \(1099511627776,\) of 1099511627776 elements"),
        (_round_chunk("variants", 101), r"needs it at most 100 long, one-dimensional"),
        (
            _round_chunk("v", 100 * 17, (1, 1700)),
            r"'v' declares shape \(1, 1700\) of 1700 elements; .* at most 100 × 20",
        ),
        (_round_chunk("w", 100 * 3, (300,)), r"'w' declares shape \(300,\) .* at most 100 × 3"),
        (_round_chunk("w", 100 * 3, (10, 10, 3)), r"'w' declares shape \(10, 10, 3\)"),
    ],
)
def test_round_data__an_array_beyond_the_signed_spec_is_refused_before_allocating(chunk, message):
    assembler = RoundDataAssembler(round_input_limits(PCA_SPEC.validated(), 100))
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=message):
            assembler.add(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB
    for name, total, shape in (("variants", 100, ()), ("v", 2000, (100, 20)), ("w", 300, (100, 3))):
        assembler.add(_round_chunk(name, total, shape))  # what a round needs is accepted


def test_check_round_inputs__an_array_with_other_rows_than_the_round_has_variants_is_refused():
    check_round_inputs({"freq": np.zeros(5), "v": np.zeros((5, 2))}, 5)
    with pytest.raises(
        ProtocolError, match=r"round array 'v' has shape \(4, 2\), not one row for each of the round's 5"
    ):
        check_round_inputs({"freq": np.zeros(5), "v": np.zeros((4, 2))}, 5)


def test_round_data__without_limits_the_number_of_arrays_is_bounded():
    assembler = RoundDataAssembler()
    for i in range(8):
        assembler.add(_round_chunk(f"a{i}", 1))
    with pytest.raises(ProtocolError, match="more than 8 round arrays"):
        assembler.add(_round_chunk("a8", 1))


# --- caps on rounds and attempts ------------------------------------------------------------------

SLACK = MAX_ATTEMPTS_PER_ROUND - 1  # rounds a restart without a dropped site may have abandoned


@pytest.mark.parametrize(
    ("analyses", "options", "phenos", "covars", "rounds"),
    [
        (("freq", "hardy"), {}, (), (), 3),  # the cohort, chrX/chrY's males, chrX's females
        (("freq", "missing"), {}, (), (), 2),
        (("freq",), {"mind": "0.1", "geno": "0.1", "maf": "0.01"}, (), (), 3),
        (("pca",), {"pca": "10"}, (), (), 1 + pca.MAX_ITERATIONS),
        # --glm: two describe rounds, then per design (autosomes, chrX, chrY) a linear round and logistic ones
        (("pca", "glm"), {"pca": "2"}, ("QT",), ("PC1", "PC2"), 1 + 400 + 1 + 2 + 3 * (1 + 166)),
        (("glm",), {}, ("CC", "QT"), ("AGE",), 2 + 3 * (1 + 2 * 166)),
        (("glm",), {"glm": "no-firth"}, ("CC",), (), 2 + 3 * (1 + 15)),
        (("glm",), {"glm": "firth"}, ("CC",), (), 2 + 3 * (1 + 151)),
        (("assoc", "model"), {}, ("CC",), (), 1),
    ],
)
def test_round_caps__what_each_analysis_needs(analyses, options, phenos, covars, rounds):
    spec = JobSpec(analyses=analyses, options=options, pheno_names=phenos, covar_names=covars).validated()
    assert round_caps(spec) == RoundCaps(rounds=rounds + SLACK, attempts=MAX_ATTEMPTS_PER_ROUND)


def test_round_tally__one_round_or_attempt_too_many_is_refused():
    tally = RoundTally(RoundCaps(rounds=2, attempts=2))
    tally.admit(1, 0)
    tally.admit(1, 0)  # the key request and the round of one attempt count once
    tally.admit(1, 3)
    with pytest.raises(ProtocolError, match=r"round 1, attempt 4: this site has computed 2 attempts of the round"):
        tally.admit(1, 4)
    tally.admit(2, 4)
    with pytest.raises(ProtocolError, match="needs at most 2 rounds and this site has computed them all"):
        tally.admit(3, 4)


class _LogisticJob:
    """The parts of GlmJob a LogisticFit uses: one variant, no covariates, A1 = ALT."""

    def __init__(self, mode: str):
        self.n_var, self.firth_mode, self.a1_is_ref = 1, mode, np.zeros(1, dtype=bool)

    def drop_constant_in_mask(self, spec, xtx, n):
        return []

    def categorical_levels(self, spec, kept):
        return {}

    two_valued: dict = {}

    def skip(self, pheno, why):
        raise AssertionError(why)


def _worst_case_sums(round_no: int) -> dict[str, np.ndarray]:
    """Sums that never converge: after a first Newton step of 1600 (Σ|Δβ|), the information is the
    identity and the score pushes β by 3000 per step (no divergence test fires, the logistic fit
    runs to its iteration limit and fails with |β| > 8000), and the log-likelihood keeps falling
    (every Firth half-step is taken, until Firth's iteration limit)."""
    if round_no == 1:  # β = 0: 100 samples, Σg = 100, Σg² = 150, 50 cases
        h = {"lg.hc": [[25.0]], "lg.hg": [[25.0]], "lg.hgg": [37.5], "lg.sc": [[0.0]], "lg.sg": [1e4]}
        first = {"lg.xtx": [[100.0]], "lg.n": [100], "lg.ncase": [50]}
    else:
        h = {"lg.hc": [[1.0]], "lg.hg": [[0.0]], "lg.hgg": [1.0], "lg.sc": [[1500.0]], "lg.sg": [1500.0]}
        first = {}
    firth = {"lg.ll": [-1e3 * round_no], "lg.t3": [[0.0]], "lg.t2": [[0.0]], "lg.t1": [[0.0]], "lg.t0": [0.0]}
    return {k: np.asarray(v, dtype=np.float64) for k, v in (h | first | firth).items()}


@pytest.mark.parametrize("mode", ["no-firth", "firth", "fallback"])
def test_glm_logistic_max_rounds__is_what_a_fit_that_never_converges_takes(mode):
    fit = glm_logistic.LogisticFit(_LogisticJob(mode), PhenoSpec("CC", True, (), ()))
    plan, rounds = fit.first_plan(), 0
    while plan is not None:
        rounds += 1
        assert rounds <= glm_logistic.max_rounds(mode)
        plan = fit.step(_worst_case_sums(rounds))
    assert rounds == glm_logistic.max_rounds(mode)
    assert fit.unfinished[0] or fit.err[0] != 0  # it ended at a limit, not by converging


# --- attacks through the real coordinator over mTLS ----------------------------------------------


class _HostileSite(FakeSite):
    """A participating site that sends the coordinator one crafted chunk in round 1."""

    def __init__(self, *args, chunks, **kwargs):
        self.hostile = chunks
        super().__init__(*args, **kwargs)

    def chunks(self, ctx):
        return self.hostile


def _chunks_of(kind: str) -> list[ProtectedChunk]:
    one = {"name": "hom_ref", "offset": 0, "length": 1, "total_length": 3, "encoding": "i64", "data": bytes(8)}
    return {
        "2^40 elements": [ProtectedChunk(**(one | {"total_length": 1 << 40}))],
        "2^28 elements": [ProtectedChunk(**(one | {"total_length": 1 << 28}))],  # 2 GiB of int64 before O3
        "huge shape": [ProtectedChunk(**(one | {"total_length": 1 << 40, "shape": (1 << 20, 1 << 20)}))],
        "not in the plan": [ProtectedChunk(**(one | {"name": "genotypes"}))],
        "too many chunks": [ProtectedChunk(**(one | {"offset": i % 3})) for i in range(4)],
        "empty chunks": [ProtectedChunk(**(one | {"length": 0, "data": b""}))] * 3,
    }[kind]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("2^40 elements", "site EUR: array 'hom_ref' declares shape (1099511627776,) of 1099511627776 elements"),
        ("2^28 elements", "round 1's plan has shape (3,) (3 elements); refused before allocating"),
        ("huge shape", "site EUR: array 'hom_ref' declares shape (1048576, 1048576)"),
        ("not in the plan", "site EUR sent array 'genotypes', which round 1's plan does not have"),
        ("too many chunks", "site EUR sent more than 3 elements of 'hom_ref'"),
        ("empty chunks", "site EUR: a chunk of array 'hom_ref' carries no element"),
    ],
)
def test_o3_hostile_site__chunks_outside_the_round_plan_fail_the_job_and_allocate_nothing(
    session_pki, coordinator, kind, message
):
    coord, port = coordinator
    hostile = _HostileSite(
        session_pki,
        port,
        "EUR",
        chunks=[
            c
            for n in ("hom_ref", "het", "hom_alt", "missing")
            for c in get_mode("none").protector(CTX, "EUR").protect(n, 0, 3, np.arange(3))
        ],
    )
    sites = [FakeSite(session_pki, port, "AFR"), hostile]
    try:
        _wait_connected(coord, ["AFR", "EUR"])
        with Client(analyst_profile(session_pki, port)) as c:
            spec = JobSpec(analyses=("geno-counts",), out_name="g", privacy="none")
            assert c.wait(c.submit(spec).job_id).state == "DONE"  # an honest job first: imports, caches
            hostile.hostile = _chunks_of(kind)
            tracemalloc.start()
            try:
                job = c.wait(c.submit(spec).job_id, raise_on_failure=False)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert job.state == "FAILED"
        assert message in job.error
        assert peak < 4 * MB, f"the coordinator's process allocated {peak / MB:.0f} MB"
    finally:
        for s in sites:
            s.close()


# --- a deviating coordinator asks the real site agents for one round or attempt too many ---------


def test_caps__a_deviating_coordinator_asking_for_more_rounds_than_the_spec_needs_is_refused(
    session_pki, consortium, monkeypatch
):
    from coordinator import engine

    class Endless:  # the same counts round again and again: each would be a release
        def next_round(self, sums):
            return RoundPlan("allele_counts")

        def log_lines(self):
            return []

    monkeypatch.setattr(engine, "plan_job", lambda spec, ctx=None, variants=None: Endless())
    coord, port = consortium
    spec = JobSpec(analyses=("freq",), out_name="f")
    caps = round_caps(spec.validated())
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(spec).job_id, raise_on_failure=False)
        log = "\n".join(c.get(job.job_id).log)
    assert job.state == "FAILED"
    assert (
        f"round {caps.rounds + 1}: the job the analyst signed needs at most {caps.rounds} rounds and this site has "
        "computed them all; refusing more (each round is a release)"
    ) in job.error
    assert f"round {caps.rounds} sums received from all sites" in log  # every round up to the cap ran


def test_caps__a_deviating_coordinator_retrying_a_round_once_too_often_is_refused(session_pki, consortium, monkeypatch):
    from coordinator import engine

    original = engine._JobRunner.run_round

    def retried(self, spec, round_no, plan, n_variants, **kw):  # attempts of round 1 that nobody dropped out of
        for _ in range(MAX_ATTEMPTS_PER_ROUND):
            original(self, spec, round_no, plan, n_variants, **kw)
            self.attempt += 1
        return original(self, spec, round_no, plan, n_variants, **kw)

    monkeypatch.setattr(engine._JobRunner, "run_round", retried)
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert job.state == "FAILED"
    assert (
        f"round 1, attempt {MAX_ATTEMPTS_PER_ROUND}: this site has computed {MAX_ATTEMPTS_PER_ROUND} attempts of "
        f"the round, the most it runs ({MAX_ATTEMPTS_PER_ROUND}); refusing more"
    ) in job.error
