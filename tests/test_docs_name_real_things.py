"""Docs and docstrings name things that exist: files, modules, config groups and commands.

A doc that sends a reader to ``search_r1_plugin/foo.py``, ``search_r1_variant=[bar]`` or ``search-r1 baz`` after
the thing was renamed is a broken promise the reader finds first; this fails instead.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "search_r1_plugin" / "config"


def texts() -> dict[str, str]:
    files = [*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "recipes" / "README.md"]
    for package in ("search_r1_plugin", "retrieval_server", "recipes", "benchmarks", "tests"):
        files += sorted((ROOT / package).rglob("*.py"))
    return {str(f.relative_to(ROOT)): f.read_text() for f in files if f != Path(__file__).resolve()}  # not the examples above


def test_named_files_exist():
    pattern = re.compile(r"(?<![\w/.-])((?:search_r1_plugin|retrieval_server|recipes|benchmarks|docs|tests|\.ci)/[\w./-]+)")
    missing = [
        f"{where}: {path}"
        for where, text in texts().items()
        for path in (m.group(1).rstrip(".,:;)") for m in pattern.finditer(text))
        if not (ROOT / path).exists()
    ]
    assert not missing, missing


def test_named_modules_exist():
    pattern = re.compile(r"(?<![\w./])((?:search_r1_plugin|retrieval_server)(?:\.\w+)+)")

    def is_module_path(dotted: str) -> bool:
        parts = dotted.split(".")
        return any(
            (ROOT / "/".join(parts[:i])).with_suffix(".py").exists() or (ROOT / "/".join(parts[:i]) / "__init__.py").exists()
            for i in range(2, len(parts) + 1)
        )

    names = {(where, m.group(1)) for where, text in texts().items() for m in pattern.finditer(text)}
    files = (".log", ".py", ".md", ".json", ".yaml", ".jsonl")  # retrieval_server.log is a file name
    missing = sorted(f"{where}: {name}" for where, name in names if not name.endswith(files) and not is_module_path(name))
    assert not missing, missing


def test_named_config_groups_exist():
    pattern = re.compile(r"(search_r1_(?:algo|model|variant))=\[?([\w.,\-]+)\]?")
    missing = [
        f"{where}: {group}={choice}"
        for where, text in texts().items()
        for group, choices in pattern.findall(text)
        for choice in choices.split(",")
        if choice and choice != "null" and not (CONFIG / group / f"{choice}.yaml").exists()
    ]
    assert not missing, missing


def test_named_commands_exist():
    from retrieval_server.cli import COMMANDS as SERVER_COMMANDS
    from search_r1_plugin.cli import make_parser

    plugin = set(make_parser()._subparsers._group_actions[0].choices)
    commands = {"search-r1": plugin, "search-r1-retriever": set(SERVER_COMMANDS)}
    pattern = re.compile(r"(?<![\w-])(search-r1(?:-retriever)?) ([a-z][a-z-]+)")
    missing = [
        f"{where}: {tool} {sub}"
        for where, text in texts().items()
        for tool, sub in pattern.findall(text)
        if sub not in commands[tool] and not (tool == "search-r1" and sub == "retriever")
    ]
    assert not missing, missing
