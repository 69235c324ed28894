"""rtp/ keeps its imports one-way: the session owns its two halves, they never import it.

packet, ports, udp, srtp   (wire formats, sockets, crypto: no session)
state                      (the session's states and results: plain data)
clock                      (the pacing clock: knows streams only by a Protocol)
sender, receiver           (the session's outgoing and incoming halves)
session                    (one call's media: sender + receiver)
relay                      (two sessions bridged on the clock)
"""

from __future__ import annotations

import ast
from pathlib import Path

import ringcast.rtp

ROOT = Path(ringcast.rtp.__file__).parent

# module -> the rtp modules it may import
ALLOWED: dict[str, set[str]] = {
    "packet": set(),
    "ports": set(),
    "udp": set(),
    "srtp": set(),
    "clock": set(),
    "state": set(),
    "sender": {"clock", "packet", "srtp"},
    "receiver": {"clock", "packet", "srtp", "state", "udp"},
    "session": {"clock", "ports", "receiver", "sender", "srtp", "state", "udp"},
    "relay": {"clock", "packet", "session"},
    "__init__": {"clock", "ports", "session", "state"},
}


def rtp_imports(path: Path) -> tuple[set[str], set[str]]:
    """(rtp modules imported at run time, those imported under TYPE_CHECKING only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typing_only.update(id(n) for b in node.body for n in ast.walk(b))
    runtime: set[str] = set()
    checking: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            name = node.module
        elif isinstance(node, ast.Import):
            name = node.names[0].name
        else:
            continue
        if name.startswith("ringcast.rtp."):
            (checking if id(node) in typing_only else runtime).add(name.split(".")[2])
    return runtime, checking


def test_every_rtp_module_is_in_the_table() -> None:
    assert {p.stem for p in ROOT.glob("*.py")} == set(ALLOWED)


def test_rtp_imports_are_one_way() -> None:
    for path in sorted(ROOT.glob("*.py")):
        runtime, checking = rtp_imports(path)
        extra = (runtime | checking) - ALLOWED[path.stem]
        assert not extra, f"{path.name} imports rtp modules {sorted(extra)}"


def test_the_halves_never_import_the_session_at_run_time() -> None:
    for name in ("sender", "receiver"):
        runtime, _ = rtp_imports(ROOT / f"{name}.py")
        assert "session" not in runtime, f"{name}.py imports the session"
