"""The coordinator-side steps a job is made of: the allele reports, ``--mind``, the variant
filters, the QC'd subset, the sequence of steps, and the GWAS outputs (SSF, plots, report).

Each is a :class:`~fedstat.stats.base.JobAnalysis`; :func:`fedstat.jobs.planner.plan_job`
chains them in plink2's order. Their results are frozen objects (None for the steps with no
files: ``--mind``, the variant filters), written by :func:`fedstat.formats.results.write_result`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.report.gwas import GwasReport, JobContext
from fedstat.stats import allele, assoc, glm, machr2, sexchr
from fedstat.stats.base import JobAnalysis, Results, RoundPlan
from fedstat.stats.hwe_x import HardyX
from fedstat.stats.qc import QcResult, VariantQc, variant_filter, with_mach_r2

#: The groups of the allele rounds, in the order they run.
SEX_GROUPS = (sexchr.TOTALS, sexchr.MALE, sexchr.FEMALE)

__all__ = [
    "AlleleAnalysis",
    "CompositeAnalysis",
    "GwasOutputs",
    "KeptVariants",
    "MindAnalysis",
    "QcAnalysis",
    "SubsetAnalysis",
]


class AlleleAnalysis:
    """``--freq --geno-counts --hardy --missing``: a round of the cohort's genotype counts and, where
    the job has variants on chrX, chrY or MT, rounds over the males and the females
    (:mod:`fedstat.stats.sexchr`).

    ``chrom`` (one code per job variant) is what the sex-aware plan is made from; None plans the one
    round of old, over variants that must then all be diploid (checked in :meth:`result`).
    ``freq_columns``: ``--freq cols=``, written from the same counts; with ``machr2`` (MACH_R2) the
    rounds reading dosages also sum their squares.
    """

    def __init__(
        self,
        analyses: tuple[str, ...],
        *,
        dosage: bool = False,
        chrom: Sequence[str] | np.ndarray | None = None,
        freq_columns: frozenset[str] | None = None,
    ):
        self.analyses = analyses
        self.dosage = dosage  # --freq from the sites' dosages (plink2's); see fedstat.jobs.reads_dosages
        if freq_columns is not None and "machr2" in freq_columns and not dosage:
            raise InputError("--freq cols=+machr2 needs the rounds to read dosages")
        self.machr2 = freq_columns is not None and "machr2" in freq_columns
        self.freq_columns = freq_columns  # --freq cols=: written from the same counts
        self.stats: allele.AlleleStats | None = None
        self.plan = None if chrom is None else sexchr.sex_rounds(chrom, analyses)
        self.groups = [] if self.plan is None else [g for g in SEX_GROUPS if g in self.plan.rows]
        self.sums: dict[str, Mapping[str, np.ndarray]] = {}
        self.hardy_rows: np.ndarray | None = None
        self.hardy_x: HardyX | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        dosage = ({"dosage": "1"} if self.dosage else {}) | ({"machr2": "1"} if self.machr2 else {})
        if self.plan is None or not self.plan.any_sex:
            if sums is None:
                return RoundPlan("allele_counts", params=dosage)
            self.stats = allele.finish(sums)
            return None
        if not self.groups:
            return None  # nothing to count (e.g. --hardy over chrY and MT only)
        if sums is not None:
            self.sums[self.groups[len(self.sums)]] = sums
        if len(self.sums) < len(self.groups):
            group = self.groups[len(self.sums)]
            rows = self.plan.rows[group]
            if group == sexchr.TOTALS:
                return RoundPlan("allele_counts", params=dosage, variants=rows)
            params = {"sex": group} | (dosage if group == sexchr.MALE else {})
            return RoundPlan("allele_counts_sex", params=params, variants=rows)
        self.stats, self.hardy_rows, self.hardy_x = sexchr.combine(self.plan, self.sums)
        return None

    def result(self, variants: VariantTable) -> allele.AlleleReports | None:
        if self.plan is None and np.isin(variants.chrom.astype(str), sorted(sexchr.SEX_CHROMS)).any():
            raise InputError("allele reports planned without the variants' chromosomes cannot count chrX/chrY/MT")
        if self.stats is None and self.plan is not None and not self.groups:
            return None  # e.g. --hardy over chrY and MT only: plink2 writes no table
        assert self.stats is not None, "result() before the counts rounds finished"
        return allele.AlleleReports(
            variants, self.stats, self.analyses, self.hardy_rows, self.hardy_x, freq_columns=self.freq_columns
        )

    def log_lines(self) -> list[str]:
        if self.plan is None or "hardy" not in self.analyses:
            return []
        skipped = int(np.isin(self.plan.kind, ["Y", "MT"]).sum())
        return [f"--hardy: Skipping {skipped} haploid variants."] if skipped else []


class MindAnalysis:
    """``--mind``: one round over every harmonized variant; each site drops its own participants whose
    missing-call rate exceeds the threshold (per-participant data never leaves the site)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.removed: int | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            return RoundPlan("sample_missing", params={"mind": repr(self.threshold)})
        self.removed = int(np.asarray(sums["removed"]).sum())
        return None

    def result(self, variants: VariantTable) -> None:
        return None

    def log_lines(self) -> list[str]:
        if self.removed is None:
            return []
        # each site reports its count rounded down to its policy's count_granularity (fedstat.counts)
        return [
            f"--mind {self.threshold:g}: {self.removed} participants removed due to missing genotype data "
            "(sites round their counts down to their count_granularity)"
        ]


