"""Settings precedence, profiles, CANNY_HOME and base-URL safety."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from canny.config import DEFAULT_MODEL, config_path, load_settings
from canny.errors import ConfigError

KEYS = [
    "model",
    "max_tokens",
    "base_url",
    "ledger",
    "log_content",
    "project",
    "tags",
    "max_cost",
    "time_zone",
    "timeouts",
    "retry",
    "budget",
    "profiles",
    "default_profile",
    "connect",
    "idle",
    "max_attempts",
    "day",
    "p",
]


def _write_config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text, encoding="utf-8")


def test_defaults_live_under_canny_home(clean_env: Path) -> None:
    """With nothing configured, the built-in model applies and files live under CANNY_HOME."""
    settings = load_settings()
    assert settings.model == DEFAULT_MODEL
    assert settings.model_source == "default"
    assert settings.ledger == str(clean_env / "ledger.db")
    assert config_path() == clean_env / "config.toml"


def test_model_precedence(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """argument > CANNY_MODEL > CLAUDE_MODEL > profile > top level > default."""
    _write_config(clean_env, 'model = "top"\ndefault_profile = "p"\n[profiles.p]\nmodel = "from-profile"\n')
    assert load_settings().model == "from-profile"
    monkeypatch.setenv("CLAUDE_MODEL", "from-claude-model")
    assert load_settings().model == "from-claude-model"
    monkeypatch.setenv("CANNY_MODEL", "from-canny-model")
    assert load_settings().model_source == "CANNY_MODEL"
    assert load_settings(model="explicit").model == "explicit"


def test_profile_selection_and_values(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--profile / CANNY_PROFILE pick a table whose values override the top level."""
    _write_config(
        clean_env,
        """
max_tokens = 500
[profiles.work]
max_tokens = 2000
project = "acme"
tags = ["billing", "eu"]
max_cost = "0.05"
[profiles.work.timeouts]
idle = 5
""",
    )
    assert load_settings().max_tokens == 500
    work = load_settings(profile="work")
    assert (work.max_tokens, work.project, work.tags, work.max_cost) == (
        2000,
        "acme",
        ("billing", "eu"),
        Decimal("0.05"),
    )
    assert work.timeouts.idle == 5.0
    monkeypatch.setenv("CANNY_PROFILE", "work")
    assert load_settings().profile == "work"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model = [", "not valid TOML"),
        ("colour = 'red'", "unknown setting config.colour"),
        ("max_tokens = -1", "positive integer"),
        ("[timeouts]\nidle = 'x'", "positive number"),
        ("max_cost = 'lots'", "dollar amount"),
    ],
)
def test_bad_config_is_a_clean_error(clean_env: Path, text: str, fragment: str) -> None:
    """A bad config file raises ConfigError naming the problem."""
    _write_config(clean_env, text)
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_unknown_profile(clean_env: Path) -> None:
    """Asking for a missing profile is a ConfigError that names it."""
    with pytest.raises(ConfigError, match="no profile named 'nope'"):
        load_settings(profile="nope")


def test_base_url_from_env_and_plain_http_only_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """ANTHROPIC_BASE_URL is used; plain http is refused unless the host is loopback."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999/")
    assert load_settings().base_url == "http://127.0.0.1:9999"
    assert load_settings(base_url="https://proxy.example.com").base_url == "https://proxy.example.com"
    with pytest.raises(ConfigError, match="plain HTTP"):
        load_settings(base_url="http://proxy.example.com")


def test_canny_ledger_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CANNY_LEDGER points the ledger anywhere, including a PostgreSQL URL."""
    monkeypatch.setenv("CANNY_LEDGER", "postgresql://u@127.0.0.1/db")
    assert load_settings().ledger == "postgresql://u@127.0.0.1/db"


# Cheap to generate (a few ms per document even on a loaded machine): small leaves, at
# most two levels of tables, and the edge values that once broke loading drawn directly.
_EDGES = st.sampled_from(
    [float("inf"), float("-inf"), 1e308, 10**30, -1, 0, "1e999", "nan", "-0", "$5", "Mars/Olympus"]
)
_toml_leaf = (
    _EDGES | st.just("x") | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=8) | st.floats(allow_nan=False)
)
_toml_values = st.recursive(
    _toml_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(KEYS), _toml_values, max_size=6))
@example({"default_profile": "p", "profiles": 5})
@example({"default_profile": "p", "profiles": {"p": 5}})
@example({"default_profile": 5})
@example({"time_zone": "Mars/Olympus"})
@example({"default_profile": "p", "profiles": {"p": {"budget": {"day": [1]}}}})
@example({"budget": {"day": 5, "lease": 1e308}})
@example({"timeouts": {"idle": float("inf")}, "retry": {"max_attempts": 2.5}})
def test_fuzzed_config_is_settings_or_config_error(clean_env: Path, data: dict[str, object]) -> None:
    """Fuzz: any TOML document gives Settings (and profile budgets) or a ConfigError, never another exception."""
    import tomli_w

    from canny.budget import profile_budgets

    (clean_env / "config.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    with contextlib.suppress(ConfigError):
        profile_budgets(load_settings())


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_fuzzed_config_text_is_settings_or_config_error(clean_env: Path, text: str) -> None:
    """Fuzz: any text at all in config.toml gives Settings or a ConfigError."""
    (clean_env / "config.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):
        load_settings()
