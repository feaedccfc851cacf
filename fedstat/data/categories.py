"""Categorical covariates as plink2 reads them: levels, their natural order, indicator columns.

A sample-table column whose values are words (``north``, ``west10``) is a categorical covariate
for ``--glm``. plink2 gives each category but one a 0/1 indicator column named ``COL=LEVEL``; the
one left out (the reference) is the most common among the regression's samples, and the
indicators follow its natural sort of the levels (``strcmp_natural``: letters compared as
capitals, digit runs by magnitude, ``west9 < west10``). ``NONE`` is the missing category (plink2's
``--missing-catname`` default); fedstat also reads ``NA`` and an empty field as missing. A column
holding both numbers and words is refused, as plink2 refuses it.

References
----------
plink2 2.00a3.5: ``plink2_psam.cc`` (LoadPhenos: a column is categorical when its first value is
not a number), ``plink2_string.cc`` (``strcmp_natural_uncasted``), ``plink2_glm.cc``
(GlmDetermineCovars), ``plink2_common.cc`` (IdentifyRemainingCatsAndMostCommon).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence

from fedstat.errors import PolicyRefused, ProtocolError

#: The category name plink2 reads as missing (``--missing-catname``).
MISSING_CATEGORY = "NONE"

#: Longest category name accepted (bytes of UTF-8): a level names a group, not a free-text note.
MAX_LEVEL_BYTES = 64

#: Most categories one covariate may have in a job.
MAX_LEVELS = 200


def _is_digit(c: int) -> bool:
    return 48 <= c <= 57


def _is_nz_digit(c: int) -> bool:
    return 49 <= c <= 57


def _upper(c: int) -> int:
    return c - 32 if 97 <= c <= 122 else c


def _scan_forward(s1: bytes, i: int, s2: bytes, j: int) -> int:
    """Inside mismatching digit runs, ``s1``'s digit below ``s2``'s: the shorter run is smaller."""
    while True:
        i += 1
        j += 1
        if not _is_digit(s1[i]):
            return -1
        if not _is_digit(s2[j]):
            return 1


def _digit_run(s1: bytes, i: int, s2: bytes, j: int) -> tuple[int, int, int]:
    """Compare digit runs starting at ``i``/``j``; (result or 0 when equal so far, i, j) after them."""
    while True:
        c1, c2 = s1[i], s2[j]
        if c1 != c2:
            if _is_digit(c2):
                return (_scan_forward(s1, i, s2, j) if c1 < c2 else -_scan_forward(s2, j, s1, i)), i, j
            return 1, i, j
        i += 1
        j += 1
        if not _is_digit(s1[i]):
            break
    if _is_digit(s2[j]):
        return -1, i, j
    return 0, i, j


def _tiebroken(s1: bytes, i: int, s2: bytes, j: int) -> int:
    """The strings match but for letter case up to ``i``/``j``: compare the rest as capitals, ASCII breaking ties."""
    i += 1
    j += 1
    skip_test = False
    while True:
        if not skip_test and not (not _is_nz_digit(s1[i]) and not _is_nz_digit(s2[j])):
            if not _is_nz_digit(s1[i]) or not _is_nz_digit(s2[j]):
                return -1 if s1[i] < s2[j] else 1
            r, i, j = _digit_run(s1, i, s2, j)
            if r:
                return r
            skip_test = True
            continue
        skip_test = False
        c1, c2 = s1[i], s2[j]
        if c1 != c2:
            u1, u2 = _upper(c1), _upper(c2)
            if u1 < u2:
                return -1
            if u1 > u2:
                return 1
        elif c1 == 0:
            return -1
        i += 1
        j += 1


def natural_compare(a: str, b: str) -> int:
    """plink2's ``strcmp_natural``: negative, zero or positive as ``a`` sorts before, with or after ``b``."""
    s1, s2 = a.encode("utf-8") + b"\0", b.encode("utf-8") + b"\0"
    i = j = 0
    skip_test = False
    while True:
        if not skip_test and not (not _is_nz_digit(s1[i]) and not _is_nz_digit(s2[j])):
            if not _is_nz_digit(s1[i]) or not _is_nz_digit(s2[j]):
                return -1 if s1[i] < s2[j] else 1
            r, i, j = _digit_run(s1, i, s2, j)
            if r:
                return r
            skip_test = True
            continue
        skip_test = False
        c1, c2 = s1[i], s2[j]
        if c1 != c2:
            if 97 <= c1 <= 122:
                if c2 + 32 == c1:
                    return -_tiebroken(s2, j, s1, i)
                if not 97 <= c2 <= 122:
                    c1 -= 32
            elif 97 <= c2 <= 122:
                c2 -= 32
                if c1 == c2:
                    return _tiebroken(s1, i, s2, j)
            return -1 if c1 < c2 else 1
        if c1 == 0:
            return 0
        i += 1
        j += 1


