"""``search-r1``: every user-facing job of the plugin, one subcommand each.

    search-r1 train ppo qwen2.5-7b-base [no_mask] [key=value …]   verl's main_ppo with our config groups
    search-r1 presets                      the algorithms, models and variants train accepts
    search-r1 prepare-data …               FlashRAG QA sets → verl parquet (Search-R1 / R1 / RAG prompt)
    search-r1 demo [--scripted | --learn]  the CPU end-to-end run on the embedded sample; --learn: the
                                           paper's findings in miniature (docs/learning.md)
    search-r1 report RUN_DIR               an HTML page of a training run
    search-r1 dry-run [--algo grpo]        one step's data path on CPU, masks and advantages per span
    search-r1 sample-world --out DIR       the offline sample corpus and questions
    search-r1 eval / ask                   the paper's table for a model (with why answers failed and a
                                           manifest) / one traced question
    search-r1 robustness …                 EM as the retriever gets worse (noise levels × methods, a curve)
    search-r1 compare RUN …                eval runs side by side, warning when they are not comparable
    search-r1 doctor                       is the plugin wired into verl, does the retriever answer?

The retrieval server has its own command, ``search-r1-retriever``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from search_r1_plugin.errors import SearchR1Error
from search_r1_plugin.evaluation.methods import METHODS
from search_r1_plugin.qa_data import PAPER_TEST_SPLITS
from search_r1_plugin.settings import DEFAULT_RETRIEVER_URL, SearchR1Config

ALL_DATASETS = ",".join(PAPER_TEST_SPLITS)  # the paper's seven, in its column order


def _retrieval_options(args: argparse.Namespace, noise: float | None = None):
    from search_r1_plugin.evaluation.retrievers import RetrievalOptions

    return RetrievalOptions(
        record=args.record,
        replay=args.replay,
        replay_fallback=args.replay_fallback,
        noise=args.retrieval_noise if noise is None else noise,
        noise_corpus=args.noise_corpus,
        drop_top1=args.drop_top1,
        noise_seed=args.noise_seed,
    )


def _run_eval(args: argparse.Namespace, gen, method: str, out_dir: Path, retrieval) -> dict:
    from search_r1_plugin.evaluation.manifest import model_fingerprint
    from search_r1_plugin.evaluation.runner import evaluate

    datasets = [(d, args.split or PAPER_TEST_SPLITS.get(d, "test")) for d in args.datasets.split(",") if d]
    config = SearchR1Config(retriever_url=args.retriever_url, topk=args.topk, max_turns=args.max_turns)
    return asyncio.run(
        evaluate(
            method=method,
            policy=gen,
            tokenizer=gen.tokenizer,
            datasets=datasets,
            local_dir=Path(args.data_dir) if args.data_dir else None,
            retriever_url=args.retriever_url,
            out_dir=out_dir,
            limit=args.limit,
            concurrency=args.concurrency,
            config=config,
            label=Path(args.model).name,
            paper_model=args.paper_model,
            variant=args.variant,
            retrieval=retrieval,
            manifest={"model": model_fingerprint(args.model), "decoding": {"temperature": args.temperature, "backend": args.backend}},
        )
    )


def _eval(args: argparse.Namespace) -> int:
    from search_r1_plugin.evaluation.backends import load_policy

    gen = load_policy(args.model, args.backend, args.temperature)
    result = _run_eval(args, gen, args.method, Path(args.output_dir), _retrieval_options(args))
    print(result["table"])
    print(f"trajectories: {Path(args.output_dir) / 'trajectories'}  plot: {result['plot']}")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from search_r1_plugin.evaluation.backends import load_policy
    from search_r1_plugin.evaluation.html_report import write_eval_report
    from search_r1_plugin.evaluation.plots import noise_curves

    levels = [float(p) for p in args.noise_levels.split(",")]
    gen = load_policy(args.model, args.backend, args.temperature)
    curves: dict[str, list[float]] = {}
    for method in args.methods.split(","):
        for p in levels:
            out = Path(args.output_dir) / f"{method}_noise{p:g}"
            result = _run_eval(args, gen, method, out, _retrieval_options(args, noise=p))
            scores = result["scores"]
            curves.setdefault(method, []).append(sum(s["em"] for s in scores.values()) / len(scores))
            print(f"{method} noise {p:g}: EM {curves[method][-1]:.3f}", flush=True)
    path = noise_curves(Path(args.output_dir) / "robustness.png", levels, curves, title=Path(args.model).name)
    for method in curves:  # each level's page shows the whole curve
        for p in levels:
            level_dir = Path(args.output_dir) / f"{method}_noise{p:g}"
            shutil.copyfile(path, level_dir / "robustness.png")
            write_eval_report(level_dir)
    (Path(args.output_dir) / "robustness.json").write_text(json.dumps({"noise": levels, "em": curves}, indent=2))
    print(f"curve: {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from search_r1_plugin.evaluation.manifest import compare

    table, warnings = compare(args.runs, args.plot)
    print(table)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _ask(args: argparse.Namespace) -> int:
    from search_r1_plugin.evaluation.backends import load_policy
    from search_r1_plugin.evaluation.methods import MethodContext
    from search_r1_plugin.evaluation.trace import TracePrinter
    from search_r1_plugin.retrieval_client import check_ready, client_from_config

    check_ready(args.retriever_url)
    gen = load_policy(args.model, args.backend, args.temperature)
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


# subcommands whose module parses its own arguments: name -> (module, help)
DELEGATED = {
    "prepare-data": ("search_r1_plugin.data_prep", "FlashRAG QA sets -> verl parquet (Search-R1, R1 or RAG prompt)"),
    "dry-run": ("search_r1_plugin.dry_run", "one training step's data path on CPU: masks and advantages per span"),
    "sample-world": ("search_r1_plugin.sandbox.world", "write the offline sample corpus and questions"),
    "report": ("search_r1_plugin.report", "an HTML page of a training run: curves, health alarms, best step, trajectories"),
    "sft-data": ("search_r1_plugin.sft", "rejection sampling: a teacher's correct Search-R1 trajectories as verl SFT data (RL's masks)"),
}
DEMOS = {
    "training": "search_r1_plugin.demo.cpu_training",
    "scripted": "search_r1_plugin.demo.scripted_rollout",
    "learn": "search_r1_plugin.demo.learning",
}


def _train(args: argparse.Namespace, passthrough: list[str]) -> int:
    from search_r1_plugin.presets import main_ppo_command, split_preset_words

    algo, model, variants, overrides = split_preset_words(args.preset)
    overrides = [*overrides, *passthrough]
    command = main_ppo_command(algo, model, variants, overrides)
    print("python " + " ".join(command[1:]), flush=True)
    if args.print_command:
        return 0
    env = dict(os.environ)
    if "cpu" in variants:
        env.setdefault("VERL_PLATFORM", "cpu")  # the driver loads the CPU platform before verl's engines
    from search_r1_plugin.presets import compose

    try:  # only to see whether the guard may roll back; main_ppo itself reports a bad config
        cfg = compose(algo, model, variants, [o for o in overrides if not o.startswith("-")])
        rollback = cfg.search_r1.health.mode == "rollback"
    except Exception:  # noqa: BLE001
        rollback = False
    if not rollback:
        return subprocess.call(command, env=env)
    from search_r1_plugin.rollback import MARKER, run_supervised, without_resume_overrides

    def launch(extra: list[str]) -> tuple[int, list[str]]:
        again = main_ppo_command(algo, model, variants, [*without_resume_overrides(overrides), *extra]) if extra else command
        if extra:
            print("python " + " ".join(again[1:]), flush=True)
        proc = subprocess.Popen(again, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        markers = []  # a run's output is shown as it comes; only the guard's rollback line is kept
        for line in proc.stdout:
            sys.stdout.write(line)
            if MARKER in line:
                markers.append(line)
        return proc.wait(), markers

    return run_supervised(
        launch,
        checkpoint_dir=str(cfg.trainer.default_local_dir),
        lr=float(cfg.actor_rollout_ref.actor.optim.lr),
        max_rollbacks=int(cfg.search_r1.health.max_rollbacks),
    )


def _presets(args: argparse.Namespace) -> int:
    from search_r1_plugin.presets import GROUPS, choices, describe

    for group in GROUPS:
        print(f"{group}:")
        for name in choices(group):
            print(f"  {name:<24} {describe(group, name)}")
    print(
        "\nsearch-r1 train <algorithm> [<model>] [<variant> …] [key=value …]; one-value changes are overrides "
        "(search_r1.topk=5, search_r1.max_turns=2, actor_rollout_ref.rollout.n=3). Paper rows: recipes/README.md"
    )
    return 0


def _delegate(module: str):
    """A subcommand whose module parses its own arguments (``module.main(argv)``)."""

    def run(args: argparse.Namespace, rest: list[str]) -> int:
        return importlib.import_module(module).main(rest) or 0

    return run


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    kind = next((k for k in ("scripted", "learn") if f"--{k}" in rest), "training")
    return importlib.import_module(DEMOS[kind]).main([a for a in rest if a != f"--{kind}"]) or 0


def _doctor(args: argparse.Namespace) -> int:
    from search_r1_plugin.doctor import doctor

    return doctor(args.retriever_url or None)


def make_parser() -> argparse.ArgumentParser:
    """Every subcommand registers itself here: a parser and ``func`` (``func(args)``, or ``func(args, rest)``
    for those that pass the words they do not know on: ``train`` to main_ppo, the delegated modules and
    ``demo`` to their own parsers)."""
    parser = argparse.ArgumentParser(prog="search-r1", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False).set_defaults(func=_delegate(module), passthrough=True)
    sub.add_parser(
        "demo",
        help="train on the embedded sample on CPU with verl's main_ppo "
        "(--scripted: a scripted reader through verl's agent-loop worker, no training; "
        "--learn: every arm of the learning comparison, docs/learning.md)",
        add_help=False,
    ).set_defaults(func=_demo, passthrough=True)
    t = sub.add_parser("train", help="python -m verl.trainer.main_ppo with the search path and config groups filled in")
    t.add_argument("preset", nargs="+", help="algorithm, then model and variants by name, then key=value overrides")
    t.add_argument("--print-command", action="store_true", help="print the main_ppo command and stop")
    t.set_defaults(func=_train, passthrough=True)  # unknown words (e.g. --cfg job) go to main_ppo
    sub.add_parser("presets", help="list the algorithms, models and variants train accepts").set_defaults(func=_presets)
    d = sub.add_parser("doctor", help="check that verl loads the plugin and the retriever answers")
    d.add_argument("--retriever-url", default=DEFAULT_RETRIEVER_URL, help="'' to skip the retriever check")
    d.set_defaults(func=_doctor)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="HF model path or checkpoint directory")
        p.add_argument("--method", default="search_r1", choices=list(METHODS))
        p.add_argument("--retriever-url", default=DEFAULT_RETRIEVER_URL)
        p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, as the paper validates")
        p.add_argument("--topk", type=int, default=SearchR1Config.topk)

    def eval_args(p: argparse.ArgumentParser) -> None:
        model_args(p)
        p.add_argument("--datasets", default=ALL_DATASETS)
        p.add_argument("--split", default=None, help="default: the paper's split per dataset")
        p.add_argument("--data-dir", default=None, help="FlashRAG files {dir}/{dataset}/{split}.jsonl (default: hub)")
        p.add_argument("--limit", type=int, default=None, help="questions per dataset")
        p.add_argument("--concurrency", type=int, default=16)
        p.add_argument("--max-turns", type=int, default=SearchR1Config.max_turns)
        p.add_argument("--paper-model", default=None, help="paper row to compare with, e.g. qwen2.5-7b")
        p.add_argument("--variant", default="base", choices=["base", "instruct"])
        p.add_argument("--record", default=None, help="append every (query, top-k) -> results to this JSONL file")
        p.add_argument("--replay", default=None, help="answer searches from a --record file (the server is not needed)")
        p.add_argument("--replay-fallback", default=None, help="retriever URL for queries the replay file lacks")
        p.add_argument("--retrieval-noise", type=float, default=0.0, help="replace each passage by a random one with this probability")
        p.add_argument("--noise-corpus", default=None, help="corpus JSONL the random passages come from")
        p.add_argument("--drop-top1", action="store_true", help="drop the best passage of every search")
        p.add_argument("--noise-seed", type=int, default=0)

    e = sub.add_parser("eval", help="evaluate a model + method on the benchmarks (Table 2 layout, failure breakdown, manifest)")
    eval_args(e)
    e.add_argument("--output-dir", default="runs/eval")
    e.set_defaults(func=_eval)
    r = sub.add_parser("robustness", help="EM as the retriever gets worse: eval at several noise levels, one curve per method")
    eval_args(r)
    r.add_argument("--noise-levels", default="0,0.25,0.5,0.75")
    r.add_argument("--methods", default="search_r1,rag")
    r.add_argument("--output-dir", default="runs/robustness")
    r.set_defaults(func=_robustness)
    c = sub.add_parser("compare", help="eval runs side by side; warns, naming the fields, when they are not comparable")
    c.add_argument("runs", nargs="+", help="search-r1 eval output directories")
    c.add_argument("--plot", default=None, help="also write a grouped bar chart here (PNG)")
    c.set_defaults(func=_compare)

    a = sub.add_parser("ask", help="answer one question, showing the trace as it happens")
    a.add_argument("question")
    model_args(a)
    a.set_defaults(func=_ask)

    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    try:
        if argv and argv[0] in {*DELEGATED, "demo"}:  # everything after the name is theirs, --help included
            args, rest = parser.parse_args(argv[:1]), argv[1:]
        else:
            args, rest = parser.parse_known_args(argv)
        if getattr(args, "passthrough", False):
            sys.exit(args.func(args, rest) or 0)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        sys.exit(args.func(args) or 0)
    except SearchR1Error as exc:  # something the user can fix: one line; any other exception is a bug
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
