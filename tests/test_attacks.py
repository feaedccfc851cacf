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

import numpy as np
import pytest

from fedstat.client import Client
from fedstat.config import DatasetConfig
from fedstat.data.dataset import open_dataset
from fedstat.errors import JobFailed
from fedstat.jobs import JobSpec
from tests.conftest import GWAS, GWAS_SITES, analyst_profile

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
    dataset = open_dataset("EUR", GWAS / "EUR", cache_dir=tmp_path / "cache")
    n_var = dataset.genotypes.n_variants
    ((_, block),) = dataset.genotypes.read_blocks(np.arange(n_var), block_size=n_var)
    rates = np.sort((block < 0).sum(axis=0) / n_var)[::-1]
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
