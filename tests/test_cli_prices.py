"""`canny prices` and `canny cost` through click's CliRunner.

Expected figures are worked out by hand from the official per-MTok rates.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from canny.cli import main

_cost_module = importlib.import_module("canny.pricing.cost")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Own CANNY_HOME, fresh unpriced warnings."""
    monkeypatch.setenv("CANNY_HOME", str(tmp_path / "home"))
    _cost_module._WARNED.clear()
    yield
    _cost_module._WARNED.clear()


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


# --------------------------------------------------------------------------- canny cost


def test_cost_prints_the_exact_figure_alone() -> None:
    """25 input tokens of Sonnet 4.6 at $3/MTok: 0.000075, nothing else on stdout."""
    result = run("cost", "--model", "claude-sonnet-4-6", "--usage", '{"input_tokens": 25}', "--at", "2026-11-20")
    assert result.exit_code == 0
    assert result.stdout == "0.000075\n"
    assert result.stderr == ""


def test_cost_is_not_rounded_to_display_precision() -> None:
    """One Haiku 5.5 cache-read token is 0.00000001: printed in full, no exponent."""
    result = run("cost", "-m", "haiku", "--usage", '{"cache_read_input_tokens": 1}', "--at", "2026-11-20")
    assert (result.exit_code, result.stdout) == (0, "0.00000001\n")


def test_cost_of_zero_usage_is_zero() -> None:
    """An empty usage on a known model costs 0, printed as 0."""
    result = run("cost", "-m", "sonnet", "--usage", "{}", "--at", "2026-11-20")
    assert (result.exit_code, result.stdout) == (0, "0\n")


def test_cost_unpriced_model() -> None:
    """Unknown model: the word unpriced on stdout, the reason on stderr, exit 0."""
    result = run("cost", "-m", "claude-unknown-7", "--usage", '{"input_tokens": 25}')
    assert result.exit_code == 0
    assert result.stdout == "unpriced\n"
    assert "claude-unknown-7" in result.stderr


def test_cost_unconfirmed_model_is_unpriced() -> None:
    """Mythos 5.2 has no confirmed price."""
    result = run("cost", "-m", "claude-mythos-5-2", "--usage", '{"input_tokens": 25}', "--at", "2026-11-20")
    assert (result.exit_code, result.stdout) == (0, "unpriced\n")


def test_cost_modifiers() -> None:
    """Batch, geo and fast flags: hand-computed against Opus 5 and Sonnet 4.6."""
    usage = '{"input_tokens": 1000, "output_tokens": 100}'
    at = ("--at", "2026-11-20")
    # Sonnet 4.6: 1000*3 + 100*15 = 4,500 → 0.0045; batch 0.00225; us 0.00495
    assert run("cost", "-m", "claude-sonnet-4-6", "--usage", usage, *at).stdout == "0.0045\n"
    assert run("cost", "-m", "claude-sonnet-4-6", "--usage", usage, "--batch", *at).stdout == "0.00225\n"
    assert run("cost", "-m", "claude-sonnet-4-6", "--usage", usage, "--geo", "us", *at).stdout == "0.00495\n"
    # Opus 5 fast: 1000*10 + 100*50 = 15,000 → 0.015
    assert run("cost", "-m", "claude-opus-5", "--usage", usage, "--speed", "fast", *at).stdout == "0.015\n"


def test_cost_at_picks_the_dated_row() -> None:
    """Sonnet 5.5, a million cache reads: 0.2 on 2026-10-06, 0.1 on 2026-10-07."""
    usage = '{"cache_read_input_tokens": 1000000}'
    assert run("cost", "-m", "sonnet", "--usage", usage, "--at", "2026-10-06").stdout == "0.2\n"
    assert run("cost", "-m", "sonnet", "--usage", usage, "--at", "2026-10-07T00:00:00Z").stdout == "0.1\n"


def test_cost_reads_stdin_and_whole_messages() -> None:
    """`--usage -` reads stdin; a whole message brings its own model."""
    message = {"model": "claude-haiku-4-5-20251001", "usage": {"input_tokens": 1000, "output_tokens": 200}}
    result = run("cost", "--usage", "-", "--at", "2026-11-20", stdin=json.dumps(message))
    assert (result.exit_code, result.stdout) == (0, "0.002\n")  # 1000*1 + 200*5 = 2,000


