"""The emulator's fault catalogue, fault specs and scenario files (no server needed)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canny.emulator import FAULTS, Scenario, load_scenario, parse_fault
from canny.emulator.faults import KIND_PARAMS, OK, PARAMS, Fault, make_fault, parse_plan
from canny.emulator.scenario import Step

T = TypeVar("T")


def _result_or_message(func: Callable[[str], T], arg: str) -> T | str:
    """``func(arg)``, or the message of the ValueError it raised (any other error propagates)."""
    try:
        return func(arg)
    except ValueError as exc:
        return str(exc)


REQUIRED = {
    "ok",
    "rate_limit",
    "spend_limit",
    "overloaded",
    "server_error",
    "bad_gateway",
    "unavailable",
    "gateway_timeout",
    "request_timeout",
    "conflict",
    "bad_request",
    "bad_key",
    "permission",
    "not_found",
    "too_large",
    "unprocessable",
    "x_should_retry_false",
    "x_should_retry_true",
    "error_event",
    "api_error_event",
    "stall",
    "stall_headers",
    "drop",
    "reset",
    "refusal",
    "refusal_partial",
    "max_tokens",
    "no_message_stop",
    "slow",
}


def test_catalogue_has_every_required_fault() -> None:
    """Every fault the design asks for is in the catalogue."""
    assert set(FAULTS) >= REQUIRED


def test_catalogue_entries_are_documented_data() -> None:
    """Each entry has a one-line summary, what the client sees, a retry verdict, and valid defaults."""
    for name, spec in FAULTS.items():
        assert spec.name == name
        assert spec.summary
        assert "\n" not in spec.summary
        assert spec.client_sees
        assert spec.retry
        assert set(spec.defaults) <= spec.allowed, name
        assert make_fault(name, dict(spec.defaults)).name == name


def test_every_kind_param_is_typed() -> None:
    """Every parameter a kind accepts has a type and a description."""
    for params in KIND_PARAMS.values():
        assert params <= set(PARAMS)


def test_parse_fault_reads_typed_parameters() -> None:
    """`name;key=value` gives a fault whose parameters have their declared types."""
    fault = parse_fault("rate_limit;retry_after=0.25;should_retry=false;status=429")
    assert fault.name == "rate_limit"
    assert fault.get("retry_after") == 0.25
    assert fault.get("should_retry") is False
    assert fault.get("status") == 429
    assert str(fault) == "rate_limit;retry_after=0.25;should_retry=false;status=429"


def test_fault_defaults_fill_missing_parameters() -> None:
    """Parameters not given fall back to the catalogue defaults."""
    fault = parse_fault("drop")
    assert fault.get("after") == 2
    assert not fault.given("after")
    assert parse_fault("drop;after=0").get("after") == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nope", "unknown fault 'nope'"),
        ("rate_limit;bogus=1", "unknown parameter 'bogus'"),
        ("rate_limit;retry_after=soon", "'retry_after' must be a number"),
        ("drop;after=-1", "must not be negative"),
        ("drop;after=1.5", "must be an integer"),
        ("rate_limit;status=200", "between 400 and 599"),
        ("refusal;category=spam", "must be one of"),
        ("rate_limit;retry_after", "is not key=value"),
        ("rate_limit;retry_after=1;retry_after=2", "given twice"),
        ("stall;seconds=nan", "must be finite"),
        ("", "expected a name"),
    ],
)
def test_bad_fault_specs_name_the_problem(text: str, needle: str) -> None:
    """A bad fault spec raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_fault(text)


def test_parse_plan_splits_on_commas_and_rejects_url_unsafe_values() -> None:
    """A plan is comma-separated faults; values that cannot travel in a URL path are refused."""
    assert parse_plan("overloaded,rate_limit;retry_after=0.01,ok") == (
        Fault("overloaded"),
        Fault("rate_limit", (("retry_after", 0.01),)),
        OK,
    )
    with pytest.raises(ValueError, match="cannot go in a URL"):
        parse_plan("bad_request;message=a/b")


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_fuzz_parse_plan_raises_only_value_error(text: str) -> None:
    """Arbitrary plan text parses or raises ValueError, never anything else."""
    result = _result_or_message(parse_plan, text)
    assert result if isinstance(result, str) else all(f.name in FAULTS for f in result)


SCENARIO_TOML = """
description = "two rate limits, then chaos"
seed = 7

[[step]]
fault = "rate_limit"
retry_after = 0.5
repeat = 2

[[step]]
fault = "drop;after=1"

[random]
overloaded = 0.25
"stall;seconds=0.1" = 0.25
server_error = { p = 0.25, should_retry = false }
"""


def test_load_scenario_from_toml_text() -> None:
    """A TOML scenario yields its steps (with repeat and parameters) and its random mix."""
    scenario = load_scenario(SCENARIO_TOML)
    assert scenario.description == "two rate limits, then chaos"
    assert scenario.seed == 7
    assert scenario.steps == (
        Step(Fault("rate_limit", (("retry_after", 0.5),)), 2),
        Step(Fault("drop", (("after", 1),))),
    )
    assert [(str(f), p) for f, p in scenario.random] == [
        ("overloaded", 0.25),
        ("stall;seconds=0.1", 0.25),
        ("server_error;should_retry=false", 0.25),
    ]
    assert scenario.scripted == 3


