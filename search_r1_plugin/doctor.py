"""``search-r1 doctor``: say in plain words whether the plugin is wired into verl.

verl imports plugins inside ``import verl`` and hides their errors at DEBUG
level; a user whose plugin failed to load would only see "agent loop search_r1
not registered" deep inside a Ray worker. This check imports verl the same way,
then confirms each piece and the retriever.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, entry_points, version


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def run_checks(retriever_url: str | None) -> list[tuple[bool, str]]:
    checks: list[tuple[bool, str]] = []
    eps = [ep for ep in entry_points(group="verl.plugins") if ep.value.startswith("search_r1_plugin")]
    checks.append((bool(eps), f"entry point in group verl.plugins: {[ep.value for ep in eps] or 'missing — reinstall the package'}"))
    try:
        import verl  # noqa: F401  (loads plugins exactly as main_ppo does)
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    except Exception as exc:
        checks.append((False, f"import verl failed: {exc!r} (pip install 'search-r1-plugin[verl]')"))
        return checks
    checks.append((True, f"verl {_version('verl')} imported"))
    if "search_r1" not in _agent_loop_registry:
        try:  # surface the error verl swallowed
            importlib.import_module("search_r1_plugin.verl_plugin")
            checks.append((False, "agent loop search_r1 missing from verl's registry after import verl"))
        except Exception as exc:
            checks.append((False, f"plugin failed to import: {exc!r}"))
    else:
        checks.append((True, f"agent loop 'search_r1' registered -> {_agent_loop_registry['search_r1']['_target_']}"))
    reward = importlib.import_module("search_r1_plugin.reward")
    ok = reward.compute_score("nq", "<answer> Paris </answer>", {"target": ["paris"]})["score"] == 1.0
    checks.append((ok, "reward pkg://search_r1_plugin.reward:compute_score scores a known answer"))
    try:
        importlib.import_module("search_r1_plugin.config")
        from search_r1_plugin.presets import GROUPS, choices

        found = {group: choices(group) for group in GROUPS}
        checks.append(
            (all(found.values()), "Hydra config groups: " + "; ".join(f"{group}={'|'.join(names)}" for group, names in found.items()))
        )
    except Exception as exc:
        checks.append((False, f"presets not found: {exc!r}"))
    if retriever_url:
        from search_r1_plugin.retrieval_client import RetrievalError, server_health, split_urls

        for url in split_urls(retriever_url):  # every server of a comma-separated list
            try:
                body = server_health(url, timeout_s=5)
                checks.append((body.get("status") == "ready", f"retriever {url}: {body}"))
            except RetrievalError as exc:
                checks.append((False, str(exc)))
    for pkg in ("torch", "transformers", "vllm", "ray"):
        checks.append((True, f"{pkg} {_version(pkg)}"))
    return checks


def doctor(retriever_url: str | None) -> int:
    checks = run_checks(retriever_url)
    for ok, message in checks:
        print(f"[{'ok' if ok else 'FAIL'}] {message}")
    failed = sum(not ok for ok, _ in checks)
    print("all good" if not failed else f"{failed} problem(s) found")
    return 1 if failed else 0
