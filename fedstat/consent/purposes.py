"""A job's research purpose: what ``--purpose`` declares it will do with the data.

Purpose grammar
---------------
Tokens separated by ``,`` or ``;`` (or whitespace), case-insensitive: exactly one research
area, ``GRU``, ``HMB``, ``POA`` or ``DS:<term>`` (the same spellings and CURIEs as consent,
one disease), plus optional flags ``MDS`` (alias ``METHODS``: the work develops methods,
software or algorithms) and ``COMMERCIAL`` (commercial purpose or a for-profit entity).
Examples: ``HMB``, ``DS:MONDO:0005148,MDS``, ``GRU,COMMERCIAL``. Without ``COMMERCIAL`` a
purpose is non-commercial. Methods development is declared together with the research area it
is done in (``HMB,MDS``).

The research areas are DUO permissions (:class:`~fedstat.consent.duo.Permission`), never NRES.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedstat.consent.duo import (
    MODIFIER_NAMES,
    NPUNCU_TOKENS,
    PERMISSION_NAMES,
    WITHDRAWN_TOKEN,
    Permission,
    disease_term,
    key_and_arg,
    normalise,
    quoted,
    split_tokens,
)
from fedstat.errors import InputError

_PURPOSE_FLAGS: Mapping[str, str] = MappingProxyType(
    {"MDS": "methods", "METHODS": "methods", "COMMERCIAL": "commercial"}
)


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
    tokens = split_tokens(text)
    if not tokens:
        raise InputError("no purpose given: declare one of GRU, HMB, POA or DS:<disease>, e.g. --purpose HMB")
    areas: list[tuple[Permission, str | None]] = []
    flags: set[str] = set()
    for raw in tokens:
        token = normalise(raw)
        if token in _PURPOSE_FLAGS:
            flags.add(_PURPOSE_FLAGS[token])
            continue
        key, arg = key_and_arg(token)
        area = PERMISSION_NAMES.get(key)
        if area is not None:
            if area is Permission.NRES:
                raise InputError("purpose NRES: 'no restriction' describes a consent; declare GRU for general research")
            if area is Permission.DS:
                areas.append((area, disease_term(raw, arg, what="purpose")))
            elif arg is not None:
                raise InputError(f"purpose {quoted(raw)}: {area.value} takes no argument")
            else:
                areas.append((area, None))
        elif key in MODIFIER_NAMES or token in NPUNCU_TOKENS or token == WITHDRAWN_TOKEN:
            raise InputError(
                f"purpose {quoted(raw)} is a consent code, not a purpose; "
                "declare commercial use with COMMERCIAL and methods development with MDS"
            )
        else:
            raise InputError(
                f"unknown purpose {quoted(raw)}; expected GRU, HMB, POA or DS:<disease>, optionally with MDS, COMMERCIAL"
            )
    distinct = set(areas)
    if not distinct:
        raise InputError("purpose names no research area: add one of GRU, HMB, POA or DS:<disease>")
    if len(distinct) > 1:
        names = ", ".join(sorted(f"DS:{d}" if d else a.value for a, d in distinct))
        raise InputError(f"purpose names more than one research area ({names}); declare exactly one")
    ((area, disease),) = distinct
    return Purpose(area=area, disease=disease, methods="methods" in flags, commercial="commercial" in flags)
