"""Budgets in one process: storing them, reserving and settling, lowering max_tokens,
refusing, scopes, leases, and periods in a time zone (with an injected clock)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from canny import budget, errors
from canny._call import CallSpec
from canny.budget import MIN_MAX_TOKENS
from canny.cli._exit_codes import exit_code_for
from canny.client import Client
from canny.config import load_settings
from canny.errors import CannyWarning
from canny.ledger import AttemptRecord
from canny.ledger.sqlite import SQLiteLedger
from canny.retry import RetryPolicy
from tests.conftest import CANARY_KEY, MemoryLedger

MODEL = "claude-sonnet-5-5"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _spec(
    prompt: str = "hello there",
    *,
    max_tokens: int = 1000,
    project: str | None = None,
    tags: tuple[str, ...] = (),
    key: str | None = "key-a",
    model: str = MODEL,
    **params: Any,
) -> CallSpec:
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}], **params}
    return CallSpec(model=model, params=body, stream=True, project=project, tags=tags, key_fingerprint=key)


def _guard(ledger: SQLiteLedger, *, at: datetime = NOW, lease: float = 600.0) -> budget.BudgetGuard:
    return budget.BudgetGuard(ledger, budget.stored_budgets(ledger), lease=lease, clock=lambda: at)


def _status(ledger: SQLiteLedger, at: datetime = NOW) -> budget.BudgetStatus:
    (line,) = budget.budget_status(ledger, now=at)
    return line


def _client(emulator: Any, ledger: Any, run: str, *plan: str, max_tokens: int = 400) -> Client:
    return Client(
        api_key=CANARY_KEY,
        base_url=emulator.url_for(*plan, run=run),
        ledger=ledger,
        model=MODEL,
        max_tokens=max_tokens,
        retry=RetryPolicy(sleep=lambda _: None, rng=lambda: 0.0),
    )


def _row(call: str, cost: str, at: datetime, **fields: Any) -> AttemptRecord:
    return AttemptRecord(
        call_id=call, attempt=1, started_at=at, ended_at=at, model=MODEL, outcome="ok", cost_usd=Decimal(cost), **fields
    )


# --- storing -------------------------------------------------------------------------------


def test_set_list_and_remove(ledger: SQLiteLedger) -> None:
    """Budgets are stored per period and scope; setting one again replaces it."""
    budget.set_budget(ledger, period="day", limit="5", time_zone="Europe/Paris")
    budget.set_budget(ledger, period="month", limit=Decimal("100"), scope=budget.Scope(project="acme"))
    budget.set_budget(ledger, period="day", limit="7", time_zone="Europe/Paris")
    stored = budget.stored_budgets(ledger)
    assert [(b.period, b.limit, b.scope.project, b.time_zone) for b in stored] == [
        ("day", Decimal("7"), None, "Europe/Paris"),
        ("month", Decimal("100"), "acme", "UTC"),
    ]
    removed = budget.remove_budgets(ledger, matching=budget.Scope(project="acme"))
    assert [b.name for b in removed] == ["month[project=acme]"]
    assert [b.name for b in budget.stored_budgets(ledger)] == ["day"]


def test_scope_label_name_and_stored_form() -> None:
    """A scope is labelled, names its budget, and is stored with '' for a field that does not narrow."""
    nightly = budget.Scope(project="acme", tag="nightly")
    assert (str(nightly), nightly.suffix, nightly.stored) == (
        "project acme, tag nightly",
        "[project=acme,tag=nightly]",
        ("acme", "nightly", ""),
    )
    assert budget.Scope.from_stored(*nightly.stored) == nightly
    assert (str(budget.ALL_CALLS), budget.ALL_CALLS.stored, budget.Scope.from_stored("", "", "")) == (
        "all calls",
        ("", "", ""),
        budget.Scope(),
    )
    assert budget.Budget("month", Decimal(1), nightly).name == "month[project=acme,tag=nightly]"
    assert budget.Budget("day", Decimal(1)).name == "day"


def test_scope_matches_calls_and_selects_scopes() -> None:
    """As a budget's scope, a field matches calls; as a filter, a field left None matches any scope."""
    acme = budget.Scope(project="acme")
    assert acme.matches(_spec(project="acme", tags=("x",)))
    assert not acme.matches(_spec(project="other"))
    assert budget.Scope(tag="x", key="key-a").matches(_spec(tags=("y", "x")))
    assert not budget.Scope(tag="x", key="key-b").matches(_spec(tags=("x",)))
    assert budget.ALL_CALLS.matches(_spec())
    assert [acme.selects(s) for s in (budget.Scope(), acme, budget.Scope(project="acme", tag="x"))] == [
        False,
        True,
        True,
    ]
    assert budget.ALL_CALLS.selects(budget.Scope(tag="x"))


