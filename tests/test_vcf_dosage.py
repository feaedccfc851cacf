"""VCF dosages (``vcf_dosage = "DS" | "HDS" | "GP"``) imported exactly as plink2 2.00a3.5's
``--vcf FILE dosage=FIELD`` imports them.

Every VCF is written here; plink2 (``/usr/bin/plink2``, which CI installs) imports the same file,
and pgenlib reads both ``.pgen`` files: hard calls (``read``) and dosages (``read_dosages``) must
be identical value for value. ``--vcf-half-call missing`` is passed to plink2 because fedstat
reads a GT half-call as missing (plink2's default is to stop on one).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import numpy as np
import pgenlib
import pytest

from fedstat.data.dataset import open_dataset
from fedstat.data.genotypes import open_genotypes
from fedstat.data.import_cache import ImportOptions
from fedstat.data.vcf_cache import ensure_vcf_cache
from fedstat.data.vcf_dosage import scan_double
from fedstat.errors import GenotypeFileError

PLINK2 = shutil.which("plink2") or "/usr/bin/plink2"
SAMPLES = ("s1", "s2", "s3", "s4", "s5", "s6")
FORMAT_LINES = {
    "GT": '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
    "DS": '##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">',
    "HDS": '##FORMAT=<ID=HDS,Number=.,Type=Float,Description="Haplotype ALT dosages">',
    "GP": '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Genotype probabilities">',
}


def write_vcf(path: Path, rows: list[tuple[str, str, list[str]]], *, declare=("GT", "DS"), samples=SAMPLES) -> Path:
    """A VCF of biallelic A/G records; ``rows`` are (CHROM, FORMAT, sample cells), one position each."""
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={c}>" for c in dict.fromkeys(r[0] for r in rows)]
    lines += [FORMAT_LINES[f] for f in declare]
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
    for k, (chrom, fmt, cells) in enumerate(rows):
        assert len(cells) == len(samples)
        lines.append("\t".join([chrom, str(100 + k), f"v{k}", "A", "G", ".", ".", ".", fmt, *cells]))
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def read_pgen(pgen: Path) -> tuple[np.ndarray, np.ndarray]:
    """(hard calls int8 with -9 missing, dosages in 1/16384 units with -9 * 16384 missing)."""
    reader = pgenlib.PgenReader(os.fsencode(pgen))
    n_var, n_samp = reader.get_variant_ct(), reader.get_raw_sample_ct()
    hard = np.empty((n_var, n_samp), dtype=np.int8)
    dos = np.empty((n_var, n_samp), dtype=np.float32)
    for v in range(n_var):
        reader.read(v, hard[v])
        reader.read_dosages(v, dos[v])
    reader.close()
    return hard, (dos.astype(np.float64) * 16384).astype(np.int64)


def plink2_import(vcf: Path, mode: str | None, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [PLINK2, "--vcf", str(vcf)] + ([f"dosage={mode}"] if mode else [])
    cmd += ["--vcf-half-call", "missing", "--make-pgen", "--out", str(out), "--threads", "1", "--memory", "1024"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def assert_same_as_plink2(tmp_path: Path, vcf: Path, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Import with plink2 and with fedstat; both .pgen files must read the same. Returns fedstat's."""
    run = plink2_import(vcf, None if mode == "GT" else mode, tmp_path / "plink2")
    assert run.returncode == 0, run.stdout
    info = ensure_vcf_cache(vcf, tmp_path / "cache", dosage=mode)
    want_hard, want_dos = read_pgen(tmp_path / "plink2.pgen")
    hard, dos = read_pgen(info.pgen)
    assert hard.shape == want_hard.shape
    np.testing.assert_array_equal(hard, want_hard)
    np.testing.assert_array_equal(dos, want_dos)
    return hard, dos


M = -9 * 16384  # a missing dosage, in units


# --- DS


