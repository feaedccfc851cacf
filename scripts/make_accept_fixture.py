#!/usr/bin/env python3
"""Build ``tests/data/accept/``: issue 16's acceptance fixture, one consortium in three imputed formats.

One simulated consortium of 450 participants, 150 at each of three sites, on 189 biallelic records
(chromosomes 1-3 and X), every site holding soft imputed dosages as imputation servers return them
(genotype posteriors at three decimals, ``DS = P(het) + 2 P(hom ALT)``; about a third imputed with
certainty, some far from any integer so that plink2's hard call is missing, 1% missing):

- ``PGEN/``: a dosage ``.pgen`` (``plink2 --vcf … dosage=DS --make-pgen`` of its imputed VCF);
- ``VCF/``: ``genotypes.vcf.gz`` with ``GT:DS:GP``, chromosomes written ``chr1`` … ``chrX``, a tenth
  of the biallelic records with REF and ALT exchanged, and four multiallelic records (three
  triallelic, one quadallelic; ``DS`` ``Number=A``, ``GP`` ``Number=G``) that fedstat splits when it
  reads them; the dataset is read with ``vcf_dosage = "DS"`` (plink2's ``dosage=DS``; GP is carried
  as imputation servers write it, and ignored as plink2 ignores it);
- ``BGEN/``: an 8-bit BGEN v1.2 (``plink2 --export bgen-1.2 bits=8 ref-first`` of its dosage
  ``.pgen``) with its ``.sample``, read with ``bgen_ref = "first"``.

chrX holds both sexes (males haploid outside the pseudo-autosomal regions in the VCFs, diploid in
PAR1/PAR2 as imputation servers write them) and five positions inside GRCh37's PAR1/PAR2 still
coded ``X``, which plink2 counts as chrX without ``--split-par``. Sample tables: ``SEX`` (two of
unknown sex per site), ``AGE``, a categorical ``CENTRE`` (three or four centres per site, each held
by 30 or more of the cohort there; ``NONE`` missing), a quantitative ``QT`` and a case/control ``CC``
(one rare chr3 variant carried by controls only, so that plink2's firth-fallback fits it by Firth).

Multiallelic records: plink2 2.00a3.5 imports no multiallelic dosages, and fedstat splits them at
read as ``bcftools norm -m-`` does (:mod:`fedstat.data.multiallelic`). So the VCF site holds them
whole, and the PGEN and BGEN sites hold the same sites already split (as a site converting its
imputed VCF with plink2 must do first); the split here is bcftools norm -m-'s (the other ALTs count
as REF; ``DS`` the ALT's own; ``GP`` of ``0/0``, ``0/k``, ``k/k``), checked against ``bcftools
norm -m-`` when bcftools is installed.

The pooled data is what plink2 itself imports at each site, joined: plink2 2.00a3.5 cannot merge
filesets of different samples ("Non-concatenating --pmerge-list is under development"), so the
hard calls and dosages of each site's plink2 import (the PGEN site's file; the VCF site's split VCF
with ``dosage=DS``, REF/ALT put back; the BGEN site's ``plink2 --bgen … ref-first --sample``) are
written, exact to plink2's 1/16384 dosage unit, into one VCF that plink2 imports again; the script
checks that this import holds exactly the sites' hard calls and dosages. The BGEN site's 8-bit
quantization is therefore in the pooled data too, and no tolerance is needed for it.

Reference outputs: plink2 2.00a3.5 on the pooled data, every run on one cohort (``--pheno-name
QT,CC --require-pheno --covar-name AGE,SEX,CENTRE --require-covar``: the sites' release ledgers
refuse cohorts a few people apart):

- ``required.afreq .gcount .hardy .hardy.x .vmiss``: ``--freq --geno-counts --hardy --missing
  variant-only``;
- ``required.QT.glm.linear``, ``required.CC.glm.logistic.hybrid``: ``--glm hide-covar --not-chr X``
  and ``firth.CC.glm.firth``: ``--glm firth hide-covar --not-chr X`` (fedstat leaves chrX out of
  --glm for now);
- ``single.CC.glm.logistic.hybrid``, ``single.CC.glm.firth``: the same logistic and Firth fits with
  plink2 run on one position at a time, since plink2's single-precision fit of a variant depends on
  the variants fitted before it in the run (by up to 0.5% in LOG(OR)_SE here);
- pending fedstat features, written now so that their tests can be added: ``xglm.*``
  (``--glm hide-covar --chr X``, plink2's default xchr-model) and ``pca.eigenval``,
  ``pca.eigenvec``, ``pca.eigenvec.allele`` (``--autosome --pca 4 allele-wts``)::

    python scripts/make_accept_fixture.py           # rebuild tests/data/accept (commit the result)
    python scripts/make_accept_fixture.py --check   # rebuild in a temp dir, fail on any difference
    python scripts/make_accept_fixture.py --pooled DIR   # also keep the pooled fileset in DIR
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pgenlib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import build_or_check  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "accept"
SITES = ("PGEN", "VCF", "BGEN")
PER_SITE = 150
SEED = 20261216
PHENOS = "QT,CC"
COVARS = "AGE,SEX,CENTRE"
#: the centres each site's participants attend (a categorical covariate, plink2 names its columns)
CENTRES = {
    "PGEN": ("Leeds", "Lyon", "Oslo"),
    "VCF": ("Lyon", "Oslo", "Turku"),
    "BGEN": ("Leeds", "Lyon", "Oslo", "Turku"),
}
#: GRCh37's pseudo-autosomal regions of chrX
PAR = ((60_001, 2_699_520), (154_931_044, 155_260_560))
#: multiallelic sites on chr2 (REF, ALTs), at every 12th chr2 position
MULTI = (("A", ("C", "T")), ("G", ("A", "T")), ("C", ("A", "G", "T")), ("T", ("C", "G")))
#: the chr3 variant carried by controls only (plink2 fits it by Firth under firth-fallback)
SEPARATED = ("3", 3_000_000)
#: causal variants (chromosome, position) -> effect on QT and on CC's log-odds
CAUSAL = {("1", 1_005_000): (0.5, 0.6), ("2", 2_010_000): (0.35, 0.0), ("3", 3_020_000): (0.0, 0.5)}
SWAP_FRACTION = 0.1  # of the VCF site's biallelic records, listed with REF and ALT exchanged
BASES = ("A", "C", "G", "T")


@dataclass(frozen=True)
class Site:
    """A multiallelic-or-biallelic site: chromosome, position, ID, REF and ALT alleles."""

    chrom: str
    pos: int
    vid: str
    ref: str
    alts: tuple[str, ...]


def _layout(rng: np.random.Generator) -> list[Site]:
    sites = []
    n = 0

    def add(chrom: str, pos: int, alleles: tuple[str, tuple[str, ...]] | None = None) -> None:
        nonlocal n
        n += 1
        if alleles is None:
            ref, alt = rng.choice(BASES, size=2, replace=False).tolist()
            alleles = (ref, (alt,))
        sites.append(Site(chrom, pos, f"rs{n}", alleles[0], alleles[1]))

    for k in range(80):
        add("1", 1_000_000 + 1_000 * k)
    for k in range(54):
        pos = 2_000_000 + 1_000 * k
        add("2", pos, MULTI[k // 12] if k % 12 == 6 and k // 12 < len(MULTI) else None)
    for k in range(30):
        add("3", 3_000_000 + 1_000 * k)
    for k in range(3):
        add("X", 60_001 + 400_000 * k)  # PAR1
    for k in range(15):
        add("X", 3_000_000 + 4_000_000 * k)
    for k in range(2):
        add("X", 155_000_000 + 100_000 * k)  # PAR2
    return sites


def _haploid_x(site: Site) -> bool:
    return site.chrom == "X" and not any(lo <= site.pos <= hi for lo, hi in PAR)


def _genotype_list(n_alleles: int) -> list[tuple[int, int]]:
    """Unordered diploid genotypes in VCF's GP order: (j, k) with j <= k, by k then j."""
    return [(j, k) for k in range(n_alleles) for j in range(k + 1)]


