"""One job as this site runs it: the participants' phenotype and covariate columns
(:func:`build_cohort`) and the state its worker carries from message to message (:class:`Job`).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedstat.data.dataset import Dataset
from fedstat.data.variants import SitePlan
from fedstat.jobs import JobSpec, derived_columns
from fedstat.privacy.secagg import RoundKeyPair, SignedRoundKey
from fedstat.protocol import PlanAssembler, RoundDataAssembler
from fedstat.stats.base import Cohort
from fedstat.wire import site_pb2

from .harmonize import SiteHarmonizer
from .policy import categorical_covariates


@dataclass
class Job:
    """A job offer this site accepted, until it ends (:meth:`end`) and frees what it holds (:meth:`release`)."""

    job_id: str
    spec: JobSpec
    dataset: Dataset
    members: np.ndarray  # genotype columns of the participants taking part, sorted
    cohort: Cohort  # their phenotype/covariate columns, in the same order
    inbox: queue.Queue[site_pb2.CoordinatorMessage | None] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    plan: SitePlan | None = None
    plan_parts: PlanAssembler = field(default_factory=PlanAssembler)
    round_data: dict[tuple[int, int], RoundDataAssembler] = field(default_factory=dict)
    round_keys: dict[tuple[int, int], tuple[RoundKeyPair, SignedRoundKey, str]] = field(default_factory=dict)
    keyed: set[tuple[int, int]] = field(default_factory=set)  # (round, attempt) this site made a key for
    encryptor: Any = None  # --privacy paillier: a PaillierEncryptor for the analyst's key, made at round 1
    analyst: str = ""
    harmonizer: SiteHarmonizer | None = None  # private harmonization (fedstat.privacy.psi)

    def end(self) -> None:
        """Stop the job's worker at its next step; it then frees what it holds."""
        self.cancelled.set()
        self.inbox.put(None)

    def release(self) -> None:
        if self.encryptor is not None:
            self.encryptor.close()
            self.encryptor = None


def build_cohort(
    spec: JobSpec, dataset: Dataset, members: np.ndarray, zero_dropped: dict[str, int] | None = None
) -> Cohort:
    """The job's phenotype and covariate columns, and the sexes, for ``members`` (sorted genotype columns)."""
    row_of_column = np.empty(dataset.genotypes.n_samples, dtype=np.int64)
    row_of_column[dataset.genotype_index] = np.arange(len(dataset.genotype_index))
    rows = row_of_column[members]
    derived = derived_columns(spec)  # e.g. PC1… of the job's own --pca: computed in a later round
    categorical = categorical_covariates(spec, dataset)
    names = dict.fromkeys(n for n in (*spec.pheno_names, *spec.covar_names) if n not in derived)
    columns = {n: np.asarray(dataset.samples.column(n), dtype=np.float64)[rows] for n in names if n not in categorical}
    categories = {n: cats[rows] for n, cats in categorical.items()}
    return Cohort(
        n=len(members), columns=columns, zero_dropped=zero_dropped or {}, categories=categories, sex=dataset.sex[rows]
    )


def covariate_levels_pb(levels: dict[str, tuple[str, ...]]) -> list[site_pb2.CovariateLevels]:
    """The categories of the job's categorical covariates, as the decision reports them (names only)."""
    return [site_pb2.CovariateLevels(covariate=k, levels=v) for k, v in levels.items()]
