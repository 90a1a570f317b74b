"""The targets table that ``make bench`` ends with: each figure against its target, PASS or FAIL.

Every benchmark script calls :func:`record` for each figure that has a target; the figures
go to one JSON-lines file (``$CANNY_BENCH_RESULTS``, default ``.bench/results.jsonl``), and
``python benchmarks/targets.py`` prints the table from it (``--reset`` empties it first;
``make bench`` does both, around the scripts). Nothing here is a test: a FAIL is a figure to
work on, not a red build.

    from targets import record
    record("stream_1tok_client_vs_create", "1-token stream, Client+SQLite / raw create(stream=True)",
           value=1.04, target=1.05, better="lower", spread=(1.01, 1.08), unit="×")
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Literal

__all__ = ["record", "results_path"]


def results_path() -> Path:
    """Where figures are collected (``$CANNY_BENCH_RESULTS`` or ``.bench/results.jsonl``)."""
    return Path(os.environ.get("CANNY_BENCH_RESULTS", ".bench/results.jsonl"))


def record(
    key: str,
    what: str,
    *,
    value: float,
    target: float,
    better: Literal["lower", "higher"],
    spread: tuple[float, float] | None = None,
    unit: str = "",
) -> bool:
    """Append one figure with its target; True when it meets the target. A later figure with
    the same ``key`` replaces an earlier one in the table."""
    passed = value <= target if better == "lower" else value >= target
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "key": key,
        "what": what,
        "value": value,
        "target": target,
        "better": better,
        "spread": list(spread) if spread else None,
        "unit": unit,
        "pass": passed,
    }
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
    return passed


def _fmt(number: float, unit: str) -> str:
    text = f"{number:,.3g}" if abs(number) < 100 else f"{number:,.0f}"
    return f"{text}{unit}" if unit in ("×", "%") else f"{text} {unit}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description="Print the benchmark targets table.")
    parser.add_argument("--reset", action="store_true", help="empty the results file and exit")
    args = parser.parse_args()
    path = results_path()
    if args.reset:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")
        return 0
    rows: dict[str, dict[str, object]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                rows[entry["key"]] = entry
    if not rows:
        print("no figures recorded")
        return 0
    width = max(len(str(r["what"])) for r in rows.values())
    print(f"{'what':<{width}}  {'target':>12}  {'measured':>12}  {'spread':>19}  result")
    for r in rows.values():
        unit = str(r["unit"])
        sign = "≤" if r["better"] == "lower" else "≥"
        target = f"{sign} {_fmt(float(r['target']), unit)}"  # type: ignore[arg-type]
        spread = r["spread"]
        spread_text = (
            f"{_fmt(float(spread[0]), unit)}–{_fmt(float(spread[1]), unit)}"  # type: ignore[index]
            if spread
            else ""
        )
        verdict = "PASS" if r["pass"] else "FAIL"
        print(
            f"{r['what']!s:<{width}}  {target:>12}  {_fmt(float(r['value']), unit):>12}  "  # type: ignore[arg-type]
            f"{spread_text:>19}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