def _posteriors(true_idx: np.ndarray, n_geno: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, genotypes) posteriors in thousandths summing to 1000, mass on the true genotype."""
    n = true_idx.size
    w = rng.uniform(0.45, 1.0, n)
    w[rng.random(n) < 0.35] = 1.0  # imputed with certainty
    rest = rng.dirichlet(np.ones(n_geno - 1), n) * (1.0 - w)[:, None]
    p = np.zeros((n, n_geno))
    others = np.array([[g for g in range(n_geno) if g != x] for x in range(n_geno)])
    p[np.arange(n)[:, None], others[true_idx]] = rest
    p[np.arange(n), true_idx] = w
    t = np.floor(p * 1000).astype(np.int64)
    t[np.arange(n), true_idx] += 1000 - t.sum(axis=1)
    return t


@dataclass
class Calls:
    """One site's (or the pool's) imputed calls of one record, as its VCF writes them."""

    gt: list[str]  # per sample, e.g. "0/1", "1", "1/2", "./."
    gp: list[tuple[int, ...] | None]  # thousandths, VCF GP order; None missing
    ds: list[tuple[int, ...] | None]  # thousandths, one per ALT (from the full GP); None missing


def _simulate(sites: list[Site], sex: np.ndarray, site_of: np.ndarray, rng: np.random.Generator) -> list[Calls]:
    """Every participant's calls at every site, with Balding-Nichols allele frequencies per site (F 0.03)."""
    n = sex.size
    out = []
    for s in sites:
        n_alleles = 1 + len(s.alts)
        base = rng.dirichlet(np.full(n_alleles, 1.2)) if n_alleles > 2 else None
        p0 = rng.uniform(0.05, 0.5)
        alleles = np.empty((n, 2), dtype=np.int64)
        for k in range(len(SITES)):
            members = np.flatnonzero(site_of == k)
            if base is None:
                f = 0.03
                p = rng.beta(p0 * (1 - f) / f, (1 - p0) * (1 - f) / f)
                freqs = np.array([1 - p, p])
            else:
                freqs = base
            alleles[members] = rng.choice(n_alleles, size=(members.size, 2), p=freqs)
        haploid = _haploid_x(s) & (sex == 1)
        geno = _genotype_list(n_alleles)
        missing = rng.random(n) < 0.01
        lo, hi = np.sort(alleles, axis=1).T
        idx = np.array([geno.index((j, k)) for j, k in zip(lo.tolist(), hi.tolist(), strict=True)])
        diploid = _posteriors(idx, len(geno), rng)
        hap = _posteriors(alleles[:, 0], 2, rng) if n_alleles == 2 else diploid
        gts: list[str] = []
        gps: list[tuple[int, ...] | None] = []
        for i in range(n):
            if haploid[i]:
                gts.append("." if missing[i] else str(alleles[i, 0]))
                gps.append(None if missing[i] else tuple(hap[i].tolist()))
            else:
                gts.append("./." if missing[i] else f"{lo[i]}/{hi[i]}")
                gps.append(None if missing[i] else tuple(diploid[i].tolist()))
        ds = [None if gp is None else tuple(_alt_dosage(gp, a) for a in range(1, n_alleles)) for gp in gps]
        out.append(Calls(gts, gps, ds))
    return out


