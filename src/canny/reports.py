"""Reports over the ledger: pure functions from ledger rows to report rows. Nothing prints.

A report groups attempts by ``day``, ``week`` (ISO, from Monday), ``month`` (calendar
periods in a time zone), ``model``, ``tag``, ``project`` or ``outcome``. Per group it
counts calls (distinct ``call_id``) and attempts, sums the five token buckets and the cost
of the *priced* attempts, and counts separately the attempts with no price (``unpriced``:
never folded into $0) and the failures (every outcome but ``ok``, ``max_tokens`` and
``refused``). The total is computed over the range, not summed from groups: a call with
attempts in two groups counts once, and ``--by tag`` groups overlap.

With ``savings=True`` (``canny report --savings``) each group also gets ``saved_usd``:
what prompt caching saved against sending the same tokens uncached. Per attempt that
counts (priced, billed, and it read or wrote the cache)::

    saved = cache_read     × (input rate − cache-read rate)
          − cache_write_5m × (5m write rate − input rate)
          − cache_write_1h × (1h write rate − input rate)

at the rates in force on the attempt's UTC day, for its model, batch, ``inference_geo``,
``speed`` and prompt-length band (:func:`canny.pricing.cache_saving_rates`, which asks the
one pricing rule). It is negative when the
write premium was not paid back by reads (yet). It is summed in the same SQL scan as the
rest, but it is opt-in: choosing each attempt's rates makes a report over a million rows
about 45% slower (docs/benchmarks.md).

Ledgers that implement :class:`~canny.ledger.ReportingLedger` sum in SQL; anything else
(and ``reprice``, which prices each attempt again) goes through :func:`summarize`, the
reference implementation over :class:`~canny.ledger.AttemptRecord`\\ s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, TypedDict, Unpack

from canny.ledger import (
    ANSWER_OUTCOMES,
    ROW_FIELDS,
    AttemptRecord,
    GroupBy,
    GroupTotals,
    Ledger,
    ReportFilter,
    ReportingLedger,
    ReportQuery,
    Sums,
    record_values,
)
from canny.pricing import CacheSavingRates, cache_saving_rates
from canny.units import plain_decimal
from canny.usage import TOKEN_BUCKETS, Usage

__all__ = [
    "EXPORT_FIELDS",
    "REPORT_FIELDS",
    "REPRICE_FIELDS",
    "SAVINGS_FIELDS",
    "THEN_FIELDS",
    "TIME_GROUPS",
    "ExportOptions",
    "Pricer",
    "Report",
    "ReportRow",
    "build_report",
    "cache_saving_rates",
    "export_bytes",
    "export_row",
    "export_rows",
    "export_text",
    "group_keys",
    "local_zone",
    "parse_when",
    "plain_decimal",
    "report_rows",
    "resolve_tz",
    "sort_rows",
    "summarize",
    "table_pricer",
    "zone_name",
]

TIME_GROUPS: tuple[GroupBy, ...] = ("day", "week", "month")

#: Prices one attempt again (``None``: no price today). See :func:`table_pricer`.
Pricer = Callable[[AttemptRecord], Decimal | None]


@dataclass(frozen=True, slots=True)
class ReportRow(Sums):
    """One line of a report: a group (``None`` = no project/tag) or the total, and its
    :class:`~canny.ledger.Sums` (``saved_usd``: see the module docstring; negative when
    writes cost more than reads saved)."""

    group: str | None
    #: The group of the second grouping (``--by month,model``), if any.
    subgroup: str | None = None
    #: With ``reprice``: the attempts priced today, summed at today's prices; how many have
    #: no price today; and today's minus the stored cost over the attempts priced both ways
    #: (``None`` when there is none), so an unknown price never reads as a change to $0.
    repriced_usd: Decimal | None = None
    reprice_unpriced: int | None = None
    reprice_difference: Decimal | None = None

    @property
    def cache_hit_rate(self) -> float | None:
        """cache_read / (input + cache writes + cache_read); ``None`` with no input at all."""
        prompt = self.tokens.prompt_tokens
        return self.tokens.cache_read / prompt if prompt else None

    @classmethod
    def from_totals(cls, totals: GroupTotals) -> ReportRow:
        return cls(totals.key, totals.subkey, **{f.name: getattr(totals, f.name) for f in fields(Sums)})


@dataclass(frozen=True, slots=True)
class Report:
    """A whole report: its parameters, its groups in display order, and the total."""

    by: GroupBy
    tz: str
    since: datetime | None
    until: datetime | None
    rows: tuple[ReportRow, ...]
    total: ReportRow
    repriced: bool = False
    #: Whether ``saved_usd`` was computed (and is shown).
    savings: bool = False
    #: The second grouping (``--by month,model``), if any.
    then: GroupBy | None = None
    #: Groups left out by ``limit`` (the total still covers them).
    omitted: int = 0
    #: The filters the report applied.
    filters: ReportFilter = field(default_factory=ReportFilter)

    @property
    def is_empty(self) -> bool:
        return self.total.attempts == 0


# --- building ---------------------------------------------------------------------------


def build_report(
    ledger: Ledger,
    by: GroupBy,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tz: tzinfo | None = None,
    reprice: bool = False,
    pricer: Pricer | None = None,
    savings: bool = False,
    then: GroupBy | None = None,
    filters: ReportFilter | None = None,
    limit: int | None = None,
    calls: bool = True,
) -> Report:
    """The report of ``ledger`` for attempts started in ``[since, until)`` that pass ``filters``.

    Sums run in the database when the ledger can (:class:`ReportingLedger`). With
    ``reprice`` every attempt is priced again by ``pricer`` (default: today's price table).
    With ``savings`` each row carries ``saved_usd`` (see the module docstring). With
    ``then`` the groups are pairs (``by`` group, ``then`` group). ``limit`` keeps that many
    groups: the latest periods for time groups, else the costliest (the total covers all).
    ``calls=False`` (for charts of cost, attempts and failures): a SQL ledger does not
    count distinct calls, and ``calls`` may then read 0.
    """
    zone = tz or UTC
    flt = filters or ReportFilter()
    rates = cache_saving_rates() if savings else None
    if isinstance(ledger, ReportingLedger) and not reprice:
        query = ReportQuery(by, then=then, since=since, until=until, tz=zone, savings=rates, filters=flt, calls=calls)
        groups, totals = ledger.aggregate(query)
        rows, total = [ReportRow.from_totals(g) for g in groups], ReportRow.from_totals(totals)
    else:
        chosen = (r for r in _within(ledger.records(since=since, until=until), since, until) if flt.keeps(r))
        pricing = (pricer or table_pricer()) if reprice else None
        rows, total = summarize(chosen, by, tz=zone, pricer=pricing, savings=rates, then=then)
    rows = sort_rows(by, rows)
    omitted = 0
    if limit is not None and len(rows) > limit:
        omitted = len(rows) - limit
        rows = _limited(by, rows, limit)
    return Report(
        by,
        zone_name(zone),
        since,
        until,
        tuple(rows),
        total,
        repriced=reprice,
        savings=savings,
        then=then,
        omitted=omitted,
        filters=flt,
    )


def _limited(by: GroupBy, rows: list[ReportRow], limit: int) -> list[ReportRow]:
    """The ``limit`` rows to show: the latest periods for time groups (still in time
    order), else the first rows in display order (the costliest)."""
    return rows[-limit:] if by in TIME_GROUPS else rows[:limit]


def _aware(moment: datetime) -> datetime:
    """A naive datetime is UTC (as the ledger stores it)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _within(
    records: Iterable[AttemptRecord], since: datetime | None, until: datetime | None
) -> Iterator[AttemptRecord]:
    """The records started in ``[since, until)`` (a ledger should filter; this makes sure)."""
    lo = None if since is None else _aware(since)
    hi = None if until is None else _aware(until)
    for record in records:
        start = _aware(record.started_at)
        if (lo is None or start >= lo) and (hi is None or start < hi):
            yield record


#: The token buckets a report sums (``canny.usage.TOKEN_BUCKETS``): names, and columns of its output.
_TOKEN_NAMES: tuple[str, ...] = tuple(b.name for b in TOKEN_BUCKETS)
_TOKEN_COLUMNS: tuple[str, ...] = tuple(b.column for b in TOKEN_BUCKETS)


@dataclass(slots=True)
class _Acc:
    calls: set[str] = field(default_factory=set)
    attempts: int = 0
    tokens: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(_TOKEN_NAMES, 0))
    cost: Decimal | None = None
    unpriced: int = 0
    failures: int = 0
    repriced: Decimal | None = None
    reprice_unpriced: int = 0
    difference: Decimal | None = None
    saved_units: int = 0

    def add(self, r: AttemptRecord, repriced: Decimal | None, pricing: bool, saved_units: int = 0) -> None:
        self.saved_units += saved_units
        self.calls.add(r.call_id)
        self.attempts += 1
        usage = r.usage
        for name in _TOKEN_NAMES:
            self.tokens[name] += getattr(usage, name)
        if r.cost_usd is None:
            self.unpriced += 1
        else:
            self.cost = _plus(self.cost, r.cost_usd)
        if r.outcome not in ANSWER_OUTCOMES:
            self.failures += 1
        if pricing:
            if repriced is None:
                self.reprice_unpriced += 1
            else:
                self.repriced = _plus(self.repriced, repriced)
                if r.cost_usd is not None:
                    self.difference = _plus(self.difference, repriced - r.cost_usd)

    def row(
        self, group: str | None, pricing: bool, savings: CacheSavingRates | None = None, sub: str | None = None
    ) -> ReportRow:
        saved = None
        if savings is not None and self.cost is not None:
            saved = savings.to_usd(self.saved_units)
        return ReportRow(
            group,
            sub,
            calls=len(self.calls),
            attempts=self.attempts,
            tokens=Usage(**self.tokens),
            cost_usd=self.cost,
            unpriced=self.unpriced,
            failures=self.failures,
            saved_usd=saved,
            repriced_usd=self.repriced if pricing else None,
            reprice_unpriced=self.reprice_unpriced if pricing else None,
            reprice_difference=self.difference if pricing else None,
        )


