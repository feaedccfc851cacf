"""BGEN v1.2/v1.3 import: the cached .pgen reads exactly as plink2 2.00a3.5's ``--bgen … --make-pgen``.

Reference files are made here by plink2 itself (``--export bgen-1.2 bits=8 ref-first``,
``bgen-1.3 bits=16``, the default ALT-first export) from a small soft-dosage VCF with chrX males,
and by the ``bgen`` package's writer for what plink2 does not export (phased and variable-ploidy
records, 1-28 bit precisions, no compression, multiallelic and indel records). Each is imported by
``plink2 --bgen F ref-first|ref-last --sample F.sample --make-pgen`` and compared, through pgenlib,
with fedstat's cache: hard calls and dosages equal cell for cell.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pgenlib
import pytest
from bgen import BgenReader, BgenWriter

from fedstat.data.bgen_cache import ensure_bgen_cache
from fedstat.data.genotypes import DOSAGES, open_genotypes
from fedstat.data.import_cache import ImportOptions
from fedstat.errors import GenotypeFileError

PLINK2 = shutil.which("plink2") or "/usr/bin/plink2"
N = 30
IDS = [f"P{i:03d}" for i in range(N)]


def _plink2(*args: str | Path) -> None:
    subprocess.run([PLINK2, *map(str, args), "--threads", "1"], check=True, capture_output=True)


def _reads(pgen: Path) -> tuple[np.ndarray, np.ndarray]:
    r = pgenlib.PgenReader(os.fsencode(pgen))
    v, n = r.get_variant_ct(), r.get_raw_sample_ct()
    hard = np.empty((v, n), np.int8)
    r.read_range(0, v, hard)
    dose = np.empty((v, n), np.float64)
    r.read_dosages_range(0, v, dose)
    r.close()
    return hard, dose


def _vcf(path: Path, rng: np.random.Generator) -> None:
    lines = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=1>",
        "##contig=<ID=X>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="g">',
        '##FORMAT=<ID=DS,Number=A,Type=Float,Description="d">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *IDS]),
    ]
    for j in range(40):
        g = rng.binomial(2, 0.35, N)
        ds = np.clip(g + rng.normal(0, 0.3, N), 0, 2).round(4)
        certain = rng.random(N) < 0.2  # imputed with certainty: an integral dosage
        ds[certain] = g[certain]
        miss = rng.random(N) < 0.06
        cells = [
            "./.:." if miss[i] else f"{('0/0', '0/1', '1/1')[int(np.floor(ds[i] + 0.5))]}:{ds[i]:.4f}" for i in range(N)
        ]
        chrom = "1" if j < 30 else "X"  # chrX: plink2 exports males (SEX 1) as haploid
        ref, alt = "ACGT"[j % 4], "ACGT"[(j + 1 + j // 4 % 3) % 4]
        lines.append("\t".join([chrom, str(3_000_000 + 100 * j), f"rs{j}", ref, alt, ".", ".", ".", "GT:DS", *cells]))
    path.write_text("\n".join(lines) + "\n")


def _strip_ids(src: Path, dst: Path) -> None:
    """A copy of a BGEN without its sample ID block (as UK Biobank's files are)."""
    data = bytearray(src.read_bytes())
    offset, header_len = int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")
    flags = int.from_bytes(data[header_len : header_len + 4], "little")
    assert flags >> 31
    out = data[: 4 + header_len] + data[4 + offset :]
    out[0:4] = header_len.to_bytes(4, "little")
    out[header_len : header_len + 4] = (flags & 0x7FFFFFFF).to_bytes(4, "little")
    dst.write_bytes(bytes(out))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bgen")
    _vcf(d / "x.vcf", np.random.default_rng(20261204))
    (d / "sex.txt").write_text("#IID\tSEX\n" + "".join(f"{s}\t{1 + i % 2}\n" for i, s in enumerate(IDS)))
    _plink2("--vcf", d / "x.vcf", "dosage=DS", "--update-sex", d / "sex.txt", "--make-pgen", "--out", d / "x")
    _plink2("--pfile", d / "x", "--export", "bgen-1.2", "bits=8", "ref-first", "--out", d / "b12_8")
    _plink2("--pfile", d / "x", "--export", "bgen-1.3", "bits=16", "ref-first", "--out", d / "b13_16")
    _plink2("--pfile", d / "x", "--export", "bgen-1.3", "--out", d / "b13_alt")  # ALT first: import ref-last
    _strip_ids(d / "b12_8.bgen", d / "noids.bgen")
    text = (d / "b12_8.sample").read_text().replace(" P0", " XP0")  # other IDs: shows which source was read
    (d / "noids.sample").write_text(text)
    return d


def _compare(bgen: Path, sample: Path | None, ref: str, cache: Path, out: Path) -> tuple[Path, Path]:
    """fedstat's cache and plink2's import of ``bgen``; asserts equal reads, returns both pvars."""
    info = ensure_bgen_cache(bgen, cache, ref=ref, sample_path=sample)
    args = ["--bgen", bgen, f"ref-{ref}", "--make-pgen", "--out", out]
    _plink2(*args, *(["--sample", sample] if sample is not None else []))
    hard, dose = _reads(info.pgen)
    ids = [line.split("\t")[2] for line in info.pvar.read_text().splitlines()[1:]]
    theirs = [line.split("\t")[2] for line in out.with_suffix(".pvar").read_text().splitlines()[1:]]
    rows = [theirs.index(i) for i in ids]
    hard2, dose2 = _reads(out.with_suffix(".pgen"))
    assert hard.shape == (len(ids), info.n_samples)
    np.testing.assert_array_equal(hard, hard2[rows])
    np.testing.assert_array_equal(dose, dose2[rows])
    assert info.psam.read_text() == out.with_suffix(".psam").read_text()
    return info.pvar, out.with_suffix(".pvar")


@pytest.mark.parametrize(
    ("name", "sample", "ref"),
    [
        ("b12_8", "b12_8", "first"),  # v1.2, zlib, 8 bits: UK Biobank's layout
        ("b13_16", "b13_16", "first"),  # v1.3, zstd, 16 bits
        ("b13_alt", "b13_alt", "last"),  # plink2's default export writes ALT first
        ("b12_8", "b12_8", "last"),  # the same file read the other way round
        ("b12_8", None, "first"),  # embedded IDs only
        ("noids", "noids", "first"),  # no embedded IDs: the .sample's
    ],
)
def test_ensure_bgen_cache__equals_plink2_import(made: Path, tmp_path: Path, name: str, sample: str | None, ref: str):
    ours, theirs = _compare(
        made / f"{name}.bgen", made / f"{sample}.sample" if sample else None, ref, tmp_path / "c", tmp_path / "p"
    )
    assert ours.read_text() == theirs.read_text()  # all SNVs: the same .pvar, REF/ALT by ref-first/last
    hard, dose = _reads(tmp_path / "p.pgen")
    assert (hard == -9).any() and ((dose * 16384) % 16384 != 0).any()  # missing calls and soft dosages
    if name != "noids":
        original, _ = _reads(made / "x.pgen")  # plink2's export round trip lands near the VCF's dosages
        assert np.abs(np.where(original < 0, 0, original) - np.where(hard < 0, 0, hard)).max() <= 2


def test_ensure_bgen_cache__plink2_export_of_samples_with_family_ids_reads_as_plink2(made: Path, tmp_path: Path):
    # plink2 embeds FID_IID for a sample with a family ID, and its .sample gives FID and IID apart;
    # plink2 reads the .sample alone, and so the two must agree in that form too
    _plink2("--vcf", made / "x.vcf", "dosage=DS", "--const-fid", "FAM1", "--make-pgen", "--out", tmp_path / "f")
    _plink2("--pfile", tmp_path / "f", "--export", "bgen-1.2", "bits=8", "ref-first", "--out", tmp_path / "fb")
    ours, theirs = _compare(tmp_path / "fb.bgen", tmp_path / "fb.sample", "first", tmp_path / "c", tmp_path / "p")
    assert ours.read_text() == theirs.read_text()
    assert (tmp_path / "p.psam").read_text().startswith("#FID\tIID")


def test_ensure_bgen_cache__psam_sex_and_ids_as_plink2(made: Path, tmp_path: Path):
    info = ensure_bgen_cache(made / "noids.bgen", tmp_path, ref="first", sample_path=made / "noids.sample")
    lines = info.psam.read_text().splitlines()
    assert lines[0] == "#IID\tSEX"  # ID_1 all "0": no FID, as plink2 writes it
    assert lines[1:3] == ["XP000\t1", "XP001\t2"]  # the .sample's IDs and sex, not the embedded ones


def test_first_allele_dosages__integer_route_where_floats_differ(made: Path, tmp_path: Path):
    # the float route (bgen's probabilities rounded to 1/16384) misses plink2 in some 8-bit cells
    info = ensure_bgen_cache(made / "b12_8.bgen", tmp_path, ref="first", sample_path=made / "b12_8.sample")
    _, ours = _reads(info.pgen)
    with BgenReader(str(made / "b12_8.bgen"), delay_parsing=True) as bf:
        p = np.stack([v.probabilities.astype(np.float64) for v in bf])
    floats = np.round((p[:, :, 1] + 2 * p[:, :, 2]) * 16384) / 16384
    soft = ~np.isnan(floats)
    assert (floats[soft] != ours[soft]).sum() > 0
    _plink2(
        "--bgen",
        made / "b12_8.bgen",
        "ref-first",
        "--sample",
        made / "b12_8.sample",
        "--make-pgen",
        "--out",
        tmp_path / "p",
    )
    np.testing.assert_array_equal(ours, _reads(tmp_path / "p.pgen")[1])


def _crafted(path: Path, rng: np.random.Generator, compression: str | None) -> None:
    """Records plink2 does not export: phased, haploid, variable ploidy, 1-28 bits, skipped ones."""

    def unphased() -> np.ndarray:
        p = rng.dirichlet([0.5, 0.5, 0.5], N)
        p[rng.random(N) < 0.2] = [1, 0, 0]
        p[rng.random(N) < 0.1] = [0, 1, 0]
        p[rng.random(N) < 0.1] = np.nan
        return p

    logging.disable(logging.WARNING)  # bgen's writer warns about what low precisions lose
    try:
        with warnings.catch_warnings(), BgenWriter(str(path), N, samples=IDS, compression=compression) as w:
            warnings.simplefilter("ignore")
            k = 0
            for kind in ("unphased", "phased", "haploid", "variable", "variable-phased"):
                for bits in (1, 3, 7, 8, 10, 16, 23, 28):
                    k += 1
                    alleles = ["ACGT"[k % 4], "ACGT"[(k + 1) % 4]]
                    chrom = "X" if kind in ("haploid", "variable", "variable-phased") else "1"
                    ploidy: int | np.ndarray = 2
                    if kind == "unphased":
                        p = unphased()
                    elif kind == "phased":
                        h = np.where(rng.random((N, 2)) < 0.4, rng.integers(0, 2, (N, 2)), rng.random((N, 2)))
                        p = np.stack([h[:, 0], 1 - h[:, 0], h[:, 1], 1 - h[:, 1]], axis=1)
                    elif kind == "haploid":
                        ploidy = 1
                        h = np.where(rng.random(N) < 0.3, 1.0, rng.random(N))
                        p = np.stack([h, 1 - h], axis=1)
                    else:
                        ploidy = rng.integers(1, 3, N).astype(np.uint8)
                        width = 4 if kind == "variable-phased" else 3
                        p = np.full((N, width), np.nan)
                        for i in range(N):
                            x, y = rng.random(2)
                            if ploidy[i] == 1:
                                p[i, :2] = [x, 1 - x]
                            elif width == 4:
                                p[i] = [x, 1 - x, y, 1 - y]
                            else:
                                p[i] = rng.dirichlet([1, 1, 1])
                    p[rng.random(N) < 0.1] = np.nan
                    w.add_variant(
                        f"v{k}",
                        f"rs{k}",
                        chrom,
                        100 * k,
                        alleles,
                        p,
                        ploidy=ploidy,
                        phased=kind.endswith("-phased") or kind == "phased",
                        bit_depth=bits,
                    )
            w.add_variant("m", "rsm", "2", 10, ["A", "C", "G"], rng.dirichlet([1] * 6, N), bit_depth=8)
            w.add_variant("i", "rsi", "2", 20, ["A", "CT"], unphased(), bit_depth=8)
            w.add_variant("l", "rsl", "chr2", 30, ["a", "g"], unphased(), bit_depth=8)
    finally:
        logging.disable(logging.NOTSET)
    rows = "".join(f"{s} {s} 0 {('1', '2', '0', 'NA')[i % 4]}\n" for i, s in enumerate(IDS))
    path.with_suffix(".sample").write_text("ID_1 ID_2 missing sex\n0 0 0 D\n" + rows)


@pytest.mark.parametrize(("compression", "ref"), [("zstd", "first"), ("zlib", "last"), (None, "first")])
def test_ensure_bgen_cache__phased_haploid_and_any_precision_equal_plink2(tmp_path: Path, compression, ref):
    bgen = tmp_path / "c.bgen"
    _crafted(bgen, np.random.default_rng(7 + len(ref)), compression)
    ours, theirs = _compare(bgen, bgen.with_suffix(".sample"), ref, tmp_path / "cache", tmp_path / "p")
    info = ensure_bgen_cache(bgen, tmp_path / "cache", ref=ref, sample_path=bgen.with_suffix(".sample"))
    assert (info.n_variants, info.multiallelic_skipped, info.non_snv_skipped) == (41, 1, 1)
    assert not info.rebuilt
    # plink2 keeps the indel and the lower-case alleles as written; fedstat keeps SNVs, upper-case
    assert ours.read_text().splitlines()[-1] == ("2\t30\trsl\tA\tG" if ref == "first" else "2\t30\trsl\tG\tA")
    assert len(theirs.read_text().splitlines()) == 1 + 42
    psam = info.psam.read_text().splitlines()
    assert psam[:5] == ["#FID\tIID\tSEX", "P000\tP000\t1", "P001\tP001\t2", "P002\tP002\tNA", "P003\tP003\tNA"]


def test_open_genotypes__bgen_directory_reads_plink2_dosages(made: Path, tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(made / "noids.bgen", site / "genotypes.bgen")
    shutil.copy(made / "noids.sample", site / "genotypes.sample")
    with pytest.raises(GenotypeFileError, match=r"set bgen_ref .*ref-unknown"):
        open_genotypes(site)
    src = open_genotypes(site, cache_dir=tmp_path / "cache", options=ImportOptions(bgen_ref="first"))
    assert (src.format, src.has_dosages, src.n_samples, src.n_variants) == ("bgen", True, N, 40)
    assert src.samples.iid[:2] == ("XP000", "XP001") and src.samples.fid is None
    blocks = [b for _, b in src.read_blocks(np.arange(src.n_variants), values=DOSAGES, block_size=7)]
    _plink2(
        "--bgen",
        site / "genotypes.bgen",
        "ref-first",
        "--sample",
        site / "genotypes.sample",
        "--make-pgen",
        "--out",
        tmp_path / "p",
    )
    np.testing.assert_array_equal(np.concatenate(blocks).astype(np.float64), _reads(tmp_path / "p.pgen")[1])


def test_open_dataset__bgen_sample_file_sex_is_the_datasets_sex(made: Path, tmp_path: Path):
    # plink2 --bgen --sample reads sex from the .sample; chrX/Y counts and --glm need it
    from fedstat.data.dataset import open_dataset
    from fedstat.data.sex import FEMALE, MALE

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(made / "b12_8.bgen", site / "genotypes.bgen")
    shutil.copy(made / "b12_8.sample", site / "genotypes.sample")
    (site / "samples.tsv").write_text("#IID\tQT\n" + "".join(f"{s}\t1\n" for s in IDS))
    ds = open_dataset("B", site, cache_dir=tmp_path / "cache", options=ImportOptions(bgen_ref="first"))
    expected = [MALE if i % 2 == 0 else FEMALE for i in range(N)]  # the fixture's --update-sex: 1, 2, 1, ...
    assert ds.sex.tolist() == expected


# ---------------------------------------------------------------------------------------------
# refusals: each names the file and what is wrong, never a sample ID or a value


def _refused(bgen: Path, tmp_path: Path, match: str, *, sample: Path | None = None, ref: str = "first") -> str:
    cache = tmp_path / "refused-cache"
    with pytest.raises(GenotypeFileError, match=match) as err:
        ensure_bgen_cache(bgen, cache, ref=ref, sample_path=sample)
    msg = str(err.value)
    assert str(bgen.name) in msg or (sample is not None and sample.name in msg)
    assert not any(s in msg for s in IDS + [s.replace("P", "XP") for s in IDS])
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written
    return msg


def test_ensure_bgen_cache__refuses_unset_ref_bad_magic_and_old_layouts(made: Path, tmp_path: Path):
    _refused(made / "b12_8.bgen", tmp_path, r"set bgen_ref", ref="")
    data = bytearray((made / "b12_8.bgen").read_bytes())
    bad = tmp_path / "bad.bgen"
    bad.write_bytes(bytes(data[:16]) + b"nope" + bytes(data[20:]))
    _refused(bad, tmp_path, "not a BGEN file")
    header_len = int.from_bytes(data[4:8], "little")
    flags = int.from_bytes(data[header_len : header_len + 4], "little")
    for layout, compression, what in ((1, 1, "v1.1"), (2, 3, "unknown version"), (0, 0, "v1.0")):
        old = bytearray(data)
        new_flags = (flags & ~0x3F) | (layout << 2) | compression
        old[header_len : header_len + 4] = new_flags.to_bytes(4, "little")
        bad.write_bytes(bytes(old))
        _refused(bad, tmp_path, f"BGEN (of an )?{what}.*not supported")


def test_ensure_bgen_cache__refuses_truncated_and_corrupt_files(made: Path, tmp_path: Path):
    data = (made / "b13_16.bgen").read_bytes()
    cut = tmp_path / "cut.bgen"
    for keep in (len(data) - 5, len(data) // 2, 40):
        cut.write_bytes(data[:keep])
        _refused(cut, tmp_path, r"truncated|malformed|invalid BGEN header", sample=made / "b13_16.sample")
    corrupt = bytearray(data)
    corrupt[-40:-20] = bytes(20)  # zeros inside the last record's zstd frame
    cut.write_bytes(bytes(corrupt))
    msg = _refused(cut, tmp_path, r"variant 40 \(X:\d+\): genotype block", sample=made / "b13_16.sample")
    assert "decompress" in msg or "length" in msg


def test_ensure_bgen_cache__refuses_sample_file_disagreeing_with_bgen(made: Path, tmp_path: Path):
    lines = (made / "b12_8.sample").read_text().splitlines(keepends=True)
    sample = tmp_path / "s.sample"
    sample.write_text("".join(lines[:-1]))
    _refused(
        made / "b12_8.bgen", tmp_path, rf"holds {N - 1} samples, while the BGEN b12_8.bgen holds {N}", sample=sample
    )
    _refused(
        made / "b12_8.bgen", tmp_path, r"differ from those embedded .* first at sample 1", sample=made / "noids.sample"
    )
    sample.write_text("".join(lines[:3]) + lines[2] + "".join(lines[4:]))
    _refused(made / "noids.bgen", tmp_path, r"line 4: duplicate sample ID \(first seen on line 3\)", sample=sample)
    sample.write_text("".join(lines).replace(" 1\n", " M\n", 1))
    _refused(made / "noids.bgen", tmp_path, r"line 3: sex must be 1", sample=sample)
    sample.write_text(lines[0] + "0 0 0 C\n" + "".join(lines[2:]))
    _refused(made / "noids.bgen", tmp_path, r"sex column must have type D", sample=sample)
    _refused(made / "noids.bgen", tmp_path, r"holds no sample IDs.*genotypes\.sample")


def test_ensure_bgen_cache__refuses_records_plink2_refuses(tmp_path: Path):
    bgen = tmp_path / "r.bgen"
    p = np.tile([0.2, 0.3, 0.5], (N, 1))
    for kwargs, match in (
        ({"ploidy": 3, "genotypes": np.tile([0.1, 0.2, 0.3, 0.4], (N, 1))}, "ploidy above 2"),
        ({"bit_depth": 32}, "precision above 28 bits"),
    ):
        logging.disable(logging.WARNING)
        try:
            with BgenWriter(str(bgen), N, samples=IDS, compression="zlib") as w:
                w.add_variant("v1", "rs1", "1", 10, ["A", "C"], p, bit_depth=8)
                w.add_variant("v2", "rs2", "1", 20, ["A", "G"], **{"genotypes": p, **kwargs})
        finally:
            logging.disable(logging.NOTSET)
        _refused(bgen, tmp_path, rf"r.bgen: variant 2 \(1:20\): .*{match}")
    with BgenWriter(str(bgen), N, samples=IDS, compression="zlib") as w:
        w.add_variant("v1", "", "1", 10, ["A", "C"], p)
    _refused(bgen, tmp_path, r"variant 1 \(1:10\): empty rsid")
    with BgenWriter(str(bgen), N, samples=IDS, compression="zlib") as w:
        w.add_variant("v1", "rs1", "1", 10, ["A", "CT"], p)
    _refused(bgen, tmp_path, r"no biallelic SNV to cache \(0 multiallelic and 1 other")


# ---------------------------------------------------------------------------------------------
# the cache


def test_ensure_bgen_cache__reused_until_bgen_sample_or_ref_change(made: Path, tmp_path: Path):
    bgen, sample = tmp_path / "g.bgen", tmp_path / "g.sample"
    shutil.copy(made / "noids.bgen", bgen)
    shutil.copy(made / "noids.sample", sample)
    cache = tmp_path / "cache"
    first = ensure_bgen_cache(bgen, cache, ref="first", sample_path=sample)
    assert first.rebuilt and first.n_variants == 40
    assert not ensure_bgen_cache(bgen, cache, ref="first", sample_path=sample).rebuilt
    last = ensure_bgen_cache(bgen, cache, ref="last", sample_path=sample)  # another cache beside it
    assert last.rebuilt and last.pgen != first.pgen
    assert not ensure_bgen_cache(bgen, cache, ref="first", sample_path=sample).rebuilt
    sample.write_text(sample.read_text().replace("XP000", "YP000"))
    again = ensure_bgen_cache(bgen, cache, ref="first", sample_path=sample)
    assert again.rebuilt and again.psam.read_text().splitlines()[1] == "YP000\t1"
    os.utime(bgen, ns=(1, 1))
    assert ensure_bgen_cache(bgen, cache, ref="first", sample_path=sample).rebuilt
    assert sorted(p.suffix for p in cache.iterdir()) == sorted([".json", ".pgen", ".psam", ".pvar"] * 2)
