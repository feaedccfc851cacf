"""Consent matching: which participants a job may include, given the purpose it declares.

Each participant's ``consent`` cell in ``samples.tsv`` holds GA4GH Data Use Ontology (DUO)
codes; each job declares a *purpose*. This module parses both, decides per participant whether
the consent covers the purpose, and keeps a site-local registry of withdrawals so that a
participant once marked ``WITHDRAWN`` is never included again. It is pure (no network) and
reports counts only, never participant IDs.

Consent cell grammar
--------------------
Tokens separated by ``;`` or ``,`` (or whitespace), case-insensitive; whitespace around
``:``, ``-``, ``=``, ``(`` and ``)`` is ignored. A cell holds exactly one *permission* and any
number of *modifiers*, each written as its DUO shorthand or its CURIE (``DUO:0000042`` or
``DUO_0000042``):

=========== ============ ==========================================================
Permission  CURIE        Meaning
=========== ============ ==========================================================
NRES        DUO:0000004  no restriction (takes no modifiers)
GRU         DUO:0000042  general research use
HMB         DUO:0000006  health / medical / biomedical research (not ancestry)
DS:<term>   DUO:0000007  disease-specific research; ``DS:MONDO:0005148``,
                         ``DS-MONDO:0005148``, ``DS(MONDO:0005148)``,
                         ``DUO:0000007:MONDO:0005148``; several ``DS`` tokens list
                         several diseases (any of them may be studied)
POA         DUO:0000011  population origins or ancestry research only
=========== ============ ==========================================================

Modifiers: NPU (DUO:0000045), NCU (DUO:0000046), NPUNCU (DUO:0000018, read as NPU + NCU),
NMDS (DUO:0000015), NPOA (DUO:0000044), GSO (DUO:0000016), IRB (DUO:0000021), COL
(DUO:0000020), PUB (DUO:0000019), RS (DUO:0000012), GS (DUO:0000022), MOR (DUO:0000024),
TS (DUO:0000025), US (DUO:0000026), PS (DUO:0000027), IS (DUO:0000028), RTN (DUO:0000029),
CC (DUO:0000043). RS, GS, MOR and TS may carry a parameter (``RS-PD``, ``GS:EU``,
``MOR-2026-01-01``); it is checked for form and then dropped. ``GRU-CC`` (the obsolete
DUO:0000005) reads as GRU + CC.

``WITHDRAWN`` (any case) means the participant withdrew consent. It wins over anything else in
the cell (``GRU;WITHDRAWN`` is withdrawn); the other tokens must still be known codes. An
empty cell takes the dataset default consent, which the caller supplies.

Purpose grammar (``--purpose``)
-------------------------------
Tokens separated by ``,`` or ``;`` (or whitespace), case-insensitive: exactly one research
area, ``GRU``, ``HMB``, ``POA`` or ``DS:<term>`` (the same spellings and CURIEs as consent,
one disease), plus optional flags ``MDS`` (alias ``METHODS``: the work develops methods,
software or algorithms) and ``COMMERCIAL`` (commercial purpose or a for-profit entity).
Examples: ``HMB``, ``DS:MONDO:0005148,MDS``, ``GRU,COMMERCIAL``. Without ``COMMERCIAL`` a
purpose is non-commercial. Methods development is declared together with the research area it
is done in (``HMB,MDS``).

Matching rules
--------------
The first rule that fails gives the participant's exclusion reason (:class:`Exclusion`).

1. ``WITHDRAWN`` matches nothing: first a cell that says so (``WITHDRAWN``), then a
   participant the withdrawal registry holds whatever the cell now says
   (``WITHDRAWN_EARLIER``).
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
6. Modifiers that need a human process, :data:`REVIEW_MODIFIERS` (IRB, COL, PUB, GSO, RS, GS,
   MOR, TS, US, PS, IS, RTN): no machine can check ethics approval, a collaboration agreement
   or a research-type restriction, so they *exclude* (``REVIEW``) unless the site lists them
   in ``cleared`` for the job, i.e. the site's data access committee has dealt with them
   (a site whose jobs always analyse genotypes may clear GSO). This follows DUOS, which
   abstains from automatic decisions on these codes. Included participants carrying a cleared
   modifier are counted in :attr:`ConsentSummary.n_cleared`.
7. CC (clinical care use) widens use and never excludes.

References
----------
GA4GH Data Use Ontology, https://github.com/EBISPOT/DUO (code list ``duo.csv``).
Broad Institute DUOS matching algorithm, versions 2 and 3,
https://github.com/DataBiosphere/consent-ontology/blob/develop/docs/Algorithms.md
Dyke et al. (2016), "Consent codes: upholding standard data use conditions",
PLoS Genet 12(1): e1005772.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fedstat.errors import InputError


class Permission(enum.Enum):
    """A DUO data use permission (the primary category of a consent)."""

    NRES = "NRES"
    GRU = "GRU"
    HMB = "HMB"
    DS = "DS"
    POA = "POA"

    @property
    def curie(self) -> str:
        return _PERMISSION_CURIES[self]


class Modifier(enum.Enum):
    """A DUO data use modifier (a secondary condition on a consent)."""

    NPU = "NPU"
    NCU = "NCU"
    NMDS = "NMDS"
    NPOA = "NPOA"
    GSO = "GSO"
    IRB = "IRB"
    COL = "COL"
    PUB = "PUB"
    RS = "RS"
    GS = "GS"
    MOR = "MOR"
    TS = "TS"
    US = "US"
    PS = "PS"
    IS = "IS"
    RTN = "RTN"
    CC = "CC"

    @property
    def curie(self) -> str:
        return _MODIFIER_CURIES[self]


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


_PERMISSION_CURIES: Mapping[Permission, str] = MappingProxyType(
    {
        Permission.NRES: "DUO:0000004",
        Permission.GRU: "DUO:0000042",
        Permission.HMB: "DUO:0000006",
        Permission.DS: "DUO:0000007",
        Permission.POA: "DUO:0000011",
    }
)
_MODIFIER_CURIES: Mapping[Modifier, str] = MappingProxyType(
    {
        Modifier.NPU: "DUO:0000045",
        Modifier.NCU: "DUO:0000046",
        Modifier.NMDS: "DUO:0000015",
        Modifier.NPOA: "DUO:0000044",
        Modifier.GSO: "DUO:0000016",
        Modifier.IRB: "DUO:0000021",
        Modifier.COL: "DUO:0000020",
        Modifier.PUB: "DUO:0000019",
        Modifier.RS: "DUO:0000012",
        Modifier.GS: "DUO:0000022",
        Modifier.MOR: "DUO:0000024",
        Modifier.TS: "DUO:0000025",
        Modifier.US: "DUO:0000026",
        Modifier.PS: "DUO:0000027",
        Modifier.IS: "DUO:0000028",
        Modifier.RTN: "DUO:0000029",
        Modifier.CC: "DUO:0000043",
    }
)

#: Modifiers that need a human process; they exclude unless the site clears them for a job.
REVIEW_MODIFIERS = frozenset(
    {
        Modifier.IRB,
        Modifier.COL,
        Modifier.PUB,
        Modifier.GSO,
        Modifier.RS,
        Modifier.GS,
        Modifier.MOR,
        Modifier.TS,
        Modifier.US,
        Modifier.PS,
        Modifier.IS,
        Modifier.RTN,
    }
)
#: Modifiers that may carry a parameter (``RS-PD``, ``GS:EU``); the parameter is dropped.
_PARAMETERISED = frozenset({Modifier.RS, Modifier.GS, Modifier.MOR, Modifier.TS})

_WITHDRAWN_TOKEN = "WITHDRAWN"
_GRU_CC = frozenset({"GRU-CC", "DUO:0000005"})
_NPUNCU = frozenset({"NPUNCU", "DUO:0000018"})
_PERMISSION_NAMES: Mapping[str, Permission] = MappingProxyType(
    {**{p.value: p for p in Permission}, **{p.curie: p for p in Permission}}
)
_MODIFIER_NAMES: Mapping[str, Modifier] = MappingProxyType(
    {**{m.value: m for m in Modifier}, **{m.curie: m for m in Modifier}}
)
_PURPOSE_FLAGS: Mapping[str, str] = MappingProxyType(
    {"MDS": "methods", "METHODS": "methods", "COMMERCIAL": "commercial"}
)

# Whitespace around these joins is not a separator: "DS : MONDO:0005148" is one token.
_JOINERS_RE = re.compile(r"\s*([:\-=()])\s*")
_SPLIT_RE = re.compile(r"[;,\s]+")
# KEY, then optionally ":arg", "-arg", "=arg" or "(arg)".
_TOKEN_RE = re.compile(r"^(?P<key>DUO:\d{7}|[A-Z]+)(?:[:\-=](?P<arg>.+)|\((?P<parg>[^()]*)\))?$")
_TERM_RE = re.compile(r"^[A-Z][A-Z0-9_]*:[A-Z0-9_.]+$")
_PARAM_RE = re.compile(r"^[A-Z0-9_.:\-]+$")
_MAX_SHOWN = 40  # longest piece of cell text quoted in an error message


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut to :data:`_MAX_SHOWN` characters."""
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…")


