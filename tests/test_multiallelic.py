"""Multiallelic sites split into biallelic records when read, equal to plink2 on the split pooled data.

tests/data/multiallelic was made by scripts/make_multiallelic_fixture.py: AFR holds a .pgen with
multiallelic rows, EAS a VCF with multiallelic records, EUR a .pgen with the same sites as separate
biallelic records (some with REF and ALT exchanged); the references are plink2 2.00a3.5 on the pooled
data after ``--make-pgen multiallelics=- varid-dup`` and ``--snps-only just-acgt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pgenlib
import pytest

from fedstat.cli import poc
from fedstat.cli.main import main as cli
from fedstat.data.genotypes import open_genotypes
from fedstat.data.import_cache import ImportOptions
from fedstat.data.multiallelic import split_cells
from fedstat.data.variants import harmonize
from fedstat.errors import GenotypeFileError
from fedstat.formats.plink2 import write_reports
from fedstat.stats.allele import ANALYSES, SUM_NAMES, finish, local_sums

FIXTURE = Path(__file__).parent / "data" / "multiallelic"
EXPECTED = FIXTURE / "expected"
SITES = ("AFR", "EAS", "EUR")
COHORT = ["--pheno-name", "QT,CC", "--require-pheno", "--covar-name", "AGE,SEX", "--require-covar"]
# 36 sites: per 12, 7 multiallelic records (12 ALTs, 4 of them not SNVs) and a biallelic indel
N_SPLIT, N_SPLIT_NON_SNV, N_VARIANTS = 21, 12, 45


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _unit(x: float) -> np.float32:
    """A value as plink2 stores a dosage: rounded half up to 1/16384."""
    return np.float32(int(x * 16384 + 0.5) / 16384)


# ------------------------------------------------------------------------------ in process


def test_open_genotypes__each_form_of_a_multiallelic_site_and_its_counts(tmp_path: Path):
    afr = open_genotypes(FIXTURE / "AFR")
    eas = open_genotypes(FIXTURE / "EAS", cache_dir=tmp_path)
    eur = open_genotypes(FIXTURE / "EUR")
    # a .pgen keeps its biallelic indel rows (plink2 analyses them), a VCF only SNVs
    assert (afr.multiallelic_split, afr.multiallelic_skipped, afr.non_snv_skipped) == (N_SPLIT, 0, N_SPLIT_NON_SNV)
    assert (eas.multiallelic_split, eas.multiallelic_skipped, eas.non_snv_skipped) == (N_SPLIT, 0, N_SPLIT_NON_SNV + 3)
    assert (eur.multiallelic_split, eur.multiallelic_skipped, eur.non_snv_skipped) == (0, 0, 0)
    assert (afr.n_variants, eas.n_variants) == (N_VARIANTS + 3, N_VARIANTS)
    # rs2 is A>C,T: two records keeping the ID, in ALT order, at AFR (.pgen) and EAS (VCF)
    for src in (afr, eas):
        at = np.flatnonzero(src.variants.id == "rs2")
        assert [(src.variants.ref[i], src.variants.alt[i]) for i in at] == [("A", "C"), ("A", "T")]
    # rs12 (AT>A,GT) splits into indels only; rs5 (C>T,CA) keeps C>T
    assert "rs9" not in set(eas.variants.id) and list(eas.variants.alt[eas.variants.id == "rs5"]) == ["T"]
    # the same genotypes whichever form the site holds: AFR's rs2 read as in the pooled split
    pooled = open_genotypes(FIXTURE / "pooled")
    ((_, whole),) = pooled.read_blocks(np.flatnonzero(pooled.variants.id == "rs2"))
    ((_, mine),) = afr.read_blocks(np.flatnonzero(afr.variants.id == "rs2"))
    assert whole.shape == (2, pooled.n_samples) and (mine >= 0).sum() > 0
    np.testing.assert_array_equal(mine, whole[:, : afr.n_samples])  # AFR's samples come first in the pooled file


def test_reports__three_forms_harmonized_equal_plink2_on_split_pooled_data(tmp_path: Path):
    sources = {
        "AFR": open_genotypes(FIXTURE / "AFR"),
        "EAS": open_genotypes(FIXTURE / "EAS", cache_dir=tmp_path),
        "EUR": open_genotypes(FIXTURE / "EUR"),
    }
    h = harmonize({name: src.variants for name, src in sources.items()})
    assert len(h.variants) == N_VARIANTS and h.plans["EUR"].n_flipped == 5
    total = {name: np.zeros(N_VARIANTS, dtype=np.int64) for name in SUM_NAMES}
    for name, src in sources.items():
        plan = h.plans[name]
        for start, block in src.read_blocks(plan.local_index, flip=plan.flip, block_size=7):
            for key, arr in local_sums(block).items():
                total[key][start : start + block.shape[0]] += arr
    paths = write_reports(tmp_path / "all", h.variants, finish(total), ANALYSES)
    for path in paths:
        assert path.read_bytes() == (EXPECTED / path.name).read_bytes(), path.name


def test_vcf_ds_and_gp__split_as_bcftools_norm_then_plink2_dosage_import(tmp_path: Path):
    header = (
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="g">\n'
        '##FORMAT=<ID={f},Number={n},Type=Float,Description="d">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\ts3\ts4\n"
    )
    ds = header.format(f="DS", n="A") + (
        "1\t100\trsA\tA\tC,T\t.\t.\t.\tGT:DS\t0/0:0.1,0\t0/1:0.9,0.05\t0/2:0,1.2\t./.:.\n"
        "1\t200\trsB\tC\tT\t.\t.\t.\tGT:DS\t0/1:1\t0/0:0\t1/1:1.7\t0/1:0.5\n"
    )
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "genotypes.vcf").write_text(ds)
    src = open_genotypes(tmp_path / "ds", options=ImportOptions(vcf_dosage="DS"))
    assert src.multiallelic_split == 1 and list(src.variants.alt) == ["C", "T", "T"]
    ((_, b),) = src.read_blocks(np.arange(3), values="both")
    # record ALT k takes the k-th DS; a missing DS falls back to the (missing) GT; hard calls by the 0.1 rule
    np.testing.assert_array_equal(b.dosages[0], [_unit(0.1), _unit(0.9), 0, -9])
    np.testing.assert_array_equal(b.dosages[1], [0, _unit(0.05), _unit(1.2), -9])
    np.testing.assert_array_equal(b.hardcalls[:2], [[0, 1, 0, -9], [0, 0, -9, -9]])

    gp = header.format(f="GP", n="G") + (
        # genotype order 0/0 0/1 1/1 0/2 1/2 2/2; the split for ALT k keeps 0/0, 0/k, k/k
        "1\t100\trsA\tG\tA,T\t.\t.\t.\tGT:GP\t0/0:0.9,0.1,0,0,0,0\t0/1:0.1,0.8,0,0.1,0,0\t1/2:0,0,0,0,1,0\t0/2:.\n"
    )
    (tmp_path / "gp").mkdir()
    (tmp_path / "gp" / "genotypes.vcf").write_text(gp)
    src = open_genotypes(tmp_path / "gp", options=ImportOptions(vcf_dosage="GP"))
    ((_, d),) = src.read_blocks(np.arange(2), values="dosages")
    # (P(0/k) + 2 P(k/k)) / (P(0/0) + P(0/k) + P(k/k)), as plink2 normalises; all zero: missing
    np.testing.assert_array_equal(d[0], [_unit(0.1), _unit(0.8 / 0.9), -9, 0])
    np.testing.assert_array_equal(d[1], [0, _unit(0.1 / 0.2), -9, 1])


def test_split_cells__cuts_number_a_and_g_fields_and_leaves_others():
    cells = ["0/2:5:0.1,0.2:0.5,0.1,0,0.2,0.1,0.1", "1:.:0.3,0:0.4,0.6,0", "./.:7:.:."]
    fields = {"DS": "A", "GP": "G"}
    keys = ["GT", "DP", "DS", "GP"]
    assert split_cells(cells, keys, fields, 2, 2) == ["0/2:5:0.2:0.5,0.2,0.1", "1:.:0:0.4,0", "./.:7:.:."]
    assert split_cells(cells, keys, fields, 1, 2) == ["0/2:5:0.1:0.5,0.1,0", "1:.:0.3:0.4,0.6", "./.:7:.:."]
    # a value of the wrong length is left whole, for the dosage parser to refuse
    assert split_cells(["0/1:0.1,0.2,0.3"], ["GT", "DS"], fields, 1, 2) == ["0/1:0.1,0.2,0.3"]


def test_vcf_ds_declared_number_1_on_a_multiallelic_record_is_refused(tmp_path: Path):
    text = (
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="g">\n'
        '##FORMAT=<ID=DS,Number=1,Type=Float,Description="d">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n"
        "1\t100\trsA\tA\tC\t.\t.\t.\tGT:DS\t0/1:1\n"
        "1\t200\trsB\tA\tC,T\t.\t.\t.\tGT:DS\t0/1:0.9,0.1\n"
    )
    (tmp_path / "genotypes.vcf").write_text(text)
    with pytest.raises(GenotypeFileError) as info:
        open_genotypes(tmp_path, options=ImportOptions(vcf_dosage="DS"))
    message = str(info.value)
    assert "record 2 (1:200)" in message and "Number=1, not Number=A" in message and "0.9" not in message
    assert not list((tmp_path / ".fedstat-cache").glob("*.pgen"))  # nothing half-written


def test_vcf_hds_multiallelic_records_are_skipped_and_counted(tmp_path: Path):
    text = (
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="g">\n'
        '##FORMAT=<ID=HDS,Number=2,Type=Float,Description="h">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n"
        "1\t100\trsA\tA\tC\t.\t.\t.\tGT:HDS\t0|1:0.1,0.9\n"
        "1\t200\trsB\tA\tC,T\t.\t.\t.\tGT\t0|1\n"
    )
    (tmp_path / "genotypes.vcf").write_text(text)
    src = open_genotypes(tmp_path, options=ImportOptions(vcf_dosage="HDS"))
    assert (src.multiallelic_split, src.multiallelic_skipped, src.n_variants) == (0, 1, 1)


def test_pgen_with_dosages__multiallelic_rows_are_skipped_not_split(tmp_path: Path):
    writer = pgenlib.PgenWriter(
        os.fsencode(tmp_path / "genotypes.pgen"), 4, variant_ct=2, nonref_flags=False, allele_ct_limit=3,
        dosage_present=True,
    )  # fmt: skip
    writer.append_alleles(np.array([0, 1, 0, 2, 1, 2, -9, -9], dtype=np.int32), allele_ct=3)
    writer.append_dosages(np.array([0.5, 1, 2, 0], dtype=np.float32))
    writer.close()
    (tmp_path / "genotypes.pvar").write_text("#CHROM\tPOS\tID\tREF\tALT\n1\t10\ta\tA\tC,T\n1\t20\tb\tG\tA\n")
    (tmp_path / "genotypes.psam").write_text("#IID\ns1\ns2\ns3\ns4\n")
    src = open_genotypes(tmp_path)
    assert (src.multiallelic_split, src.multiallelic_skipped, src.has_dosages) == (0, 1, True)
    assert list(src.variants.id) == ["b"]
    ((_, d),) = src.read_blocks(np.arange(1), values="dosages")
    np.testing.assert_array_equal(d, [[0.5, 1, 2, 0]])


# ------------------------------------------------------------------------------ the daemons


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("multiallelic") / "W"
    sites = [a for s in SITES for a in ("--site", f"{s}={FIXTURE / s}")]
    assert cli(["poc", "prepare", "--workspace", str(ws), *sites]) == 0
    assert cli(["poc", "start", "--workspace", str(ws)]) == 0
    try:
        yield ws
    finally:
        poc.stop(ws)


def test_reports_and_glm__multiallelic_sites_through_the_daemons_equal_plink2(workspace: Path, tmp_path: Path, capsys):
    out = tmp_path / "m"
    args = ["submit", "--profile", str(workspace / "analyst.toml"), "--freq", "--geno-counts", "--hardy", "--missing"]
    assert cli([*args, "--glm", *COHORT, "--out", str(out)]) == 0, capsys.readouterr().err
    for ext in ("afreq", "gcount", "hardy", "vmiss"):
        assert (tmp_path / f"m.{ext}").read_bytes() == (EXPECTED / f"required.{ext}").read_bytes(), ext
    # every column byte for byte but the fitted statistics plink2 computes in its own floating point
    for name, approx in (("QT.glm.linear", ("P",)), ("CC.glm.logistic.hybrid", ("OR", "LOG(OR)_SE", "Z_STAT", "P"))):
        ours, theirs = _rows(tmp_path / f"m.{name}"), _rows(EXPECTED / f"required.{name}")
        header = theirs[0]
        assert ours[0] == header and len(ours) == len(theirs) == N_VARIANTS + 1
        for c, col in enumerate(header):
            if col not in approx:
                assert [r[c] for r in ours] == [r[c] for r in theirs], (name, col)
                continue
            for a, b in zip(ours[1:], theirs[1:], strict=True):
                assert a[c] == b[c] or float(a[c]) == pytest.approx(float(b[c]), rel=2e-5, abs=2e-6), (name, col, a[2])
    log = [line.split(" ", 1)[1] for line in json.loads((tmp_path / "m.provenance.json").read_text())["log"]]
    note = "site {}: split {} multiallelic records into biallelic ones (one per SNV ALT); skipped 0 multiallelic "
    note += "records that could not be split and {} non-SNV variants"
    assert note.format("AFR", N_SPLIT, N_SPLIT_NON_SNV) in log
    assert note.format("EAS", N_SPLIT, N_SPLIT_NON_SNV + 3) in log
    assert not any(line.startswith("site EUR: split") for line in log)  # nothing to split or skip there