def test_ds__rounding_to_1_16384_and_the_hard_call_threshold(tmp_path: Path):
    rows = [
        ("1", "GT:DS", ["0/0:0.00003", "1/1:1.99997", "0/1:0.000030517578125", "1/1:1.0000305", "0/0:0", "1/1:2"]),
        # around the 0.1 hard-call threshold (1638/16384): 0.1 -> 1638 is called, 0.10006 -> 1639 is not
        ("1", "GT:DS", ["0/0:0.1", "1/1:1.9", "0/0:0.10006", "1/1:1.89994", "0/1:0.9", "0/1:1.1"]),
        ("1", "GT:DS", ["0/1:0.09997", "0/1:1.90003", "0/1:0.5", "0/1:1.5", "0/1:1e-1", "0/1:15E-1"]),
        # plink2's own number parser, not a correctly rounded one: 0.06759643554687499 is 1107.4999999999998
        # steps correctly rounded, but plink2 reads 1108
        ("1", "GT:DS", ["0/0:0.06759643554687499", "0/0:0.06765747070312499", "0/0:.5", "0/1:+1.", "0/0:0.3", "0/1:1"]),
    ]
    hard, dos = assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "ds.vcf", rows), "DS")
    assert dos[0].tolist() == [0, 32768, 1, 16384, 0, 32768]
    assert hard[1].tolist() == [0, 2, -9, -9, 1, 1]
    assert dos[1].tolist() == [1638, 31130, 1639, 31129, 14746, 18022]
    assert dos[3, :2].tolist() == [1108, 1109]
    assert int(float("0.06759643554687499") * 16384 + 0.5) == 1107  # what a correct parser would give


def test_ds__haploid_calls_are_doubled_and_diploid_without_gt(tmp_path: Path):
    rows = [
        ("1", "DS", ["0.5", "1", "2", "0", "1.25", "."]),  # no GT: every sample diploid
        ("X", "GT:DS", ["0:0.3", "1:1", "0/1:0.3", "1:.", "0:0.05", "1|0:0.95"]),
        ("X", "GT:DS", [".:0.5", "0:0", "1:0.96", "0:0.04", "./.:1.2", "1:0.5"]),
        ("Y", "GT:DS", ["0:0.2", "1:0.8", "0:0.03", "1:0.97", ".:.", "0:1"]),
    ]
    hard, dos = assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "hap.vcf", rows), "DS")
    assert dos[0].tolist() == [8192, 16384, 32768, 0, 20480, M]
    assert dos[1].tolist() == [9830, 32768, 4915, 32768, 1638, 15565]
    assert hard[1].tolist() == [-9, 2, -9, 2, 0, 1]


def test_ds__missing_falls_back_to_gt(tmp_path: Path):
    rows = [
        ("1", "GT:DS", ["0/1:.", "1/1", "0/0:.", "./.:.", "0|1:0.7", "1/1:."]),
        ("1", "GT:DS:GQ", ["0/1:.:30", "1/1::30", "0/0", "./.", "0/1:1.3:5", "0/0:.:1"]),
        ("1", "GT", ["0/1", "1/1", "0/0", "./.", "0|1", "1/."]),  # no DS in this record: hard calls only
        ("1", "DS", [".", "0.2", ".", "1.8", ".", "1"]),  # no GT: missing DS is missing
    ]
    with pytest.raises(GenotypeFileError, match=r"record 2 \(1:101\): a DS value is not a number"):
        ensure_vcf_cache(write_vcf(tmp_path / "bad.vcf", rows), tmp_path / "cache0", dosage="DS")
    rows[1] = ("1", "GT:DS:GQ", ["0/1:.:30", "1/1", "0/0", "./.", "0/1:1.3:5", "0/0:.:1"])
    hard, dos = assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "miss.vcf", rows), "DS")
    assert hard[0].tolist() == [1, 2, 0, -9, -9, 2]
    assert dos[0].tolist() == [16384, 32768, 0, M, 11469, 32768]
    assert dos[3].tolist() == [M, 3277, M, 29491, M, 16384]


def test_ds__random_values_with_many_digits(tmp_path: Path):
    rng = np.random.default_rng(5)
    samples = tuple(f"r{j}" for j in range(40))
    rows = []
    for _ in range(60):
        gts = rng.choice(["0/0", "0/1", "1/1", "./.", "0|1", "1|0"], size=len(samples))
        # near a 1/32768 boundary with 16-20 significant digits, or a plain 1-6 decimal value
        k = rng.integers(0, 65536, size=len(samples))
        near = [
            format(Decimal(int(x)) / Decimal(32768) + Decimal(int(d)) * Decimal("1e-17"), "f")
            for x, d in zip(k, rng.integers(-40, 40, size=len(samples)), strict=True)
        ]
        plain = [
            f"{x:.{int(n)}f}"
            for x, n in zip(rng.random(len(samples)) * 2, rng.integers(1, 7, len(samples)), strict=True)
        ]
        pick = rng.random(len(samples)) < 0.5
        cells = [f"{g}:{a if p else b}" for g, a, b, p in zip(gts, near, plain, pick, strict=True)]
        rows.append(("1", "GT:DS", cells))
    assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "rand.vcf.gz", rows, samples=samples), "DS")


