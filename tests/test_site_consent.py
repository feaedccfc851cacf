"""The site's consent step on a real dataset: purpose matching, dataset default, sticky withdrawal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedstat.config import SitePolicy
from fedstat.data.dataset import open_dataset
from fedstat.errors import InputError
from fedstat.jobs import JobSpec
from site_agent.policy import ConsentSetup, decide

EUR = Path(__file__).parent / "data" / "consortium" / "EUR"
CODES = ["GRU", "HMB", "DS:MONDO:0005148", "HMB;NPU", "POA", "WITHDRAWN"]


def _dataset(tmp_path: Path, codes: list[str]):
    d = tmp_path / "EUR"
    shutil.copytree(EUR, d, dirs_exist_ok=True)
    lines = (EUR / "samples.tsv").read_text().splitlines()
    out = [lines[0] + "\tconsent"] + [f"{row}\t{codes[i % len(codes)]}" for i, row in enumerate(lines[1:])]
    (d / "samples.tsv").write_text("\n".join(out) + "\n")
    return open_dataset("main", d, cache_dir=tmp_path / "cache")


def _expected(n: int, allowed: set[str], codes: list[str] = CODES) -> int:
    return sum(1 for i in range(n) if codes[i % len(codes)] in allowed)


@pytest.mark.parametrize(
    ("purpose", "allowed"),
    [
        ("GRU", {"GRU"}),
        ("POA", {"GRU", "POA"}),
        ("HMB", {"GRU", "HMB", "HMB;NPU"}),
        ("DS:MONDO:0005148", {"GRU", "HMB", "DS:MONDO:0005148", "HMB;NPU"}),
        ("HMB,COMMERCIAL", {"GRU", "HMB"}),
    ],
)
def test_decide__includes_only_matching_consent(tmp_path, purpose, allowed):
    ds = _dataset(tmp_path, CODES)
    setup = ConsentSetup(registry_path=tmp_path / "w.sqlite")
    got = decide(JobSpec(analyses=("freq",), purpose=purpose), SitePolicy(), ds, setup)
    n = ds.n_samples
    assert len(got.members) == _expected(n, allowed) and got.consent.n_included == len(got.members)
    assert got.consent.n_excluded == n - len(got.members)
    assert got.consent.withdrawn == _expected(n, {"WITHDRAWN"})
    assert np.all(np.diff(got.members) > 0)


def test_decide__dataset_default_fills_empty_cells(tmp_path):
    codes = ["GRU", "", "HMB"]
    ds = _dataset(tmp_path, codes)
    setup = ConsentSetup(registry_path=tmp_path / "w.sqlite", default="GRU")
    got = decide(JobSpec(analyses=("freq",), purpose="GRU"), SitePolicy(), ds, setup)
    assert len(got.members) == _expected(ds.n_samples, {"GRU", ""}, codes)
    # without a default an empty cell is a site configuration problem, named by line
    with pytest.raises(InputError, match="line 3: empty consent"):
        decide(JobSpec(analyses=("freq",), purpose="GRU"), SitePolicy(), ds, ConsentSetup(tmp_path / "v.sqlite"))


def test_decide__withdrawn_participant_never_comes_back(tmp_path):
    setup = ConsentSetup(registry_path=tmp_path / "w.sqlite")
    spec = JobSpec(analyses=("freq",), purpose="GRU")
    first = decide(spec, SitePolicy(), _dataset(tmp_path / "a", ["GRU", "WITHDRAWN"]), setup)
    # the next samples.tsv says GRU for everyone: the withdrawn half stays out
    again = decide(spec, SitePolicy(), _dataset(tmp_path / "b", ["GRU"]), setup)
    assert np.array_equal(first.members, again.members)
    assert again.consent.withdrawn_earlier == first.consent.withdrawn > 0


def test_decide__no_consent_information_includes_everyone(tmp_path):
    ds = open_dataset("main", EUR, cache_dir=tmp_path / "cache")
    got = decide(JobSpec(analyses=("freq",), purpose="HMB"), SitePolicy(), ds, ConsentSetup(tmp_path / "w.sqlite"))
    assert len(got.members) == ds.n_samples and got.consent is None


def test_jobspec__bad_purpose_is_refused_at_submit():
    with pytest.raises(InputError, match="purpose"):
        JobSpec(analyses=("freq",), purpose="XYZ").validated()
