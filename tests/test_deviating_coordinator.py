"""Attacks by a deviating coordinator found in review, reproduced through the real agents, client
and coordinator over mTLS: each is refused and recovers nothing.

- a flipped variant plan sent to one site mid-job, then the round again under a new attempt: the
  two totals would differ by that site's hom_ref − hom_alt at every variant (secagg);
- the same under paillier, round 1 recomputed under the *same* attempt and decrypted under renamed
  arrays;
- the signed offer re-sent to two of three sites (no reconnect) and a second harmonization run over
  them: the difference of the intersections would be a variant the third site lacks.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import replace

import pytest

from coordinator import decryptors as dec
from coordinator import engine as eng
from coordinator.harmonizer import Exchange
from fedstat.client import Client
from fedstat.jobs import JobSpec
from fedstat.protocol import plan_chunks
from tests.conftest import analyst_profile


def _flip_eas_plan(runner, *, restore: bool = False):
    p = runner.harmonized.plans["EAS"]
    for chunk in plan_chunks(
        runner.job_id, p if restore else replace(p, flip=~p.flip), attempt=runner.plan_exchange["EAS"]
    ):
        runner.send("EAS", plan=chunk)


def test_flipped_plan_mid_job__the_site_refuses_and_no_second_total_exists(session_pki, consortium, monkeypatch):
    honest, seen = eng._JobRunner.run_round, {}

    def deviating(self, spec, round_no, plan, n_variants, **kw):
        first = honest(self, spec, round_no, plan, n_variants, **kw)
        if round_no == 1 and "first" not in seen:
            seen["first"] = first
            _flip_eas_plan(self)
            self.attempt += 1
            seen["second"] = honest(self, spec, round_no, plan, n_variants, **kw)
        return first

    monkeypatch.setattr(eng._JobRunner, "run_round", deviating)
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert "first" in seen and "second" not in seen
    assert job.state == "FAILED" and "another variant plan for a job whose plan was fixed" in job.error


def test_paillier_round_recomputed_under_the_same_attempt__refused(session_pki, consortium, monkeypatch):
    honest, honest_decrypt, seen = eng._JobRunner.run_round, dec.DecryptorRegistry.decrypt, {}

    def renaming(self, ctx, sums, **kw):
        if seen.get("rename"):
            sums = [replace(s, name=s.name + "#again") for s in sums]
        return honest_decrypt(self, ctx, sums, **kw)

    def deviating(self, spec, round_no, plan, n_variants, **kw):
        first = honest(self, spec, round_no, plan, n_variants, **kw)
        if round_no == 1 and "first" not in seen:
            seen["first"] = first
            _flip_eas_plan(self)
            seen["rename"] = True  # the same attempt number
            seen["second"] = honest(self, spec, round_no, plan, n_variants, **kw)
        return first

    monkeypatch.setattr(eng._JobRunner, "run_round", deviating)
    monkeypatch.setattr(dec.DecryptorRegistry, "decrypt", renaming)
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        spec = JobSpec(analyses=("freq",), privacy="paillier", out_name="f")
        job = c.wait(c.submit(spec).job_id, raise_on_failure=False)
    assert "first" in seen and "second" not in seen
    assert job.state == "FAILED"


@pytest.fixture()
def consortium_data(tmp_path):
    """The GWAS fixture with one variant removed from EAS's VCF (AFR and EUR still list it)."""
    from tests.conftest import GWAS

    root = tmp_path / "data"
    shutil.copytree(GWAS, root)
    vcf = root / "EAS" / "genotypes.vcf.gz"
    lines = gzip.decompress(vcf.read_bytes()).decode().splitlines()
    body = [i for i, line in enumerate(lines) if not line.startswith("#")]
    lines.pop(body[10])
    vcf.unlink()
    (root / "EAS" / "genotypes.vcf").write_text("\n".join(lines) + "\n")
    return root


def test_reoffer_then_harmonization_over_a_subset__refused(session_pki, consortium, monkeypatch):
    honest_offer, honest_keys, seen = eng._JobRunner.offer, eng._JobRunner.private_keys, {}

    def offer(self, names, spec, **kw):
        self._spec = spec
        return honest_offer(self, names, spec, **kw)

    def private_keys(self, names):
        result = honest_keys(self, names)
        if "tried" not in seen:
            seen["tried"] = True
            honest_offer(self, ["AFR", "EUR"], self._spec, resumed=True)  # the same signed offer again
            self.exchanges += 1
            seen["subset"] = Exchange(self, ["AFR", "EUR"], self.exchanges, 30).run()
        return result

    monkeypatch.setattr(eng._JobRunner, "offer", offer)
    monkeypatch.setattr(eng._JobRunner, "private_keys", private_keys)
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert seen.get("tried") and "subset" not in seen
    assert job.state == "FAILED" and "names other sites than this job's first harmonization" in job.error
