"""Planning: a validated spec becomes the coordinator's :class:`~fedstat.stats.base.JobAnalysis`,
its steps in plink2's order."""

from __future__ import annotations

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats.numbers import format_g_array
from fedstat.jobs.options import (
    covar_standardize,
    derived_columns,
    freq_cols,
    glm_adjust,
    glm_ci,
    glm_cols,
    pca_components,
    qc_filters,
    reads_dosages,
)
from fedstat.jobs.spec import JobSpec
from fedstat.jobs.steps import (
    AlleleAnalysis,
    CompositeAnalysis,
    GwasOutputs,
    KeptVariants,
    MindAnalysis,
    QcAnalysis,
    SubsetAnalysis,
)
from fedstat.privacy.modes import get_mode
from fedstat.report.gwas import JobContext
from fedstat.stats import allele, assoc, glm, pca, sexchr
from fedstat.stats.base import JobAnalysis

__all__ = ["plan_job"]


def plan_job(spec: JobSpec, ctx: JobContext | None = None, variants: VariantTable | None = None) -> JobAnalysis:
    """The coordinator-side analysis for a validated spec (``ctx``: facts for the HTML report).

    Steps run in plink2's order: ``--mind`` (at each site), the variant filters on pooled
    counts, then the analyses over the variants kept: allele reports, ``--pca`` (whose PCs later
    steps may use as covariates), ``--glm`` / ``--assoc`` / ``--model`` and the GWAS outputs.

    ``variants`` are the job's variants (after :func:`coordinator.harmonizer.select_variants`):
    the allele reports count those on chrX, chrY and MT by sex and ploidy, as plink2 does
    (:mod:`fedstat.stats.sexchr`), and so does ``--glm`` (:mod:`fedstat.stats.glm_sexchr`) unless the
    job also has ``--assoc``/``--model``; ``--pca``, ``--assoc`` and ``--model`` run on the others
    only. Without them every variant must be diploid.
    """
    ctx = ctx or JobContext(spec=spec.to_json())
    parts: list[JobAnalysis] = []
    mind, qc, controls = qc_filters(spec)
    if mind is not None:
        parts.append(MindAnalysis(mind))
    kept = KeptVariants()
    if qc.active:
        dosage = not get_mode(spec.privacy).adds_noise  # noise covers the counts only
        parts.append(QcAnalysis(qc, kept, controls=spec.pheno_names[0] if controls else "", dosage=dosage))
    rest = kept  # the variants of the analyses after the allele reports: none on chrX/chrY/MT
    sex = None if variants is None else np.isin(variants.chrom.astype(str), sorted(sexchr.SEX_CHROMS))
    if sex is not None and sex.any():
        if mind is not None or qc.active:
            raise InputError(
                "--mind/--geno/--hwe/--maf/--mach-r2-filter do not count chrX/chrY/MT yet; their variants must be left out"
            )
        rest = KeptVariants()
        rest.index = np.flatnonzero(~sex).astype(np.int64)
    allele_flags = tuple(a for a in spec.analyses if a in allele.ANALYSES)
    if allele_flags:
        chrom = None if variants is None or mind is not None or qc.active else variants.chrom.astype(str)
        freq_columns = freq_cols(spec) if "freq_cols" in spec.options else None
        analysis = AlleleAnalysis(allele_flags, dosage=reads_dosages(spec), chrom=chrom, freq_columns=freq_columns)
        parts.append(SubsetAnalysis(analysis, kept))
    kept = rest
    k = pca_components(spec)
    if k:
        scores = tuple(c for c in spec.covar_names if c in derived_columns(spec))
        n_samples = sum(n for _, n in ctx.sites)
        parts.append(
            SubsetAnalysis(pca.PcaAnalysis(k, scores=scores, n_samples=n_samples, number_format=format_g_array), kept)
        )
    glm_job = assoc_job = None
    # --glm regresses chrX/chrY/MT as plink2 (its own variant set), unless --assoc/--model, which test
    # autosomes only, share its GWAS outputs
    glm_sex = sex is not None and bool(sex.any()) and not {"assoc", "model"} & set(spec.analyses)
    glm_kept = KeptVariants() if glm_sex else kept
    if "glm" in spec.analyses:
        mods = {m for m in spec.options.get("glm", "").split(",") if m}
        if "show-covar" in mods:
            mods.discard("show-covar")
        else:
            mods.add("hide-covar")  # fedstat's default: covariate rows hidden
        glm_job = glm.plan_glm(
            spec.pheno_names,
            spec.covar_names,
            frozenset(mods),
            ci=glm_ci(spec),
            adjust=glm_adjust(spec),
            categories=ctx.categories,
            standardize=covar_standardize(spec),
            require_covar=spec.options.get("require_covar") == "1",
            columns=glm_cols(spec) if "glm_cols" in spec.options else None,
            min_cell_count=ctx.min_cell_count,
            chrom=variants.chrom.astype(str) if glm_sex and variants is not None else None,
        )
        parts.append(SubsetAnalysis(glm_job, glm_kept))
    if "assoc" in spec.analyses or "model" in spec.analyses:
        assoc_job = assoc.plan_assoc(
            spec.pheno_names[0],
            assoc="assoc" in spec.analyses,
            model="model" in spec.analyses,
            min_cell_count=ctx.min_cell_count,
        )
        parts.append(SubsetAnalysis(assoc_job, kept))
    if glm_job is not None or assoc_job is not None:
        parts.append(SubsetAnalysis(GwasOutputs(ctx, glm_job, assoc_job, spec.pheno_names[0]), glm_kept))
    return CompositeAnalysis(parts)
