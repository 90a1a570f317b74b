"""The import rules of docs/architecture.md, checked against the code's own imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = SRC / "canny"

#: Which of canny's units each unit may import (a unit is a top-level module or package of
#: canny; ``cli`` and ``emulator`` are packages). Read it as the layers of docs/architecture.md.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "units": frozenset(),
    "ids": frozenset(),
    "usage": frozenset({"errors"}),
    "result": frozenset({"errors", "usage"}),
    "config": frozenset({"errors", "units"}),
    "secrets": frozenset({"errors", "config"}),
    "streaming": frozenset({"errors", "usage"}),
    "retry": frozenset({"errors", "config"}),
    "pricing": frozenset({"errors", "usage", "config", "units"}),
    "caching": frozenset({"errors", "usage", "pricing"}),
    "ledger": frozenset({"errors", "usage", "units", "pricing", "config", "result"}),
    "budget": frozenset({"errors", "usage", "units", "pricing", "config", "ledger"}),
    "reports": frozenset({"errors", "usage", "units", "pricing", "ledger"}),
    "reconcile": frozenset({"errors", "usage", "units", "pricing", "config", "secrets", "ledger"}),
    "prefixes": frozenset({"caching"}),
    "advice": frozenset({"errors", "usage", "units", "pricing", "ledger", "caching", "prefixes", "reports"}),
    "telemetry": frozenset({"errors", "usage", "units", "ledger"}),
}
#: Everything below the client layer, which the client layer may use freely.
_CORE = frozenset(ALLOWED)
ALLOWED |= {
    "_sdk_errors": _CORE,
    "_call": _CORE | {"_sdk_errors"},
    "books": _CORE | {"_sdk_errors", "_call"},
    "_client_base": _CORE | {"_sdk_errors", "_call", "books", "emulator"},
    "fallback": _CORE | {"_call"},
    "estimate": _CORE | {"_call", "_sdk_errors"},
    "batches": _CORE | {"_sdk_errors", "_call", "books"},
    "client": _CORE | {"_sdk_errors", "_call", "books", "_client_base", "session", "fallback", "estimate", "batches"},
    "session": _CORE | {"_sdk_errors", "_call", "books", "_client_base"},
    "meter": _CORE | {"_sdk_errors", "_call", "books"},
    "__main__": frozenset({"cli"}),
    "__init__": frozenset({"errors", "client", "meter", "pricing", "result", "usage", "session"}),
    # The emulator stands alone: it is what canny is tested against.
    "emulator": frozenset(),
}
#: The CLI is a user of the library: it may import any public unit, nothing private.
CLI_MAY_NOT = frozenset({name for name in ALLOWED if name.startswith("_")})


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module (or module.name) imported
    line: int
    lazy: bool  # inside a function


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = _module_name(path).split(".")
    if not _is_package(path):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def _imports() -> Iterator[Import]:
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        importer = _module_name(path)
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {sub.lineno for f in funcs for sub in ast.walk(f) if hasattr(sub, "lineno")}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
                continue
            lazy = node.lineno in inside
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(importer, alias.name, node.lineno, lazy)
            else:
                module = _resolve(path, node)
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    # ``from canny import errors`` imports the module canny.errors
                    sub = SRC.joinpath(*full.split("."))
                    is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                    yield Import(importer, full if is_module else module, node.lineno, lazy)
                    if not is_module and alias.name.startswith("_") and not alias.name.startswith("__"):
                        yield Import(importer, full, node.lineno, lazy)


IMPORTS = list(_imports())


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _package(module: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to itself)."""
    path = SRC.joinpath(*module.split("."))
    return module if (path / "__init__.py").exists() else module.rpartition(".")[0]


def _private_owner(target: str) -> str | None:
    """The package that owns the first private part of ``target``, or ``None`` if all public."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i]) or parts[0]
    return None


def test_no_module_imports_a_private_module_of_another_package() -> None:
    """No module imports a private module (or name) of another package: canny's own or a dependency's."""
    bad = []
    for imp in IMPORTS:
        owner = _private_owner(imp.target)
        if owner is not None and owner != _package(imp.importer):
            bad.append(f"{imp.importer}:{imp.line} imports {imp.target}")
    assert not bad, "\n".join(bad)


def test_each_unit_imports_only_its_allowed_layers() -> None:
    """Each unit imports only the units docs/architecture.md allows (lazy imports included)."""
    bad = []
    for imp in IMPORTS:
        if not imp.target.startswith("canny.") and imp.target != "canny":
            continue
        mine, theirs = _unit(imp.importer), _unit(imp.target)
        if mine == theirs or (theirs == "__init__" and imp.target == "canny"):
            continue
        if mine == "cli":
            if theirs in CLI_MAY_NOT:
                bad.append(f"{imp.importer}:{imp.line} (the CLI uses the public API) imports {imp.target}")
            continue
        allowed = ALLOWED.get(mine)
        assert allowed is not None, f"docs/architecture.md does not place {mine} ({imp.importer})"
        if theirs not in allowed:
            bad.append(f"{imp.importer}:{imp.line} ({mine}) imports {imp.target} ({theirs})")
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    """canny's modules import each other without circles (imports inside functions included)."""
    graph: dict[str, set[str]] = {}
    for imp in IMPORTS:
        target = imp.target
        while target and not (
            SRC.joinpath(*target.split(".")).with_suffix(".py").exists()
            or (SRC.joinpath(*target.split(".")) / "__init__.py").exists()
        ):
            target = target.rpartition(".")[0]
        if target.startswith("canny") and target != imp.importer and target != "canny":
            graph.setdefault(imp.importer, set()).add(target)
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in seen and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        seen[node] = 2
        return None

    for start in sorted(graph):
        if start not in seen and (cycle := visit(start)):
            pytest.fail("import circle: " + " -> ".join(cycle))
