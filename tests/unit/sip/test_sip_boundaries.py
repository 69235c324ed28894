"""sip/ is signalling only: it never imports store, dialer, api or media (STYLE layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import ringcast.sip

FORBIDDEN = ("ringcast.store", "ringcast.dialer", "ringcast.api", "ringcast.media", "ringcast.rtp")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_sip_imports_no_other_layer() -> None:
    root = Path(ringcast.sip.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert files
    for path in files:
        found = imported_modules(path)
        bad = [m for m in found if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
        assert not bad, f"{path.name} imports {bad}"


def test_endpoint_never_imports_the_call() -> None:
    """The endpoint routes to calls through its DialogUser protocol (no import cycle);
    nor do the transaction layer, the stateless responder, the flood gate or messages."""
    root = Path(ringcast.sip.__file__).parent
    for name in ("endpoint.py", "layer.py", "stateless.py", "flood.py", "message.py"):
        found = imported_modules(root / name)
        assert "ringcast.sip.call" not in found, f"{name} imports ringcast.sip.call"
