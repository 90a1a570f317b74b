"""The price table: loading ``prices.toml``, layering user files, picking the row in force.

The shipped table lives next to this module (``canny/pricing/prices.toml``). A user file with the
same shape can be layered on top of it (negotiated rates): for a model it names, the user's
rows replace the shipped ones from the earliest ``effective_from`` the user gives. Every
rate is a :class:`~decimal.Decimal` read from a string, so nothing here ever touches a
float. A malformed file raises :class:`canny.errors.ConfigError` naming the file and the
key.

This module knows rows and modifiers; :mod:`canny.pricing.rates` picks the row that applies
and :mod:`canny.pricing.cost` turns it into money.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from canny.errors import ConfigError
from canny.usage import TOKEN_BUCKETS

__all__ = [
    "RATED",
    "FeeRow",
    "ModelEntry",
    "ModelInfo",
    "PriceRow",
    "PriceTable",
    "RateSet",
    "default_table",
    "known_models",
    "load_table",
    "model_info",
    "price_version",
    "resolve_model",
    "row_at",
    "user_price_file",
    "utc_day",
]

#: The names of the token buckets priced per million tokens (a row's rates), in display order.
RATED: tuple[str, ...] = tuple(b.name for b in TOKEN_BUCKETS)
_CONFIDENCE = ("official", "third-party", "negotiated")
_MODEL_KEYS = frozenset(
    {"display_name", "family", "status", "released", "deprecated_at", "retires_at", "inference_geo"}
    | {"aliases", "note", "prices", "fast"}
)
_ROW_KEYS = frozenset(
    {"effective_from", "long_prompt_threshold", "long_prompt", "unpriced", "available", "billed_as"}
    | {"confidence", "source", "note", *RATED}
)
_HINT = "fix the file or move it aside; its format is described in docs/pricing.md"

RowKind = Literal["priced", "unpriced", "unavailable", "standard"]


@dataclass(frozen=True, slots=True)
class RateSet:
    """The five per-MTok rates of one price row (or of its long-prompt band)."""

    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal

    def as_dict(self) -> dict[str, Decimal]:
        """The rates keyed by bucket name."""
        return {name: getattr(self, name) for name in RATED}


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One dated row: rates in force from ``effective_from`` until the next row.

    ``kind`` is ``priced`` (``rates`` set), ``unpriced`` (no confirmed figure),
    ``unavailable`` (the API rejects the mode from this date; fast rows only) or
    ``standard`` (fast mode accepted but billed at the standard row; fast rows only).
    """

    effective_from: date
    kind: RowKind
    rates: RateSet | None = None
    long_prompt_threshold: int | None = None
    long_prompt: RateSet | None = None
    confidence: str = "official"
    source: str = ""
    note: str = ""
    origin: str = "shipped"


@dataclass(frozen=True, slots=True)
class FeeRow:
    """A dated per-request server-tool fee in USD."""

    effective_from: date
    per_request: Decimal
    source: str = ""


