"""Scenarios: which fault the N-th ``/v1/messages`` request gets, as a TOML or JSON file.

A scenario is an ordered list of *steps*, then an optional seeded *random* mix::

    description = "two rate limits, then a flaky server"
    seed = 7                      # seeds the random draws (default 0)

    [[step]]                      # request 1 and 2
    fault = "rate_limit"
    retry_after = 1               # any parameter of the fault
    repeat = 2                    # this step covers two requests (default 1)

    [[step]]                      # request 3
    fault = "ok"

    [random]                      # from request 4 on: each request draws a fault
    overloaded = 0.1              # probability; the rest of the mass is "ok"
    "drop;after=1" = 0.05         # a key may carry parameters,
    rate_limit = { p = 0.05, retry_after = 0.2 }   # or a table holds them

    [rate_limits]                 # optional: enforce anthropic-ratelimit-* budgets
    requests = 3                  # per window (any of requests, input_tokens,
    input_tokens = 100000         #  output_tokens; the rest keep the defaults,
                                  #  4000 / 2000000 / 400000)
    window = 60                   # seconds until the budgets refill (default 60)
Two top-level keys set the emulator's other endpoints: ``batch_seconds`` (how long a
Message Batch stays ``in_progress``, default 0) and ``files_downloadable`` (default false,
as the API documents for uploaded files).

The same structure in JSON: ``{"seed": 7, "step": [{"fault": "rate_limit"}], "random":
{"overloaded": 0.1}, "rate_limits": {"requests": 3}}``. With ``rate_limits``, every
``/v1/messages`` request draws on the budgets (shown in the ``anthropic-ratelimit-*``
headers); once one is spent, requests get a 429 with ``retry-after`` until the window resets.
Every mistake is a :class:`ValueError` whose message names the key
or fault at fault. This module is stdlib-only and holds no runtime state: the app keeps
the request counter and the seeded random generator.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from canny.emulator.faults import OK, Fault, make_fault, parse_fault

__all__ = ["RateLimits", "Scenario", "Step", "load_scenario"]

_LIMIT_KEYS = ("requests", "input_tokens", "output_tokens", "window")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-window budgets shown in the ``anthropic-ratelimit-*`` headers.

    ``enforce`` false (the default server): the headers count down but never block.
    Enforced (a scenario's ``[rate_limits]``): a request that finds a budget spent gets a
    429 ``rate_limit_error`` with ``retry-after`` (seconds to the reset).
    """

    requests: int = 4_000
    input_tokens: int = 2_000_000
    output_tokens: int = 400_000
    window: float = 60.0
    enforce: bool = False


