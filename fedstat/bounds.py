"""Bounds on what a job's rounds may carry and how many rounds it may have, from its signed spec.

Both ends of a round check the other against these before they allocate or compute anything:

- the coordinator checks every chunk a site sends against the round's plan of arrays
  (:func:`round_arrays`, read from each local computation's ``sum_arrays`` declaration);
- a site checks the coordinator's round arrays against :func:`round_input_limits` and counts the
  rounds and attempts it computes against :func:`round_caps` (:class:`RoundTally`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedstat.computations import COMPUTATIONS
from fedstat.data.categories import MAX_LEVELS
from fedstat.errors import ProtocolError, shown
from fedstat.jobs import JobSpec, derived_columns, expand_names, pca_components, qc_filters
from fedstat.privacy.base import PlannedArray
from fedstat.privacy.modes import get_mode
from fedstat.stats import allele, glm_logistic, pca
from fedstat.stats.base import RoundPlan, declared_arrays

#: Attempts of one round a site computes: the first, and one more for each time the round is run
#: again after a site reconnected or the coordinator restarted (rounds that change a site's state,
#: ``--mind`` and PC scores, are run again then too).
MAX_ATTEMPTS_PER_ROUND = 4


@dataclass(frozen=True)
class RoundCaps:
    """The most rounds, and attempts of each round, a job's signed spec can need (:func:`round_caps`).

    Attributes
    ----------
    rounds : distinct rounds (round numbers) of the job
    attempts : attempts of each round
    """

    rounds: int
    attempts: int = MAX_ATTEMPTS_PER_ROUND


def round_caps(spec: JobSpec) -> RoundCaps:
    """The rounds a job can need, from its spec alone: every site refuses a round beyond them.

    One round each for ``--mind``, the variant filters, the allele reports (and, without ``--mind``,
    a filter or dp, their rounds over chrX/chrY's males and for ``--hardy`` chrX's females,
    :mod:`fedstat.stats.sexchr`), ``--assoc``/``--model``
    and ``--glm``'s describe rounds (the cohort's, chrX/chrY's males') and a linear round per
    regression design (autosomes, chrX, chrY); ``--pca``: its allele counts, at most
    :data:`fedstat.stats.pca.MAX_ITERATIONS` subspace iterations and the PC-scores round; each
    ``--glm`` phenotype at most :func:`fedstat.stats.glm_logistic.max_rounds` logistic rounds per design.
    Plus ``MAX_ATTEMPTS_PER_ROUND - 1`` rounds a job restarted without a dropped site may have
    abandoned before any total was released (their numbers are not reused).
    """
    mind, qc, _ = qc_filters(spec)
    analyses = set(spec.analyses)
    rounds = int(mind is not None) + int(qc.active) + int(bool(analyses & set(allele.ANALYSES)))
    if analyses & set(allele.ANALYSES) and mind is None and not qc.active and not get_mode(spec.privacy).adds_noise:
        rounds += 1 + int("hardy" in analyses)  # by sex, where the job's variants are on chrX/chrY
    rounds += int(bool(analyses & {"assoc", "model"}))
    if pca_components(spec):
        rounds += 1 + pca.MAX_ITERATIONS + int(bool(derived_columns(spec)))
    if "glm" in analyses:
        mods = set(spec.options.get("glm", "").split(","))
        mode = "firth" if "firth" in mods else ("no-firth" if "no-firth" in mods else "fallback")
        # describe, the males' describe (chrX/chrY), then per regression design (autosomes, chrX with
        # SEX, chrY's males: fedstat.stats.glm_sexchr) a linear round and each phenotype's logistic rounds
        groups = 3
        rounds += 2 + groups * (1 + len(expand_names(spec.pheno_names)) * glm_logistic.max_rounds(mode))
    return RoundCaps(rounds=rounds + MAX_ATTEMPTS_PER_ROUND - 1)


class RoundTally:
    """The rounds and attempts of one job a site has keyed or computed, held to the job's caps."""

    def __init__(self, caps: RoundCaps):
        self.caps = caps
        self.attempts: dict[int, set[int]] = {}

    def admit(self, round_no: int, attempt: int) -> None:
        """Count (round, attempt), once however often it is asked for.

        Raises
        ------
        ProtocolError
            a round beyond the job's :attr:`RoundCaps.rounds`, or an attempt beyond
            :attr:`RoundCaps.attempts` of one round (a coordinator asking for more releases than
            the signed spec needs)
        """
        tried = self.attempts.get(round_no, set())
        if attempt in tried:
            return
        if not tried and len(self.attempts) >= self.caps.rounds:
            raise ProtocolError(
                f"round {round_no}: the job the analyst signed needs at most {self.caps.rounds} rounds and this "
                "site has computed them all; refusing more (each round is a release)"
            )
        if len(tried) >= self.caps.attempts:
            raise ProtocolError(
                f"round {round_no}, attempt {attempt}: this site has computed {len(tried)} attempts of the round, "
                f"the most it runs ({self.caps.attempts}); refusing more (each attempt is a release)"
            )
        self.attempts.setdefault(round_no, set()).add(attempt)


