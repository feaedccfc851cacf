"""A site's decision on a job offer: allowed analysis, privacy mode, columns, cohort size.

Returns the cohort (which genotyped samples take part) or raises
:class:`~fedstat.errors.PolicyRefused` / :class:`~fedstat.errors.InputError` with the reason
the analyst will see. Reasons name settings and column names, never participants.
"""

from __future__ import annotations

import numpy as np

from fedstat.config import SitePolicy
from fedstat.data.dataset import Dataset
from fedstat.errors import InputError, PolicyRefused
from fedstat.jobs import JobSpec


def decide(spec: JobSpec, policy: SitePolicy, dataset: Dataset) -> np.ndarray:
    """The sorted genotype columns of the participants in the job's cohort.

    Raises
    ------
    PolicyRefused
        analysis or privacy mode not allowed here, or the cohort is smaller than ``min_cohort``
    InputError
        a phenotype or covariate the job names is not a column of this site's sample table
    """
    refused = [a for a in spec.analyses if a not in policy.allowed_analyses]
    if refused:
        raise PolicyRefused(
            f"analysis {', '.join('--' + a for a in refused)} is not allowed by this site's policy "
            f"(allowed: {', '.join(policy.allowed_analyses)})"
        )
    if spec.privacy not in policy.allowed_privacy:
        raise PolicyRefused(
            f"privacy mode {spec.privacy!r} is not accepted here (accepted: {', '.join(policy.allowed_privacy)})"
        )
    columns = set(dataset.samples.numeric)  # text columns (consent) are never phenotypes
    for kind, names in (("phenotype", spec.pheno_names), ("covariate", spec.covar_names)):
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise InputError(
                f"unknown {kind} {', '.join(repr(n) for n in unknown)} in {dataset.samples.path.name} of dataset "
                f"{dataset.name}; its columns are: {', '.join(sorted(columns)) or '(none)'}"
            )
    cohort = np.sort(dataset.genotype_index)
    if len(cohort) < policy.min_cohort:
        raise PolicyRefused(f"cohort of {len(cohort)} is below this site's minimum of {policy.min_cohort} participants")
    return cohort