_TOP_KEYS = ("batch_seconds", "description", "files_downloadable", "random", "rate_limits", "seed", "step")
_MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted step: ``fault`` for ``repeat`` consecutive requests."""

    fault: Fault
    repeat: int = 1


@dataclass(frozen=True, slots=True)
class Scenario:
    """Which fault each ``/v1/messages`` request gets, in arrival order.

    Requests are numbered from 0. The steps come first; after them, each request draws
    from ``random`` (a fault and its probability), and whatever probability is left is
    ``ok``. With neither, every request is ``ok``.
    """

    steps: tuple[Step, ...] = ()
    random: tuple[tuple[Fault, float], ...] = ()
    seed: int = 0
    description: str = ""
    rate_limits: RateLimits | None = None
    #: Seconds a Message Batch stays ``in_progress`` before it ends (``canny.emulator.batches``).
    batch_seconds: float = 0.0
    #: Whether uploaded files are downloadable (the real API: no; ``canny.emulator.files``).
    files_downloadable: bool = False

    @classmethod
    def of(cls, *faults: str | Fault) -> Scenario:
        """A scenario of one step per fault, e.g. ``Scenario.of("rate_limit", "ok")``."""
        return cls(steps=tuple(Step(f if isinstance(f, Fault) else parse_fault(f)) for f in faults))

    @property
    def scripted(self) -> int:
        """How many requests the steps cover."""
        return sum(step.repeat for step in self.steps)

    def fault_for(self, index: int, draw: Callable[[], float]) -> Fault:
        """The fault for request number ``index`` (0-based).

        ``draw`` returns a float in [0, 1); it is called only for requests past the
        steps, and only when there is a random mix, so a seeded generator stays in step.
        """
        remaining = index
        for step in self.steps:
            if remaining < step.repeat:
                return step.fault
            remaining -= step.repeat
        if not self.random:
            return OK
        x = draw()
        for fault, probability in self.random:
            if x < probability:
                return fault
            x -= probability
        return OK


def load_scenario(source: str | os.PathLike[str]) -> Scenario:
    """Load a scenario from a file path or from TOML/JSON text.

    A :class:`os.PathLike` is always a file. A string is treated as text when it holds a
    newline, an ``=`` or starts with ``{``; otherwise it is a file path. Files ending in
    ``.json`` are JSON, other files TOML; text starting with ``{`` is JSON.
    Raises :class:`ValueError` with a message naming the problem.
    """
    if isinstance(source, str) and not _looks_like_text(source):
        source = Path(source)
    if isinstance(source, os.PathLike):
        path = Path(source)
        text = _read(path)
        is_json = path.suffix.lower() == ".json"
        where = str(path)
    elif isinstance(source, str):
        text = source
        is_json = source.lstrip().startswith("{")
        where = "scenario"
    else:
        raise ValueError(f"scenario source must be a path or text, not {type(source).__name__}")
    data = _decode(text, is_json=is_json, where=where)
    try:
        return _build(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _looks_like_text(source: str) -> bool:
    return "\n" in source or "=" in source or source.lstrip().startswith("{") or not source.strip()


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read scenario file {str(path)!r}: {reason}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ValueError(f"scenario file {str(path)!r} is larger than {_MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"scenario file {str(path)!r} is not UTF-8 text") from None


def _decode(text: str, *, is_json: bool, where: str) -> object:
    try:
        return json.loads(text) if is_json else tomllib.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "JSON" if is_json else "TOML"
        raise ValueError(f"{where}: invalid {kind}: {exc}") from None


def _build(data: object) -> Scenario:
    if not isinstance(data, dict):
        raise ValueError("the top level must be a table/object")
    for key in data:
        if key not in _TOP_KEYS:
            raise ValueError(f"unknown key {key!r} (expected one of: {', '.join(_TOP_KEYS)})")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"'seed' must be an integer, not {seed!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"'description' must be a string, not {description!r}")
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list):
        raise ValueError("'step' must be an array of tables ([[step]] in TOML)")
    steps = tuple(_step(i, raw) for i, raw in enumerate(raw_steps, start=1))
    raw_random = data.get("random", {})
    if not isinstance(raw_random, dict):
        raise ValueError("'random' must be a table of fault = probability")
    mix = tuple(_random_entry(key, value) for key, value in raw_random.items())
    total = math.fsum(p for _, p in mix)
    if total > 1.0 + 1e-9:
        raise ValueError(f"'random' probabilities add up to {total:g}, more than 1")
    limits = _rate_limits(data["rate_limits"]) if "rate_limits" in data else None
    batch_seconds = data.get("batch_seconds", 0.0)
    if isinstance(batch_seconds, bool) or not isinstance(batch_seconds, int | float) or not 0 <= batch_seconds <= 86400:
        raise ValueError(f"'batch_seconds' must be a number of seconds from 0 to 86400, not {batch_seconds!r}")
    downloadable = data.get("files_downloadable", False)
    if not isinstance(downloadable, bool):
        raise ValueError(f"'files_downloadable' must be true or false, not {downloadable!r}")
    return Scenario(
        steps=steps,
        random=mix,
        seed=seed,
        description=description,
        rate_limits=limits,
        batch_seconds=float(batch_seconds),
        files_downloadable=downloadable,
    )


def _rate_limits(raw: object) -> RateLimits:
    if not isinstance(raw, dict):
        raise ValueError("'rate_limits' must be a table of requests, input_tokens, output_tokens, window")
    values: dict[str, int | float] = {}
    for key, value in raw.items():
        if key not in _LIMIT_KEYS:
            raise ValueError(f"rate_limits: unknown key {key!r} (expected one of: {', '.join(_LIMIT_KEYS)})")
        if key == "window":
            ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0
            if not ok:
                raise ValueError(f"rate_limits: 'window' must be a positive number of seconds, not {value!r}")
            values[key] = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"rate_limits: {key!r} must be a non-negative integer, not {value!r}")
            values[key] = value
    default = RateLimits()
    return RateLimits(
        requests=int(values.get("requests", default.requests)),
        input_tokens=int(values.get("input_tokens", default.input_tokens)),
        output_tokens=int(values.get("output_tokens", default.output_tokens)),
        window=float(values.get("window", default.window)),
        enforce=True,
    )


def _step(number: int, raw: object) -> Step:
    if not isinstance(raw, dict):
        raise ValueError(f"step {number} must be a table with a 'fault' key")
    if "fault" not in raw:
        raise ValueError(f"step {number} has no 'fault' key")
    params = {key: value for key, value in raw.items() if key not in {"fault", "repeat"}}
    repeat = raw.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"step {number}: 'repeat' must be a positive integer, not {repeat!r}")
    try:
        return Step(_fault(raw["fault"], params), repeat)
    except ValueError as exc:
        raise ValueError(f"step {number}: {exc}") from None


def _random_entry(key: str, value: object) -> tuple[Fault, float]:
    params: dict[str, object] = {}
    if isinstance(value, dict):
        if "p" not in value:
            raise ValueError(f"random {key!r}: a table needs a probability 'p'")
        params = {k: v for k, v in value.items() if k != "p"}
        value = value["p"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"random {key!r}: probability must be a number from 0 to 1, not {value!r}")
    try:
        return _fault(key, params), float(value)
    except ValueError as exc:
        raise ValueError(f"random {key!r}: {exc}") from None


def _fault(spec: object, params: Mapping[str, object]) -> Fault:
    if not isinstance(spec, str):
        raise ValueError(f"'fault' must be a string like 'rate_limit', not {spec!r}")
    base = parse_fault(spec)
    merged: dict[str, object] = dict(base.params)
    for key, value in params.items():
        if key in merged:
            raise ValueError(f"parameter {key!r} given twice")
        merged[key] = value
    return make_fault(base.name, merged)
