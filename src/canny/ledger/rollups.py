"""Report sums from the rollup tables, and from rows only where rollups cannot answer.

Migration ``ledger.0007_rollups`` (:mod:`canny.ledger.rollup_schema`) keeps tables of
sums, maintained by triggers in the transaction that inserts or deletes each attempt:
``rollup_hours``, ``rollup_days`` and ``rollup_months`` (per UTC hour, day and month, and
per model, outcome, tag set, project and key fingerprint), ``rollup_totals`` (per UTC hour,
nothing else) and ``attempt_retries`` (each row of a call paired with its earlier rows).

A report in a time zone groups *local* days, ISO weeks and months. Any zone whose offsets
are whole hours (all but a handful) cuts local periods on UTC hour boundaries, so a range
splits exactly into (:func:`plan`):

- UTC months, then UTC days, inside the range whose attempts all fall in one local period
  (all of them for ``--by model``; not those holding a local midnight for ``--by day``):
  ``rollup_months`` and ``rollup_days``;
- the other whole hours inside the range (the range's first and last partial days, and
  the days a local period boundary cuts): ``rollup_hours``;
- the partial hours at the ends of the range (``--since 30m``): the ``attempts`` rows.

A report grouped by time alone with no filter reads ``rollup_totals`` for all whole hours.

A zone with a half-hour offset (Asia/Kolkata, America/St_Johns), ``--by session``,
``--savings`` (its rates depend on each attempt) and ``--reprice`` (in
:mod:`canny.reports`) read rows. Distinct calls are counted from ``attempt_retries``: a
row repeats a call in a group when an earlier row of the call is in that group too.

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
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from itertools import product
from typing import Any

from canny.ledger._report_sql import (
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
from canny.ledger.rollup_schema import DIM_TABLES
from canny.pricing import CacheSavingRates
from canny.units import from_us, to_us
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

#: What a report sums over ``rollup_totals`` rows, in the order of ``ROW_SUMS``.
TOTALS_SUMS = ", ".join(
    (
        "sum(a.attempts)",
        *(f"sum(a.{b.column})" for b in TOKEN_BUCKETS),
        "sum(a.cost_pico), sum(a.priced), sum(a.failures)",
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
    months: list[Interval] = field(default_factory=list)


def _floor(us: int, grain: int) -> int:
    return us - us % grain


def _ceil(us: int, grain: int) -> int:
    return -_floor(-us, grain)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
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


def _month_after(us: int) -> int:
    moment = from_us(us)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return to_us(datetime(year, month, 1, tzinfo=UTC))


def whole_hours(tz: tzinfo, lo: int, hi: int) -> bool:
    """Whether every local period boundary of ``tz`` in ``[lo, hi]`` is on a UTC hour."""
    segments = utc_offset_segments(tz, lo, hi)
    return all(offset % 3600 == 0 and (i == 0 or start % HOUR_US == 0) for i, (start, offset) in enumerate(segments))


def plan(lo: int, hi: int, tz: tzinfo, time_keys: Sequence[str] = ()) -> Plan:
    """Split ``[lo, hi)`` into row, hour, day and month intervals (see the module
    docstring). A UTC month or day goes to its rollup only if each of ``time_keys`` is the
    same at both its ends (keys only grow with time, so then it is the same throughout)."""

    def same(start: int, end: int) -> bool:
        return all(_local_key(k, tz, start) == _local_key(k, tz, end - 1) for k in time_keys)

    lo_h, hi_h = _ceil(lo, HOUR_US), _floor(hi, HOUR_US)
    if lo_h >= hi_h:
        return Plan(rows=[(lo, hi)])
    rows = _merge([(lo, lo_h), (hi_h, hi)])
    lo_d, hi_d = _ceil(lo_h, DAY_US), _floor(hi_h, DAY_US)
    if lo_d >= hi_d:
        return Plan(rows=rows, hours=[(lo_h, hi_h)])
    hours: list[Interval] = [(lo_h, lo_d), (hi_d, hi_h)]
    days: list[Interval] = []
    months: list[Interval] = []
    day = lo_d
    while day < hi_d:
        month_end = _month_after(day)
        if from_us(day).day == 1 and month_end <= hi_d and same(day, month_end):
            months.append((day, month_end))
            day = month_end
            continue
        (days if same(day, day + DAY_US) else hours).append((day, day + DAY_US))
        day += DAY_US
    return Plan(rows=rows, hours=_merge(hours), days=_merge(days), months=_merge(months))


def _within(intervals: Sequence[Interval], column: str = "a.started_at_us") -> tuple[str, list[int]]:
    parts = [f"({column} >= ? AND {column} < ?)" for _ in intervals]
    params = [bound for interval in intervals for bound in interval]
    return "(" + " OR ".join(parts) + ")", params


def filter_sql(filters: ReportFilter, alias: str, prefix: str = "") -> tuple[str, list[Any]]:
    """`` AND ...`` conditions of the project, model and outcome ``filters`` on ``alias``
    (columns named ``prefix`` + the attempts' names). Tags are filtered in Python
    (:meth:`ReportFilter.keeps_tags`): rollup rows hold tag sets."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, values in (("project", filters.projects), ("model", filters.models), ("outcome", filters.outcomes)):
        if values:
            clauses.append(f"{alias}.{prefix}{column} IN ({', '.join('?' * len(values))})")
            params += values
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
    calls: bool = True,
) -> tuple[list[GroupTotals], GroupTotals]:
    """The report sums (see :meth:`canny.ledger.ReportingLedger.aggregate`) over the
    queries run by ``stream``. ``calls=False``: distinct calls are not counted (``calls``
    is 0 everywhere), which spares the read of ``attempt_retries`` (a chart of cost,
    attempts or failures needs no calls)."""
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
        # A range covering much of the table is faster as a plain scan than through the index.
        whole = "SELECT {}(started_at_us) FROM attempts"
        ((oldest, newest),) = list(stream(f"SELECT ({whole.format('min')}), ({whole.format('max')})", []))
        sums.rows([(lo, hi)], scan=(hi - lo) * 4 > int(newest) - int(oldest))
    elif len(time_keys) == len(keys) and flt == ReportFilter():
        lo_h, hi_h = _ceil(lo, HOUR_US), _floor(hi, HOUR_US)
        if lo_h < hi_h:
            sums.rows(_merge([(lo, lo_h), (hi_h, hi)]))
            sums.totals([(lo_h, hi_h)])
        else:
            sums.rows([(lo, hi)])
    else:
        chosen = plan(lo, hi, tz, time_keys)
        sums.rows(chosen.rows)
        for table, intervals in zip(DIM_TABLES, (chosen.hours, chosen.days, chosen.months), strict=True):
            sums.rollup(table, intervals)
    groups, total = sums.result()
    exponent = None if savings is None else savings.exponent
    if not calls:  # every row "repeats a call": calls = attempts - repeats = 0
        out = [totals(k1, row, int(row[0]), exponent, subkey=k2) for (k1, k2), row in groups.items()]
        return out, totals("total", total, int(total[0]), exponent)
    everything = since_us is None and until_us is None
    repeats, overall = _repeats(stream, groupings, None if everything else lo, None if everything else hi, flt)
    out = [totals(k1, row, repeats.get((k1, k2), 0), exponent, subkey=k2) for (k1, k2), row in groups.items()]
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
        self.width = 4 + len(TOKEN_BUCKETS) + (1 if savings is not None else 0)
        self.groups: dict[Pair, list[int]] = {}
        self.total = [0] * self.width
        self.tagged = any(g.by == "tag" for g in groupings) or bool(filters.tags) or not filters.offline

    def _select(
        self, table: str, sums: str, intervals: Sequence[Interval], where: str = "", *, scan: bool = False
    ) -> tuple[str, list[Any]]:
        keys = [*("0" if g.by == "tag" else g.key("a") for g in self.groupings), "0", "0"][:2]
        tags = "a.tags" if self.tagged else "'[]'"
        within, params = _within(intervals, "+a.started_at_us" if scan else "a.started_at_us")
        sql = f"SELECT {keys[0]}, {keys[1]}, {tags}, {sums} FROM {table} a WHERE {within}{where} GROUP BY 1, 2, 3"
        return sql, params

    def rows(self, intervals: Sequence[Interval], *, scan: bool = False) -> None:
        if intervals:
            columns, extra_params = self.extra
            flt, flt_params = filter_sql(self.filters, "a")
            sql, params = self._select("attempts", ROW_SUMS + columns, intervals, flt, scan=scan)
            self._add(self.stream(sql, [*extra_params, *params, *flt_params]))

    def rollup(self, table: str, intervals: Sequence[Interval]) -> None:
        if intervals:
            flt, flt_params = filter_sql(self.filters, "a")
            sql, params = self._select(table, ROLLUP_SUMS, intervals, flt)
            self._add(self.stream(sql, [*params, *flt_params]))

    def totals(self, intervals: Sequence[Interval]) -> None:
        if intervals:
            self._add(self.stream(*self._select("rollup_totals", TOTALS_SUMS, intervals)))

    def _add(self, rows: Iterable[tuple[Any, ...]]) -> None:
        for k1, k2, tag_text, *values in rows:
            numbers = [int(v or 0) for v in values]
            tags = _tags(tag_text)
            if not numbers[0] or not self.filters.keeps_tags(tags):
                continue
            _accumulate(self.total, numbers)
            for pair in _pairs(self.groupings, (k1, k2), tags):
                _accumulate(self.groups.setdefault(pair, [0] * self.width), numbers)

    def result(self) -> tuple[dict[Pair, list[int]], list[int]]:
        return self.groups, self.total