def test_scan_double__matches_plink2_where_correct_rounding_does_not():
    assert scan_double("0.3") == 0.30000000000000004 != float("0.3")
    assert scan_double("0.06759643554687499") * 16384 + 0.5 >= 1108
    assert scan_double("1e-400") == 0.0 and scan_double("2e400") is None
    for text in ("1e", "0.5x", " 1", "nan", "inf", "", "1_0", "0x1"):
        assert scan_double(text) is None


# --- GP and HDS


def test_gp__normalised_probabilities_all_zero_missing_and_haploid(tmp_path: Path):
    rows = [
        (
            "1",
            "GT:GP",
            ["0/0:1,0,0", "0/1:0.1,0.8,0.1", "1/1:0,0,1", "0/1:0.3,0.3,0.3", "1/1:0.2,0.2,0.2", "0/1:0,0,0"],
        ),
        ("1", "GT:GP", ["0/1:.", "1/1:0.05,0.05,0.9", "0/0:0.95,0.05,0", "./.:0.5,0.5,0", "0/1:0.7,0.2,0", "1/1"]),
        ("1", "GP", ["1,0,0", "0,1,0", "0.000001,0.999999,0", ".", "0.4,0.4,0.2", "0,0,0"]),
        ("X", "GT:GP", ["0:0.9,0.1", "1:0,1", "1:0.5,0.5", "0/1:0.2,0.6,0.2", "0:0,0", "1:0.3,0.3"]),
    ]
    hard, dos = assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "gp.vcf", rows, declare=("GT", "GP")), "GP")
    assert dos[0].tolist() == [0, 16384, 32768, 16384, 16384, M]  # 0,0,0: missing although GT is 0/1
    assert hard[0, 5] == -9
    assert dos[3].tolist() == [3277, 32768, 16384, 16384, M, 16384]


def test_hds__pairs_single_haplotypes_and_fallback_to_ds(tmp_path: Path):
    rows = [
        ("1", "GT:HDS:DS", ["0|1:0.3,0.6:0.2", "1:0.3:1", "0/0:.:0.4", "0|1:0.5,0.5", "1|1:1,0.99", "0|0:0,0"]),
        ("1", "GT:HDS", ["0|1:0,1", "1|1:.", "0/0:0.2,0.3", "0|1:1.0", "./.:.", "1|0:0.96,0.02"]),
        ("1", "GT:DS", ["0/1:0.2", "1/1:1.7", "0/0:.", "0/1:1", "0/0:0.06", "1/1:1.95"]),
    ]
    declare = ("GT", "DS", "HDS")
    hard, dos = assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "hds.vcf", rows, declare=declare), "HDS")
    assert dos[0].tolist() == [14746, 9830, 6554, 16384, 32604, 0]
    assert dos[1].tolist() == [16384, 32768, 8192, 32768, M, 16056]


# --- hard calls only, and the cache


def test_gt__ignores_dosage_fields_like_plink2_without_dosage(tmp_path: Path):
    rows = [("1", "GT:DS", ["0/1:0.3", "1/1:1.2", "0/0:0.1", "./.:1", "0|1:1", "1:0.2"])]
    hard, dos = assert_same_as_plink2(tmp_path, write_vcf(tmp_path / "gt.vcf", rows), "GT")
    assert hard[0].tolist() == [1, 2, 0, -9, 1, 2]
    assert not open_genotypes(tmp_path / "gt.vcf", cache_dir=tmp_path / "c2", options=ImportOptions("GT")).has_dosages


