"""The Usage and Cost Admin API, served from the requests the emulator answered.

Every ``/v1/messages`` request the emulator answers with a message (streamed or not, or
in a batch) is a :class:`Charge` in the server's :class:`UsageBook`: its UTC time, the
model that served it, the key that sent it (as an ``apikey_...`` id, never the key) and
the usage it generated. The server bills what it generated: a stream cut by a fault after
``message_start`` is billed in full, as far as this emulator is concerned. Two endpoints
read the book, shaped as the real ones (the public API reference, "Get Messages Usage
Report" and "Get Cost Report", read 2026-11; ``tests/wire/README.md`` names the pages):

- ``GET /v1/organizations/usage_report/messages``: time buckets (``bucket_width`` ``1d``,
  ``1h`` or ``1m``) of token counts, grouped by any of ``group_by[]`` ``model``,
  ``api_key_id``, ``workspace_id``, ``service_tier``, ``context_window``,
  ``inference_geo``, filtered by ``models[]``, ``api_key_ids[]``, ``service_tiers[]``;
- ``GET /v1/organizations/cost_report``: daily buckets of USD amounts as decimal strings
  **in cents** (``"123.45"`` is $1.23), one row per bucket, or with ``group_by[]=description``
  one per model, token type, service tier and context window (web searches as
  ``cost_type: web_search`` with no model).

Both take ``starting_at`` (required), ``ending_at``, ``limit`` and ``page`` (the
``next_page`` of the previous answer, while ``has_more``). Every bucket in range is listed,
empty ones with ``results: []``. Both need an Admin API key: no key is a 401
``authentication_error``; an ordinary API key (``sk-ant-api...``) a 403
``permission_error``; anything else not shaped ``sk-ant-admin...`` a 401. (What the real
API answers an ordinary key with is not documented; 403 is this emulator's choice.)

Prices are the emulator's own list (:data:`PRICES`, from the public pricing page), so a
client's price table is checked against an independent reading, not against itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from canny.emulator.validation import ApiError

__all__ = ["PRICES", "Charge", "UsageBook", "admin_key_id", "check_admin_key", "cost_report", "usage_report"]

_MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens: base input and output, and the cache read multiplier."""

    input: Decimal
    output: Decimal
    read: Decimal = Decimal("0.1")

    def rates(self) -> dict[str, Decimal]:
        """Per-token-type rates per MTok (writes are 1.25x and 2x of input)."""
        return {
            "uncached_input_tokens": self.input,
            "cache_creation.ephemeral_5m_input_tokens": self.input * Decimal("1.25"),
            "cache_creation.ephemeral_1h_input_tokens": self.input * 2,
            "cache_read_input_tokens": self.input * self.read,
            "output_tokens": self.output,
        }


def _p(inp: str, out: str, read: str = "0.1") -> Price:
    return Price(Decimal(inp), Decimal(out), Decimal(read))


#: List prices of the models the emulator serves (USD per MTok; anthropic-api.md §1.1).
#: Haiku 5.5 prompts over 100,000 tokens use :data:`HAIKU_55_LONG`.
PRICES: Mapping[str, Price] = {
    "claude-fable-5-2": _p("8", "40", "0.025"),
    "claude-mythos-5-2": _p("8", "40", "0.025"),  # unannounced: priced as Fable 5.2
    "claude-fable-5-1": _p("10", "50", "0.025"),
    "claude-mythos-5-1": _p("10", "50", "0.025"),
    "claude-fable-5": _p("10", "50"),
    "claude-mythos-5": _p("10", "50"),
    "claude-opus-5-5": _p("4", "20", "0.05"),
    "claude-opus-5": _p("5", "25"),
    "claude-opus-4-8": _p("5", "25"),
    "claude-opus-4-7": _p("5", "25"),
    "claude-opus-4-6": _p("5", "25"),
    "claude-opus-4-5-20251101": _p("5", "25"),
    "claude-sonnet-5-5": _p("2", "10", "0.05"),
    "claude-sonnet-5": _p("2", "10"),
    "claude-sonnet-4-6": _p("3", "15"),
    "claude-sonnet-4-5-20250929": _p("3", "15"),
    "claude-haiku-5-5": _p("0.10", "0.50"),
    "claude-haiku-4-5-20251001": _p("1", "5"),
}
HAIKU_55_LONG = _p("0.50", "2.50")
#: USD per web search request.
WEB_SEARCH_FEE = Decimal("0.01")
_TOKEN_TYPES = tuple(Price(Decimal(0), Decimal(0)).rates())
_LABELS = {
    "uncached_input_tokens": "Input Tokens",
    "cache_creation.ephemeral_5m_input_tokens": "Cache Write (5m) Tokens",
    "cache_creation.ephemeral_1h_input_tokens": "Cache Write (1h) Tokens",
    "cache_read_input_tokens": "Cache Read Tokens",
    "output_tokens": "Output Tokens",
}