def _tokens(text: str) -> list[str]:
    """Split a consent or purpose string into non-empty raw tokens (original case)."""
    return [t for t in _SPLIT_RE.split(_JOINERS_RE.sub(r"\1", text.strip())) if t]


def _normalise(token: str) -> str:
    upper = token.upper()
    return "DUO:" + upper[4:] if upper.startswith("DUO_") else upper


def _disease_term(raw: str, arg: str | None, *, what: str) -> str:
    if not arg:
        raise InputError(f"{what} {_shown(raw)} needs a disease term, e.g. DS:MONDO:0005148")
    term = normalise_term(arg)
    if not _TERM_RE.match(term):
        raise InputError(f"{what} {_shown(raw)}: disease term must be a CURIE such as MONDO:0005148")
    return term


def normalise_term(term: str) -> str:
    """An ontology term ID as this module compares it: stripped, upper-cased, and ``PREFIX_ID``
    (the OBO PURL form) written ``PREFIX:ID``; e.g. ``mondo_0005148`` -> ``MONDO:0005148``."""
    term = term.strip().upper()
    if ":" not in term and "_" in term:
        prefix, _, local = term.partition("_")
        term = f"{prefix}:{local}"
    return term


@dataclass(frozen=True)
class ConsentCode:
    """One participant's parsed consent.

    Attributes
    ----------
    permission : the DUO permission, or ``None`` when consent is withdrawn
    diseases : disease terms (normalised CURIEs) when ``permission`` is DS, else empty
    modifiers : the DUO modifiers
    withdrawn : consent withdrawn; then the other fields are empty

    ``str(code)`` is the canonical text, which :func:`parse_consent` reads back to an equal code.
    """

    permission: Permission | None
    diseases: tuple[str, ...] = ()
    modifiers: frozenset[Modifier] = frozenset()
    withdrawn: bool = False

    def __post_init__(self) -> None:
        if self.withdrawn != (self.permission is None):
            raise ValueError("a ConsentCode has a permission exactly when it is not withdrawn")
        if self.withdrawn and (self.diseases or self.modifiers):
            raise ValueError("a withdrawn ConsentCode has no diseases or modifiers")
        if bool(self.diseases) != (self.permission is Permission.DS):
            raise ValueError("a ConsentCode has diseases exactly when its permission is DS")
        if self.permission is Permission.NRES and self.modifiers:
            raise ValueError("NRES takes no modifiers")

    def __str__(self) -> str:
        if self.withdrawn:
            return _WITHDRAWN_TOKEN
        assert self.permission is not None
        if self.permission is Permission.DS:
            head = [f"DS:{d}" for d in self.diseases]
        else:
            head = [self.permission.value]
        return ";".join(head + sorted(m.value for m in self.modifiers))


