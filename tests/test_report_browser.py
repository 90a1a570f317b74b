"""The HTML report in a real headless browser (Debian's Chromium, driven by Playwright) at
desktop (1280×800), tablet (700×900) and phone (390×844) widths, over a one-day ledger and
a year-long one: no horizontal overflow, every chart drawn in the frame the width shows
(its SVG holds the expected bars and 4-6 ticks), no text outside its box, cards that wrap
into full rows, and the cost column on screen.

Chromium comes from ``scripts/ensure-chromium.sh`` (``make test`` runs it); without it these
tests fail, they are never skipped. Screenshots are kept under ``.artefacts/report-html/``
(gitignored), and the path is printed.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny.cli import main
from canny.ledger import AttemptRecord, open_ledger
from canny.usage import Usage

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTEFACTS = Path(__file__).resolve().parent.parent / ".artefacts" / "report-html"
VIEWPORTS = {"desktop": (1280, 800), "tablet": (700, 900), "phone": (390, 844)}
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "sonet")


def _attempt(n: int, when: datetime, model: str, outcome: str, cost: Decimal | None, k: int) -> AttemptRecord:
    return AttemptRecord(
        call_id=f"call-{n}",
        attempt=1,
        started_at=when,
        ended_at=when + timedelta(seconds=2),
        model=model,
        outcome=outcome,  # type: ignore[arg-type]
        cost_usd=cost,
        usage=Usage(input=1000 + n, output=200, cache_read=500 * k),
        project=("web", "nightly-batch-summaries", None)[k],
        tags=(("alpha",), ("beta", "alpha"), ())[k],
    )


def _year_ledger() -> list[AttemptRecord]:
    """Three attempts a day through 2026 (one model a typo, every 7th not ok); day d's
    priced attempts cost (d % 50 + 1) × $0.01 each (day 9: $0.30 in all)."""
    out = []
    for day in range(365):
        for k in range(3):
            n = day * 3 + k
            model = MODELS[n % 4]
            outcome = "ok" if n % 7 else ("error", "max_tokens", "lost")[k]
            cost = Decimal(0) if model == "sonet" else Decimal(day % 50 + 1) / 100
            out.append(
                _attempt(n, datetime(2026, 1, 1, 9 + k, tzinfo=UTC) + timedelta(days=day), model, outcome, cost, k)
            )
    return out


def _day_ledger() -> list[AttemptRecord]:
    """One day: two priced attempts ($946.6733 in all), a typo model's $0 404 and an unpriced one."""
    when = datetime(2026, 3, 10, 9, tzinfo=UTC)
    return [
        _attempt(1, when, MODELS[0], "ok", Decimal("900.5"), 0),
        _attempt(2, when + timedelta(hours=1), MODELS[1], "ok", Decimal("46.1733"), 1),
        _attempt(3, when + timedelta(hours=2), "sonet", "error", Decimal(0), 2),
        _attempt(4, when + timedelta(hours=3), "claude-unknown-9", "ok", None, 0),
    ]