def test_ensure_vcf_cache__changing_vcf_dosage_rebuilds(tmp_path: Path):
    vcf = write_vcf(tmp_path / "d.vcf", [("1", "GT:DS", ["0/1:0.3", "1/1:1.2", "0/0:0.1", "./.:1", "0|1:1", "1/1:2"])])
    cache = tmp_path / "cache"
    first = ensure_vcf_cache(vcf, cache, dosage="DS")
    assert first.rebuilt and ensure_vcf_cache(vcf, cache, dosage="DS").rebuilt is False
    gt = ensure_vcf_cache(vcf, cache, dosage="GT")
    assert gt.rebuilt and gt.pgen != first.pgen
    assert read_pgen(gt.pgen)[1][0].tolist() == [16384, 32768, 0, M, 16384, 32768]
    assert read_pgen(first.pgen)[1][0].tolist() == [4915, 19661, 1638, 16384, 16384, 32768]
    assert ensure_vcf_cache(vcf, cache, dosage="DS").rebuilt is False  # both caches are kept
    with pytest.raises(GenotypeFileError, match='Set vcf_dosage = "DS"'):
        ensure_vcf_cache(vcf, cache)


def test_open_dataset__vcf_gz_with_ds_reads_plink2s_dosages(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    rng = np.random.default_rng(9)
    rows = []
    for v in range(12):
        ds = np.round(rng.random(len(SAMPLES)) * 2, 4)
        cells = [f"{'0/1' if d > 0.5 else '0/0'}:{d}" for d in ds]
        rows.append(("1" if v < 8 else "2", "GT:DS", cells))
    vcf = write_vcf(site / "genotypes.vcf.gz", rows)
    (site / "samples.tsv").write_text("#IID\tPHENO1\n" + "".join(f"{s}\t{1.5 + i}\n" for i, s in enumerate(SAMPLES)))
    run = plink2_import(vcf, "DS", tmp_path / "plink2")
    assert run.returncode == 0, run.stdout
    want_hard, want_dos = read_pgen(tmp_path / "plink2.pgen")
    ds = open_dataset("main", site, cache_dir=tmp_path / "cache", options=ImportOptions(vcf_dosage="DS"))
    try:
        assert ds.genotypes.has_dosages
        n_var = len(ds.genotypes.variants)
        ((_, both),) = ds.genotypes.read_blocks(np.arange(n_var), block_size=n_var, values="both")
    finally:
        ds.close()
    np.testing.assert_array_equal(both.hardcalls, want_hard)
    np.testing.assert_array_equal((both.dosages.astype(np.float64) * 16384).astype(np.int64), want_dos)
    assert (want_dos % 16384 != 0).any()


# --- refusals: each names the file, record and CHROM:POS, never a sample or its value

GOOD = ["0/0:0", "0/1:1", "1/1:2", "0/0:0.1", "0/1:0.9", "1/1:1.9"]


@pytest.mark.parametrize(
    "mode,row,declare,match,plink2_refuses",
    [
        ("DS", ("1", "GT:DS", ["0/0:0x1p-3", *GOOD[1:]]), ("GT", "DS"), "a DS value is not a number", False),
        ("DS", ("1", "GT:DS", ["0/0:nan", *GOOD[1:]]), ("GT", "DS"), "a DS value is not a number", True),
        ("DS", ("1", "GT:DS", ["1/1:2.0001", *GOOD[1:]]), ("GT", "DS"), r"a DS value lies outside \[0, 2\]", True),
        ("DS", ("1", "GT:DS", ["0/0:-0.01", *GOOD[1:]]), ("GT", "DS"), r"a DS value lies outside \[0, 2\]", True),
        ("DS", ("X", "GT:DS", ["1:1.2", *GOOD[1:]]), ("GT", "DS"), r"outside \[0, 1\] for a haploid GT", True),
        (
            "GP",
            ("1", "GT:GP", ["0/0:0.5,0.5", *["0/0:1,0,0"] * 5]),
            ("GT", "GP"),
            "does not have 3 probabilities",
            True,
        ),
        (
            "GP",
            ("1", "GT:GP", ["0/0:1,0,0,0", *["0/0:1,0,0"] * 5]),
            ("GT", "GP"),
            "does not have 3 probabilities",
            False,
        ),
        (
            "GP",
            ("1", "GT:GP", ["0/0:1.2,0,0", *["0/0:1,0,0"] * 5]),
            ("GT", "GP"),
            r"probability lies outside \[0, 1\]",
            True,
        ),
        (
            "HDS",
            ("1", "GT:HDS", ["0|0:0.2,0.3,0.4", *["0|0:0,0"] * 5]),
            ("GT", "HDS"),
            "more than two haplotype",
            False,
        ),
        (
            "HDS",
            ("1", "GT:HDS", ["0|0:1.1,0", *["0|0:0,0"] * 5]),
            ("GT", "HDS"),
            r"haplotype dosage lies outside",
            True,
        ),
        ("HDS", ("1", "GT:HDS", ["0|0:0.5,.", *["0|0:0,0"] * 5]), ("GT", "HDS"), "an HDS value is not a number", True),
        ("DS", ("1", "GP", ["1,0,0"] * 6), ("GT", "DS", "GP"), "neither GT nor DS", False),
        ("DS", ("1", "DS:GT", ["0:0/0"] * 6), ("GT", "DS"), "GT is not the first FORMAT field", False),
        ("DS", ("X", "DS", ["0.5"] * 6), ("DS",), "DS without GT on chrX, chrY or MT", True),
        ("DS", ("1", "GT:DS", GOOD), ("GT",), "declares no FORMAT DS", False),
        ("GP", ("1", "GT:GP", ["0/0:1,0,0"] * 6), ("GT", "DS", "GP"), "refuses dosage=GP then", True),
    ],
)
def test_ensure_vcf_cache__refuses_malformed_dosages(tmp_path: Path, mode, row, declare, match, plink2_refuses):
    samples = ("alice", "bob", "carol", "dave", "erin", "frank")
    vcf = write_vcf(tmp_path / "bad.vcf", [row], declare=declare, samples=samples)
    with pytest.raises(GenotypeFileError) as info:
        ensure_vcf_cache(vcf, tmp_path / "cache", dosage=mode)
    message = str(info.value)
    assert message.startswith(f"{vcf}: ")
    assert re.search(match, message), message
    if "declares no" not in match and "refuses dosage=GP" not in match:  # a record's problem, not the header's
        assert f"record 1 ({row[0]}:100)" in message
    for secret in (*samples, "0x1p-3", "2.0001", "1.2", "-0.01", "nan", "0.2,0.3,0.4", "1.1"):
        assert secret not in message
    assert not list((tmp_path / "cache").glob("*.pgen"))
    if plink2_refuses:  # plink2 stops on these too, rather than importing something
        assert plink2_import(vcf, mode, tmp_path / "plink2").returncode != 0


def test_ensure_vcf_cache__refuses_dosages_from_a_bcf(tmp_path: Path):
    vcf = write_vcf(tmp_path / "d.vcf", [("1", "GT:DS", GOOD)])
    bcf = tmp_path / "d.bcf"
    run = subprocess.run(
        [PLINK2, "--vcf", str(vcf), "dosage=DS", "--export", "bcf", "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and bcf.is_file(), run.stdout
    with pytest.raises(GenotypeFileError, match="reads dosages from VCF text only, not from a BCF"):
        ensure_vcf_cache(bcf, tmp_path / "cache", dosage="DS")


def test_ensure_vcf_cache__refuses_an_undeclared_dosage_field_used_by_a_record(tmp_path: Path):
    vcf = write_vcf(tmp_path / "u.vcf", [("1", "GT:DS", GOOD), ("1", "GT:HDS", ["0|0:0,0"] * 6)])
    with pytest.raises(GenotypeFileError, match=r"record 2 \(1:101\): uses FORMAT HDS, which the header does not"):
        ensure_vcf_cache(vcf, tmp_path / "cache", dosage="HDS")


def test_ensure_vcf_cache__unset_vcf_dosage_refuses_and_says_what_to_set(tmp_path: Path):
    vcf = write_vcf(tmp_path / "gp.vcf", [("1", "GT:GP", ["0/0:1,0,0"] * 6)], declare=("GT", "GP"))
    with pytest.raises(GenotypeFileError) as info:
        ensure_vcf_cache(vcf, tmp_path / "cache")
    message = str(info.value)
    assert message.startswith(f"{vcf}: holds imputed dosages (FORMAT GP)")
    assert 'Set vcf_dosage = "GP" in this dataset\'s [[datasets]] entry in site.toml' in message
    assert 'or vcf_dosage = "GT" to use its GT hard calls only' in message
