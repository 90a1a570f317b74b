"""Token usage in disjoint buckets, and the one accumulator every entry point shares.

The API reports ``input_tokens`` *excluding* the cache, ``cache_creation_input_tokens``
(optionally split into 5-minute and 1-hour writes), ``cache_read_input_tokens`` and
``output_tokens`` (thinking included). canny keeps them as five disjoint buckets, plus
server-tool request counts, so that no token is ever priced twice:

=================  =========================================================
``input``          uncached input tokens
``cache_write_5m`` tokens written to the 5-minute cache
``cache_write_1h`` tokens written to the 1-hour cache
``cache_read``     tokens read from the cache
``output``         output tokens, thinking included
=================  =========================================================

A ``cache_creation_input_tokens`` figure without its 5m/1h breakdown counts as 5-minute
writes (the API's default TTL).

Streams: :class:`UsageAccumulator` starts from ``message_start.message.usage``; every
``message_delta.usage`` is *cumulative* and replaces the fields it carries (input and
cache figures can grow after server tools run). The 5m/1h split only arrives in
``message_start``; when a later delta changes the write total, the split is kept in
proportion and any difference goes to the bucket that already held writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Literal

__all__ = [
    "API_COUNTS",
    "API_NESTED",
    "BUCKETS",
    "MAX_COUNT",
    "TOKEN_BUCKETS",
    "Bucket",
    "IterationUsage",
    "Usage",
    "UsageAccumulator",
    "usage_columns",
    "usage_from_api",
    "usage_from_columns",
    "valid_count",
]

BucketKind = Literal["prompt", "output", "tool"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One usage bucket and every name it goes by.

    ``name`` is canny's name (the :class:`Usage` attribute, and the rate's name in the price
    table for token buckets); ``api`` is where the API reports it in ``usage`` (dotted for a
    nested object); ``column`` is the ledger column (and the bucket's key in exports, report
    output and spooled rows: :func:`usage_columns`); ``label`` is how the usage line and
    report tables show it. ``kind``: ``prompt`` (input side, priced per MTok), ``output`` (priced per MTok) or
    ``tool`` (server-tool requests, counted, priced by fee where one is known).
    """

    name: str
    api: str
    column: str
    label: str
    kind: BucketKind

    @property
    def tokens(self) -> bool:
        """A token count priced per million tokens (not a request count)."""
        return self.kind != "tool"


#: THE list of usage buckets, in display and column order. Everything that names buckets
#: (ledger rows and columns, reports, the usage line, replay JSON, the price table's rates)
#: is derived from it: a new bucket is one line here, a field of :class:`Usage`, and a named
#: ledger migration for its column.
BUCKETS: tuple[Bucket, ...] = (
    Bucket("input", "input_tokens", "input_tokens", "input", "prompt"),
    Bucket("cache_write_5m", "cache_creation.ephemeral_5m_input_tokens", "cache_write_5m_tokens", "write 5m", "prompt"),
    Bucket("cache_write_1h", "cache_creation.ephemeral_1h_input_tokens", "cache_write_1h_tokens", "write 1h", "prompt"),
    Bucket("cache_read", "cache_read_input_tokens", "cache_read_tokens", "cache read", "prompt"),
    Bucket("output", "output_tokens", "output_tokens", "output", "output"),
    Bucket("web_search_requests", "server_tool_use.web_search_requests", "web_search_requests", "web searches", "tool"),
    Bucket("web_fetch_requests", "server_tool_use.web_fetch_requests", "web_fetch_requests", "web fetches", "tool"),
    Bucket(
        "code_execution_requests",
        "server_tool_use.code_execution_requests",
        "code_execution_requests",
        "code executions",
        "tool",
    ),
)
#: The buckets priced per million tokens (the five rates of a price row), in order.
TOKEN_BUCKETS: tuple[Bucket, ...] = tuple(b for b in BUCKETS if b.tokens)
#: The API's nested object of cache writes, and its total next to it.
_WRITES, _WRITE_TOTAL = "cache_creation", "cache_creation_input_tokens"
#: The API's top-level count fields (the cache-write total included).
API_COUNTS: tuple[str, ...] = (
    *(b.api for b in BUCKETS if "." not in b.api and b.kind == "prompt"),
    _WRITE_TOTAL,
    *(b.api for b in BUCKETS if "." not in b.api and b.kind != "prompt"),
)
#: The API's nested objects of counts: object name -> its count fields.
API_NESTED: Mapping[str, frozenset[str]] = {
    parent: frozenset(b.api.split(".")[1] for b in BUCKETS if b.api.startswith(parent + "."))
    for parent in dict.fromkeys(b.api.split(".")[0] for b in BUCKETS if "." in b.api)
}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one attempt, call or report line, in disjoint buckets."""

    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    code_execution_requests: int = 0
    #: Per-iteration usage (server-side fallback, advisor, compaction), each with its model.
    iterations: tuple[IterationUsage, ...] = ()

    @property
    def cache_write(self) -> int:
        """All cache writes, 5-minute and 1-hour."""
        return self.cache_write_5m + self.cache_write_1h

    @property
    def prompt_tokens(self) -> int:
        """Every input token of the request: uncached, written and read."""
        return self.input + self.cache_write + self.cache_read

    @property
    def totals(self) -> Usage:
        """The bucket totals alone, without ``iterations``: what a ledger row keeps."""
        return replace(self, iterations=()) if self.iterations else self

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        left, right = self.iterations, other.iterations
        # Priced per iteration when any are present: a side without iterations becomes one
        # (at the call's model), or its tokens would drop out of the cost of the sum.
        if left and not right and not other.is_empty:
            right = (IterationUsage(model=None, usage=other),)
        elif right and not left and not self.is_empty:
            left = (IterationUsage(model=None, usage=self),)
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self) if f.name != "iterations"},
            iterations=left + right,
        )

    def buckets(self) -> dict[str, int]:
        """The counters as a plain dict (no iterations), for JSON and ledger rows."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "iterations"}

    def to_api(self) -> dict[str, Any]:
        """The API's own shape (``input_tokens``, ``cache_creation`` ...), for round trips."""
        out: dict[str, Any] = {_WRITE_TOTAL: self.cache_write}
        for bucket in BUCKETS:
            parent, _, name = bucket.api.rpartition(".")
            (out.setdefault(parent, {}) if parent else out)[name] = getattr(self, bucket.name)
        for parent in API_NESTED:
            if parent != _WRITES and not any(out[parent].values()):
                del out[parent]  # no server tool ran: left out, as the API does
        if self.iterations:
            out["iterations"] = [{"model": it.model, **it.usage.to_api()} for it in self.iterations]
        return out