def _alt_dosage(gp: tuple[int, ...], alt: int) -> int:
    """An ALT's dosage in thousandths from a GP in thousandths (haploid: two values)."""
    if len(gp) == 2:
        return gp[1] if alt == 1 else 0
    n_alleles = {3: 2, 6: 3, 10: 4}[len(gp)]
    return sum(((j == alt) + (k == alt)) * p for (j, k), p in zip(_genotype_list(n_alleles), gp, strict=True))


def _split(site: Site, calls: Calls) -> list[tuple[Site, Calls]]:
    """A record split into one per ALT, as bcftools norm -m- splits it (other ALTs count as REF)."""
    if len(site.alts) == 1:
        return [(site, calls)]
    out = []
    for a, alt in enumerate(site.alts, start=1):
        gts = []
        for gt in calls.gt:
            sep = "/" if "/" in gt else ""
            parts = gt.split("/")
            gts.append(sep.join("." if x == "." else str(int(int(x) == a)) for x in parts))
        gps: list[tuple[int, ...] | None] = []
        geno = _genotype_list(1 + len(site.alts))
        for gp in calls.gp:
            gps.append(None if gp is None else tuple(gp[geno.index(g)] for g in ((0, 0), (0, a), (a, a))))
        ds = [None if d is None else (d[a - 1],) for d in calls.ds]
        out.append((Site(site.chrom, site.pos, site.vid, site.ref, (alt,)), Calls(gts, gps, ds)))
    return out


