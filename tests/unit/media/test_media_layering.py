"""The media plane's dependency direction (STYLE.md "A layout that shows the architecture").

media/ never imports sip, store, dialer or api; rtp/ never imports sip, store,
dialer or api (it may use media types).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[3] / "src" / "ringcast"
FORBIDDEN = {
    "media": {"sip", "store", "dialer", "api", "rtp", "cli", "config"},
    "rtp": {"sip", "store", "dialer", "api", "cli", "config"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_the_right_way(package: str) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files
    bad = []
    for path in files:
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "ringcast" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []
