"""Report sums from the rollup tables, and from rows only where rollups cannot answer.

Migration ``ledger.0005_rollups`` keeps two tables of sums, maintained by triggers in the
transaction that inserts or deletes each attempt: ``rollup_hours`` (one row per UTC hour)
and ``rollup_days`` (one row per UTC day), each per model, outcome, tag set, project and
key fingerprint, with the attempts, every usage bucket, the cost of the priced attempts
and how many were priced.

A report in a time zone groups *local* days, ISO weeks and months. Any zone whose offsets
are whole hours (all but a handful) cuts local periods on UTC hour boundaries, so a range
splits exactly into (:func:`plan`):

- UTC days inside the range whose attempts all fall in one local period (every day for
  ``--by model``; days not holding a local midnight for ``--by day``): ``rollup_days``;
- the other whole hours inside the range (the range's first and last partial days, and
  the days a local period boundary cuts): ``rollup_hours``;
- the partial hours at the ends of the range (``--since 30m``): the ``attempts`` rows.

A zone with a half-hour offset (Asia/Kolkata, America/St_Johns), ``--by session``,
``--savings`` (its rates depend on each attempt) and ``--reprice`` (in
:mod:`canny.reports`) read rows. Distinct calls are always counted from rows, through the
small index of the rows that repeat a call (``call_seq > 0``): a rollup cannot know
whether two attempts share a call.

Tags: a rollup row holds a tag *set*; a report expands it, so an attempt counts once per
tag under ``--by tag`` and once in the total, as rows do.
"""

# SQL here is built from column names, validated groupings and integers computed here;
# every value from a caller is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from functools import lru_cache
from itertools import product
from typing import Any

from canny.ledger._sql import (
    ANSWERS_SQL,
    ROW_SUMS,
    Grouping,
    empty_total,
    range_sql,
    savings_sql,
    totals,
    utc_offset_segments,
)
from canny.ledger.migrations import Dialect, Transaction
from canny.ledger.records import GROUP_BYS, GroupBy, GroupTotals, ReportFilter
from canny.pricing import CacheSavingRates
from canny.units import from_us
from canny.usage import TOKEN_BUCKETS

__all__ = ["HOUR_US", "ROLLUP_SUMS", "Plan", "aggregate", "plan", "window_cost"]

HOUR_US = 3600 * 10**6
DAY_US = 24 * HOUR_US
TIME_KEYS = ("day", "week", "month")

#: What a report sums over rollup rows (alias ``a``), in the order of ``ROW_SUMS``.
ROLLUP_SUMS = ", ".join(
    (
        "sum(a.attempts)",
        *(f"sum(a.{b.column})" for b in TOKEN_BUCKETS),
        "sum(a.cost_pico), sum(a.priced)",
        f"sum(CASE WHEN a.outcome IN ({ANSWERS_SQL}) THEN 0 ELSE a.attempts END)",
    )
)

Stream = Callable[[str, Sequence[Any]], Iterable[tuple[Any, ...]]]
Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Plan:
    """Where each part of a range ``[lo, hi)`` (UTC microseconds) is summed from."""

    rows: list[Interval] = field(default_factory=list)
    hours: list[Interval] = field(default_factory=list)
    days: list[Interval] = field(default_factory=list)


def _floor(us: int, grain: int) -> int:
    return us - us % grain


def _ceil(us: int, grain: int) -> int:
    return -_floor(-us, grain)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in intervals:
        if lo >= hi:
            continue
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _local_key(by: str, tz: tzinfo, us: int) -> tuple[int, ...]:
    local = from_us(us).astimezone(tz)
    if by == "day":
        return (local.toordinal(),)
    if by == "week":
        year, week, _ = local.isocalendar()
        return (year, week)
    return (local.year, local.month)


def whole_hours(tz: tzinfo, lo: int, hi: int) -> bool:
    """Whether every local period boundary of ``tz`` in ``[lo, hi]`` is on a UTC hour."""
    segments = utc_offset_segments(tz, lo, hi)
    return all(offset % 3600 == 0 and (i == 0 or start % HOUR_US == 0) for i, (start, offset) in enumerate(segments))