def test_cost_reads_a_file(tmp_path: Path) -> None:
    """`--usage @FILE` reads the JSON from a file; canny's bucket names work too."""
    path = tmp_path / "u.json"
    path.write_text('{"input": 1000, "cache_write_1h": 1000}', encoding="utf-8")
    result = run("cost", "-m", "claude-sonnet-4-6", "--usage", f"@{path}", "--at", "2026-11-20")
    assert (result.exit_code, result.stdout) == (0, "0.009\n")  # 1000*3 + 1000*6 = 9,000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("-m", "sonnet", "--usage", "{not json"), "not valid JSON"),
        (("-m", "sonnet", "--usage", "[1, 2]"), "JSON object"),
        (("-m", "sonnet", "--usage", "{}", "--at", "2026-02-30"), "--at"),
        (("-m", "sonnet", "--usage", '{"input_tokens": "12"}'), "non-negative integer"),
        (("-m", "sonnet", "--usage", '{"input_tokens": -3}'), "non-negative integer"),
        (("-m", "claude-sonnet-4-5", "--usage", "{}", "--geo", "us"), "inference_geo"),
        (("-m", "claude-opus-5", "--usage", "{}", "--speed", "fast", "--batch"), "Batch"),
        (("--usage", "{}"), "--model"),
        (("-m", "sonnet", "--usage", "@/nonexistent/usage.json"), "cannot read"),
    ],
)
def test_cost_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], fragment: str) -> None:
    """Bad JSON, dates, counts or modifiers: one clean stderr line, exit 2, empty stdout."""
    result = run("cost", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_cost_bad_choice_is_exit_2() -> None:
    """click rejects an unknown --geo value itself."""
    assert run("cost", "-m", "sonnet", "--usage", "{}", "--geo", "eu").exit_code == 2


# --------------------------------------------------------------------------- canny prices


def test_prices_lists_every_model() -> None:
    """All models, with rates, unpriced rows and retirement dates."""
    result = run("prices", "--at", "2026-11-20")
    assert result.exit_code == 0
    out = result.stdout
    assert "price table 2026-11-24" in out
    assert "claude-opus-5-5" in out
    assert "claude-3-haiku-20240307" in out
    mythos = next(line for line in out.splitlines() if line.startswith("claude-mythos-5-2"))
    assert "unpriced" in mythos
    sonnet = next(line for line in out.splitlines() if line.startswith("claude-sonnet-4-5 "))
    assert "retires 2026-11-30" in sonnet
    assert "prompt > 100,000" in out


def test_prices_one_model_with_history() -> None:
    """One model: aliases, both dated rows with the one in force marked, modifiers."""
    result = run("prices", "--model", "sonnet", "--at", "2026-10-06")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("claude-sonnet-5-5  Claude Sonnet 5.5")
    assert "aliases: sonnet" in out
    rows = [line for line in out.splitlines() if "2026-09-28" in line or "2026-10-07" in line]
    assert any(line.startswith(">") and "2026-09-28" in line for line in rows)
    assert any(line.startswith(" ") and "0.10" in line for line in rows)
    assert "inference_geo=us: x1.1" in out
    assert "fast mode: not offered" in out


def test_prices_fast_rows_and_rejected_geo() -> None:
    """Opus 4.8 shows its fast rows and their removal; Sonnet 4.5 does not accept geo."""
    opus = run("prices", "-m", "claude-opus-4-8", "--at", "2026-12-01").stdout
    assert "fast mode (speed=fast)" in opus
    assert "not available" in opus
    sonnet = run("prices", "-m", "claude-sonnet-4-5-20250929").stdout
    assert "inference_geo=us: not accepted" in sonnet
    assert "prompt > 200,000" in sonnet


def test_prices_json() -> None:
    """--json for all models and for one; rates are exact strings."""
    every = json.loads(run("prices", "--json", "--at", "2026-11-20").stdout)
    assert every["version"] == "2026-11-24"
    haiku = next(m for m in every["models"] if m["id"] == "claude-haiku-5-5")
    assert haiku["in_force"]["rates"]["cache_write_5m"] == "0.125"
    assert haiku["in_force"]["long_prompt_threshold"] == 100_000
    one = json.loads(run("prices", "-m", "claude-sonnet-4-5", "--json").stdout)
    assert one["retires_at"] == "2026-11-30"
    assert one["aliases"] == ["claude-sonnet-4-5-20250929"]
    assert [row["effective_from"] for row in one["prices"]] == ["2025-09-29", "2026-04-30"]
    assert one["modifiers"]["inference_geo_us"] is None


def test_prices_unknown_model_and_bad_date() -> None:
    """Unknown model or bad date: one line, exit 2."""
    unknown = run("prices", "--model", "gpt-9")
    assert unknown.exit_code == 2
    assert "unknown model" in unknown.stderr
    bad = run("prices", "--at", "the day before")
    assert bad.exit_code == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_user_price_file_shows_up_and_breaks_cleanly() -> None:
    """A negotiated row appears in `canny prices`; a broken file is one line, exit 2."""
    home = Path(os.environ["CANNY_HOME"])
    home.mkdir()
    path = home / "prices.toml"
    path.write_text(
        'version = "acme"\n[[models.sonnet.prices]]\neffective_from = 2026-11-01\n'
        'input = "1"\ncache_write_5m = "1.25"\ncache_write_1h = "2"\ncache_read = "0.05"\noutput = "5"\n',
        encoding="utf-8",
    )
    shown = run("prices", "-m", "sonnet", "--at", "2026-11-20").stdout
    assert "negotiated" in shown
    assert "2026-11-24+acme" in shown
    cost = run("cost", "-m", "sonnet", "--usage", '{"input_tokens": 1000}', "--at", "2026-11-20")
    assert cost.stdout == "0.001\n"
    path.write_text("[models.sonnet]\nprice = 3\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))
    broken = run("cost", "-m", "sonnet", "--usage", "{}")
    assert broken.exit_code == 2
    assert broken.stdout == ""
    assert "models.sonnet.price" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- docs


def test_docs_price_table_is_current() -> None:
    """docs/pricing.md's table is the one generated from prices.toml."""
    script = Path(__file__).resolve().parents[1] / "docs" / "gen_pricing_table.py"
    spec = importlib.util.spec_from_file_location("gen_pricing_table", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.check() == [], "run: python docs/gen_pricing_table.py"
