"""Tests for fedstat.data.genotypes and fedstat.data.vcf_cache.

Every input is written here, in tmp_path: .bed by hand (2 bits per genotype), .pgen with
pgenlib.PgenWriter, VCF as text (optionally gzip) and BCF with cyvcf2.Writer.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pgenlib
import pytest

import fedstat.data.vcf_cache as vcf_cache
from fedstat.data.genotypes import SampleIds, find_genotype_source, open_genotypes
from fedstat.data.vcf_cache import ensure_vcf_cache
from fedstat.errors import GenotypeFileError, InputError

N_VAR = 23
N_SAMP = 13
BASES = np.array(["A", "C", "G", "T"])


def _matrix(seed: int = 7, n_var: int = N_VAR, n_samp: int = N_SAMP) -> np.ndarray:
    """A random ALT-count matrix, shape (n_var, n_samp), int8 with about 10% missing (-9)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, size=(n_var, n_samp)).astype(np.int8)
    g[rng.random((n_var, n_samp)) < 0.1] = -9
    return g


def _variants(n_var: int = N_VAR) -> dict[str, list]:
    rng = np.random.default_rng(11)
    ref = rng.integers(0, 4, n_var)
    alt = (ref + rng.integers(1, 4, n_var)) % 4
    return {
        "chrom": ["1"] * (n_var // 2) + ["2"] * (n_var - n_var // 2),
        "pos": [1000 + 17 * i for i in range(n_var)],
        "id": [f"rs{i}" for i in range(n_var)],
        "ref": list(BASES[ref]),
        "alt": list(BASES[alt]),
    }


def _bed_bytes(g: np.ndarray) -> bytes:
    """PLINK1 SNP-major .bed: codes 0 = hom A1 (ALT count 2), 1 = missing, 2 = het, 3 = hom A2."""
    out = bytearray((0x6C, 0x1B, 0x01))
    code = {2: 0, -9: 1, 1: 2, 0: 3}
    for row in g:
        for start in range(0, len(row), 4):
            byte = 0
            for k, value in enumerate(row[start : start + 4]):
                byte |= code[int(value)] << (2 * k)
            out.append(byte)
    return bytes(out)


def write_bed(directory: Path, g: np.ndarray, v: dict[str, list] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    v = v or _variants(g.shape[0])
    stem = directory / "genotypes"
    stem.with_suffix(".bed").write_bytes(_bed_bytes(g))
    # .bim: CHROM ID CM POS A1(=ALT) A2(=REF)
    stem.with_suffix(".bim").write_text(
        "".join(
            f"{c}\t{i}\t0\t{p}\t{a}\t{r}\n"
            for c, p, i, r, a in zip(v["chrom"], v["pos"], v["id"], v["ref"], v["alt"], strict=True)
        )
    )
    stem.with_suffix(".fam").write_text("".join(f"fam{j % 3} ind{j} 0 0 {1 + j % 2} -9\n" for j in range(g.shape[1])))
    return stem.with_suffix(".bed")


def write_pgen(directory: Path, g: np.ndarray, v: dict[str, list] | None = None, *, header: str = "full") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    v = v or _variants(g.shape[0])
    stem = directory / "genotypes"
    writer = pgenlib.PgenWriter(
        os.fsencode(stem.with_suffix(".pgen")),
        g.shape[1],
        variant_ct=g.shape[0],
        nonref_flags=False,
    )
    writer.append_biallelic_batch(np.ascontiguousarray(g, dtype=np.int8))
    writer.close()
    rows = zip(v["chrom"], v["pos"], v["id"], v["ref"], v["alt"], strict=True)
    if header == "full":
        text = "##fileformat=PVARv1.0\n##source=test\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tINFO\n"
        text += "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tAF=0.1\n" for c, p, i, r, a in rows)
    elif header == "bim6":
        text = "".join(f"{c}\t{i}\t0\t{p}\t{a}\t{r}\n" for c, p, i, r, a in rows)
    else:  # bim order without CM
        text = "".join(f"{c}\t{i}\t{p}\t{a}\t{r}\n" for c, p, i, r, a in rows)
    stem.with_suffix(".pvar").write_text(text)
    stem.with_suffix(".psam").write_text("#IID\tSEX\n" + "".join(f"ind{j}\tNA\n" for j in range(g.shape[1])))
    return stem.with_suffix(".pgen")


VCF_HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=2>\n##contig=<ID=X>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"
)