@dataclass(frozen=True, slots=True)
class IterationUsage:
    """One entry of ``usage.iterations``: its own model, priced at that model's rates."""

    model: str | None
    usage: Usage
    type: str = "message"


def _get(obj: Any, name: str) -> Any:
    """Read a field from a dict or an SDK object, tolerating absence and ``None``."""
    if obj is None:
        return None
    if isinstance(obj, (dict, Mapping)):  # dict first: no ABC check for the usual case
        return obj.get(name)
    return getattr(obj, name, None)


#: No real usage count comes near this; a larger one is not a count (see ``valid_count``).
MAX_COUNT = 10**15


def valid_count(value: Any) -> bool:
    """A token or request count as the API sends one: a whole number from 0 to ``MAX_COUNT``."""
    if type(value) is int:  # the usual case, first (a bool is not an int here)
        return 0 <= value <= MAX_COUNT
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer() and 0 <= value <= MAX_COUNT
    return isinstance(value, int) and 0 <= value <= MAX_COUNT


def _int(value: Any) -> int:
    """A count, or 0 for anything that is not one (``canny.pricing`` flags those as unpriced)."""
    return int(value) if valid_count(value) else 0


def _split_writes(total: int, breakdown: Any) -> tuple[int, int]:
    """Split a cache-write total into (5m, 1h). No breakdown means all 5-minute."""
    if breakdown is None:
        return total, 0
    w5 = _int(_get(breakdown, "ephemeral_5m_input_tokens"))
    w1h = _int(_get(breakdown, "ephemeral_1h_input_tokens"))
    if w5 + w1h == total:
        return w5, w1h
    if w5 + w1h == 0:
        return total, 0
    # The total moved (a later delta) or the parts disagree: keep 1h as reported, rest is 5m.
    w1h = min(w1h, total)
    return total - w1h, w1h


