"""Cron expressions: the standard five fields, parsed and evaluated in UTC.

::

    ┌──────── minute        0-59
    │ ┌────── hour          0-23
    │ │ ┌──── day of month  1-31
    │ │ │ ┌── month         1-12 or JAN-DEC
    │ │ │ │ ┌ day of week   0-7 or SUN-SAT (0 and 7 are Sunday)
    * * * * *

Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n`` or ``a/n``, or a
comma-separated list of those. The aliases ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``,
``@monthly`` and ``@yearly`` (``@annually``) stand for their usual expansions. As in Vixie cron,
when both day of month and day of week are restricted, a day matches if *either* matches.

References
----------
POSIX ``crontab`` (IEEE Std 1003.1) and Vixie cron's crontab(5), whose extensions (ranges with
steps, names, ``@`` aliases) this follows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fedstat.errors import InputError, shown

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
#: (name, lowest, highest, names for lowest.. in order)
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
#: A schedule must fire within this many years (e.g. ``0 0 31 2 *`` never does).
_HORIZON_YEARS = 8


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; :meth:`next_after` gives its fire times.

    Attributes
    ----------
    text : the expression as given (an alias stays an alias)
    minutes, hours, days, months, weekdays : the values each field matches (weekdays 0-6, Sunday 0)
    day_restricted, weekday_restricted : whether the day-of-month / day-of-week field was not ``*``
    """

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays  # isoweekday: Monday 1 .. Sunday 7
        if self.day_restricted and self.weekday_restricted:
            return dom or dow
        return dom and dow

    def matches(self, when: dt.datetime) -> bool:
        when = _utc(when)
        return when.minute in self.minutes and when.hour in self.hours and self.matches_day(when.date())

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``when`` (UTC, whole minutes).

        Raises InputError if there is none within the next years (an impossible date).
        """
        t = _utc(when).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = t + dt.timedelta(days=366 * _HORIZON_YEARS)
        while t < limit:
            if not self.matches_day(t.date()):
                t = dt.datetime.combine(t.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
                continue
            return t
        raise InputError(f"cron expression {shown(self.text)} never fires (no matching date in {_HORIZON_YEARS} years)")


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("cron times must be timezone-aware (UTC)")
    return when.astimezone(dt.UTC)


def parse_cron(text: str) -> Cron:
    """Parse a five-field cron expression or an ``@`` alias; InputError naming the bad field."""
    if not isinstance(text, str) or not text.strip():
        raise InputError('empty cron expression; e.g. "*/5 * * * *" (every 5 minutes) or "@daily"')
    expr = text.strip()
    if expr.startswith("@"):
        if expr.lower() not in ALIASES:
            raise InputError(f"unknown cron alias {shown(expr)}; known: {', '.join(ALIASES)}")
        expr = ALIASES[expr.lower()]
    parts = expr.split()
    if len(parts) != 5:
        raise InputError(
            f"cron expression {shown(text)} has {len(parts)} field(s); expected 5: "
            'minute hour day-of-month month day-of-week, e.g. "30 6 * * MON" (Mondays at 06:30 UTC)'
        )
    values = [_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    cron = Cron(
        text=text.strip(),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        day_restricted=not parts[2].startswith("*"),  # as Vixie cron: "*/2" is unrestricted too
        weekday_restricted=not parts[4].startswith("*"),
    )
    cron.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))  # InputError if it never fires
    return cron


def _parse_field(text: str, name: str, lo: int, hi: int, names: tuple[str, ...]) -> frozenset[int]:
    def bad(why: str) -> InputError:
        return InputError(f"cron {name} field {shown(text)}: {why} (allowed {lo}-{hi}{_names_hint(names)})")

    def number(s: str) -> int:
        if names and s.upper() in names:
            return names.index(s.upper()) + lo
        if not s.isdigit():
            raise bad(f"{shown(s)} is not a number" + (" or a name" if names else ""))
        v = int(s)
        if not lo <= v <= hi:
            raise bad(f"{v} is out of range")
        return v

    out: set[int] = set()
    for item in text.split(","):
        if not item:
            raise bad("empty list item")
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad(f"step {shown(step_text)} must be a positive whole number")
            step = int(step_text)
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = number(a), number(b)
            if first > last:
                raise bad(f"range {shown(body)} runs backwards")
        else:
            first = number(body)
            last = hi if slash else first  # "a/n": from a to the end in steps of n
        out.update(range(first, last + 1, step))
    return frozenset(out)


def _names_hint(names: tuple[str, ...]) -> str:
    return f" or {names[0]}-{names[-1]}" if names else ""