def natural_sorted(levels: Iterable[str]) -> tuple[str, ...]:
    """The distinct ``levels`` in plink2's natural order."""
    return tuple(sorted(set(levels), key=functools.cmp_to_key(natural_compare)))


def indicator_name(column: str, level: str) -> str:
    """The indicator column of ``level``, named as plink2 names it in TEST: ``COL=LEVEL``."""
    return f"{column}={level}"


def split_indicator(name: str, categorical: Collection[str]) -> tuple[str, str] | None:
    """``(column, level)`` when ``name`` is an indicator of one of the ``categorical`` columns, else None."""
    column, sep, level = name.partition("=")
    if sep and column in categorical:
        return column, level
    return None


def level_problem(level: str) -> str | None:
    """Why ``level`` cannot name a category (None when it can); never quotes the level."""
    if any(ch.isspace() for ch in level):
        return "a category holds whitespace (plink2 reads whitespace as a field separator)"
    if not level.isprintable():
        return "a category holds a control character"
    if len(level.encode("utf-8")) > MAX_LEVEL_BYTES:
        return f"a category name is longer than {MAX_LEVEL_BYTES} bytes (free text, not a category?)"
    return None


def merged_levels(
    covariates: Sequence[str], per_site: Mapping[str, Mapping[str, Sequence[str]]]
) -> dict[str, tuple[str, ...]]:
    """The categories of each categorical covariate over the sites: the union of what each reported.

    Parameters
    ----------
    covariates : the job's covariates
    per_site : site -> covariate -> the categories it reported (``JobDecision.covariate_levels``)

    Returns
    -------
    covariate -> its categories in natural order, for the covariates some site reported as categorical

    Raises
    ------
    ProtocolError
        A site reported a covariate the job does not name, a category that cannot be one, or too
        many (a hostile or broken peer).
    PolicyRefused
        A category is held at one site only (of several): its indicator's sums would be that site's
        own, which secure aggregation exists to hide. (A coordinator that deviates from the protocol
        could still ask for them: docs/privacy.md states this residual risk.)
    """
    out: dict[str, set[str]] = {}
    holders: dict[tuple[str, str], list[str]] = {}
    for site, reported in per_site.items():
        for covariate, levels in reported.items():
            if covariate not in covariates:
                raise ProtocolError(f"site {site} reported categories for {covariate!r}, which the job does not name")
            if len(levels) > MAX_LEVELS or any(not level or level_problem(level) for level in levels):
                raise ProtocolError(f"site {site} reported categories for covariate {covariate!r} that cannot be ones")
            out.setdefault(covariate, set()).update(levels)
            for level in levels:
                holders.setdefault((covariate, level), []).append(site)
    for covariate, merged in out.items():
        if len(merged) > MAX_LEVELS:
            raise ProtocolError(f"covariate {covariate!r} has more than {MAX_LEVELS} categories over the sites")
    if len(per_site) > 1:
        lone = sorted((c, lv, h[0]) for (c, lv), h in holders.items() if len(h) == 1)
        if lone:
            c, level, site = lone[0]
            raise PolicyRefused(
                f"covariate {c}: category {level} is held at site {site} only, so the sums of its indicator column "
                f"would be that site's own sums, which secure aggregation keeps from the coordinator; merge it into "
                f"a category other sites hold (or write NONE for it), or analyse that site alone"
                + (f" ({len(lone) - 1} more such categories)" if len(lone) > 1 else "")
            )
    return {c: natural_sorted(out[c]) for c in covariates if c in out}
