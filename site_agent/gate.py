"""The release gate: the one place at a site where a round's sums are cleared to leave.

Before a round is computed, :meth:`ReleaseGate.clear` checks who takes part and whether the release
may be made at all, then records it:

1. the round's participants (after consent, missing values and ``--mind``) number at least the
   policy's ``min_cohort``; a site with nobody left takes no part rather than send zeros;
2. the site's release ledger (:mod:`site_agent.release_ledger`) allows the round's participant
   groups together with every earlier release of the dataset (``min_group``), and its site set
   (``allow_site_differencing``);
3. the release goes into the ledger and the audit log (``event: release``).

Messages name no count of participants. The privacy mode then protects the sums (noise under
``dp`` is drawn in the agent's round, after the gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedstat.config import SitePolicy
from fedstat.data.dataset import Dataset
from fedstat.errors import PolicyRefused

from .audit import AuditLog
from .release_ledger import ReleaseLedger


class ReleaseGate:
    """A site's release gate over its ledger in ``state_dir/releases.sqlite``."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "releases.sqlite"
        self._ledger: ReleaseLedger | None = None
        self._keys: dict[str, np.ndarray] = {}

    def ledger(self, policy: SitePolicy) -> ReleaseLedger:
        """The release ledger under ``policy``'s ``min_group`` and site rule (opened on first use)."""
        current = self._ledger
        if (
            current is None
            or current.min_group != policy.min_group
            or current.allow_site_differencing != policy.allow_site_differencing
        ):
            current = self._ledger = ReleaseLedger(
                self.path, min_group=policy.min_group, allow_site_differencing=policy.allow_site_differencing
            )
        return current

    def participant_keys(self, dataset: Dataset, policy: SitePolicy) -> np.ndarray:
        """Keyed hashes of the dataset's participants, in genotype-file order (computed once)."""
        keys = self._keys.get(dataset.name)
        if keys is None:
            ids = dataset.genotypes.samples
            names = ids.iid if ids.fid is None else [f"{f}\t{i}" for f, i in zip(ids.fid, ids.iid, strict=True)]
            keys = self._keys[dataset.name] = self.ledger(policy).participant_keys(names)
        return keys

    def clear(
        self,
        policy: SitePolicy,
        dataset: Dataset,
        members: np.ndarray,
        groups: Mapping[str, np.ndarray],
        *,
        audit: AuditLog,
        job_id: str,
        analyst: str,
        round_no: int,
        computation: str,
        params: Mapping[str, str],
        sites: Sequence[str],
    ) -> None:
        """Clear one round's release, or refuse it (PolicyRefused, DifferencingRefused).

        Parameters
        ----------
        members : [array, shape: (cohort.n,), dtype int64] the genotype columns of the job's cohort
        groups : name -> [array, shape: (cohort.n,), dtype bool], the participant groups the round's
            sums run over (:func:`fedstat.stats.base.release_groups`); empty for a round that
            releases no sum over participants' data (e.g. ``--mind``'s count)
        """
        checked = np.logical_or.reduce(list(groups.values())) if groups else np.ones(len(members), dtype=bool)
        n = int(np.count_nonzero(checked))
        if n == 0:
            raise PolicyRefused(
                f"{computation}: no participant of this site is left for this round (after consent, missing "
                "phenotype/covariate values and --mind); a site with nobody left takes no part rather than "
                "send zeros"
            )
        if n < policy.min_cohort:
            raise PolicyRefused(
                f"{computation}: fewer participants than this site's minimum of {policy.min_cohort} (policy "
                "min_cohort) are left for this round after consent, missing phenotype/covariate values and --mind"
            )
        full = {}
        for name, mask in groups.items():  # each group over the dataset's genotype columns
            m = np.zeros(dataset.genotypes.n_samples, dtype=bool)
            m[members[mask]] = True
            full[name] = m
        fingerprints: tuple[str, ...] = ()
        if full:
            fingerprints = (
                self.ledger(policy)
                .release(
                    dataset.name,
                    self.participant_keys(dataset, policy),
                    full,
                    computation=computation,
                    params=params,
                    sites=sites,
                )
                .fingerprints
            )
        audit.append(
            event="release",
            job_id=job_id,
            analyst=analyst,
            dataset=dataset.name,
            round=round_no,
            computation=computation,
            groups=list(fingerprints) or None,
            sites=sorted(set(sites)),
            cohort_size=n,
        )