def _vcf_text(g: np.ndarray, v: dict[str, list] | None = None) -> str:
    v = v or _variants(g.shape[0])
    gt = {0: "0/0", 1: "0|1", 2: "1/1", -9: "./."}
    lines = [VCF_HEADER + "".join(f"\tind{j}" for j in range(g.shape[1]))]
    for k, row in enumerate(g):
        calls = "\t".join(gt[int(x)] for x in row)
        lines.append(
            f"{v['chrom'][k]}\t{v['pos'][k]}\t{v['id'][k]}\t{v['ref'][k]}\t{v['alt'][k]}\t.\tPASS\t.\tGT\t{calls}"
        )
    return "\n".join(lines) + "\n"


def write_vcf(directory: Path, text: str, *, compress: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if compress:
        path = directory / "genotypes.vcf.gz"
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path = directory / "genotypes.vcf"
        path.write_text(text)
    return path


def read_all(source, **kwargs) -> np.ndarray:
    index = kwargs.pop("variant_index", np.arange(source.n_variants))
    blocks = [block for _, block in source.read_blocks(index, **kwargs)]
    return np.concatenate(blocks, axis=0)


# --------------------------------------------------------------------------------- round trips


def test_open_genotypes__bed_round_trip(tmp_path):
    g = _matrix()
    v = _variants()
    with open_genotypes(write_bed(tmp_path, g, v)) as src:
        assert src.format == "bed"
        assert (src.n_samples, src.n_variants) == (N_SAMP, N_VAR)
        assert src.samples == SampleIds(
            fid=tuple(f"fam{j % 3}" for j in range(N_SAMP)),
            iid=tuple(f"ind{j}" for j in range(N_SAMP)),
        )
        # .bim A1 (column 5) is ALT, A2 (column 6) is REF
        assert list(src.variants.ref) == v["ref"]
        assert list(src.variants.alt) == v["alt"]
        assert list(src.variants.pos) == v["pos"]
        assert list(src.variants.id) == v["id"]
        assert list(src.variants.chrom) == v["chrom"]
        assert src.multiallelic_skipped == 0
        got = read_all(src)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, g)


@pytest.mark.parametrize("header", ["full", "bim6", "bim5"])
def test_open_genotypes__pgen_round_trip(tmp_path, header):
    g = _matrix()
    v = _variants()
    with open_genotypes(write_pgen(tmp_path, g, v, header=header)) as src:
        assert src.format == "pgen"
        assert src.samples == SampleIds(fid=None, iid=tuple(f"ind{j}" for j in range(N_SAMP)))
        assert list(src.variants.ref) == v["ref"]
        assert list(src.variants.alt) == v["alt"]
        assert list(src.variants.pos) == v["pos"]
        np.testing.assert_array_equal(read_all(src), g)


@pytest.mark.parametrize("compress", [False, True])
def test_open_genotypes__vcf_round_trip(tmp_path, compress):
    g = _matrix()
    v = _variants()
    path = write_vcf(tmp_path / "site", _vcf_text(g, v), compress=compress)
    with open_genotypes(tmp_path / "site", cache_dir=tmp_path / "cache") as src:
        assert src.format == "vcf"
        assert src.path == path
        assert src.genotype_path.parent == tmp_path / "cache"
        assert src.samples == SampleIds(fid=None, iid=tuple(f"ind{j}" for j in range(N_SAMP)))
        assert list(src.variants.ref) == v["ref"]
        assert list(src.variants.alt) == v["alt"]
        assert list(src.variants.id) == v["id"]
        assert (src.multiallelic_skipped, src.non_snv_skipped) == (0, 0)
        np.testing.assert_array_equal(read_all(src), g)


