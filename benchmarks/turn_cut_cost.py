"""Generated-token cost of ``search_r1.turn_cut``: ``original`` (stop on ``</search>`` only) vs ``earliest``.

Both modes roll out the same questions with the same model, sampling seeds and retriever, through
the real :func:`search_r1_plugin.rollout.run_trajectory` and the rollout ``hf`` engine
(:class:`search_r1_plugin.cpu.hf_generation.HFGenerator`); a trajectory's cost is every token the
engine generated, kept or cut. With ``original`` a turn that answers keeps generating after
``</answer>`` until EOS or the turn cap, as the original did.

    python benchmarks/turn_cut_cost.py                       # tiny Qwen2 warm-started on the sample world
    python benchmarks/turn_cut_cost.py --model PATH          # a real checkpoint (GPU if available)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF checkpoint (default: a warm-started tiny Qwen2)")
    p.add_argument("--questions", type=int, default=80)
    p.add_argument("--samples", type=int, default=4, help="rollouts per question (seeds)")
    p.add_argument("--temperature", type=float, default=1.0)
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retrieval_server.build.builder import build_bm25_index
    from retrieval_server.data.corpus import Corpus
    from retrieval_server.search.index import BM25Retriever
    from search_r1_plugin.cpu.hf_generation import HFGenerator, SamplingRequest
    from search_r1_plugin.protocol import make_messages
    from search_r1_plugin.rollout import run_trajectory
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2, protocol_demonstrations, warm_start
    from search_r1_plugin.sandbox.world import write_world
    from search_r1_plugin.settings import SearchR1Config

    work = Path(tempfile.mkdtemp(prefix="turn_cut_"))
    world = write_world(work / "world", num_people=60)
    model_dir = args.model
    if model_dir is None:
        qa = [
            (r["question"], r["golden_answers"][0])
            for key in ("sample_nq/train", "sample_hotpotqa/train")
            for r in map(json.loads, open(world[key]))
        ]
        model_dir = str(build_tiny_qwen2(work / "model"))
        warm_start(model_dir, protocol_demonstrations(qa), steps=200)
    tok = AutoTokenizer.from_pretrained(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = (
        AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32 if device == "cpu" else torch.bfloat16, attn_implementation="sdpa"
        )
        .to(device)
        .eval()
    )
    engine = HFGenerator(model, tok, [tok.eos_token_id], max_model_len=4096)
    bm25 = BM25Retriever(build_bm25_index(world["corpus"], work / "bm25").index_path)
    corpus = Corpus(world["corpus"])
    questions = [r["question"] for key in ("sample_nq/test", "sample_hotpotqa/test") for r in map(json.loads, open(world[key]))][
        : args.questions
    ]

    async def retrieve(query: str, k: int):
        scores, hits = bm25.search([query], k)
        return [{"document": corpus.hit(h), "score": float(s)} for s, h in zip(scores[0], hits[0]) if h >= 0]

    def rollout(mode: str) -> dict:
        cfg = SearchR1Config(turn_cut=mode, max_turns=2, max_turn_tokens=64, max_obs_length=128)
        generated = kept = answered = 0
        t0 = time.perf_counter()
        for qi, q in enumerate(questions):
            prompt = tok.apply_chat_template(make_messages(q), add_generation_prompt=True, tokenize=True, return_dict=False)
            for s in range(args.samples):
                seed = iter(range(10 * (qi * args.samples + s), 10 * (qi * args.samples + s + 1)))

                async def generate(context, max_tokens, stop):
                    nonlocal generated
                    req = SamplingRequest.from_params(
                        context,
                        {"max_tokens": max_tokens, "temperature": args.temperature, "stop": list(stop), "seed": next(seed)},
                        max_tokens,
                    )
                    out = engine.generate([req])[0]
                    generated += len(out.token_ids)
                    return out.token_ids, out.log_probs

                traj = asyncio.run(run_trajectory(list(prompt), generate, retrieve, tok, cfg, 800))
                kept += sum(traj.is_model)
                answered += traj.answered
        n = len(questions) * args.samples
        return {"generated": generated / n, "kept": kept / n, "answered": answered / n, "seconds": time.perf_counter() - t0}

    results = {mode: rollout(mode) for mode in ("original", "earliest")}
    print(f"model {model_dir}; {len(questions)} questions x {args.samples} samples, temperature {args.temperature}")
    print("| turn_cut | generated tokens / trajectory | kept model tokens / trajectory | answered | seconds |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['generated']:.1f} | {r['kept']:.1f} | {r['answered']:.2f} | {r['seconds']:.1f} |")
    o, e = results["original"], results["earliest"]
    print(f"original / earliest generated tokens: {o['generated'] / e['generated']:.3f}x")


if __name__ == "__main__":
    main()
