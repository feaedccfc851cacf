"""Consortium simulation: layout, formats, swaps, missingness, structure, reproducibility."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pgenlib
import pytest

from fedstat.errors import InputError
from fedstat.simulate import ConsortiumTruth, simulate_consortium

SITES = {"S1": 40, "S3": 25, "S2": 33}
FORMATS = {"S1": "bed", "S2": "pgen", "S3": "vcf"}


def _simulate(out: Path, seed: int = 7) -> ConsortiumTruth:
    return simulate_consortium(
        out,
        sites=SITES,
        n_variants=300,
        seed=seed,
        formats=FORMATS,
        swap_fraction={"S2": 0.2, "S3": 0.1},
        missing_rate={"S2": 0.05},
        hwe_outlier_fraction=0.02,
        all_missing_fraction=0.01,
        monomorphic_fraction=0.01,
    )


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> ConsortiumTruth:
    return _simulate(tmp_path_factory.mktemp("sim"))


def _read_pgen(path: Path, n_samples: int | None = None) -> np.ndarray:
    kwargs = {} if n_samples is None else {"raw_sample_ct": n_samples}
    reader = pgenlib.PgenReader(str(path).encode(), **kwargs)
    try:
        out = np.empty((reader.get_variant_ct(), reader.get_raw_sample_ct()), dtype=np.int8)
        reader.read_range(0, out.shape[0], out)
        return out
    finally:
        reader.close()


def _read_vcf(path: Path) -> tuple[list[list[str]], np.ndarray, list[str]]:
    code = {"0/0": 0, "0/1": 1, "1/1": 2, "./.": -9}
    rows, genos, samples = [], [], []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith("##"):
                continue
            fields = line.rstrip("\n").split("\t")
            if line.startswith("#"):
                samples = fields[9:]
                continue
            rows.append(fields[:5])
            genos.append([code[g] for g in fields[9:]])
    return rows, np.array(genos, dtype=np.int8), samples


def _site_genotypes(sim: ConsortiumTruth, site: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Genotypes (ALT counts in the site's own orientation) and (REF, ALT) as the site lists them."""
    d = sim.site_dir(site)
    n = sim.n_samples[site]
    if sim.formats[site] == "pgen":
        pvar = [r.split("\t") for r in (d / "genotypes.pvar").read_text().splitlines()[1:]]
        return _read_pgen(d / "genotypes.pgen"), [(r[3], r[4]) for r in pvar]
    if sim.formats[site] == "bed":
        bim = [r.split("\t") for r in (d / "genotypes.bim").read_text().splitlines()]
        # pgenlib reads .bed with A1 (bim column 5) counted as the ALT allele
        return _read_pgen(d / "genotypes.bed", n), [(r[5], r[4]) for r in bim]
    rows, geno, samples = _read_vcf(d / "genotypes.vcf.gz")
    assert samples == list(sim.sample_ids[site])
    return geno, [(r[3], r[4]) for r in rows]


def test_simulate_consortium__writes_each_format_and_pooled(sim):
    assert sim.sites == ("S1", "S2", "S3")
    assert sorted(p.name for p in (sim.out_dir / "S1").iterdir()) == [
        "genotypes.bed",
        "genotypes.bim",
        "genotypes.fam",
        "samples.tsv",
    ]
    assert sorted(p.name for p in (sim.out_dir / "S2").iterdir()) == [
        "genotypes.pgen",
        "genotypes.psam",
        "genotypes.pvar",
        "samples.tsv",
    ]
    assert sorted(p.name for p in (sim.out_dir / "S3").iterdir()) == ["genotypes.vcf.gz", "samples.tsv"]
    assert sorted(p.name for p in (sim.out_dir / "pooled").iterdir()) == [
        "genotypes.pgen",
        "genotypes.psam",
        "genotypes.pvar",
        "samples.tsv",
    ]


def test_simulate_consortium__sites_hold_the_pooled_data_in_their_own_orientation(sim):
    pooled = _read_pgen(sim.pooled_prefix.with_suffix(".pgen"))
    assert pooled.shape == (300, 98)
    start = 0
    for site in sim.sites:
        n = sim.n_samples[site]
        truth = pooled[:, start : start + n]
        start += n
        geno, alleles = _site_genotypes(sim, site)
        swap = sim.swapped[site]
        expected_alleles = [
            (a, r) if s else (r, a) for r, a, s in zip(sim.variants.ref, sim.variants.alt, swap, strict=True)
        ]
        assert alleles == expected_alleles, site
        unflipped = np.where(swap[:, None] & (geno >= 0), 2 - geno, geno)
        np.testing.assert_array_equal(unflipped, truth, err_msg=site)
    assert sim.swapped["S1"].sum() == 0
    assert 30 <= sim.swapped["S2"].sum() <= 90  # 20% of 300
    assert 10 <= sim.swapped["S3"].sum() <= 50


