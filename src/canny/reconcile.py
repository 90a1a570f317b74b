"""Check the ledger against what Anthropic bills: the Usage and Cost Admin API, by UTC
day and model.

::

    from canny.reconcile import reconcile

    result = reconcile(ledger, since=date(2026, 11, 1), until=date(2026, 11, 25))
    for row in result.rows:
        print(row.day, row.model, row.drift_usd, row.causes)

The provider's side is read from ``GET /v1/organizations/usage_report/messages``
(``group_by[]=model``, daily buckets: tokens) and ``GET /v1/organizations/cost_report``
(``group_by[]=description``: amounts in cents per model and token type), following
``next_page`` while ``has_more``. Both need an Admin API key (``sk-ant-admin...``):
``ANTHROPIC_ADMIN_KEY``, else the OS keyring (service ``canny``, user
``anthropic-admin-key``). The key is a :class:`~canny.secrets.Secret`: never printed, and
never sent over plain HTTP except to loopback.

The ledger's side sums every attempt started in the range (any outcome: a failed attempt
that used tokens was billed). Models are compared under their canonical id (aliases and
dated ids resolve through the price table). Per-search fees are compared on a row of their
own, ``(server tools)``: the provider reports them with no model. ``drift = provider -
ledger``; each row names the likely causes of a difference (:data:`CAUSES`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from canny.config import check_base_url
from canny.errors import APIError, AuthenticationError, ConfigError, ConnectionFailed, DriftExceeded
from canny.ledger import AttemptRecord, Ledger
from canny.pricing import default_table, format_usd, resolve_model
from canny.secrets import Secret
from canny.units import plain_decimal
from canny.usage import Usage

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "ADMIN_KEYRING_USERNAME",
    "ADMIN_KEY_ENV",
    "CAUSES",
    "DEFAULT_BASE_URL",
    "DEFAULT_TOLERANCE",
    "SERVER_TOOLS",
    "Reconciliation",
    "Row",
    "check_drift",
    "default_range",
    "fetch_provider",
    "reconcile",
    "resolve_admin_key",
]

ADMIN_KEY_ENV = "ANTHROPIC_ADMIN_KEY"
ADMIN_KEYRING_USERNAME = "anthropic-admin-key"
DEFAULT_TOLERANCE = Decimal("0.01")
DEFAULT_BASE_URL = "https://api.anthropic.com"
#: The row of fees the provider bills with no model (web searches, code execution).
SERVER_TOOLS = "(server tools)"
#: The likely causes a row may name.
CAUSES = {
    "outside": "calls made outside canny",
    "unpriced": "unpriced models",
    "lost": "lost attempts",
    "price": "price changes",
    "ledger_more": "more in the ledger than billed (report not final yet, or attempts not billed)",
}
_USAGE_PATH = "/v1/organizations/usage_report/messages"
_COST_PATH = "/v1/organizations/cost_report"


@dataclass(slots=True)
class _Side:
    tokens: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    attempts: int = 0
    unpriced: int = 0
    lost: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    """One UTC day and model: both sides' tokens and dollars, the drift and its likely causes."""

    day: date
    model: str
    ledger_cost_usd: Decimal
    provider_cost_usd: Decimal
    ledger_tokens: Usage
    provider_tokens: Usage
    #: The ledger's attempts on this day and model: ``(all, unpriced, lost or interrupted)``.
    counts: tuple[int, int, int] = (0, 0, 0)
    #: The likely causes of a difference (values of :data:`CAUSES`; empty: none).
    causes: tuple[str, ...] = ()

    @property
    def attempts(self) -> int:
        return self.counts[0]

    @property
    def unpriced(self) -> int:
        return self.counts[1]

    @property
    def lost(self) -> int:
        return self.counts[2]

    @property
    def drift_usd(self) -> Decimal:
        return self.provider_cost_usd - self.ledger_cost_usd

    @property
    def token_drift(self) -> dict[str, int]:
        """Provider minus ledger, per bucket."""
        return _minus(self.provider_tokens, self.ledger_tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "model": self.model,
            "ledger_cost_usd": plain_decimal(self.ledger_cost_usd),
            "provider_cost_usd": plain_decimal(self.provider_cost_usd),
            "drift_usd": plain_decimal(self.drift_usd),
            "ledger_tokens": self.ledger_tokens.buckets(),
            "provider_tokens": self.provider_tokens.buckets(),
            "token_drift": self.token_drift,
            "attempts": self.attempts,
            "unpriced_attempts": self.unpriced,
            "lost_attempts": self.lost,
            "causes": list(self.causes),
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The rows of ``[since, until)`` (UTC days) and their totals."""

    since: date
    until: date
    rows: tuple[Row, ...]

    @property
    def ledger_cost_usd(self) -> Decimal:
        return sum((r.ledger_cost_usd for r in self.rows), Decimal(0))

    @property
    def provider_cost_usd(self) -> Decimal:
        return sum((r.provider_cost_usd for r in self.rows), Decimal(0))

    @property
    def drift_usd(self) -> Decimal:
        return self.provider_cost_usd - self.ledger_cost_usd

    def largest_drift(self) -> Decimal:
        """The largest absolute drift: of the whole range, or of any one day and model."""
        return max([abs(self.drift_usd), *(abs(r.drift_usd) for r in self.rows)])

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "ledger_cost_usd": plain_decimal(self.ledger_cost_usd),
            "provider_cost_usd": plain_decimal(self.provider_cost_usd),
            "drift_usd": plain_decimal(self.drift_usd),
            "rows": [r.to_json() for r in self.rows],
        }


def _minus(a: Usage, b: Usage) -> dict[str, int]:
    theirs, ours = a.buckets(), b.buckets()
    return {name: theirs[name] - ours[name] for name in theirs}


def check_drift(result: Reconciliation, tolerance: Decimal = DEFAULT_TOLERANCE) -> None:
    """Raise :class:`~canny.errors.DriftExceeded` when the drift of the range, or of any day
    and model, is more than ``tolerance`` dollars either way."""
    largest = result.largest_drift()
    if largest > tolerance:
        raise DriftExceeded(
            f"the provider's cost differs from the ledger's by up to {format_usd(largest)} "
            f"(total drift {format_usd(result.drift_usd)}), over the tolerance of {format_usd(tolerance)}",
            drift=result.drift_usd,
            tolerance=tolerance,
        )


# --- the admin key ---------------------------------------------------------------------------


def resolve_admin_key(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Secret:
    """The Admin API key: explicit, else ``ANTHROPIC_ADMIN_KEY``, else the OS keyring."""
    env = os.environ if environ is None else environ
    value = (explicit or env.get(ADMIN_KEY_ENV, "")).strip()
    if not value and not env.get("CANNY_NO_KEYRING"):
        try:
            import keyring

            value = (keyring.get_password("canny", ADMIN_KEYRING_USERNAME) or "").strip()
        except Exception:  # no keyring backend: as if nothing were stored
            value = ""
    if not value:
        from canny.errors import MissingKeyError

        raise MissingKeyError(
            "no Admin API key: reconcile reads the Usage and Cost Admin API",
            hint=f"export {ADMIN_KEY_ENV}=sk-ant-admin..., or store it with "
            f"`keyring set canny {ADMIN_KEYRING_USERNAME}`",
        )
    return Secret(value)


# --- the provider's side -----------------------------------------------------------------------


def _client(base_url: str, transport: httpx2.BaseTransport | None) -> httpx2.Client:
    import httpx2

    base = check_base_url(base_url)
    plain = base.startswith("http://")
    return httpx2.Client(base_url=base, timeout=60.0, follow_redirects=False, trust_env=not plain, transport=transport)


def _pages(client: httpx2.Client, path: str, key: Secret, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    """Every bucket of a paginated report."""
    import httpx2

    page: str | None = None
    while True:
        query = params + ([("page", page)] if page else [])
        headers = {"x-api-key": key.reveal(), "anthropic-version": "2023-06-01"}
        try:
            response = client.get(path, params=tuple(query), headers=headers)
        except httpx2.HTTPError as exc:
            raise ConnectionFailed(f"could not reach {client.base_url}{path}: {type(exc).__name__}") from None
        body = _json(response, path)
        yield from body.get("data") or []
        page = body.get("next_page")
        if not body.get("has_more") or not page:
            return


def _json(response: httpx2.Response, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    request_id = response.headers.get("request-id")
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        message = f"{path}: {response.status_code} {error.get('type', 'error')}: {error.get('message', '')}".strip()
        cls = AuthenticationError if response.status_code in (401, 403) else APIError
        hint = (
            f"the Usage and Cost API needs an Admin API key (sk-ant-admin...) in {ADMIN_KEY_ENV}"
            if cls is AuthenticationError
            else None
        )
        raise cls(
            message, status_code=response.status_code, error_type=error.get("type"), request_id=request_id, hint=hint
        )
    return body


def _day(text: str) -> date:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).date()


def fetch_provider(
    key: Secret,
    since: date,
    until: date,
    *,
    base_url: str = DEFAULT_BASE_URL,
    transport: httpx2.BaseTransport | None = None,
) -> dict[tuple[date, str], _Side]:
    """The provider's tokens and dollars per (UTC day, canonical model) in ``[since, until)``."""
    bounds = [
        ("starting_at", datetime.combine(since, time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("ending_at", datetime.combine(until, time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("bucket_width", "1d"),
        ("limit", "31"),
    ]
    sides: dict[tuple[date, str], _Side] = defaultdict(_Side)
    with _client(base_url, transport) as client:
        for bucket in _pages(client, _USAGE_PATH, key, [*bounds, ("group_by[]", "model")]):
            day = _day(bucket["starting_at"])
            for r in bucket.get("results") or []:
                created = r.get("cache_creation") or {}
                tokens = Usage(
                    input=int(r.get("uncached_input_tokens") or 0),
                    cache_write_5m=int(created.get("ephemeral_5m_input_tokens") or 0),
                    cache_write_1h=int(created.get("ephemeral_1h_input_tokens") or 0),
                    cache_read=int(r.get("cache_read_input_tokens") or 0),
                    output=int(r.get("output_tokens") or 0),
                    web_search_requests=int((r.get("server_tool_use") or {}).get("web_search_requests") or 0),
                )
                side = sides[(day, resolve_model(r.get("model") or "(unknown)"))]
                side.tokens += tokens
        for bucket in _pages(client, _COST_PATH, key, [*bounds, ("group_by[]", "description")]):
            day = _day(bucket["starting_at"])
            for r in bucket.get("results") or []:
                model = r.get("model") if r.get("cost_type") in (None, "tokens") else None
                dollars = Decimal(str(r.get("amount") or "0")) / 100  # amounts are in cents
                sides[(day, resolve_model(model) if model else SERVER_TOOLS)].cost += dollars
    return dict(sides)


# --- the ledger's side -----------------------------------------------------------------------


def _ledger_sides(records: Iterable[AttemptRecord], since: date, until: date) -> dict[tuple[date, str], _Side]:
    table = default_table()
    sides: dict[tuple[date, str], _Side] = defaultdict(_Side)
    for r in records:
        started = r.started_at if r.started_at.tzinfo else r.started_at.replace(tzinfo=UTC)
        day = started.astimezone(UTC).date()
        if not since <= day < until:
            continue
        # the buckets the provider's usage report has: not web fetches or code executions
        tokens = replace(r.usage, web_fetch_requests=0, code_execution_requests=0)
        if tokens.is_empty:
            continue  # nothing was billed (refused by a budget, failed before the API)
        side = sides[(day, resolve_model(r.model))]
        side.tokens += tokens
        side.attempts += 1
        side.lost += r.outcome in ("lost", "interrupted")
        if r.cost_usd is None:
            side.unpriced += 1
            continue
        fee = (table.web_search_fee(day) or Decimal(0)) * r.usage.web_search_requests
        side.cost += r.cost_usd - fee
        sides[(day, SERVER_TOOLS)].cost += fee
    return sides


def _causes(ledger: _Side, provider: _Side) -> tuple[str, ...]:
    drift = provider.cost - ledger.cost
    more = _minus(provider.tokens, ledger.tokens)
    found: list[str] = []
    if ledger.unpriced:
        found.append(CAUSES["unpriced"])
    if any(v > 0 for v in more.values()):
        only_output = more["output"] > 0 and not any(v for k, v in more.items() if k != "output")
        found.append(CAUSES["lost"] if ledger.lost and only_output else CAUSES["outside"])
    if any(v < 0 for v in more.values()):
        found.append(CAUSES["ledger_more"])
    if not found and drift:
        found.append(CAUSES["price"])
    return tuple(found)


def reconcile(
    ledger: Ledger,
    *,
    since: date,
    until: date,
    admin_key: Secret | str | None = None,
    base_url: str = DEFAULT_BASE_URL,
    transport: httpx2.BaseTransport | None = None,
) -> Reconciliation:
    """Compare the ledger's attempts of ``[since, until)`` (UTC days) with the provider's
    usage and cost reports, per day and model."""
    if until <= since:
        raise ConfigError(f"--until ({until}) must be after --since ({since})")
    key = admin_key if isinstance(admin_key, Secret) else resolve_admin_key(admin_key)
    provider = fetch_provider(key, since, until, base_url=base_url, transport=transport)
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until, time(), UTC)
    mine = _ledger_sides(ledger.records(since=start, until=end), since, until)
    rows = []
    for day, model in sorted(set(provider) | set(mine)):
        theirs, ours = provider.get((day, model), _Side()), mine.get((day, model), _Side())
        if theirs == _Side() and ours.tokens.is_empty and not ours.cost:
            continue
        counts = (ours.attempts, ours.unpriced, ours.lost)
        rows.append(Row(day, model, ours.cost, theirs.cost, ours.tokens, theirs.tokens, counts, _causes(ours, theirs)))
    return Reconciliation(since, until, tuple(rows))


def default_range(now: datetime | None = None) -> tuple[date, date]:
    """The last 7 UTC days, today included."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return today - timedelta(days=6), today + timedelta(days=1)