_R = TypeVar("_R", PriceRow, FeeRow)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the table knows about a model besides its prices.

    ``status`` is as of the table's version (``active``, ``limited``, ``legacy``,
    ``deprecated`` or ``retired``); ``inference_geo`` says whether the model accepts
    ``inference_geo`` (Claude 4.6 and later).
    """

    id: str
    display_name: str
    family: str = ""
    aliases: tuple[str, ...] = ()
    status: str = "active"
    released: date | None = None
    deprecated_at: date | None = None
    retires_at: date | None = None
    inference_geo: bool = False
    note: str = ""

    @property
    def line(self) -> str:
        """The model line (``opus``, ``sonnet`` ...), as the Models API calls it."""
        return self.family

    def is_retired(self, at: datetime | date | None = None) -> bool:
        """True once ``retires_at`` has passed, or when the table lists it as retired."""
        if self.retires_at is not None:
            return utc_day(at) >= self.retires_at
        return self.status == "retired"

    def status_at(self, at: datetime | date | None = None) -> str:
        """THE status on a day (default today), as every command shows it: ``retired`` once
        ``retires_at`` has passed, ``deprecated`` once ``deprecated_at`` has, else the
        table's (``active``, ``limited``, ``legacy``)."""
        if self.is_retired(at):
            return "retired"
        if self.deprecated_at is not None and utc_day(at) >= self.deprecated_at:
            return "deprecated"
        return "active" if self.status in ("retired", "deprecated") else self.status

    def lifecycle(self, at: datetime | date | None = None) -> str:
        """The status with its dates: ``retired 2026-02-19``, ``deprecated 2026-09-30,
        retires 2026-11-30``, ``legacy, retires 2027-03-01``, ``active``."""
        status = self.status_at(at)
        if status == "retired":
            return f"retired {self.retires_at}" if self.retires_at else "retired"
        head = f"deprecated {self.deprecated_at}" if status == "deprecated" else status
        return f"{head}, retires {self.retires_at}" if self.retires_at else head


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model with its standard rows and its fast-mode rows, oldest first."""

    info: ModelInfo
    prices: tuple[PriceRow, ...] = ()
    fast: tuple[PriceRow, ...] = ()


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A loaded, layered, immutable price table."""

    version: str
    models: Mapping[str, ModelEntry]
    aliases: Mapping[str, str]
    batch: Decimal
    inference_geo_us: Decimal
    web_search: tuple[FeeRow, ...] = ()
    paths: tuple[str, ...] = ()
    #: What has been worked out from this (immutable) table, e.g. the rates that apply to a
    #: model on a day (:func:`canny.pricing.rates.applicable_rates`).
    memo: dict[tuple[object, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, name: str) -> str:
        """Canonical id for a model id or alias; unknown names come back unchanged."""
        key = name.strip().lower()
        if key in self.models:
            return key
        return self.aliases.get(key, name)

    def entry(self, name: str) -> ModelEntry | None:
        """The model's entry, found by id or alias, or ``None``."""
        return self.models.get(self.resolve(name))

    def web_search_fee(self, day: date) -> Decimal | None:
        """The per-search fee in force on ``day``, or ``None`` before the first row."""
        row = row_at(self.web_search, day)
        return None if row is None else row.per_request


def utc_day(at: datetime | date | None) -> date:
    """The UTC calendar day of ``at`` (now when ``None``; naive datetimes count as UTC)."""
    if at is None:
        return datetime.now(UTC).date()
    if isinstance(at, datetime):
        return at.astimezone(UTC).date() if at.tzinfo is not None else at.date()
    return at


def row_at(rows: Sequence[_R], day: date) -> _R | None:
    """The last row whose ``effective_from`` is on or before ``day``."""
    found: _R | None = None
    for row in rows:
        if row.effective_from > day:
            break
        found = row
    return found


# --------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class _Parsed:
    """One file, parsed and checked, before layering."""

    label: str
    version: str | None
    models: dict[str, tuple[dict[str, Any], list[PriceRow], list[PriceRow]]] = field(default_factory=dict)
    batch: Decimal | None = None
    geo_us: Decimal | None = None
    web_search: list[FeeRow] = field(default_factory=list)


class _Checker:
    """Validates one document and raises ConfigError naming the file and the key."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.label}: {key}: {problem}", hint=_HINT)

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "expected a string")
        return value

    def day(self, value: Any, key: str) -> date:
        if isinstance(value, datetime):
            return utc_day(value)
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(key, f"expected a date like 2026-10-07, got {value!r}")

    def money(self, value: Any, key: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            hint = ' (write rates as strings, e.g. "0.30")' if isinstance(value, float) else ""
            raise self.fail(key, f"expected a decimal string, got {value!r}{hint}")
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise self.fail(key, f"not a decimal number: {value!r}") from None
        if not amount.is_finite() or amount < 0:
            raise self.fail(key, f"must be a finite, non-negative amount: {value!r}")
        return amount

    def rate_set(self, raw: Mapping[str, Any], key: str) -> RateSet:
        missing = [name for name in RATED if name not in raw]
        if missing:
            raise self.fail(f"{key}.{missing[0]}", "missing (a priced row needs all five rates)")
        return RateSet(**{name: self.money(raw[name], f"{key}.{name}") for name in RATED})

    def unknown_keys(self, raw: Mapping[str, Any], allowed: Iterable[str], key: str) -> None:
        extra = sorted(set(raw) - set(allowed))
        if extra:
            raise self.fail(f"{key}.{extra[0]}" if key else extra[0], "unknown key")

    def row(self, raw: Any, key: str, *, fast: bool, user: bool) -> PriceRow:
        raw = self.table(raw, key)
        self.unknown_keys(raw, _ROW_KEYS, key)
        if "effective_from" not in raw:
            raise self.fail(f"{key}.effective_from", "missing")
        start = self.day(raw["effective_from"], f"{key}.effective_from")
        kind: RowKind = "priced"
        if raw.get("unpriced") is True:
            kind = "unpriced"
        elif raw.get("available") is False:
            kind = "unavailable"
        elif "billed_as" in raw:
            if raw["billed_as"] != "standard" or not fast:
                raise self.fail(f"{key}.billed_as", "only 'standard', and only in fast rows")
            kind = "standard"
        for flag, ok in (("unpriced", True), ("available", False)):
            if flag in raw and raw[flag] is not ok:
                raise self.fail(f"{key}.{flag}", f"may only be {str(ok).lower()}")
        if kind == "unavailable" and not fast:
            raise self.fail(f"{key}.available", "only fast rows can be unavailable")
        rates = long_rates = None
        threshold: int | None = None
        if kind == "priced":
            rates = self.rate_set(raw, key)
            if ("long_prompt" in raw) != ("long_prompt_threshold" in raw):
                raise self.fail(f"{key}.long_prompt", "long_prompt and long_prompt_threshold go together")
            if "long_prompt" in raw:
                lp = self.table(raw["long_prompt"], f"{key}.long_prompt")
                self.unknown_keys(lp, RATED, f"{key}.long_prompt")
                long_rates = self.rate_set(lp, f"{key}.long_prompt")
                threshold = raw["long_prompt_threshold"]
                if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
                    raise self.fail(f"{key}.long_prompt_threshold", "expected a positive integer")
        else:
            present = [name for name in (*RATED, "long_prompt") if name in raw]
            if present:
                raise self.fail(f"{key}.{present[0]}", f"a row that is {kind} carries no rates")
        confidence = raw.get("confidence", "negotiated" if user else "official")
        if confidence not in _CONFIDENCE:
            raise self.fail(f"{key}.confidence", f"expected one of {', '.join(_CONFIDENCE)}")
        return PriceRow(
            effective_from=start,
            kind=kind,
            rates=rates,
            long_prompt_threshold=threshold,
            long_prompt=long_rates,
            confidence=confidence,
            source=self.text(raw.get("source", ""), f"{key}.source"),
            note=self.text(raw.get("note", ""), f"{key}.note"),
            origin=self.label,
        )

    def rows(self, raw: Any, key: str, *, fast: bool, user: bool) -> list[PriceRow]:
        if not isinstance(raw, list):
            raise self.fail(key, "expected an array of tables ([[...]])")
        rows = [self.row(item, f"{key}[{i}]", fast=fast, user=user) for i, item in enumerate(raw)]
        rows.sort(key=lambda r: r.effective_from)
        for before, after in itertools.pairwise(rows):
            if before.effective_from == after.effective_from:
                raise self.fail(key, f"two rows take effect on {after.effective_from}")
        return rows


def _parse(text: str, label: str, *, user: bool) -> _Parsed:
    check = _Checker(label)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: invalid TOML: {exc}", hint=_HINT) from None
    check.unknown_keys(doc, {"version", "models"} if user else {"version", "models", "modifiers", "server_tools"}, "")
    version = check.text(doc["version"], "version") if "version" in doc else None
    if not user and version is None:
        raise check.fail("version", "missing")
    parsed = _Parsed(label=label, version=version)
    if not user:
        mods = check.table(doc.get("modifiers"), "modifiers")
        check.unknown_keys(mods, {"batch", "inference_geo_us"}, "modifiers")
        parsed.batch = check.money(mods.get("batch"), "modifiers.batch")
        parsed.geo_us = check.money(mods.get("inference_geo_us"), "modifiers.inference_geo_us")
        tools = check.table(doc.get("server_tools", {}), "server_tools")
        check.unknown_keys(tools, {"web_search"}, "server_tools")
        for i, item in enumerate(tools.get("web_search", [])):
            k = f"server_tools.web_search[{i}]"
            fee = check.table(item, k)
            check.unknown_keys(fee, {"effective_from", "per_request", "source"}, k)
            parsed.web_search.append(
                FeeRow(
                    effective_from=check.day(fee.get("effective_from"), f"{k}.effective_from"),
                    per_request=check.money(fee.get("per_request"), f"{k}.per_request"),
                    source=check.text(fee.get("source", ""), f"{k}.source"),
                )
            )
        parsed.web_search.sort(key=lambda r: r.effective_from)
    for model_id, item in check.table(doc.get("models", {}), "models").items():
        key = f"models.{model_id}"
        raw = check.table(item, key)
        check.unknown_keys(raw, _MODEL_KEYS, key)
        info: dict[str, Any] = {}
        for name in ("display_name", "family", "status", "note"):
            if name in raw:
                info[name] = check.text(raw[name], f"{key}.{name}")
        for name in ("released", "deprecated_at", "retires_at"):
            if name in raw:
                info[name] = check.day(raw[name], f"{key}.{name}")
        if "inference_geo" in raw:
            if not isinstance(raw["inference_geo"], bool):
                raise check.fail(f"{key}.inference_geo", "expected true or false")
            info["inference_geo"] = raw["inference_geo"]
        if "aliases" in raw:
            aliases = raw["aliases"]
            if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
                raise check.fail(f"{key}.aliases", "expected a list of strings")
            info["aliases"] = tuple(a.lower() for a in aliases)
        prices = check.rows(raw.get("prices", []), f"{key}.prices", fast=False, user=user)
        fast = check.rows(raw.get("fast", []), f"{key}.fast", fast=True, user=user)
        parsed.models[model_id.lower()] = (info, prices, fast)
    return parsed


# --------------------------------------------------------------------------- layering


def _overlay(old: Sequence[PriceRow], new: Sequence[PriceRow]) -> tuple[PriceRow, ...]:
    """User rows win from their earliest ``effective_from`` on; older shipped rows stay."""
    if not new:
        return tuple(old)
    cutoff = min(row.effective_from for row in new)
    return (*(row for row in old if row.effective_from < cutoff), *new)


def _build(layers: Sequence[_Parsed]) -> PriceTable:
    base = layers[0]
    assert base.batch is not None
    assert base.geo_us is not None
    assert base.version is not None
    models: dict[str, ModelEntry] = {}
    aliases: dict[str, str] = {}
    version = base.version
    for layer in layers:
        check = _Checker(layer.label)
        if layer is not base:
            version += "+" + (layer.version or "local")
        for model_id, (parsed_info, prices, fast) in layer.models.items():
            info = dict(parsed_info)  # the parsed layer is cached: never mutate it
            canonical = model_id if model_id in models else aliases.get(model_id, model_id)
            old = models.get(canonical)
            if old is None:
                entry = ModelEntry(
                    info=ModelInfo(id=canonical, display_name=info.pop("display_name", canonical), **info),
                    prices=tuple(prices),
                    fast=tuple(fast),
                )
            else:
                extra = tuple(a for a in info.pop("aliases", ()) if a not in old.info.aliases)
                entry = ModelEntry(
                    info=replace(old.info, aliases=old.info.aliases + extra, **info),
                    prices=_overlay(old.prices, prices),
                    fast=_overlay(old.fast, fast),
                )
            for alias in entry.info.aliases:
                if alias in models and alias != canonical:
                    raise check.fail(f"models.{model_id}.aliases", f"{alias!r} is the id of another model")
                if layer is base and aliases.get(alias, canonical) != canonical:
                    raise check.fail(f"models.{model_id}.aliases", f"{alias!r} already names {aliases[alias]}")
                aliases[alias] = canonical
            models[canonical] = entry
    return PriceTable(
        version=version,
        models=models,
        aliases=aliases,
        batch=base.batch,
        inference_geo_us=base.geo_us,
        web_search=tuple(base.web_search),
        paths=tuple(layer.label for layer in layers[1:]),
    )


# --------------------------------------------------------------------------- loading

_CACHE: dict[tuple[tuple[str, int, int], ...], PriceTable] = {}


@functools.cache
def _shipped() -> _Parsed:
    """The shipped table, parsed once per process."""
    text = resources.files("canny.pricing").joinpath("prices.toml").read_text(encoding="utf-8")
    return _parse(text, "canny/pricing/prices.toml", user=False)


def load_table(extra: Sequence[Path | str] = ()) -> PriceTable:
    """The shipped table with each file of ``extra`` layered on top, in order.

    Results are cached per (path, mtime, size), so an edited file is picked up on the next
    call and an unchanged one is parsed once. Raises :class:`ConfigError` for a file that
    cannot be read or does not follow the format.
    """
    key: list[tuple[str, int, int]] = []
    for item in extra:
        path = Path(item)
        try:
            st = path.stat()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read price file: {exc.strerror}", hint=_HINT) from None
        key.append((str(path), st.st_mtime_ns, st.st_size))
    cache_key = tuple(key)
    table = _CACHE.get(cache_key)
    if table is None:
        layers = [_shipped()]
        for path_text, _, _ in cache_key:
            path = Path(path_text)
            try:
                raw = path.read_bytes()
                text = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read price file: {exc}", hint=_HINT) from None
            layer = _parse(text, str(path), user=True)
            if layer.version is None:
                layer.version = "local-" + hashlib.sha256(raw).hexdigest()[:8]
            layers.append(layer)
        table = _build(layers)
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[cache_key] = table
    return table


# --------------------------------------------------------------------------- the default table


def user_price_file() -> Path | None:
    """The user's price file if it exists: ``$CANNY_HOME/prices.toml`` when ``CANNY_HOME``
    is set, else ``prices.toml`` in the platform's user config dir for canny."""
    from canny.config import config_dir

    path = config_dir() / "prices.toml"
    return path if path.is_file() else None


#: Where the user's price file would be, per value of the variables that decide it.
_USER_PATHS: dict[tuple[str | None, ...], str] = {}
_PATH_VARIABLES = ("CANNY_HOME", "XDG_CONFIG_HOME", "HOME")


def _user_price_path() -> str:
    """The path :func:`user_price_file` checks, worked out once per environment."""
    key = tuple(map(os.environ.get, _PATH_VARIABLES))
    path = _USER_PATHS.get(key)
    if path is None:
        from canny.config import config_dir

        if len(_USER_PATHS) > 64:
            _USER_PATHS.clear()
        path = _USER_PATHS[key] = str(config_dir() / "prices.toml")
    return path


def default_table() -> PriceTable:
    """The shipped table with the user's price file layered on top (cached).

    Every call costs one look at the user's price file: an edited, added or removed file
    is picked up on the next call, an unchanged one is not read again. Where there is no
    file (the usual case) the look is an ``access`` check, which says so without raising
    (a ``stat`` that fails costs an exception per call)."""
    path = _user_price_path()
    if not os.access(path, os.F_OK):
        return load_table(())
    try:
        st = os.stat(path)
    except OSError:  # removed between the two looks
        return load_table(())
    if not stat.S_ISREG(st.st_mode):
        return load_table(())
    table = _CACHE.get(((path, st.st_mtime_ns, st.st_size),))
    return table if table is not None else load_table((path,))


def resolve_model(name: str, *, table: PriceTable | None = None) -> str:
    """Canonical model id for an id or alias (``sonnet``, a dated id ...); unknown names unchanged."""
    return (table or default_table()).resolve(name)


def model_info(name: str, *, table: PriceTable | None = None) -> ModelInfo | None:
    """What the table knows about a model (found by id or alias), or ``None``."""
    entry = (table or default_table()).entry(name)
    return None if entry is None else entry.info


def known_models(*, table: PriceTable | None = None) -> list[ModelInfo]:
    """Every model in the table, newest lines first, as listed in ``prices.toml``."""
    return [entry.info for entry in (table or default_table()).models.values()]


def price_version(*, table: PriceTable | None = None) -> str:
    """The table's version, e.g. ``2026-11-24``, or ``2026-11-24+acme-2026`` with a user file."""
    return (table or default_table()).version


def suggest_models(name: str, *, table: PriceTable | None = None, n: int = 3) -> list[str]:
    """Known ids and aliases closest to ``name`` (for "did you mean"), best first; empty
    when nothing is close."""
    import difflib

    table = table or default_table()
    names = [*table.models, *table.aliases]
    return difflib.get_close_matches(name.strip().lower(), names, n=n, cutoff=0.6)
