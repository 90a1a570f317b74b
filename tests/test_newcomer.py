"""A newcomer's first day (issue 14): each rough edge they hit, as a test."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from canny.cli import main

CANARY_KEY = "sk-ant-api03-CANARY-newcomer-0000000000000000"


def _canny(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin, prog_name="canny")


def _process(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "canny", *args], stdout=stdout, stderr=subprocess.PIPE, check=False)


# --------------------------------------------------------------------------- first minutes


@pytest.mark.parametrize("group", [[], ["budget"], ["key"], ["emulator"], ["ledger"], ["config"]])
def test_a_group_alone_prints_its_normal_help(group: list[str]) -> None:
    """`canny` or `canny budget` with no subcommand prints the usual multi-line help and exits 0."""
    result = _canny(*group)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: canny {' '.join(group)}".rstrip() + " [OPTIONS] COMMAND")
    assert "\nCommands:\n" in result.stdout and result.stdout.count("\n") > 8
    assert result.stderr == ""


def test_missing_key_message_names_only_real_ways(emulator: Any) -> None:
    """With no key anywhere, the message names `canny key set` and ANTHROPIC_API_KEY, never a --api-key option."""
    result = _canny("ask", "--base-url", emulator.url_for("ok"), "hi")
    assert result.exit_code == 2
    assert "canny key set" in result.stderr and "ANTHROPIC_API_KEY" in result.stderr
    assert "--api-key" not in result.stderr


def test_key_file_is_used_where_no_keyring_works(clean_env: Path) -> None:
    """With no keyring, `key set` writes a 0600 key file that calls use; status and doctor name it."""
    stored = _canny("key", "set", "--stdin", stdin=CANARY_KEY + "\n")
    assert stored.exit_code == 0, stored.stderr
    path = clean_env / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8").strip() == CANARY_KEY
    status = _canny("key", "status")
    assert status.exit_code == 0 and f"the key file {path}" in status.stdout
    doctor = _canny("doctor", "--offline")
    assert f"key store: no OS keyring works here; `canny key set` writes the 0600 key file {path}" in doctor.stdout
    from canny.secrets import resolve_api_key

    found = resolve_api_key()
    assert found is not None and found.source == "file" and found.secret.reveal() == CANARY_KEY
    for result in (stored, status, doctor):
        assert CANARY_KEY not in result.stdout + result.stderr
    gone = _canny("key", "delete")
    assert gone.exit_code == 0 and not path.exists()


def test_key_file_readable_by_others_is_refused(clean_env: Path) -> None:
    """A key file other users can read is an error naming the fix (chmod 600), never silently used."""
    path = clean_env / "key"
    path.write_text(CANARY_KEY + "\n", encoding="utf-8")
    os.chmod(path, 0o644)
    result = _canny("key", "status")
    assert result.exit_code == 2
    assert "can be read by other users" in result.stderr and f"chmod 600 {path}" in result.stderr
    assert CANARY_KEY not in result.stdout + result.stderr


def test_key_set_file_option_skips_a_working_keyring(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`key set --file` writes the key file even when a keyring would work."""
    import keyring

    stored_in_keyring: list[str] = []
    monkeypatch.setattr(keyring, "set_password", lambda *args: stored_in_keyring.append(args[2]))
    result = _canny("key", "set", "--file", "--stdin", stdin=CANARY_KEY + "\n")
    assert result.exit_code == 0
    assert (clean_env / "key").exists() and not stored_in_keyring


# --------------------------------------------------------------------------- stdout and stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["key", "status"], "no API key"),
        (["report"], "no attempts recorded"),
        (["budget", "show"], "no budgets"),
    ],
)
def test_messages_go_to_stderr_not_stdout(args: list[str], fragment: str) -> None:
    """A message that is not data (no key, an empty ledger, no budgets) goes to stderr; stdout stays empty."""
    result = _canny(*args)
    assert fragment in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["prices"], ["models"], ["--help"], ["config", "show"]])
