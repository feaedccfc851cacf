"""Whether one participant's consent covers a job's purpose, and if not, why.

Matching rules
--------------
The first rule that fails gives the participant's exclusion reason (:class:`Exclusion`).

1. ``WITHDRAWN`` matches nothing: first a cell that says so (``WITHDRAWN``), then a
   participant the withdrawal registry holds whatever the cell now says
   (``WITHDRAWN_EARLIER``; applied over a column by :mod:`fedstat.consent.selection`).
2. Permission × research area (``✓`` = included)::

       purpose \\ consent   NRES  GRU  HMB  DS:X              POA
       GRU                  ✓     ✓    ·    ·                 ·
       HMB                  ✓     ✓    ✓    ·                 ·
       DS:Y                 ✓     ✓    ✓    ✓ if X ⊒ Y (*)    ·
       POA                  ✓     ✓    ·    ·                 ✓

   (*) X is Y or an ancestor of Y in the disease ontology (a consent for diabetes mellitus
   covers a type 2 diabetes study, not the reverse); with several consented diseases, any one
   suffices. Without an ontology only ``X == Y`` counts. A mismatch here is ``PERMISSION``,
   or ``DISEASE`` when both sides are DS.
3. ``COMMERCIAL`` purpose: refused by NPU or NCU (``COMMERCIAL``).
4. ``MDS`` purpose: refused by NMDS unless the consent is DS and its disease matched in
   rule 2 (``METHODS``).
5. ``POA`` purpose: refused by NPOA (``ANCESTRY``).
6. Modifiers that need a human process, :data:`~fedstat.consent.duo.REVIEW_MODIFIERS` (IRB, COL, PUB, GSO, RS, GS,
   MOR, TS, US, PS, IS, RTN): no machine can check ethics approval, a collaboration agreement
   or a research-type restriction, so they *exclude* (``REVIEW``) unless the site lists them
   in ``cleared`` for the job, i.e. the site's data access committee has dealt with them
   (a site whose jobs always analyse genotypes may clear GSO). This follows DUOS, which
   abstains from automatic decisions on these codes. Included participants carrying a cleared
   modifier are counted in :attr:`~fedstat.consent.selection.ConsentSummary.n_cleared`.
7. CC (clinical care use) widens use and never excludes.

References
----------
Broad Institute DUOS matching algorithm, versions 2 and 3,
https://github.com/DataBiosphere/consent-ontology/blob/develop/docs/Algorithms.md
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from fedstat.consent.duo import MODIFIER_NAMES, REVIEW_MODIFIERS, ConsentCode, Modifier, Permission, normalise, quoted
from fedstat.consent.ontology import DiseaseOntology
from fedstat.consent.purposes import Purpose
from fedstat.errors import InputError


class Exclusion(enum.Enum):
    """Why a participant is left out of a job (the first failing rule, in this order)."""

    WITHDRAWN = "withdrawn"  # the consent cell (or the default it took) says WITHDRAWN
    WITHDRAWN_EARLIER = "withdrawn_earlier"  # the withdrawal registry holds them; the cell says otherwise
    PERMISSION = "permission"  # the permission does not cover the research area
    DISEASE = "disease"  # DS consent for a disease that does not cover the purpose's disease
    COMMERCIAL = "commercial"  # commercial purpose, NPU or NCU consent
    METHODS = "methods"  # methods development, NMDS consent without a disease match
    ANCESTRY = "ancestry"  # population / ancestry purpose, NPOA consent
    REVIEW = "review"  # a human-process modifier the site has not cleared


def _disease_covered(consented: Iterable[str], studied: str, ontology: DiseaseOntology | None) -> bool:
    if ontology is None:
        return studied in consented
    return any(ontology.is_ancestor_or_self(d, studied) for d in consented)


def clearable(modifiers: Iterable[Modifier | str]) -> frozenset[Modifier]:
    """Modifiers a site clears for a job, validated: each must be in :data:`REVIEW_MODIFIERS`.

    Raises
    ------
    InputError
        Naming a value that is not a modifier, or one that is decided automatically (NPU, NCU,
        NMDS, NPOA) or never excludes (CC).
    """
    out: set[Modifier] = set()
    for value in modifiers:
        modifier = value if isinstance(value, Modifier) else MODIFIER_NAMES.get(normalise(str(value).strip()))
        if modifier is None:
            raise InputError(f"cannot clear {quoted(str(value))}: not a DUO modifier")
        if modifier not in REVIEW_MODIFIERS:
            allowed = ", ".join(sorted(m.value for m in REVIEW_MODIFIERS))
            raise InputError(f"cannot clear {modifier.value}: it is decided automatically; clearable: {allowed}")
        out.add(modifier)
    return frozenset(out)


def exclusion_reason(
    code: ConsentCode,
    purpose: Purpose,
    *,
    ontology: DiseaseOntology | None = None,
    cleared: frozenset[Modifier] = frozenset(),
) -> Exclusion | None:
    """Why ``code`` does not cover ``purpose``, or ``None`` when it does (rules in the module docstring).

    Parameters
    ----------
    code : a participant's consent
    purpose : the job's purpose
    ontology : disease hierarchy for DS matching; without it only equal terms match
    cleared : review modifiers the site has cleared for this job (see :func:`clearable`)

    Returns
    -------
    Exclusion or None
    """
    if code.withdrawn:
        return Exclusion.WITHDRAWN
    permission = code.permission
    if permission is Permission.NRES:
        return None
    if permission is Permission.DS:
        if purpose.area is not Permission.DS:
            return Exclusion.PERMISSION
        assert purpose.disease is not None
        if not _disease_covered(code.diseases, purpose.disease, ontology):
            return Exclusion.DISEASE
    elif permission is Permission.HMB:
        if purpose.area not in (Permission.HMB, Permission.DS):
            return Exclusion.PERMISSION
    elif permission is Permission.POA:
        if purpose.area is not Permission.POA:
            return Exclusion.PERMISSION
    mods = code.modifiers
    if purpose.commercial and (Modifier.NPU in mods or Modifier.NCU in mods):
        return Exclusion.COMMERCIAL
    # A DS consent reaching this point has had its disease matched (rule 2).
    if purpose.methods and Modifier.NMDS in mods and permission is not Permission.DS:
        return Exclusion.METHODS
    if purpose.area is Permission.POA and Modifier.NPOA in mods:
        return Exclusion.ANCESTRY
    if (mods & REVIEW_MODIFIERS) - cleared:
        return Exclusion.REVIEW
    return None


def consent_matches(
    code: ConsentCode,
    purpose: Purpose,
    *,
    ontology: DiseaseOntology | None = None,
    cleared: frozenset[Modifier] = frozenset(),
) -> bool:
    """Whether ``code`` covers ``purpose``; see :func:`exclusion_reason`."""
    return exclusion_reason(code, purpose, ontology=ontology, cleared=cleared) is None