def test_load_scenario_from_files(tmp_path: Path) -> None:
    """TOML and JSON files load to the same scenario; a str path works like a Path."""
    toml_file = tmp_path / "chaos.toml"
    toml_file.write_text(SCENARIO_TOML)
    data = {
        "description": "two rate limits, then chaos",
        "seed": 7,
        "step": [{"fault": "rate_limit", "retry_after": 0.5, "repeat": 2}, {"fault": "drop;after=1"}],
        "random": {
            "overloaded": 0.25,
            "stall;seconds=0.1": 0.25,
            "server_error": {"p": 0.25, "should_retry": False},
        },
    }
    json_file = tmp_path / "chaos.json"
    json_file.write_text(json.dumps(data))
    assert load_scenario(toml_file) == load_scenario(str(json_file)) == load_scenario(json.dumps(data))


def test_scenario_steps_then_seeded_random_then_ok() -> None:
    """Steps come first in order; after them a seeded draw picks faults, the rest of the mass is ok."""
    scenario = load_scenario(SCENARIO_TOML)
    rng = random.Random(scenario.seed)
    picks = [str(scenario.fault_for(i, rng.random)) for i in range(200)]
    assert picks[:3] == ["rate_limit;retry_after=0.5", "rate_limit;retry_after=0.5", "drop;after=1"]
    rest = picks[3:]
    assert {"overloaded", "ok", "stall;seconds=0.1", "server_error;should_retry=false"} == set(rest)
    again = random.Random(scenario.seed)
    assert [str(scenario.fault_for(i, again.random)) for i in range(200)] == picks
    assert Scenario.of("overloaded").fault_for(5, rng.random) == OK


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("seed = 'x'", "'seed' must be an integer"),
        ("speed = 1", "unknown key 'speed'"),
        ("[[step]]\nrepeat = 2", "step 1 has no 'fault' key"),
        ("[[step]]\nfault = 'warp'", "step 1: unknown fault 'warp'"),
        ("[[step]]\nfault = 'rate_limit'\nafter = 1", "unknown parameter 'after'"),
        ("[[step]]\nfault = 'ok'\nrepeat = 0", "'repeat' must be a positive integer"),
        ("[random]\noverloaded = 1.5", "probability must be a number from 0 to 1"),
        ("[random]\noverloaded = 0.6\ndrop = 0.6", "add up to 1.2"),
        ("[random]\ndrop = { after = 1 }", "needs a probability 'p'"),
        ("step = 3", "'step' must be an array of tables"),
        ("[[step]\n", "invalid TOML"),
        ('{"seed": ', "invalid JSON"),
        ("[[step]]\nfault = 'drop;after=1'\nafter = 2", "given twice"),
    ],
)
def test_bad_scenarios_name_the_problem(text: str, needle: str) -> None:
    """A bad scenario raises ValueError naming the key or fault at fault."""
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_scenario(text)


def test_missing_scenario_file_is_a_value_error(tmp_path: Path) -> None:
    """A path that cannot be read is a ValueError naming the file."""
    with pytest.raises(ValueError, match="cannot read scenario file"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="cannot read scenario file"):
        load_scenario(str(tmp_path))


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_fuzz_scenario_text_raises_only_value_error(text: str) -> None:
    """Arbitrary scenario text loads or raises ValueError with a message, never another exception."""
    result = _result_or_message(load_scenario, "\n" + text)
    assert result if isinstance(result, str) else isinstance(result, Scenario)


_JSON_VALUES = st.recursive(  # kept small: cheap to draw on a loaded machine
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
_KEYS = st.sampled_from(["seed", "step", "random", "description", "fault", "p", "repeat"]) | st.text(max_size=8)
_STEP = st.dictionaries(
    st.sampled_from(["fault", "repeat", "after", "seconds", "retry_after"]) | st.text(max_size=6),
    st.sampled_from(sorted(FAULTS)) | _JSON_VALUES,
    max_size=4,
)
_DOCS = st.fixed_dictionaries(
    {},
    optional={
        "seed": _JSON_VALUES,
        "step": st.lists(_STEP, max_size=4) | _JSON_VALUES,
        "random": st.dictionaries(st.sampled_from(sorted(FAULTS)) | st.text(max_size=8), _JSON_VALUES, max_size=4),
        "description": _JSON_VALUES,
    },
) | st.dictionaries(_KEYS, _JSON_VALUES, max_size=4)


@given(_DOCS)
@settings(max_examples=300, deadline=None)
def test_fuzz_scenario_structures_raise_only_value_error(doc: dict[str, object]) -> None:
    """Arbitrary JSON scenario structures load or raise ValueError, never another exception."""
    result = _result_or_message(load_scenario, json.dumps(doc))
    assert result if isinstance(result, str) else isinstance(result, Scenario)


def test_deeply_nested_json_is_a_value_error() -> None:
    """Pathological nesting is reported, not a RecursionError."""
    with pytest.raises(ValueError, match="scenario"):
        load_scenario("{" + '"a":[' * 100_000)


def test_docs_table_lists_every_fault_with_its_status() -> None:
    """docs/emulator.md has a row for every fault, with the catalogue's status and summary."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "emulator.md").read_text()
    for name, spec in FAULTS.items():
        status = "none" if spec.http_status is None else str(spec.http_status)
        assert f"| `{name}` | {status} | {spec.summary} | {spec.client_sees} | {spec.retry} |" in docs
