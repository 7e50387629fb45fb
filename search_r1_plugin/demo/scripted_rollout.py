"""The Search-R1 rollout pipeline on the embedded sample, on CPU, offline, without training.

    search-r1 demo --scripted                 # scripted reader policy, ~1-2 minutes on 2 cores
    search-r1 demo --scripted --model PATH    # a real (HF) checkpoint, e.g. a trained Search-R1 model

Steps: generate the sample world (corpus + questions) → build a FAISS Flat index
with the offline MiniLM encoder (the E5 code path with another checkpoint) →
start the retrieval server as a real process → roll out every test question
through verl's own ``AgentLoopWorker`` + ``RewardLoopWorker`` running our
``search_r1`` agent loop (stop strings, parsing, retrieval over HTTP, masking,
EM reward) → print EM per dataset and write every trajectory as JSONL.

Without ``--model`` the policy is the sandbox's scripted reader
(:mod:`search_r1_plugin.sandbox.reader`); with it, the evaluation's HF backend. Either is served
to verl's worker by :class:`search_r1_plugin.policy.PolicyServer`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def load_rows(world: dict, limit: int | None) -> list[dict]:
    from search_r1_plugin.protocol import make_messages

    rows = []
    for name in ("sample_nq", "sample_hotpotqa"):
        with open(world[f"{name}/test"]) as f:
            items = [json.loads(line) for line in f][:limit]
        for r in items:
            rows.append(
                {
                    "prompt": make_messages(r["question"]),
                    "data_source": name,
                    "reward_model": {"style": "rule", "ground_truth": {"target": r["golden_answers"]}},
                    "extra_info": {"index": len(rows), "split": "test", "question": r["question"]},
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="search-r1 demo --scripted", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="HF checkpoint to evaluate (default: scripted reader policy)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--limit", type=int, default=None, help="questions per dataset")
    parser.add_argument("--encoder", default=None, help="dense encoder (default: the offline MiniLM package)")
    args = parser.parse_args(argv)

    from search_r1_plugin.sandbox.stack import offline, world_retriever
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2
    from search_r1_plugin.sandbox.world import write_world

    offline()
    t0 = time.time()
    out = Path(args.out)
    print(f"[1/4] sample world -> {out / 'world'}")
    world = write_world(out / "world")
    model_dir = args.model
    if model_dir is None:
        # The reader policy needs only a tokenizer; verl's worker also loads a model config from the path.
        model_dir = str(build_tiny_qwen2(out / "tiny_model"))
    print("[2/4] building the FAISS index; [3/4] starting the retrieval server")
    with world_retriever(world["corpus"], out, encoder=args.encoder) as served:
        url = served.base_url
        print(f"      {served.index}\n      {url} ready; [4/4] rolling out through verl's AgentLoopWorker")
        table, n = rollout(model_dir, url, load_rows(world, args.limit), args.model, out)
    from search_r1_plugin.evaluation.runner import plot, write_table

    label = Path(args.model).name if args.model else "reader policy"
    print("\n" + write_table(out, f"{label} search_r1", table))
    print("searches per question: " + ", ".join(f"{k} {v['searches']:.2f}" for k, v in table.items()))
    figure = plot(out, f"{label} search_r1", table, None)
    print(
        f"{n} trajectories in {out / 'trajectories.jsonl'}; table in {out / 'table.md'}; plot {figure}; "
        f"finished in {time.time() - t0:.0f} s"
    )


def rollout(model_dir: str, url: str, rows: list[dict], model: str | None, out: Path):
    from transformers import AutoTokenizer

    from search_r1_plugin.evaluation.backends import HFPolicy
    from search_r1_plugin.policy import PolicyServer
    from search_r1_plugin.presets import compose
    from search_r1_plugin.sandbox.reader import reader_policy
    from search_r1_plugin.sandbox.verl_harness import run_agent_loop_batch

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = compose(
        "ppo",
        overrides=[
            f"actor_rollout_ref.model.path={model_dir}",
            f"search_r1.retriever_url={url}/retrieve",
            "data.max_prompt_length=512",
            "data.max_response_length=2048",
            "search_r1.max_turn_tokens=200",
        ],
    )
    policy = HFPolicy(model) if model else reader_policy(tokenizer)
    batch = run_agent_loop_batch(config, PolicyServer(policy), rows, validate=True)
    resp_len = batch.batch["responses"].shape[1]
    lengths = batch.batch["attention_mask"][:, -resp_len:].sum(-1).tolist()
    table: dict[str, dict[str, float]] = {}
    with open(out / "trajectories.jsonl", "w") as f:
        for i, row in enumerate(rows):
            text = tokenizer.decode(batch.batch["responses"][i, : lengths[i]], skip_special_tokens=True)
            metrics = {k: float(batch.non_tensor_batch[k][i]) for k in ("em", "f1", "sub_em")}
            metrics["searches"] = float(batch.non_tensor_batch["num_searches"][i])
            f.write(
                json.dumps(
                    {
                        "data_source": row["data_source"],
                        "question": row["extra_info"]["question"],
                        "golden_answers": list(row["reward_model"]["ground_truth"]["target"]),
                        **metrics,
                        "response": text,
                    }
                )
                + "\n"
            )
            totals = table.setdefault(row["data_source"], {"n": 0})
            totals["n"] += 1
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v
    return {name: {k: (v / t["n"] if k != "n" else v) for k, v in t.items()} for name, t in table.items()}, len(rows)


if __name__ == "__main__":
    main()
