"""The release gate: the one place at a site where a round's sums are cleared to leave.

Before a round is computed, :meth:`ReleaseGate.clear` checks who takes part and whether the release
may be made at all, then records it:

1. the round's participants (after consent, missing values and ``--mind``) number at least the
   policy's ``min_cohort``; a site with nobody left takes no part rather than send zeros;
2. the site's release ledger (:mod:`site_agent.release_ledger`) allows the round's participant
   groups together with every earlier release of the dataset (``min_group``), and its site set
   (``allow_site_differencing``);
3. the release goes into the ledger and the audit log (``event: release``).

Messages name no count of participants. The privacy mode then protects the sums (under ``dp``
its protector adds noise by each array's declared sensitivity, :mod:`fedstat.privacy.dpmode`).

Counts of participants that leave the site (the cohort at the offer, consent exclusions, the
cohort after a round such as ``--mind``, a refusal's reason) pass :func:`reported_count`: rounded
down to a multiple of the policy's ``count_granularity`` under exact modes, withheld under ``dp``
(see docs/privacy.md, "Counts that reach job logs"). A resumed job compares the keyed
:meth:`ReleaseGate.cohort_fingerprint` instead of counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedstat.config import SitePolicy
from fedstat.counts import WITHHELD, coarsen, describe_count
from fedstat.data.dataset import Dataset
from fedstat.errors import PolicyRefused

from .audit_log import AuditLog
from .release_ledger import ReleaseLedger


def reported_count(policy: SitePolicy, n: int, *, noisy: bool) -> tuple[int, int]:
    """The one way a participant count leaves the site: ``(count, granularity)`` as reported.

    Under exact modes the count is rounded down to a multiple of ``policy.granularity`` (below it:
    0, read "fewer than g"); under differential privacy (``noisy``) it is withheld, ``(0, 0)``:
    a dp job's results carry their own noisy counts, and an exact or separately noised count would
    need budget of its own for no result.
    """
    granularity = WITHHELD if noisy else policy.granularity
    return coarsen(int(n), granularity), granularity


def count_words(policy: SitePolicy, n: int, *, noisy: bool = False, noun: str = "participants") -> str:
    """A count as a site may state it in a message (e.g. a refusal's reason): coarsened or withheld."""
    return describe_count(*reported_count(policy, n, noisy=noisy), noun)


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

    @staticmethod
    def outgoing(
        policy: SitePolicy, count_arrays: Sequence[str], name: str, values: np.ndarray, *, noisy: bool
    ) -> np.ndarray:
        """A round's array as it leaves: an array its computation declares a participant count
        (``count_arrays``: its :mod:`fedstat.computations` entry's) is coarsened as
        :func:`reported_count`; under dp the mode's protector noises what is declared and refuses the rest."""
        if noisy or name not in count_arrays:
            return values
        return np.array([reported_count(policy, int(v), noisy=False)[0] for v in values], dtype=np.int64)

    def cohort_fingerprint(self, dataset: Dataset, policy: SitePolicy, job_id: str, members: np.ndarray) -> str:
        """A keyed fingerprint of the job's cohort (``members``: genotype columns): equal across a
        coordinator restart exactly when the cohort is; it says nothing about its size or members to
        anyone without the site's secret, and differs between jobs for the same cohort."""
        keys = self.participant_keys(dataset, policy)[np.asarray(members, dtype=np.int64)]
        return self.ledger(policy).fingerprint(job_id, keys)

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