def test_a_closed_stdout_is_exit_141_and_silent(args: list[str]) -> None:
    """`canny ... | head` with the reader gone: exit 141 and no BrokenPipe noise on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _process(*args, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == b""


# --------------------------------------------------------------------------- first real calls


def test_retry_waits_are_shown_on_stderr(emulator: Any, run_id: str) -> None:
    """Each wait before a retry is one stderr line: reason, delay, attempt n of max; -v adds the request id."""
    base = emulator.url_for("rate_limit;retry_after=0.05", "overloaded", "ok", run=run_id)
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base}
    result = _canny("ask", "-v", "hi", env=env)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    waits = [line for line in lines if ", retrying in " in line]
    assert waits[0] == "canny: rate limited, retrying in 50 ms, attempt 2 of 5"
    assert waits[1].startswith("canny: the API is overloaded, retrying in ") and waits[1].endswith("attempt 3 of 5")
    ids = [r.request_id for r in emulator.requests(run=run_id)]
    assert any(f"request id {ids[0]}" in line for line in lines)
    assert any("response headers: " in line and ids[2] in line for line in lines)
    assert CANARY_KEY not in result.stdout + result.stderr


def test_retry_lines_are_not_printed_by_the_library(emulator: Any, run_id: str, capfd: Any) -> None:
    """A library caller sees nothing on stderr for retries unless it adds a logging handler."""
    import canny

    base = emulator.url_for("rate_limit;retry_after=0.01", "ok", run=run_id)
    with canny.Client(api_key=CANARY_KEY, base_url=base, ledger=False) as client:
        assert client.create("hi").outcome == "ok"
    assert "retrying" not in capfd.readouterr().err


def test_a_typo_in_the_model_is_refused_before_sending(emulator: Any, run_id: str) -> None:
    """`-m sonet` is exit 2 with "did you mean sonnet?" and nothing is sent or recorded."""
    base = emulator.url_for("ok", run=run_id)
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base}
    result = _canny("ask", "-m", "sonet", "hi", env=env)
    assert result.exit_code == 2
    assert "unknown model 'sonet' (did you mean sonnet?)" in result.stderr and "--any-model" in result.stderr
    assert emulator.requests(run=run_id) == []
    on_purpose = _canny("ask", "-m", "claude-sonnet-9-9", "--any-model", "hi", env=env)
    assert [r.body["model"] for r in emulator.requests(run=run_id)] == ["claude-sonnet-9-9"]
    assert on_purpose.exit_code == 8  # the server does not know it either: its own answer


def test_model_from_the_environment_is_checked_too() -> None:
    """A typo in CANNY_MODEL is named with where it came from."""
    result = _canny("ask", "--offline", "hi", env={"CANNY_MODEL": "opuss"})
    assert result.exit_code == 2
    assert "unknown model 'opuss' (from CANNY_MODEL) (did you mean opus?)" in result.stderr


@pytest.mark.parametrize(
    ("usage", "fragment"),
    [
        ('{"inptu_tokens": 1000}', "unknown field 'inptu_tokens' (did you mean 'input_tokens'?)"),
        ('{"input_tokens": 5, "cache_creation": {"ephemeral_5h_input_tokens": 3}}', "cache_creation.ephemeral_5h"),
        ('{"foo": 1}', "known fields: cache_creation"),
    ],
)
def test_cost_refuses_unknown_usage_fields(usage: str, fragment: str) -> None:
    """`canny cost --usage` with a misspelt field is exit 2 naming it, not a silent 0."""
    result = _canny("cost", "-m", "sonnet", "--usage", usage)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert result.stdout == ""


def test_cost_still_takes_api_and_canny_names() -> None:
    """API field names and canny's bucket names are both still priced ($2/MTok input on sonnet 5.5)."""
    assert _canny("cost", "-m", "sonnet", "--usage", '{"input_tokens": 1000}').stdout.strip() == "0.002"
    assert _canny("cost", "-m", "sonnet", "--usage", '{"input": 1000}').stdout.strip() == "0.002"


