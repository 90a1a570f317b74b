"""`canny models` and `canny doctor`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from canny.cli import main
from tests.conftest import CANARY_KEY


def test_models_lists_current_models_with_prices() -> None:
    """The table shows current models with their input/output rates and aliases."""
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    line = next(row for row in result.stdout.splitlines() if row.startswith("claude-sonnet-5-5 "))
    assert "$2" in line and "$10" in line and "sonnet" in line
    assert "claude-3-opus" not in result.stdout


def test_models_json_includes_retired_with_all() -> None:
    """--json --all lists retired models too, unpriced ones with null rates."""
    data = json.loads(CliRunner().invoke(main, ["models", "--json", "--all"]).stdout)
    by_id = {row["id"]: row for row in data}
    assert by_id["claude-sonnet-4-5"]["retires_at"] == "2026-11-30"
    assert by_id["claude-mythos-5-2"]["input"] is None
    assert any(row["status"] == "retired" for row in data)


def test_doctor_offline_is_all_ok(clean_env: Path) -> None:
    """Offline, doctor checks config, model, ledger and the emulator's API: all ok, exit 0."""
    result = CliRunner().invoke(main, ["doctor", "--offline"])
    assert result.exit_code == 0, result.output
    assert "FIX" not in result.stdout
    assert "API: reachable" in result.stdout


def test_doctor_reports_missing_key(clean_env: Path) -> None:
    """Without a key, doctor says how to set one and exits 2."""
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert "FIX  key: none found" in result.stdout


def test_doctor_with_a_rejected_key(clean_env: Path) -> None:
    """A key the server rejects is reported (masked), with the 401, exit 2."""
    from canny.emulator import serve_in_thread

    with serve_in_thread(api_key="sk-ant-api03-CANARY-the-only-key-this-server-accepts") as emu:
        result = CliRunner().invoke(
            main, ["doctor"], env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": emu.base_url}
        )
    assert result.exit_code == 2
    assert "sk-ant-…ONLY from environment" in result.stdout
    assert "FIX  API: authentication failed (401" in result.stdout
    assert CANARY_KEY not in result.output


def test_doctor_reports_bad_config(clean_env: Path) -> None:
    """A broken config file is named, exit 2."""
    (clean_env / "config.toml").write_text("model = [", encoding="utf-8")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert "not valid TOML" in result.stdout