def test_open_genotypes__bcf_round_trip(tmp_path):
    import cyvcf2

    g = _matrix()
    text_vcf = write_vcf(tmp_path / "text", _vcf_text(g))
    bcf = tmp_path / "site" / "genotypes.bcf"
    bcf.parent.mkdir()
    reader = cyvcf2.VCF(str(text_vcf))
    writer = cyvcf2.Writer(str(bcf), reader, mode="wb")
    for rec in reader:
        writer.write_record(rec)
    writer.close()
    reader.close()
    with open_genotypes(tmp_path / "site", cache_dir=tmp_path / "cache") as src:
        assert src.format == "bcf"
        np.testing.assert_array_equal(read_all(src), g)


def test_open_genotypes__all_three_formats_agree_on_blocks(tmp_path):
    g = _matrix(seed=3, n_var=40, n_samp=9)
    v = _variants(40)
    sources = [
        open_genotypes(write_bed(tmp_path / "bed", g, v)),
        open_genotypes(write_pgen(tmp_path / "pgen", g, v)),
        open_genotypes(write_vcf(tmp_path / "vcf", _vcf_text(g, v)), cache_dir=tmp_path / "c"),
    ]
    rng = np.random.default_rng(5)
    index = rng.permutation(40)[:30]
    flip = rng.random(30) < 0.5
    samples = np.array([8, 0, 3, 5])
    results = [read_all(s, variant_index=index, flip=flip, sample_index=samples, block_size=7) for s in sources]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# --------------------------------------------------------------------------------- read_blocks


@pytest.fixture
def pgen_source(tmp_path):
    g = _matrix()
    with open_genotypes(write_pgen(tmp_path, g)) as src:
        yield src, g


def test_read_blocks__flip_gives_two_minus_g_and_keeps_missing(pgen_source):
    src, g = pgen_source
    flip = np.zeros(N_VAR, dtype=bool)
    flip[[0, 5, 22]] = True
    got = read_all(src, flip=flip)
    expected = g.copy()
    expected[flip] = np.where(g[flip] >= 0, 2 - g[flip], -9)
    np.testing.assert_array_equal(got, expected)
    assert (got[flip] == -9).sum() == (g[flip] == -9).sum()
    np.testing.assert_array_equal(got[~flip], g[~flip])


def test_read_blocks__unsorted_sample_subset_keeps_requested_order(pgen_source):
    src, g = pgen_source
    samples = np.array([7, 2, 11, 0, 5])
    np.testing.assert_array_equal(read_all(src, sample_index=samples), g[:, samples])


def test_read_blocks__sorted_and_repeated_sample_subsets(pgen_source):
    src, g = pgen_source
    for samples in (np.array([1, 4, 9]), np.array([3, 3, 1]), np.arange(N_SAMP)[::-1]):
        np.testing.assert_array_equal(read_all(src, sample_index=samples), g[:, samples])


def test_read_blocks__empty_sample_subset_yields_zero_column_blocks(pgen_source):
    src, _ = pgen_source
    blocks = list(src.read_blocks(np.arange(N_VAR), sample_index=np.array([], dtype=np.int64), block_size=10))
    assert [(off, b.shape) for off, b in blocks] == [(0, (10, 0)), (10, (10, 0)), (20, (3, 0))]


def test_read_blocks__block_boundaries_when_block_size_does_not_divide_n(pgen_source):
    src, g = pgen_source
    blocks = list(src.read_blocks(np.arange(N_VAR), block_size=5))
    assert [off for off, _ in blocks] == [0, 5, 10, 15, 20]
    assert [b.shape for _, b in blocks] == [(5, N_SAMP)] * 4 + [(3, N_SAMP)]
    for off, b in blocks:
        np.testing.assert_array_equal(b, g[off : off + b.shape[0]])


def test_read_blocks__arbitrary_variant_order_with_repeats(pgen_source):
    src, g = pgen_source
    index = np.array([22, 3, 4, 5, 3, 0, 17, 16])
    got = read_all(src, variant_index=index, block_size=3)
    np.testing.assert_array_equal(got, g[index])


def test_read_blocks__never_yields_more_than_block_size_rows(tmp_path):
    g = _matrix(seed=1, n_var=1000, n_samp=5)
    with open_genotypes(write_pgen(tmp_path, g)) as src:
        sizes = [b.shape[0] for _, b in src.read_blocks(np.arange(1000), block_size=64)]
    assert max(sizes) == 64
    assert sum(sizes) == 1000
    assert len(sizes) == 16