def _plus(total: Decimal | None, amount: Decimal) -> Decimal:
    return amount if total is None else total + amount


def summarize(
    records: Iterable[AttemptRecord],
    by: GroupBy,
    *,
    tz: tzinfo = UTC,
    pricer: Pricer | None = None,
    savings: CacheSavingRates | None = None,
    then: GroupBy | None = None,
) -> tuple[list[ReportRow], ReportRow]:
    """Group rows (unsorted) and the total, computed in Python from the records; with
    ``then``, one row per pair of groups."""
    groups: dict[tuple[str | None, str | None], _Acc] = {}
    total = _Acc()
    pricing = pricer is not None
    for record in records:
        repriced = pricer(record) if pricer is not None else None
        saved = savings.saving_units(record) if savings is not None else 0
        total.add(record, repriced, pricing, saved)
        seconds = group_keys(record, then, tz) if then is not None else (None,)
        for key in group_keys(record, by, tz):
            for sub in seconds:
                groups.setdefault((key, sub), _Acc()).add(record, repriced, pricing, saved)
    rows = [acc.row(key, pricing, savings, sub) for (key, sub), acc in groups.items()]
    return rows, total.row("total", pricing, savings)


def group_keys(record: AttemptRecord, by: GroupBy, tz: tzinfo = UTC) -> tuple[str | None, ...]:
    """The group(s) an attempt belongs to: one, except for tags (each tag, or ``None``)."""
    if by in TIME_GROUPS:
        local = _aware(record.started_at).astimezone(tz)
        if by == "day":
            return (local.date().isoformat(),)
        if by == "week":
            year, week, _ = local.isocalendar()
            return (f"{year}-W{week:02d}",)
        return (f"{local.year:04d}-{local.month:02d}",)
    if by == "tag":
        return tuple(dict.fromkeys(record.tags)) or (None,)
    if by == "model":
        return (record.model,)
    if by == "outcome":
        return (record.outcome,)
    if by == "session":
        return (record.session_id,)
    return (record.project,)


