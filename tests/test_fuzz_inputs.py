"""Bad input, generated: job specs, sample tables and JobSpec messages from arbitrary bytes. Each
either works or raises a FedstatError whose message names the problem; nothing else escapes, and
no message echoes a long run of the input."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstat.data.samples import read_sample_table
from fedstat.errors import FedstatError, InputError
from fedstat.jobs import KNOWN_ANALYSES, JobSpec
from fedstat.pki import sign_statement
from fedstat.protocol import spec_from_pb
from fedstat.wire import common_pb2

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NASTY = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["'; DROP TABLE jobs;--", "../../etc/passwd", "$(rm -rf /)", "a\nb", "\x00", "PC1-PC99999999", "x" * 5000]),
)  # fmt: skip
NAMES = st.one_of(st.sampled_from(["QT", "CC", "AGE", "SEX", "PC1-PC3"]), NASTY)


@FUZZ
@given(
    analyses=st.lists(st.one_of(st.sampled_from(KNOWN_ANALYSES), NASTY), max_size=4),
    phenos=st.lists(NAMES, max_size=3),
    covars=st.lists(NAMES, max_size=3),
    privacy=st.one_of(st.sampled_from(["none", "secagg", "dp", "paillier", "paillier,dp", "secagg,dp"]), NASTY),
    purpose=st.one_of(st.sampled_from(["", "GRU", "HMB", "DS:MONDO:0005148", "POA,COMMERCIAL"]), NASTY),
    sites=st.lists(st.one_of(st.sampled_from(["AFR", "EUR"]), NASTY), max_size=3),
    out=st.one_of(st.just("run1"), NASTY),
    block=st.integers(min_value=-5, max_value=1 << 40),
    options=st.dictionaries(
        st.one_of(st.sampled_from(["glm", "dp_epsilon", "dp_delta", "genome_assembly"]), NASTY), NASTY, max_size=3
    ),
)
def test_job_spec_validation__only_clear_errors(analyses, phenos, covars, privacy, purpose, sites, out, block, options):
    spec = JobSpec(
        analyses=tuple(analyses),
        pheno_names=tuple(phenos),
        covar_names=tuple(covars),
        privacy=privacy,
        purpose=purpose,
        sites=tuple(sites),
        out_name=out,
        block_size=block,
        options=options,
    )
    try:
        spec.validated()
    except FedstatError as exc:
        message = str(exc)
        assert message and len(message) < 1000, message[:200]
        assert "x" * 100 not in message  # a long input is never echoed whole


def test_job_spec_validation__named_limits():
    base = dict(analyses=("glm",), pheno_names=("QT",))
    for spec, message in (
        (JobSpec(**base, options={"shell": "1"}), "unknown job option"),
        (JobSpec(**base, covar_names=("PC1-PC5000",)), "names more than 1000 columns"),
        (JobSpec(**base, sites=("AFR; rm -rf",)), "invalid site name"),
        (JobSpec(**base, block_size=1 << 30), "block size must be between"),
        (JobSpec(**base, options={"glm": "x" * 1000}), "job option glm must be text of at most 200"),
    ):
        with pytest.raises(InputError, match=message):
            spec.validated()
    assert spec_from_pb(common_pb2.JobSpec(analyses=["freq"])).privacy == "secagg"  # unset: the default mode


@FUZZ
@given(data=st.binary(max_size=400))
def test_job_spec_message__arbitrary_bytes(data):
    try:
        pb = common_pb2.JobSpec.FromString(data)
    except DecodeError:
        return
    try:
        spec_from_pb(pb).validated()
    except FedstatError:
        pass


CELL = st.one_of(
    st.sampled_from(["1", "2", "NA", "-9", "", "0.5", "1e308", "nan", "inf", "-"]),
    st.text(string.printable, max_size=6),
)


@FUZZ
@given(
    header=st.lists(
        st.one_of(st.sampled_from(["#FID", "IID", "#IID", "QT", "CC", "consent"]), st.text(max_size=5)), max_size=5
    ),
    rows=st.lists(st.lists(CELL, max_size=6), max_size=6),
    sep=st.sampled_from(["\t", " ", ",", "\t\t"]),
)
def test_sample_table__only_clear_errors(tmp_path: Path, header, rows, sep):
    path = tmp_path / "samples.tsv"
    path.write_text("\n".join([sep.join(header), *(sep.join(r) for r in rows)]) + "\n")
    try:
        table = read_sample_table(path)
    except FedstatError as exc:
        assert str(path) in str(exc)
        return
    assert len(table.iid) == len(set(table.iid))


@FUZZ
@given(data=st.binary(max_size=300))
def test_sample_table__arbitrary_bytes(tmp_path: Path, data):
    path = tmp_path / "samples.tsv"
    path.write_bytes(data)
    try:
        read_sample_table(path)
    except FedstatError:
        pass


# --- message handlers ---------------------------------------------------------------------------

_AGENTS: dict[str, object] = {}


def _site_agent(session_pki, tmp_path_factory):
    """One in-process site agent on the GWAS fixture, not connected: replies collect in a queue."""
    import queue

    from fedstat.config import DatasetConfig, SiteConfig, SitePolicy
    from site_agent.agent import SiteAgent
    from tests.conftest import GWAS

    if "AFR" not in _AGENTS:
        cfg = SiteConfig(
            path=Path("site.toml"),
            coordinator="localhost:1",
            state_dir=tmp_path_factory.mktemp("fuzz-site"),
            tls=session_pki.tls("AFR"),
            datasets=(DatasetConfig(name="main", path=GWAS / "AFR"),),
            policy=SitePolicy(),
        )
        agent = SiteAgent(cfg)
        agent.load_datasets()
        agent._outbox = queue.Queue()
        _AGENTS["AFR"] = agent
    return _AGENTS["AFR"]


def _message_kinds():
    from fedstat.wire import site_pb2

    job_ids = st.sampled_from(["J1", "J2", "", "x" * 300])
    spec = st.builds(
        common_pb2.JobSpec,
        analyses=st.lists(st.one_of(st.sampled_from(KNOWN_ANALYSES), NASTY), max_size=3),
        pheno_names=st.lists(NAMES, max_size=2),
        covar_names=st.lists(NAMES, max_size=2),
        privacy=st.one_of(st.sampled_from(["none", "secagg", "dp"]), NASTY),
        options=st.dictionaries(st.sampled_from(["dp_epsilon", "dp_delta", "glm"]), NASTY, max_size=2),
    )
    return st.one_of(
        st.builds(
            lambda j, s, a, cert: site_pb2.CoordinatorMessage(
                offer=site_pb2.JobOffer(job_id=j, spec=s, analyst=a, analyst_certificate=cert)
            ),
            job_ids,
            spec,
            NASTY,
            st.one_of(st.just(b""), st.binary(max_size=200)),
        ),
        st.builds(lambda j: site_pb2.CoordinatorMessage(keys_request=site_pb2.KeysRequest(job_id=j)), job_ids),
        st.builds(
            lambda j, p, a: site_pb2.CoordinatorMessage(
                keys_request=site_pb2.KeysRequest(job_id=j, participants=p, attempt=a)
            ),
            job_ids,
            st.lists(st.sampled_from(["AFR", "EAS", "EUR", "x"]), max_size=4),
            st.integers(0, 3),
        ),
        st.builds(
            lambda j, a, t, o, h: site_pb2.CoordinatorMessage(
                intersection=site_pb2.HarmonizeIntersection(job_id=j, attempt=a, total=t, offset=o, hashes=h)
            ),
            job_ids,
            st.integers(0, 3),
            st.integers(0, 1 << 62),
            st.integers(0, 1 << 62),
            st.binary(max_size=64),
        ),
        st.builds(
            lambda j, a, b: site_pb2.CoordinatorMessage(
                harmonize=site_pb2.HarmonizeRelay(
                    job_id=j, attempt=a, shares=[site_pb2.HarmonizeShare(sender="EAS", recipient="AFR", ciphertext=b)]
                )
            ),
            job_ids,
            st.integers(0, 3),
            st.binary(max_size=64),
        ),
        st.builds(
            lambda j, t, o, idx: site_pb2.CoordinatorMessage(
                plan=site_pb2.VariantPlanChunk(job_id=j, total=t, offset=o, local_index=idx, flip=idx[: len(idx) // 8])
            ),
            job_ids,
            st.integers(0, 1 << 62),
            st.integers(0, 1 << 62),
            st.binary(max_size=64),
        ),
        st.builds(
            lambda j, r, names: site_pb2.CoordinatorMessage(
                round=site_pb2.RoundRequest(
                    job_id=j, round=r, analysis="allele_counts", arrays=names, participants=["AFR"]
                )
            ),
            job_ids,
            st.integers(0, 5),
            st.lists(NASTY, max_size=2),
        ),
        st.builds(
            lambda j, r: site_pb2.CoordinatorMessage(cancel=site_pb2.CancelJob(job_id=j, reason=r)),
            job_ids,
            NASTY,
        ),
        st.binary(max_size=300).map(_parse_coordinator_message),
        st.tuples(st.just("valid offer"), st.sampled_from(["J1", "J2"]), st.sampled_from(["none", "secagg"])),
    )


def _parse_coordinator_message(data: bytes):
    from fedstat.wire import site_pb2

    try:
        return site_pb2.CoordinatorMessage.FromString(data)
    except DecodeError:
        return site_pb2.CoordinatorMessage()


@FUZZ
@given(messages=st.lists(st.deferred(_message_kinds), min_size=1, max_size=5))
def test_site_agent_dispatch__any_coordinator_message_is_handled(session_pki, tmp_path_factory, messages):
    """Whatever the coordinator (or a forger on its stream) sends, the agent's dispatcher returns, the
    connection is kept, and every reply is a well-formed message about the job it concerns."""
    from fedstat.wire import site_pb2

    agent = _site_agent(session_pki, tmp_path_factory)
    for msg in messages:
        if isinstance(msg, tuple):  # a well-formed offer from a real analyst, to reach the later handlers
            _, job_id, privacy = msg
            spec = common_pb2.JobSpec(analyses=["freq"], privacy=privacy)
            signed = sign_statement(session_pki.tls("alice").key.read_bytes(), spec_from_pb(spec).signing_bytes())
            msg = site_pb2.CoordinatorMessage(
                offer=site_pb2.JobOffer(
                    job_id=job_id,
                    spec=spec,
                    analyst="alice",
                    analyst_certificate=session_pki.tls("alice").cert.read_bytes(),
                    spec_signature=signed,
                )
            )
        agent._dispatch(msg)  # never raises
    for job in list(agent._jobs.values()):
        job.end()
    agent._jobs.clear()
    while not agent._outbox.empty():
        reply = agent._outbox.get_nowait()
        kind = reply.WhichOneof("kind")
        assert kind in (
            "decision",
            "error",
            "keys",
            "policy",
            "round_key",
            "sums",
            "progress",
            "harmonize_shares",
            "harmonize_tag",
        ), kind
        if kind == "decision" and not reply.decision.accept:
            assert reply.decision.reason and len(reply.decision.reason) < 1000
            assert "x" * 100 not in reply.decision.reason


@FUZZ
@given(data=st.binary(max_size=400))
def test_coordinator_routing__arbitrary_site_messages(data):
    """The coordinator routes any SiteMessage a site sends without raising, and decodes any sums or
    keys chunk in it to a value or a clear error."""
    from coordinator.sessions import SiteRegistry
    from fedstat.protocol import HashAssembler, KeysAssembler, chunk_from_pb
    from fedstat.wire import site_pb2

    try:
        msg = site_pb2.SiteMessage.FromString(data)
    except DecodeError:
        return
    registry = SiteRegistry()
    inbox = registry.open_inbox(
        getattr(msg, msg.WhichOneof("kind") or "hello").job_id
        if msg.WhichOneof("kind") not in (None, "hello", "policy")
        else "J"
    )
    registry.route("AFR", msg)
    assert inbox.qsize() <= 1
    if msg.WhichOneof("kind") == "sums":
        try:
            chunk_from_pb(msg.sums.chunk)
        except FedstatError:
            pass
    if msg.WhichOneof("kind") == "keys":
        try:
            KeysAssembler().add(msg.keys)
        except FedstatError:
            pass
        try:
            HashAssembler("hashes", max_hashes=1000).add(msg.keys)
        except FedstatError:
            pass