class KeptVariants:
    """The harmonized variants the QC round kept (shared by the later steps of a job); None = all."""

    def __init__(self) -> None:
        self.index: np.ndarray | None = None


class QcAnalysis:
    """``--geno``, ``--hwe``, ``--maf``, ``--mach-r2-filter``: one round of pooled genotype counts (and
    for MaCH r² the dosage sums and their squares), then plink2's filters in plink2's order."""

    def __init__(self, qc: VariantQc, kept: KeptVariants, *, controls: str = "", dosage: bool = False):
        self.qc, self.kept, self.controls = qc, kept, controls
        self.dosage = dosage  # --maf on the dosage frequencies, as plink2 (not under noise: see reads_dosages)
        self.outcome: QcResult | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            params = ({"controls": self.controls} if self.controls else {}) | (
                {"machr2": "1"} if self.qc.mach_r2 is not None else {}
            )
            if self.dosage and self.qc.maf is not None:
                params["dosage"] = "1"
            return RoundPlan("qc_counts", params=params)
        counts = {k: np.asarray(sums[k]) for k in allele.SUM_NAMES}
        # plink2's --maf filters on the frequencies --freq writes: from the dosages where sent
        alt_freq = allele.alt_frequencies(allele.checked_counts(sums))[1] if "dosage_sum" in sums else None
        if not self.controls:
            result = variant_filter(self.qc, **counts, alt_freq=alt_freq)
        else:  # plink2's order, geno then hwe then maf; hwe on the controls' counts
            controls = {k: np.asarray(sums[f"control_{k}"]) for k in allele.SUM_NAMES}
            geno = variant_filter(VariantQc(geno=self.qc.geno), **counts)
            hwe_fail = ~variant_filter(VariantQc(hwe=self.qc.hwe), **controls).keep & geno.keep
            maf = variant_filter(VariantQc(maf=self.qc.maf), **counts, alt_freq=alt_freq)
            removed = {"geno": geno.removed["geno"]} if self.qc.geno is not None else {}
            removed["hwe"] = int(hwe_fail.sum())
            if self.qc.maf is not None:
                removed["maf"] = int((~maf.keep & geno.keep & ~hwe_fail).sum())
            result = QcResult(keep=geno.keep & ~hwe_fail & maf.keep, removed=removed)
        if self.qc.mach_r2 is not None:  # last, as plink2 (after --maf)
            pooled = allele.checked_counts(sums)
            if machr2.SSQ_NAME not in pooled or "dosage_sum" not in pooled:
                raise InputError("--mach-r2-filter needs the QC round's dosage sums, which the sites did not send")
            r2 = machr2.mach_r2(pooled["dosage_sum"], pooled[machr2.SSQ_NAME], pooled["dosage_obs"])
            result = with_mach_r2(result, r2, self.qc.mach_r2)
        self.outcome = result
        self.kept.index = np.flatnonzero(result.keep).astype(np.int64)
        return None

    def result(self, variants: VariantTable) -> None:
        return None

    def log_lines(self) -> list[str]:
        if self.outcome is None:
            return []
        lines = self.outcome.log_lines()
        if self.controls and "hwe" in self.outcome.removed:
            lines[list(self.outcome.removed).index("hwe")] += f" (in the controls of {self.controls})"
        return lines


