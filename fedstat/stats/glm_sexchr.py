"""``--glm`` on chrX, chrY and MT as plink2 2.00a3.5 runs it by default (``--xchr-model 2``).

plink2 regresses the variants of each chromosome class on its own design (``GlmMain``,
``GlmLinearThread``, ``GlmLogisticThread``; verified with the binary, ``scripts/make_sexchr_fixture.py``):

=========  ===================================================================================
chrX       males' genotypes as written (0/2, a het 1: ``xchr-model 2``); when the cohort holds
           males and females (known sex) a covariate ``SEX`` (1 male, 2 female) is appended to the
           phenotype's covariates, so participants of unknown sex leave chrX's regression
           (``GlmDetermineCovars`` with ``initial_nonx_covar_ct + 1`` covariates; ``no-x-sex``
           turns it off). With one sex only chrX is regressed as an autosome.
chrY       males only (the phenotype's samples that are male), when the cohort also holds
           others; skipped when it holds no male (``--glm: Skipping chrY since there are no
           males.``). Haploid: a genotype counts 0..1 (half the diploid code, a het 0.5).
MT         everyone, haploid as chrY.
other      diploid, the autosomes' regression (XY, PAR1, PAR2 included).
=========  ===================================================================================

A1 is the non-major allele by plink2's frequencies, which count a male once on chrX and only
males on chrY (:mod:`fedstat.stats.sexchr`); the job therefore releases the males' ALT dosage
sums over chrX and chrY in a round of their own (``glm_describe_males``), which also gives the
cohort's numbers of males and females. The haploid halving is done at the coordinator: scaling
the genotype column by 0.5 is exact in floating point, so the sites' sums serve unchanged.

References
----------
plink2 2.00a3.5 ``plink2_glm.cc`` (``GlmMain``: ``add_sex_covar``, ``cur_sample_include_x``,
``cur_sample_include_y``), ``plink2_glm_linear.cc`` (``is_nonx_haploid``: ``genotype_vals *= 0.5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedstat.data.genotypes import DOSAGE_UNIT, DOSAGES
from fedstat.data.sex import FEMALE, MALE
from fedstat.errors import InputError
from fedstat.stats.base import Cohort, RoundInput, RoundPlan, SumArray, cohort_level, per_variant
from fedstat.stats.glm_common import SEX_COVAR, SEX_MALES, SEX_X, Fit, JobView, PhenoSpec, cohort_sex

__all__ = [
    "COMPUTATION",
    "GlmDescribeMales",
    "GlmGroup",
    "GroupView",
    "chrom_kinds",
    "merge_fits",
    "plan_groups",
    "sex_aware_a1",
]

#: The describe round over the males (chrX and chrY variants).
COMPUTATION = "glm_describe_males"
_SEX_KINDS = ("X", "Y", "MT")


def chrom_kinds(chrom: Sequence[str] | np.ndarray) -> np.ndarray:
    """Each variant's class: ``X``, ``Y``, ``MT`` or ``""`` (diploid: autosomes, XY, PAR1, PAR2)."""
    c = np.asarray(chrom, dtype=str)
    return np.where(np.isin(c, _SEX_KINDS), c, "")


class GlmDescribeMales:
    """Site side of ``glm_describe_males``: over the round's variants (chrX, chrY), the males' ALT
    dosage sums (1/16384 units) and observed counts; and the numbers of males, females and participants."""

    def genotypes(self, params: Mapping[str, str]) -> str:
        return DOSAGES

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return cohort_level(["males.sex_ct"], 3, integer=True) | per_variant(
            ("males.alt_ct", "males.nobs"), integer=True
        )

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """The cohort, its males and its females (each when this site has any): the ledger refuses a
        split that leaves fewer than ``min_group`` of a sex, or of unknown sex."""
        sex = cohort_sex(cohort)
        groups = {"cohort": np.ones(cohort.n, dtype=bool)}
        for label, code in (("male", MALE), ("female", FEMALE)):
            if (sex == code).any():
                groups[label] = sex == code
        return groups

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        sex = cohort_sex(cohort)
        counts = np.array([np.count_nonzero(sex == MALE), np.count_nonzero(sex == FEMALE), cohort.n], dtype=np.int64)
        return {"males.sex_ct": counts}

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != cohort.n:
            raise InputError(f"glm: genotype block has shape {block.shape}, expected (variants, {cohort.n})")
        males = block[:, cohort_sex(cohort) == MALE]
        nobs = np.count_nonzero(males >= 0, axis=1).astype(np.int64)
        alt = np.rint(np.maximum(males, 0).sum(axis=1, dtype=np.float64) * DOSAGE_UNIT).astype(np.int64)
        return {"males.alt_ct": alt, "males.nobs": nobs}


