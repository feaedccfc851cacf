"""The audit record's schema: its fields and their checks, the canonical form, digests, and the
parsing of one stored line (:mod:`site_agent.audit_log` writes the log, and its notes describe the
file format; :mod:`site_agent.audit_verify` checks and reads it). Nothing here writes a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from fedstat.errors import FedstatError

#: ``prev`` of the first record, and the anchor's hashes for an empty log.
GENESIS = "0" * 64
#: Fields the log sets itself; a payload may not name them.
RESERVED_FIELDS = frozenset({"seq", "time", "prev", "hash"})
#: Fields a payload may hold (all optional, at least one; a ``None`` value is left out).
PAYLOAD_FIELDS: tuple[str, ...] = (
    "event",  # what happened: "offer", "round", "done", "cancel", … (lower-case name)
    "analyst",  # certificate subject of the analyst, e.g. "analyst:alice"
    "job_id",
    "spec_digest",  # spec_digest() of the job spec
    "analyses",  # list of analysis names, e.g. ["freq", "glm"]
    "privacy",  # privacy mode
    "purpose",  # DUO purpose of use, "" when undeclared
    "dataset",
    "round",  # round number within the job (int >= 0)
    "decision",  # one of DECISIONS
    "reason",  # text shown with the decision (truncated to MAX_REASON characters)
    "cohort_size",  # participants taking part, after consent (int >= 0)
    "consent_excluded",  # participants left out by consent (int >= 0)
    "dp",  # dict with any of DP_FIELDS
    "computation",  # a released round's site computation, e.g. "allele_counts"
    "groups",  # fingerprints of the participant groups a released round sums over (never members)
    "sites",  # the sites whose sums a released round adds up
    "signature",  # SHA-256 of the analyst's signature of the job spec
)
#: Values of ``decision``.
DECISIONS = frozenset({"accepted", "refused", "failed", "completed", "cancelled"})
#: Keys of ``dp``: ε and δ of this job, ρ charged to the dataset's budget, ρ remaining after it.
DP_FIELDS = frozenset({"epsilon", "delta", "rho", "remaining"})
#: Most items a list (``analyses``) may hold: names of analyses, never one value per participant.
MAX_LIST_ITEMS = 32
#: Text holding this many numbers in a row (``0 1 2 …``, ``0/1,1/1,…``) looks like per-participant values.
MAX_NUMBERS_IN_TEXT = 8
#: Longest ``reason`` kept; a longer one is cut and ends with "…".
MAX_REASON = 2000
#: Longest value of the other text fields.
MAX_TEXT = 256

HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER = r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RUN = re.compile(rf"(?:{_NUMBER}[\s,;:/|]+){{{MAX_NUMBERS_IN_TEXT - 1},}}{_NUMBER}")


class AuditError(FedstatError):
    """The audit log or its head anchor cannot be read, written or trusted; names the file (and line)."""


class AuditPayloadError(AuditError, ValueError):
    """A payload has an unknown field, a wrong type, or a value shaped like per-participant data."""


# --- canonical form and digests ------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj``: sorted keys, no spaces, ASCII only, no NaN or infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def spec_digest(spec_json: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a job spec's canonical JSON (e.g. ``JobSpec.to_json()``); key order does not matter.

    Raises
    ------
    AuditPayloadError
        the spec is not a mapping of plain JSON values (dicts, lists, text, finite numbers, booleans, null)
    """
    if not isinstance(spec_json, Mapping):
        raise AuditPayloadError(f"a job spec to digest must be a JSON object, not {type(spec_json).__name__}")
    try:
        text = canonical_json(dict(spec_json))
    except (TypeError, ValueError) as exc:  # the value is not echoed: it could be anything
        raise AuditPayloadError(
            "job spec is not plain JSON (dicts, lists, text, finite numbers, booleans, null)"
        ) from exc
    return sha256(text)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the record without its ``hash`` field."""
    return sha256(canonical_json({k: v for k, v in record.items() if k != "hash"}))


# --- payload validation --------------------------------------------------------------------


def check_no_participant_data(name: str, value: Any) -> None:
    """Refuse a value shaped like per-participant data; the message names ``name`` and the shape, never the value.

    Allowed: text (without a run of :data:`MAX_NUMBERS_IN_TEXT` numbers), single numbers, booleans,
    ``None``, lists or tuples of at most :data:`MAX_LIST_ITEMS` texts, and small mappings of these.
    Refused: a list holding a number, a longer list, arrays, bytes, sets and any other type.

    Raises
    ------
    AuditPayloadError
        naming the field and why
    """
    if value is None or isinstance(value, bool | str | numbers.Number):
        if isinstance(value, str) and _NUMBER_RUN.search(value):
            raise AuditPayloadError(
                f"audit field {name!r} holds a run of {MAX_NUMBERS_IN_TEXT} or more numbers, which looks like "
                "per-participant values; the audit log holds counts, names and digests only"
            )
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            raise AuditPayloadError(
                f"audit field {name!r} is a list of {len(value)} items (at most {MAX_LIST_ITEMS}); audit lists "
                "name analyses or columns, never one value per participant"
            )
        if any(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in value):
            raise AuditPayloadError(
                f"audit field {name!r} is a list holding numbers, which looks like per-participant values; "
                "record a count instead"
            )
        for i, item in enumerate(value):
            check_no_participant_data(f"{name}[{i}]", item)
        return
    if isinstance(value, Mapping):
        if len(value) > MAX_LIST_ITEMS:
            raise AuditPayloadError(
                f"audit field {name!r} is a mapping of {len(value)} items (at most {MAX_LIST_ITEMS})"
            )
        for key, item in value.items():
            check_no_participant_data(f"{name}.{key}" if isinstance(key, str) else name, item)
        return
    raise AuditPayloadError(
        f"audit field {name!r} is a {type(value).__name__}; only text, single numbers and short lists of names "
        "can be written to the audit log"
    )


def _text(name: str, value: Any, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise AuditPayloadError(f"audit field {name!r} must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise AuditPayloadError(f"audit field {name!r} is {len(value)} characters long (at most {limit})")
    if _CONTROL.search(value):
        raise AuditPayloadError(f"audit field {name!r} contains a control character")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AuditPayloadError(f"audit field {name!r} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise AuditPayloadError(f"audit field {name!r} must be >= 0")
    return int(value)


def _amount(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AuditPayloadError(f"audit field {name!r} must be a number, not {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise AuditPayloadError(f"audit field {name!r} must be a finite number >= 0")
    return x


def _event(name: str, value: Any) -> str:
    text = _text(name, value)
    if not _EVENT.match(text):
        raise AuditPayloadError(f"audit field {name!r} must be a lower-case name (letters, digits, _; up to 32)")
    return text


def _digest(name: str, value: Any) -> str:
    text = _text(name, value)
    if not HEX64.match(text):
        raise AuditPayloadError(f"audit field {name!r} must be 64 lower-case hex digits (a SHA-256)")
    return text


def _decision(name: str, value: Any) -> str:
    text = _text(name, value)
    if text not in DECISIONS:
        raise AuditPayloadError(f"audit field {name!r} must be one of: {', '.join(sorted(DECISIONS))}")
    return text


def _reason(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise AuditPayloadError(f"audit field {name!r} must be text, not {type(value).__name__}")
    return value if len(value) <= MAX_REASON else value[: MAX_REASON - 1] + "…"


def _analyses(name: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        raise AuditPayloadError(f"audit field {name!r} must be a list of analysis names, not {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _NAME.match(item):
            raise AuditPayloadError(f"audit field {name!r} item {i} must be an analysis name (letters, digits, _ . -)")
    return list(value)


def _dp(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise AuditPayloadError(f"audit field {name!r} must be a mapping, not {type(value).__name__}")
    unknown = [str(k)[:40] for k in value if k not in DP_FIELDS]
    if unknown:
        raise AuditPayloadError(
            f"audit field {name!r} has unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(DP_FIELDS))}"
        )
    out = {k: _amount(f"{name}.{k}", v) for k, v in value.items() if v is not None}
    if not out:
        raise AuditPayloadError(f"audit field {name!r} is empty; give any of {', '.join(sorted(DP_FIELDS))}")
    return out


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "event": _event,
    "analyst": _text,
    "job_id": _text,
    "spec_digest": _digest,
    "analyses": _analyses,
    "privacy": _text,
    "purpose": _text,
    "dataset": _text,
    "round": _count,
    "decision": _decision,
    "reason": _reason,
    "cohort_size": _count,
    "consent_excluded": _count,
    "dp": _dp,
    "computation": _event,
    "groups": _analyses,
    "sites": _analyses,
    "signature": _digest,
}
assert set(_CHECKS) == set(PAYLOAD_FIELDS)


def validate_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as it will be written: known fields only, types checked, ``None`` values left out.

    Numbers become ``int`` / ``float`` (numpy scalars are accepted), tuples become lists, and a
    ``reason`` longer than :data:`MAX_REASON` characters is cut. Every value first passes
    :func:`check_no_participant_data`.

    Raises
    ------
    AuditPayloadError
        an unknown or reserved field, a wrong type or range, participant-shaped data, or no field at all
    """
    reserved = sorted(k for k in payload if k in RESERVED_FIELDS)
    if reserved:
        raise AuditPayloadError(f"audit field(s) {', '.join(reserved)} are set by the log itself")
    unknown = [str(k)[:40] for k in payload if k not in _CHECKS]
    if unknown:
        raise AuditPayloadError(
            f"unknown audit field(s) {', '.join(map(repr, unknown))}; known: {', '.join(PAYLOAD_FIELDS)}"
        )
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if value is None:
            continue
        check_no_participant_data(key, value)
        out[key] = _CHECKS[key](key, value)
    if not out:
        raise AuditPayloadError(f"an audit record needs at least one of: {', '.join(PAYLOAD_FIELDS)}")
    return out


