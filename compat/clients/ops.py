"""The operations every compatibility client runs, in table order (stdlib only, no side
effects, so the runner and the test suite can read it too).

Each entry is the operation's column name and the function a client script defines for it.
"""

from __future__ import annotations

OPERATIONS: tuple[tuple[str, str], ...] = (
    ("create", "create"),
    ("stream", "stream"),
    ("tools", "tools"),
    ("tool_runner", "tool_runner"),
    ("structured", "structured"),
    ("count_tokens", "count_tokens"),
    ("models", "models"),
    ("404", "not_found"),
    ("529_retried", "retried_529"),
    ("midstream_error", "midstream_error"),
)
OPS: tuple[str, ...] = tuple(op for op, _ in OPERATIONS)