def _swap(calls: Calls) -> Calls:
    """A biallelic record's calls with REF and ALT exchanged."""
    gts = ["/".join("." if x == "." else str(1 - int(x)) for x in gt.split("/")) for gt in calls.gt]
    ploidy = [1 if "/" not in gt else 2 for gt in calls.gt]
    ds = [None if d is None else (k * 1000 - d[0],) for d, k in zip(calls.ds, ploidy, strict=True)]
    return Calls(gts, [None if gp is None else tuple(reversed(gp)) for gp in calls.gp], ds)


def _ds_text(ds: tuple[int, ...] | None) -> str:
    return "." if ds is None else ",".join(f"{x / 1000:.3f}" for x in ds)


def _write_vcf(path: Path, records: list[tuple[Site, Calls]], ids: list[str], *, chr_prefix: bool, gp: bool) -> None:
    fmt = "GT:DS:GP" if gp else "GT:DS"
    lines = ["##fileformat=VCFv4.2"]
    for c, length in (("1", 249250621), ("2", 243199373), ("3", 198022430), ("X", 155270560)):
        lines.append(f"##contig=<ID={'chr' if chr_prefix else ''}{c},length={length}>")
    lines.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    lines.append('##FORMAT=<ID=DS,Number=A,Type=Float,Description="Estimated ALT dosage">')
    if gp:
        lines.append('##FORMAT=<ID=GP,Number=G,Type=Float,Description="Genotype posteriors">')
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]))
    for s, calls in records:
        cells = []
        for gt, p, ds in zip(calls.gt, calls.gp, calls.ds, strict=True):
            cell = f"{gt}:{_ds_text(ds)}"
            if gp:
                cell += ":." if p is None else ":" + ",".join(f"{x / 1000:.3f}" for x in p)
            cells.append(cell)
        chrom = f"chr{s.chrom}" if chr_prefix else s.chrom
        lines.append("\t".join([chrom, str(s.pos), s.vid, s.ref, ",".join(s.alts), ".", ".", ".", fmt, *cells]))
    path.write_text("\n".join(lines) + "\n")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _read_pgen(prefix: Path) -> tuple[np.ndarray, np.ndarray]:
    """(variants, samples) ALT hard calls (int8, -9 missing) and dosages (float64, -9 missing)."""
    with pgenlib.PgenReader(bytes(prefix.with_suffix(".pgen"))) as r:
        m, n = r.get_variant_ct(), r.get_raw_sample_ct()
        hard = np.empty((m, n), dtype=np.int8)
        dose = np.empty((m, n), dtype=np.float64)
        r.read_range(0, m, hard)
        r.read_dosages_range(0, m, dose)
    return hard, dose


def _pooled_vcf(path: Path, sites: list[Site], ids: list[str], hard: np.ndarray, dose: np.ndarray) -> None:
    """The sites' imported calls in one VCF: GT the hard call, DS the dosage to 1e-6 (plink2 rounds
    ``DS * 16384 + 0.5`` down, so an exact multiple of 1/16384 printed to 1e-6 reads back as itself)."""
    lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    lines.append('##FORMAT=<ID=DS,Number=A,Type=Float,Description="ALT dosage">')
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *ids]))
    for v, s in enumerate(sites):
        cells = []
        for h, d in zip(hard[v].tolist(), dose[v].tolist(), strict=True):
            gt = ("./.", "0/0", "0/1", "1/1")[0 if h < 0 else h + 1]
            cells.append(f"{gt}:{'.' if d < 0 else f'{d:.6f}'}")
        lines.append("\t".join([s.chrom, str(s.pos), s.vid, s.ref, s.alts[0], ".", ".", ".", "GT:DS", *cells]))
    path.write_text("\n".join(lines) + "\n")


