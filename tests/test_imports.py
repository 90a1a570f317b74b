"""`import canny` and `canny --help` stay cheap: no SDK, web stack or driver at import."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "anthropic", "httpx2", "pydantic", "rich", "psycopg", "starlette", "uvicorn", "keyring", "opentelemetry",
    "canny.emulator",
)  # fmt: skip


def _modules_after(code: str) -> list[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    modules: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return modules


def test_import_canny_is_light() -> None:
    """Importing canny (and reading its version) imports none of the heavy dependencies."""
    loaded = _modules_after("import canny; canny.__version__; canny.errors")
    assert [m for m in loaded if m.split(".")[0] in HEAVY or m == "canny.emulator"] == []


def test_cli_help_is_light() -> None:
    """Building `canny --help` imports no command module and no heavy dependency."""
    loaded = _modules_after(
        "from click.testing import CliRunner\n"
        "from canny.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0 and 'ask' in r.output, r.output"
    )
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    commands = [m for m in loaded if m.startswith("canny.cli._")]
    assert heavy == []
    assert commands == []


def test_public_names_resolve() -> None:
    """Every name in canny.__all__ resolves (lazily) to a real object."""
    import canny

    for name in canny.__all__:
        assert getattr(canny, name) is not None
    assert sorted(canny.__all__) == canny.__all__
