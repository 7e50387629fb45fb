"""Run a method over benchmark datasets: resumable JSONL trajectories, Table-2 layout, comparison plot.

Outputs in ``--output-dir``: ``trajectories/{dataset}.jsonl`` (one line per finished question,
appended as it finishes, so a rerun skips what is done; with the searches it made and its failure
label, :mod:`.attribution`), ``scores.json``, ``table.md`` and ``table.csv`` (datasets as columns,
average last; rows EM, F1, sub-EM; then the failure breakdown), ``manifest.json`` (what the numbers
depend on, :mod:`.manifest`), ``report.html`` (:mod:`.html_report`) and ``comparison.png`` against the paper's row for the same model and
method when the paper has one. A table is only written when every question of every dataset has a result.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from search_r1_plugin.evaluation.attribution import attribute, breakdown, breakdown_table
from search_r1_plugin.evaluation.html_report import write_eval_report
from search_r1_plugin.evaluation.methods import METHODS, PAPER_METHOD_NAMES, MethodContext
from search_r1_plugin.evaluation.plots import grouped_bars
from search_r1_plugin.evaluation.retrievers import Recorder, RetrievalOptions
from search_r1_plugin.protocol import document_contents
from search_r1_plugin.qa_data import read_dataset
from search_r1_plugin.reward import compute_score

METRICS = ("em", "f1", "sub_em")


def load_questions(name: str, split: str, local_dir: Optional[Path], limit: Optional[int]) -> list[dict]:
    rows = []
    for rec in read_dataset(name, split, local_dir):
        if "__error__" in rec or not rec.get("question") or not rec.get("golden_answers"):
            raise ValueError(f"{name}/{split}: unusable row {rec!r}")
        rows.append({"id": str(rec.get("id", len(rows))), "question": rec["question"], "golden_answers": list(rec["golden_answers"])})
        if limit is not None and len(rows) >= limit:
            break
    return rows


def score(name: str, result, golds: list[str]) -> dict[str, float]:
    # result.answer is taken from model-written text only; no answer scores as such.
    s = compute_score(name, f"<answer>{result.answer}</answer>" if result.answer is not None else "", {"target": golds})
    return {k: s[k] for k in METRICS}


async def run_dataset(method: str, name: str, rows: list[dict], ctx: MethodContext, out_file: Path, concurrency: int) -> None:
    done = set()
    if out_file.exists():
        with open(out_file) as f:
            done = {json.loads(line)["id"] for line in f if line.strip()}
    todo = [r for r in rows if r["id"] not in done]
    fn = METHODS[method]
    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"{method} {name}", unit="q")
    out_file.parent.mkdir(parents=True, exist_ok=True)

    async def one(row: dict) -> None:
        recorder = Recorder(ctx.retrieve)  # this question's searches and passages, for attribution
        async with sem:
            result = await fn(row["question"], dataclasses.replace(ctx, retrieve=recorder))
        scores = score(name, result, row["golden_answers"])
        read = [[document_contents(item) for item in call["results"]] for call in recorder.calls]
        line = {
            "id": row["id"],
            "question": row["question"],
            "golden_answers": row["golden_answers"],
            "answer": result.answer,
            "searches": result.searches,
            "turns": result.turns,
            "queries": result.queries,
            **scores,
            "failure": attribute(row["golden_answers"], result.answer, scores["em"], read),
            "retrievals": [{"query": c["query"], "topk": c["topk"], "passages": p} for c, p in zip(recorder.calls, read)],
            "response": result.response,
            "spans": result.spans,
        }
        with open(out_file, "a") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        bar.update(1)

    try:
        await asyncio.gather(*[one(r) for r in todo])
    finally:
        bar.close()


def aggregate(out_dir: Path, datasets: list[tuple[str, str]], expected: dict[str, int]) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for name, _ in datasets:
        with open(out_dir / "trajectories" / f"{name}.jsonl") as f:
            lines = {r["id"]: r for r in map(json.loads, filter(str.strip, f))}
        if len(lines) != expected[name]:
            raise RuntimeError(f"{name}: {len(lines)} of {expected[name]} questions finished; rerun to resume")
        scores[name] = {m: sum(r[m] for r in lines.values()) / len(lines) for m in METRICS}
        scores[name]["n"] = len(lines)
        scores[name]["failures"] = breakdown([r["failure"] for r in lines.values() if "failure" in r])
    return scores


def write_table(out_dir: Path, label: str, scores: dict[str, dict[str, float]]) -> str:
    names = list(scores)
    header = ["method", "metric", *names, "avg"]
    rows = []
    for m in METRICS:
        vals = [scores[n][m] for n in names]
        rows.append([label, m.upper().replace("_", "-"), *[f"{v:.3f}" for v in vals], f"{sum(vals) / len(vals):.3f}"])
    with open(out_dir / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    md += "".join("| " + " | ".join(r) + " |\n" for r in rows)
    failures = {n: scores[n]["failures"] for n in names if scores[n].get("failures")}
    if failures:
        md += "\nWhy answers failed (share of questions; docs/evaluation.md):\n\n" + breakdown_table(failures)
    (out_dir / "table.md").write_text(md)
    return md


def paper_row(model: Optional[str], method: str, variant: str) -> Optional[dict[str, float]]:
    if model is None:
        return None
    name = PAPER_METHOD_NAMES[method].format(variant=variant)
    with files("search_r1_plugin.data").joinpath("paper_results.csv").open() as f:
        for row in csv.DictReader(f):
            if row["model"] == model and row["method"] == name:
                return {k: float(v) for k, v in row.items() if k not in ("table", "model", "method")}
    return None


def plot(out_dir: Path, label: str, scores: dict[str, dict[str, float]], paper: Optional[dict[str, float]]) -> Path:
    """``comparison.png``: EM per dataset and on average, against the paper's row when there is one."""
    names = list(scores)
    series = {label: [scores[n]["em"] for n in names] + [sum(scores[n]["em"] for n in names) / len(names)]}
    if paper:
        series["paper"] = [paper.get(n, float("nan")) for n in names] + [paper.get("avg", float("nan"))]
    return grouped_bars(out_dir / "comparison.png", [*names, "avg"], series)