def sort_rows(by: GroupBy, rows: Iterable[ReportRow]) -> list[ReportRow]:
    """Time groups in time order; other groups by cost (highest first), ``None`` last. With
    a second grouping, the pairs of a group stay together, costliest sub-group first."""
    rows = list(rows)
    group_cost: dict[str | None, tuple[Decimal, int]] = {}
    for r in rows:
        cost, attempts = group_cost.get(r.group, (Decimal(0), 0))
        group_cost[r.group] = (cost + (r.cost_usd or Decimal(0)), attempts + r.attempts)

    def first(r: ReportRow) -> tuple[Any, ...]:
        if by in TIME_GROUPS:
            return (r.group or "",)
        cost, attempts = group_cost[r.group]
        return (r.group is None, -cost, -attempts, r.group or "")

    return sorted(
        rows,
        key=lambda r: (*first(r), r.subgroup is None, -(r.cost_usd or Decimal(0)), -r.attempts, r.subgroup or ""),
    )


def table_pricer() -> Pricer:
    """Prices attempts with today's price table (``canny.pricing.cost``). Identical
    (model, usage, modifiers) are priced once (a bounded cache: retries and fixed-size
    prompts repeat; a million distinct rows do not fill memory)."""
    from functools import lru_cache

    from canny.pricing import cost

    @lru_cache(maxsize=65536)
    def priced(model: str, usage: Usage, batch: bool, geo: str | None, speed: str | None) -> Decimal | None:
        # A row keeps what the server reported (or, failing that, what was asked): a fact,
        # so re-pricing reads it leniently (an unknown value is unpriced, never an error).
        return cost(model, usage, batch=batch, reported={"inference_geo": geo, "speed": speed}, at=None)

    def price(r: AttemptRecord) -> Decimal | None:
        return priced(r.model, r.usage, r.batch, r.inference_geo, r.speed)

    return price