#: name: (records, --by, expected heading, expected time-chart bars, expected cost card)
LEDGERS: dict[str, tuple[Any, str, str, int, str]] = {
    "day": (_day_ledger, "model", "canny report · 2026-03-10", 1, "$946.67"),
    "year": (_year_ledger, "day", "canny report · 2026-01-01 – 2026-12-31", 365, ""),
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (fresh profile: Playwright's temporary one)."""
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/ensure-chromium.sh` (make test does)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def _write_page(home: Path, name: str) -> Path:
    make, by, *_ = LEDGERS[name]
    opened = open_ledger(home / f"{name}.db")
    try:
        for record in make():
            opened.record(record)
    finally:
        opened.close()
    page = home / f"{name}.html"
    args = ["report", "--by", by, "--tz", "UTC", "--ledger", str(home / f"{name}.db"), "--html", str(page)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return page


#: Measures the page in the browser; returns plain JSON.
_MEASURE = """() => {
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).display !== 'none';
  const charts = [...document.querySelectorAll('figure')].map(fig => {
    const shown = [...fig.querySelectorAll('svg')].filter(visible);
    const svg = shown[0];
    const box = svg.viewBox.baseVal;
    const texts = [...svg.querySelectorAll('text')].map(t => {
      const b = t.getBBox();
      return {text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height, cls: t.getAttribute('class')};
    });
    return {
      title: fig.parentElement.querySelector('h2').textContent, shown: shown.length,
      frame: svg.getAttribute('class'), width: box.width, height: box.height,
      rendered: svg.getBoundingClientRect().width,
      bars: svg.querySelectorAll('rect').length,
      priced: svg.querySelectorAll('rect.bar:not(.unpriced)').length,
      grid: svg.querySelectorAll('line.grid').length, texts,
    };
  });
  const cards = [...document.querySelectorAll('.card')].map(c => {
    const r = c.getBoundingClientRect();
    return {top: r.top, left: r.left, width: r.width, cut: c.scrollWidth > c.clientWidth + 1, text: c.textContent};
  });
  const blocks = [...document.querySelectorAll('h1,h2,p,.card b')].filter(
    el => el.scrollWidth > el.clientWidth + 1).map(el => el.textContent);
  const costHead = [...document.querySelectorAll('th')].find(th => th.textContent === 'cost').getBoundingClientRect();
  return {
    scrollWidth: document.scrollingElement.scrollWidth, innerWidth: innerWidth,
    h1: document.querySelector('h1').textContent, charts, cards, cutBlocks: blocks,
    costRight: costHead.right, costLeft: costHead.left,
  };
}"""


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("ledger", list(LEDGERS))
def test_report_page_fits_and_draws_every_chart(browser: Any, clean_env: Path, ledger: str, viewport: str) -> None:
    """No page overflow; each chart drawn once in its frame, with its bars and 4-6 ticks; no text cut; cost shown."""
    width, height = VIEWPORTS[viewport]
    page_file = _write_page(clean_env, ledger)
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(page_file.as_uri())
        m = page.evaluate(_MEASURE)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTEFACTS / f"{ledger}-{viewport}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
    finally:
        page.close()
    _, _, heading, columns, cost_card = LEDGERS[ledger]
    assert m["scrollWidth"] <= m["innerWidth"] == width
    assert m["h1"] == heading
    assert m["cutBlocks"] == []
    # Cards: full rows (no orphan), nothing cut; one row on a desktop, three of two on a phone.
    rows: dict[float, int] = {}
    for card in m["cards"]:
        rows[round(card["top"])] = rows.get(round(card["top"]), 0) + 1
        assert not card["cut"], card
    assert list(rows.values()) == {"desktop": [6], "tablet": [3, 3], "phone": [2, 2, 2]}[viewport]
    if cost_card:
        assert m["cards"][0]["text"] == f"cost{cost_card}"
    # Charts: the right frame, drawn.
    titles = [c["title"] for c in m["charts"]]
    assert titles == [
        "Cost per day", "Cost by model", "Cost by project", "Cost by tag", "Attempts not ok, by outcome",
        "Tokens per bucket",
    ]  # fmt: skip
    frame = {"desktop": "wide", "tablet": "medium", "phone": "narrow"}[viewport]
    for chart in m["charts"]:
        assert (chart["shown"], chart["frame"]) == (1, frame), chart["title"]
        assert chart["rendered"] <= width
        for t in chart["texts"]:  # inside the view box: nothing cut at an edge
            assert t["x"] >= 0 and t["x"] + t["w"] <= chart["width"] + 0.5, (chart["title"], t)
            assert t["y"] >= 0 and t["y"] + t["h"] <= chart["height"] + 0.5, (chart["title"], t)
    over_time = m["charts"][0]
    assert over_time["priced"] == columns
    ticks = [t for t in over_time["texts"] if t["cls"] == "yl"]
    assert 4 <= len(ticks) <= 6
    assert over_time["grid"] == len(ticks) - 1
    xl = sorted((t for t in over_time["texts"] if t["cls"] == "xl"), key=lambda t: t["x"])
    assert xl, "no x labels"
    for a, b in itertools.pairwise(xl):
        assert a["x"] + a["w"] < b["x"], (a, b)  # labels never touch
    by_model = m["charts"][1]
    assert by_model["bars"] == 4  # two priced models, a typo and an unknown one (or three and a typo)
    # The cost column is the second one and fully on screen at every width.
    assert m["costRight"] <= width
