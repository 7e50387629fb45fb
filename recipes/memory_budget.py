"""GPU memory a Search-R1 run needs, per model, from the model's config: does it fit 24, 40 or 80 GB cards?

    python recipes/memory_budget.py                          # every preset model, 1 and 8 GPUs, 24/40/80 GB
    python recipes/memory_budget.py --model /models/qwen2.5-7b --gpus 1 --lora-rank 64
    python recipes/memory_budget.py --model qwen2.5-7b-base --prompt 512 --response 4500

An estimate from first principles, not a measurement (no GPU ran it): it counts what verl 0.9.1 keeps on
a GPU while it trains with our presets — FSDP training state, the rollout engine's weights and KV cache
(vLLM, ``gpu_memory_utilization``) and checkpointed activations — so a user can pick a card, a GPU count,
offloading or LoRA before renting them. The parts, per GPU:

* **training state** (actor; and critic for PPO): fp32 parameters, gradients and Adam's two moments,
  16 bytes a parameter, sharded over the GPUs by FSDP; with ``param_offload``/``optimizer_offload`` (our
  presets' default) they live in host memory and only one layer's bf16 weights are on the GPU at a time.
  LoRA trains the adapters only (16 bytes an adapter parameter) on bf16 frozen weights (2 bytes each);
* **reference policy** (KL): bf16 weights, offloaded in our presets; with LoRA verl uses the base model
  without adapters, so it costs nothing;
* **activations** of one micro-batch with gradient checkpointing: each layer's input kept
  (``hidden × 2`` bytes a token a layer) plus one layer recomputed in full (about ``34 × hidden`` bytes a
  token, plus the logits in fp32 over the vocabulary) — the worst case, every sequence of the
  micro-batch at full length; verl's ``use_remove_padding`` counts real tokens only, so runs whose
  responses are shorter need less (``--micro-batch`` or verl's ``ppo_max_token_len_per_gpu`` to fit);
* **rollout**: vLLM holds bf16 weights (divided by tensor parallelism) and fills the rest of
  ``gpu_memory_utilization × card`` with KV cache, ``2 × layers × kv_heads × head_dim × 2`` bytes a token;
  it refuses to start unless one ``max_model_len`` sequence fits. Training and rollout share the GPU in
  turns (verl's hybrid engine frees the KV cache while training): the card must hold the larger of the two.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3

# Architectures of the models our presets name (their config.json on the hub), so the script runs with
# no download; any other model: --model DIR (a folder with config.json).
KNOWN_MODELS = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "qwen2.5-14b": dict(hidden_size=5120, num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                        intermediate_size=13824, vocab_size=152064, tie_word_embeddings=False),
    "qwen3-4b": dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     intermediate_size=9728, vocab_size=151936, tie_word_embeddings=True, qkv_bias=False),
    "qwen3-8b": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False, qkv_bias=False),
}  # fmt: skip


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int = 0
    qkv_bias: bool = True  # Qwen2 has q/k/v biases; Qwen3 has none but q/k norms

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_config(cls, cfg: dict) -> "Architecture":
        qwen3 = cfg.get("model_type") == "qwen3"
        return cls(
            hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            intermediate_size=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"],
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim") or 0,
            qkv_bias=cfg.get("attention_bias", not qwen3),
        )

    def parameters(self) -> int:
        """Exact parameter count of a Qwen2/Qwen3 decoder (checked against transformers in the tests)."""
        h, q, kv = self.hidden_size, self.num_attention_heads * self.hd, self.num_key_value_heads * self.hd
        attention = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 2 * self.hd)
        layer = attention + 3 * h * self.intermediate_size + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * layer + h

    def lora_parameters(self, rank: int) -> int:
        """Adapters on every linear layer of every block (verl's ``target_modules: all-linear``)."""
        h, q, kv, f = self.hidden_size, self.num_attention_heads * self.hd, self.num_key_value_heads * self.hd, self.intermediate_size
        shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, f), (h, f), (f, h)]
        return self.num_hidden_layers * sum(rank * (a + b) for a, b in shapes)

    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.hd * 2


@dataclass(frozen=True)
class Run:
    prompt: int = 512
    response: int = 4500
    gpus: int = 8
    algo: str = "ppo"  # ppo adds a critic of the same size
    lora_rank: int = 0
    offload: bool = True  # our presets' param_offload / optimizer_offload
    micro_batch: int = 8  # sequences per GPU in one forward/backward (presets: 64 over 8 GPUs)
    tensor_parallel: int = 1
    gpu_memory_utilization: float = 0.6