def test_read_blocks__empty_variant_index_yields_nothing(pgen_source):
    src, _ = pgen_source
    assert list(src.read_blocks(np.array([], dtype=np.int64))) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant_index": np.array([0, N_VAR])}, "variant_index out of range"),
        ({"variant_index": np.array([-1])}, "variant_index out of range"),
        ({"variant_index": np.array([0.5])}, "1-d integer"),
        ({"variant_index": np.arange(3), "flip": np.ones(2, bool)}, "flip has shape"),
        ({"variant_index": np.arange(3), "sample_index": np.array([N_SAMP])}, "sample_index"),
        ({"variant_index": np.arange(3), "block_size": 0}, "block_size"),
    ],
)
def test_read_blocks__bad_arguments_raise_at_call_time(pgen_source, kwargs, match):
    src, _ = pgen_source
    index = kwargs.pop("variant_index")
    with pytest.raises(InputError, match=match):
        src.read_blocks(index, **kwargs)


def test_read_blocks__closed_source_raises(pgen_source):
    src, _ = pgen_source
    src.close()
    with pytest.raises(ValueError, match="closed"):
        src.read_blocks(np.arange(2))


def test_open_genotypes__multiallelic_pvar_rows_are_split(tmp_path):
    g = np.array([[0, 1, 2, -9], [1, 1, 0, 2], [2, 0, 1, 1], [-9, 2, 2, 0]], dtype=np.int8)
    stem = tmp_path / "genotypes"
    writer = pgenlib.PgenWriter(
        os.fsencode(stem.with_suffix(".pgen")),
        4,
        variant_ct=4,
        nonref_flags=False,
        allele_ct_limit=3,
    )
    # allele codes per sample (two per sample); variant 2 is triallelic
    alleles = [
        [0, 0, 0, 1, 1, 1, -9, -9],
        [0, 1, 0, 1, 0, 0, 1, 1],
        [0, 2, 1, 2, 0, 0, 2, 2],
        [-9, -9, 1, 1, 1, 1, 0, 0],
    ]
    for row in alleles:
        writer.append_alleles(np.array(row, dtype=np.int32))
    writer.close()
    stem.with_suffix(".pvar").write_text(
        "#CHROM\tPOS\tID\tREF\tALT\n1\t10\ta\tA\tG\n1\t20\tb\tC\tT\n1\t30\tc\tG\tA,T\n1\t40\td\tT\tC\n"
    )
    stem.with_suffix(".psam").write_text("#FID\tIID\nf\ts1\nf\ts2\nf\ts3\nf\ts4\n")
    # G>A,T split as plink2 --make-pgen multiallelics=- splits it: the other ALT counts as REF
    g_a = np.array([0, 1, 0, 0], dtype=np.int8)  # 0/2 1/2 0/0 2/2
    g_t = np.array([1, 1, 0, 2], dtype=np.int8)
    split = np.stack([g[0], g[1], g_a, g_t, g[3]])
    with open_genotypes(tmp_path) as src:
        assert (src.multiallelic_split, src.multiallelic_skipped, src.non_snv_skipped) == (1, 0, 0)
        assert list(src.variants.id) == ["a", "b", "c", "c", "d"]
        assert list(src.variants.alt) == ["G", "T", "A", "T", "C"]
        assert src.samples.fid == ("f",) * 4
        np.testing.assert_array_equal(read_all(src), split)
        np.testing.assert_array_equal(read_all(src, variant_index=np.array([3, 0, 2])), split[[3, 0, 2]])
        # one block mixing ALT 1 and ALT 2 reads, flipped and subset
        ((_, b),) = src.read_blocks(np.array([3, 4, 2]), flip=np.array([True, False, False]), sample_index=[3, 0])
        np.testing.assert_array_equal(b, [[0, 1], [0, -9], [0, 0]])


# ------------------------------------------------------------------------------------- VCF cache