def sex_aware_a1(
    a1_is_ref: np.ndarray,
    kind: np.ndarray,
    rows: np.ndarray,
    alt: np.ndarray,
    nobs: np.ndarray,
    sums: Mapping[str, np.ndarray],
) -> np.ndarray:
    """A1 (REF where ALT is major) on chrX and chrY by plink2's sex-aware frequencies.

    Parameters
    ----------
    a1_is_ref : [shape: (V,)] the diploid rule's A1 (kept off chrX/chrY)
    kind : [shape: (V,)] :func:`chrom_kinds`
    rows : the variants of the males' round (chrX and chrY), increasing
    alt, nobs : [shape: (V,)] the cohort's ALT dosage sums (1/16384 units) and observed counts
    sums : the males' round's pooled sums over ``rows``

    chrX: a male is one allele with half his dosage, so ALT is major iff
    ``2 alt - alt_m > (2 nobs - nobs_m) 16384``; chrY: the males alone, ``alt_m > nobs_m 16384``
    (an exact tie keeps REF major, as plink2's ComputeMajAlleles).
    """
    out = np.array(a1_is_ref, dtype=bool)
    alt_m = np.asarray(sums["males.alt_ct"], dtype=np.int64)
    nobs_m = np.asarray(sums["males.nobs"], dtype=np.int64)
    if alt_m.shape != rows.shape or nobs_m.shape != rows.shape:
        raise InputError(f"the males' --glm round covers {alt_m.shape[0]} variants, not {rows.size}")
    if ((alt_m > alt[rows]) | (nobs_m > nobs[rows])).any():
        raise InputError("the males' sums exceed the cohort's: the sites' --glm sums are inconsistent")
    on_x = kind[rows] == "X"
    x_rule = 2 * alt[rows] - alt_m > (2 * nobs[rows] - nobs_m) * DOSAGE_UNIT
    y_rule = alt_m > nobs_m * DOSAGE_UNIT
    out[rows] = np.where(on_x, x_rule, y_rule)
    return out


@dataclass(frozen=True, eq=False)
class GlmGroup:
    """One regression design of a ``--glm`` job: the variants it covers and how their sites build it.

    Attributes
    ----------
    label : ``""`` (the autosomes' regression), ``"chrX"`` or ``"chrY"``
    rows : [array, dtype int64] the job's variants it covers, increasing; None = all of them
    sex : the regressions' :attr:`PhenoSpec.sex`
    scale : [shape: (len(rows),)] genotype scale (0.5 haploid, 1.0 diploid); None when all 1
    """

    label: str
    rows: np.ndarray | None
    sex: str = ""
    scale: np.ndarray | None = None

    def over(self, plan: RoundPlan) -> RoundPlan:
        """The group's round ``plan`` (its variants: rows of the group) over the job's variants."""
        if self.rows is None:
            return plan
        return replace(plan, variants=self.rows if plan.variants is None else self.rows[np.asarray(plan.variants)])

    def spec_of(self, spec: PhenoSpec) -> PhenoSpec:
        """``spec`` (the autosomes' regression of a phenotype) as this group's sites build it."""
        if self.sex == SEX_X:
            return replace(
                spec, covars=(*spec.covars, SEX_COVAR), mask_covars=(*spec.mask_covars, SEX_COVAR), sex=SEX_X
            )
        return replace(spec, sex=self.sex)


