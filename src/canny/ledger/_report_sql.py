"""The SQL of reports, shared by the ledgers and :mod:`canny.ledger.rollups`: time zones
turned into integer offsets, group keys and labels, the sums a report takes, and the cache
savings column.

Times are stored as integer microseconds since the epoch (UTC). A report in a time zone
needs local calendar periods; rather than depend on the database's time-zone support,
:func:`utc_offset_segments` asks Python's ``zoneinfo`` for the offsets in force over the
queried range, and the query adds them with a ``CASE`` on the start time. Local days and
ISO weeks are then plain integer division; months compare the start time with the UTC
instants where local months begin (a balanced ``CASE`` tree). No dialect-specific date
function is involved, so both backends bucket identically.
"""

# SQL here is assembled from column names, validated ``--by`` values and integers computed
# in this module; every value that comes from a caller is a bound parameter.

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from canny.ledger.migrations import Dialect
from canny.ledger.records import ANSWER_OUTCOMES, GroupBy, GroupTotals
from canny.pricing import CacheSavingRates, CacheWeights, RateTree
from canny.units import from_us, pico_to_usd, to_us
from canny.usage import BUCKETS, TOKEN_BUCKETS, Usage

__all__ = [
    "ANSWERS_SQL",
    "ROW_SUMS",
    "Grouping",
    "day_label",
    "empty_total",
    "range_sql",
    "savings_sql",
    "totals",
    "utc_offset_segments",
    "week_label",
]

_EPOCH_DAY = date(1970, 1, 1)


def day_label(day: int) -> str:
    """``YYYY-MM-DD`` of a day number counted from 1970-01-01."""
    return (_EPOCH_DAY + timedelta(days=day)).isoformat()


def week_label(week: int) -> str:
    """ISO week label (``2026-W48``) of week number ``(day + 3) // 7`` (weeks start Monday)."""
    year, number, _ = (_EPOCH_DAY + timedelta(days=7 * week - 3)).isocalendar()
    return f"{year}-W{number:02d}"


def _offset(tz: tzinfo, us: int) -> int:
    delta = from_us(us).astimezone(tz).utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0


def utc_offset_segments(tz: tzinfo, lo_us: int, hi_us: int) -> list[tuple[int, int]]:
    """``[(from_us, offset_seconds), ...]``: the UTC offsets of ``tz`` in force over
    ``[lo_us, hi_us]``, each from its transition on (the first from ``lo_us``)."""
    first = _offset(tz, lo_us)
    segments = [(lo_us, first)]
    if getattr(tz, "key", None) == "UTC" or isinstance(tz, type(UTC)):
        return segments
    span = max(hi_us - lo_us, 0)
    step = 6 * 3600 * 10**6 if span < 200 * 365 * 86400 * 10**6 else 7 * 86400 * 10**6
    t, current = lo_us, first
    while t < hi_us:
        nxt = min(t + step, hi_us)
        if _offset(tz, nxt) != current:
            lo, hi = t, nxt  # the offset changes in (lo, hi]: find its first microsecond
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(tz, mid) == current:
                    lo = mid
                else:
                    hi = mid
            current = _offset(tz, hi)
            segments.append((hi, current))
        t = nxt
    return segments


def case_tree(column: str, cuts: Sequence[int], values: Sequence[int]) -> str:
    """SQL choosing ``values[i]`` where ``cuts[i-1] <= column < cuts[i]``: a balanced tree of
    ``CASE`` expressions, so a row costs ``log2(len(cuts))`` comparisons."""
    if not cuts:
        return str(values[0])
    mid = len(cuts) // 2
    left = case_tree(column, cuts[:mid], values[: mid + 1])
    right = case_tree(column, cuts[mid + 1 :], values[mid + 1 :])
    return f"CASE WHEN {column} < {cuts[mid]} THEN {left} ELSE {right} END"