def plan(lo: int, hi: int, tz: tzinfo, time_keys: Sequence[str] = ()) -> Plan:
    """Split ``[lo, hi)`` into row, hour and day intervals (see the module docstring). A UTC
    day goes to ``rollup_days`` only if each of ``time_keys`` is the same at both its ends."""
    lo_h, hi_h = _ceil(lo, HOUR_US), _floor(hi, HOUR_US)
    if lo_h >= hi_h:
        return Plan(rows=[(lo, hi)])
    rows = _merge([(lo, lo_h), (hi_h, hi)])
    lo_d, hi_d = _ceil(lo_h, DAY_US), _floor(hi_h, DAY_US)
    if lo_d >= hi_d:
        return Plan(rows=rows, hours=[(lo_h, hi_h)])
    good: list[Interval] = []
    cut: list[Interval] = []
    for day in range(lo_d, hi_d, DAY_US):
        same = all(_local_key(k, tz, day) == _local_key(k, tz, day + DAY_US - 1) for k in time_keys)
        (good if same else cut).append((day, day + DAY_US))
    hours = _merge(sorted([(lo_h, lo_d), *cut, (hi_d, hi_h)]))
    return Plan(rows=rows, hours=hours, days=_merge(good))


def _within(intervals: Sequence[Interval], column: str = "a.started_at_us") -> tuple[str, list[int]]:
    parts = [f"({column} >= ? AND {column} < ?)" for _ in intervals]
    params = [bound for interval in intervals for bound in interval]
    return "(" + " OR ".join(parts) + ")", params


