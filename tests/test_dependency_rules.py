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


def _literal_defaults(path: Path) -> list[tuple[str, object, int]]:
    """(name, literal, line) for every function parameter and ``add_argument`` default given as a literal."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults) + list(node.args.kw_defaults)
            for arg, default in zip(args, defaults):
                if isinstance(default, ast.Constant) and default.value is not None and not isinstance(default.value, bool):
                    out.append((arg.arg, default.value, node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            flag = node.args[0].value if isinstance(node.args[0], ast.Constant) else ""
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Constant) and kw.value.value is not None:
                    out.append((str(flag).lstrip("-").replace("-", "_"), kw.value.value, node.lineno))
    return out


def test_no_setting_default_is_written_twice():
    """A setting's default lives in its one home — ``SearchR1Config`` for the plugin, ``Limits`` for the server —
    and everything else reads it from there; a literal default for a setting of the same name is a second copy."""
    from dataclasses import fields

    from retrieval_server.limits import Limits
    from search_r1_plugin.settings import SearchR1Config

    homes = {
        "search_r1_plugin": ({f.name for f in fields(SearchR1Config)}, ROOT / "search_r1_plugin" / "settings.py"),
        "retrieval_server": ({f.name for f in fields(Limits)}, ROOT / "retrieval_server" / "limits.py"),
    }
    copies = []
    for package, (names, home) in homes.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == home:
                continue
            for name, value, line in _literal_defaults(path):
                if name in names or name.replace("default_", "") in names:
                    copies.append(f"{path.relative_to(ROOT)}:{line}: {name}={value!r}")
    assert not copies, "defaults written outside their home:\n" + "\n".join(copies)