def test_ensure_vcf_cache__skips_and_counts_non_snvs_haploid_and_half_calls(tmp_path):
    text = (
        VCF_HEADER + "\tm1\tm2\tf1\n"
        "1\t100\trs1\ta\tg\t.\t.\t.\tGT\t0/0\t0/1\t1|1\n"  # lower-case bases are SNVs
        "1\t200\t.\tA\tG,T,<DEL>\t.\t.\t.\tGT\t0/0\t0/2\t1/3\n"  # multiallelic: A>G, A>T, one non-SNV
        "1\t300\trs3\tAT\tG\t.\t.\t.\tGT\t0/0\t0/1\t1/1\n"  # indel
        "1\t400\trs4\tC\t<DEL>\t.\t.\t.\tGT\t0/0\t0/1\t1/1\n"  # symbolic
        "1\t450\trs45\tC\t.\t.\t.\t.\tGT\t0/0\t0/0\t0/0\n"  # no ALT
        "X\t500\t.\tC\tT\t.\t.\t.\tGT\t0\t1\t0/1\n"  # haploid males
        "X\t600\trs6\tG\tA\t.\t.\t.\tGT\t.\t1\t0/.\n"  # missing haploid, half-call
        "2\t700\trs7\tT\tC\t.\t.\t.\tDP\t3\t4\t5\n"  # no GT field
    )
    vcf = write_vcf(tmp_path, text)
    info = ensure_vcf_cache(vcf, tmp_path / "cache")
    assert (info.n_samples, info.n_variants) == (3, 6)
    assert (info.multiallelic_split, info.multiallelic_skipped, info.non_snv_skipped) == (1, 0, 4)
    with open_genotypes(vcf, cache_dir=tmp_path / "cache") as src:
        assert (src.multiallelic_split, src.multiallelic_skipped, src.non_snv_skipped) == (1, 0, 4)
        assert list(src.variants.id) == ["rs1", ".", ".", ".", "rs6", "rs7"]
        assert list(src.variants.ref) == ["A", "A", "A", "C", "G", "T"]
        assert list(src.variants.alt) == ["G", "G", "T", "T", "A", "C"]
        assert list(src.variants.chrom) == ["1", "1", "1", "X", "X", "2"]
        np.testing.assert_array_equal(
            read_all(src),
            [[0, 1, 2], [0, 0, 1], [0, 1, 0], [0, 2, 1], [-9, 2, -9], [-9, -9, -9]],
        )


def test_ensure_vcf_cache__second_open_reuses_cache_without_reparsing(tmp_path, monkeypatch):
    g = _matrix()
    vcf = write_vcf(tmp_path, _vcf_text(g), compress=True)
    first = ensure_vcf_cache(vcf, tmp_path / "cache")
    assert first.rebuilt
    mtimes = {p: p.stat().st_mtime_ns for p in (first.pgen, first.pvar, first.psam)}

    def no_parse(*args, **kwargs):
        raise AssertionError("the VCF was parsed again")

    monkeypatch.setattr(vcf_cache, "_build", no_parse)
    second = ensure_vcf_cache(vcf, tmp_path / "cache")
    assert not second.rebuilt
    assert second.pgen == first.pgen
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    with open_genotypes(vcf, cache_dir=tmp_path / "cache") as src:
        np.testing.assert_array_equal(read_all(src), g)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        p.name for p in (first.pgen, first.pvar, first.psam, first.fingerprint)
    )


def test_ensure_vcf_cache__rebuilds_after_source_changes(tmp_path):
    g1 = _matrix(seed=1)
    vcf = write_vcf(tmp_path, _vcf_text(g1))
    ensure_vcf_cache(vcf, tmp_path / "cache")
    g2 = _matrix(seed=2)
    vcf.write_text(_vcf_text(g2))
    info = ensure_vcf_cache(vcf, tmp_path / "cache")
    assert info.rebuilt
    with open_genotypes(vcf, cache_dir=tmp_path / "cache") as src:
        np.testing.assert_array_equal(read_all(src), g2)


def test_ensure_vcf_cache__rebuilds_when_a_cache_file_is_damaged(tmp_path):
    vcf = write_vcf(tmp_path, _vcf_text(_matrix()))
    info = ensure_vcf_cache(vcf, tmp_path / "cache")
    info.pgen.write_bytes(info.pgen.read_bytes()[:-5])
    assert ensure_vcf_cache(vcf, tmp_path / "cache").rebuilt