def test_remove_budgets_takes_every_budget_its_filter_selects(ledger: SQLiteLedger) -> None:
    """remove_budgets removes the budgets of the period and scope fields given, with their
    alert rules, and matching_budgets names the same ones first."""
    acme, acme_x, x = budget.Scope(project="acme"), budget.Scope(project="acme", tag="x"), budget.Scope(tag="x")
    chosen: list[tuple[budget.Period, budget.Scope]] = [
        ("day", budget.ALL_CALLS), ("day", acme), ("month", acme_x), ("month", x)
    ]  # fmt: skip
    for period, scope in chosen:
        budget.set_budget(ledger, period=period, limit="5", scope=scope, alert_at="50", alert_command="true")
    preview = budget.matching_budgets(ledger, matching=acme)
    removed = budget.remove_budgets(ledger, matching=acme)
    assert [b.name for b in removed] == [b.name for b in preview] == ["day[project=acme]", "month[project=acme,tag=x]"]
    assert [b.name for b in budget.remove_budgets(ledger, period="month")] == ["month[tag=x]"]
    (left,) = budget.stored_budgets(ledger)
    assert left.name == "day"
    again = budget.set_budget(ledger, period="day", limit="5", scope=acme)
    assert budget.budget_alerts(ledger, again)[0] is None  # its old alert rule went with it
    assert budget.budget_alerts(ledger, left)[0] is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"period": "week", "limit": "5"}, "period"),
        ({"period": "day", "limit": "-1"}, "non-negative"),
        ({"period": "day", "limit": "five"}, "dollar amount"),
        ({"period": "day", "limit": "5", "time_zone": "Mars/Olympus"}, "time zone"),
    ],
)
def test_bad_budgets_are_config_errors(ledger: SQLiteLedger, kwargs: dict[str, Any], message: str) -> None:
    """A bad period, limit or time zone is a clean ConfigError, and nothing is stored."""
    with pytest.raises(errors.ConfigError, match=message):
        budget.set_budget(ledger, **kwargs)
    assert budget.stored_budgets(ledger) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"project": " "}, "budget project must not be empty"), ({"tag": ""}, "budget tag must not be empty"),
     ({"key": 3}, "budget key must be a string")],
)  # fmt: skip
def test_bad_scopes_are_config_errors(fields: dict[str, Any], message: str) -> None:
    """An empty or non-string scope field is a ConfigError; a budget's scope must be a Scope."""
    with pytest.raises(errors.ConfigError, match=message):
        budget.Scope(**fields)
    with pytest.raises(TypeError, match="Scope"):
        budget.Budget("day", Decimal(5), "acme")  # type: ignore[arg-type]


def test_no_budget_means_no_guard(ledger: SQLiteLedger) -> None:
    """Without stored or profile budgets guard_for returns None (the per-call fast path)."""
    assert budget.guard_for(ledger, load_settings()) is None
    assert budget.guard_for(MemoryLedger(), load_settings()) is None


def test_profile_budgets(ledger: SQLiteLedger) -> None:
    """A profile's budget table gives budgets in its scope and time zone, and a lease."""
    settings = load_settings(
        budgets={"day": "5", "month": "100", "project": "acme", "lease": 30}, time_zone="Asia/Tokyo"
    )
    found = budget.profile_budgets(settings)
    assert [(b.period, b.limit, b.scope.project, b.time_zone, b.source) for b in found] == [
        ("day", Decimal("5"), "acme", "Asia/Tokyo", "profile"),
        ("month", Decimal("100"), "acme", "Asia/Tokyo", "profile"),
    ]
    guard = budget.guard_for(ledger, settings)
    assert guard is not None
    assert guard.lease == 30
    assert [b.name for b in guard.budgets] == ["day[project=acme]", "month[project=acme]"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"weekly": "5"}, "unknown budget setting 'weekly'"),
        ({"day": "lots"}, "dollar amount"),
        ({"day": "5", "lease": 0}, "positive"),
        ({"day": "5", "project": 3}, "must be a string"),
    ],
)
def test_bad_profile_budgets(ledger: SQLiteLedger, table: dict[str, Any], message: str) -> None:
    """A bad profile budget table is a ConfigError naming the key."""
    with pytest.raises(errors.ConfigError, match=message):
        budget.guard_for(ledger, load_settings(budgets=table))


