"""GWAS outputs beyond plink2's tables: GWAS-SSF files, Manhattan and QQ plots, the HTML report.

Everything here is computed from released aggregate results (per-variant estimates and
p-values, phenotype-level counts), never from participant data. A job's :class:`GwasReport`
(its ``--glm`` and ``--assoc`` results) is written by :func:`write_gwas`: per ``--glm``
phenotype a GWAS-SSF file (:mod:`fedstat.formats.ssf`), a Manhattan and a QQ plot; for
``--assoc`` a QQ plot; then one ``<out>.report.html`` with a section for each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.formats.ssf import SsfMeta, SsfRows, write_ssf
from fedstat.report import html, plots

if TYPE_CHECKING:  # the result types only; the report does not run the analyses
    from fedstat.stats.assoc import AssocStats, AssocTables
    from fedstat.stats.glm import GlmResult

__all__ = ["GwasReport", "JobContext", "assoc_section", "glm_outputs", "write_gwas", "write_report"]

_LN10 = float(np.log(10.0))
_METHOD_TITLES = {
    "linear": "linear regression",
    "logistic-firth-hybrid": "logistic regression, Firth fallback",
    "logistic": "logistic regression",
    "firth": "Firth logistic regression",
}


@dataclass(frozen=True)
class JobContext:
    """Facts about the job that its report shows (aggregate only).

    Attributes
    ----------
    job_id, created_at, analyst, privacy : as stored by the coordinator
    sites : (site, participants) for each participating site
    spec : the job spec as JSON-ready mapping
    genome_assembly : declared by the analyst (``NR`` when not reported)
    min_cell_count : disclosure control, the strictest participating site's smallest releasable
        case/control genotype cell (0: off)
    categories : each categorical covariate's categories over the sites (natural order)
    """

    job_id: str = ""
    created_at: str = ""
    analyst: str = ""
    privacy: str = "none"
    sites: tuple[tuple[str, int], ...] = ()
    spec: Mapping[str, object] = field(default_factory=dict)
    genome_assembly: str = "NR"
    min_cell_count: int = 0
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _rsid(ids: np.ndarray) -> np.ndarray:
    return np.asarray(
        [i if isinstance(i, str) and i.startswith("rs") and i[2:].isdigit() else "" for i in ids], dtype=object
    )


@dataclass(frozen=True)
class GwasReport:
    """What a job's GWAS outputs are made of (aggregate results only).

    Attributes
    ----------
    variants : the variants tested, one row per row of each result
    ctx : facts about the job for the HTML report
    pheno : the case/control phenotype of ``assoc``
    glm : one ``--glm`` result per phenotype analysed
    glm_notes : the ``--glm`` log lines, shown in each ``--glm`` section
    assoc : the ``--assoc`` / ``--model`` result, if the job has one
    """

    variants: VariantTable
    ctx: JobContext
    pheno: str
    glm: tuple[GlmResult, ...] = ()
    glm_notes: tuple[str, ...] = ()
    assoc: AssocTables | None = None


def write_gwas(report: GwasReport, out_prefix: Path) -> list[Path]:
    """Write SSF files and plots per :class:`GwasReport` part, then the HTML report; returns the files."""
    files: list[Path] = []
    sections = []
    for res in report.glm:
        written, section = glm_outputs(out_prefix, report.variants, res, report.ctx, report.glm_notes)
        files += written
        sections.append(section)
    if report.assoc is not None:
        tables = report.assoc
        names = [f"{out_prefix.name}.{ext}" for ext, on in (("assoc", tables.assoc), ("model", tables.model)) if on]
        written, section = assoc_section(out_prefix, report.variants, report.pheno, tables.stats, names)
        files += written
        sections.append(section)
    files.append(write_report(out_prefix, report.ctx, sections, []))
    return files


def glm_outputs(
    out_prefix: Path, variants: VariantTable, res: GlmResult, ctx: JobContext, notes: Sequence[str] = ()
) -> tuple[list[Path], html.Section]:
    """SSF, Manhattan and QQ for one phenotype's ``GlmResult``; returns files and its report section."""
    r = res
    add = 0  # the ADD row is always the first test
    a1 = np.where(r.a1_is_ref, variants.ref, variants.alt)
    other = np.where(r.a1_is_ref, variants.alt, variants.ref)
    beta, se, log_p = r.beta[:, add], r.se[:, add], r.log_p[:, add]
    effect = np.exp(beta) if r.is_binary else beta
    p = np.exp(log_p)
    log10_p = log_p / _LN10
    prefix = Path(f"{out_prefix}.{r.pheno}")
    rows = SsfRows(
        chrom=variants.chrom,
        pos=variants.pos,
        effect_allele=a1,
        other_allele=other,
        effect=effect,
        se=se,
        eaf=r.a1_freq,
        p=p,
        effect_kind="odds_ratio" if r.is_binary else "beta",
        log10_p=log10_p,
        variant_id=None,
        rsid=_rsid(variants.id),
        n=r.obs_ct,
        ref_is_effect=np.asarray(r.a1_is_ref, dtype=bool),
    )
    meta = SsfMeta(
        trait_description=(r.pheno,),
        genome_assembly=ctx.genome_assembly,
        sample_size=int(np.max(r.obs_ct, initial=0)),
        case_count=r.n_cases if r.is_binary else None,
        control_count=r.n_controls if r.is_binary else None,
        adjusted_covariates=tuple(r.covariates),
    )
    files = write_ssf(prefix, rows, meta)
    tested = np.isfinite(log_p)
    man = plots.manhattan(
        variants.chrom[tested],
        variants.pos[tested],
        p[tested],
        Path(f"{prefix}.manhattan.png"),
        title=f"{r.pheno}: {_METHOD_TITLES.get(r.method, r.method)}",
        log10_p=log10_p[tested],
    )
    qq_png = Path(f"{prefix}.qq.png")
    lam = plots.qq(p[tested], qq_png, title=f"{r.pheno}: QQ", log10_p=log10_p[tested])
    files += [man, qq_png]
    summary: dict[str, object] = {
        "Model": _METHOD_TITLES.get(r.method, r.method),
        "Variants tested": int(tested.sum()),
        "Samples": r.n_samples,
    }
    if r.is_binary:
        summary["Cases / controls"] = f"{r.n_cases} / {r.n_controls}"
        summary["Firth fits"] = int(np.sum(r.firth))
    summary["Covariates"] = ", ".join(r.covariates) or "none"
    summary["Genome-wide significant (P < 5e-8)"] = int(np.sum(log10_p[tested] < np.log10(5e-8)))
    table = html.top_hits(
        chrom=variants.chrom[tested],
        pos=variants.pos[tested],
        ids=variants.id[tested],
        a1=a1[tested],
        effect=effect[tested],
        se=se[tested],
        p=p[tested],
        effect_name="OR" if r.is_binary else "BETA",
        log10_p=log10_p[tested],
        caption="20 lowest P (ADD test)",
    )
    section = html.Section(
        title=f"{r.pheno} — {_METHOD_TITLES.get(r.method, r.method)} (--glm)",
        summary=summary,
        table=table,
        figures=(html.Figure("Manhattan plot", man), html.Figure("QQ plot", qq_png)),
        lambda_gc=lam,
        notes=tuple(notes),
        files=(
            f"{Path(out_prefix).name}.{r.pheno}.{r.extension}",
            *((f"{Path(out_prefix).name}.{r.pheno}.{r.extension}.adjusted",) if r.adjusted is not None else ()),
            *(f.name for f in files),
        ),
    )
    return files, section


