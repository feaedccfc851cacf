"""Job specs and the analyses' round structure, with no network in sight.

A job is a list of plink2-style analyses. Each analysis is a sequence of rounds: the
coordinator names a *local computation* and its parameters, every site runs it over its
harmonized variant blocks and returns named sum arrays, and the coordinator's analysis turns
the global sums into the next round or the final result files.

This module holds the registry on both sides:

- :data:`LOCAL_COMPUTATIONS` (site side): name → function(block) → {name: sums per variant}
- :func:`plan_job` (coordinator side): spec → :class:`JobAnalysis` that proposes rounds and
  writes results.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.stats import allele

#: Analyses this version runs, as plink2 flag names without dashes.
KNOWN_ANALYSES = allele.ANALYSES
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


@dataclass(frozen=True)
class JobSpec:
    """An analyst's request. Mirrors ``fedstat.v1.JobSpec``.

    Attributes
    ----------
    analyses : plink2 flags without dashes, e.g. ``("freq", "hardy")``
    pheno_names, covar_names : sample-table columns the analyses use (checked at every site)
    privacy : privacy mode name
    purpose : purpose of use (DUO code), empty when unspecified
    sites : sites to run on; empty = every connected site
    out_name : result file prefix (a plain name, no directories)
    block_size : variants per block at the sites; 0 = each site's default
    dataset : dataset name at each site; empty = each site's default
    options : analysis modifiers for later analyses
    """

    analyses: tuple[str, ...]
    pheno_names: tuple[str, ...] = ()
    covar_names: tuple[str, ...] = ()
    privacy: str = "none"
    purpose: str = ""
    sites: tuple[str, ...] = ()
    out_name: str = "fedstat"
    block_size: int = 0
    dataset: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def validated(self) -> JobSpec:
        """Return the spec with analyses in canonical order; InputError naming what is wrong."""
        from fedstat.privacy.base import get_mode  # noqa: PLC0415 - avoids an import cycle

        if not self.analyses:
            raise InputError(
                "no analysis requested: give at least one of " + ", ".join(f"--{a}" for a in KNOWN_ANALYSES)
            )
        unknown = [a for a in self.analyses if a not in KNOWN_ANALYSES]
        if unknown:
            raise InputError(f"unknown analysis {', '.join(unknown)}; this version runs: {', '.join(KNOWN_ANALYSES)}")
        get_mode(self.privacy)
        if not _NAME_RE.match(self.out_name):
            raise InputError(f"output name {self.out_name!r} must be a plain file name prefix (letters, digits, _ . -)")
        for col in (*self.pheno_names, *self.covar_names):
            if not _NAME_RE.match(col):
                raise InputError(f"invalid column name {col!r}")
        if len(set(self.sites)) != len(self.sites):
            raise InputError("a site is listed twice in --sites")
        if self.block_size < 0:
            raise InputError("block size must be positive")
        ordered = tuple(a for a in KNOWN_ANALYSES if a in self.analyses)
        return replace(self, analyses=ordered)

    def to_json(self) -> dict[str, Any]:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobSpec:
        tuples = {"analyses", "pheno_names", "covar_names", "sites"}
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items() if k in cls.__dataclass_fields__})


# --- site side -----------------------------------------------------------------------------

#: Local computations a site can run: name -> function(block) -> {sum name: per-variant sums}.
#: ``block`` is int8 ``(n_variants_in_block, n_cohort)``: ALT counts 0/1/2, -9 missing.
LOCAL_COMPUTATIONS: Mapping[str, Callable[[np.ndarray], dict[str, np.ndarray]]] = {
    "allele_counts": allele.local_sums,
}


# --- coordinator side ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundPlan:
    """One round: which local computation the sites run, with which parameters."""

    computation: str
    params: Mapping[str, str] = field(default_factory=dict)


class JobAnalysis(Protocol):
    """Coordinator-side state machine of a job's analyses."""

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        """Given the previous round's global sums (None at the start), the next round or None."""

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        """Write the result files; returns their paths."""


class AlleleAnalysis:
    """``--freq --geno-counts --hardy --missing``: one round of genotype counts."""

    def __init__(self, analyses: tuple[str, ...]):
        self.analyses = analyses
        self.stats: allele.AlleleStats | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            return RoundPlan("allele_counts")
        self.stats = allele.finish(sums)
        return None

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        assert self.stats is not None, "write() before the counts round finished"
        return [Path(p) for p in allele.write_reports(out_prefix, variants, self.stats, self.analyses)]


def plan_job(spec: JobSpec) -> JobAnalysis:
    """The coordinator-side analysis for a validated spec."""
    return AlleleAnalysis(spec.analyses)