def test_profile_budgets_need_a_database() -> None:
    """Profile budgets with a ledger that cannot hold them are refused, never silently ignored."""
    with pytest.raises(errors.ConfigError, match="SQLite or PostgreSQL"):
        budget.guard_for(MemoryLedger(), load_settings(budgets={"day": "5"}))


# --- reserve, settle, clamp, refuse ---------------------------------------------------------


def test_reserve_then_settle_replaces_the_worst_case(ledger: SQLiteLedger) -> None:
    """A reservation holds the worst case; settling swaps it for the actual cost."""
    budget.set_budget(ledger, period="day", limit="1")
    spec = _spec()
    worst = spec.worst_case()
    assert worst is not None
    reservation = _guard(ledger).reserve(spec)
    assert reservation.max_tokens == 1000
    assert _status(ledger).reserved == worst
    reservation.settle(Decimal("0.0012"))
    reservation.settle(Decimal("5"))  # a second settle is a no-op
    line = _status(ledger)
    assert (line.spent, line.reserved, line.headroom) == (Decimal("0.0012"), Decimal(0), Decimal("0.9988"))


def test_release_and_unpriced_settle(ledger: SQLiteLedger) -> None:
    """Release frees the hold at no charge; an unknown actual cost charges the worst case."""
    budget.set_budget(ledger, period="day", limit="1")
    guard = _guard(ledger)
    guard.reserve(_spec()).release()
    assert (_status(ledger).spent, _status(ledger).reserved) == (Decimal(0), Decimal(0))
    held = guard.reserve(_spec())
    assert isinstance(held, budget.LedgerReservation)
    held.settle(None)
    assert _status(ledger).spent == held.amount


def test_clamps_max_tokens_to_the_headroom(ledger: SQLiteLedger) -> None:
    """When the worst case does not fit, max_tokens is lowered to what is left, with a warning."""
    spec = _spec(max_tokens=1000)
    floor, worst = spec.worst_case(0), spec.worst_case()
    assert floor is not None
    assert worst is not None
    per_token = (worst - floor) / 1000
    budget.set_budget(ledger, period="day", limit=floor + 250 * per_token)
    with pytest.warns(CannyWarning, match="max_tokens lowered from 1000 to 250"):
        reservation = _guard(ledger).reserve(spec)
    assert reservation.max_tokens == 250
    assert _status(ledger).reserved == spec.worst_case(250)
    assert _status(ledger).headroom == 0


def test_refuses_below_the_minimum(ledger: SQLiteLedger) -> None:
    """Below MIN_MAX_TOKENS of headroom the call is refused, with every figure in the error."""
    spec = _spec(max_tokens=1000)
    floor, worst = spec.worst_case(0), spec.worst_case()
    assert floor is not None
    assert worst is not None
    limit = floor + (worst - floor) / 1000 * (MIN_MAX_TOKENS - 1)
    budget.set_budget(ledger, period="day", limit=limit, time_zone="Europe/Paris")
    with pytest.raises(errors.BudgetExceeded) as caught:
        _guard(ledger).reserve(spec)
    err = caught.value
    assert (err.budget, err.limit, err.needed) == ("day", limit, worst)
    assert (err.spent, err.reserved) == (Decimal(0), Decimal(0))
    assert exit_code_for(err) == 4
    assert err.message.startswith("the day budget for all calls")
    assert "needs up to" in err.message
    assert "canny budget set --day" in err.hint
    assert "Europe/Paris" in err.hint
    assert _status(ledger).reserved == 0


def test_unpriced_model_is_refused(ledger: SQLiteLedger) -> None:
    """A model with no price cannot be checked against a cost budget: refused, not waved through."""
    budget.set_budget(ledger, period="month", limit="100")
    with pytest.warns(UserWarning, match="claude-imaginary"), pytest.raises(errors.BudgetExceeded, match="no price"):
        _guard(ledger).reserve(_spec(model="claude-imaginary-9"))