def budget(arch: Architecture, run: Run, card_gib: float) -> dict[str, float]:
    """GiB per GPU for each part (module docstring) on a card of ``card_gib``."""
    p = arch.parameters()
    seq = run.prompt + run.response + 1
    models = 2 if run.algo == "ppo" else 1
    if run.lora_rank:
        state = 2 * p / run.gpus + 16 * arch.lora_parameters(run.lora_rank) / run.gpus
        state *= models
    elif run.offload:
        layer = 2 * p / arch.num_hidden_layers
        state = models * layer  # one gathered bf16 layer at a time; the rest in host memory
    else:
        state = models * 16 * p / run.gpus
    # host memory of one node (all its GPUs' shards): offloaded training state and reference weights
    host = (models * 16 * p if run.offload and not run.lora_rank else 0) + (2 * p if not run.lora_rank else 0)
    tokens = run.micro_batch * seq
    activations = tokens * arch.hidden_size * 2 * arch.num_hidden_layers + tokens * 34 * arch.hidden_size + tokens * arch.vocab_size * 4
    train = state + activations
    weights = 2 * p / run.tensor_parallel
    rollout_pool = run.gpu_memory_utilization * card_gib * GIB - weights
    return {
        "parameters_b": p / 1e9,
        "training_state_gib": state / GIB,
        "activations_gib": activations / GIB,
        "training_gib": train / GIB,
        "rollout_weights_gib": weights / GIB,
        "kv_per_sequence_gib": arch.kv_bytes_per_token() * seq / run.tensor_parallel / GIB,
        "kv_pool_gib": rollout_pool / GIB,
        "host_gib": host / GIB,
    }


def verdict(arch: Architecture, run: Run, card_gib: int) -> str:
    """One cell of the table: fits or not, and why (training and rollout take turns on the card)."""
    b = budget(arch, run, card_gib)
    if b["training_gib"] > card_gib * 0.9:
        return f"no: training needs {b['training_gib']:.0f} GiB"
    if b["kv_pool_gib"] < b["kv_per_sequence_gib"]:
        return f"no: {b['rollout_weights_gib']:.0f} GiB vLLM weights, no room for KV"
    concurrent = int(b["kv_pool_gib"] / b["kv_per_sequence_gib"])
    return f"yes: train {b['training_gib']:.0f} GiB, {concurrent} seqs in KV, host {b['host_gib']:.0f} GiB"


def load_architecture(model: str) -> tuple[str, Architecture]:
    path = Path(model)
    if (path / "config.json").is_file():
        return path.name, Architecture.from_config(json.loads((path / "config.json").read_text()))
    key = model.lower().split("/")[-1]
    for name, cfg in KNOWN_MODELS.items():
        if key == name or key.startswith(name + "-"):
            return name, Architecture(**cfg)
    raise SystemExit(f"unknown model {model!r}: give a folder with config.json, or one of {', '.join(KNOWN_MODELS)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="preset name (qwen2.5-7b-base) or folder with config.json; repeatable")
    ap.add_argument("--gpus", type=int, action="append", help="GPUs (FSDP world size); repeatable (default 1 and 8)")
    ap.add_argument("--cards", default="24,40,80", help="card sizes in GB")
    ap.add_argument("--algo", default="ppo", choices=["ppo", "grpo"])
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--no-offload", action="store_true", help="keep parameters and optimizer state on the GPU")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--response", type=int, default=4500)
    ap.add_argument("--micro-batch", type=int, default=8)
    args = ap.parse_args(argv)
    cards = [int(c) for c in args.cards.split(",")]
    print(f"{'model':<13} {'params':>7} {'GPUs':>4} " + " | ".join(f"{c} GB card".ljust(46) for c in cards))
    for model in args.model or list(KNOWN_MODELS):
        name, arch = load_architecture(model)
        for gpus in args.gpus or [1, 8]:
            run = Run(args.prompt, args.response, gpus, args.algo, args.lora_rank, not args.no_offload, args.micro_batch)
            cells = [verdict(arch, run, c).ljust(46) for c in cards]
            print(f"{name:<13} {arch.parameters() / 1e9:>6.2f}B {gpus:>4} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
