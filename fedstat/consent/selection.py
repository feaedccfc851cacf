"""The site's consent step over a whole ``consent`` column: whom a job includes, with counts.

:func:`consent_mask` matches every cell of a column against the job's purpose (rules in
:mod:`fedstat.consent.matching`); :func:`select_participants` first records the column's new
withdrawals in the site's :class:`~fedstat.consent.registry.WithdrawalRegistry` and then
excludes everyone the registry holds. Both report counts only, never participant IDs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fedstat.consent.duo import WITHDRAWN_TOKEN, ConsentCode, Modifier, normalise, parse_consent, split_tokens
from fedstat.consent.matching import Exclusion, clearable, exclusion_reason
from fedstat.consent.ontology import DiseaseOntology
from fedstat.consent.purposes import Purpose
from fedstat.consent.registry import WithdrawalRegistry
from fedstat.errors import InputError


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
    return any(normalise(t) == WITHDRAWN_TOKEN for t in split_tokens(text))


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
        assert isinstance(error, InputError)
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
        defaulted_u[k] = not split_tokens(cell)
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
    registry.record(ids[int(i)] for i in np.flatnonzero(column.withdrawn[column.inverse]))
    return _select(
        column,
        purpose=purpose,
        ontology=ontology,
        cleared=cleared_set,
        withdrawn=registry.is_withdrawn(ids),
        lines=lines,
        source=source,
    )
