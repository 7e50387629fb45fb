"""The README's main job: train Search-R1 with verl's own ``main_ppo`` on the embedded sample, on CPU.

    bash recipes/train_cpu.sh                 # fresh machine: makes .venv, installs, then runs this
    search-r1 demo [--algo ppo] [--steps 4] [--out runs/cpu_train]

Steps: sample world (fictional corpus + questions that need retrieval) → training/validation parquet
→ FAISS Flat index with the offline MiniLM encoder (the E5 code path with another checkpoint) →
retrieval server as a real process → a tiny Qwen2 (tokenizer trained here, a few seconds of
supervised warm start on protocol demonstrations so it searches and answers) →
``python -m verl.trainer.main_ppo +search_r1_algo=grpo search_r1_variant=[cpu]`` (verl's TaskRunner, FSDP2 actor and
reference — and critic with ``--algo ppo`` — rollout ``hf`` running our agent loop, our reward) →
per-step metrics on the console, ``main_ppo_metrics.jsonl`` (verl's file logger) and ``training_curve.png``.
The model is tiny and random-initialised: the run shows the machinery, not a learning curve worth
reading (``search-r1 demo --learn`` is the learning comparison); the same algorithm without the ``cpu``
variant trains Qwen2.5 on GPUs (README). ``--steps N`` trains N steps and validates after the last.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# metric key → column title in the per-step table
COLUMNS = {
    "critic/score/mean": "reward",
    "search_r1/em": "EM",
    "search_r1/f1": "F1",
    "search_r1/searches_per_trajectory": "searches",
    "search_r1/valid_action_rate": "valid",
    "search_r1/answered_rate": "answered",
    "search_r1/obs_truncations": "obs_trunc",
    "search_r1/masked_token_share": "masked",
    "search_r1/retrieval_latency_s": "retr_s",
    "actor/pg_loss": "pg_loss",
    "actor/kl_loss": "kl_loss",
    "critic/vf_loss": "vf_loss",
    "actor/grad_norm": "grad",
    "timing_s/step": "step_s",
}
_STEP_LINE = re.compile(r"\bstep:(\d+) - ")
_PAIR = re.compile(r"([\w/@.\-]+):(?:np\.\w+\()?(-?[\d.]+(?:e[-+]?\d+)?|nan|inf)\)?")


def parse_step_line(line: str) -> tuple[int, dict[str, float]] | None:
    """verl's console logger line ``step:N - key:value - …`` → (N, metrics)."""
    m = _STEP_LINE.search(line)
    if not m:
        return None
    return int(m.group(1)), {k: float(v) for k, v in _PAIR.findall(line[m.end() :])}


def format_row(step: int, metrics: dict[str, float], keys: list[str]) -> str:
    cells = [f"{step:>4}"] + [f"{metrics[k]:>9.4g}" if k in metrics else f"{'-':>9}" for k in keys]
    return " ".join(cells)


def plot_curves(rows: list[dict], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in r["data"] for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r["data"][key]) for r in rows if key in r["data"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="search-r1 demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=["grpo", "ppo"], default="grpo")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("runs/cpu_train"))
    p.add_argument("--people", type=int, default=60, help="size of the sample world")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before main_ppo is stopped")
    p.add_argument("overrides", nargs="*", help="extra main_ppo overrides, e.g. search_r1.topk=2")
    args = p.parse_args(argv)

    from search_r1_plugin.data_prep import prepare
    from search_r1_plugin.sandbox.stack import demo_start, world_retriever
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2, protocol_demonstrations, warm_start
    from search_r1_plugin.sandbox.trainer_run import run_main_ppo
    from search_r1_plugin.sandbox.world import write_world

    out, stage = demo_start(args.out)

    stage("sample world")
    world = write_world(out / "world", num_people=args.people)
    prepare(out / "data", "sample_nq:train,sample_hotpotqa:train", "sample_nq:test,sample_hotpotqa:test", "search_r1", out / "world", False)
    stage("tiny Qwen2 + warm start on protocol demonstrations")
    qa = []
    for key in ("sample_nq/train", "sample_hotpotqa/train"):
        qa += [(r["question"], r["golden_answers"][0]) for r in map(json.loads, open(world[key]))]
    model = build_tiny_qwen2(out / "model")
    losses = warm_start(model, protocol_demonstrations(qa), steps=200)
    stage(f"  warm-start loss {losses['first_loss']:.2f} → {losses['last_loss']:.2f}")

    keys = list(COLUMNS)
    header = f"{'step':>4} " + " ".join(f"{COLUMNS[k]:>9}" for k in keys)

    def on_line(line: str) -> None:
        parsed = parse_step_line(line)
        if parsed:
            print(format_row(parsed[0], parsed[1], keys), flush=True)
        elif "Traceback" in line or "Error" in line.split(":")[0]:
            print(line, end="", flush=True)

    stage("FAISS Flat index (MiniLM encoder) and the retrieval server (process) on 127.0.0.1")
    with world_retriever(world["corpus"], out) as served:
        url = served.base_url
        stage(
            f"{url} ready; python -m verl.trainer.main_ppo +search_r1_algo={args.algo} search_r1_variant=[cpu] "
            f"({args.steps} steps; log: {out / 'main_ppo.log'})"
        )
        print(header, flush=True)
        run = run_main_ppo(
            args.algo,
            out,
            model=str(model),
            train_files=str(out / "data" / "train.parquet"),
            val_files=str(out / "data" / "test.parquet"),
            retriever_url=f"{url}/retrieve",
            overrides=[
                "+reward.custom_reward_function.reward_kwargs.format_reward=true",
                # --steps N is N steps: verl stops at the end of total_epochs too, and one epoch of the
                # sample is shorter than N steps; every epoch has at least one step, so N epochs suffice.
                f"trainer.total_training_steps={args.steps}",
                f"trainer.total_epochs={args.steps}",
                f"trainer.test_freq={args.steps}",
                "trainer.save_freq=-1",
                f"trainer.rollout_data_dir={out / 'rollouts'}",
                *args.overrides,
            ],
            timeout_s=args.timeout,
            on_line=on_line,
            run_name="main_ppo",
        )
    stage("retrieval server stopped")
    if run.returncode != 0 or not run.metrics:
        print(run.tail(), file=sys.stderr)
        print(f"main_ppo failed (exit {run.returncode}); full log: {run.log_path}", file=sys.stderr)
        return 1
    last = run.metrics[-1]["data"]
    val = {k: v for k, v in last.items() if k.startswith("val-core/")}
    plot_curves(
        run.metrics,
        ["critic/score/mean", "search_r1/searches_per_trajectory", "search_r1/valid_action_rate", "actor/pg_loss", "actor/entropy"],
        out / "training_curve.png",
    )
    stage(f"done: {len(run.metrics)} steps in {run.seconds:.0f} s of main_ppo; validation {val}")
    print(
        f"metrics: {run.metrics_path}\nplot:    {out / 'training_curve.png'}\n"
        f"rollouts: {out / 'rollouts'} (verl's text dump; search_r1_tokens/ has ids, loss mask, reward per token)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