class SubsetAnalysis:
    """Runs ``inner`` on the variants QC kept: its rounds cover (subsets of) them and its result holds them only."""

    def __init__(self, inner: JobAnalysis, kept: KeptVariants):
        self.inner, self.kept = inner, kept

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        plan = self.inner.next_round(sums)
        if plan is None or self.kept.index is None:
            return plan
        index = self.kept.index if plan.variants is None else self.kept.index[np.asarray(plan.variants)]
        return replace(plan, variants=index)

    def result(self, variants: VariantTable) -> object | None:
        return self.inner.result(variants if self.kept.index is None else variants.take(self.kept.index))

    def log_lines(self) -> list[str]:
        return self.inner.log_lines()


class CompositeAnalysis:
    """Runs several analyses one after another; their rounds follow each other."""

    def __init__(self, parts: list[JobAnalysis]):
        if not parts:
            raise InputError("no analysis to run")
        self.parts = parts
        self._i = 0

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        plan = self.parts[self._i].next_round(sums)
        while plan is None and self._i + 1 < len(self.parts):
            self._i += 1
            plan = self.parts[self._i].next_round(None)
        return plan

    def result(self, variants: VariantTable) -> Results:
        return Results(tuple(part.result(variants) for part in self.parts))

    def log_lines(self) -> list[str]:
        return [line for part in self.parts for line in part.log_lines()]


class GwasOutputs:
    """No rounds of its own: after --glm / --assoc finish, their GWAS-SSF, plots and HTML report."""

    def __init__(self, ctx: JobContext, glm_job: glm.GlmJob | None, assoc_job: assoc.AssocAnalysis | None, pheno: str):
        self.ctx, self.glm_job, self.assoc_job, self.pheno = ctx, glm_job, assoc_job, pheno

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        return None

    def result(self, variants: VariantTable) -> GwasReport:
        return GwasReport(
            variants,
            self.ctx,
            self.pheno,
            glm=() if self.glm_job is None else tuple(self.glm_job.results.values()),
            glm_notes=() if self.glm_job is None else tuple(self.glm_job.log_lines()),
            assoc=None if self.assoc_job is None else self.assoc_job.result(variants),
        )

    def log_lines(self) -> list[str]:
        """Genomic inflation λGC of each ADD test (the median χ²₁ of its p-values / 0.4549)."""
        from fedstat.report.plots import lambda_gc  # noqa: PLC0415 - matplotlib only when reporting

        lines = []
        if self.glm_job is not None:
            for res in self.glm_job.results.values():
                log10_p = res.log_p[:, 0] / math.log(10.0)
                lam = lambda_gc(np.exp(res.log_p[:, 0]), log10_p)
                covars = ", ".join(res.covariates) or "no covariates"
                lines.append(f"λGC {res.pheno} (--glm ADD, {covars}): {lam:.4f}")
        return lines
