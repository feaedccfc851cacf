"""Job specs and the analyses' round structure, with no network in sight.

A job is a list of plink2-style analyses. Each analysis is a sequence of rounds: the
coordinator names a *local computation* and its parameters, every site runs it over its
harmonized variant blocks and returns named sum arrays, and the coordinator's analysis turns
the global sums into the next round or the final results.

- :mod:`fedstat.jobs.spec`: :class:`JobSpec`, its validation and the bytes an analyst signs;
- :mod:`fedstat.jobs.options`: what the spec's options and column names mean;
- :mod:`fedstat.jobs.selection`: the variant selection flags (``--chr``, ``--extract``, ...);
- :mod:`fedstat.jobs.checks`: a site's check that a round belongs to the signed spec;
- :mod:`fedstat.jobs.steps` and :mod:`fedstat.jobs.planner`: the coordinator's steps and
  :func:`plan_job`, which chains them.

The site side of every computation, with what it declares, is in :mod:`fedstat.computations`.
"""

from fedstat.jobs.checks import check_round, check_round_variants
from fedstat.jobs.options import (
    DP_ANALYSES,
    GLM_MODIFIERS,
    HWE_MODIFIERS,
    KNOWN_ANALYSES,
    KNOWN_OPTIONS,
    MAX_BLOCK_SIZE,
    MAX_COVARS,
    MAX_PHENOS,
    MAX_SITES,
    QC_OPTIONS,
    checks_pooled_coding,
    derived_columns,
    dosage_refusal,
    expand_names,
    fitted_parameters,
    pca_components,
    qc_filters,
    reads_dosages,
    required_phenotypes,
    seeded_randomness,
)
from fedstat.jobs.planner import plan_job
from fedstat.jobs.selection import VariantSelection, variant_selection
from fedstat.jobs.spec import SPEC_SIGNATURE_LABEL, JobSpec
from fedstat.stats.base import RoundPlan

__all__ = [
    "DP_ANALYSES",
    "GLM_MODIFIERS",
    "HWE_MODIFIERS",
    "KNOWN_ANALYSES",
    "KNOWN_OPTIONS",
    "MAX_BLOCK_SIZE",
    "MAX_COVARS",
    "MAX_PHENOS",
    "MAX_SITES",
    "QC_OPTIONS",
    "SPEC_SIGNATURE_LABEL",
    "JobSpec",
    "RoundPlan",
    "VariantSelection",
    "check_round",
    "check_round_variants",
    "checks_pooled_coding",
    "derived_columns",
    "dosage_refusal",
    "reads_dosages",
    "expand_names",
    "fitted_parameters",
    "pca_components",
    "plan_job",
    "qc_filters",
    "required_phenotypes",
    "seeded_randomness",
    "variant_selection",
]