Pair = tuple[str | None, str | None]


def _pairs(groupings: Sequence[Grouping], keys: Sequence[Any], tags: tuple[str, ...]) -> list[Pair]:
    """The (group, subgroup) labels a row with these keys and tags belongs to."""
    labels: list[Sequence[str | None]] = [
        (tags or (None,)) if g.by == "tag" else (g.label(k),) for g, k in zip(groupings, keys, strict=False)
    ]
    while len(labels) < 2:
        labels.append((None,))
    return list(product(labels[0], labels[1]))


def _accumulate(into: list[int], values: Sequence[int]) -> None:
    for i, value in enumerate(values):
        into[i] += value


def _repeats(
    stream: Stream, groupings: Sequence[Grouping], lo: int | None, hi: int | None, filters: ReportFilter
) -> tuple[dict[Pair, int], int]:
    """Per (group, subgroup): how many rows repeat a call already seen in that group; and
    how many repeat one seen anywhere (both among the rows in ``[lo, hi)`` passing
    ``filters``), from ``attempt_retries``. ``None`` bounds: the whole ledger, read with
    no condition on times (a plain scan, and the overall count from an index alone)."""

    def where(alias: str) -> tuple[str, list[Any]]:
        clauses, params = ["1 = 1"], []
        for prefix in ("", "e_"):
            flt, flt_params = filter_sql(filters, alias, prefix)
            if lo is not None and hi is not None:
                within, bounds = _within([(lo, hi)], f"{alias}.{prefix}started_at_us")
                flt, flt_params = f" AND {within}{flt}", [*bounds, *flt_params]
            clauses.append(flt)
            params += flt_params
        return "".join(clauses), params

    cond, params = where("l")
    plain = [g for g in groupings if g.by != "tag"]

    def same(alias: str) -> str:
        return "".join(f" AND {g.key(alias)} {_same(g.dialect)} {g.key(alias, 'e_')}" for g in plain)

    if filters.tags or not filters.offline:  # tag filters: every link is read
        return _link_groups(stream, groupings, filters, cond, params)
    keys = [*(g.key("l") for g in plain), "0", "0"][:2]
    if len(plain) == len(groupings):
        # A row has one group: the rows repeating a call anywhere add up over the groups.
        match = f"CASE WHEN 1 = 1{same('l')} THEN l.attempt_id END"
        sql = (
            f"SELECT {keys[0]}, {keys[1]}, count(DISTINCT {match}), count(DISTINCT l.attempt_id) "
            f"FROM attempt_retries l WHERE {cond} GROUP BY 1, 2"
        )
        per_group: dict[Pair, int] = {}
        overall = 0
        for k1, k2, in_group, in_range in stream(sql, params):
            (pair,) = _pairs(groupings, (k1, k2), ())
            per_group[pair] = int(in_group)
            overall += int(in_range)
        return per_group, overall
    # By tag: a row with an earlier row of the same tag set (and the same other key)
    # repeats its call in each of its groups; the few others are compared in Python.
    sql = (
        f"SELECT {keys[0]}, {keys[1]}, l.tags, count(DISTINCT l.attempt_id) FROM attempt_retries l "
        f"WHERE {cond} AND l.tags = l.e_tags{same('l')} GROUP BY 1, 2, 3"
    )
    per_group = {}
    for k1, k2, tags_text, count in stream(sql, params):
        values = iter((k1, k2))
        for pair in _pairs(groupings, [None if g.by == "tag" else next(values) for g in groupings], _tags(tags_text)):
            per_group[pair] = per_group.get(pair, 0) + int(count)
    covered, covered_params = where("c")
    rest = (
        f" AND l.tags <> l.e_tags AND l.attempt_id NOT IN (SELECT c.attempt_id FROM attempt_retries c "
        f"WHERE {covered} AND c.tags = c.e_tags{same('c')})"
    )
    others, _ = _link_groups(stream, groupings, filters, cond + rest, [*params, *covered_params])
    for pair, count in others.items():
        per_group[pair] = per_group.get(pair, 0) + count
    ((overall,),) = list(stream(f"SELECT count(DISTINCT l.attempt_id) FROM attempt_retries l WHERE {cond}", params))
    return per_group, int(overall or 0)


