"""The privacy modes this version runs, by name.

Each mode is a :class:`~fedstat.privacy.base.PrivacyMode` in its own module; this module lists
them, so the interface (:mod:`fedstat.privacy.base`) depends on none of them.
"""

from __future__ import annotations

from fedstat.errors import PrivacyError, shown
from fedstat.privacy.base import PrivacyMode
from fedstat.privacy.dpmode import DpMode
from fedstat.privacy.none import NoneMode
from fedstat.privacy.paillier import PaillierDpMode, PaillierMode
from fedstat.privacy.secagg import SecAggMode

__all__ = ["MODES", "canonical_mode", "get_mode"]

#: Every mode, by its name.
MODES: dict[str, PrivacyMode] = {
    m.name: m for m in (NoneMode(), SecAggMode(), DpMode(), PaillierMode(), PaillierDpMode())
}

#: Other spellings of mode names: ``dp`` is secure aggregation plus noise.
_ALIASES = {"secagg,dp": "dp", "dp,secagg": "dp", "dp,paillier": "paillier,dp"}


def canonical_mode(name: str) -> str:
    """The name of the mode spelled ``name`` (``"secagg,dp"`` is ``"dp"``)."""
    name = name.strip().lower().replace(" ", "")
    return _ALIASES.get(name, name)


def get_mode(name: str) -> PrivacyMode:
    """The privacy mode called ``name``; PrivacyError listing the known ones otherwise."""
    try:
        return MODES[canonical_mode(name)]
    except KeyError:
        raise PrivacyError(f"unknown privacy mode {shown(name)}; available: {', '.join(sorted(MODES))}") from None