@dataclass(frozen=True, slots=True)
class Charge:
    """One answered request, as billed."""

    at: datetime
    model: str
    display_name: str
    api_key_id: str
    tokens: Mapping[str, int]  # by cost report token type
    web_search_requests: int = 0
    service_tier: str = "standard"
    inference_geo: str = "global"
    workspace_id: str | None = None
    #: Whether the model takes the 1.1x US-only inference multiplier (Claude 4.6 and later).
    geo_priced: bool = True

    @property
    def context_window(self) -> str:
        prompt = sum(v for k, v in self.tokens.items() if k != "output_tokens")
        return "200k-1M" if prompt > 200_000 else "0-200k"

    def amounts(self) -> dict[str, Decimal]:
        """USD per token type (``{}`` for a model with no list price)."""
        price = PRICES.get(self.model)
        if price is None:
            return {}
        prompt = sum(v for k, v in self.tokens.items() if k != "output_tokens")
        if self.model == "claude-haiku-5-5" and prompt > 100_000:
            price = HAIKU_55_LONG
        factor = Decimal("1.1") if self.inference_geo == "us" and self.geo_priced else Decimal(1)
        if self.service_tier == "batch":
            factor *= Decimal("0.5")
        rates = price.rates()
        return {t: self.tokens.get(t, 0) * rates[t] * factor / _MTOK for t in _TOKEN_TYPES}


def admin_key_id(key: str) -> str:
    """A stable ``apikey_01...`` id for a key (the key itself is never kept)."""
    digest = hashlib.sha256(key.encode()).digest()
    return "apikey_01" + base64.b32encode(digest).decode().rstrip("=")[:22]


class UsageBook:
    """Every billed request the server answered, in arrival order (thread-safe)."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._lock = threading.Lock()
        self._charges: list[Charge] = []
        self.clock = clock or (lambda: datetime.now(UTC))

    def add(self, charge: Charge) -> None:
        with self._lock:
            self._charges.append(charge)

    def charges(self) -> list[Charge]:
        with self._lock:
            return list(self._charges)


def check_admin_key(key: str) -> None:
    """An Admin API key is ``sk-ant-admin...``: 401 without one, 403 for an ordinary key."""
    if not key:
        raise ApiError(401, "authentication_error", "x-api-key header is required")
    if key.startswith("sk-ant-api"):
        raise ApiError(403, "permission_error", "This endpoint requires an Admin API key (sk-ant-admin...).")
    if not key.startswith("sk-ant-admin"):
        raise ApiError(401, "authentication_error", "invalid x-api-key")


# --- time buckets --------------------------------------------------------------------------

_WIDTHS = {"1d": timedelta(days=1), "1h": timedelta(hours=1), "1m": timedelta(minutes=1)}
#: (default, maximum) number of buckets per page for each width.
_LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}


def _time(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_request_error", f"{name}: Input should be a valid datetime") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _snap(moment: datetime, width: str) -> datetime:
    if width == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if width == "1h":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


@dataclass(slots=True)
class _Query:
    width: str
    start: datetime
    end: datetime | None
    limit: int
    group_by: list[str] = field(default_factory=list)
    filters: dict[str, set[str]] = field(default_factory=dict)


def _values(params: Any, name: str) -> list[str]:
    return [v for key in (name, f"{name}[]") for raw in params.getlist(key) for v in raw.split(",") if v]


def _query(params: Any, widths: Iterable[str], groups: Iterable[str], filters: Mapping[str, str]) -> _Query:
    width = params.get("bucket_width", "1d")
    if width not in widths:
        raise ApiError(400, "invalid_request_error", f"bucket_width: Input should be {' or '.join(widths)}")
    if "starting_at" not in params:
        raise ApiError(400, "invalid_request_error", "starting_at: Field required")
    start = _snap(_time(params["starting_at"], "starting_at"), width)
    page = params.get("page")
    if page:
        try:
            start = _time(base64.b64decode(page.removeprefix("page_"), validate=True).decode(), "page")
        except (ValueError, binascii.Error):
            raise ApiError(400, "invalid_request_error", "page: invalid page token") from None
    end = _time(params["ending_at"], "ending_at") if params.get("ending_at") else None
    default, most = _LIMITS[width]
    try:
        limit = int(params.get("limit", default))
    except ValueError:
        raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
    if not 1 <= limit <= most:
        raise ApiError(400, "invalid_request_error", f"limit: Input should be between 1 and {most}")
    group_by = _values(params, "group_by")
    for name in group_by:
        if name not in groups:
            raise ApiError(400, "invalid_request_error", f"group_by: unknown value {name!r}")
    chosen = {attr: set(_values(params, param)) for param, attr in filters.items() if _values(params, param)}
    return _Query(width, start, end, limit, group_by, chosen)


def _buckets(q: _Query, now: datetime) -> tuple[list[tuple[datetime, datetime]], str | None]:
    """The buckets of this page, and the next page's token (``None``: no more)."""
    step = _WIDTHS[q.width]
    last = q.end if q.end is not None else _snap(now, q.width) + step
    spans: list[tuple[datetime, datetime]] = []
    at = q.start
    while at < last and len(spans) < q.limit:
        spans.append((at, at + step))
        at += step
    token = "page_" + base64.b64encode(_iso(at).encode()).decode() if at < last else None
    return spans, token