def test_reservations_are_cache_aware(ledger: SQLiteLedger) -> None:
    """A prompt marked for caching reserves at the cache-write rate (1h above 5m above none)."""
    budget.set_budget(ledger, period="day", limit="1")
    guard = _guard(ledger)
    block = [{"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]
    specs = [_spec(), _spec(system=block), _spec(cache_control={"type": "ephemeral", "ttl": "1h"})]
    plain, five, hour = (getattr(guard.reserve(spec), "amount", Decimal(0)) for spec in specs)
    assert Decimal(0) < plain < five < hour


def test_client_clamps_refuses_and_records(ledger: SQLiteLedger, emulator: Any) -> None:
    """Via the client: clamped calls send lower max_tokens; refused ones are unsent budget_refused rows."""
    run = uuid.uuid4().hex
    client = _client(emulator, ledger, run, max_tokens=400)
    spec = client._spec("hello", stream=False, system=None, model=None, max_tokens=None, project=None,
                        tags=None, session_id=None, max_cost=None, params={})  # fmt: skip
    floor, worst = spec.worst_case(0), spec.worst_case()
    assert floor is not None
    assert worst is not None
    budget.set_budget(ledger, period="day", limit=floor + (worst - floor) * Decimal("0.5"))
    with pytest.warns(CannyWarning, match="max_tokens lowered from 400 to 200"):
        result = client.create("hello")
    assert result.outcome == "ok"
    assert emulator.requests(run)[0].body["max_tokens"] == 200
    assert result.cost is not None
    budget.set_budget(ledger, period="day", limit=result.cost)
    with pytest.raises(errors.BudgetExceeded):
        client.create("hello again")
    assert len(emulator.requests(run)) == 1
    rows = list(ledger.records())
    assert [r.outcome for r in rows] == ["ok", "budget_refused"]
    assert rows[1].error_code == "day"
    assert _status(ledger, datetime.now(UTC)).spent == result.cost


def test_failed_attempt_after_message_start_is_charged(ledger: SQLiteLedger, emulator: Any) -> None:
    """A retry after an error that followed message_start is billed its input, and charged."""
    budget.set_budget(ledger, period="day", limit="1")
    run = uuid.uuid4().hex
    result = _client(emulator, ledger, run, "error_event;after=0", "ok").stream("hello").final()
    assert result.attempts == 2
    costs = [r.cost_usd for r in ledger.records()]
    assert costs[0] is not None
    assert costs[0] > 0
    line = _status(ledger, datetime.now(UTC))
    assert line.spent == result.cost == sum(c for c in costs if c is not None)
    assert line.reserved == 0


# --- scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "inside", "outside"),
    [
        ({"project": "acme"}, {"project": "acme"}, {"project": "other"}),
        ({"tag": "nightly"}, {"tags": ("batch", "nightly")}, {"tags": ("batch",)}),
        ({"key": "key-b"}, {"key": "key-b"}, {"key": "key-a"}),
    ],
)
def test_scopes(ledger: SQLiteLedger, scope: dict[str, str], inside: dict[str, Any], outside: dict[str, Any]) -> None:
    """A project, tag or key budget binds only the calls in its scope."""
    budget.set_budget(ledger, period="day", limit="0.000001", scope=budget.Scope(**scope))
    guard = _guard(ledger)
    outside_reservation = guard.reserve(_spec(**outside))
    assert not isinstance(outside_reservation, budget.LedgerReservation)
    with pytest.raises(errors.BudgetExceeded) as caught:
        guard.reserve(_spec(**inside))
    assert caught.value.budget == f"day[{next(iter(scope))}={next(iter(scope.values()))}]"


def test_spent_is_seeded_from_the_ledger_by_scope(ledger: SQLiteLedger) -> None:
    """A budget set mid-period counts what the ledger already holds in its scope and window."""
    ledger.record(_row("a", "0.5", NOW - timedelta(hours=1), project="acme", tags=("x",)))
    ledger.record(_row("b", "0.25", NOW - timedelta(hours=2), project="other", tags=("x",)))
    ledger.record(_row("c", "2", NOW - timedelta(days=1), project="acme"))
    budget.set_budget(ledger, period="day", limit="10", scope=budget.Scope(project="acme"))
    budget.set_budget(ledger, period="day", limit="10", scope=budget.Scope(tag="x"))
    budget.set_budget(ledger, period="month", limit="10")
    spent = {line.budget.name: line.spent for line in budget.budget_status(ledger, now=NOW)}
    assert spent == {"day[project=acme]": Decimal("0.5"), "day[tag=x]": Decimal("0.75"), "month": Decimal("2.75")}


# --- time zones ------------------------------------------------------------------------


def test_day_and_month_boundaries_in_a_time_zone(ledger: SQLiteLedger) -> None:
    """Periods follow local midnight: 23:30 UTC on Nov 30 is already December in Paris."""
    late_nov = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    early_dec = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 00:30 on Dec 1 in Paris
    ledger.record(_row("a", "1", late_nov))
    ledger.record(_row("b", "2", early_dec))
    for period in budget.PERIODS:
        budget.set_budget(ledger, period=period, limit="100", time_zone="Europe/Paris")
    paris = {
        line.budget.period: (line.window.label, line.spent) for line in budget.budget_status(ledger, now=early_dec)
    }
    assert paris == {"day": ("2026-12-01", Decimal("2")), "month": ("2026-12", Decimal("2"))}
    for period in budget.PERIODS:
        budget.set_budget(ledger, period=period, limit="100", time_zone="UTC")
    utc = {line.budget.period: (line.window.label, line.spent) for line in budget.budget_status(ledger, now=early_dec)}
    assert utc == {"day": ("2026-11-30", Decimal("3")), "month": ("2026-11", Decimal("3"))}


def test_reservations_stay_in_their_window(ledger: SQLiteLedger) -> None:
    """A call reserved before local midnight is charged to that day, not the next one."""
    budget.set_budget(ledger, period="day", limit="1", time_zone="America/New_York")
    before = datetime(2026, 11, 25, 4, 59, tzinfo=UTC)  # 23:59 in New York
    after = before + timedelta(minutes=2)
    reservation = _guard(ledger, at=before).reserve(_spec())
    assert _status(ledger, after).reserved == 0
    reservation.settle(Decimal("0.25"))
    assert _status(ledger, before).spent == Decimal("0.25")
    assert _status(ledger, after).spent == 0


def test_a_dst_day_lasts_25_hours() -> None:
    """The day clocks go back is 25 hours long in its time zone."""
    window = budget.period_window("day", "America/New_York", datetime(2026, 11, 1, 12, tzinfo=UTC))
    assert window.end.astimezone(UTC) - window.start.astimezone(UTC) == timedelta(hours=25)


# --- leases ----------------------------------------------------------------------------


def test_an_expired_lease_frees_the_budget_and_a_late_settle_still_counts(ledger: SQLiteLedger) -> None:
    """Past its lease a reservation stops counting; if its call ends after all, it is charged."""
    budget.set_budget(ledger, period="day", limit="1")
    slow = _guard(ledger, lease=60).reserve(_spec())
    assert _status(ledger).reserved > 0
    later = NOW + timedelta(seconds=61)
    assert budget.reconcile(ledger, now=later) == 1
    assert _status(ledger, later).reserved == 0
    slow.settle(Decimal("0.3"))
    assert _status(ledger, later).spent == Decimal("0.3")
    assert budget.reservations_in_flight(ledger)[:2] == (0, 0)


def test_renew_extends_the_lease(ledger: SQLiteLedger) -> None:
    """A renewed reservation outlives its first lease."""
    budget.set_budget(ledger, period="day", limit="1")
    reservation = _guard(ledger, lease=60).reserve(_spec())
    assert isinstance(reservation, budget.LedgerReservation)
    assert reservation.renew(3600)
    assert budget.reconcile(ledger, now=NOW + timedelta(seconds=61)) == 0
    reservation.release()
    assert not reservation.renew()


def test_clear_reservations_charges_known_rows(ledger: SQLiteLedger) -> None:
    """Ending every reservation charges what the ledger holds for each call."""
    budget.set_budget(ledger, period="day", limit="1")
    spec = _spec()
    _guard(ledger).reserve(spec)
    ledger.record(_row(spec.call_id, "0.125", NOW))
    assert budget.clear_reservations(ledger) == 1
    line = _status(ledger)
    assert (line.spent, line.reserved) == (Decimal("0.125"), Decimal(0))