def _link_groups(
    stream: Stream, groupings: Sequence[Grouping], filters: ReportFilter, cond: str, params: Sequence[Any]
) -> tuple[dict[Pair, int], int]:
    """:func:`_repeats` in Python over the links matching ``cond`` (tag sets compared here)."""
    plain = [g for g in groupings if g.by != "tag"]
    columns = "".join(f", {g.key('l', p)}" for p in ("", "e_") for g in plain)
    sql = f"SELECT l.attempt_id, l.tags, l.e_tags{columns} FROM attempt_retries l WHERE {cond}"
    per_group: dict[Pair, set[int]] = {}
    anywhere: set[int] = set()
    for attempt_id, tags_text, e_tags_text, *values in stream(sql, params):
        tags, e_tags = _tags(tags_text), _tags(e_tags_text)
        if not (filters.keeps_tags(tags) and filters.keeps_tags(e_tags)):
            continue
        anywhere.add(attempt_id)
        mine, theirs = iter(values[: len(plain)]), iter(values[len(plain) :])
        here = _pairs(groupings, [None if g.by == "tag" else next(mine) for g in groupings], tags)
        there = _pairs(groupings, [None if g.by == "tag" else next(theirs) for g in groupings], e_tags)
        for pair in set(here) & set(there):
            per_group.setdefault(pair, set()).add(attempt_id)
    return {pair: len(ids) for pair, ids in per_group.items()}, len(anywhere)