class RoundTallies:
    """A site's :class:`RoundTally` of each job, by job id: a job's count outlives its re-offers (after
    a reconnect or a coordinator restart) for as long as the agent runs; the ``keep`` most recent
    jobs are held."""

    def __init__(self, keep: int = 1000):
        self.keep = keep
        self._by_job: dict[str, RoundTally] = {}

    def admit(self, job_id: str, spec: JobSpec, round_no: int, attempt: int) -> None:
        """:meth:`RoundTally.admit` for job ``job_id`` (its caps from its ``spec``)."""
        tally = self._by_job.get(job_id)
        if tally is None:
            while len(self._by_job) >= self.keep:
                self._by_job.pop(next(iter(self._by_job)))  # the oldest job's tally goes first
            tally = self._by_job[job_id] = RoundTally(round_caps(spec))
        tally.admit(round_no, attempt)


@dataclass(frozen=True)
class InputLimit:
    """The largest array of one name a coordinator may send in a round of a job.

    Attributes
    ----------
    rows : most rows (the harmonized variants: every coordinator array is per variant)
    width : most columns of a (variants × columns) array; 0 for a one-dimensional one
    """

    rows: int
    width: int = 0

    def check(self, name: str, shape: tuple[int, ...], total: int) -> None:
        """ProtocolError unless an array of ``shape`` (empty = one-dimensional) and ``total``
        elements fits."""
        shape = shape or (total,)
        fits = (len(shape) == 1 and self.width == 0) or (len(shape) == 2 and 1 <= shape[1] <= self.width)
        if not fits or shape[0] > self.rows or math.prod(shape) != total:
            form = f"at most {self.rows} × {self.width}" if self.width else f"at most {self.rows} long, one-dimensional"
            raise ProtocolError(
                f"round array {name} declares shape {shown(shape)} of {total} elements; the job the analyst signed "
                f"needs it {form} (variants × per-variant width); refused before allocating anything"
            )


def round_input_limits(spec: JobSpec, n_variants: int, *, categorical: int = 0) -> dict[str, InputLimit]:
    """The arrays a coordinator may send in a round of ``spec`` over ``n_variants`` harmonized
    variants, each with its largest shape: variants × the per-variant width the signed spec allows
    (the round's variant subset; --pca's frequencies, basis and weights; --glm's Newton
    coefficients and Firth flags). A site refuses any other array, or a larger one, before it
    allocates anything. ``categorical``: how many of the job's covariates are categorical at the
    site; each enters as up to :data:`~fedstat.data.categories.MAX_LEVELS` indicator columns."""
    limits = {"variants": InputLimit(n_variants)}
    k = pca_components(spec)
    if k:
        limits |= {"freq": InputLimit(n_variants), "v": InputLimit(n_variants, pca.basis_width(k))}
        limits["w"] = InputLimit(n_variants, k)
    if "glm" in spec.analyses:
        # x = [1, g, covariates], and on chrX plink2's SEX (fedstat.stats.glm_sexchr)
        n_pred = 3 + len(expand_names(spec.covar_names)) + categorical * (MAX_LEVELS - 1)
        limits |= {"coef": InputLimit(n_variants, n_pred), "firth": InputLimit(n_variants)}
    return limits


def check_round_inputs(arrays: Mapping[str, np.ndarray], n_variants: int) -> None:
    """ProtocolError unless every coordinator array of a round (its variant subset taken out) has
    one row per variant of the round."""
    for name, arr in arrays.items():
        if np.ndim(arr) == 0 or np.shape(arr)[0] != n_variants:
            raise ProtocolError(
                f"round array {shown(name)} has shape {np.shape(arr)}, not one row for each of the round's "
                f"{n_variants} variants"
            )


def round_arrays(plan: RoundPlan, n_variants: int) -> dict[str, PlannedArray]:
    """Every array each site may send in a round of ``plan`` over ``n_variants`` variants, with its
    whole shape and kind: the local computation's own declaration (``sum_arrays``), read from the
    plan's parameters and arrays alone. The coordinator checks each chunk against it before it
    allocates anything.

    Raises
    ------
    ProtocolError
        the plan names a computation this version does not have
    """
    entry = COMPUTATIONS.get(plan.computation)
    declared = declared_arrays(entry.kernel, plan.params, plan.arrays) if entry is not None else None
    if declared is None:
        raise ProtocolError(f"round computation {plan.computation!r} declares no arrays; it cannot be run")
    return {name: PlannedArray(a.full_shape(n_variants), a.integer) for name, a in declared.items()}
