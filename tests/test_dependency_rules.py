"""The house's dependency rules, read from the import statements of every module."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level package of every import in ``package``'s modules, by file."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def test_the_retrieval_server_is_standalone():
    """It runs on a retrieval-only host: no verl, no plugin, no recipes."""
    for path, names in imported_packages("retrieval_server").items():
        assert not names & {"verl", "search_r1_plugin", "recipes"}, (path, names)


def test_the_plugin_talks_to_the_server_only_over_http():
    for path, names in imported_packages("search_r1_plugin").items():
        assert not names & {"retrieval_server", "recipes"}, (path, names)
