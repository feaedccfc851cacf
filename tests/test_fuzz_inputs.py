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
