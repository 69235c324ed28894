"""The declared runtime dependencies are the ones the code uses, and the README's
dependency table names each of them.

A dependency nobody imports (aiortp was one) is weight, an attack surface and a
false statement in the README; this test fails when one creeps back in.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ringcast"
# Used without an import statement: the text in src/ that shows the use.
USED_WITHOUT_IMPORT = {
    "tzdata": "ZoneInfo",  # zoneinfo reads its data where the system has none
    "aiosqlite": "sqlite+aiosqlite",  # SQLAlchemy's async SQLite driver, named in the URL
}
# Declared for another package's optional import, never imported by ringcast:
# package -> (the package that imports it, why ringcast declares it). The README
# row says the same; the test checks that the other package still imports it.
FOR_ANOTHER_PACKAGE = {
    "sniffio": (
        "httpcore",  # httpx's transport: `import sniffio` several times per request
        "without it each of those imports fails after a sys.path search: "
        "12-22 % of the webhook deliverer's CPU per event (bench/RESULTS.md)",
    ),
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=;!~]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [_name(r) for r in project["dependencies"]]


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_every_runtime_dependency_is_used() -> None:
    modules_of: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _imported_modules()
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    unused = []
    for dist in _declared():
        if dist in FOR_ANOTHER_PACKAGE:
            continue  # test_packages_declared_for_another_still_serve_it
        if dist in USED_WITHOUT_IMPORT:
            if USED_WITHOUT_IMPORT[dist] not in source:
                unused.append(dist)
            continue
        if not modules_of.get(dist, set()) & imported:
            unused.append(dist)
    assert unused == [], f"declared in pyproject.toml but never imported by ringcast: {unused}"


def test_the_readme_table_names_each_runtime_dependency() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Dependencies, and why each is here", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    named = {
        _name(word)
        for row in rows[1:]
        for word in re.split(r"[,\s]+", row.split("|")[1].replace("(pinned)", ""))
        if word and word not in ("test", "extra:", "extras:", "optional", "`piper`")
    }
    missing = [d for d in _declared() if d not in named]
    assert missing == [], f"the README's dependency table lacks {missing}"
    assert "aiortp" not in readme.lower()


def test_packages_declared_for_another_still_serve_it() -> None:
    """A package in FOR_ANOTHER_PACKAGE is declared, the package it is there for
    is installed with ringcast, and that package's source still imports it (when
    httpcore stops asking for sniffio, the declaration and the README row go)."""
    declared = set(_declared())
    readme = (ROOT / "README.md").read_text()
    for dist, (user, why) in FOR_ANOTHER_PACKAGE.items():
        assert dist in declared, f"{dist} is listed for {user} but not declared"
        assert why
        files = importlib.metadata.files(user) or []
        sources = [f for f in files if str(f).endswith(".py")]
        assert sources, f"{user} is not installed"
        pattern = re.compile(rf"^\s*(import {dist}\b|from {dist}\b)", re.MULTILINE)
        users = [str(f) for f in sources if pattern.search(Path(str(f.locate())).read_text())]
        assert users, f"{user} no longer imports {dist}: drop the declaration"
        row = next((line for line in readme.splitlines() if line.startswith(f"| {dist} |")), "")
        assert user in row, f"the README's row for {dist} does not say it is there for {user}"