#: The consent of a participant who withdrew.
WITHDRAWN = ConsentCode(permission=None, withdrawn=True)


def parse_consent(text: str, *, default: ConsentCode | None = None) -> ConsentCode:
    """Parse one ``consent`` cell (grammar in the module docstring).

    Parameters
    ----------
    text : the cell as written, e.g. ``"DS:MONDO:0005148; NPU"`` or ``"DUO:0000042"``
    default : the dataset's default consent, returned for an empty (or all-whitespace) cell

    Returns
    -------
    ConsentCode

    Raises
    ------
    InputError
        Naming the offending code (never a participant ID; the caller adds file and line):
        an unknown code, no permission or more than one, DS without a valid disease term,
        NRES with modifiers, a parameter on a code that takes none, or an empty cell without
        a default.
    """
    tokens = _tokens(text)
    if not tokens:
        if default is None:
            raise InputError("empty consent and no dataset default consent")
        return default
    permissions: set[Permission] = set()
    diseases: list[str] = []
    modifiers: set[Modifier] = set()
    withdrawn = False
    for raw in tokens:
        token = _normalise(raw)
        if token == _WITHDRAWN_TOKEN:
            withdrawn = True
            continue
        if token in _GRU_CC:
            permissions.add(Permission.GRU)
            modifiers.add(Modifier.CC)
            continue
        if token in _NPUNCU:
            modifiers.update((Modifier.NPU, Modifier.NCU))
            continue
        match = _TOKEN_RE.match(token)
        key = match["key"] if match else None
        arg = (match["arg"] if match["arg"] is not None else match["parg"]) if match else None
        if key in _PERMISSION_NAMES:
            permission = _PERMISSION_NAMES[key]
            if permission is Permission.DS:
                term = _disease_term(raw, arg, what="consent code")
                if term not in diseases:
                    diseases.append(term)
            elif arg is not None:
                raise InputError(f"consent code {_shown(raw)}: {permission.value} takes no argument")
            permissions.add(permission)
        elif key in _MODIFIER_NAMES:
            modifier = _MODIFIER_NAMES[key]
            if arg is not None and (modifier not in _PARAMETERISED or not _PARAM_RE.match(arg)):
                raise InputError(
                    f"consent code {_shown(raw)}: {modifier.value} takes no argument"
                    if modifier not in _PARAMETERISED
                    else f"consent code {_shown(raw)}: malformed {modifier.value} parameter"
                )
            modifiers.add(modifier)
        else:
            raise InputError(
                f"unknown consent code {_shown(raw)}; expected a DUO permission (GRU, HMB, DS:<disease>, POA, "
                "NRES) or CURIE, DUO modifiers (NPU, NCU, NMDS, GSO, IRB, ...), or WITHDRAWN"
            )
    if withdrawn:
        return WITHDRAWN
    if not permissions:
        raise InputError(f"consent {_shown(text)} has no data use permission (GRU, HMB, DS:<disease>, POA or NRES)")
    if len(permissions) > 1:
        names = ", ".join(sorted(p.value for p in permissions))
        raise InputError(f"consent {_shown(text)} has more than one data use permission ({names})")
    (permission,) = permissions
    if permission is Permission.NRES and modifiers:
        raise InputError(f"consent {_shown(text)}: NRES (no restriction) cannot carry modifiers")
    return ConsentCode(permission=permission, diseases=tuple(diseases), modifiers=frozenset(modifiers))