def test_simulate_consortium__missingness_outliers_and_monomorphic(sim):
    pooled = _read_pgen(sim.pooled_prefix.with_suffix(".pgen"))
    all_missing = (pooled < 0).all(axis=1)
    assert all_missing.sum() == 3  # 1% of 300
    s2 = pooled[~all_missing, 40:73]  # S2 sits between S1 (40) and S3 (25) in name order
    assert 0.02 < float((s2 < 0).mean()) < 0.09  # missing_rate 0.05
    assert float((pooled[~all_missing, :40] < 0).mean()) == 0.0
    called = pooled[~all_missing]
    no_het = ((called == 1).sum(axis=1) == 0) & ((called == 0).any(axis=1)) & ((called == 2).any(axis=1))
    assert no_het.sum() >= 3  # the planted no-heterozygote outliers
    het_share = (called == 1).mean(axis=1)
    assert (het_share > 0.8).sum() >= 3  # the planted excess-heterozygote outliers
    assert ((called <= 0).all(axis=1)).sum() >= 3  # monomorphic REF (S2 has missing calls)


def test_simulate_consortium__variants_ids_and_samples(sim):
    v = sim.variants
    assert set(v.chrom.tolist()) == {str(c) for c in range(1, 23)}
    chrom = v.chrom.astype(int)
    assert np.all(np.diff(chrom) >= 0)
    for c in range(1, 23):
        assert np.all(np.diff(v.pos[chrom == c]) > 0)
    assert len(set(v.id.tolist())) == 300 and all(i.startswith("rs") for i in v.id)
    assert all(r != a for r, a in zip(v.ref, v.alt, strict=True))
    ids = [i for s in sim.sites for i in sim.sample_ids[s]]
    assert len(set(ids)) == len(ids) == 98
    assert all(i.startswith(f"{s}_") for s in sim.sites for i in sim.sample_ids[s])
    lines = (sim.site_dir("S2") / "samples.tsv").read_text().splitlines()
    assert lines[0] == "#FID\tIID\tQT\tCC\tAGE\tSEX"
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[1] for r in rows] == list(sim.sample_ids["S2"])
    assert {r[3] for r in rows} <= {"1", "2", "NA"} and {r[5] for r in rows} <= {"1", "2"}
    assert all(20 <= int(r[4]) <= 80 for r in rows)
    psam = (sim.pooled_prefix.with_suffix(".psam")).read_text().splitlines()
    assert psam[0] == "#FID\tIID\tSEX" and [r.split("\t")[1] for r in psam[1:]] == ids


def test_simulate_consortium__balding_nichols_structure(tmp_path):
    truth = simulate_consortium(
        tmp_path,
        sites={"A": 5, "B": 5, "C": 5, "D": 5},
        n_variants=4000,
        seed=2,
        formats=dict.fromkeys("ABCD", "bed"),
        fst=0.1,
        rare_fraction=0.0,
        monomorphic_fraction=0.0,
    )
    p = truth.ancestral_freq
    site = np.stack([truth.site_freq[s] for s in truth.sites])
    # E[(p_site - p)^2] = F p (1 - p) under Balding–Nichols
    fst_hat = float(((site - p) ** 2).mean() / (p * (1 - p)).mean())
    assert 0.085 < fst_hat < 0.115
    assert np.all((p >= 0.05) & (p <= 0.5))


def test_simulate_consortium__same_seed_same_bytes_other_seed_differs(tmp_path, sim):
    again = _simulate(tmp_path / "again")
    for rel in (
        "S1/genotypes.bed",
        "S2/genotypes.pgen",
        "S3/genotypes.vcf.gz",
        "pooled/genotypes.pgen",
        "pooled/genotypes.pvar",
        "S2/samples.tsv",
    ):
        assert (sim.out_dir / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel
    other = _simulate(tmp_path / "other", seed=8)
    assert (other.out_dir / "pooled/genotypes.pgen").read_bytes() != (
        sim.out_dir / "pooled/genotypes.pgen"
    ).read_bytes()


def test_simulate_consortium__rejects_bad_arguments(tmp_path):
    base = {"sites": {"A": 3}, "n_variants": 10, "seed": 1, "formats": {"A": "bed"}}
    with pytest.raises(InputError, match="format"):
        simulate_consortium(tmp_path, **{**base, "formats": {"A": "bcf"}})
    with pytest.raises(InputError, match="at least one sample"):
        simulate_consortium(tmp_path, **{**base, "sites": {"A": 0}})
    with pytest.raises(InputError, match=r"missing_rate\['A'\]"):
        simulate_consortium(tmp_path, **base, missing_rate={"A": 1.5})
    with pytest.raises(InputError, match="unknown site 'B'"):
        simulate_consortium(tmp_path, **base, swap_fraction={"B": 0.1})
    with pytest.raises(InputError, match="fst"):
        simulate_consortium(tmp_path, **base, fst=0.0)


def test_simulate_consortium__fast_for_3000_samples_10k_variants(tmp_path):
    start = time.perf_counter()
    truth = simulate_consortium(
        tmp_path,
        sites={"AFR": 1000, "EAS": 800, "EUR": 1200},
        n_variants=10000,
        seed=3,
        formats={"AFR": "bed", "EAS": "vcf", "EUR": "pgen"},
        swap_fraction={"EUR": 0.1},
        missing_rate={"EUR": 0.02},
    )
    elapsed = time.perf_counter() - start
    assert len(truth.variants) == 10000
    assert (tmp_path / "pooled" / "genotypes.pgen").stat().st_size > 3000 * 10000 // 4 * 0.5
    assert elapsed < 10.0
