"""Tests for fedstat.data.samples (plink2-style samples.tsv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstat.data.samples import read_sample_table
from fedstat.errors import InputError, SampleTableError


def _write(tmp_path: Path, text: str, name: str = "samples.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_sample_table__tab_separated_with_fid_missing_values_and_consent(tmp_path):
    path = _write(
        tmp_path,
        "#FID\tIID\tAGE\tBMI\tT2D\tConsent\n"
        "f1\ts1\t54\t27.5\t2\tDUO:0000042\n"
        "f1\ts2\tNA\t\t1\t\n"
        "f2\ts3\t-9\tnan\t0\tNA\n"
        "f2\ts4\t61.25\t30\tNA\tDUO:0000006\n",
    )
    table = read_sample_table(path)
    assert table.path == path
    assert table.fid == ("f1", "f1", "f2", "f2")
    assert table.iid == ("s1", "s2", "s3", "s4")
    assert table.n_samples == len(table) == 4
    assert table.columns == ("AGE", "BMI", "T2D")
    np.testing.assert_array_equal(table.column("AGE"), [54.0, np.nan, np.nan, 61.25])
    np.testing.assert_array_equal(table.column("BMI"), [27.5, np.nan, np.nan, 30.0])
    np.testing.assert_array_equal(table.column("T2D"), [2.0, 1.0, 0.0, np.nan])
    assert table.column("AGE").dtype == np.float64
    assert table.text == {"Consent": ("DUO:0000042", "", "", "DUO:0000006")}


def test_read_sample_table__whitespace_separated_iid_only(tmp_path):
    path = _write(tmp_path, "#IID  AGE   SEX\nA   1e1  1\nB  2.5  2\n\n")
    table = read_sample_table(path)
    assert table.fid is None
    assert table.iid == ("A", "B")
    np.testing.assert_array_equal(table.column("AGE"), [10.0, 2.5])
    np.testing.assert_array_equal(table.column("SEX"), [1.0, 2.0])
    assert table.text == {}


@pytest.mark.parametrize("header", ["FID\tIID\tY", "fid\tiid\tY"])
def test_read_sample_table__header_without_hash(tmp_path, header):
    table = read_sample_table(_write(tmp_path, f"{header}\nf\ta\t3\nf\tb\t4\n"))
    assert table.fid == ("f", "f")
    np.testing.assert_array_equal(table.column("Y"), [3.0, 4.0])


def test_read_sample_table__header_only_gives_empty_table(tmp_path):
    table = read_sample_table(_write(tmp_path, "#IID\tY\n"))
    assert table.n_samples == 0
    assert table.column("Y").shape == (0,)


def test_read_sample_table__columns_are_read_only(tmp_path):
    table = read_sample_table(_write(tmp_path, "#IID\tY\na\t1\n"))
    with pytest.raises(ValueError):
        table.column("Y")[0] = 5.0
    with pytest.raises(TypeError):
        table.numeric["Z"] = np.zeros(1)  # type: ignore[index]


def test_column__unknown_name_lists_columns(tmp_path):
    path = _write(tmp_path, "#IID\tAGE\tBMI\na\t1\t2\n")
    table = read_sample_table(path)
    with pytest.raises(InputError) as info:
        table.column("HEIGHT")
    assert str(info.value) == (f"unknown phenotype/covariate 'HEIGHT' in {path}; columns are: AGE, BMI")


def test_column__zero_one_and_case_control_columns_are_numbers_as_written(tmp_path):
    # plink2 reads covariates as numbers: 0 stays 0 (a 0/1 batch or sex indicator keeps its zeros);
    # whether a phenotype is case/control is decided over the pooled data by the analysis
    table = read_sample_table(
        _write(tmp_path, "#IID\tB01\tC012\tCC\na\t0\t2\t1\nb\t1\t0\t2\nc\t0\t1\t0\nd\tnA\t-9\t-9.0\n")
    )
    np.testing.assert_array_equal(table.column("B01"), [0.0, 1.0, 0.0, np.nan])
    np.testing.assert_array_equal(table.column("C012"), [2.0, 0.0, 1.0, np.nan])
    np.testing.assert_array_equal(table.column("CC"), [1.0, 2.0, 0.0, np.nan])


def test_read_sample_table__text_column_loads_as_text_and_leaves_numeric_columns(tmp_path):
    path = _write(tmp_path, "#IID\tAGE\tCAT\tCC\na\t30\tA\t1\nb\t41\tB\t2\nc\t52\tNA\t1\n")
    table = read_sample_table(path)
    assert table.columns == ("AGE", "CC")
    assert table.text == {"CAT": ("A", "B", "")}
    np.testing.assert_array_equal(table.column("AGE"), [30.0, 41.0, 52.0])
    with pytest.raises(InputError) as info:
        table.column("CAT")
    message = str(info.value)
    assert "column 'CAT' in samples.tsv holds words, not numbers: a phenotype is a number" in message
    assert "can be a covariate (categorical" in message
    assert table.categorical("CAT") == ("A", "B", "")
    assert "'A'" not in message and "'B'" not in message


@pytest.mark.parametrize("token", ["secret77", "inf", "-inf", "1,5", "A"])
def test_read_sample_table__one_word_makes_a_text_column_not_an_error(tmp_path, token):
    # plink2 reads 'inf' as a category name too (IsCategoricalPhenostr); a mix of numbers and words
    # is an error in plink2 and a text column here, refused wherever a job uses it
    table = read_sample_table(_write(tmp_path, f"#IID\tY\tZ\na\t1\t3\nb\t{token}\t4\n"))
    assert "Y" in table.text and "Y" not in table.numeric
    np.testing.assert_array_equal(table.column("Z"), [3.0, 4.0])


# ------------------------------------------------------------------------------------- errors


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(SampleTableError) as info:
        read_sample_table(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message.replace(str(path), "<path>")  # the tmp path's digits are not the table's values


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_read_sample_table__empty_file(tmp_path, text):
    assert _error(tmp_path, text).endswith("sample table is empty")


def test_read_sample_table__missing_file(tmp_path):
    with pytest.raises(SampleTableError, match="cannot read"):
        read_sample_table(tmp_path / "nope.tsv")


def test_read_sample_table__missing_header(tmp_path):
    message = _error(tmp_path, "s1\t54\t2\ns2\t50\t1\n")
    assert "line 1: missing header" in message
    assert "54" not in message


def test_read_sample_table__no_iid_column(tmp_path):
    assert "line 1: header has no IID column" in _error(tmp_path, "#FID\tAGE\nf\t3\n")


def test_read_sample_table__iid_not_first(tmp_path):
    assert "line 1: header must start with" in _error(tmp_path, "#AGE\tIID\n3\ta\n")


def test_read_sample_table__duplicate_column(tmp_path):
    assert "line 1: duplicate column 'AGE'" in _error(tmp_path, "#IID\tAGE\tAGE\na\t1\t2\n")


def test_read_sample_table__wrong_field_count(tmp_path):
    message = _error(tmp_path, "#FID\tIID\tAGE\tBMI\nf\ta\t1\t2\nf\tb\t1\n")
    assert message.endswith("line 3: 3 fields, header has 4")


def test_read_sample_table__duplicate_sample_id_names_lines_not_id(tmp_path):
    message = _error(tmp_path, "#FID\tIID\tY\nf\tpatient9\t1\nf\tb\t2\n\nf\tpatient9\t3\n")
    assert message.endswith("line 5: duplicate sample ID (first seen on line 2)")
    assert "patient9" not in message


def test_read_sample_table__same_iid_in_different_families_is_not_duplicate(tmp_path):
    table = read_sample_table(_write(tmp_path, "#FID\tIID\tY\nf1\ta\t1\nf2\ta\t2\n"))
    assert table.iid == ("a", "a")
