"""Every offer leaves a hash-chained audit record at each site: who, what, the decision and why;
`fedstat site audit verify` passes on the untouched log and fails once a record is edited."""

from __future__ import annotations

import json

import pytest

from fedstat.cli.main import main as cli
from fedstat.client import Client
from fedstat.jobs import JobSpec
from fedstat.privacy.dp import epsilon_to_rho
from site_agent.audit_schema import canonical_json
from site_agent.audit_verify import show, verify
from tests.conftest import analyst_profile


def _dp(eps: float) -> JobSpec:
    return JobSpec(analyses=("freq",), privacy="dp", out_name="f", options={"dp_epsilon": str(eps), "dp_delta": "1e-6"})


def test_audit__accept_budget_refusal_and_policy_refusal_are_recorded(session_pki, consortium, tmp_path):
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        ok = c.wait(c.submit(_dp(8.0)).job_id)
        spent = c.wait(c.submit(_dp(8.0)).job_id, raise_on_failure=False)
        bad = c.wait(
            c.submit(JobSpec(analyses=("freq",), pheno_names=("NOPE",), out_name="x")).job_id, raise_on_failure=False
        )
    log = tmp_path / "EUR" / "audit.log"
    records = list(show(log))
    by_job = {r["job_id"]: r for r in records if r["event"] == "offer"}
    first = by_job[ok.job_id]
    assert first["decision"] == "accepted" and first["analyst"] == "alice" and first["privacy"] == "dp"
    assert first["cohort_size"] > 0 and first["consent_excluded"] == 0
    assert first["dp"] == {"epsilon": 8.0, "delta": 1e-6}
    assert len(first["spec_digest"]) == 64
    refused = by_job[spent.job_id]
    assert refused["decision"] == "refused" and "privacy budget of dataset 'main' exceeded" in refused["reason"]
    assert by_job[bad.job_id]["decision"] == "refused" and "unknown phenotype 'NOPE'" in by_job[bad.job_id]["reason"]
    # one record per released round: the accepted job's one round, over EUR's whole cohort, all three sites
    (released,) = [r for r in records if r["event"] == "release"]
    assert released["job_id"] == ok.job_id and released["computation"] == "allele_counts" and released["round"] == 1
    assert released["cohort_size"] == first["cohort_size"] and released["sites"] == ["AFR", "EAS", "EUR"]
    assert len(released["groups"]) == 1 and len(released["groups"][0]) == 16  # a fingerprint, never members
    # under dp the release is followed by what it charged: the job's whole ρ at its first release
    (charged,) = [r for r in records if r["event"] == "dp_charge"]
    assert charged["job_id"] == ok.job_id and charged["round"] == 1 and charged["dataset"] == "main"
    assert charged["dp"]["epsilon"] == 8.0 and charged["dp"]["delta"] == 1e-6
    assert charged["dp"]["rho"] == pytest.approx(epsilon_to_rho(8.0, 1e-6))
    assert charged["dp"]["remaining"] == pytest.approx(epsilon_to_rho(10.0, 1e-6) - epsilon_to_rho(8.0, 1e-6))
    assert verify(log).ok and verify(log).n_records == len(records) == 6  # with the harmonization
    assert [r["event"] for r in show(log, job_id=ok.job_id)] == ["offer", "harmonize", "release", "dp_charge"]


def test_site_audit_cli__verify_detects_an_edited_record(session_pki, consortium, tmp_path, capsys):
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        for _ in range(2):
            c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id)
    config = tmp_path / "site.toml"
    config.write_text(
        f'[site]\ncoordinator = "localhost:1"\nstate_dir = "{tmp_path / "AFR"}"\n\n'
        f'[tls]\nca = "ca.pem"\ncert = "a.pem"\nkey = "a.key"\n\n[[datasets]]\nname = "main"\npath = "{tmp_path}"\n'
    )
    assert cli(["site", "audit", "verify", "--config", str(config)]) == 0
    assert "OK, 6 records" in capsys.readouterr().out  # two offers, two harmonizations, two released rounds
    assert cli(["site", "audit", "show", "--config", str(config), "--analyst", "alice"]) == 0
    assert capsys.readouterr().out.count("accepted") == 2
    log = tmp_path / "AFR" / "audit.log"
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    first["cohort_size"] += 1  # someone edits a number in the first record
    lines[0] = canonical_json(first)
    log.write_text("\n".join(lines) + "\n")
    assert cli(["site", "audit", "verify", "--config", str(config)]) == 1
    assert "TAMPERED or damaged at line 1" in capsys.readouterr().err
