"""FlashRAG-format QA files → verl parquet with the Search-R1 schema and prompt.

    search-r1 prepare-data --local-dir data/flashrag --out data/search_r1
    search-r1 prepare-data --hub --out data/search_r1                    # RUC-NLPIR/FlashRAG_datasets
    search-r1 prepare-data --local-dir data/sample --train sample_nq:train --test sample_nq:test \\
        --template r1 --out data/sample_r1

Inputs are ``{local-dir}/{dataset}/{split}.jsonl`` rows ``{"id", "question", "golden_answers"}``.
Defaults are the paper's: train = NQ + HotpotQA train; test = NQ, TriviaQA, PopQA (test), HotpotQA,
2WikiMultiHopQA, Musique (dev), Bamboogle (test). Output rows: ``data_source``, ``prompt`` (one user
message), ``ability``, ``reward_model {style: rule, ground_truth {target}}``, ``extra_info {split,
index, id, question}``, ``agent_name``. ``extra_info.index`` is unique across all merged sources
(the original restarted it per source, which merged unrelated GRPO groups). Rows without a question
or without answers are never dropped silently: they go to ``bad_rows.jsonl`` and the summary.
Templates: ``search_r1`` (default), ``r1`` (no search), ``rag`` (top-k passages from ``--retriever-url``
put in the prompt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from search_r1_plugin.protocol import TEMPLATES, format_docs, make_messages
from search_r1_plugin.qa_data import HUB_DATASET, PAPER_TEST_SPLITS, DataError, read_dataset
from search_r1_plugin.settings import SearchR1Config

PAPER_TRAIN = "nq:train,hotpotqa:train"
PAPER_TEST = ",".join(f"{name}:{split}" for name, split in PAPER_TEST_SPLITS.items())


def parse_specs(spec: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if ":" not in item:
            raise DataError(f"dataset spec {item!r} must be name:split, e.g. nq:train")
        name, split = item.split(":", 1)
        out.append((name, split))
    return out


def fetch_documents(url: str, questions: list[str], topk: int) -> list[str]:
    """Top-k passages per question, formatted as the agent loop formats them (the shared client
    coalesces the questions into server-sized batches and retries)."""
    from search_r1_plugin.retrieval_client import RetrievalClient, RetrievalError

    async def fetch() -> list[list[dict]]:
        client = RetrievalClient(url)
        try:
            return await asyncio.gather(*[client.search(q, topk) for q in questions])
        finally:
            await client.close()

    try:
        return [format_docs(docs) for docs in asyncio.run(fetch())]
    except RetrievalError as exc:
        raise DataError(f"rag template: {exc}") from exc


def row_problem(rec: object) -> tuple[str | None, str, list[str]]:
    """(problem or None, question, golden answers) of one FlashRAG record; never raises on bad input.

    A question must be a non-empty string; golden answers a string or a list of non-empty strings
    (a number is taken as its text, a null is a bad row, never the text "None").
    """
    if not isinstance(rec, dict):
        return "not an object", "", []
    if rec.get("__error__"):
        return str(rec["__error__"]), "", []
    question = rec.get("question")
    if not isinstance(question, str):
        return f"question is not a string: {question!r}", "", []
    if not question.strip():
        return "empty question", "", []
    answers = rec.get("golden_answers")
    if isinstance(answers, (str, int, float)) and not isinstance(answers, bool):
        answers = [answers]
    if not isinstance(answers, list) or not answers:
        return "no golden answers", "", []
    if any(a is None or isinstance(a, (bool, dict, list)) for a in answers):
        return f"golden answer that is not text: {answers!r}", "", []
    texts = [str(a).strip() for a in answers]
    if not all(texts):
        return f"empty golden answer: {answers!r}", "", []
    return None, question.strip(), texts


def build_rows(records: Iterable[dict], name: str, split: str, template: str, start_index: int, bad: list[dict]) -> list[dict]:
    rows = []
    for rec in records:
        problem, question, answers = row_problem(rec)
        if problem:
            bad.append({"data_source": name, "split": split, "problem": problem, "record": rec})
            continue
        rows.append(
            {
                "data_source": name,
                "prompt": make_messages(question, "search_r1" if template == "rag" else template),
                "ability": "fact-reasoning",
                "reward_model": {"style": "rule", "ground_truth": {"target": answers}},
                "extra_info": {"split": split, "index": start_index + len(rows), "id": str(rec.get("id", "")), "question": question},
                "agent_name": "search_r1",
            }
        )
    return rows


def prepare(
    out: Path,
    train: str,
    test: str,
    template: str,
    local_dir: Path | None,
    hub: bool,
    retriever_url: str | None = None,
    topk: int = SearchR1Config.topk,
) -> dict:
    if template == "rag" and not retriever_url:
        raise DataError("--template rag needs --retriever-url")
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    index = 0
    summary: dict = {"files": {}, "rows": Counter(), "bad": Counter()}
    bad: list[dict] = []
    for part, spec in (("train", train), ("test", test)):
        rows: list[dict] = []
        for name, split in parse_specs(spec):
            records = read_dataset(name, split, None if hub else local_dir)
            new = build_rows(tqdm(records, desc=f"{part}: {name}/{split}", unit="q"), name, split, template, index, bad)
            if template == "rag" and new:
                docs = fetch_documents(retriever_url, [r["extra_info"]["question"] for r in new], topk)
                for r, d in zip(new, docs):
                    r["prompt"] = make_messages(r["extra_info"]["question"], "rag", d)
            index += len(new)
            rows += new
            summary["rows"][f"{part} {name}/{split}"] = len(new)
        if rows:
            path = out / f"{part}.parquet"
            pd.DataFrame(rows).to_parquet(path, index=False)
            summary["files"][part] = str(path)
    for b in bad:
        summary["bad"][f"{b['data_source']}/{b['split']}: {b['problem']}"] += 1
    with open(out / "bad_rows.jsonl", "w") as f:
        for b in bad:
            f.write(json.dumps(b, ensure_ascii=False, default=str) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="search-r1 prepare-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--local-dir", type=Path)
    src.add_argument("--hub", action="store_true", help=f"load {HUB_DATASET} (needs network)")
    p.add_argument("--out", type=Path, default=Path("data/search_r1"))
    p.add_argument("--train", default=PAPER_TRAIN)
    p.add_argument("--test", default=PAPER_TEST)
    p.add_argument("--template", choices=list(TEMPLATES), default="search_r1")
    p.add_argument("--retriever-url", default=None, help="for --template rag")
    p.add_argument("--topk", type=int, default=SearchR1Config.topk)
    args = p.parse_args(argv)
    try:
        summary = prepare(args.out, args.train, args.test, args.template, args.local_dir, args.hub, args.retriever_url, args.topk)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print("| source | rows |\n|---|---|")
    for key, n in summary["rows"].items():
        print(f"| {key} | {n} |")
    if summary["bad"]:
        print(f"\n{sum(summary['bad'].values())} bad rows written to {args.out / 'bad_rows.jsonl'}:")
        for key, n in summary["bad"].items():
            print(f"  {key}: {n}")
    for part, path in summary["files"].items():
        print(f"{part}: {path}")


if __name__ == "__main__":
    main()