def test_ensure_vcf_cache__failed_rebuild_leaves_old_cache_and_no_temp_files(tmp_path, monkeypatch):
    g = _matrix()
    vcf = write_vcf(tmp_path, _vcf_text(g))
    old = ensure_vcf_cache(vcf, tmp_path / "cache")
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    vcf.write_text(_vcf_text(_matrix(seed=99)))

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vcf_cache, "pack_bed", crash)
    with pytest.raises(GenotypeFileError, match="cannot write VCF cache"):
        ensure_vcf_cache(vcf, tmp_path / "cache")
    after = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    assert after == before
    assert old.fingerprint.name in after
    monkeypatch.undo()
    assert ensure_vcf_cache(vcf, tmp_path / "cache").rebuilt


def test_ensure_vcf_cache__fingerprint_records_source(tmp_path):
    vcf = write_vcf(tmp_path, _vcf_text(_matrix()))
    info = ensure_vcf_cache(vcf, tmp_path / "cache")
    record = json.loads(info.fingerprint.read_text())
    st = vcf.stat()
    assert record["source"] == str(vcf.absolute())
    assert (record["size"], record["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert len(record["head_tail_sha256"]) == 64


def test_open_genotypes__vcf_default_cache_dir_is_next_to_the_vcf(tmp_path):
    write_vcf(tmp_path, _vcf_text(_matrix()))
    with open_genotypes(tmp_path) as src:
        assert src.genotype_path.parent == tmp_path / ".fedstat-cache"


# ------------------------------------------------------------------------------------- errors


def _raises(path_or_dir, *needles, cache_dir=None) -> str:
    with pytest.raises(GenotypeFileError) as info:
        open_genotypes(path_or_dir, cache_dir=cache_dir)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_open_genotypes__bim_wrong_column_count(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    bim = bed.with_suffix(".bim")
    lines = bim.read_text().splitlines()
    lines[4] = "1\trs4\t0\t1068\tA"
    bim.write_text("\n".join(lines) + "\n")
    _raises(bed, str(bim), "line 5: 5 columns, expected 6")


def test_open_genotypes__bim_non_integer_position(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    bim = bed.with_suffix(".bim")
    lines = bim.read_text().splitlines()
    lines[2] = "1\trs2\t0\t10x4\tA\tG"
    bim.write_text("\n".join(lines) + "\n")
    _raises(bed, str(bim), "line 3: position is not an integer")


def test_open_genotypes__pvar_wrong_column_count(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    pvar = pgen.with_suffix(".pvar")
    lines = pvar.read_text().splitlines()
    lines[5] = "1\t1051\trs2\tA\tG"  # header on line 3, data from line 4
    pvar.write_text("\n".join(lines) + "\n")
    _raises(pgen, str(pvar), "line 6: 5 columns, expected 7")


def test_open_genotypes__pvar_non_integer_position(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    pvar = pgen.with_suffix(".pvar")
    lines = pvar.read_text().splitlines()
    lines[3] = "1\t1e3\trs0\tA\tG\t.\t."
    pvar.write_text("\n".join(lines) + "\n")
    _raises(pgen, str(pvar), "line 4: position is not an integer")


def test_open_genotypes__pvar_header_without_required_column(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    pvar = pgen.with_suffix(".pvar")
    pvar.write_text(pvar.read_text().replace("\tREF\t", "\tREFX\t"))
    _raises(pgen, str(pvar), "line 3: header lacks column(s) REF")


def test_open_genotypes__fam_wrong_column_count(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    fam = bed.with_suffix(".fam")
    fam.write_text(fam.read_text() + "famX indX 0 0 1\n")
    _raises(bed, str(fam), f"line {N_SAMP + 1}: 5 columns, expected 6")


def test_open_genotypes__fam_duplicate_sample_id(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    fam = bed.with_suffix(".fam")
    lines = fam.read_text().splitlines()
    lines[6] = lines[3]
    fam.write_text("\n".join(lines) + "\n")
    message = _raises(bed, str(fam), "line 7: duplicate sample ID (first seen on line 4)")
    assert "ind3" not in message


def test_open_genotypes__psam_duplicate_sample_id(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    psam = pgen.with_suffix(".psam")
    lines = psam.read_text().splitlines()
    lines[3] = lines[1]
    psam.write_text("\n".join(lines) + "\n")
    _raises(pgen, str(psam), "line 4: duplicate sample ID (first seen on line 2)")


def test_open_genotypes__bed_size_inconsistent_with_bim_and_fam(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    fam = bed.with_suffix(".fam")
    fam.write_text(fam.read_text() + "x y 0 0 1 -9\nx z 0 0 1 -9\nx w 0 0 1 -9\n")
    # 16 samples still fit 4 bytes per variant: 16 -> 4, so add a 17th
    fam.write_text(fam.read_text() + "x v 0 0 1 -9\n")
    _raises(
        bed,
        str(bed),
        "bytes, but genotypes.bim (23 variants) and genotypes.fam (17 samples)",
        f"need {3 + 23 * 5}",
    )


def test_open_genotypes__bed_truncated(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    bed.write_bytes(bed.read_bytes()[:-1])
    _raises(bed, str(bed), f"{3 + 23 * 4 - 1} bytes")


def test_open_genotypes__bed_wrong_magic(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    bed.write_bytes(b"\x00\x00" + bed.read_bytes()[2:])
    _raises(bed, str(bed), "not a PLINK .bed file")


def test_open_genotypes__bed_sample_major_rejected(tmp_path):
    bed = write_bed(tmp_path, _matrix())
    data = bytearray(bed.read_bytes())
    data[2] = 0
    bed.write_bytes(bytes(data))
    _raises(bed, "sample-major")


def test_open_genotypes__pgen_truncated(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    pgen.write_bytes(pgen.read_bytes()[:-3])
    _raises(pgen, str(pgen), "truncated or corrupt")


def test_open_genotypes__pgen_cut_to_header(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    pgen.write_bytes(pgen.read_bytes()[:14])
    _raises(pgen, str(pgen))


def test_open_genotypes__pgen_sample_count_differs_from_psam(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    psam = pgen.with_suffix(".psam")
    psam.write_text(psam.read_text() + "extra\tNA\n")
    _raises(pgen, str(pgen), f"holds {N_SAMP} samples, genotypes.psam lists {N_SAMP + 1}")


def test_open_genotypes__pgen_variant_count_differs_from_pvar(tmp_path):
    pgen = write_pgen(tmp_path, _matrix())
    pvar = pgen.with_suffix(".pvar")
    pvar.write_text("\n".join(pvar.read_text().splitlines()[:-1]) + "\n")
    _raises(pgen, f"holds {N_VAR} variants, genotypes.pvar lists {N_VAR - 1}")


@pytest.mark.parametrize(
    ("writer", "companion"),
    [
        ("bed", ".bim"),
        ("bed", ".fam"),
        ("pgen", ".pvar"),
        ("pgen", ".psam"),
    ],
)
def test_open_genotypes__missing_companion_file(tmp_path, writer, companion):
    path = (write_bed if writer == "bed" else write_pgen)(tmp_path, _matrix())
    path.with_suffix(companion).unlink()
    _raises(path, "missing companion file", str(path.with_suffix(companion)))


def test_open_genotypes__missing_and_unknown_files(tmp_path):
    _raises(tmp_path / "genotypes.pgen", "no such genotype file")
    (tmp_path / "data.txt").write_text("x")
    _raises(tmp_path / "data.txt", "unknown genotype format")


def test_open_genotypes__malformed_vcf_record_names_position(tmp_path):
    text = _vcf_text(_matrix())
    lines = text.splitlines()
    fields = lines[9].split("\t")  # header is 7 lines; this is data record 3
    fields[1] = "12ab"
    lines[9] = "\t".join(fields)
    vcf = write_vcf(tmp_path, "\n".join(lines) + "\n")
    _raises(vcf, str(vcf), "record 3 (after 1:1017)", cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_open_genotypes__vcf_with_wrong_sample_column_count(tmp_path):
    lines = _vcf_text(_matrix()).splitlines()
    lines[7] = lines[7].rsplit("\t", 1)[0]  # first record loses its last sample
    vcf = write_vcf(tmp_path, "\n".join(lines) + "\n")
    _raises(vcf, "record 1 (after the header)", cache_dir=tmp_path / "cache")


def test_open_genotypes__truncated_vcf_gz(tmp_path):
    g = _matrix(seed=4, n_var=3000, n_samp=40)
    vcf = write_vcf(tmp_path, _vcf_text(g, _variants(3000)), compress=True)
    vcf.write_bytes(vcf.read_bytes()[: vcf.stat().st_size // 2])
    _raises(vcf, "malformed or truncated VCF", cache_dir=tmp_path / "cache")


def test_open_genotypes__not_a_vcf(tmp_path):
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text("this is not a vcf\n")
    _raises(vcf, str(vcf), "not a readable VCF", cache_dir=tmp_path / "cache")


def test_open_genotypes__vcf_without_samples(tmp_path):
    text = VCF_HEADER.rsplit("\tFORMAT", 1)[0] + "\n1\t10\trs1\tA\tG\t.\t.\t.\n"
    _raises(write_vcf(tmp_path, text), "VCF has no samples", cache_dir=tmp_path / "c")


def test_open_genotypes__vcf_duplicate_sample_names(tmp_path):
    text = VCF_HEADER + "\ta\tb\ta\n1\t10\trs1\tA\tG\t.\t.\t.\tGT\t0/0\t0/1\t1/1\n"
    # htslib itself may reject duplicate names; either way a GenotypeFileError results
    _raises(write_vcf(tmp_path, text), cache_dir=tmp_path / "c")


def test_open_genotypes__vcf_without_any_biallelic_snv(tmp_path):
    text = VCF_HEADER + "\ta\n1\t10\trs1\tAT\tG\t.\t.\t.\tGT\t0/1\n"
    _raises(
        write_vcf(tmp_path, text),
        "no biallelic SNV",
        "0 multiallelic and 1 other",
        cache_dir=tmp_path / "c",
    )


def test_open_genotypes__vcf_whose_multiallelic_records_split_into_no_snv(tmp_path):
    text = VCF_HEADER + "\ta\n1\t10\trs1\tA\tAT,*\t.\t.\t.\tGT\t1/2\n"
    _raises(write_vcf(tmp_path, text), "0 multiallelic and 2 other", "after splitting 1", cache_dir=tmp_path / "c")


def test_open_genotypes__vcf_multiallelic_allele_index_above_alt_count(tmp_path):
    text = VCF_HEADER + "\ta\tb\n1\t10\trs1\tA\tG,T\t.\t.\t.\tGT\t0/1\t0/3\n"
    _raises(write_vcf(tmp_path, text), "record 1 (1:10)", "GT allele index above the record's 2 ALT alleles")


def test_open_genotypes__vcf_allele_index_above_one(tmp_path):
    text = VCF_HEADER + "\ta\tb\n1\t10\trs1\tA\tG\t.\t.\t.\tGT\t0/1\t0/2\n"
    _raises(
        write_vcf(tmp_path, text),
        "record 1 (1:10)",
        "allele index above 1",
        cache_dir=tmp_path / "c",
    )


# -------------------------------------------------------------------------- find_genotype_source


def test_find_genotype_source__finds_the_single_file(tmp_path):
    write_pgen(tmp_path, _matrix())
    (tmp_path / "samples.tsv").write_text("#IID\n")
    assert find_genotype_source(tmp_path) == tmp_path / "genotypes.pgen"


def test_find_genotype_source__none(tmp_path):
    with pytest.raises(GenotypeFileError, match="no genotype file"):
        find_genotype_source(tmp_path)


def test_find_genotype_source__more_than_one(tmp_path):
    write_pgen(tmp_path, _matrix())
    write_bed(tmp_path, _matrix())
    with pytest.raises(GenotypeFileError, match="more than one genotype file"):
        find_genotype_source(tmp_path)


def test_find_genotype_source__not_a_directory(tmp_path):
    with pytest.raises(GenotypeFileError, match="not a directory"):
        find_genotype_source(tmp_path / "missing")
