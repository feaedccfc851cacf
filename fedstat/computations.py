"""The registry of site computations: one entry per computation, read by the daemons, DP and bounds.

A job's rounds name a *local computation* (:attr:`fedstat.stats.base.RoundPlan.computation`).
Everything the rest of fedstat needs to know about one lives in its :class:`Computation` entry
here, so the site agent, the coordinator, the privacy layer and the CLI branch on no analysis
names:

- ``kernel``: the site side (:class:`~fedstat.stats.base.LocalComputation`); its ``sum_arrays``
  declares the arrays a round sends (names, per-variant shapes, integer or real), which the
  coordinator checks every site's chunks against before allocating (:mod:`fedstat.bounds`);
- ``dp``: the arrays it may release under differential privacy and how many of their cells one
  person is in (:class:`~fedstat.privacy.dp.CountSensitivity`); ``None``: not under dp;
- ``count_arrays``: arrays that are counts of participants, coarsened by each site's release gate
  like the counts in job logs (``--mind``'s number removed);
- ``changes_site_state``: whether a round drops participants or adds derived columns at the site
  for the job's later rounds (a site offered the job again runs it again);
- ``label``: how the job log names the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstat.data.genotypes import BOTH, HARDCALLS, GenotypeBlock
from fedstat.data.sex import FEMALE, INVALID, MALE, invalid_sex_message
from fedstat.errors import InputError, ProtocolError
from fedstat.privacy.dp import CountSensitivity
from fedstat.stats import allele, assoc, glm, machr2, pca, sexchr
from fedstat.stats.base import (
    Cohort,
    LocalComputation,
    RoundInput,
    SiteUpdate,
    SumArray,
    cohort_level,
    per_variant,
)


@dataclass(frozen=True)
class Computation:
    """One site computation and what it declares (see the module docstring)."""

    name: str
    kernel: LocalComputation
    dp: CountSensitivity | None = None
    count_arrays: tuple[str, ...] = ()
    changes_site_state: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


# --- kernels of the allele reports and QC (the others live with their analyses) ----------------


def _dosage_names(params: Mapping[str, str]) -> tuple[str, ...]:
    """The dosage sums of a counts round: ``dosage=1`` (``--freq``) the ALT dosage sums, and with
    ``machr2=1`` (MaCH r²: ``--freq cols=+machr2``, ``--mach-r2-filter``) the squared dosages too."""
    if params.get("machr2") == "1":
        return (*allele.DOSAGE_SUM_NAMES, machr2.SSQ_NAME)
    return allele.DOSAGE_SUM_NAMES if params.get("dosage") == "1" else ()


def _dosage_sums(
    block: GenotypeBlock, counts: Mapping[str, np.ndarray], params: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """A block's :func:`_dosage_names` sums."""
    names = _dosage_names(params)
    out = allele.local_dosage_sums(block.dosages, counts) if names else {}
    if machr2.SSQ_NAME in names:
        out |= machr2.local_ssq(block.dosages, counts)
    return out


