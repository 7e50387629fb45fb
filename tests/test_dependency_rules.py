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
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = node.value  # a dataclass or pydantic field: `name: int = 3` or `name: int = Field(3, …)`
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Field" and value.args:
                value = value.args[0]
            if isinstance(value, ast.Constant) and value.value is not None and not isinstance(value.value, bool):
                out.append((node.target.id, value.value, node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            flag = node.args[0].value if isinstance(node.args[0], ast.Constant) else ""
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Constant) and kw.value.value is not None:
                    out.append((str(flag).lstrip("-").replace("-", "_"), kw.value.value, node.lineno))
    return out


def test_no_setting_default_is_written_twice():
    """A setting's default lives in its one home — ``SearchR1Config`` for the plugin, ``Limits`` and the server's
    ``ServeConfig``/``BuildConfig`` for the server —
    and everything else reads it from there; a literal default for a setting of the same name is a second copy."""
    from dataclasses import fields

    from retrieval_server.config import BuildConfig, ServeConfig
    from retrieval_server.limits import Limits
    from search_r1_plugin.settings import SearchR1Config

    server_settings = {f.name for f in fields(Limits)} | set(ServeConfig.model_fields) | set(BuildConfig.model_fields)
    homes = {
        "search_r1_plugin": ({f.name for f in fields(SearchR1Config)}, {ROOT / "search_r1_plugin" / "settings.py"}),
        "retrieval_server": (server_settings, {ROOT / "retrieval_server" / "limits.py", ROOT / "retrieval_server" / "config.py"}),
    }
    copies = []
    for package, (names, home) in homes.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in home:
                continue
            for name, value, line in _literal_defaults(path):
                if name in names or name.replace("default_", "") in names:
                    copies.append(f"{path.relative_to(ROOT)}:{line}: {name}={value!r}")
    assert not copies, "defaults written outside their home:\n" + "\n".join(copies)


def _server_imports() -> dict[str, set[str]]:
    """Module of the retrieval server (dotted, under the package) -> the server modules it imports,
    imports inside functions included."""
    graph: dict[str, set[str]] = {}
    package = ROOT / "retrieval_server"
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("retrieval_server."):
                deps.add(node.module.removeprefix("retrieval_server."))
        graph[name] = deps - {name}
    return graph


def test_no_import_circle_in_the_retrieval_server():
    """Modules of the server import each other one way only (imports inside functions count)."""
    graph = _server_imports()

    def reach(start: str, node: str, seen: set[str]) -> list[str] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                path = reach(start, nxt, seen)
                if path:
                    return [node, *path]
        return None

    circles = [" -> ".join(c) for m in graph if (c := reach(m, m, set()))]
    assert not circles, circles


# The folders follow a request's way in: http/ (the app) calls search/ (what answers a query), which reads
# data/ (the files' formats); build/ makes those files. Nothing calls back up the way.
MAY_NOT_IMPORT = {"http": set(), "build": {"http"}, "search": {"http", "build"}, "data": {"http", "build", "search"}}


def test_the_retrieval_server_folders_are_layered():
    graph = _server_imports()
    assert {name.split(".")[0] for name in graph} >= set(MAY_NOT_IMPORT), "the folders of the server changed"
    wrong = [
        f"{name} imports {dep}"
        for name, deps in graph.items()
        for dep in deps
        if name.split(".")[0] in MAY_NOT_IMPORT and dep.split(".")[0] in MAY_NOT_IMPORT[name.split(".")[0]]
    ]
    assert not wrong, wrong
