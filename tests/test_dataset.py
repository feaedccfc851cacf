"""Datasets: genotypes and sample table must describe the same participants."""

from __future__ import annotations

import shutil

import pytest

from fedstat.data.dataset import open_dataset
from fedstat.errors import SampleTableError
from tests.conftest import FIXTURE


def test_open_dataset__fixture_site_maps_table_rows_to_genotype_columns(tmp_path):
    ds = open_dataset("main", FIXTURE / "EUR", cache_dir=tmp_path)
    assert ds.n_samples == 180 and ds.genotypes.format == "pgen"
    assert sorted(ds.genotype_index.tolist()) == list(range(180))
    ds.close()


def test_open_dataset__table_sample_without_genotypes_names_the_line(tmp_path):
    shutil.copytree(FIXTURE / "AFR", tmp_path / "AFR")
    path = tmp_path / "AFR" / "samples.tsv"
    lines = path.read_text().splitlines()
    cols = lines[5].split("\t")
    cols[1] = "NOT_GENOTYPED"
    lines[5] = "\t".join(cols)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SampleTableError) as info:
        open_dataset("main", tmp_path / "AFR", cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert "1 sample(s) are not in genotypes.bed (first on line 6)" in msg
    assert "NOT_GENOTYPED" not in msg


def test_open_dataset__genotyped_sample_missing_from_table(tmp_path):
    shutil.copytree(FIXTURE / "EAS", tmp_path / "EAS")
    path = tmp_path / "EAS" / "samples.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    with pytest.raises(SampleTableError, match=r"genotypes.vcf.gz: 1 genotyped sample\(s\) are missing from"):
        open_dataset("main", tmp_path / "EAS", cache_dir=tmp_path / "c")


def test_open_dataset__missing_sample_table(tmp_path):
    shutil.copytree(FIXTURE / "EUR", tmp_path / "EUR")
    (tmp_path / "EUR" / "samples.tsv").unlink()
    with pytest.raises(SampleTableError, match="sample table not found"):
        open_dataset("main", tmp_path / "EUR", cache_dir=tmp_path / "c")