def _tables(ids: list[str], site_of: np.ndarray, sex: np.ndarray, calls: list[Calls], layout: list[Site],
            rng: np.random.Generator) -> list[str]:  # fmt: skip
    """Each participant's sample-table row: FID IID SEX AGE CENTRE QT CC (the phenotypes from the
    causal variants' true ALT dosages, before imputation noise at 1% missing)."""
    n = len(ids)
    age = rng.integers(30, 81, n).astype(float)
    centre = [str(rng.choice(CENTRES[SITES[k]])) for k in site_of]
    effect = {c: e for c, e in zip(("Leeds", "Lyon", "Oslo", "Turku"), (0.0, 0.3, -0.2, 0.5), strict=True)}
    qt = 0.02 * (age - 55) + 0.3 * (sex == 2) + np.array([effect[c] for c in centre]) + rng.normal(0, 1, n)
    logit = -0.4 + 0.03 * (age - 55) + np.array([effect[c] for c in centre])
    index = {(s.chrom, s.pos): v for v, s in enumerate(layout)}
    for key, (b_qt, b_cc) in CAUSAL.items():
        d = np.array([0.0 if x is None else x[0] / 1000 for x in calls[index[key]].ds])
        qt += b_qt * d
        logit += b_cc * d
    cc = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), 2, 1)
    rows = []
    for i in range(n):
        s = "NA" if sex[i] == 0 else str(sex[i])
        a = "NA" if rng.random() < 0.02 else str(int(age[i]))
        c = "NONE" if rng.random() < 0.03 else centre[i]
        q = "NA" if rng.random() < 0.03 else f"{qt[i]:.4f}"
        k = "NA" if rng.random() < 0.03 else str(cc[i])
        rows.append(f"{ids[i]}\t{ids[i]}\t{s}\t{a}\t{c}\t{q}\t{k}")
    return rows


def _separate(calls: list[Calls], layout: list[Site], rows: list[str]) -> None:
    """Make SEPARATED a rare variant carried by controls only: a certain REF/REF call for every case,
    every participant of unknown case status and nine in ten controls (the others keep theirs)."""
    v = next(k for k, s in enumerate(layout) if (s.chrom, s.pos) == SEPARATED)
    for i, row in enumerate(rows):
        if (row.split("\t")[6] != "1" or i % 10) and calls[v].gp[i] is not None:
            calls[v].gt[i] = "0/0"
            calls[v].gp[i] = (1000, 0, 0)
            calls[v].ds[i] = (0,)