# --- reading lines -------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError("no time zone")
    return t


def parse_line(text: bytes) -> tuple[dict[str, Any] | None, str]:
    """A stored line (without its newline) as a checked record, or ``(None, what is wrong)``.

    Checks the structure, the canonical form, the record's own hash and its payload — not its
    place in the chain.
    """
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return None, "not a record: bytes outside ASCII (truncated or garbled line)"
    if not s:
        return None, "empty line"
    try:
        obj = json.loads(s, parse_constant=_reject_constant)
    except ValueError:
        return None, "not a record: invalid JSON (truncated or garbled line)"
    if not isinstance(obj, dict):
        return None, "not a record: not a JSON object"
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None, "field 'seq' is missing or not an integer >= 0"
    for key in ("prev", "hash"):
        if not isinstance(obj.get(key), str) or not HEX64.match(obj[key]):
            return None, f"field {key!r} is missing or not a hex SHA-256"
    try:
        parse_time(obj["time"])
    except (KeyError, TypeError, ValueError):
        return None, "field 'time' is missing or not an ISO-8601 time with a time zone"
    if canonical_json(obj) != s:
        return None, "not in canonical form (sorted keys, no spaces, ASCII)"
    if obj["hash"] != record_hash(obj):
        return None, "hash does not match the record's content (the record was edited)"
    try:
        validate_payload({k: v for k, v in obj.items() if k not in RESERVED_FIELDS})
    except AuditPayloadError as exc:
        return None, f"invalid payload: {exc}"
    return obj, ""


def line_digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()