# --- time zones and dates ---------------------------------------------------------------


def local_zone() -> tzinfo:
    """The machine's zone: ``TZ`` if it names one, else ``/etc/localtime``'s, else the
    current fixed offset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.readlink("/etc/localtime")
        candidates.append(target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                continue
    return datetime.now().astimezone().tzinfo or UTC


def resolve_tz(name: str | None) -> tzinfo:
    """A zone from an IANA name (``Europe/Paris``), ``UTC``, or ``None`` for local time."""
    if name is None or name.lower() == "local":
        return local_zone()
    if name.upper() in ("UTC", "Z"):
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris, or UTC)") from None


def zone_name(tz: tzinfo) -> str:
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return key
    return "UTC" if tz == UTC else str(tz)


_RELATIVE = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, *, tz: tzinfo, now: datetime | None = None, end: bool = False) -> datetime:
    """A ``--since``/``--until`` value as an aware datetime.

    ``YYYY-MM-DD`` is local midnight in ``tz`` (with ``end=True``, the midnight after, so
    ``--until 2026-11-30`` includes that day); an ISO datetime without offset is local
    time; ``today``/``yesterday`` are dates; ``now``; ``30m`` (or ``30min``), ``12h``,
    ``7d``, ``2w`` go back from now.
    """
    value = text.strip().lower()
    moment = (now or datetime.now(UTC)).astimezone(tz)
    day: date | None = None
    if value == "now":
        return moment
    if value in ("today", "yesterday"):
        day = moment.date() - timedelta(days=1 if value == "yesterday" else 0)
    elif match := _RELATIVE.match(value):
        amount, unit = int(match.group(1)), match.group(2)
        return moment - timedelta(**{_UNITS[unit]: amount})
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a valid date: {text!r}") from None
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"cannot read {text!r} as a date; use YYYY-MM-DD, an ISO datetime, today, yesterday, 30m, 12h or 7d"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    if end:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


# --- output shapes (data, not text) -----------------------------------------------------


REPORT_FIELDS: tuple[str, ...] = (
    "kind", "by", "group", "calls", "attempts", *_TOKEN_COLUMNS, "cost_usd", "unpriced",
    "failures", "cache_hit_rate",
)  # fmt: skip
REPRICE_FIELDS: tuple[str, ...] = ("repriced_usd", "reprice_difference_usd", "reprice_unpriced")
SAVINGS_FIELDS: tuple[str, ...] = ("saved_usd",)
#: With a second grouping, after ``group``: the second key and the row's group in it.
THEN_FIELDS: tuple[str, ...] = ("then", "subgroup")


def report_rows(report: Report) -> list[dict[str, Any]]:
    """The report as plain dicts (groups, then the total; Decimals as strings), for JSON/CSV.
    An empty report gives an empty list."""
    out: list[dict[str, Any]] = []
    if report.is_empty:
        return out
    for kind, row in [*(("group", r) for r in report.rows), ("total", report.total)]:
        rate = row.cache_hit_rate
        item: dict[str, Any] = {
            "kind": kind,
            "by": report.by,
            "group": row.group,
            **({"then": report.then, "subgroup": row.subgroup} if report.then else {}),
            "calls": row.calls,
            "attempts": row.attempts,
            **{b.column: getattr(row.tokens, b.name) for b in TOKEN_BUCKETS},
            "cost_usd": _money(row.cost_usd),
            "unpriced": row.unpriced,
            "failures": row.failures,
            "cache_hit_rate": None if rate is None else round(rate, 6),
        }
        if report.savings:
            item["saved_usd"] = _money(row.saved_usd)
        if report.repriced:
            item["repriced_usd"] = _money(row.repriced_usd)
            item["reprice_difference_usd"] = _money(row.reprice_difference)
            item["reprice_unpriced"] = row.reprice_unpriced
        out.append(item)
    return out


def _money(value: Decimal | None) -> str | None:
    return None if value is None else plain_decimal(value)


#: The keys of an export line (and the CSV header), in order: :data:`canny.ledger.ROW_FIELDS`.
EXPORT_FIELDS: tuple[str, ...] = ROW_FIELDS
_TEXT_FIELDS = ("prompt_text", "response_text")


def export_row(record: AttemptRecord, *, include_text: bool = False) -> dict[str, Any]:
    """One attempt as a JSON-ready dict: every field, times in ISO-8601 UTC, cost as a
    decimal string or ``None``. Stored prompt/response text only with ``include_text``."""
    row: dict[str, Any] = {}
    for name, raw in record_values(record).items():
        if name in _TEXT_FIELDS and not include_text:
            continue
        value = raw
        if isinstance(value, datetime):
            value = _aware(value).astimezone(UTC).isoformat()
        elif isinstance(value, Decimal):
            value = plain_decimal(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        row[name] = value
    return row


def export_rows(
    ledger: Ledger, *, since: datetime | None = None, until: datetime | None = None, include_text: bool = False
) -> Iterator[dict[str, Any]]:
    """Every attempt in ``[since, until)`` as :func:`export_row` dicts, oldest first."""
    for record in ledger.records(since=since, until=until):
        yield export_row(record, include_text=include_text)


class ExportOptions(TypedDict, total=False):
    """What an export takes besides its ledger and format: the attempts started in
    ``[since, until)``, and the stored prompt and response text with ``include_text``."""

    since: datetime | None
    until: datetime | None
    include_text: bool


def export_text(ledger: Ledger, fmt: str, **options: Unpack[ExportOptions]) -> Iterator[str]:
    """The export of ``ledger`` as text chunks: ``jsonl`` (one :func:`export_row` object a
    line) or ``csv`` (a header, then a row per attempt; lists and objects as JSON, booleans
    as ``true``/``false``, nothing for null). A SQL ledger streams the lines its database
    builds (``export_bytes``, decoded); any other goes through
    :class:`AttemptRecord` (the reference: both give the same bytes)."""
    if hasattr(ledger, "export_bytes"):
        return (chunk.decode() for chunk in export_bytes(ledger, fmt, **options))
    include_text = options.get("include_text", False)
    names = [n for n in EXPORT_FIELDS if include_text or n not in _TEXT_FIELDS]
    dicts = export_rows(ledger, since=options.get("since"), until=options.get("until"), include_text=include_text)
    values = (_raw_json(tuple(row.values())) for row in dicts)
    return _jsonl(values, names) if fmt == "jsonl" else _csv(values, names)


def export_bytes(ledger: Ledger, fmt: str, **options: Unpack[ExportOptions]) -> Iterator[bytes]:
    """:func:`export_text` as UTF-8 bytes (what ``canny ledger export`` writes). A SQL
    ledger hands on its database's bytes as they come (``export_bytes``): no text is
    decoded or encoded on the way."""
    chunks = getattr(ledger, "export_bytes", None)
    if chunks is not None:
        built: Iterator[bytes] = chunks(fmt, **options)
        return built
    return (chunk.encode() for chunk in export_text(ledger, fmt, **options))


def _raw_json(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Export values with ``tags``/``extra`` as JSON text (what a SQL ledger stores)."""
    return tuple(json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for v in values)


