"""Simulate a structured multi-site consortium and write it to disk.

Each site holds samples from its own population. Populations descend from one ancestral
population under the Balding–Nichols model: for a variant with ancestral ALT frequency
``p``, a site's frequency is drawn from ``Beta(p (1-F)/F, (1-p)(1-F)/F)`` with ``F = fst``;
genotypes are then drawn under Hardy–Weinberg from the site frequency.

Layout written under ``out_dir``::

    <site>/genotypes.{bed,bim,fam} | genotypes.{pgen,pvar,psam} | genotypes.vcf.gz
    <site>/samples.tsv            #FID IID QT CC AGE SEX
    pooled/genotypes.{pgen,pvar,psam}, pooled/samples.tsv
        all samples (sites in name order), canonical REF/ALT: what plink2 runs on

A site with a ``swap_fraction`` lists REF and ALT exchanged for that fraction of variants,
with its genotypes encoded accordingly: the data is the same, only the orientation differs.

Reproducibility: every random quantity is derived from ``seed`` through
``numpy.random.SeedSequence``; genotypes, missingness and swaps come from thresholding
``Generator.random`` uniforms (not from numpy's binomial/beta samplers, whose streams may
change between numpy versions), and Beta quantiles come from ``scipy.special.betaincinv``.

References
----------
Balding DJ, Nichols RA (1995) A method for quantifying differentiation between populations
at multi-allelic loci and its implications for investigating identity and paternity.
Genetica 96:3-12.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import betaincinv, ndtri

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError

__all__ = ["ConsortiumTruth", "simulate_consortium", "FORMATS"]

FORMATS = ("bed", "pgen", "vcf")
_BASES = np.array(["A", "C", "G", "T"], dtype=object)
_CHUNK = 2048  # variants per block while drawing uniforms (bounds memory; stream is unaffected)


@dataclass(frozen=True)
class ConsortiumTruth:
    """What was simulated.

    Attributes
    ----------
    out_dir : directory holding one folder per site and ``pooled/``
    sites : site names in pooled order (sorted by name)
    n_samples : per site, its sample count
    formats : per site, ``"bed"``, ``"pgen"`` or ``"vcf"``
    variants : canonical :class:`VariantTable` (the pooled dataset's orientation and order)
    swapped : per site, [array, shape: (n_variants,), dtype bool] true where that site's files
        list REF and ALT exchanged
    ancestral_freq : [array, shape: (n_variants,)] ancestral ALT frequency
    site_freq : per site, [array, shape: (n_variants,)] population ALT frequency at the site
    causal_index : [array, shape: (n_causal,)] variants with an effect on QT and CC
    causal_beta : [array, shape: (n_causal,)] per-ALT-allele effect on QT (standardised scale)
    seed : the seed everything was derived from
    """

    out_dir: Path
    sites: tuple[str, ...]
    n_samples: Mapping[str, int]
    formats: Mapping[str, str]
    variants: VariantTable
    swapped: Mapping[str, np.ndarray]
    ancestral_freq: np.ndarray
    site_freq: Mapping[str, np.ndarray]
    causal_index: np.ndarray
    causal_beta: np.ndarray
    seed: int
    sample_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def site_dir(self, site: str) -> Path:
        return self.out_dir / site

    @property
    def pooled_prefix(self) -> Path:
        """``<out_dir>/pooled/genotypes`` (add ``.pgen``/``.pvar``/``.psam``)."""
        return self.out_dir / "pooled" / "genotypes"


def simulate_consortium(
    out_dir: str | Path,
    *,
    sites: Mapping[str, int],
    n_variants: int,
    seed: int,
    formats: Mapping[str, str],
    swap_fraction: Mapping[str, float] | None = None,
    missing_rate: Mapping[str, float] | None = None,
    fst: float = 0.05,
    monomorphic_fraction: float = 0.005,
    rare_fraction: float = 0.05,
    hwe_outlier_fraction: float = 0.0,
    all_missing_fraction: float = 0.0,
    n_causal: int = 10,
    heritability: float = 0.3,
    pheno_missing_rate: float = 0.03,
) -> ConsortiumTruth:
    """Simulate genotypes and sample tables for a consortium and write them under ``out_dir``.

    Parameters
    ----------
    out_dir : output directory (created; existing files of the same names are overwritten).
    sites : site name -> number of samples (at least one each).
    n_variants : variants, spread over chromosomes 1..22 with increasing positions.
    seed : seed for ``numpy.random.SeedSequence``; same seed, same files.
    formats : site name -> ``"bed"``, ``"pgen"`` or ``"vcf"`` (every site needs one).
    swap_fraction : site name -> fraction of variants whose REF/ALT that site lists swapped.
    missing_rate : site name -> per-genotype probability of a missing call.
    fst : Balding–Nichols F between each site's population and the ancestral one (0 < fst < 1).
    monomorphic_fraction : share of variants monomorphic for REF everywhere (at least one
        when > 0 and ``n_variants`` allows).
    rare_fraction : share of variants with ancestral ALT frequency in [0.001, 0.02).
    hwe_outlier_fraction : share of variants made to violate HWE: half with no heterozygotes
        at all, half with about 90% heterozygotes (extreme exact-test p-values).
    all_missing_fraction : share of variants with no genotype called at any site (plink2
        prints ``nan`` frequencies for them).
    n_causal : variants with an additive effect on the phenotypes.
    heritability : share of QT variance from the causal variants (per-site standardised).
    pheno_missing_rate : share of ``NA`` in QT and, independently, in CC.

    Returns
    -------
    ConsortiumTruth

    Raises
    ------
    InputError
        If a site lacks a format, a format is unknown, or a rate lies outside [0, 1].
    """
    swap_fraction = dict(swap_fraction or {})
    missing_rate = dict(missing_rate or {})
    _validate(sites, n_variants, formats, swap_fraction, missing_rate, fst)
    out = Path(out_dir)
    names = tuple(sorted(sites))
    ss = np.random.SeedSequence(seed)
    ss_global, *ss_sites = ss.spawn(1 + len(names))
    rng = np.random.default_rng(ss_global)

    variants, anc, kind = _simulate_variants(
        rng,
        n_variants,
        monomorphic_fraction,
        rare_fraction,
        hwe_outlier_fraction,
        all_missing_fraction,
    )
    n_causal = min(n_causal, int((kind == 0).sum()))
    causal_pool = np.flatnonzero(kind == 0)
    causal_index = np.sort(rng.permutation(causal_pool)[:n_causal]) if n_causal else np.zeros(0, dtype=np.int64)
    causal_beta = ndtri(rng.random(n_causal)) if n_causal else np.zeros(0)

    genos: dict[str, np.ndarray] = {}
    site_freq: dict[str, np.ndarray] = {}
    swapped: dict[str, np.ndarray] = {}
    sample_ids: dict[str, tuple[str, ...]] = {}
    for name, site_ss in zip(names, ss_sites, strict=True):
        srng = np.random.default_rng(site_ss)
        freq = _balding_nichols(srng, anc, kind, fst)
        g = _draw_genotypes(srng, freq, kind, sites[name])
        rate = float(missing_rate.get(name, 0.0))
        if rate > 0:
            _apply_missing(srng, g, rate)
        g[kind == 5] = -9
        swap = srng.random(n_variants) < float(swap_fraction.get(name, 0.0))
        ids = tuple(f"{name}_{i + 1:05d}" for i in range(sites[name]))
        table = _sample_table(srng, g, causal_index, causal_beta, heritability, pheno_missing_rate)
        site_dir = out / name
        site_dir.mkdir(parents=True, exist_ok=True)
        _write_samples_tsv(site_dir / "samples.tsv", ids, table)
        local_variants = variants.flipped(swap)
        local_g = np.where(swap[:, None] & (g >= 0), 2 - g, g).astype(np.int8)
        _write_genotypes(site_dir / "genotypes", formats[name], local_variants, local_g, ids, table["SEX"])
        genos[name] = g
        site_freq[name] = freq
        swapped[name] = swap
        sample_ids[name] = ids

    pooled_dir = out / "pooled"
    pooled_dir.mkdir(parents=True, exist_ok=True)
    all_ids = tuple(i for name in names for i in sample_ids[name])
    all_g = np.concatenate([genos[name] for name in names], axis=1)
    sexes: list[int] = []
    rows: list[str] = []
    for name in names:
        lines = (out / name / "samples.tsv").read_text().splitlines()[1:]
        rows.extend(lines)
        sexes.extend(int(line.split("\t")[5]) for line in lines)
    (pooled_dir / "samples.tsv").write_text("#FID\tIID\tQT\tCC\tAGE\tSEX\n" + "".join(r + "\n" for r in rows))
    _write_pgen(pooled_dir / "genotypes", variants, all_g, all_ids, np.asarray(sexes))

    return ConsortiumTruth(
        out_dir=out,
        sites=names,
        n_samples={n: int(sites[n]) for n in names},
        formats={n: formats[n] for n in names},
        variants=variants,
        swapped=swapped,
        ancestral_freq=anc,
        site_freq=site_freq,
        causal_index=causal_index,
        causal_beta=causal_beta,
        seed=seed,
        sample_ids=sample_ids,
    )


# ---------------------------------------------------------------------------------------------


def _validate(
    sites: Mapping[str, int],
    n_variants: int,
    formats: Mapping[str, str],
    swap_fraction: Mapping[str, float],
    missing_rate: Mapping[str, float],
    fst: float,
) -> None:
    if not sites:
        raise InputError("simulate_consortium needs at least one site")
    if n_variants < 1:
        raise InputError(f"simulate_consortium: n_variants must be >= 1, got {n_variants}")
    for name, n in sites.items():
        if int(n) < 1:
            raise InputError(f"simulate_consortium: site {name!r} needs at least one sample")
        fmt = formats.get(name)
        if fmt not in FORMATS:
            raise InputError(f"simulate_consortium: site {name!r} needs a format in {FORMATS}, got {fmt!r}")
    for label, rates in (("swap_fraction", swap_fraction), ("missing_rate", missing_rate)):
        for name, rate in rates.items():
            if name not in sites:
                raise InputError(f"simulate_consortium: {label} names unknown site {name!r}")
            if not 0.0 <= float(rate) <= 1.0:
                raise InputError(f"simulate_consortium: {label}[{name!r}] must lie in [0, 1]")
    if not 0.0 < fst < 1.0:
        raise InputError(f"simulate_consortium: fst must lie in (0, 1), got {fst}")


def _simulate_variants(
    rng: np.random.Generator,
    n_variants: int,
    mono_frac: float,
    rare_frac: float,
    outlier_frac: float,
    missing_frac: float,
) -> tuple[VariantTable, np.ndarray, np.ndarray]:
    """Canonical variants and their ancestral ALT frequency.

    ``kind``: 0 common, 1 rare, 2 monomorphic, 3 no-het outlier, 4 excess-het outlier,
    5 never called.
    """
    # spread over chromosomes 1..22: equal shares, remainder to the first chromosomes
    per_chrom = np.full(22, n_variants // 22)
    per_chrom[: n_variants % 22] += 1
    chrom = np.repeat(np.arange(1, 23), per_chrom)
    gaps = 1 + np.floor(rng.random(n_variants) * 20000).astype(np.int64)
    pos = np.empty(n_variants, dtype=np.int64)
    start = 0
    for ct in per_chrom:
        pos[start : start + ct] = np.cumsum(gaps[start : start + ct]) + 10000
        start += ct
    ref_i = np.floor(rng.random(n_variants) * 4).astype(np.int64)
    alt_i = (ref_i + 1 + np.floor(rng.random(n_variants) * 3).astype(np.int64)) % 4
    ids = np.asarray([f"rs{100000 + i}" for i in range(n_variants)], dtype=object)
    variants = VariantTable(
        chrom=np.asarray([str(c) for c in chrom], dtype=object),
        pos=pos,
        id=ids,
        ref=_BASES[ref_i].copy(),
        alt=_BASES[alt_i].copy(),
    )

    anc = 0.05 + 0.45 * rng.random(n_variants)
    kind = np.zeros(n_variants, dtype=np.int8)
    order = rng.permutation(n_variants)

    def count(frac: float) -> int:
        return min(n_variants, max(1, round(frac * n_variants))) if frac > 0 else 0

    n_mono, n_rare, n_out = count(mono_frac), count(rare_frac), count(outlier_frac)
    n_out += n_out % 2 if n_out else 0  # an even number: half no-het, half excess-het
    n_miss = count(missing_frac)
    if n_mono + n_rare + n_out + n_miss > n_variants:
        raise InputError("simulate_consortium: the special variant fractions add up to > 1")
    cut = np.cumsum([n_mono, n_rare, n_out // 2, n_out // 2, n_miss])
    kind[order[: cut[0]]] = 2
    kind[order[cut[0] : cut[1]]] = 1
    kind[order[cut[1] : cut[2]]] = 3
    kind[order[cut[2] : cut[3]]] = 4
    kind[order[cut[3] : cut[4]]] = 5
    rare_p = 0.001 + 0.019 * rng.random(n_variants)
    anc = np.where(kind == 1, rare_p, anc)
    anc = np.where(kind == 2, 0.0, anc)
    outlier = (kind == 3) | (kind == 4)
    anc = np.where(outlier, 0.3 + 0.2 * rng.random(n_variants), anc)
    return variants, anc, kind


def _balding_nichols(rng: np.random.Generator, anc: np.ndarray, kind: np.ndarray, fst: float) -> np.ndarray:
    """Site ALT frequency: Beta(p(1-F)/F, (1-p)(1-F)/F) by inverse CDF of a uniform."""
    u = rng.random(len(anc))  # one uniform per variant
    freq = anc.copy()
    poly = kind != 2
    scale = (1.0 - fst) / fst
    a = anc[poly] * scale
    b = (1.0 - anc[poly]) * scale
    freq[poly] = np.clip(betaincinv(a, b, u[poly]), 0.0, 1.0)
    # plant outliers near the middle, so their HWE deviation is extreme rather than subtle
    outlier = (kind == 3) | (kind == 4)
    freq[outlier] = anc[outlier]
    return freq


def _draw_genotypes(rng: np.random.Generator, freq: np.ndarray, kind: np.ndarray, n_samples: int) -> np.ndarray:
    """ALT allele counts, [array, shape: (n_variants, n_samples), dtype int8]."""
    n_var = freq.shape[0]
    g = np.empty((n_var, n_samples), dtype=np.int8)
    q0 = (1.0 - freq) ** 2  # P(hom REF)
    q1 = 1.0 - freq**2  # P(hom REF) + P(het)
    nohet = kind == 3  # REF/REF with probability 1-p, ALT/ALT with probability p
    q0 = np.where(nohet, 1.0 - freq, q0)
    q1 = np.where(nohet, 1.0 - freq, q1)
    exhet = kind == 4  # about 90% heterozygotes
    q0 = np.where(exhet, 0.05, q0)
    q1 = np.where(exhet, 0.95, q1)
    for start in range(0, n_var, _CHUNK):
        stop = min(n_var, start + _CHUNK)
        u = rng.random((stop - start, n_samples))
        block = (u >= q0[start:stop, None]).astype(np.int8)
        block += u >= q1[start:stop, None]
        g[start:stop] = block
    return g


def _apply_missing(rng: np.random.Generator, g: np.ndarray, rate: float) -> None:
    for start in range(0, g.shape[0], _CHUNK):
        stop = min(g.shape[0], start + _CHUNK)
        u = rng.random((stop - start, g.shape[1]))
        g[start:stop][u < rate] = -9


def _sample_table(
    rng: np.random.Generator,
    g: np.ndarray,
    causal_index: np.ndarray,
    causal_beta: np.ndarray,
    h2: float,
    na_rate: float,
) -> dict[str, np.ndarray]:
    """Phenotypes and covariates for one site's samples (numpy arrays, NaN = missing)."""
    n = g.shape[1]
    sex = np.where(rng.random(n) < 0.5, 1, 2)
    age = 20 + np.floor(rng.random(n) * 61).astype(np.int64)
    noise = ndtri(rng.random(n))
    score = np.zeros(n)
    if causal_index.size and n > 1:
        dos = g[causal_index].astype(np.float64)
        seen = dos >= 0
        cnt = seen.sum(axis=1, keepdims=True)
        means = np.where(seen, dos, 0.0).sum(axis=1, keepdims=True) / np.maximum(cnt, 1)
        dos = np.where(seen, dos, means)  # mean-impute missing calls
        score = causal_beta @ (dos - means)
        sd = score.std()
        score = score / sd if sd > 0 else np.zeros(n)
    age_eff = 0.02 * (age - 50) + 0.1 * (sex - 1.5)
    qt = np.sqrt(h2) * score + np.sqrt(1.0 - h2) * noise + age_eff
    liability = qt + 0.5 * ndtri(rng.random(n))
    cc = np.where(liability > np.quantile(liability, 0.6), 2.0, 1.0)
    qt = np.where(rng.random(n) < na_rate, np.nan, qt)
    cc = np.where(rng.random(n) < na_rate, np.nan, cc)
    return {"QT": qt, "CC": cc, "AGE": age, "SEX": sex}


def _write_samples_tsv(path: Path, ids: tuple[str, ...], table: dict[str, np.ndarray]) -> None:
    lines = ["#FID\tIID\tQT\tCC\tAGE\tSEX\n"]
    for i, iid in enumerate(ids):
        qt = table["QT"][i]
        cc = table["CC"][i]
        qt_s = "NA" if np.isnan(qt) else f"{qt:.5f}"
        cc_s = "NA" if np.isnan(cc) else str(int(cc))
        lines.append(f"{iid}\t{iid}\t{qt_s}\t{cc_s}\t{table['AGE'][i]}\t{table['SEX'][i]}\n")
    Path(path).write_text("".join(lines))


def _write_genotypes(
    prefix: Path,
    fmt: str,
    variants: VariantTable,
    g: np.ndarray,
    ids: tuple[str, ...],
    sex: np.ndarray,
) -> None:
    if fmt == "pgen":
        _write_pgen(prefix, variants, g, ids, sex)
    elif fmt == "bed":
        _write_bed(prefix, variants, g, ids, sex)
    else:
        _write_vcf(prefix, variants, g, ids)


def _write_pgen(
    prefix: Path,
    variants: VariantTable,
    g: np.ndarray,
    ids: tuple[str, ...],
    sex: np.ndarray,
) -> None:
    import pgenlib

    prefix = Path(prefix)
    n_var, n_samples = g.shape
    writer = pgenlib.PgenWriter(str(prefix.with_suffix(".pgen")).encode(), n_samples, n_var, nonref_flags=False)
    try:
        for row in g:
            writer.append_biallelic(np.ascontiguousarray(row, dtype=np.int8))
    finally:
        writer.close()
    pvar = ["#CHROM\tPOS\tID\tREF\tALT\n"]
    pvar.extend(
        f"{c}\t{p}\t{i}\t{r}\t{a}\n"
        for c, p, i, r, a in zip(
            variants.chrom, variants.pos.tolist(), variants.id, variants.ref, variants.alt, strict=True
        )
    )
    prefix.with_suffix(".pvar").write_text("".join(pvar))
    psam = ["#FID\tIID\tSEX\n"]
    psam.extend(f"{i}\t{i}\t{s}\n" for i, s in zip(ids, np.asarray(sex).tolist(), strict=True))
    prefix.with_suffix(".psam").write_text("".join(psam))


def _write_bed(
    prefix: Path,
    variants: VariantTable,
    g: np.ndarray,
    ids: tuple[str, ...],
    sex: np.ndarray,
) -> None:
    """PLINK 1 binary, SNP-major. bim column 5 = A1 = ALT, column 6 = A2 = REF.

    2-bit codes (low bits first): 00 hom A1 (2 ALT), 01 missing, 10 het, 11 hom A2 (0 ALT).
    """
    prefix = Path(prefix)
    n_var, n = g.shape
    code = np.array([3, 2, 0], dtype=np.uint8)  # by ALT count 0, 1, 2
    n_pad = -(-n // 4) * 4
    packed = np.zeros((n_var, n_pad), dtype=np.uint8)  # padding encodes as 00 (plink's choice)
    packed[:, :n] = np.where(g < 0, np.uint8(1), code[np.clip(g, 0, 2)])
    quads = packed.reshape(n_var, n_pad // 4, 4)
    by = quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)
    with open(prefix.with_suffix(".bed"), "wb") as fh:
        fh.write(bytes([0x6C, 0x1B, 0x01]))
        fh.write(np.ascontiguousarray(by, dtype=np.uint8).tobytes())
    bim = (
        f"{c}\t{i}\t0\t{p}\t{a}\t{r}\n"
        for c, p, i, r, a in zip(
            variants.chrom, variants.pos.tolist(), variants.id, variants.ref, variants.alt, strict=True
        )
    )
    prefix.with_suffix(".bim").write_text("".join(bim))
    fam = (f"{i}\t{i}\t0\t0\t{s}\t-9\n" for i, s in zip(ids, np.asarray(sex).tolist(), strict=True))
    prefix.with_suffix(".fam").write_text("".join(fam))


def _write_vcf(prefix: Path, variants: VariantTable, g: np.ndarray, ids: tuple[str, ...]) -> None:
    """VCF 4.2 through gzip (fixed mtime and no file name, so the bytes are reproducible)."""
    path = Path(str(prefix) + ".vcf.gz")
    gt = np.array(["0/0", "0/1", "1/1", "./."], dtype=object)
    header = [
        "##fileformat=VCFv4.2\n",
        "##source=fedstat.simulate\n",
        *(f"##contig=<ID={c}>\n" for c in dict.fromkeys(variants.chrom.tolist())),
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT" + "".join(f"\t{i}" for i in ids) + "\n",
    ]
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as fh:
        fh.write("".join(header).encode())
        idx = np.where(g < 0, 3, g).astype(np.int64)
        for v in range(g.shape[0]):
            fields = "\t".join(gt[idx[v]].tolist())
            fh.write(
                f"{variants.chrom[v]}\t{variants.pos[v]}\t{variants.id[v]}\t{variants.ref[v]}\t"
                f"{variants.alt[v]}\t.\tPASS\t.\tGT\t{fields}\n".encode()
            )