def filter_sql(filters: ReportFilter, alias: str, *, tags: bool) -> tuple[str, list[Any]]:
    """`` AND ...`` conditions of ``filters`` on ``alias`` (tags only with ``tags``: rollup
    rows hold tag sets, filtered in Python by :meth:`ReportFilter.keeps_tags`)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, values in (("project", filters.projects), ("model", filters.models), ("outcome", filters.outcomes)):
        if values:
            clauses.append(f"{alias}.{column} IN ({', '.join('?' * len(values))})")
            params += values
    if tags:
        has = "EXISTS (SELECT 1 FROM attempt_tags ft WHERE ft.attempt_id = {}.id AND ft.tag {})"
        if filters.tags:
            clauses.append(has.format(alias, f"IN ({', '.join('?' * len(filters.tags))})"))
            params += filters.tags
        if not filters.offline:
            clauses.append("NOT " + has.format(alias, "= 'offline'"))
    return "".join(f" AND {c}" for c in clauses), params


@lru_cache(maxsize=4096)
def _tags(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(json.loads(text or "[]")))


def aggregate(
    stream: Stream,
    dialect: Dialect,
    by: GroupBy | None,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    tz: tzinfo,
    savings: CacheSavingRates | None = None,
    then: GroupBy | None = None,
    filters: ReportFilter | None = None,
) -> tuple[list[GroupTotals], GroupTotals]:
    """The report sums (see :meth:`canny.ledger.ReportingLedger.aggregate`) over the
    queries run by ``stream``."""
    keys: tuple[GroupBy, ...] = tuple(k for k in (by, then) if k is not None)
    for key in keys:
        if key not in GROUP_BYS:
            raise ValueError(f"cannot group by {key!r}; expected one of {', '.join(GROUP_BYS)}")
    if then is not None and (by is None or then == by):
        raise ValueError("a second grouping needs a first one, different from it")
    flt = filters or ReportFilter()
    where, params = range_sql(since_us, until_us, "a.")
    edge = "SELECT {}(a.started_at_us) FROM attempts a" + where
    ((first, last),) = list(stream(f"SELECT ({edge.format('min')}), ({edge.format('max')})", [*params, *params]))
    if first is None:
        return [], empty_total()
    lo = since_us if since_us is not None else int(first)
    hi = until_us if until_us is not None else int(last) + 1
    groupings = [Grouping(k, dialect, tz, min(lo, int(first)) - DAY_US, max(hi, int(last)) + DAY_US) for k in keys]
    time_keys = [k for k in keys if k in TIME_KEYS]
    exact = savings is not None or "session" in keys or (time_keys and not whole_hours(tz, lo, hi))
    sums = _Sums(stream, groupings, flt, savings, dialect)
    if exact:
        sums.rows([(lo, hi)])
    else:
        chosen = plan(lo, hi, tz, time_keys)
        sums.rows(chosen.rows)
        sums.rollup("rollup_hours", chosen.hours)
        sums.rollup("rollup_days", chosen.days)
    repeats = _repeats(stream, groupings, where, params, flt)
    if "tag" in keys:
        overall = sum(n for _, n in _repeats(stream, [], where, params, flt).values())
    else:
        overall = sum(n for _, n in repeats.values())
    groups, total = sums.result()
    exponent = None if savings is None else savings.exponent
    out = [totals(k1, row, repeats.get((k1, k2), (0, 0))[0], exponent, subkey=k2) for (k1, k2), row in groups.items()]
    return out, totals("total", total, overall, exponent)


class _Sums:
    """Sums per (group, subgroup) label, accumulated from row and rollup queries."""

    def __init__(
        self,
        stream: Stream,
        groupings: Sequence[Grouping],
        filters: ReportFilter,
        savings: CacheSavingRates | None,
        dialect: Dialect,
    ) -> None:
        self.stream = stream
        self.groupings = list(groupings)
        self.filters = filters
        self.extra = savings_sql(savings, dialect)
        self.width = 3 + len(TOKEN_BUCKETS) + (1 if savings is not None else 0) + 1
        self.groups: dict[tuple[str | None, str | None], list[int]] = {}
        self.total = [0] * self.width

    def _keys(self) -> list[str]:
        keys = ["0" if g.by == "tag" else g.key("a") for g in self.groupings]
        return [*keys, "0", "0"][:2]

    def rows(self, intervals: Sequence[Interval]) -> None:
        if not intervals:
            return
        columns, extra_params = self.extra
        within, params = _within(intervals)
        flt, flt_params = filter_sql(self.filters, "a", tags=False)
        k1, k2 = self._keys()
        sql = f"SELECT {k1}, {k2}, a.tags, {ROW_SUMS}{columns} FROM attempts a WHERE {within}{flt} GROUP BY 1, 2, 3"
        self._add(self.stream(sql, [*extra_params, *params, *flt_params]))

    def rollup(self, table: str, intervals: Sequence[Interval]) -> None:
        if not intervals:
            return
        within, params = _within(intervals)
        flt, flt_params = filter_sql(self.filters, "a", tags=False)
        k1, k2 = self._keys()
        sql = f"SELECT {k1}, {k2}, a.tags, {ROLLUP_SUMS} FROM {table} a WHERE {within}{flt} GROUP BY 1, 2, 3"
        self._add(self.stream(sql, [*params, *flt_params]))

    def _labels(self, grouping: Grouping, key: Any, tags: tuple[str, ...]) -> Sequence[str | None]:
        if grouping.by == "tag":
            return tags or (None,)
        return (grouping.label(key),)

    def _add(self, rows: Iterable[tuple[Any, ...]]) -> None:
        for k1, k2, tag_text, *values in rows:
            numbers = [int(v or 0) for v in values]
            if not numbers[0]:
                continue
            tags = _tags(tag_text)
            if not self.filters.keeps_tags(tags):
                continue
            _accumulate(self.total, numbers)
            firsts = self._labels(self.groupings[0], k1, tags) if self.groupings else ()
            seconds = self._labels(self.groupings[1], k2, tags) if len(self.groupings) > 1 else (None,)
            for pair in product(firsts, seconds):
                _accumulate(self.groups.setdefault(pair, [0] * self.width), numbers)

    def result(self) -> tuple[dict[tuple[str | None, str | None], list[int]], list[int]]:
        return self.groups, self.total


def _accumulate(into: list[int], values: Sequence[int]) -> None:
    for i, value in enumerate(values):
        into[i] += value


def _repeats(
    stream: Stream, groupings: Sequence[Grouping], where: str, params: Sequence[Any], filters: ReportFilter
) -> dict[tuple[str | None, str | None], tuple[int, int]]:
    """Per (group, subgroup) label: (rows repeating a call already seen in that group, rows
    repeating a call already seen anywhere in the range), over the rows passing ``filters``."""
    also = where.replace(" WHERE ", " AND ")
    flt_a, flt_params = filter_sql(filters, "a", tags=True)
    flt_r, _ = filter_sql(filters, "r", tags=True)
    earlier = (
        "SELECT 1 FROM attempts r WHERE r.call_id = a.call_id AND r.call_seq < a.call_seq"
        + also.replace("a.started_at_us", "r.started_at_us")
        + flt_r
    )
    same = " AND ".join(g.same_group() for g in groupings) or "1 = 1"
    keys = [*(g.key("a") for g in groupings), "0", "0"][:2]
    join = "".join(g.join("a") for g in groupings)
    # A row repeating its call inside its group repeats it in the range too: the second
    # EXISTS runs only for the rare rows whose earlier attempts fell in another group.
    inner = (
        f"SELECT {keys[0]} AS k1, {keys[1]} AS k2, a.call_id, a.call_seq, "
        f"CASE WHEN EXISTS ({earlier} AND {same}) THEN 1 ELSE 0 END AS g "
        f"FROM attempts a{join} WHERE a.call_seq > 0{also}{flt_a}"
    )
    # MATERIALIZED keeps the planner from inlining g, which would run its EXISTS again.
    sql = (
        f"WITH a AS MATERIALIZED ({inner}) "
        f"SELECT k1, k2, sum(g), sum(CASE WHEN g = 1 THEN 1 WHEN EXISTS ({earlier}) THEN 1 ELSE 0 END) "
        "FROM a GROUP BY k1, k2"
    )
    # Parameters: `earlier` (range, filters) in g, the range and filters of a, then `earlier` again.
    once = [*params, *flt_params]
    rows = stream(sql, [*once, *once, *once])
    labels = [g.label for g in groupings]
    out: dict[tuple[str | None, str | None], tuple[int, int]] = {}
    for k1, k2, in_group, in_range in rows:
        pair = (labels[0](k1) if labels else None, labels[1](k2) if len(labels) > 1 else None)
        out[pair] = (int(in_group or 0), int(in_range or 0))
    return out


def window_cost(tx: Transaction, start_us: int, end_us: int, *, project: str = "", tag: str = "", key: str = "") -> int:
    """The cost (pico-dollars) of the attempts started in ``[start_us, end_us)`` in one
    budget scope (``''``: any): interior days and hours from the rollups, the partial
    hours at the ends from rows. Milliseconds whatever the window holds."""
    chosen = plan(start_us, end_us, UTC, ())
    scope: list[str] = []
    scope_params: list[Any] = []
    if project:
        scope.append("a.project = ?")
        scope_params.append(project)
    if key:
        scope.append("a.key_fingerprint = ?")
        scope_params.append(key)
    cond = "".join(f" AND {c}" for c in scope)
    spent = 0
    sources = (("attempts", chosen.rows), ("rollup_hours", chosen.hours), ("rollup_days", chosen.days))
    for table, intervals in sources:
        if not intervals:
            continue
        within, params = _within(intervals)
        if not tag:
            sql = f"SELECT coalesce(sum(a.cost_pico), 0) FROM {table} a WHERE {within}{cond}"
            spent += int(tx.execute(sql, [*params, *scope_params])[0][0] or 0)
            continue
        sql = f"SELECT a.tags, coalesce(sum(a.cost_pico), 0) FROM {table} a WHERE {within}{cond} GROUP BY a.tags"
        spent += sum(int(c or 0) for text, c in tx.execute(sql, [*params, *scope_params]) if tag in _tags(text))
    return spent
