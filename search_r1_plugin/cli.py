"""``search-r1``: doctor (is the plugin wired into verl?), eval (the paper's table), ask (one traced question)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from search_r1_plugin.settings import DEFAULT_RETRIEVER_URL

ALL_DATASETS = "nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,bamboogle"


def _eval(args: argparse.Namespace) -> int:
    from search_r1_plugin.evaluation.backends import make_generator
    from search_r1_plugin.evaluation.runner import evaluate
    from search_r1_plugin.qa_data import PAPER_TEST_SPLITS
    from search_r1_plugin.settings import SearchR1Config

    datasets = [(d, args.split or PAPER_TEST_SPLITS.get(d, "test")) for d in args.datasets.split(",") if d]
    gen = make_generator(args.model, args.backend, args.temperature)
    config = SearchR1Config(retriever_url=args.retriever_url, topk=args.topk, max_turns=args.max_turns)
    result = asyncio.run(evaluate(
        method=args.method, generate=gen, tokenizer=gen.tokenizer, datasets=datasets,
        local_dir=Path(args.data_dir) if args.data_dir else None, retriever_url=args.retriever_url,
        out_dir=Path(args.output_dir), limit=args.limit, concurrency=args.concurrency, config=config,
        label=Path(args.model).name, paper_model=args.paper_model, variant=args.variant))
    print(result["table"])
    print(f"trajectories: {Path(args.output_dir) / 'trajectories'}  plot: {result['plot']}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from search_r1_plugin.evaluation.backends import make_generator
    from search_r1_plugin.evaluation.methods import METHODS, MethodContext
    from search_r1_plugin.evaluation.trace import TracePrinter
    from search_r1_plugin.retrieval_client import check_ready, client_from_config
    from search_r1_plugin.settings import SearchR1Config

    check_ready(args.retriever_url)
    gen = make_generator(args.model, args.backend, args.temperature)
    config = SearchR1Config(retriever_url=args.retriever_url, topk=args.topk)

    async def go():
        client = client_from_config(config)
        try:
            ctx = MethodContext(gen, gen.tokenizer, client.search, config, on_event=TracePrinter())
            return await METHODS[args.method](args.question, ctx)
        finally:
            await client.close()

    result = asyncio.run(go())
    print(f"answer: {result.answer}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="search-r1", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check that verl loads the plugin and the retriever answers")
    d.add_argument("--retriever-url", default=DEFAULT_RETRIEVER_URL, help="'' to skip the retriever check")

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="HF model path or checkpoint directory")
        p.add_argument("--method", default="search_r1",
                       choices=["direct", "cot", "rag", "ircot", "search_o1", "r1", "sft", "search_r1"])
        p.add_argument("--retriever-url", default=DEFAULT_RETRIEVER_URL)
        p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, as the paper validates")
        p.add_argument("--topk", type=int, default=3)

    e = sub.add_parser("eval", help="evaluate a model + method on the benchmarks (Table 2 layout)")
    model_args(e)
    e.add_argument("--datasets", default=ALL_DATASETS)
    e.add_argument("--split", default=None, help="default: the paper's split per dataset")
    e.add_argument("--data-dir", default=None, help="FlashRAG files {dir}/{dataset}/{split}.jsonl (default: hub)")
    e.add_argument("--limit", type=int, default=None, help="questions per dataset")
    e.add_argument("--output-dir", default="runs/eval")
    e.add_argument("--concurrency", type=int, default=16)
    e.add_argument("--max-turns", type=int, default=4)
    e.add_argument("--paper-model", default=None, help="paper row to compare with, e.g. qwen2.5-7b")
    e.add_argument("--variant", default="base", choices=["base", "instruct"])

    a = sub.add_parser("ask", help="answer one question, showing the trace as it happens")
    a.add_argument("question")
    model_args(a)

    args = parser.parse_args(argv)
    if args.command == "doctor":
        from search_r1_plugin.doctor import doctor

        sys.exit(doctor(args.retriever_url or None))
    try:
        sys.exit(_eval(args) if args.command == "eval" else _ask(args))
    except Exception as exc:  # user-facing errors in one line; the traceback helps nobody here
        from search_r1_plugin.qa_data import DataError
        from search_r1_plugin.retrieval_client import RetrievalError

        if isinstance(exc, (RetrievalError, DataError, ValueError, RuntimeError)):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
