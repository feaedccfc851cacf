"""Disclosure control and consent through the whole system: the strictest site's settings win,
analysts can list them, refusals say why, and consent exclusions change OBS_CT by exactly the
number of participants left out."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import numpy as np
import pytest

from fedstat.client import Client
from fedstat.config import ConfigError, DatasetConfig, load_site_config
from fedstat.counts import coarsen, describe_count
from fedstat.data.dataset import open_dataset
from fedstat.errors import JobFailed
from fedstat.jobs import JobSpec
from fedstat.privacy.dp import epsilon_to_rho, rho_to_epsilon
from tests.conftest import GWAS, analyst_profile
from tests.test_secagg_e2e import _run


def _set_policy(agent, **changes) -> None:
    agent.config = dataclasses.replace(agent.config, policy=dataclasses.replace(agent.config.policy, **changes))


def _assoc_rows(text: bytes) -> dict[str, list[str]]:
    lines = text.decode().splitlines()
    return {line.split()[1]: line.split() for line in lines[1:]}


def test_min_cell_count__strictest_site_wins_and_small_cells_print_na(
    session_pki, consortium, consortium_agents, tmp_path
):
    _, port = consortium
    # --require-pheno: the few participants missing CC at each site take no part (release ledger)
    spec = JobSpec(
        analyses=("assoc", "model"), pheno_names=("CC",), privacy="secagg", out_name="a", options={"require_pheno": "1"}
    )
    _, open_files = _run(session_pki, port, tmp_path / "open", spec)
    _set_policy(consortium_agents["EAS"], min_cell_count=5)
    _set_policy(consortium_agents["EUR"], min_cell_count=3)
    job_id, files = _run(session_pki, port, tmp_path / "dc", spec)
    before, after = _assoc_rows(open_files["a.assoc"]), _assoc_rows(files["a.assoc"])
    assert before.keys() == after.keys()
    model = _model_counts(open_files["a.model"])
    suppressed = [v for v in before if any(0 < c < 5 for c in model[v])]  # 5: EAS's, the strictest
    kept = [v for v in before if v not in suppressed]
    assert 0 < len(suppressed) < len(before) - 100
    for v in suppressed:
        assert after[v][4:6] == ["NA", "NA"] and after[v][7:] == ["NA", "NA", "NA"], after[v]  # F_A F_U CHISQ P OR
    for v in kept:
        assert after[v] == before[v]
    model_after = files["a.model"].decode()
    assert model_after.count(" NA             NA ") == 5 * len(suppressed)
    with Client(analyst_profile(session_pki, port)) as c:
        log = "\n".join(c.get(job_id).log)
    assert f"disclosure control: {len(suppressed)} variants' case/control tables have a cell below 5" in log


def _model_counts(text: bytes) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in text.decode().splitlines()[1:]:
        f = line.split()
        if f[4] == "GENO":
            out[f[1]] = tuple(int(x) for x in (*f[5].split("/"), *f[6].split("/")))
    return out


def test_weakest_privacy_and_glm_parameter_ratio_refuse_with_the_reason(
    session_pki, consortium, consortium_agents, tmp_path
):
    _, port = consortium
    _set_policy(consortium_agents["AFR"], weakest_privacy="secagg")
    with pytest.raises(
        JobFailed, match="site AFR refused the job: privacy mode 'none' is weaker than this site's weakest"
    ):
        _run(session_pki, port, tmp_path, JobSpec(analyses=("freq",), privacy="none", out_name="f"))
    _run(session_pki, port, tmp_path, JobSpec(analyses=("freq",), privacy="paillier", out_name="f"))  # as strong: runs
    _set_policy(consortium_agents["EAS"], max_params_ratio=0.01)  # 180 participants: at most 1 parameter
    glm = JobSpec(analyses=("glm",), pheno_names=("QT",), covar_names=("AGE",), out_name="g")
    with pytest.raises(
        JobFailed,
        match=r"site EAS refused the job: --glm fits 3 parameters; this site's cohort for the job \(180-189 "
        r"participants\) allows fewer",
    ):
        _run(session_pki, port, tmp_path, glm)
    records = (tmp_path / "EAS" / "audit.log").read_text()
    assert '"decision":"refused"' in records.replace(" ", "") and "max_params_ratio" in records


def test_policies__analysts_list_each_site_and_the_strictest(session_pki, consortium, consortium_agents, tmp_path):
    coord, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        resp = c.policies()
        assert [p.site for p in resp.sites] == ["AFR", "EAS", "EUR"]
        assert all(p.dataset == "main" and p.max_params_ratio == pytest.approx(0.33) for p in resp.sites)
        assert resp.strictest.dp_epsilon_remaining == pytest.approx(10.0, rel=1e-6)
        assert all((p.count_granularity, p.dp_analyst_share) == (10, 1.0) for p in resp.sites)  # the defaults
        _run(
            session_pki,
            port,
            tmp_path,
            JobSpec(analyses=("freq",), privacy="dp", out_name="f", options={"dp_epsilon": "2", "dp_delta": "1e-7"}),
        )
        deadline = time.monotonic() + 5
        while c.policies().strictest.dp_epsilon_remaining > 9.999 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = c.policies()
    # each site's ledger was charged ρ(ε=2, δ=1e-7); zCDP composes, so what remains is, at δ=1e-6,
    expected = rho_to_epsilon(epsilon_to_rho(10, 1e-6) - epsilon_to_rho(2, 1e-7), 1e-6)
    assert 9 < expected < 9.9
    assert [p.dp_epsilon_remaining for p in after.sites] == pytest.approx([expected] * 3, rel=1e-9)
    assert after.strictest.dp_epsilon_remaining == min(p.dp_epsilon_remaining for p in after.sites)


def test_policies__strictest_combination():
    from coordinator.server import strictest_policy
    from fedstat.wire import common_pb2

    a = common_pb2.DisclosurePolicy(
        site="A", allowed_analyses=["freq", "glm"], allowed_privacy=["secagg", "dp"], weakest_privacy="none",
        min_cohort=10, min_cell_count=0, max_params_ratio=0.33, min_sites=2, dp_epsilon_remaining=3, dp_delta=1e-6,
        count_granularity=10, dp_analyst_share=1.0,
    )  # fmt: skip
    b = common_pb2.DisclosurePolicy(
        site="B", allowed_analyses=["glm", "assoc"], allowed_privacy=["dp", "paillier"], weakest_privacy="secagg",
        min_cohort=50, min_cell_count=5, max_params_ratio=0.1, min_sites=3, dp_epsilon_remaining=7, dp_delta=1e-7,
        count_granularity=5, dp_analyst_share=0.25,
    )  # fmt: skip
    s = strictest_policy([a, b])
    assert list(s.allowed_analyses) == ["glm"] and list(s.allowed_privacy) == ["dp"]
    assert (s.weakest_privacy, s.min_cohort, s.min_cell_count, s.min_sites) == ("secagg", 50, 5, 3)
    assert (s.max_params_ratio, s.dp_epsilon_remaining, s.dp_delta) == (0.1, 3, 1e-7)
    assert (s.count_granularity, s.dp_analyst_share) == (10, 0.25)


def test_config__disclosure_settings_are_checked(tmp_path):
    base = (
        '[site]\ncoordinator = "localhost:1"\n[tls]\nca = "a"\ncert = "b"\nkey = "c"\n'
        '[[datasets]]\nname = "m"\npath = "d"\n[policy]\n'
    )
    path = tmp_path / "site.toml"
    path.write_text(base + 'min_cell_count = 3\nmax_params_ratio = 0.2\nweakest_privacy = "secagg"\n')
    p = load_site_config(path).policy
    assert (p.min_cell_count, p.max_params_ratio, p.weakest_privacy) == (3, 0.2, "secagg")
    assert p.accepts_privacy("paillier") and p.accepts_privacy("dp") and not p.accepts_privacy("none")
    for bad, message in (
        ('weakest_privacy = "tls"', "unknown privacy mode 'tls'"),
        ("max_params_ratio = 2", "max_params_ratio must be in"),
        ("min_cell_count = -1", "min_cell_count must be 0"),
        ('allowed_privacy = ["secagg", "homomorphic"]', "unknown privacy mode 'homomorphic'"),
    ):
        path.write_text(base + bad + "\n")
        with pytest.raises(ConfigError, match=message):
            load_site_config(path)


def test_consent__obs_ct_drops_by_exactly_the_excluded_participants(
    session_pki, consortium, consortium_agents, tmp_path
):
    """AFR's table gains a consent column: a few participants consented to diabetes research only
    (DS:MONDO:0005148). A health/medical (HMB) job leaves them out; a diabetes job includes them."""
    coord, port = consortium
    data = tmp_path / "AFRc"
    shutil.copytree(GWAS / "AFR", data)
    lines = (data / "samples.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    complete = [
        i
        for i, line in enumerate(lines[1:])
        if all(line.split("\t")[head.index(c)] not in ("NA", "") for c in ("QT", "AGE"))
    ]
    ds_only = set(complete[3::17])  # participants with complete data, about 6 %
    rows = [lines[0] + "\tconsent"] + [
        f"{line}\t{'DS:MONDO:0005148' if i in ds_only else 'GRU'}" for i, line in enumerate(lines[1:])
    ]
    (data / "samples.tsv").write_text("\n".join(rows) + "\n")
    old = consortium_agents["AFR"]
    old.stop()
    from site_agent.agent import SiteAgent

    cfg = dataclasses.replace(old.config, datasets=(DatasetConfig(name="main", path=data),))
    agent = SiteAgent(cfg)
    threading.Thread(target=agent.run, daemon=True).start()
    consortium_agents["AFR"] = agent
    deadline = time.monotonic() + 20
    while not (coord.registry.get("AFR") and coord.registry.get("AFR").hello.policies):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    glm = dict(
        analyses=("glm",), pheno_names=("QT",), covar_names=("AGE",), out_name="g", options={"require_pheno": "1"}
    )
    _, diabetes = _run(session_pki, port, tmp_path / "ds", JobSpec(purpose="DS:MONDO:0005148", **glm))
    job_id, hmb = _run(session_pki, port, tmp_path / "hmb", JobSpec(purpose="HMB", **glm))
    with Client(analyst_profile(session_pki, port)) as c:
        log = "\n".join(c.get(job_id).log)
    missing_qt = sum(line.split("\t")[head.index("QT")] in ("NA", "") for line in lines[1:])  # --require-pheno
    accepted = 220 - len(ds_only) - missing_qt
    # the counts reach the log coarsened to the site's count_granularity (min_group, 10)
    shown = f"{coarsen(accepted, 10)}-{coarsen(accepted, 10) + 9} participants"
    excluded = describe_count(coarsen(len(ds_only), 10), 10, "excluded by consent")
    assert f"site AFR accepted: {shown}, {excluded}" in log
    # per variant, the excluded participants who have a genotype there
    dataset = open_dataset("AFRc", data, cache_dir=tmp_path / "cache")
    cols = dataset.genotype_index[sorted(ds_only)]
    genotyped = {}
    for offset, block in dataset.genotypes.read_blocks(
        np.arange(dataset.genotypes.n_variants), sample_index=np.sort(cols)
    ):
        for j, row in enumerate(block):
            genotyped[str(dataset.genotypes.variants.id[offset + j])] = int((row != -9).sum())
    a, b = _obs(diabetes["g.QT.glm.linear"]), _obs(hmb["g.QT.glm.linear"])
    assert a.keys() == b.keys() and len(a) > 100
    deltas = {v: a[v] - b[v] for v in a}
    assert deltas == {v: genotyped[v] for v in a}
    assert max(deltas.values()) == len(ds_only)


def _obs(text: bytes) -> dict[str, int]:
    lines = text.decode().splitlines()
    head = lines[0].split("\t")
    return {f[head.index("ID")]: int(f[head.index("OBS_CT")]) for f in (line.split("\t") for line in lines[1:])}
