"""sip/ is signalling only: it never imports store, dialer, api or media (STYLE layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import ringcast.sip

FORBIDDEN = ("ringcast.store", "ringcast.dialer", "ringcast.api", "ringcast.media", "ringcast.rtp")


# The call and its parts, each importing (at run time) only those before it:
# the parts are functions of the call and see it through TYPE_CHECKING only.
CALL_PARTS = ("call_dialog", "call_refresh", "call_requests", "call_invite", "call")


def imported_modules(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Modules ``path`` imports; ``runtime_only`` skips ``if TYPE_CHECKING:`` blocks.

    ``from ringcast.sip import call_dialog`` counts as ``ringcast.sip.call_dialog``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
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
    parts = {f"ringcast.sip.{part}" for part in CALL_PARTS}
    for name in (
        "endpoint.py",
        "addressing.py",
        "layer.py",
        "stateless.py",
        "flood.py",
        "message.py",
    ):
        found = imported_modules(root / name)
        assert not found & parts, f"{name} imports {sorted(found & parts)}"


def test_the_call_parts_import_one_way() -> None:
    """call.py applies its parts; a part never imports call.py (nor a later part) at
    run time, so there is no import cycle (TYPE_CHECKING imports aside)."""
    root = Path(ringcast.sip.__file__).parent
    for i, part in enumerate(CALL_PARTS):
        found = imported_modules(root / f"{part}.py", runtime_only=True)
        later = {f"ringcast.sip.{p}" for p in CALL_PARTS[i + 1 :]}
        assert not found & later, f"{part}.py imports {sorted(found & later)}"
        assert (root / f"{part}.py").read_text().count("\n") < 600, f"{part}.py is too long"


def test_runtime_only_skips_type_checking_imports() -> None:
    root = Path(ringcast.sip.__file__).parent
    path = root / "call_invite.py"
    assert "ringcast.sip.call" in imported_modules(path)
    assert "ringcast.sip.call" not in imported_modules(path, runtime_only=True)
    assert "ringcast.sip.call_dialog" in imported_modules(path, runtime_only=True)
