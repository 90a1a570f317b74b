"""``build_report(..., calls=False)``, what ``canny report --html`` builds its charts from:
every figure but the distinct calls is the full report's, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from canny import reports
from canny.ledger import GroupBy
from tests.test_rollups import _records, ledger, target  # noqa: F401  (the fixtures, both backends)


@pytest.mark.parametrize("by", ["day", "model", "project", "tag", "outcome"])
def test_a_report_without_calls_has_every_other_figure_of_the_full_one(ledger: Any, by: GroupBy) -> None:  # noqa: F811
    """Attempts, tokens, cost, unpriced and failures per group and in total are the full
    report's; calls read 0 (not counted), where the full report counts fewer than attempts."""
    ledger.record_many(_records(3, 40))
    full = reports.build_report(ledger, by)
    light = reports.build_report(ledger, by, calls=False)
    assert full.total.calls < full.total.attempts  # the ledger has retried calls
    assert light.total.calls == 0 and all(row.calls == 0 for row in light.rows)
    assert light.rows == tuple(replace(row, calls=0) for row in full.rows)
    assert light.total == replace(full.total, calls=0)
