"""The contract between an analysis and the rest of fedstat.

An analysis has two halves that never see the network or a privacy mode:

- **site side**, a :class:`LocalComputation`: given the site's cohort (the job's phenotype and
  covariate columns) and a round's input, it returns named arrays of *sums over the site's
  participants*: per-variant sums from :meth:`~LocalComputation.block_sums`, called once per
  block of genotypes, and cohort-level sums (not per variant) from
  :meth:`~LocalComputation.cohort_sums`, called once per round.
- **coordinator side**, a :class:`JobAnalysis`: from the global (summed over sites) arrays of
  one round it proposes the next :class:`RoundPlan` or finishes and writes result files.

A round may carry *global* arrays from the coordinator to the sites (e.g. per-variant
coefficients of a Newton step) and may cover a subset of the harmonized variants (e.g. the
variants whose logistic fit has not converged yet). Nothing per-participant ever crosses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fedstat.data.variants import VariantTable


@dataclass(frozen=True)
class Cohort:
    """A site's participants in one job, in the column order of the genotype blocks.

    Attributes
    ----------
    n : number of participants (genotype block columns)
    columns : sample-table column name -> [array, shape: (n,), dtype float64], NaN where
        missing, values as written in samples.tsv (binary traits keep their 1/2 coding, and
        0 / -9 are already NaN only where samples.tsv said NA / -9). Holds the job's phenotype
        and covariate columns.
    binary : column name -> whether samples.tsv codes it as a case/control trait (1/2, 0 missing)
    """

    n: int
    columns: Mapping[str, np.ndarray]
    binary: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundInput:
    """What a site gets for one round besides its genotypes.

    Attributes
    ----------
    params : string parameters of the round (from :attr:`RoundPlan.params`)
    arrays : global arrays sent by the coordinator (full shapes, e.g. ``beta``:
        (n_round_variants, n_params)); empty for most rounds
    variants : [array, shape: (n_round_variants,), dtype int64] indices into the harmonized
        variant list of the variants this round covers, increasing
    """

    params: Mapping[str, str]
    arrays: Mapping[str, np.ndarray]
    variants: np.ndarray


class LocalComputation(Protocol):
    """Site side of an analysis round. Must be vectorised: no Python loop per sample or variant."""

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """Sums over the site's participants that are not per variant (any shape); may be empty."""
        ...

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        """Per-variant sums for one block.

        Parameters
        ----------
        block : [array, shape: (b, cohort.n), dtype int8] ALT allele counts 0/1/2, -9 missing,
            already in the harmonized orientation
        rows : positions of the block's variants within ``inp.variants`` (use it to slice
            per-variant ``inp.arrays``)

        Returns
        -------
        name -> array whose first axis has length b (float64 or int64)
        """
        ...


@dataclass(frozen=True)
class RoundPlan:
    """One round: which local computation the sites run, on which variants, with which inputs.

    Attributes
    ----------
    computation : key in :data:`fedstat.jobs.LOCAL_COMPUTATIONS`
    params : string parameters
    arrays : global arrays sent to every site (coefficients, inverses; never participant data)
    variants : harmonized-variant indices the round covers; None = all
    """

    computation: str
    params: Mapping[str, str] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    variants: np.ndarray | None = None


class JobAnalysis(Protocol):
    """Coordinator side of an analysis: a state machine over rounds."""

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        """Given the previous round's global sums (None at the start), the next round or None when done.

        ``sums`` holds every array the sites returned, summed over sites, in full shape:
        per-variant arrays have first axis ``len(plan.variants)`` (or all variants).
        """
        ...

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        """Write result files (atomically); returns their paths."""
        ...

    def log_lines(self) -> list[str]:
        """Aggregate facts for the job log (e.g. 'BATCH excluded: constant'); may be empty."""
        ...