def local_seconds_sql(segments: Sequence[tuple[int, int]], column: str) -> str:
    """SQL for the local wall-clock seconds of ``column`` (microseconds since the epoch)."""
    offsets = case_tree(column, [start for start, _ in segments[1:]], [off for _, off in segments])
    return f"({column} / 1000000 + {offsets})"


def month_starts_us(tz: tzinfo, lo_us: int, hi_us: int) -> tuple[list[int], list[int]]:
    """The UTC instants where local months begin inside ``(lo_us, hi_us]``, and the month
    indexes (``year * 12 + month - 1``) in force from ``lo_us`` and after each of them."""
    local = from_us(lo_us).astimezone(tz)
    index = local.year * 12 + local.month - 1
    cuts: list[int] = []
    values = [index]
    while True:
        index += 1
        start = to_us(datetime(index // 12, index % 12 + 1, 1, tzinfo=tz))
        if start > hi_us:
            return cuts, values
        cuts.append(start)
        values.append(index)


def _month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


ANSWERS_SQL = ", ".join(f"'{o}'" for o in sorted(ANSWER_OUTCOMES))
#: What a report sums over the rows of a group (alias ``a``), in :func:`totals` order: the
#: attempts, each token bucket, the cost, the priced attempts and the failures.
ROW_SUMS = ", ".join(
    (
        "count(*)",
        *(f"sum(a.{b.column})" for b in TOKEN_BUCKETS),
        "sum(a.cost_pico), count(a.cost_pico)",
        f"sum(CASE WHEN a.outcome IN ({ANSWERS_SQL}) THEN 0 ELSE 1 END)",
    )
)


#: The cache weights of :class:`~canny.pricing.CacheWeights` and the column each weighs.
_WEIGHTS = tuple((f.name, next(b.column for b in BUCKETS if b.name == f.name)) for f in fields(CacheWeights))
_CACHED = " + ".join(f"a.{column}" for _, column in _WEIGHTS)
_PROMPT = " + ".join(f"a.{b.column}" for b in BUCKETS if b.kind == "prompt")
#: Each split of a :class:`~canny.pricing.RateSplit` as SQL over a row (what
#: :func:`canny.pricing.basis_of` reads from an AttemptRecord).
_SPLIT_SQL = {
    "started_before": "a.started_at_us < {}",
    "batch": "a.batch",
    "geo_us": "a.inference_geo = 'us'",
    "fast": "a.speed = 'fast'",
    "prompt_over": f"{_PROMPT} > {{}}",
}


def _tree_sql(tree: RateTree) -> str:
    """SQL for the weighted cache tokens of one rate tree (integers only)."""
    if tree is None:
        return "0"
    if isinstance(tree, CacheWeights):
        weighed = ((column, int(getattr(tree, name))) for name, column in _WEIGHTS)
        terms = [f"a.{column} * {weight}" for column, weight in weighed if weight]
        return "(" + " + ".join(terms) + ")" if terms else "0"
    condition = _SPLIT_SQL[tree.test].format(int(tree.value))
    return f"CASE WHEN {condition} THEN {_tree_sql(tree.yes)} ELSE {_tree_sql(tree.no)} END"


def _models_sql(models: Sequence[tuple[str, RateTree]], column: str, params: list[Any]) -> str:
    """A balanced tree of comparisons on the model name (sorted by code point, the order of
    ``column``), so an attempt costs about log2(models) comparisons, not one per model."""
    if len(models) == 1:
        name, tree = models[0]
        params.append(name)
        return f"CASE WHEN a.model = ? THEN {_tree_sql(tree)} ELSE 0 END"
    mid = len(models) // 2
    params.append(models[mid][0])
    left = _models_sql(models[:mid], column, params)
    right = _models_sql(models[mid:], column, params)
    return f"CASE WHEN {column} < ? THEN {left} ELSE {right} END"


def savings_sql(savings: CacheSavingRates | None, dialect: Dialect) -> tuple[str, list[Any]]:
    """The extra report column summing :meth:`CacheSavingRates.saving_units` (``", sum(...)"``)
    and its parameters (the model names, bound, never spliced into the SQL)."""
    if savings is None:
        return "", []
    models = sorted((name, tree) for name, tree in savings.models.items() if tree is not None)
    if not models:
        return ", 0", []
    column = 'a.model COLLATE "C"' if dialect == "postgres" else "a.model"
    params: list[Any] = []
    body = _models_sql(models, column, params)
    return f", sum(CASE WHEN a.cost_pico > 0 AND {_CACHED} > 0 THEN {body} ELSE 0 END)", params


class Grouping:
    """The SQL of one ``--by`` over one time range, for any table alias (``tag`` is
    expanded by the caller, from the rows' tag sets)."""

    def __init__(self, by: GroupBy | None, dialect: Dialect, tz: tzinfo, lo_us: int, hi_us: int) -> None:
        self.by = by
        self.dialect = dialect
        self.segments = utc_offset_segments(tz, lo_us, hi_us) if by in ("day", "week") else []
        self.months = month_starts_us(tz, lo_us, hi_us) if by == "month" else ([], [0])

    def key(self, alias: str, prefix: str = "") -> str:
        """SQL for the group key of a row (alias ``alias``; its columns named ``prefix`` +
        the attempts' column names)."""
        column = f"{alias}.{prefix}started_at_us"
        if self.by == "day":
            return f"({local_seconds_sql(self.segments, column)} / 86400)"
        if self.by == "week":
            return f"(({local_seconds_sql(self.segments, column)} / 86400 + 3) / 7)"
        if self.by == "month":
            return f"({case_tree(column, *self.months)})"
        if self.by is None:
            return "'total'"
        if self.by == "session":
            return f"{alias}.{prefix}session_id"
        return f"{alias}.{prefix}{self.by}"

    def label(self, key: Any) -> str | None:
        """The display key of a group key as the database returned it."""
        if self.by is None:
            return "total"
        if key is None:
            return None
        if self.by == "day":
            return day_label(int(key))
        if self.by == "week":
            return week_label(int(key))
        if self.by == "month":
            return _month_label(int(key))
        return str(key)


def empty_total() -> GroupTotals:
    """The totals of no attempts."""
    return totals("total", (0,) * (4 + len(TOKEN_BUCKETS)), 0)


def totals(
    key: str | None, row: Sequence[Any], repeated: int, exponent: int | None = None, *, subkey: str | None = None
) -> GroupTotals:
    """A GroupTotals from a ``ROW_SUMS`` row (plus the savings column when ``exponent`` is
    given: units of ``10**-exponent`` USD) and the number of rows repeating a call."""
    attempts, *values = (int(v or 0) for v in row)
    tokens: dict[str, Any] = {b.name: values.pop(0) for b in TOKEN_BUCKETS}
    pico, priced, failures, *rest = values
    saved = None
    if exponent is not None and priced:
        saved = Decimal(rest[0] if rest else 0).scaleb(-exponent)
    return GroupTotals(
        key=key,
        subkey=subkey,
        calls=attempts - repeated,
        attempts=attempts,
        tokens=Usage(**tokens),
        cost_usd=pico_to_usd(pico) if priced else None,
        unpriced=attempts - priced,
        failures=failures,
        saved_usd=saved,
    )


def range_sql(since_us: int | None, until_us: int | None, prefix: str = "") -> tuple[str, list[int]]:
    """`` WHERE`` clause (or ``""``) of the start times in ``[since_us, until_us)``."""
    clauses: list[str] = []
    params: list[int] = []
    if since_us is not None:
        clauses.append(f"{prefix}started_at_us >= ?")
        params.append(since_us)
    if until_us is not None:
        clauses.append(f"{prefix}started_at_us < ?")
        params.append(until_us)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