def assoc_section(
    out_prefix: Path, variants: VariantTable, pheno: str, stats: AssocStats, files: Sequence[str]
) -> tuple[list[Path], html.Section]:
    """QQ and top hits of the allelic test (``--assoc``); returns the plot and the report section."""
    s = stats
    a1, _ = s.alleles(variants)
    p = np.asarray(s.p, dtype=np.float64)
    ok = np.isfinite(p)
    qq_png = Path(f"{out_prefix}.assoc.qq.png")
    lam = plots.qq(p[ok], qq_png, title=f"{pheno}: allelic test QQ")
    or_ = np.asarray(s.odds_ratio, dtype=np.float64)
    table = html.top_hits(
        chrom=variants.chrom[ok],
        pos=variants.pos[ok],
        ids=variants.id[ok],
        a1=a1[ok],
        effect=or_[ok],
        se=np.full(int(ok.sum()), np.nan),
        p=p[ok],
        effect_name="OR",
        caption="20 lowest P (allelic chi-square)",
    )
    section = html.Section(
        title=f"{pheno} — allelic and genotypic tests (--assoc / --model)",
        summary={"Variants tested": int(ok.sum())},
        table=table,
        figures=(html.Figure("QQ plot", qq_png),),
        lambda_gc=lam,
        files=tuple(files),
    )
    return [qq_png], section


def write_report(out_prefix: Path, ctx: JobContext, sections: Sequence[html.Section], notes: Sequence[str]) -> Path:
    import fedstat  # noqa: PLC0415

    return html.write_report(
        Path(f"{out_prefix}.report.html"),
        title=f"fedstat job {ctx.job_id}",
        job={
            "job_id": ctx.job_id,
            "created": ctx.created_at,
            "privacy": ctx.privacy,
            "fedstat_version": fedstat.__version__,
            "analyst": ctx.analyst,
            "spec": dict(ctx.spec),
        },
        sites=list(ctx.sites),
        analyses=list(sections),
        notes=list(notes),
    )