def plan_groups(
    kind: np.ndarray, *, n_male: int, n_female: int, n_total: int, no_x_sex: bool
) -> tuple[list[GlmGroup], np.ndarray, list[str]]:
    """The regressions plink2 runs over variants of classes ``kind`` (:func:`chrom_kinds`).

    Parameters
    ----------
    n_male, n_female, n_total : the cohort's males, females and participants
    no_x_sex : the ``no-x-sex`` modifier

    Returns
    -------
    (groups, the first being the autosomes' where it has variants; [shape: (V,), bool] variants no
    regression covers (chrY without males); job-log lines)
    """
    lines: list[str] = []
    n_var = kind.shape[0]
    haploid = (kind == "MT") | (kind == "Y")
    skipped = np.zeros(n_var, dtype=bool)
    separate = np.zeros(n_var, dtype=bool)
    groups: list[GlmGroup] = []
    x = kind == "X"
    # plink2: SEX is added on chrX when the cohort holds both sexes (unknown sex aside)
    if x.any() and not no_x_sex and 0 < n_male < n_male + n_female:
        groups.append(GlmGroup("chrX", np.flatnonzero(x).astype(np.int64), SEX_X))
        separate |= x
    y = kind == "Y"
    if y.any():
        if n_male == 0:
            lines.append("--glm: Skipping chrY since there are no males.")
            skipped |= y
        elif n_male < n_total:
            rows = np.flatnonzero(y).astype(np.int64)
            groups.append(GlmGroup("chrY", rows, SEX_MALES, np.full(rows.size, 0.5)))
            separate |= y
    main = ~(separate | skipped)
    if main.any():
        rows = np.flatnonzero(main).astype(np.int64)
        scale = np.where(haploid[main], 0.5, 1.0) if haploid[main].any() else None
        groups.insert(0, GlmGroup("", None if main.all() else rows, "", scale))
    return groups, skipped, lines


class GroupView:
    """The job as one group's regressions see it (:class:`~fedstat.stats.glm_common.JobView`): the
    group's variants, their A1 and genotype scale, and plink2's chrX rules for the SEX covariate."""

    def __init__(self, job: JobView, group: GlmGroup, a1_is_ref: np.ndarray):
        self.job, self.group = job, group
        self.rows = group.rows if group.rows is not None else np.arange(job.n_var)
        self.a1 = np.asarray(a1_is_ref)[self.rows]
        two = dict(job.two_valued)
        if group.sex == SEX_X:
            two[SEX_COVAR] = (1.0, 2.0)  # its separation check (logistic) reads cases per sex from the sums
        self.two = two

    @property
    def n_var(self) -> int:
        return int(self.rows.size)

    @property
    def a1_is_ref(self) -> np.ndarray:
        return self.a1

    @property
    def firth_mode(self) -> str:
        return self.job.firth_mode

    @property
    def geno_scale(self) -> np.ndarray | None:
        return self.group.scale

    @property
    def two_valued(self) -> Mapping[str, tuple[float, float]]:
        return self.two

    def tests_for(self, covars: Sequence[str]) -> tuple[str, ...]:
        return self.job.tests_for(covars)

    def categorical_levels(self, spec: PhenoSpec, kept: Sequence[str]) -> dict[str, list[str]]:
        return self.job.categorical_levels(spec, kept)

    def note(self, line: str) -> None:
        self.job.note(line)

    def skip(self, pheno: str, why: str) -> None:
        if not self.group.label:
            self.job.skip(pheno, why)
            return
        self.job.note(f"Note: Skipping {self.group.label} in --glm regression on phenotype '{pheno}', since {why}.")

    def drop_constant_in_mask(self, spec: PhenoSpec, xtx: np.ndarray, n: float) -> list[int] | None:
        """As the job's, after plink2's rules for the SEX covariate of a chrX regression.

        SEX constant in the phenotype's chrX samples (one sex): plink2 leaves it out and regresses
        chrX on the autosomes' samples, unknown sex included; one male or one female in a
        quantitative phenotype's chrX samples: plink2 leaves that participant out. Neither takes
        sums this job can release, so chrX is skipped for the phenotype, saying why.
        """
        if spec.sex == SEX_X:
            j = spec.covars.index(SEX_COVAR) + 1
            n_female = int(round(float(xtx[0, j]) - n))  # Σ SEX = n_male + 2 n_female
            n_male = int(round(n)) - n_female
            if min(n_male, n_female) == 0:
                self.skip(
                    spec.name,
                    "its samples on chrX are of one sex: plink2 then leaves SEX out and regresses chrX on the "
                    "autosomes' samples (unknown sex included), which this job does not do",
                )
                return None
            if not spec.binary and min(n_male, n_female) == 1:
                self.skip(
                    spec.name,
                    "its samples on chrX hold a single male or a single female, whom plink2 would leave out: a "
                    "release over one participant",
                )
                return None
        return self.job.drop_constant_in_mask(spec, xtx, n)


