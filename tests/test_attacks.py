"""An analyst with only the ``submit`` role tries to difference one participant out (issue 14's A1,
A3, A4, A5; A2 is in test_e2e_consortium, C1 in test_job_protocol): each attack is refused by the
sites' release gate with its reason, through the real site agents and coordinator over mutual TLS.

The three sites hold the GWAS fixture (tests/data/gwas) with sample tables edited per attack; every
site runs the default policy (release ledger ``min_group`` 10).
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from fedstat.client import Client
from fedstat.config import DatasetConfig
from fedstat.errors import JobFailed
from fedstat.jobs import JobSpec
from fedstat.pki import sign_statement
from tests.conftest import GWAS, GWAS_SITES, analyst_profile, missing_rates

LEDGER = "together with earlier releases of dataset main, these sums would single out fewer than 10 participants"


def _edit_sites(coord, agents, tmp_path: Path, edit) -> None:
    """Give every site a copy of its dataset whose samples.tsv ``edit(site, header, rows)`` changed,
    and restart its agent on it (state directory kept: its ledger and audit log go on)."""
    for site in GWAS_SITES:
        data = tmp_path / f"{site}-data"
        shutil.copytree(GWAS / site, data)
        header, *rows = (data / "samples.tsv").read_text().splitlines()
        header, rows = edit(site, header.split("\t"), [r.split("\t") for r in rows])
        (data / "samples.tsv").write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
        old = agents[site]
        old.stop()
        from site_agent.agent import SiteAgent

        agent = SiteAgent(dataclasses.replace(old.config, datasets=(DatasetConfig(name="main", path=data),)))
        threading.Thread(target=agent.run, daemon=True).start()
        agents[site] = agent
    deadline = time.monotonic() + 20
    while not all(coord.registry.get(s) and coord.registry.get(s).hello.policies for s in GWAS_SITES):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)


def _submit(port: int, session_pki, spec: JobSpec):
    with Client(analyst_profile(session_pki, port)) as c:
        return c.wait(c.submit(spec).job_id, raise_on_failure=False)


def test_a1_purpose__hmb_then_gru_differing_by_one_participant_is_refused(
    session_pki, consortium, consortium_agents, tmp_path
):
    coord, port = consortium

    def consent(site, header, rows):
        # at AFR one participant consented to health/medical research only; GRU jobs leave them out
        return [*header, "consent"], [[*r, "HMB" if site == "AFR" and i == 7 else "GRU"] for i, r in enumerate(rows)]

    _edit_sites(coord, consortium_agents, tmp_path, consent)
    spec = dict(analyses=("geno-counts",), out_name="g")
    assert _submit(port, session_pki, JobSpec(purpose="HMB", **spec)).state == "DONE"
    job = _submit(port, session_pki, JobSpec(purpose="GRU", **spec))
    assert job.state == "FAILED"
    assert job.error.startswith("site AFR: allele_counts: " + LEDGER)
    # nothing of the second job reached the analyst
    with Client(analyst_profile(session_pki, port)) as c:
        assert not c.get(job.job_id).result_files


def test_a3_mind__threshold_dropping_one_participant_is_refused_after_a_job_without_it(
    session_pki, consortium, consortium_agents, tmp_path
):
    _, port = consortium
    # EUR has missing calls: pick a --mind threshold that removes exactly its most-missing participant
    _, rates = missing_rates("EUR", tmp_path / "cache")
    assert rates[0] > rates[1]
    threshold = (rates[0] + rates[1]) / 2
    assert _submit(port, session_pki, JobSpec(analyses=("freq",), out_name="f")).state == "DONE"
    job = _submit(
        port, session_pki, JobSpec(analyses=("freq",), out_name="m", options={"mind": repr(float(threshold))})
    )
    assert job.state == "FAILED"
    assert job.error.startswith("site EUR: allele_counts: " + LEDGER)


def test_a4_one_contributing_site__sites_with_nobody_left_refuse_instead_of_sending_zeros(
    session_pki, consortium, consortium_agents, tmp_path
):
    coord, port = consortium

    def only_afr(site, header, rows):
        pc1 = header.index("PC1")  # complete at AFR: only the other sites have nobody left
        return [*header, "ONLY"], [[*r, r[pc1] if site == "AFR" else "NA"] for r in rows]

    _edit_sites(coord, consortium_agents, tmp_path, only_afr)
    job = _submit(port, session_pki, JobSpec(analyses=("glm",), pheno_names=("ONLY",), out_name="o"))
    assert job.state == "FAILED"
    assert "glm_linear: no participant of this site is left for this round" in job.error
    assert job.error.startswith(("site EAS:", "site EUR:"))
    # with --require-pheno the empty sites refuse at the offer, before anything is computed
    job = _submit(
        port,
        session_pki,
        JobSpec(analyses=("glm",), pheno_names=("ONLY",), out_name="o", options={"require_pheno": "1"}),
    )
    assert job.state == "FAILED" and "refused the job" in job.error and "below this site's minimum" in job.error


def test_a5_two_phenotypes_whose_missingness_differs_by_one_are_refused_within_one_job(
    session_pki, consortium, consortium_agents, tmp_path
):
    coord, port = consortium

    def twin(site, header, rows):
        # Y1 complete everywhere; Y2 the same values with one participant at EAS missing
        pc1 = header.index("PC1")
        out = [[*r, r[pc1], "NA" if (site == "EAS" and i == 3) else r[pc1]] for i, r in enumerate(rows)]
        return [*header, "Y1", "Y2"], out

    _edit_sites(coord, consortium_agents, tmp_path, twin)
    spec = JobSpec(analyses=("glm",), pheno_names=("Y1", "Y2"), covar_names=("AGE",), out_name="t")
    job = _submit(port, session_pki, spec)
    assert job.state == "FAILED"
    assert job.error.startswith("site EAS: glm_linear: " + LEDGER)
    assert "--require-pheno" in job.error  # the refusal says what to do
    # the job's first round (over everyone) was released before the refusal: from now on a cohort that
    # differs from everyone by the few participants missing QT or QT2 is refused too
    late = _submit(port, session_pki, dataclasses.replace(spec, options={"require_pheno": "1"}))
    assert late.state == "FAILED" and late.error.startswith("site EAS: glm_describe: " + LEDGER)


def test_repeated_identical_job_is_never_refused(session_pki, consortium, tmp_path):
    _, port = consortium
    spec = JobSpec(
        analyses=("freq", "glm"), pheno_names=("QT", "CC"), covar_names=("AGE",), out_name="r",
        options={"require_pheno": "1"},
    )  # fmt: skip
    for _ in range(3):
        assert _submit(port, session_pki, spec).state == "DONE"
    with pytest.raises(JobFailed):
        with Client(analyst_profile(session_pki, port)) as c:
            c.wait(c.submit(dataclasses.replace(spec, options={})).job_id)  # not the same cohort: QT's few NAs


# --- a deviating coordinator (C2): jobs it forges or changes are refused by every site


def _wait_job(port: int, session_pki, job_id: str):
    with Client(analyst_profile(session_pki, port)) as c:
        return c.wait(job_id, raise_on_failure=False)


def test_c2_forged_job__a_spec_alice_never_signed_is_refused_by_every_site(session_pki, consortium, tmp_path):
    coord, port = consortium
    alice_cert = session_pki.tls("alice").cert.read_bytes()
    spec = JobSpec(analyses=("geno-counts",), out_name="g")
    # the coordinator holds alice's certificate (public) but not her key
    forged = coord.engine.submit(spec, "alice", certificate=alice_cert)
    job = _wait_job(port, session_pki, forged)
    assert job.state == "FAILED"
    assert "refused the job: the job spec is not signed by analyst alice" in job.error
    # a real signature of another spec does not carry over (here: the purpose changed after signing)
    signature = sign_statement(session_pki.tls("alice").key.read_bytes(), spec.validated().signing_bytes())
    changed = dataclasses.replace(spec, purpose="POA")
    job = _wait_job(
        port, session_pki, coord.engine.submit(changed, "alice", certificate=alice_cert, signature=signature)
    )
    assert job.state == "FAILED" and "not signed by analyst alice (or was changed after signing)" in job.error
    # the analyst's own client signs: the same spec runs
    job = _wait_job(port, session_pki, coord.engine.submit(spec, "alice", certificate=alice_cert, signature=signature))
    assert job.state == "DONE", job.error
    # and the site's audit log records the signature's digest with the offer
    from site_agent.audit_verify import show

    offers = [r for r in show(tmp_path / "AFR" / "audit.log") if r["event"] == "offer"]
    assert [("signature" in r, r["decision"]) for r in offers] == [
        (False, "refused"),
        (True, "refused"),
        (True, "accepted"),
    ]


# --- a deviating coordinator (C3): rounds steered at some sites are refused, never unmasked


def _deviate(monkeypatch, change) -> None:
    """Make the coordinator pass every message it sends to a site through ``change(site, kind, msg)``."""
    from coordinator import engine

    original = engine._JobRunner.send

    def send(self, site: str, **kind):
        ((name, msg),) = kind.items()
        return original(self, site, **{name: change(site, name, msg)})

    monkeypatch.setattr(engine._JobRunner, "send", send)


def test_c3_steered_round__a_mind_threshold_the_spec_does_not_name_is_refused(session_pki, consortium, monkeypatch):
    _, port = consortium

    def steer(site, kind, msg):
        if kind == "round" and msg.analysis == "sample_missing":
            msg = type(msg).FromString(msg.SerializeToString())
            msg.params["mind"] = "0.5" if site == "EUR" else "-1"  # attack C3: EUR alone keeps a cohort
        return msg

    _deviate(monkeypatch, steer)
    job = _submit(port, session_pki, JobSpec(analyses=("freq",), out_name="m", options={"mind": "0.2"}))
    assert job.state == "FAILED"
    assert "round 'sample_missing' does not belong to the job the analyst signed: its --mind threshold" in job.error


def test_c3_round_other_than_the_one_keys_were_signed_for_is_never_computed(session_pki, consortium, monkeypatch):
    _, port = consortium

    def steer(site, kind, msg):
        if kind == "key_request" and site == "EAS":
            msg = type(msg).FromString(msg.SerializeToString())
            msg.round_digest = "0" * 64  # EAS is told of another round than the others
        return msg

    _deviate(monkeypatch, steer)
    job = _submit(port, session_pki, JobSpec(analyses=("freq",), out_name="k"))
    assert job.state == "FAILED"
    # EAS refuses the round its key was not signed for; the others find EAS's signature does not
    # match the round they were asked for: nobody's sums are unmasked
    assert (
        "than the round this site's key was signed for" in job.error
        or "round key signature does not verify" in job.error
    ), job.error


def test_check_round__parameters_outside_the_signed_spec_are_refused():
    from fedstat.errors import ProtocolError
    from fedstat.jobs import check_round

    spec = JobSpec(
        analyses=("glm", "assoc"), pheno_names=("CC",), covar_names=("AGE",), options={"mind": "0.1"}
    ).validated()
    check_round(spec, "sample_missing", {"mind": "0.1"})
    check_round(spec, "assoc_counts", {"pheno": "CC"})
    check_round(spec, "glm_describe", {"columns": '["CC", "AGE"]'})
    for computation, params, why in [
        ("sample_missing", {"mind": "-1"}, "its --mind threshold is not the job's"),
        ("assoc_counts", {"pheno": "QT"}, "no --assoc/--model on this phenotype"),
        ("glm_describe", {"columns": '["CC", "SECRET"]'}, "describes columns the job does not name"),
        ("glm_linear", {"spec": '[{"name": "QT", "covars": [], "mask_covars": []}]'}, "not the job's"),
        ("pca_multiply", {}, "the job has no --pca"),
        ("allele_counts", {}, "the job has no --freq"),
        ("assoc_counts", {"pheno": "CC", "extra": "1"}, r"unexpected parameters \['extra'\]"),
        ("who_knows", {}, "unknown computation"),
    ]:
        with pytest.raises(ProtocolError, match=why):
            check_round(spec, computation, params)
