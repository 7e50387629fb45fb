"""What an evaluation's numbers depend on (``manifest.json``), and ``search-r1 compare`` across runs.

Tables from different projects disagree for reasons no table shows (Search-R1 #40: HotpotQA 55 vs 38
from different corpora, retrievers, top-k and subsets). Every ``search-r1 eval`` writes, next to its
table: the model (path, hashes of its config and weight index), the questions (count and a hash of their
ids, questions and answers per dataset), the retriever (URL, what its ``/health`` reports: documents and
index/encoder description; replay/record/noise switches), search settings and token caps, decoding, and
code versions. :func:`compare` prints runs side by side and names every field that makes them not
comparable; the model and the method are what a comparison varies, so they never warn.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

# Flattened manifest keys that must agree for two tables to be comparable.
COMPARABLE_PREFIXES = (
    "datasets", "questions", "limit", "search.", "retrieval.", "retriever.documents", "retriever.description", "decoding.",
)  # fmt: skip


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def model_fingerprint(path: str) -> dict[str, Any]:
    """Path plus hashes of ``config.json`` and of the weight files' names and sizes (the index when sharded)."""
    p = Path(path)
    out: dict[str, Any] = {"path": str(path)}
    if (p / "config.json").is_file():
        out["config_sha256"] = sha256_of((p / "config.json").read_bytes())
    weights = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin"))
    if weights:
        out["weights_sha256"] = sha256_of(json.dumps([(w.name, w.stat().st_size) for w in weights]).encode())
    return out


def questions_fingerprint(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    payload = json.dumps([[r["id"], r["question"], list(r["golden_answers"])] for r in rows], ensure_ascii=False)
    return {"n": len(rows), "sha256": sha256_of(payload.encode())}


def server_description(url: Optional[str]) -> dict[str, Any]:
    """What the (first) retrieval server says about itself on ``/health``; nothing if it is unreachable."""
    from search_r1_plugin.errors import RetrievalError
    from search_r1_plugin.retrieval_client import server_health, split_urls

    if not url:
        return {}
    try:
        body = server_health(split_urls(url)[0], timeout_s=5)
    except RetrievalError:
        return {}
    out = {"documents": body.get("documents"), "description": body.get("retriever")}
    return {k: v for k, v in out.items() if v is not None}


def code_versions() -> dict[str, Optional[str]]:
    def pkg(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    git = None
    try:
        here = Path(__file__).resolve().parent
        described = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5)
        git = described.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"search_r1_plugin": pkg("search-r1-plugin"), "git": git, "verl": pkg("verl"), "transformers": pkg("transformers")}


def build_manifest(
    *, method: str, datasets, questions, limit, config, retrieval, response_length: int, retriever_url: Optional[str], extra=None
) -> dict[str, Any]:
    manifest = {
        "method": method,
        "datasets": [list(d) for d in datasets],
        "limit": limit,
        "questions": {name: questions_fingerprint(rows) for name, rows in questions.items()},
        "search": {
            "topk": config.topk,
            "max_turns": config.max_turns,
            "max_turn_tokens": config.max_turn_tokens,
            "max_obs_length": config.max_obs_length,
            "turn_cut": config.turn_cut,
            "response_length": response_length,
        },
        "retrieval": retrieval.as_dict(),
        "retriever": {"url": retriever_url, **server_description(retriever_url)},
        "versions": code_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in (extra or {}).items():
        manifest[key] = value
    return manifest


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differences(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    """Comparability fields whose values differ across runs (sorted)."""
    flat = [flatten(m) for m in manifests]
    ignored = {"retrieval.record"}  # where a run saved its searches changes nothing it measured
    if all(not f.get("retrieval.noise") for f in flat):
        ignored.add("retrieval.noise_corpus")  # unused without noise
    keys = sorted({k for f in flat for k in f if k.startswith(COMPARABLE_PREFIXES) and k not in ignored})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    d = Path(run_dir)
    if not (d / "scores.json").is_file():
        raise FileNotFoundError(f"{d} has no scores.json: not a finished search-r1 eval output directory")
    manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").is_file() else {}
    return json.loads((d / "scores.json").read_text()), manifest


def compare(run_dirs: Sequence[str | Path], plot_path: Optional[str | Path] = None) -> tuple[str, list[str]]:
    """A side-by-side EM table (runs × datasets + avg) and the warnings; optionally a grouped bar plot."""
    runs = [(Path(r).name or str(r), *load_run(r)) for r in run_dirs]
    names = sorted({n for _, scores, _ in runs for n in scores})
    md = "| run | " + " | ".join(names) + " | avg |\n|---|" + "---|" * (len(names) + 1) + "\n"
    for label, scores, _ in runs:
        vals = [scores[n]["em"] if n in scores else None for n in names]
        have = [v for v in vals if v is not None]
        avg = f"{sum(have) / len(have):.3f}" if have else "–"
        md += f"| {label} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in vals) + f" | {avg} |\n"
    warnings = []
    if any(not m for _, _, m in runs):
        warnings.append("some runs have no manifest.json (written by search-r1 eval since this version): comparability unknown")
    diff = differences([m for _, _, m in runs if m])
    if diff:
        flat = [(label, flatten(m)) for label, _, m in runs if m]
        for key in diff:
            values = ", ".join(f"{label}={json.dumps(f.get(key))}" for label, f in flat)
            warnings.append(f"not comparable: {key} differs ({values})")
    if plot_path:
        from search_r1_plugin.evaluation.plots import grouped_bars

        grouped_bars(Path(plot_path), names, {label: [s.get(n, {}).get("em", float("nan")) for n in names] for label, s, _ in runs})
    return md, warnings