_TAGS_MARK = "\x00canny-tags\x00"
_EXTRA_MARK = "\x00canny-extra\x00"


def _jsonl(values: Iterable[tuple[Any, ...]], names: list[str]) -> Iterator[str]:
    """JSON lines; the ``tags`` and ``extra`` JSON text is spliced in as it is."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    tags, extra = names.index("tags"), names.index("extra")
    tags_mark, extra_mark = encode(_TAGS_MARK), encode(_EXTRA_MARK)
    batch: list[str] = []
    for row in values:
        item = dict(zip(names, row, strict=True))
        item["tags"], item["extra"] = _TAGS_MARK, _EXTRA_MARK
        line = encode(item).replace(tags_mark, row[tags], 1).replace(extra_mark, row[extra], 1)
        batch.append(line + "\n")
        if len(batch) >= 1000:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def _csv(values: Iterable[tuple[Any, ...]], names: list[str]) -> Iterator[str]:
    """CSV text: booleans as true/false, null as nothing (``tags``/``extra`` already JSON)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    flags = [i for i, n in enumerate(names) if n in ("batch", "streamed")]
    for count, row in enumerate(values, 1):
        cells = list(row)
        for i in flags:
            cells[i] = "true" if cells[i] else "false"
        writer.writerow(cells)  # None is written as an empty cell
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