def merge_fits(n_var: int, parts: Sequence[tuple[GlmGroup, Fit]], job: JobView) -> Fit:
    """One phenotype's fits over its groups as one fit over the job's ``n_var`` variants.

    Rows no group covers (or whose group skipped the phenotype) print nothing (``test_mask``);
    tests are the union of the groups' (the covariates in order, then SEX, as plink2 appends it),
    each variant's own in ``test_mask``.
    """
    first = parts[0][1]
    order = [c for c in first.covariates if c != SEX_COVAR]
    for _, fit in parts:
        order += [c for c in fit.covariates if c not in order and c != SEX_COVAR]
    order.append(SEX_COVAR)
    covars = sorted({c for _, f in parts for c in f.covariates}, key=order.index)
    tests = job.tests_for(covars)
    t = len(tests)
    nan = np.full((n_var, t), np.nan)
    out = {k: nan.copy() for k in ("beta", "se", "stat", "log_p")}
    mask = np.zeros((n_var, t), dtype=bool)
    obs_ct = np.zeros(n_var, dtype=np.int64)
    a1_freq, a1_ct = np.full(n_var, np.nan), np.full(n_var, np.nan)
    err = np.zeros(n_var, dtype=np.int64)
    flags = {k: np.zeros(n_var, dtype=bool) for k in ("reported", "unfinished", "firth", "haploid")}
    sep = np.zeros(n_var, dtype=np.int64)
    binary = first.is_binary
    case_obs = np.zeros(n_var, dtype=np.int64) if binary else None
    a1_case = np.full(n_var, np.nan) if binary else None
    for group, fit in parts:
        rows = group.rows if group.rows is not None else np.arange(n_var)
        cols = np.array([tests.index(x) for x in fit.tests], dtype=np.int64)
        for k in out:
            block = out[k][rows]
            block[:, cols] = getattr(fit, k)
            out[k][rows] = block
        m = mask[rows]
        m[:, cols] = True
        mask[rows] = m
        obs_ct[rows], a1_freq[rows], a1_ct[rows], err[rows] = fit.obs_ct, fit.a1_freq, fit.a1_ct, fit.err
        flags["reported"][rows], flags["unfinished"][rows], flags["firth"][rows] = (
            fit.reported,
            fit.unfinished,
            fit.firth,
        )
        if group.scale is not None:
            flags["haploid"][rows] = group.scale != 1.0
        if fit.sep_allele is not None:
            sep[rows] = fit.sep_allele
        if case_obs is not None and a1_case is not None and fit.case_obs_ct is not None and fit.a1_case_ct is not None:
            case_obs[rows], a1_case[rows] = fit.case_obs_ct, fit.a1_case_ct
    return Fit(
        pheno=first.pheno,
        is_binary=binary,
        method=first.method,
        covariates=first.covariates,
        tests=tests,
        n_samples=first.n_samples,
        n_cases=first.n_cases,
        n_controls=first.n_controls,
        obs_ct=obs_ct,
        a1_freq=a1_freq,
        beta=out["beta"],
        se=out["se"],
        stat=out["stat"],
        log_p=out["log_p"],
        err=err,
        sep_allele=sep if binary else None,
        reported=flags["reported"],
        unfinished=flags["unfinished"],
        firth=flags["firth"],
        a1_ct=a1_ct,
        case_obs_ct=case_obs,
        a1_case_ct=a1_case,
        test_mask=mask,
        haploid=flags["haploid"] if flags["haploid"].any() else None,
    )
