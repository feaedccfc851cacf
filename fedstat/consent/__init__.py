"""Consent matching: which participants a job may include, given the purpose it declares.

Each participant's ``consent`` cell in ``samples.tsv`` holds GA4GH Data Use Ontology (DUO)
codes; each job declares a *purpose*. This package parses both, decides per participant whether
the consent covers the purpose, and keeps a site-local registry of withdrawals so that a
participant once marked ``WITHDRAWN`` is never included again. It is pure (no network) and
reports counts only, never participant IDs.

One module per concept:

- :mod:`~fedstat.consent.duo`: the DUO permissions and modifiers and the consent cell grammar
  (:func:`parse_consent`);
- :mod:`~fedstat.consent.purposes`: a job's ``--purpose`` (:func:`parse_purpose`);
- :mod:`~fedstat.consent.ontology`: the disease hierarchy DS matching follows (:func:`load_obo`);
- :mod:`~fedstat.consent.matching`: the rules deciding whether one consent covers a purpose
  (:func:`exclusion_reason`);
- :mod:`~fedstat.consent.selection`: the site's consent step over a whole column
  (:func:`consent_mask`, :func:`select_participants`), with counts by reason;
- :mod:`~fedstat.consent.registry`: the withdrawal registry (SQLite, keyed hashes of IDs).
"""

from fedstat.consent.duo import REVIEW_MODIFIERS, WITHDRAWN, ConsentCode, Modifier, Permission, parse_consent
from fedstat.consent.matching import Exclusion, clearable, consent_matches, exclusion_reason
from fedstat.consent.ontology import DiseaseOntology, load_obo, normalise_term
from fedstat.consent.purposes import Purpose, parse_purpose
from fedstat.consent.registry import WithdrawalRegistry
from fedstat.consent.selection import ConsentSelection, ConsentSummary, consent_mask, select_participants

__all__ = [
    "REVIEW_MODIFIERS",
    "WITHDRAWN",
    "ConsentCode",
    "ConsentSelection",
    "ConsentSummary",
    "DiseaseOntology",
    "Exclusion",
    "Modifier",
    "Permission",
    "Purpose",
    "WithdrawalRegistry",
    "clearable",
    "consent_mask",
    "consent_matches",
    "exclusion_reason",
    "load_obo",
    "normalise_term",
    "parse_consent",
    "parse_purpose",
    "select_participants",
]
