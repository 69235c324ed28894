"""The dialer's own modules import each other one way (STYLE.md habit 14).

The service owns the others; what it delegates to (the watcher, prompt
preparation, a call's writes, the request cache) never reaches back into it,
so each can be read, and tested, without the claim loop. Imports are read from
the source, not executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

DIALER = Path(__file__).parents[3] / "src" / "ringcast" / "dialer"

# module -> the dialer modules it may import
ALLOWED: dict[str, set[str]] = {
    "requests_cache": set(),
    "writer": set(),
    "writes": {"requests_cache", "writer", "report"},  # report: the progress fields
    "preparing": {"requests_cache", "writes"},
    "watch": {"recordings", "requests_cache"},
}


def dialer_imports(module: str) -> set[str]:
    tree = ast.parse((DIALER / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("ringcast.dialer."):
                found.add(node.module.split(".")[2])
            elif node.module == "ringcast.dialer":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ringcast.dialer."):
                    found.add(alias.name.split(".")[2])
    return found


def test_the_service_parts_import_one_way() -> None:
    wrong = {m: dialer_imports(m) - allowed for m, allowed in ALLOWED.items()}
    assert {m: extra for m, extra in wrong.items() if extra} == {}


def test_nothing_in_the_dialer_imports_the_service() -> None:
    importers = [p.stem for p in DIALER.glob("*.py") if "service" in dialer_imports(p.stem)]
    assert importers == []