def _same(dialect: Dialect) -> str:
    return "IS" if dialect == "sqlite" else "IS NOT DISTINCT FROM"


def _month_start(us: int) -> int:
    moment = from_us(us)
    return to_us(datetime(moment.year, moment.month, 1, tzinfo=UTC))


def _attempts_in(tx: Transaction, lo: int, hi: int) -> int:
    """About how many attempts started in ``[lo, hi)`` (whole UTC hours from ``rollup_totals``)."""
    rows = tx.execute(
        "SELECT coalesce(sum(attempts), 0) FROM rollup_totals WHERE started_at_us >= ? AND started_at_us < ?",
        (_floor(lo, HOUR_US), _ceil(hi, HOUR_US)),
    )
    return int(rows[0][0] or 0)


def _signed_windows(tx: Transaction, start_us: int, end_us: int) -> list[tuple[int, int, int]]:
    """``[start_us, end_us)`` as (sign, lo, hi) intervals whose signed sums add up to its
    own: where a month is only partly inside and holds fewer attempts outside the window
    than inside it, the whole month (one ``rollup_months`` read) minus the part outside."""
    lo, hi = start_us, end_us
    minus: list[tuple[int, int, int]] = []
    left = _month_start(start_us)
    if left < start_us:
        inside_end = min(_month_after(left), end_us)
        if _attempts_in(tx, left, start_us) < _attempts_in(tx, start_us, inside_end):
            lo = left
            minus.append((-1, left, start_us))
    right = _month_start(end_us - 1)
    if right < end_us < _month_after(right):
        after = _month_after(right)
        if _attempts_in(tx, end_us, after) < _attempts_in(tx, max(right, start_us), end_us):
            hi = after
            minus.append((-1, end_us, after))
    return [(1, lo, hi), *minus]