def test_config_errors_name_the_file_and_a_suggestion(clean_env: Path) -> None:
    """A misspelt setting names the config file and the setting it probably meant."""
    (clean_env / "config.toml").write_text("max_tokns = 100\n", encoding="utf-8")
    result = _canny("ask", "--offline", "hi")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"canny: {clean_env / 'config.toml'}: unknown setting config.max_tokns")
    assert "(did you mean max_tokens?)" in line and "docs/configuration.md" in line
    (clean_env / "config.toml").write_text("[retry]\nmax_atempts = 3\n", encoding="utf-8")
    assert "(did you mean max_attempts?)" in _canny("ask", "--offline", "hi").stderr


def test_money_as_a_float_is_refused(clean_env: Path) -> None:
    """`max_cost = 0.5` (a TOML float) and a Python float are refused with the quoted form to use."""
    from canny.config import parse_money
    from canny.errors import ConfigError

    (clean_env / "config.toml").write_text("max_cost = 0.5\n", encoding="utf-8")
    result = _canny("ask", "--offline", "hi")
    assert result.exit_code == 2 and "not the float 0.5" in result.stderr and 'max_cost = "0.25"' in result.stderr
    with pytest.raises(ConfigError, match="not the float"):
        parse_money(0.1, "max_cost")
    assert str(parse_money("0.1", "max_cost")) == "0.1"


def test_max_cost_is_shown_in_plain_dollars() -> None:
    """A tiny --max-cost is written $0.0000001, never $1E-7."""
    result = _canny("ask", "--offline", "--max-cost", "0.0000001", "hi")
    assert result.exit_code == 4
    assert "over its max_cost of $0.0000001" in result.stderr
    assert "E-" not in result.stderr