@dataclass(frozen=True)
class Purpose:
    """What a job declares it will do with the data.

    Attributes
    ----------
    area : the research area: GRU, HMB, DS or POA (never NRES)
    disease : the disease studied (normalised CURIE) when ``area`` is DS, else ``None``
    methods : the work develops methods, software or algorithms (``MDS``)
    commercial : commercial purpose or a for-profit entity (``COMMERCIAL``)

    ``str(purpose)`` is the canonical text, e.g. ``DS:MONDO:0005148,MDS``, which
    :func:`parse_purpose` reads back to an equal purpose.
    """

    area: Permission
    disease: str | None = None
    methods: bool = False
    commercial: bool = False

    def __post_init__(self) -> None:
        if self.area is Permission.NRES:
            raise ValueError("NRES is a consent permission, not a research purpose")
        if (self.disease is not None) != (self.area is Permission.DS):
            raise ValueError("a Purpose names a disease exactly when its area is DS")

    def __str__(self) -> str:
        parts = [f"DS:{self.disease}" if self.area is Permission.DS else self.area.value]
        if self.methods:
            parts.append("MDS")
        if self.commercial:
            parts.append("COMMERCIAL")
        return ",".join(parts)


def parse_purpose(text: str) -> Purpose:
    """Parse a job's ``--purpose`` (grammar in the module docstring).

    Parameters
    ----------
    text : e.g. ``"HMB"``, ``"DS:MONDO:0005148, MDS"``, ``"gru,commercial"``

    Returns
    -------
    Purpose

    Raises
    ------
    InputError
        When the text is empty, names no research area or more than one, uses a consent-only
        code (NRES, a modifier, WITHDRAWN), or has an unknown token.
    """
    tokens = _tokens(text)
    if not tokens:
        raise InputError("no purpose given: declare one of GRU, HMB, POA or DS:<disease>, e.g. --purpose HMB")
    areas: list[tuple[Permission, str | None]] = []
    flags: set[str] = set()
    for raw in tokens:
        token = _normalise(raw)
        if token in _PURPOSE_FLAGS:
            flags.add(_PURPOSE_FLAGS[token])
            continue
        match = _TOKEN_RE.match(token)
        key = match["key"] if match else None
        arg = (match["arg"] if match["arg"] is not None else match["parg"]) if match else None
        if key in _PERMISSION_NAMES:
            area = _PERMISSION_NAMES[key]
            if area is Permission.NRES:
                raise InputError("purpose NRES: 'no restriction' describes a consent; declare GRU for general research")
            if area is Permission.DS:
                areas.append((area, _disease_term(raw, arg, what="purpose")))
            elif arg is not None:
                raise InputError(f"purpose {_shown(raw)}: {area.value} takes no argument")
            else:
                areas.append((area, None))
        elif key in _MODIFIER_NAMES or token in _NPUNCU or token == _WITHDRAWN_TOKEN:
            raise InputError(
                f"purpose {_shown(raw)} is a consent code, not a purpose; "
                "declare commercial use with COMMERCIAL and methods development with MDS"
            )
        else:
            raise InputError(
                f"unknown purpose {_shown(raw)}; expected GRU, HMB, POA or DS:<disease>, optionally with MDS, COMMERCIAL"
            )
    distinct = set(areas)
    if not distinct:
        raise InputError("purpose names no research area: add one of GRU, HMB, POA or DS:<disease>")
    if len(distinct) > 1:
        names = ", ".join(sorted(f"DS:{d}" if d else a.value for a, d in distinct))
        raise InputError(f"purpose names more than one research area ({names}); declare exactly one")
    ((area, disease),) = distinct
    return Purpose(area=area, disease=disease, methods="methods" in flags, commercial="commercial" in flags)