def window_cost(tx: Transaction, start_us: int, end_us: int, *, project: str = "", tag: str = "", key: str = "") -> int:
    """The cost (pico-dollars) of the attempts started in ``[start_us, end_us)`` in one
    budget scope (``''``: any), from the rollups, the partial hours at the ends from rows.
    Milliseconds whatever the window holds: with no scope, ``rollup_totals`` (one row per
    hour); in a scope, whole months from ``rollup_months`` (a partly covered month too,
    minus its part outside the window, when that is smaller), the rest from days and hours."""
    if start_us >= end_us:
        return 0
    if not (project or tag or key):
        return _unscoped_cost(tx, start_us, end_us)
    spent = 0
    for sign, lo, hi in _signed_windows(tx, start_us, end_us):
        spent += sign * _scoped_cost(tx, lo, hi, project=project, tag=tag, key=key)
    return spent


def _unscoped_cost(tx: Transaction, start_us: int, end_us: int) -> int:
    lo_h, hi_h = _ceil(start_us, HOUR_US), _floor(end_us, HOUR_US)
    rows, hours = (
        ([(start_us, end_us)], []) if lo_h >= hi_h else (_merge([(start_us, lo_h), (hi_h, end_us)]), [(lo_h, hi_h)])
    )
    spent = 0
    for table, intervals in (("attempts", rows), ("rollup_totals", hours)):
        if intervals:
            within, params = _within(intervals)
            spent += int(
                tx.execute(f"SELECT coalesce(sum(a.cost_pico), 0) FROM {table} a WHERE {within}", params)[0][0] or 0
            )
    return spent


def _mostly(tx: Transaction, table: str, intervals: Sequence[Interval]) -> bool:
    """Whether ``intervals`` cover most of ``rollup_months`` (then a plain scan of that small
    table beats looking each row up through its index)."""
    if table != "rollup_months":
        return False
    edge = "(SELECT {}(started_at_us) FROM rollup_months)"  # one aggregate each: an index probe
    ((first, last),) = tx.execute(f"SELECT {edge.format('min')}, {edge.format('max')}")
    if first is None:
        return False
    return sum(hi - lo for lo, hi in intervals) * 2 > int(last) - int(first)


def _scoped_cost(tx: Transaction, start_us: int, end_us: int, *, project: str, tag: str, key: str) -> int:
    """:func:`window_cost` of one interval in a scope, read through :func:`plan`."""
    if start_us >= end_us:
        return 0
    chosen = plan(start_us, end_us, UTC, ())
    scope: list[str] = []
    scope_params: list[Any] = []
    if project:
        scope.append("a.project = ?")
        scope_params.append(project)
    if key:
        scope.append("a.key_fingerprint = ?")
        scope_params.append(key)
    if tag:  # a cheap test first (the tag's JSON text is in the set's); the exact one in Python
        scope.append("instr(a.tags, ?) > 0" if tx.dialect == "sqlite" else "strpos(a.tags, ?) > 0")
        scope_params.append(json.dumps(tag, ensure_ascii=False))
    cond = "".join(f" AND {c}" for c in scope)
    spent = 0
    sources = (("attempts", chosen.rows), *zip(DIM_TABLES, (chosen.hours, chosen.days, chosen.months), strict=True))
    for table, intervals in sources:
        if not intervals:
            continue
        within, params = _within(intervals, "+a.started_at_us" if _mostly(tx, table, intervals) else "a.started_at_us")
        if not tag:
            sql = f"SELECT coalesce(sum(a.cost_pico), 0) FROM {table} a WHERE {within}{cond}"
            spent += int(tx.execute(sql, [*params, *scope_params])[0][0] or 0)
            continue
        sql = f"SELECT a.tags, coalesce(sum(a.cost_pico), 0) FROM {table} a WHERE {within}{cond} GROUP BY a.tags"
        spent += sum(int(c or 0) for text, c in tx.execute(sql, [*params, *scope_params]) if tag in _tags(text))
    return spent
