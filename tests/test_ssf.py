"""GWAS-SSF v1.0 writer: column order, sorting, missing values, tiny p-values, metadata + md5."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import math

import numpy as np
import pytest
import yaml

from fedstat.errors import InputError
from fedstat.formats.ssf import MANDATORY_COLUMNS, SsfMeta, SsfRows, chromosome_code, format_p, write_ssf


def _rows(**over: object) -> SsfRows:
    base: dict[str, object] = dict(
        chrom=np.array(["2", "1", "X", "1", "chr1", "MT"], dtype=object),
        pos=np.array([500, 300, 10, 100, 200, 7]),
        effect_allele=np.array(["A", "C", "G", "T", "AT", "A"], dtype=object),
        other_allele=np.array(["G", "T", "A", "C", "A", "G"], dtype=object),
        effect=np.array([0.1, -0.25, 1.5, np.nan, 0.0, 2.0]),
        se=np.array([0.01, 0.02, 0.3, 0.1, 0.05, 0.2]),
        eaf=np.array([0.2, 0.31, 0.5, 0.1, 0.45, 0.05]),
        p=np.array([1e-5, 0.5, 0.0, 0.2, 1.0, 3e-300]),
        log10_p=np.array([-5.0, math.log10(0.5), -412.5, math.log10(0.2), 0.0, math.log10(3e-300)]),
        rsid=np.array(["rs11", "1:300", "rs3", "rs4", "rs5", "rs6"], dtype=object),
        n=np.array([100, 100, 90, 80, 100, 99]),
        ref_is_effect=np.array([False, False, True, False, False, True]),
    )
    base.update(over)
    return SsfRows(**base)  # type: ignore[arg-type]


META = SsfMeta(
    trait_description=("type 2 diabetes: test",),
    genome_assembly="GRCh38",
    sample_size=100,
    case_count=40,
    control_count=60,
    sample_ancestry_category=("European", "African unspecified"),
    adjusted_covariates=("AGE", "SEX"),
    date_last_modified=dt.date(2026, 1, 2),
)


def _read(path) -> list[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh]


def test_write_ssf__file_names_columns_and_sorted_rows(tmp_path):
    data, meta = write_ssf(tmp_path / "out.CC", _rows(), META)
    assert data.name == "out.CC.ssf.tsv.gz" and meta.name == "out.CC.ssf.tsv.gz-meta.yaml"
    header, *rows = _read(data)
    assert header == [*MANDATORY_COLUMNS, "variant_id", "rsid", "n", "ref_allele"]
    # NaN effect row (chr1:100) omitted; sorted by code then position; chr1 == 1; X = 23, MT = 25
    assert [(r[0], r[1]) for r in rows] == [("1", "200"), ("1", "300"), ("2", "500"), ("23", "10"), ("25", "7")]
    first = rows[0]
    assert first[2:4] == ["AT", "A"] and first[4] == "0" and first[7] == "1"
    assert first[8] == "1_200_A_AT" and first[9] == "rs5" and first[10] == "100" and first[11] == "OA"
    assert rows[1][9] == "#NA"  # not an rsID
    assert rows[3][8] == "23_10_G_A" and rows[3][11] == "EA"


def test_write_ssf__tiny_p_keeps_mantissa_and_exponent(tmp_path):
    data, _ = write_ssf(tmp_path / "t", _rows(), META)
    by_pos = {r[1]: r for r in _read(data)[1:]}
    assert by_pos["10"][7] == "3.16228e-413"  # p underflowed to 0, log10 p = -412.5
    assert by_pos["7"][7] == "3e-300"
    assert by_pos["500"][7] == "1e-05"
    assert format_p(0.0) == "0"
    assert format_p(0.0, -99.99999999) == "1e-100"  # mantissa rounding carries into the exponent


def test_write_ssf__neg_log10_column_on_request(tmp_path):
    data, _ = write_ssf(tmp_path / "t", _rows(), META, neg_log10_p=True)
    header, *rows = _read(data)
    assert header[7] == "neg_log_10_p_value"
    by_pos = {r[1]: r for r in rows}
    assert float(by_pos["10"][7]) == pytest.approx(412.5)
    assert by_pos["200"][7] == "0"


def test_write_ssf__metadata_fields_and_md5(tmp_path):
    data, meta_path = write_ssf(tmp_path / "out.CC", _rows(), META)
    meta = yaml.safe_load(meta_path.read_text())
    assert meta["data_file_md5sum"] == hashlib.md5(data.read_bytes()).hexdigest()
    assert meta["data_file_name"] == "out.CC.ssf.tsv.gz"
    assert meta["file_type"] == "GWAS-SSF v1.0"
    assert meta["genome_assembly"] == "GRCh38" and meta["coordinate_system"] == "1-based"
    assert meta["trait_description"] == ["type 2 diabetes: test"]
    assert meta["is_sorted"] is True and meta["is_harmonised"] is False
    assert meta["date_metadata_last_modified"] == dt.date(2026, 1, 2)
    assert meta["samples"] == [
        {
            "sample_size": 100,
            "case_count": 40,
            "control_count": 60,
            "case_control_study": True,
            "sample_ancestry_category": ["European", "African unspecified"],
        }
    ]
    assert meta["adjusted_covariates"] == ["AGE", "SEX"]
    assert meta["analysis_software"].startswith("fedstat ")
    assert "1 variant without a complete estimate" in meta["author_notes"]


def test_write_ssf__deterministic_bytes_and_odds_ratio_column(tmp_path):
    rows = _rows(effect=np.array([1.1, 0.8, 1.5, 1.0, 1.0, 2.0]), effect_kind="odds_ratio", ref_is_effect=None)
    a, _ = write_ssf(tmp_path / "a", rows, META)
    b, _ = write_ssf(tmp_path / "b", rows, META)
    assert a.read_bytes() == b.read_bytes()
    header, *body = _read(a)
    assert header[4] == "odds_ratio" and header[-1] == "n" and len(body) == 6
    assert {r[8] for r in body} == {"#NA"}  # no REF information, no variant_id


def test_write_ssf__no_partial_files_on_error(tmp_path):
    bad = _rows(chrom=np.array(["1", "2", "3", "4", "5", "chrUn_1"], dtype=object))
    with pytest.raises(InputError, match="chrUn_1"):
        write_ssf(tmp_path / "bad", bad, META)
    assert list(tmp_path.iterdir()) == []


def test_ssf_meta_and_rows__validate_inputs():
    with pytest.raises(InputError, match="gwas_id"):
        SsfMeta(trait_description=("t",), genome_assembly="GRCh38", sample_size=1, gwas_id="X1")
    with pytest.raises(InputError, match="both"):
        SsfMeta(trait_description=("t",), genome_assembly="GRCh38", sample_size=1, case_count=1)
    with pytest.raises(InputError, match="effect_kind"):
        _rows(effect_kind="z")
    with pytest.raises(InputError, match="rows"):
        _rows(pos=np.array([1, 2]))
    assert [chromosome_code(c) for c in ("1", "chr22", "X", "chrY", "XY", "M", "MT")] == [1, 22, 23, 24, 23, 25, 25]