@dataclass(frozen=True, eq=False)
class DiseaseOntology:
    """A disease hierarchy (``is_a`` edges) answering ancestor questions.

    Attributes
    ----------
    parents : term -> its direct ``is_a`` parents, all as normalised CURIEs

    Notes
    -----
    A term missing from the ontology is an ancestor only of itself. Cycles are tolerated.
    Obsolete terms are kept as written (they usually have no parents), so a consent tagged
    with an obsolete term matches only that exact term.
    """

    parents: Mapping[str, frozenset[str]]
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.parents)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and normalise_term(term) in self.parents

    def ancestors(self, term: str) -> frozenset[str]:
        """``term`` and every term above it (normalised CURIEs)."""
        term = normalise_term(term)
        cached = self._ancestors.get(term)
        if cached is not None:
            return cached
        seen = {term}
        stack = [term]
        while stack:
            for parent in self.parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        result = frozenset(seen)
        self._ancestors[term] = result
        return result

    def is_ancestor_or_self(self, ancestor: str, term: str) -> bool:
        """Whether ``ancestor`` is ``term`` or lies above it (following ``is_a``)."""
        return normalise_term(ancestor) in self.ancestors(term)


def load_obo(path: str | Path) -> DiseaseOntology:
    """Read the ``is_a`` hierarchy of an OBO file, e.g. ``mondo.obo``.

    Only ``[Term]`` stanzas count; their ``id:`` and ``is_a:`` lines are read (qualifiers in
    braces and ``! label`` comments are ignored). Other stanzas (``[Typedef]``) and every
    other tag are skipped.

    Parameters
    ----------
    path : the OBO 1.4 file

    Returns
    -------
    DiseaseOntology

    Raises
    ------
    InputError
        If the file cannot be read, is not UTF-8, has an ``is_a`` outside a term, or holds no term.

    References
    ----------
    The OBO Flat File Format 1.4, https://owlcollab.github.io/oboformat/doc/obo-syntax.html
    """
    path = Path(path)
    parents: dict[str, set[str]] = {}
    current: set[str] | None = None
    in_term = False
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if line.startswith("["):
                    in_term = line == "[Term]"
                    current = None
                    continue
                if not in_term:
                    continue
                tag, sep, value = line.partition(":")
                if not sep:
                    continue
                tag = tag.strip()
                words = value.split()
                if tag == "id" and words:
                    current = parents.setdefault(normalise_term(words[0]), set())
                elif tag == "is_a" and words:
                    if current is None:
                        raise InputError(f"{path}: line {lineno}: is_a before the term's id")
                    current.add(normalise_term(words[0]))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ontology ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: ontology is not UTF-8 text") from exc
    if not parents:
        raise InputError(f"{path}: no [Term] with an id: this is not an OBO ontology")
    return DiseaseOntology(parents=MappingProxyType({t: frozenset(p) for t, p in parents.items()}))


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
        modifier = value if isinstance(value, Modifier) else _MODIFIER_NAMES.get(_normalise(str(value).strip()))
        if modifier is None:
            raise InputError(f"cannot clear {_shown(str(value))}: not a DUO modifier")
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