async def evaluate(
    *,
    method: str,
    policy: Any,
    tokenizer: Any,
    datasets: list[tuple[str, str]],
    local_dir: Optional[Path],
    retriever_url: str,
    out_dir: Path,
    limit: Optional[int] = None,
    concurrency: int = 16,
    config: Any = None,
    label: str = "model",
    paper_model: Optional[str] = None,
    variant: str = "base",
    retrieval: Optional[RetrievalOptions] = None,
    manifest: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Evaluate ``method`` on ``datasets``; ``manifest`` adds to what :func:`.manifest.build_manifest` records
    (model, decoding). Without ``retrieval.replay`` the server must be up; with it, it is never asked
    unless a query is missing and ``replay_fallback`` names one."""
    from search_r1_plugin.config import response_budget
    from search_r1_plugin.evaluation.manifest import build_manifest
    from search_r1_plugin.retrieval_client import check_ready, client_from_config
    from search_r1_plugin.settings import SearchR1Config

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    options = retrieval or RetrievalOptions()
    if options.replay is None:
        check_ready(retriever_url)
    config = config or SearchR1Config(retriever_url=retriever_url)
    client = client_from_config(config)
    fallback_client = None
    if options.replay_fallback:
        fallback_client = client_from_config(dataclasses.replace(config, retriever_url=options.replay_fallback))
    fallback = fallback_client.search if fallback_client else None
    budget = response_budget(config.max_turns, config.max_turn_tokens, config.max_obs_length)  # as training computes it
    retrieve = options.retriever(client.search, fallback)
    ctx = MethodContext(policy=policy, tokenizer=tokenizer, retrieve=retrieve, config=config, response_length=budget)
    expected = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    questions = {}
    try:
        for name, split in datasets:
            rows = load_questions(name, split, local_dir, limit)
            expected[name] = len(rows)
            questions[name] = rows
            await run_dataset(method, name, rows, ctx, out_dir / "trajectories" / f"{name}.jsonl", concurrency)
    finally:
        await client.close()
        if fallback_client is not None:
            await fallback_client.close()
    scores = aggregate(out_dir, datasets, expected)
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2))
    info = build_manifest(
        method=method, datasets=datasets, questions=questions, limit=limit, config=config, retrieval=options, response_length=budget,
        retriever_url=None if options.replay else retriever_url, extra=manifest,
    )  # fmt: skip
    (out_dir / "manifest.json").write_text(json.dumps(info, indent=2))
    table = write_table(out_dir, f"{label} {method}", scores)
    figure = plot(out_dir, f"{label} {method}", scores, paper_row(paper_model, method, variant))
    page = write_eval_report(out_dir)
    return {"scores": scores, "table": table, "plot": figure, "manifest": info, "report": page}