def _page(data: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    return {"data": data, "has_more": token is not None, "next_page": token}


def _selected(book: UsageBook, q: _Query) -> list[Charge]:
    return [c for c in book.charges() if all(str(getattr(c, a)) in allowed for a, allowed in q.filters.items())]


# --- the two reports -------------------------------------------------------------------------

_USAGE_GROUPS = ("model", "api_key_id", "workspace_id", "service_tier", "context_window", "inference_geo")
_USAGE_FILTERS = {
    "models": "model",
    "api_key_ids": "api_key_id",
    "workspace_ids": "workspace_id",
    "service_tiers": "service_tier",
}


def usage_report(book: UsageBook, params: Any) -> dict[str, Any]:
    """``GET /v1/organizations/usage_report/messages``."""
    q = _query(params, ("1d", "1h", "1m"), _USAGE_GROUPS, _USAGE_FILTERS)
    spans, token = _buckets(q, book.clock())
    charges = _selected(book, q)
    data = []
    for start, end in spans:
        groups: dict[tuple[Any, ...], list[Charge]] = defaultdict(list)
        for c in charges:
            if start <= c.at < end:
                groups[tuple(getattr(c, g) for g in q.group_by)].append(c)
        results = [_usage_row(q.group_by, key, members) for key, members in groups.items()]
        data.append({"starting_at": _iso(start), "ending_at": _iso(end), "results": results})
    return _page(data, token)


def _usage_row(group_by: list[str], key: tuple[Any, ...], members: list[Charge]) -> dict[str, Any]:
    def total(token_type: str) -> int:
        return sum(c.tokens.get(token_type, 0) for c in members)

    row: dict[str, Any] = dict.fromkeys(_USAGE_GROUPS)
    row.update(zip(group_by, key, strict=True))
    row.update(
        {
            "uncached_input_tokens": total("uncached_input_tokens"),
            "cache_creation": {
                "ephemeral_1h_input_tokens": total("cache_creation.ephemeral_1h_input_tokens"),
                "ephemeral_5m_input_tokens": total("cache_creation.ephemeral_5m_input_tokens"),
            },
            "cache_read_input_tokens": total("cache_read_input_tokens"),
            "output_tokens": total("output_tokens"),
            "server_tool_use": {"web_search_requests": sum(c.web_search_requests for c in members)},
        }
    )
    return row


def cost_report(book: UsageBook, params: Any) -> dict[str, Any]:
    """``GET /v1/organizations/cost_report`` (daily buckets only)."""
    q = _query(params, ("1d",), ("workspace_id", "description"), {})
    spans, token = _buckets(q, book.clock())
    charges = book.charges()
    detailed = "description" in q.group_by
    by_workspace = "workspace_id" in q.group_by
    data = []
    for start, end in spans:
        cents: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
        for c in charges:
            if not start <= c.at < end:
                continue
            workspace = c.workspace_id if by_workspace else None
            for token_type, usd in c.amounts().items():
                if usd:
                    line: tuple[str | None, ...] = (
                        c.model,
                        c.display_name,
                        token_type,
                        c.service_tier,
                        c.context_window,
                    )
                    cents[(workspace, "tokens", *(line if detailed else ()))] += usd * 100
            if c.web_search_requests:
                tool = (None, None, None, None, None) if detailed else ()
                cents[(workspace, "web_search", *tool)] += c.web_search_requests * WEB_SEARCH_FEE * 100
        results = [_cost_row(key, amount, detailed) for key, amount in _merged(cents, detailed).items()]
        data.append({"starting_at": _iso(start), "ending_at": _iso(end), "results": results})
    return _page(data, token)


def _merged(cents: dict[tuple[Any, ...], Decimal], detailed: bool) -> dict[tuple[Any, ...], Decimal]:
    """Without ``description``, one amount per workspace (token and tool costs together)."""
    if detailed:
        return cents
    merged: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for key, amount in cents.items():
        merged[(key[0],)] += amount
    return merged


def _cost_row(key: tuple[Any, ...], cents: Decimal, detailed: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "amount": format(cents.normalize(), "f"),
        "currency": "USD",
        "workspace_id": key[0],
        "cost_type": None,
        "description": None,
        "model": None,
        "token_type": None,
        "service_tier": None,
        "context_window": None,
    }
    if not detailed:
        return row
    cost_type, model, display, token_type, tier, window = key[1:]
    description = "Web Search Usage" if cost_type == "web_search" else f"{display} Usage - {_LABELS[token_type]}"
    names = ("cost_type", "description", "model", "token_type", "service_tier", "context_window")
    row.update(zip(names, (cost_type, description, model, token_type, tier, window), strict=True))
    return row