@dataclass(frozen=True)
class ConsentSummary:
    """Counts from one consent selection: how many were included and why the others were not.

    Counts only, never IDs. Each excluded participant is counted once, under the first rule
    that failed (:class:`Exclusion` order).

    Attributes
    ----------
    n_total : participants considered
    n_included : participants included
    withdrawn : excluded because their consent cell (or the default it took) says WITHDRAWN
    withdrawn_earlier : excluded because the withdrawal registry holds them, though their
        cell says otherwise (a sign the table was edited after the withdrawal)
    permission, disease, commercial, methods, ancestry, review : excluded by that rule
    n_defaulted : participants whose empty cell took the dataset default (included or not)
    n_cleared : included participants carrying a review modifier the site cleared
    """

    n_total: int
    n_included: int
    withdrawn: int = 0
    withdrawn_earlier: int = 0
    permission: int = 0
    disease: int = 0
    commercial: int = 0
    methods: int = 0
    ancestry: int = 0
    review: int = 0
    n_defaulted: int = 0
    n_cleared: int = 0

    @property
    def n_excluded(self) -> int:
        return self.n_total - self.n_included

    def excluded_by(self) -> dict[Exclusion, int]:
        """Exclusion reason -> count, for every reason."""
        return {reason: getattr(self, reason.value) for reason in Exclusion}

    def as_dict(self) -> dict[str, int]:
        """Every count by field name (for provenance and audit records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class ConsentSelection:
    """Which participants a job includes.

    Attributes
    ----------
    mask : [array, shape: (n_samples,), dtype bool], True = include; read-only
    withdrawn : [array, shape: (n_samples,), dtype bool], True where the consent cell (or the
        default it took) says WITHDRAWN: what a site records in its :class:`WithdrawalRegistry`
    summary : counts by reason, safe to log (no IDs)
    """

    mask: np.ndarray
    withdrawn: np.ndarray
    summary: ConsentSummary


_INCLUDED = 0
_REASON_INDEX: Mapping[Exclusion, int] = MappingProxyType({r: i + 1 for i, r in enumerate(Exclusion)})


@dataclass(frozen=True, eq=False)
class _Column:
    """A consent column grouped by distinct cell string, each parsed once.

    Attributes
    ----------
    inverse : [array, shape: (n_samples,), dtype intp], index into ``distinct`` per sample
    distinct : distinct cell strings, in first-seen order
    parsed : per distinct cell, its code, or the InputError it raised (kept so that
        withdrawals can be recorded before the error stops the job)
    withdrawn : [array, shape: (n_distinct,), dtype bool], the cell (or its default) says WITHDRAWN
    """

    inverse: np.ndarray
    distinct: list[str]
    parsed: list[ConsentCode | InputError]
    withdrawn: np.ndarray


def _mentions_withdrawn(text: str) -> bool:
    return any(_normalise(t) == _WITHDRAWN_TOKEN for t in _tokens(text))


def _classify(cells: Iterable[str | None], *, default: ConsentCode | str | None) -> _Column:
    if isinstance(default, str):
        try:
            default_code: ConsentCode | None = parse_consent(default)
        except InputError as exc:
            raise InputError(f"dataset default consent: {exc}") from exc
    else:
        default_code = default
    index: dict[str, int] = {}
    inverse = np.asarray([index.setdefault(cell or "", len(index)) for cell in cells], dtype=np.intp)
    distinct = list(index)
    parsed: list[ConsentCode | InputError] = []
    withdrawn = np.zeros(len(distinct), dtype=bool)
    for k, cell in enumerate(distinct):
        try:
            code = parse_consent(cell, default=default_code)
        except InputError as exc:
            parsed.append(exc)
            withdrawn[k] = _mentions_withdrawn(cell)
        else:
            parsed.append(code)
            withdrawn[k] = code.withdrawn
    return _Column(inverse=inverse, distinct=distinct, parsed=parsed, withdrawn=withdrawn)


def _where(i: int, lines: Sequence[int] | None, source: str | Path | None) -> str:
    place = f"line {lines[i]}" if lines is not None else f"row {i + 1} of the consent column"
    return f"{source}: {place}" if source is not None else place


def _select(
    column: _Column,
    *,
    purpose: Purpose,
    ontology: DiseaseOntology | None,
    cleared: frozenset[Modifier],
    withdrawn: np.ndarray | None,
    lines: Sequence[int] | None,
    source: str | Path | None,
) -> ConsentSelection:
    inverse = column.inverse
    n = inverse.shape[0]
    failed = [k for k, c in enumerate(column.parsed) if isinstance(c, InputError)]
    if failed:
        first = int(np.flatnonzero(np.isin(inverse, failed))[0])  # first failing row in file order
        error = column.parsed[int(inverse[first])]
        raise InputError(f"{_where(first, lines, source)}: {error}") from error
    if withdrawn is not None:
        withdrawn = np.asarray(withdrawn, dtype=bool)
        if withdrawn.shape != (n,):
            raise InputError(f"withdrawal mask has shape {withdrawn.shape}, expected ({n},)")

    # Per distinct cell: reason index (0 = included), took the default, carries a cleared modifier.
    n_distinct = len(column.distinct)
    reason_u = np.zeros(n_distinct, dtype=np.int8)
    defaulted_u = np.zeros(n_distinct, dtype=bool)
    cleared_u = np.zeros(n_distinct, dtype=bool)
    for k, (cell, code) in enumerate(zip(column.distinct, column.parsed, strict=True)):
        assert isinstance(code, ConsentCode)
        reason = exclusion_reason(code, purpose, ontology=ontology, cleared=cleared)
        reason_u[k] = _INCLUDED if reason is None else _REASON_INDEX[reason]
        defaulted_u[k] = not _tokens(cell)
        cleared_u[k] = bool(code.modifiers & cleared)

    reason_all = reason_u[inverse]  # reason index per sample
    if withdrawn is not None:
        earlier = withdrawn & (reason_all != _REASON_INDEX[Exclusion.WITHDRAWN])
        reason_all[earlier] = _REASON_INDEX[Exclusion.WITHDRAWN_EARLIER]
    assert reason_all.shape == (n,)
    mask = reason_all == _INCLUDED
    counts = np.bincount(reason_all, minlength=len(Exclusion) + 1)
    assert counts.shape == (len(Exclusion) + 1,)
    summary = ConsentSummary(
        n_total=n,
        n_included=int(counts[_INCLUDED]),
        **{r.value: int(counts[_REASON_INDEX[r]]) for r in Exclusion},
        n_defaulted=int(np.count_nonzero(defaulted_u[inverse])),
        n_cleared=int(np.count_nonzero(cleared_u[inverse] & mask)),
    )
    cell_withdrawn = column.withdrawn[inverse]
    mask.flags.writeable = False
    cell_withdrawn.flags.writeable = False
    return ConsentSelection(mask=mask, withdrawn=cell_withdrawn, summary=summary)


def consent_mask(
    cells: Iterable[str | None],
    *,
    purpose: Purpose,
    default: ConsentCode | str | None = None,
    ontology: DiseaseOntology | None = None,
    cleared: Iterable[Modifier | str] = (),
    withdrawn: np.ndarray | None = None,
    lines: Sequence[int] | None = None,
    source: str | Path | None = None,
) -> ConsentSelection:
    """Decide, for a whole consent column, whom a job with ``purpose`` includes.

    Each distinct cell string is parsed and matched once, so a column of 10^6 cells with a
    handful of distinct values costs one dictionary pass plus numpy indexing.

    Parameters
    ----------
    cells : the ``consent`` column, one string per sample (``""`` or ``None`` = missing)
    purpose : the job's purpose
    default : the dataset default consent for empty cells (a code or its text); ``None``
        makes an empty cell an error
    ontology : disease hierarchy for DS matching; without it only equal terms match
    cleared : review modifiers the site cleared for this job (validated by :func:`clearable`)
    withdrawn : [array, shape: (n_samples,), dtype bool] from
        :meth:`WithdrawalRegistry.is_withdrawn`; True excludes whatever the cell says
    lines : 1-based file line of each cell (``SampleTable.lines``), for error messages
    source : the file the column came from, for error messages

    Returns
    -------
    ConsentSelection

    Raises
    ------
    InputError
        For the first cell (in column order) that does not parse, naming the code and its line
        (never a sample ID); when the default does not parse; when ``withdrawn`` has the wrong
        shape; or when ``cleared`` names a modifier that cannot be cleared.
    """
    cleared_set = clearable(cleared)
    return _select(
        _classify(cells, default=default),
        purpose=purpose,
        ontology=ontology,
        cleared=cleared_set,
        withdrawn=withdrawn,
        lines=lines,
        source=source,
    )


def select_participants(
    ids: Sequence[str],
    cells: Sequence[str | None],
    *,
    purpose: Purpose,
    registry: WithdrawalRegistry,
    default: ConsentCode | str | None = None,
    ontology: DiseaseOntology | None = None,
    cleared: Iterable[Modifier | str] = (),
    lines: Sequence[int] | None = None,
    source: str | Path | None = None,
) -> ConsentSelection:
    """The site's whole consent step: record new withdrawals, then select with the registry applied.

    Every participant whose cell says WITHDRAWN is recorded in ``registry`` first (even when
    another cell then fails to parse), so no later table can bring them back; then the column
    is matched as by :func:`consent_mask`, with ``withdrawn=registry.is_withdrawn(ids)``.

    Parameters
    ----------
    ids : a stable participant ID per sample, in the same form every time (e.g. the IID)
    cells : the ``consent`` column, aligned with ``ids``
    purpose, default, ontology, cleared, lines, source : as for :func:`consent_mask`
    registry : the site's withdrawal registry

    Returns
    -------
    ConsentSelection

    Raises
    ------
    InputError
        As :func:`consent_mask`, or when ``ids`` and ``cells`` differ in length.
    """
    if len(ids) != len(cells):
        raise InputError(f"{len(ids)} participant IDs but {len(cells)} consent cells")
    cleared_set = clearable(cleared)
    column = _classify(cells, default=default)
    registry.record(ids[i] for i in np.flatnonzero(column.withdrawn[column.inverse]))
    return _select(
        column,
        purpose=purpose,
        ontology=ontology,
        cleared=cleared_set,
        withdrawn=registry.is_withdrawn(ids),
        lines=lines,
        source=source,
    )


class WithdrawalRegistry:
    """A site-local, persistent set of participants who withdrew consent.

    Once recorded, a participant stays withdrawn: :func:`select_participants` excludes them
    whatever a later ``samples.tsv`` says. Nothing ever removes an entry (a participant who
    re-consents needs a new participant ID, or a deliberate manual edit by the site).

    Storage
    -------
    ``path`` is an SQLite database (table ``withdrawn``, one row per participant) written in
    transactions, so a crash leaves either the old or the new set. It holds no IDs: each ID is
    stored as HMAC-SHA256 under a 32-byte random key kept in ``<path>.key`` (mode 0600, created
    once, never rewritten). The database alone (say, in a backup) therefore reveals only how
    many participants withdrew; with the key, one can test whether a given ID is in it, which
    the site can do anyway. The database also stores an HMAC fingerprint of the key, so a
    missing or substituted key file is an error rather than a registry that silently forgets.

    IDs are compared exactly (case-sensitive, as plink2 compares them). Use one ID form for a
    dataset every time (the IID, or ``FID + "\t" + IID`` when IIDs repeat across families).

    Parameters
    ----------
    path : the database file; it and ``<path>.key`` are created when missing

    Raises
    ------
    InputError
        When the database cannot be opened or is not a registry, or the key file is missing
        (for an existing registry), malformed, or does not belong to the database.
    """

    _KEY_BYTES = 32
    _FINGERPRINT_LABEL = b"fedstat withdrawal registry key check v1"
    _TIMEOUT_S = 30.0  # wait this long for another process's write transaction

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key_path = self.path.with_name(self.path.name + ".key")
        existed = self.path.exists()
        if not existed:
            # Create with owner-only permissions before SQLite opens it.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            con.execute("CREATE TABLE IF NOT EXISTS withdrawn (h BLOB PRIMARY KEY) WITHOUT ROWID")
            row = con.execute("SELECT value FROM meta WHERE name = 'key_fingerprint'").fetchone()
            if row is None:
                key = self._load_or_create_key()
                con.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('key_fingerprint', ?)", (self._fingerprint(key),)
                )
                row = con.execute("SELECT value FROM meta WHERE name = 'key_fingerprint'").fetchone()
            else:
                key = self._load_key()
        if not hmac.compare_digest(bytes(row[0]), self._fingerprint(key)):
            raise InputError(f"{self.key_path}: key does not belong to withdrawal registry {self.path}")
        self._key = key

    def __repr__(self) -> str:
        return f"WithdrawalRegistry({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=self._TIMEOUT_S)
        except sqlite3.Error as exc:
            raise InputError(f"{self.path}: cannot open withdrawal registry ({exc})") from exc
        try:
            con.execute("PRAGMA synchronous = FULL")  # a recorded withdrawal survives power loss
            with con:  # one transaction: committed on success, rolled back on error
                yield con
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a readable withdrawal registry ({exc})") from exc
        finally:
            con.close()

    def _fingerprint(self, key: bytes) -> bytes:
        return hmac.digest(key, self._FINGERPRINT_LABEL, "sha256")

    def _load_key(self) -> bytes:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"{self.key_path}: key of withdrawal registry {self.path} is missing; without it recorded "
                "withdrawals cannot be checked (restore the key file from backup)"
            ) from None
        except OSError as exc:
            raise InputError(f"{self.key_path}: cannot read registry key ({exc.strerror})") from exc
        if len(key) != self._KEY_BYTES:
            raise InputError(f"{self.key_path}: registry key must be {self._KEY_BYTES} bytes, found {len(key)}")
        return key

    def _load_or_create_key(self) -> bytes:
        if self.key_path.exists():
            return self._load_key()
        # Write a temporary file, then link it into place: the key appears complete or not at
        # all, and a concurrent creator's key is never overwritten.
        tmp = self.key_path.with_name(f"{self.key_path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(self._KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.key_path)
        finally:
            tmp.unlink(missing_ok=True)
        return self._load_key()

    def _hashes(self, ids: Iterable[str]) -> list[bytes]:
        key = self._key
        return [hmac.digest(key, i.encode("utf-8"), "sha256") for i in ids]

    def record(self, ids: Iterable[str]) -> int:
        """Mark participants withdrawn, for good.

        Parameters
        ----------
        ids : participant IDs (already-recorded ones are ignored)

        Returns
        -------
        int
            How many were newly recorded.
        """
        hashes = self._hashes(ids)
        if not hashes:
            return 0
        with self._connect() as con:
            before = con.total_changes
            con.executemany("INSERT OR IGNORE INTO withdrawn (h) VALUES (?)", ((h,) for h in hashes))
            return con.total_changes - before

    def is_withdrawn(self, ids: Iterable[str]) -> np.ndarray:
        """Which of ``ids`` have been recorded as withdrawn.

        Returns
        -------
        [array, shape: (n_ids,), dtype bool]
        """
        hashes = self._hashes(ids)
        with self._connect() as con:
            stored = {bytes(row[0]) for row in con.execute("SELECT h FROM withdrawn")}
        out = np.fromiter((h in stored for h in hashes), dtype=bool, count=len(hashes))
        assert out.shape == (len(hashes),)
        return out

    def __len__(self) -> int:
        """How many participants are recorded as withdrawn."""
        with self._connect() as con:
            (count,) = con.execute("SELECT COUNT(*) FROM withdrawn").fetchone()
        return int(count)