def usage_from_api(obj: Any) -> Usage:
    """Build :class:`Usage` from the API's usage object or dict (``anthropic.types.Usage``,
    a ``message_delta`` usage, or JSON), including ``cache_creation`` and ``iterations``."""
    if obj is None:
        return Usage()
    if isinstance(obj, Usage):
        return obj
    reported_writes = _get(obj, _WRITE_TOTAL)
    writes = _int(reported_writes)
    breakdown = _get(obj, _WRITES)
    # The total, when reported (0 included: a later cumulative delta can say 0), wins over
    # a breakdown that may be left over from message_start.
    if reported_writes is None and breakdown is not None:
        writes = _int(_get(breakdown, "ephemeral_5m_input_tokens")) + _int(_get(breakdown, "ephemeral_1h_input_tokens"))
    w5, w1h = _split_writes(writes, breakdown)
    counts = {name: _int(_at(obj, path)) for name, path in _COUNT_PATHS}
    iterations = tuple(
        IterationUsage(
            model=_get(it, "model"),
            usage=usage_from_api({k: v for k, v in _as_dict(it).items() if k != "iterations"}),
            type=str(_get(it, "type") or "message"),
        )
        for it in _iterations(_get(obj, "iterations"))
    )
    return Usage(**counts, cache_write_5m=w5, cache_write_1h=w1h, iterations=iterations)


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    """A field at a path (``("server_tool_use", "web_search_requests")``), or ``None``."""
    for part in path:
        obj = _get(obj, part)
    return obj


#: (bucket name, path of its count in the API's usage) for every bucket but the cache
#: writes (read with their total by ``_split_writes``).
_COUNT_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (b.name, tuple(b.api.split("."))) for b in BUCKETS if not b.api.startswith(_WRITES + ".")
)


def usage_columns(usage: Usage) -> dict[str, int]:
    """The buckets of ``usage`` keyed by ledger column (``input_tokens`` ...), in column
    order: the values of a row, of an export line, of a spooled row."""
    return dict(zip(_COLUMNS, _counts(usage), strict=True))


_COLUMNS: tuple[str, ...] = tuple(b.column for b in BUCKETS)
_counts = attrgetter(*(b.name for b in BUCKETS))


def usage_from_columns(row: Mapping[str, Any]) -> Usage:
    """The :class:`Usage` of a row keyed by ledger column (the inverse of
    :func:`usage_columns`); a column the row lacks counts 0."""
    return Usage(**{b.name: row[b.column] for b in BUCKETS if b.column in row})


def _iterations(value: Any) -> tuple[Any, ...]:
    """The entries of ``usage.iterations`` that are objects (anything else is ignored)."""
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(it for it in value if isinstance(it, Mapping) or hasattr(it, "model_dump"))


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, (dict, Mapping)):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        result = dump()
        if isinstance(result, dict):
            return result
    try:
        return dict(vars(obj))
    except TypeError:
        return {}


@dataclass(slots=True)
class UsageAccumulator:
    """Folds streamed usage into one :class:`Usage`: ``message_start`` first, then every
    cumulative ``message_delta`` replaces the fields it carries (last value wins)."""

    _fields: dict[str, Any] = field(default_factory=dict)
    _breakdown: Any = None
    seen_start: bool = False
    seen_delta: bool = False
    #: :attr:`usage` as last built; cleared by every event that carries usage.
    _built: Usage | None = None

    def start(self, usage: Any) -> None:
        """Take the usage of ``message_start.message``."""
        if usage is None:
            return
        self._built = None
        self.seen_start = True
        self._fields = _as_dict(usage)
        self._breakdown = self._fields.get("cache_creation")

    def delta(self, usage: Any) -> None:
        """Apply a cumulative ``message_delta.usage``: present, non-null fields replace."""
        if usage is None:
            return
        self._built = None
        self.seen_delta = True
        for key, value in _as_dict(usage).items():
            if value is not None:
                self._fields[key] = value
        if "cache_creation" in self._fields and self._fields["cache_creation"] is not None:
            self._breakdown = self._fields["cache_creation"]

    def feed(self, event: Mapping[str, Any]) -> None:
        """Apply a raw stream event dict; events without usage are ignored."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, (dict, Mapping)):
                self.start(message.get("usage"))
        elif kind == "message_delta":
            self.delta(event.get("usage"))

    @property
    def reported(self) -> dict[str, Any]:
        """The raw usage fields as last reported (``speed``, ``inference_geo``, ...)."""
        return dict(self._fields)

    @property
    def usage(self) -> Usage:
        """The usage so far (built once per event that changed it: clients, rows and
        results all ask for it)."""
        if self._built is None:
            self._built = usage_from_api(self._merged())
        return self._built

    def later(self) -> Callable[[], Usage]:
        """The usage as it is now, built only when asked for: a row in flight that is
        dropped unwritten (its attempt's own row came first) never builds it."""
        built = self._built
        if built is not None:
            return lambda: built
        merged = self._merged()
        return lambda: usage_from_api(merged)

    def _merged(self) -> dict[str, Any]:
        """The fields so far, with the cache-write breakdown that goes with them."""
        merged = dict(self._fields)
        merged["cache_creation"] = self._breakdown
        return merged

    def with_output(self, output: int) -> Usage:
        """The usage so far with ``output`` replaced (used for interrupted streams)."""
        return replace(self.usage, output=output)
