"""DUO consent codes: the permissions and modifiers, and the grammar of a ``consent`` cell.

Each participant's ``consent`` cell in ``samples.tsv`` holds GA4GH Data Use Ontology (DUO)
codes; :func:`parse_consent` reads one cell into a :class:`ConsentCode`.

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

References
----------
GA4GH Data Use Ontology, https://github.com/EBISPOT/DUO (code list ``duo.csv``).
Dyke et al. (2016), "Consent codes: upholding standard data use conditions",
PLoS Genet 12(1): e1005772.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedstat.consent.ontology import normalise_term
from fedstat.errors import InputError


class _DuoCode(enum.Enum):
    """A DUO code; its value is the DUO shorthand (``GRU``, ``NPU``)."""

    @property
    def curie(self) -> str:
        """The code's DUO term ID, e.g. ``DUO:0000042``."""
        return _CURIES[self]


class Permission(_DuoCode):
    """A DUO data use permission (the primary category of a consent)."""

    NRES = "NRES"
    GRU = "GRU"
    HMB = "HMB"
    DS = "DS"
    POA = "POA"


class Modifier(_DuoCode):
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


_CURIES: Mapping[_DuoCode, str] = MappingProxyType(
    {
        Permission.NRES: "DUO:0000004",
        Permission.GRU: "DUO:0000042",
        Permission.HMB: "DUO:0000006",
        Permission.DS: "DUO:0000007",
        Permission.POA: "DUO:0000011",
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

WITHDRAWN_TOKEN = "WITHDRAWN"
_GRU_CC = frozenset({"GRU-CC", "DUO:0000005"})
NPUNCU_TOKENS = frozenset({"NPUNCU", "DUO:0000018"})
PERMISSION_NAMES: Mapping[str, Permission] = MappingProxyType(
    {**{p.value: p for p in Permission}, **{p.curie: p for p in Permission}}
)
MODIFIER_NAMES: Mapping[str, Modifier] = MappingProxyType(
    {**{m.value: m for m in Modifier}, **{m.curie: m for m in Modifier}}
)

# Whitespace around these joins is not a separator: "DS : MONDO:0005148" is one token.
_JOINERS_RE = re.compile(r"\s*([:\-=()])\s*")
_SPLIT_RE = re.compile(r"[;,\s]+")
# KEY, then optionally ":arg", "-arg", "=arg" or "(arg)".
_TOKEN_RE = re.compile(r"^(?P<key>DUO:\d{7}|[A-Z]+)(?:[:\-=](?P<arg>.+)|\((?P<parg>[^()]*)\))?$")
_TERM_RE = re.compile(r"^[A-Z][A-Z0-9_]*:[A-Z0-9_.]+$")
_PARAM_RE = re.compile(r"^[A-Z0-9_.:\-]+$")
_MAX_SHOWN = 40  # longest piece of cell text quoted in an error message


def quoted(text: str) -> str:
    """``text`` quoted for an error message, cut to :data:`_MAX_SHOWN` characters."""
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…")


def split_tokens(text: str) -> list[str]:
    """Split a consent or purpose string into non-empty raw tokens (original case)."""
    return [t for t in _SPLIT_RE.split(_JOINERS_RE.sub(r"\1", text.strip())) if t]


def normalise(token: str) -> str:
    upper = token.upper()
    return "DUO:" + upper[4:] if upper.startswith("DUO_") else upper


def key_and_arg(token: str) -> tuple[str, str | None]:
    """A normalised token's code (``""`` when it is not one) and its argument, if any."""
    match = _TOKEN_RE.match(token)
    if match is None:
        return "", None
    return match["key"], match["arg"] if match["arg"] is not None else match["parg"]


def disease_term(raw: str, arg: str | None, *, what: str) -> str:
    if not arg:
        raise InputError(f"{what} {quoted(raw)} needs a disease term, e.g. DS:MONDO:0005148")
    term = normalise_term(arg)
    if not _TERM_RE.match(term):
        raise InputError(f"{what} {quoted(raw)}: disease term must be a CURIE such as MONDO:0005148")
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
            return WITHDRAWN_TOKEN
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
    tokens = split_tokens(text)
    if not tokens:
        if default is None:
            raise InputError("empty consent and no dataset default consent")
        return default
    permissions: set[Permission] = set()
    diseases: list[str] = []
    modifiers: set[Modifier] = set()
    withdrawn = False
    for raw in tokens:
        token = normalise(raw)
        if token == WITHDRAWN_TOKEN:
            withdrawn = True
            continue
        if token in _GRU_CC:
            permissions.add(Permission.GRU)
            modifiers.add(Modifier.CC)
            continue
        if token in NPUNCU_TOKENS:
            modifiers.update((Modifier.NPU, Modifier.NCU))
            continue
        key, arg = key_and_arg(token)
        permission = PERMISSION_NAMES.get(key)
        if permission is not None:
            if permission is Permission.DS:
                term = disease_term(raw, arg, what="consent code")
                if term not in diseases:
                    diseases.append(term)
            elif arg is not None:
                raise InputError(f"consent code {quoted(raw)}: {permission.value} takes no argument")
            permissions.add(permission)
        elif (modifier := MODIFIER_NAMES.get(key)) is not None:
            if arg is not None and (modifier not in _PARAMETERISED or not _PARAM_RE.match(arg)):
                raise InputError(
                    f"consent code {quoted(raw)}: {modifier.value} takes no argument"
                    if modifier not in _PARAMETERISED
                    else f"consent code {quoted(raw)}: malformed {modifier.value} parameter"
                )
            modifiers.add(modifier)
        else:
            raise InputError(
                f"unknown consent code {quoted(raw)}; expected a DUO permission (GRU, HMB, DS:<disease>, POA, "
                "NRES) or CURIE, DUO modifiers (NPU, NCU, NMDS, GSO, IRB, ...), or WITHDRAWN"
            )
    if withdrawn:
        return WITHDRAWN
    if not permissions:
        raise InputError(f"consent {quoted(text)} has no data use permission (GRU, HMB, DS:<disease>, POA or NRES)")
    if len(permissions) > 1:
        names = ", ".join(sorted(p.value for p in permissions))
        raise InputError(f"consent {quoted(text)} has more than one data use permission ({names})")
    (permission,) = permissions
    if permission is Permission.NRES and modifiers:
        raise InputError(f"consent {quoted(text)}: NRES (no restriction) cannot carry modifiers")
    return ConsentCode(permission=permission, diseases=tuple(diseases), modifiers=frozenset(modifiers))