def test_an_interrupted_stream_names_its_request_id_once(emulator: Any, run_id: str) -> None:
    """A stream dropped after output was shown: the request id appears once in the error line."""
    base = emulator.url_for("drop;after=2", run=run_id)
    result = _canny("ask", "hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 6
    [request_id] = [r.request_id for r in emulator.requests(run=run_id)]
    error = next(line for line in result.stderr.splitlines() if "stream broke" in line)
    assert error.count(request_id) == 1


def test_a_dropped_connection_is_not_called_could_not_connect(emulator: Any, run_id: str, tmp_path: Path) -> None:
    """--json with every attempt dropped says the connection closed early, not that it could not connect."""
    (tmp_path / "canny-home" / "config.toml").write_text("[retry]\ninitial_delay = 0.001\nmax_attempts = 2\n")
    base = emulator.url_for("drop;after=0", "drop;after=0", run=run_id)
    result = _canny("ask", "--json", "hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 7
    assert "closed before the response was complete" in result.stderr
    assert "could not connect" not in result.stderr


# --------------------------------------------------------------------------- prices, models, config


def test_prices_and_models_agree_on_every_status() -> None:
    """`canny prices --json` and `canny models --all --json` give each model the same status."""
    from datetime import date

    models = {m["id"]: m["status"] for m in json.loads(_canny("models", "--all", "--json").stdout)}
    prices = {m["id"]: m["status"] for m in json.loads(_canny("prices", "--json").stdout)["models"]}
    assert models == prices
    from canny.pricing import model_info

    sonnet45 = model_info("claude-sonnet-4-5")
    assert sonnet45 is not None and sonnet45.retires_at is not None
    assert sonnet45.status_at(sonnet45.retires_at) == "retired"
    assert sonnet45.status_at(date(2026, 10, 1)) == "deprecated"
    assert "legacy" in models.values() and "retired" in models.values()


def test_prices_at_takes_what_report_takes() -> None:
    """`canny prices --at yesterday` and `--at 7d` work like `report --since`."""
    for when in ("yesterday", "today", "7d"):
        result = _canny("prices", "-m", "sonnet", "--at", when)
        assert result.exit_code == 0, result.stderr
        assert "status: active" in result.stdout


def test_config_path_and_show(clean_env: Path) -> None:
    """`config path` prints the file; `config show` prints what is in force, ledger password masked."""
    (clean_env / "config.toml").write_text('model = "opus"\nmax_cost = "0.5"\n[retry]\nmax_attempts = 3\n')
    assert _canny("config", "path").stdout.strip() == str(clean_env / "config.toml")
    listing = _canny("config", "path", "--all").stdout
    assert f"key file  {clean_env / 'key'}  (not present)" in listing
    env = {"CANNY_LEDGER": "postgresql://alice:s3cret-pw@db.example/canny"}
    shown = _canny("config", "show", env=env)
    assert shown.exit_code == 0
    assert 'model = "opus"' in shown.stdout and 'max_cost = "0.5"' in shown.stdout
    assert "retry.max_attempts = 3" in shown.stdout
    assert "s3cret-pw" not in shown.stdout and "alice:****@db.example" in shown.stdout
    data = json.loads(_canny("config", "show", "--json").stdout)
    assert data["model"] == "opus" and data["max_cost"] == "0.5" and data["retry"]["max_attempts"] == 3


def test_budget_reset_without_a_terminal_says_how_to_confirm(clean_env: Path) -> None:
    """`budget reset` with no answer on stdin changes nothing and names -y; "n" is a plain no (exit 1)."""
    _canny("budget", "set", "--day", "5")
    silent = _canny("budget", "reset", stdin="")
    assert silent.exit_code == 2 and "pass -y to confirm" in silent.stderr
    declined = _canny("budget", "reset", stdin="n\n")
    assert declined.exit_code == 1 and "nothing was changed" in declined.stderr
    assert len(json.loads(_canny("budget", "show", "--json").stdout)["budgets"]) == 1


def test_json_cost_is_plain_digits_never_scientific() -> None:
    """`CallResult.to_json` writes a tiny cost as 0.0000006, never 6E-7."""
    from decimal import Decimal

    from canny.result import CallResult
    from canny.usage import Usage

    result = CallResult(
        outcome="ok",
        model="claude-sonnet-5-5",
        text="",
        message={},
        usage=Usage(),
        cost=Decimal("6E-7"),
        attempts=1,
        call_id="c1",
    )
    assert result.to_json()["cost_usd"] == "0.0000006"


def test_emulator_answers_are_tagged_offline_whatever_the_route(emulator: Any, run_id: str, clean_env: Path) -> None:
    """Calls answered by the emulator through --base-url, Client or meter are tagged `offline` once."""
    import anthropic

    import canny
    from canny.ledger import open_ledger

    base = emulator.url_for("ok", "ok", "ok", run=run_id)
    assert (
        _canny("ask", "--tag", "t", "hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base}).exit_code
        == 0
    )
    with canny.Client(api_key=CANARY_KEY, base_url=base) as client:
        client.create("hi")
    with canny.Client(offline=True) as client:
        client.create("hi")
    raw = anthropic.Anthropic(api_key=CANARY_KEY, base_url=base, max_retries=0)
    with canny.meter(raw) as metered:
        metered.messages.create(model="claude-sonnet-5-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    ledger = open_ledger(clean_env / "ledger.db")
    tags = sorted(tuple(r.tags) for r in ledger.records())
    ledger.close()
    assert tags == [("offline",), ("offline",), ("offline",), ("t", "offline")]


def test_reprice_of_rows_priced_today_shows_no_difference() -> None:
    """A refused, a refused-partial, an ok and a budget-refused row priced today reprice to +$0 (no phantom)."""
    for prompt in ("hi [[fault=refusal]]", "hi [[fault=refusal_partial]]", "hello"):
        assert _canny("ask", "--offline", prompt).exit_code in (0, 5)
    assert _canny("ask", "--offline", "--max-cost", "0.0000001", "x").exit_code == 4
    rows = json.loads(_canny("report", "--by", "outcome", "--reprice", "--json").stdout)
    refused = next(r for r in rows if r["group"] == "refused")
    assert refused["cost_usd"] != "0" and refused["repriced_usd"] == refused["cost_usd"]
    assert [r["reprice_difference_usd"] for r in rows] == ["0"] * len(rows)


def test_estimate_checks_the_model_like_ask() -> None:
    """`canny estimate -m sonet` is exit 2 with the suggestion, as `canny ask` is."""
    result = _canny("estimate", "--offline", "-m", "sonet", "hi")
    assert result.exit_code == 2 and "did you mean sonnet?" in result.stderr
    assert _canny("estimate", "--offline", "-m", "sonnet", "hi").exit_code == 0