def build(out_dir: Path, plink2: str, pooled_dir: Path | None = None) -> None:
    for sub in (*SITES, "expected"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    layout = _layout(rng)
    site_of = np.repeat(np.arange(len(SITES)), PER_SITE)
    ids = [f"{SITES[k]}_{i % PER_SITE + 1:03d}" for i, k in enumerate(site_of.tolist())]
    sex = np.concatenate([rng.permutation([1] * 74 + [2] * 74 + [0] * 2) for _ in SITES])
    calls = _simulate(layout, sex, site_of, rng)
    rows = _tables(ids, site_of, sex, calls, layout, rng)
    _separate(calls, layout, rows)
    header = "#FID\tIID\tSEX\tAGE\tCENTRE\tQT\tCC"
    split = [r for s, c in zip(layout, calls, strict=True) for r in _split(s, c)]
    records = [s for s, _ in split]
    # the VCF site's records listed with REF and ALT exchanged (biallelic ones only), per split record
    swapped = [len(site.alts) == 1 and rng.random() < SWAP_FRACTION for site in layout for _ in site.alts]
    hard_parts, dose_parts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for k, name in enumerate(SITES):
            d = out_dir / name
            d.mkdir()
            cols = np.flatnonzero(site_of == k)
            site_ids = [ids[i] for i in cols]
            (d / "samples.tsv").write_text("\n".join([header, *(rows[i] for i in cols)]) + "\n")
            # the BGEN site's IDs are IIDs only, as UK Biobank's .sample files hold them: plink2's export
            # of a fileset with FIDs embeds FID_IID in the BGEN, which fedstat refuses beside a .sample
            # whose IDs differ (plink2 ignores the embedded IDs when given a .sample)
            fid = name != "BGEN"
            sex_rows = "".join(f"{ids[i]}\t{ids[i]}\t{sex[i]}\n" if fid else f"{ids[i]}\t{sex[i]}\n" for i in cols)
            (t / f"{name}.sex").write_text(("" if fid else "#IID\tSEX\n") + sex_rows)

            def sub(c: Calls, cols: np.ndarray = cols) -> Calls:
                return Calls([c.gt[i] for i in cols], [c.gp[i] for i in cols], [c.ds[i] for i in cols])

            split_here = [(s, sub(c)) for s, c in split]
            imp = [plink2, *(["--double-id"] if fid else []), "--update-sex", str(t / f"{name}.sex"), "--threads", "1",
                   "--make-pgen"]  # fmt: skip
            if name == "VCF":
                whole = [(s, sub(c)) for s, c in zip(layout, calls, strict=True)]
                flags = iter(swapped)
                flipped = []
                for s, c in whole:
                    flag = [next(flags) for _ in s.alts][0]  # one per split record; only biallelic ones swap
                    flipped.append((Site(s.chrom, s.pos, s.vid, s.alts[0], (s.ref,)), _swap(c)) if flag else (s, c))
                _write_vcf(t / "VCF.vcf", flipped, site_ids, chr_prefix=True, gp=True)
                with open(t / "VCF.vcf", "rb") as src, gzip.GzipFile(d / "genotypes.vcf.gz", "wb", mtime=0) as dst:
                    shutil.copyfileobj(src, dst)
                # plink2's reference import: the same file split as bcftools norm -m- splits it
                split_flipped = [r for s, c in flipped for r in _split(s, c)]
                _write_vcf(t / "VCFsplit.vcf", split_flipped, site_ids, chr_prefix=True, gp=True)
                _run([*imp, "--vcf", str(t / "VCFsplit.vcf"), "dosage=DS", "--out", str(t / "VCFimp")])
                hard, dose = _read_pgen(t / "VCFimp")
                flip = np.array(swapped)
                hard[flip] = np.where(hard[flip] < 0, hard[flip], 2 - hard[flip])
                dose[flip] = np.where(dose[flip] < 0, dose[flip], 2.0 - dose[flip])
            else:
                _write_vcf(t / f"{name}.vcf", split_here, site_ids, chr_prefix=False, gp=False)
                _run([*imp, "--vcf", str(t / f"{name}.vcf"), "dosage=DS", "--out", str(t / name)])
                if name == "PGEN":
                    for ext in ("pgen", "pvar", "psam"):
                        shutil.copyfile(t / f"{name}.{ext}", d / f"genotypes.{ext}")
                    hard, dose = _read_pgen(t / name)
                else:
                    _run([plink2, "--pfile", str(t / name), "--export", "bgen-1.2", "bits=8", "ref-first", "--threads",
                          "1", "--out", str(t / "BGENout")])  # fmt: skip
                    shutil.copyfile(t / "BGENout.bgen", d / "genotypes.bgen")
                    shutil.copyfile(t / "BGENout.sample", d / "genotypes.sample")
                    _run([plink2, "--bgen", str(d / "genotypes.bgen"), "ref-first", "--sample",
                          str(d / "genotypes.sample"), "--threads", "1", "--make-pgen",
                          "--out", str(t / "BGENimp")])  # fmt: skip
                    hard, dose = _read_pgen(t / "BGENimp")
            assert hard.shape == (len(records), cols.size), name
            hard_parts.append(hard)
            dose_parts.append(dose)
        hard, dose = np.concatenate(hard_parts, axis=1), np.concatenate(dose_parts, axis=1)
        pooled = t / "pooled"
        pooled.mkdir()
        _pooled_vcf(t / "pooled.vcf", records, ids, hard, dose)
        (t / "pooled.sex").write_text("".join(f"{i}\t{i}\t{s}\n" for i, s in zip(ids, sex.tolist(), strict=True)))
        _run([plink2, "--vcf", str(t / "pooled.vcf"), "dosage=DS", "--double-id", "--update-sex", str(t / "pooled.sex"),
              "--threads", "1", "--make-pgen", "--out", str(pooled / "genotypes")])  # fmt: skip
        got_hard, got_dose = _read_pgen(pooled / "genotypes")
        if not (np.array_equal(got_hard, hard) and np.array_equal(got_dose, dose)):
            raise RuntimeError("the pooled import does not hold exactly the sites' imported hard calls and dosages")
        samples = pooled / "samples.tsv"
        samples.write_text("\n".join([header, *rows]) + "\n")
        _expected(out_dir / "expected", plink2, pooled / "genotypes", samples, t)
        if pooled_dir is not None:
            shutil.copytree(pooled, pooled_dir, dirs_exist_ok=True)


def _expected(expected: Path, plink2: str, genotypes: Path, samples: Path, t: Path) -> None:
    expected.mkdir()
    base = [plink2, "--pfile", str(genotypes), "--pheno", str(samples), "--pheno-name", PHENOS, "--require-pheno",
            "--covar", str(samples), "--covar-name", COVARS, "--require-covar", "--threads", "1"]  # fmt: skip
    _run([*base, "--freq", "--geno-counts", "--hardy", "--missing", "variant-only", "--out", str(t / "required")])
    _run([*base, "--not-chr", "X", "--glm", "hide-covar", "--out", str(t / "required")])
    _run([*base, "--not-chr", "X", "--glm", "firth", "hide-covar", "--out", str(t / "firth")])
    # plink2 adds sex as a covariate on chrX (xchr-model 1) unless no-x-sex: SEX is one already
    _run([*base, "--chr", "X", "--glm", "hide-covar", "no-x-sex", "--out", str(t / "xglm")])
    _run([*base, "--autosome", "--pca", "4", "allele-wts", "--out", str(t / "pca")])
    keep = ["required.afreq", "required.gcount", "required.hardy", "required.hardy.x", "required.vmiss",
            "required.QT.glm.linear", "required.CC.glm.logistic.hybrid", "firth.CC.glm.firth",
            "xglm.QT.glm.linear", "xglm.CC.glm.logistic.hybrid", "pca.eigenval", "pca.eigenvec",
            "pca.eigenvec.allele"]  # fmt: skip
    for name in keep:
        shutil.copyfile(t / name, expected / name)
    _single_variant_fits(expected, base, genotypes, t)


def _single_variant_fits(expected: Path, base: list[str], genotypes: Path, t: Path) -> None:
    """``single.*``: plink2's logistic and Firth fits run one position at a time.

    plink2 2.00a3.5's single-precision logistic and Firth fits of a variant depend on the variants
    fitted before it in the same run: rs13 fitted alone has LOG(OR)_SE 0.281336 (the double-precision
    maximum-likelihood value), fitted after rs1-rs12 0.280881. These files hold every autosomal
    position's fit in a run of its own (a split multiallelic site's records share a run)."""
    positions = dict.fromkeys(
        tuple(line.split("\t")[:2])
        for line in genotypes.with_suffix(".pvar").read_text().splitlines()
        if line[:1] != "#" and not line.startswith("X\t")
    )
    for modifier, suffix in (((), "CC.glm.logistic.hybrid"), (("firth",), "CC.glm.firth")):
        rows: list[str] = []
        for chrom, pos in positions:
            one = [*base, "--chr", chrom, "--from-bp", pos, "--to-bp", pos]
            _run([*one, "--glm", *modifier, "hide-covar", "--out", str(t / "one")])
            lines = (t / f"one.{suffix}").read_text().splitlines()
            rows += lines[1:] if rows else lines
        (expected / f"single.{suffix}").write_text("\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temporary directory and fail on any difference")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plink2", default="plink2")
    ap.add_argument("--pooled", type=Path, help="also write the pooled fileset (and its samples.tsv) here")
    args = ap.parse_args(argv)
    return build_or_check(
        args.out, lambda out: build(out, args.plink2, args.pooled), check=args.check, script=Path(__file__).name
    )


if __name__ == "__main__":
    sys.exit(main())