class _AlleleCounts:
    """Site side of --freq/--geno-counts/--hardy/--missing: four genotype counts per variant (hard
    calls), and with ``dosage=1`` (``--freq``) the ALT dosage sums plink2 computes frequencies from
    (with ``machr2=1`` also their squares, for MaCH r²)."""

    def genotypes(self, params: Mapping[str, str]) -> str:
        return BOTH if _dosage_names(params) else HARDCALLS

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return per_variant(allele.SUM_NAMES + _dosage_names(params), integer=True)

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return {}

    def block_sums(self, block: Any, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        if not isinstance(block, GenotypeBlock):
            return allele.local_sums(block)
        counts = allele.local_sums(block.hardcalls)
        return counts | _dosage_sums(block, counts, inp.params)


class _AlleleCountsBySex(_AlleleCounts):
    """Site side of the allele reports on chrX/chrY: the same counts over the cohort's males or
    females (``params['sex']``), which plink2 counts haploid (males) or alone (.hardy.x, females)."""

    def _members(self, cohort: Cohort, params: Mapping[str, str]) -> np.ndarray:
        """[array, shape: (cohort.n,), dtype bool] the participants of the round's sex."""
        code = {sexchr.MALE: MALE, sexchr.FEMALE: FEMALE}.get(params.get("sex", ""))
        if code is None:
            raise ProtocolError("a round of genotype counts by sex names no sex (male or female)")
        if cohort.sex is None:
            raise InputError("this round needs the participants' sex, which this site's cohort does not carry")
        if bool((cohort.sex == INVALID).any()):
            raise InputError(invalid_sex_message())
        return np.asarray(cohort.sex == code)

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """The cohort (whose counts the job releases on the same variants, or may) and the round's
        sex, when this site has anyone of it: the ledger then refuses a split that leaves fewer
        than ``min_group`` on either side (one male, or one non-male)."""
        members = self._members(cohort, inp.params)
        groups = {"cohort": np.ones(cohort.n, dtype=bool)}
        if members.any():
            groups[inp.params["sex"]] = members
        return groups

    def block_sums(self, block: Any, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        members = self._members(cohort, inp.params)
        if isinstance(block, GenotypeBlock):
            dosages = None if block.dosages is None else block.dosages[:, members]
            return super().block_sums(GenotypeBlock(block.hardcalls[:, members], dosages), cohort, inp, rows)
        return super().block_sums(np.asarray(block)[:, members], cohort, inp, rows)


class _SampleMissing:
    """Site side of --mind: each participant's missing-call rate over the round's variants; those
    above the threshold leave the job at this site. Only the count removed is summed."""

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return cohort_level(("removed",), 1, integer=True)

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return {}

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        if "missing" not in inp.local:
            inp.local["missing"] = np.zeros(cohort.n, dtype=np.int64)
        inp.local["missing"] += np.count_nonzero(block < 0, axis=0)
        return {}

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """None: the round releases no sum over participants' data, only how many it removed; the
        rounds after it release over the participants left, which the ledger checks."""
        return {}

    def finish(self, cohort: Cohort, inp: RoundInput) -> SiteUpdate:
        threshold = float(inp.params["mind"])
        missing = inp.local.get("missing", np.zeros(cohort.n, dtype=np.int64))
        n = max(len(inp.variants), 1)
        keep = missing / n <= threshold  # plink2 removes samples whose rate exceeds it
        return SiteUpdate(keep=keep, sums={"removed": np.array([cohort.n - int(keep.sum())], dtype=np.int64)})


class _QcCounts:
    """Site side of the QC round: genotype counts, plus counts among the controls of ``params['controls']``,
    and with ``machr2=1`` (``--mach-r2-filter``) the dosage sums MaCH r² needs, over the cohort."""

    def genotypes(self, params: Mapping[str, str]) -> str:
        return BOTH if _dosage_names(params) else HARDCALLS

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        names = [*allele.SUM_NAMES, *(f"control_{k}" for k in allele.SUM_NAMES if params.get("controls"))]
        return per_variant([*names, *_dosage_names(params)], integer=True)

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return {}

    def release_groups(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        groups = {"cohort": np.ones(cohort.n, dtype=bool)}
        pheno = inp.params.get("controls")
        if pheno:
            groups["controls"] = assoc.case_control_masks(cohort, pheno, "--hwe controls")[1]
        return groups

    def block_sums(self, block: Any, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        # a plain hard-call block (a reader without a dosage track): its hard calls are its dosages
        full = block if isinstance(block, GenotypeBlock) else GenotypeBlock(np.asarray(block), None)
        block = np.asarray(full.hardcalls)
        out = allele.local_sums(block)
        out |= _dosage_sums(full, out, inp.params)
        pheno = inp.params.get("controls")
        if pheno:
            _, controls = assoc.case_control_masks(cohort, pheno, "--hwe controls")
            out |= {f"control_{k}": v for k, v in allele.local_sums(block[:, controls]).items()}
        return out


_GENOS = ("hom_ref", "het", "hom_alt")

#: Every local computation a site can run, by name.
COMPUTATIONS: Mapping[str, Computation] = {
    c.name: c
    for c in (
        Computation(
            "allele_counts",
            _AlleleCounts(),
            # a person's call is in one of four genotype classes (missing included)
            dp=CountSensitivity((*allele.SUM_NAMES,), 1),
        ),
        Computation(
            "allele_counts_sex",
            _AlleleCountsBySex(),
            dp=CountSensitivity((*allele.SUM_NAMES,), 1),  # as allele_counts, over one sex
            label="chrX/chrY counts by sex",
        ),
        Computation(
            "sample_missing",
            _SampleMissing(),
            count_arrays=("removed",),
            changes_site_state=True,
            label="--mind",
        ),
        Computation("qc_counts", _QcCounts(), label="QC"),
        Computation("pca_multiply", pca.LOCAL_COMPUTATIONS["pca_multiply"], label="--pca"),
        Computation("pca_scores", pca.LOCAL_COMPUTATIONS["pca_scores"], changes_site_state=True, label="PC scores"),
        Computation(
            assoc.COMPUTATION,
            assoc.LOCAL_COMPUTATIONS[assoc.COMPUTATION],
            # a person is in their group's table (case or control, if any) and in the all-samples
            # table; and in one of n_case, n_ctrl, n_missing_pheno
            dp=CountSensitivity(
                tuple(f"{g}_{k}" for g in ("case", "ctrl", "all") for k in _GENOS),
                2,
                ("n_case", "n_ctrl", "n_missing_pheno"),
                1,
            ),
            label="--assoc/--model",
        ),
        *(Computation(name, kernel, label="--glm") for name, kernel in glm.LOCAL_COMPUTATIONS.items()),
    )
}

#: The kernels alone, by name (for in-process harnesses and tests).
LOCAL_COMPUTATIONS: Mapping[str, LocalComputation] = {name: c.kernel for name, c in COMPUTATIONS.items()}
