"""Which part of ringcast may import which (STYLE.md "A layout that shows the architecture").

Every top-level module and package under src/ringcast is a row of ALLOWED,
with each ringcast part it imports and why. An import that is not in the table
fails (add the row with its reason, unless FORBIDDEN says no); a row whose
import is gone fails too, so the table stays a true map. FORBIDDEN is the
contract the table must keep, and the parts import each other without cycles.

Imports are read from the source (the whole tree, so imports inside functions
and under TYPE_CHECKING count): nothing is imported to check it. Likewise the
process environment is read only by the files in ENV_READERS; the rest takes
its configuration from config.Settings.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "ringcast"
ROOT = "ringcast"  # `import ringcast` / `from ringcast import __version__`: always allowed

# part -> {part it imports: why}. Parts are src/ringcast's packages and top-level modules.
ALLOWED: dict[str, dict[str, str]] = {
    "errors": {},
    "domain": {},
    "heap": {},
    "logfmt": {},
    "inet": {},
    "netguard": {"errors": "ValidationFailed for a refused URL"},
    "netguard_aiohttp": {"netguard": "the SSRF guard's policy and resolution, for aiohttp"},
    "numbers": {},
    "trunks": {
        "errors": "ConfigError naming a trunk's carrier key",
        "numbers": "a trunk's country is checked with the number parser",
    },
    "config": {
        "domain": "the CPS and max-calls limits validated here",
        "errors": "ConfigError naming the key",
        "trunks": "the carrier keys of [trunks.NAME] (numbers, registration) validated here",
        "inet": "HOST:PORT with [IPv6], public_ip per family",
    },
    "client": {"errors": "RingcastError as the client's base error"},
    "sip": {
        "domain": "Outcome: SIP causes map to call outcomes",
        "inet": "address families of sockets, [IPv6] in Via/Contact/From",
    },
    "media": {
        "errors": "MediaError",
        "netguard": "fetch goes through the SSRF guard",
    },
    "rtp": {
        "errors": "MediaError",
        "inet": "RTP sockets of the callee's family, v4-mapped on dual stack",
        "media": "codecs (frame size, ptime) and the prepared Prompt it streams",
    },
    "store": {
        "config": "store_for(Settings): the database URL and pool sizes",
        "domain": "results, outcomes and times of the rows",
        "errors": "driver errors become StoreError (and validation errors)",
        "numbers": "do-not-call entries use the parser numbers are dialled with",
    },
    "metrics": {
        "domain": "results counted by the gauges",
        "heap": "the garbage collector's pauses (heap.STATS)",
        "errors": "StoreError while scraping",
        "store": "counts read from the calls and webhook outbox tables",
    },
    "webhooks": {
        "domain": "now_precise for attempt times",
        "errors": "ConfigError for a bad install secret",
        "netguard": "deliveries go through the SSRF guard",
        "netguard_aiohttp": "the guard as the connector of the deliverer's aiohttp session",
        "store": "the outbox rows (store.outbox) it claims and settles",
    },
    "api": {
        "config": "Settings of the app",
        "domain": "limits and times in schemas and the dashboard",
        "errors": "the error envelope maps RingcastError",
        "inet": "a bracketed recipient host is an IPv6 address",
        "metrics": "/metrics",
        "media": "voices and speech length checked at intake, GET /voices (issue 13)",
        "netguard": "callback and media URLs are checked at intake",
        "numbers": "recipients given as numbers are checked at intake (issue 15)",
        "sealing": "inline SIP passwords sealed before they are stored",
        "store": "requests, reports, keys, do-not-call list, dashboard queries",
    },
    "dialer": {
        "config": "Settings of the node",
        "domain": "outcomes and results of calls",
        "errors": "MediaError and RingcastError of a call",
        "heap": "a full garbage collection while no call is live (the watcher)",
        "inet": "RTP bind family from the SIP bind address",
        "media": "fetch and prepare the playlist",
        "numbers": "a number recipient becomes its trunk's Request-URI (issue 15)",
        "rtp": "ports, the shared clock and one media session per call",
        "sealing": "inline SIP passwords opened at dial time, erased when final",
        "sip": "the endpoint and one outbound call",
        "store": "claim, update and finish calls; webhook events in the same transaction",
        "trunks": "the carrier keys of a trunk: which trunks register, and how",
        "webhooks": "runs the deliverer beside the dialer (deliverer_lifespan)",
    },
    "sealing": {
        "domain": "final results, after which sealed passwords are erased",
        "errors": "ConfigError for a bad secret key",
        "store": "the request and call rows holding sealed passwords",
    },
    "cli": {
        "api": "create_app and the bind policy for `serve` / `api`",
        "client": "the HTTP client of `broadcast` / `report`",
        "config": "Settings from flags, environment and the config file",
        "dialer": "the dialer of `serve` / `dialer`, one call for `call`",
        "errors": "errors printed to the user",
        "heap": "the frozen start-up heap",
        "inet": "the --http address family, checked at start",
        "logfmt": "JSON log lines",
        "store": "the store of `keys`",
    },
}

# The contract (STYLE.md, HELPERS.md): these edges must never appear, whatever ALLOWED says.
FORBIDDEN: dict[str, set[str]] = {
    "sip": {"store", "dialer", "api", "webhooks", "media", "rtp"},
    "rtp": {"sip", "store", "dialer", "api", "webhooks", "config"},
    "media": {"sip", "rtp", "store", "dialer", "api", "webhooks", "config"},
    "store": {"webhooks", "dialer", "api", "sip", "rtp", "media"},
    "webhooks": {"dialer", "api", "sip", "rtp", "media"},
    "api": {"dialer", "sip", "rtp"},
}
ENTRY_POINTS = {"cli"}  # imported by nothing in ringcast


@functools.cache
def parts() -> frozenset[str]:
    """Every package and top-level module of src/ringcast."""
    found = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    found |= {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    return frozenset(found)


def part_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def module_name(path: Path) -> list[str]:
    rel = path.relative_to(SRC).with_suffix("")
    names = [ROOT, *rel.parts]
    return names[:-1] if names[-1] == "__init__" else names


def imported(path: Path, text: str | None = None) -> Iterator[tuple[str, int]]:
    """(imported ringcast part or ROOT, line) for every import in a file
    (its `text` when given, for the reader's own test)."""
    known = parts()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    tree = ast.parse(path.read_text() if text is None else text, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name.split("."), ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            targets = [(module, tuple(alias.name for alias in node.names))]
        else:
            continue
        for module, names in targets:
            if module[0] != ROOT:
                continue
            if len(module) > 1:
                yield module[1], node.lineno
                continue
            for name in names or (ROOT,):  # `from ringcast import metrics` imports a part
                yield (name if name in known else ROOT), node.lineno


@functools.cache
def edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> where, for imports between different parts."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = part_of(path)
        for target, line in imported(path):
            if target not in (ROOT, source):
                out.setdefault((source, target), []).append(f"{path.relative_to(SRC)}:{line}")
    return out


def test_every_part_has_a_row() -> None:
    assert sorted(parts() - ALLOWED.keys()) == [], "add a row to ALLOWED for each new part"
    assert sorted(ALLOWED.keys() - parts()) == [], "remove the rows of parts that are gone"


def test_the_table_keeps_the_contract() -> None:
    for source, allowed in ALLOWED.items():
        assert allowed.keys() <= ALLOWED.keys(), source
        assert source not in allowed, source
        bad = allowed.keys() & (FORBIDDEN.get(source, set()) | ENTRY_POINTS)
        assert not bad, f"{source} may not import {sorted(bad)}"


def test_imports_follow_the_table() -> None:
    found = edges()
    unlisted = [
        f"{source} -> {target} at {', '.join(where)}"
        for (source, target), where in sorted(found.items())
        if target not in ALLOWED.get(source, {})
    ]
    assert unlisted == [], "an import between parts that ALLOWED does not list"
    stale = [
        f"{source} -> {target}"
        for source, allowed in sorted(ALLOWED.items())
        for target in sorted(allowed)
        if (source, target) not in found
    ]
    assert stale == [], "ALLOWED lists imports that no longer exist: remove them"


@pytest.mark.parametrize("source", sorted(FORBIDDEN))
def test_forbidden_imports_are_absent(source: str) -> None:
    bad = [
        f"{source} -> {target} at {', '.join(where)}"
        for (src, target), where in sorted(edges().items())
        if src == source and target in FORBIDDEN[source] | ENTRY_POINTS
    ]
    assert bad == []


def test_parts_import_each_other_without_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in edges():
        graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_the_reader_sees_every_kind_of_import() -> None:
    """What the checks rely on: absolute and relative imports, `from ringcast
    import part`, and imports inside functions all count."""
    text = (
        "import ringcast.sip.call\n"
        "from ringcast import metrics, __version__\n"
        "from ..webhooks import deliver\n"
        "from . import db\n"
        "def f():\n"
        "    from ringcast.api import app\n"
    )
    got = sorted(imported(SRC / "store" / "sample.py", text))
    assert got == [("api", 6), ("metrics", 2), (ROOT, 2), ("sip", 1), ("store", 4), ("webhooks", 3)]


# Files that read the process environment, and why. Everything else takes its
# configuration from config.Settings (read once, typed, failing early by key name).
ENV_READERS: dict[str, str] = {
    "config.py": "Settings.from_sources reads RINGCAST_<NAME>; XDG_CACHE_HOME: the cache default",
    "media/tts.py": "RINGCAST_PIPER_MODEL, until config-named voices replace it (issue 13)",
}
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def env_reads(path: Path) -> list[int]:
    """Lines that touch os.environ / os.getenv (or names imported from os as such)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in ENV_NAMES for alias in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def test_the_environment_is_read_through_settings_only() -> None:
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := env_reads(path))
    }
    assert {f: n for f, n in found.items() if f not in ENV_READERS} == {}
    assert sorted(ENV_READERS.keys() - found.keys()) == [], "remove rows that read nothing now"
