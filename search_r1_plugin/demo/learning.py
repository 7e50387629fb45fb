"""``search-r1 demo --learn``: the paper's findings in miniature, trained by verl's own ``main_ppo`` on CPU.

    search-r1 demo --learn                         # one seed of every arm (≈ the time in docs/learning.md)
    search-r1 demo --learn --seeds 0,1,2           # the 3-seed table (a benchmark: run it in the background)
    search-r1 demo --learn --arms grpo --steps 20  # one arm
    search-r1 demo --learn --from-runs A B --out C  # one table from arms run apart (--out A, --out B)

Steps: the learning world (:mod:`search_r1_plugin.sandbox.learning_world`: fictional people, cities
and countries, one-hop and two-hop questions, test questions about people no training question
names) → FAISS Flat index (offline MiniLM) → our retrieval server as a process → a tiny Qwen2 whose
tokenizer keeps each name one token → a warm start on demonstrations that answer with a **random**
name from the retrieved passages, recombined so that they tell no fact of the world
(:mod:`search_r1_plugin.sandbox.format_demos`: the format and copying, at chance accuracy) → every
arm with ``python -m verl.trainer.main_ppo`` and our presets
(``search_r1_variant=[cpu,learn]``), validation EM on the held-out questions every ``--val-every``
steps, the warm start's EM as step 0:

=================  ============================================================================
arm                what runs
=================  ============================================================================
grpo               Search-R1, GRPO (``+search_r1_algo=grpo``)
ppo                Search-R1, PPO with a critic (``+search_r1_algo=ppo``), as many trajectories a step
grpo_no_mask       Search-R1, GRPO, retrieved tokens in the loss (``search_r1_variant=[…,no_mask]``)
r1                 R1: RL without search (``search_r1_variant=[…,r1]``, R1 prompt)
rag                RAG: passages retrieved for the question in the prompt, no RL (validation only)
=================  ============================================================================

Output in ``--out``: ``learning.md`` (the Table-2-style table, per-arm start and end EM, searches per
question and valid-action rate, wall times, the commands), ``learning_curves.png`` (validation EM,
training reward, searches per question, response length), and per arm and seed the run directory with
verl's metrics file, console log and rollout dumps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from search_r1_plugin.demo.exposure import split_em, write_exposure


@dataclass(frozen=True)
class Arm:
    name: str
    title: str
    algo: str
    variants: tuple[str, ...]
    data: str  # prompt template of its parquet files
    overrides: tuple[str, ...] = ()
    train: bool = True
    # wall time of one run relative to GRPO's, measured on 2 cores (40 steps): --jobs starts the longest first
    cost: float = 1.0


ARMS = {
    "grpo": Arm("grpo", "Search-R1 (GRPO)", "grpo", ("cpu", "learn"), "search_r1"),
    "ppo": Arm(
        "ppo",
        "Search-R1 (PPO)",
        "ppo",
        ("cpu", "learn"),
        "search_r1",
        # GRPO samples n per prompt; PPO samples one per prompt from n times as many prompts (and has no
        # groups to filter)
        (
            "actor_rollout_ref.rollout.n=1",
            "data.train_batch_size=128",
            "actor_rollout_ref.actor.ppo_mini_batch_size=128",
            "critic.ppo_mini_batch_size=128",
            "algorithm.filter_groups.enable=false",
            # the critic's value head starts random: its first advantages are noise over every token, and
            # one actor step on them broke the format (valid actions 0.99 -> 0.04 at step 3, seed 0); steps
            # 1-3 train the critic alone (verl updates the actor from step critic_warmup on)
            "trainer.critic_warmup=4",
        ),
        cost=1.2,
    ),
    "grpo_no_mask": Arm("grpo_no_mask", "Search-R1 (GRPO, no mask)", "grpo", ("cpu", "learn", "no_mask"), "search_r1"),
    "r1": Arm("r1", "R1 (GRPO, no search)", "grpo", ("cpu", "learn", "r1"), "r1", cost=0.45),
    "rag": Arm("rag", "RAG (no RL)", "grpo", ("cpu", "learn", "r1"), "rag", ("trainer.val_only=true",), train=False, cost=0.1),
}
DATASETS = ("learn_nq", "learn_hotpotqa")
# What the arms train on. Two-hop questions are validated, not trained on: at the warm start almost none
# is answered right (a second search for the right city, then the right country: ~1 % of samples), so in a
# mixed batch half of the groups carry no signal, and held-out EM did not move in 40 steps (run K of
# docs/learning.md); on one-hop questions alone it did (runs M, M2).
TRAIN_DATASETS = ("learn_nq",)
# Validated too, reported apart from the held-out table: the one-hop questions about the people trained on.
# A policy that remembers answers rises here only; one that reads rises on the held-out people as well.
SEEN = "learn_nq_seen"
# People in the demo's world (48 of them held out). 600, not the world's 200: with 552 training people a
# training person comes back about once in 40 steps of 16 questions, so remembering who was born where pays
# nothing and reading is the only way to the reward. On 200 people, GRPO's slow seeds rose on the people they
# trained on and hardly on held-out ones (docs/learning.md, "What decides a seed").
PEOPLE = 600
# No grouped KV: copying a name moves its embedding through the value projection, and with 2 KV heads of
# 16 only 32 of the 64 dimensions pass (chosen on that reasoning; not measured against 2 heads).
MODEL_SIZE = {"hidden_size": 64, "num_layers": 2, "num_key_value_heads": 4}
WARM_START_STEPS = 800  # second phase: the format demonstrations (and the drills)
WARM_START_LR = 3e-3
# Share of demonstrations that search a second time (for a random name read). At 0.5 the greedy policy
# searched twice for 90 % of held-out one-hop questions (measured): its validation EM was an artefact of
# that tie, not of which name it reads. Below one half, one search is the warm start's mode.
SECOND_SEARCH = 0.3
# What the format demonstrations show of the passages their searches return. "recombined": every passage
# recombined (no fact of the world). "trained-on-real": passages about the people the training questions name
# as they are (RL trains on their questions anyway), every other one recombined.
DEMO_PASSAGES = ("recombined", "trained-on-real")
DRILL_STEPS = 800  # first phase: short copy drills (format_demos.copy_drills)
DRILL_ROUNDS = 10  # every passage shown this many times in the drills
EXPOSURE = "exposure.json"  # held-out people, and those whose birth record training searches return
NAME_WEIGHT = 5.0  # loss weight of name tokens in the warm start (a few tokens among many)


@dataclass
class ArmResult:
    arm: str
    seed: int
    seconds: float
    returncode: int
    run_dir: Path
    val: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> {dataset/metric: value}
    train: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> verl's step metrics

    def em(self, step: int) -> float:
        return statistics.mean(self.val[step][f"{d}/em"] for d in DATASETS)


def validation_metrics(data: dict[str, float]) -> dict[str, float]:
    """verl's validation keys (``val-aux/<dataset>/<key…>/mean@1``) → ``<dataset>/<key…>``."""
    out = {}
    for key, value in data.items():
        parts = key.split("/")
        if len(parts) >= 4 and parts[0] in ("val-core", "val-aux") and parts[-1] == "mean@1":
            out["/".join(parts[1:-1])] = value
    return out


def run_arm(arm: Arm, seed: int, model: Path, data: dict, retriever: str, run_dir: Path, args, log) -> ArmResult:
    """One arm through ``python -m verl.trainer.main_ppo``; progress printed per step and validation."""
    from search_r1_plugin.demo.cpu_training import parse_step_line
    from search_r1_plugin.sandbox.trainer_run import run_main_ppo

    steps = args.steps if arm.train else 1
    overrides = [
        f"trainer.total_training_steps={steps}",
        f"trainer.total_epochs={steps}",
        f"trainer.test_freq={args.val_every}",
        "trainer.val_before_train=true",
        "trainer.save_freq=-1",
        f"trainer.rollout_data_dir={run_dir / 'rollouts'}",
        f"trainer.validation_data_dir={run_dir / 'validation'}",
        f"data.seed={seed}",
        *arm.overrides,
        *args.overrides,
    ]
    label = f"{arm.name} seed {seed}"

    def on_line(line: str) -> None:
        parsed = parse_step_line(line)
        if parsed:
            step, m = parsed
            val = validation_metrics(m)
            em = statistics.mean(val[f"{d}/em"] for d in DATASETS) if all(f"{d}/em" in val for d in DATASETS) else None
            log(
                f"{label}: step {step}/{steps}  reward {m.get('critic/score/mean', float('nan')):.3f}  "
                f"EM {m.get('search_r1/em', float('nan')):.3f}  searches {m.get('search_r1/searches_per_trajectory', float('nan')):.2f}  "
                f"answers read {m.get('search_r1/answer_read', float('nan')):.2f}"
                + (f"  | validation EM {em:.3f}" if em is not None else "")
            )
        elif "Initial validation metrics" in line:
            log(f"{label}: step 0 validation done (the warm start)")
        elif "Traceback" in line or "Error" in line.split(":")[0]:
            print(line, end="", flush=True)

    log(f"{label}: python -m verl.trainer.main_ppo +search_r1_algo={arm.algo} search_r1_variant=[{','.join(arm.variants)}] ({steps} steps)")
    run = run_main_ppo(
        arm.algo,
        run_dir,
        model=str(model),
        train_files=data[arm.data]["train"],
        val_files=data[arm.data]["test"],
        variants=arm.variants,
        retriever_url=retriever,
        overrides=overrides,
        timeout_s=args.timeout,
        on_line=on_line,
        run_name="main_ppo",
    )
    result = arm_result(arm.name, seed, run.seconds, run.returncode, run_dir, run.metrics_path)
    if run.returncode != 0:
        log(f"{label}: main_ppo failed (exit {run.returncode}); log: {run.log_path}\n{run.tail(3000)}")
    else:
        log(f"{label}: done in {run.seconds:.0f} s")
    return result


def run_concurrently(runs: list[tuple[Arm, int]], jobs: int, run) -> list[ArmResult]:
    """Every (arm, seed) run, ``jobs`` at a time, longest first; results in the order of ``runs``.

    Why at once: on CPU a ``main_ppo`` run keeps about one core busy (measured: its training worker at
    90-100 % of one core in ``top``; a GRPO step of 128 trajectories took 21 s alone and 24-31 s beside a
    second run), so on 2 cores two runs side by side finish sooner than one after the other. Each run is its own ``main_ppo``
    process with its own Ray instance; they share only the retrieval server."""
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(range(len(runs)), key=lambda i: -runs[i][0].cost)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {i: pool.submit(run, *runs[i]) for i in order}
        return [futures[i].result() for i in range(len(runs))]


def arm_result(arm: str, seed: int, seconds: float, returncode: int, run_dir: Path, metrics_path: Path) -> ArmResult:
    """An arm's run read back from verl's metrics file: validations by step, and every step's metrics."""
    from search_r1_plugin.sandbox.trainer_run import read_metrics

    result = ArmResult(arm, seed, seconds, returncode, run_dir)
    for row in read_metrics(metrics_path):
        val = validation_metrics(row["data"])
        if val:
            result.val[row["step"]] = val
        if any(not k.startswith("val-") for k in row["data"]):
            result.train[row["step"]] = row["data"]
    return result


def results_from_runs(dirs: list[Path]) -> list[ArmResult]:
    """The arms of earlier ``search-r1 demo --learn --out DIR`` runs (each DIR's ``learning.json`` and its
    ``seed<k>/<arm>/`` metrics), so arms and seeds run apart — in the background, on other machines — make one
    table and one set of curves."""
    results = []
    for d in dirs:
        listing = Path(d) / "learning.json"
        if not listing.exists():
            raise SystemExit(f"{d}: no learning.json (not the --out of a finished search-r1 demo --learn)")
        for e in json.loads(listing.read_text()):
            run_dir = Path(d) / f"seed{e['seed']}" / e["arm"]
            results.append(arm_result(e["arm"], e["seed"], e["seconds"], e["returncode"], run_dir, run_dir / "main_ppo_metrics.jsonl"))
    return results


def prepare_data(world: dict, out: Path, retriever_url: str, train_datasets: tuple[str, ...] = TRAIN_DATASETS) -> dict[str, dict[str, str]]:
    """verl parquet files for every prompt template the arms use: ``{template: {train, test}}``; training
    questions from ``train_datasets``, test questions from every dataset."""
    from search_r1_plugin.data_prep import prepare

    specs = ",".join(f"{d}:train" for d in train_datasets), ",".join(f"{d}:test" for d in (*DATASETS, SEEN))
    files = {}
    for template in ("search_r1", "r1", "rag"):
        prepare(out / template, *specs, template, world["corpus"].parent, False, retriever_url=retriever_url)
        files[template] = {"train": str(out / template / "train.parquet"), "test": str(out / template / "test.parquet")}
    return files


def warm_started_model(
    world: dict, out: Path, retriever_url: str, seed: int, steps: int, drill_steps: int, log, demo_passages: str = "recombined"
) -> tuple[Path, dict]:
    """The tiny Qwen2 every arm of ``seed`` starts from: the format demonstrations of the training questions
    and the reading drills (:mod:`search_r1_plugin.sandbox.format_demos`), names weighted up in the loss.
    ``demo_passages``: see :data:`DEMO_PASSAGES`."""
    from transformers import AutoTokenizer

    from search_r1_plugin.protocol import PROMPT_TEMPLATE
    from search_r1_plugin.retrieval_client import RetrievalClient
    from search_r1_plugin.sandbox.format_demos import copy_drills, format_demonstrations, subject_of
    from search_r1_plugin.sandbox.learning_world import questions as world_questions
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2, warm_start

    names = world["entities"].read_text().split()
    questions = [q for d in DATASETS for q in world_questions(world, d, "train")]
    passages = [json.loads(line) for line in open(world["corpus"])]

    async def demos():
        client = RetrievalClient(retriever_url)
        try:
            return await format_demonstrations(
                questions,
                lambda q: client.search(q, 3),
                names,
                passages,
                seed=seed,
                second_search=SECOND_SEARCH,
                shown_as_they_are={subject_of(q, set(names)) for q in questions} if demo_passages == "trained-on-real" else (),
            )
        finally:
            await client.close()

    demonstrations = asyncio.run(demos())
    practice = world["practice"].read_text().split()
    people = world["people"].read_text().split()
    drills = copy_drills(questions, passages, names, rounds=DRILL_ROUNDS, seed=seed, practice=practice, people=people)
    corpus = [p["contents"] for p in passages]
    model = build_tiny_qwen2(out, seed=seed, extra_text=corpus + questions, whole_words=names + practice, **MODEL_SIZE)
    weights = dict.fromkeys(AutoTokenizer.from_pretrained(model).convert_tokens_to_ids(names + practice), NAME_WEIGHT)
    log(f"warm start 1/2: {len(drills)} copy drills, {drill_steps} steps")
    first = warm_start(model, drills, steps=drill_steps, lr=WARM_START_LR, batch_size=32, seed=seed, progress=True, token_weights=weights)
    log(f"warm start 2/2: {len(demonstrations)} format demonstrations and the drills, {steps} steps")
    # the drills given in the protocol's own prompt go on in the second phase: they keep the copy general
    protocol_prefix = PROMPT_TEMPLATE.split("{question}")[0]
    in_protocol = [d for d in drills if d[0].startswith(protocol_prefix)]
    second = warm_start(
        model, demonstrations + in_protocol, steps=steps, lr=WARM_START_LR, batch_size=16, seed=seed, progress=True, token_weights=weights
    )
    return model, {"first_loss": first["first_loss"], "drill_loss": first["last_loss"], "last_loss": second["last_loss"]}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _valid_rate(val: dict[str, float]) -> float:
    valid = sum(val.get(f"{d}/rollout/valid_actions", 0.0) for d in DATASETS)
    invalid = sum(val.get(f"{d}/rollout/invalid_actions", 0.0) for d in DATASETS)
    return valid / (valid + invalid) if valid + invalid else float("nan")


def summary_rows(results: list[ArmResult], arms: list[Arm]) -> list[dict]:
    """Per arm, medians over seeds: EM per dataset at the start (step 0) and the end, searches, validity."""
    rows = []
    for arm in arms:
        runs = [r for r in results if r.arm == arm.name and r.val]
        if not runs:
            rows.append({"arm": arm, "runs": 0})
            continue
        first = [r.val[min(r.val)] for r in runs]
        last = [r.val[max(r.val)] for r in runs]
        row = {"arm": arm, "runs": len(runs), "seconds": _median([r.seconds for r in runs])}
        for d in DATASETS:
            row[f"start/{d}"] = _median([v[f"{d}/em"] for v in first])
            row[f"end/{d}"] = _median([v[f"{d}/em"] for v in last])
        row["start/avg"] = _median([statistics.mean(v[f"{d}/em"] for d in DATASETS) for v in first])
        row["end/avg"] = _median([statistics.mean(v[f"{d}/em"] for d in DATASETS) for v in last])
        row["start/seen"] = _median([v.get(f"{SEEN}/em", float("nan")) for v in first])
        row["end/seen"] = _median([v.get(f"{SEEN}/em", float("nan")) for v in last])
        row["searches"] = _median([statistics.mean(v.get(f"{d}/num_searches", 0.0) for d in DATASETS) for v in last])
        row["valid"] = _median([_valid_rate(v) for v in last])
        # how often the greedy answer to a held-out one-hop question is a name of the passages read
        row["start/read"] = _median([v.get(f"{DATASETS[0]}/answer_read", float("nan")) for v in first])
        row["end/read"] = _median([v.get(f"{DATASETS[0]}/answer_read", float("nan")) for v in last])
        row["per_seed"] = [(r.seed, r.em(min(r.val)), r.em(max(r.val))) for r in runs]
        rows.append(row)
    return rows


def plot_learning_curves(results: list[ArmResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("validation EM (held-out people)", None),
        ("training reward", "critic/score/mean"),
        ("searches per trajectory (training)", "search_r1/searches_per_trajectory"),
        ("answers read from a passage (training)", "search_r1/answer_read"),
        ("response length (tokens, training)", "response_length/mean"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    colors = {}
    for r in results:
        color = colors.setdefault(r.arm, f"C{len(colors)}")
        label = r.arm if all(o.arm != r.arm or o is r for o in results[: results.index(r)]) else None
        for ax, (title, key) in zip(axes, panels):
            if key is None:
                pts = sorted((s, r.em(s)) for s in r.val)
            else:
                pts = sorted((s, m[key]) for s, m in r.train.items() if key in m)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, label=label, alpha=0.8)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(results: list[ArmResult], arms: list[Arm], seeds: list[int], out: Path, args, seconds: float) -> None:
    """``learning.md``: the Table-2-style table, starts and ends, per-seed EM, wall times, commands."""
    rows = summary_rows(results, arms)
    plot_learning_curves(results, out / "learning_curves.png")
    steps = max([max(r.val) for r in results if r.val and ARMS[r.arm].train] or [0])
    lines = [
        f"Validation exact match on held-out people, median of {len(seeds)} seed(s) ({','.join(map(str, seeds))}); "
        f"step 0 is the warm start, the end is step {steps}; each dataset start → end.",
        "",
        "| arm | " + " | ".join(DATASETS) + " | avg | start avg | change | searches / question | valid actions | "
        f"answers read ({DATASETS[0]}) | wall (s) | "
        f"{SEEN} (people trained on) |",
        "|---|" + "---|" * (len(DATASETS) + 8),
    ]
    for row in rows:
        if not row["runs"]:
            lines.append(f"| {row['arm'].title} | " + " | ".join(["failed"] * (len(DATASETS) + 8)) + " |")
            continue
        cells = [f"{row[f'start/{d}']:.3f} → {row[f'end/{d}']:.3f}" for d in DATASETS]
        lines.append(
            f"| {row['arm'].title} | "
            + " | ".join(cells)
            + f" | **{row['end/avg']:.3f}** | {row['start/avg']:.3f} | {row['end/avg'] - row['start/avg']:+.3f} | "
            f"{row['searches']:.2f} | {row['valid']:.2f} | {row['start/read']:.2f} → {row['end/read']:.2f} | {row['seconds']:.0f} | "
            f"{row['start/seen']:.3f} → {row['end/seen']:.3f} |"
        )
    lines += ["", "Per seed (start → end, average EM):", ""]
    for row in rows:
        if row["runs"]:
            per_seed = ", ".join(f"seed {s}: {a:.3f} → {b:.3f}" for s, a, b in row["per_seed"])
            lines.append(f"- {row['arm'].title}: {per_seed}")
    lines += exposure_lines(results, arms, [out, *(getattr(args, "from_runs", None) or [])])
    combined = getattr(args, "from_runs", None)
    where = ", ".join(f"`{d}`" for d in combined) if combined else "this folder"
    lines += [
        "",
        f"Total wall time {seconds / 60:.1f} min for {len(seeds)} seed(s)"
        + (" (the arms' runs, summed)" if combined else "")
        + f". Curves: `learning_curves.png`. Per arm and seed, under {where}: `seed<k>/<arm>/` (verl's "
        "`main_ppo_metrics.jsonl`, `main_ppo.log`, rollout dumps).",
        "",
        "Command: `search-r1 demo --learn " + " ".join(argv_for_report(args)) + "`",
    ]
    (out / "learning.md").write_text("\n".join(lines) + "\n")
    (out / "learning.json").write_text(
        json.dumps(
            [
                {
                    "arm": r.arm,
                    "seed": r.seed,
                    "seconds": r.seconds,
                    "returncode": r.returncode,
                    "val": r.val,
                    "health_alarms": sum(m.get("search_r1/health/alarms", 0) for m in r.train.values()),
                }
                for r in results
            ],
            indent=1,
        )
    )


def exposure_lines(results: list[ArmResult], arms: list[Arm], folders: list[Path]) -> list[str]:
    """Held-out one-hop EM at each run's last validation, split by whether a training search returns the
    person's birth record (:mod:`search_r1_plugin.demo.exposure`): a policy that reads answers both halves."""
    found = [f / EXPOSURE for f in folders if (f / EXPOSURE).exists()]
    if not found:
        return []
    exposure = json.loads(found[0].read_text())
    held_out, shown = exposure["held_out"], set(exposure["shown"])
    lines = [
        "",
        f"Held-out one-hop EM at the end, by whether a training question's search returns the person's birth record "
        f"(shown: {len(shown)} people; never shown: {len(held_out) - len(shown)}), per seed:",
        "",
    ]
    for arm in arms:
        cells = []
        for r in (r for r in results if r.arm == arm.name and r.val):
            dump = r.run_dir / "validation" / f"{max(r.val)}.jsonl"
            if dump.exists():
                split = split_em(dump, held_out, shown)
                cells.append(f"seed {r.seed}: shown {split['shown'][0]:.3f}, never shown {split['never'][0]:.3f}")
        if cells:
            lines.append(f"- {arm.title}: " + "; ".join(cells))
    return lines


def argv_for_report(args) -> list[str]:
    if args.from_runs:
        return ["--from-runs", *map(str, args.from_runs), "--out", str(args.out)]
    words = [f"--arms {args.arms}", f"--seeds {args.seeds}", f"--steps {args.steps}", f"--val-every {args.val_every}"]
    words.append(f"--train-datasets {args.train_datasets}")
    words += [f"--demo-passages {args.demo_passages}"] if args.demo_passages != DEMO_PASSAGES[0] else []
    words += [f"--people {args.people}"] if args.people != PEOPLE else []
    words += [f"--test-people {args.test_people}"] if args.test_people is not None else []
    return words + list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="search-r1 demo --learn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {','.join(ARMS)}")
    p.add_argument("--seeds", default="0", help="comma-separated; the table shows the median over seeds")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--val-every", type=int, default=10)
    p.add_argument(
        "--train-datasets",
        default=",".join(TRAIN_DATASETS),
        help=f"what the arms train on (comma-separated, from {','.join(DATASETS)}); all are validated",
    )
    p.add_argument(
        "--people", type=int, default=PEOPLE, help=f"people in the learning world (default {PEOPLE}: a training person rarely repeats)"
    )
    p.add_argument("--test-people", type=int, help="people only validation questions name (default 48)")
    p.add_argument("--out", type=Path, default=Path("runs/learn"))
    p.add_argument("--warm-start-steps", type=int, default=WARM_START_STEPS, help="second phase (format demonstrations)")
    p.add_argument("--demo-passages", choices=DEMO_PASSAGES, default=DEMO_PASSAGES[0], help="what the format demonstrations show")
    p.add_argument("--drill-steps", type=int, default=DRILL_STEPS, help="first phase (copy drills)")
    p.add_argument("--model", type=Path, help="a warm-started checkpoint of this world to start every arm from (skips the warm start)")
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="main_ppo runs at once (each keeps about one core busy on CPU; default: 2, or 1 on one core)",
    )
    p.add_argument(
        "--timeout", type=float, default=3600, help="seconds before one arm's main_ppo is stopped (an arm takes 10-30 min on 2 cores)"
    )
    p.add_argument(
        "--from-runs", nargs="+", type=Path, metavar="DIR", help="train nothing: one table and curves from earlier --out folders"
    )
    p.add_argument("overrides", nargs="*", help="extra main_ppo overrides for every arm")
    args = p.parse_args(argv)
    if args.from_runs:
        results = results_from_runs(args.from_runs)
        order = [a for a in ARMS if any(r.arm == a for r in results)]
        args.out.mkdir(parents=True, exist_ok=True)
        write_report(results, [ARMS[a] for a in order], sorted({r.seed for r in results}), args.out, args, sum(r.seconds for r in results))
        print((args.out / "learning.md").read_text())
        return 0
    unknown = [a for a in args.arms.split(",") if a and a not in ARMS]
    unknown += [d for d in args.train_datasets.split(",") if d and d not in DATASETS]
    if unknown:
        p.error(f"unknown arm or dataset: {', '.join(unknown)} (arms: {', '.join(ARMS)}; datasets: {', '.join(DATASETS)})")
    arms = [ARMS[a] for a in args.arms.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]

    from search_r1_plugin.sandbox.learning_world import write_learning_world
    from search_r1_plugin.sandbox.stack import demo_start, world_retriever

    out, log = demo_start(args.out)
    t0 = time.perf_counter()

    log("learning world")
    size = {"num_people": args.people, **({"test_people": args.test_people} if args.test_people is not None else {})}
    world = write_learning_world(out / "world", **size)
    log("FAISS Flat index (MiniLM encoder) and the retrieval server")
    results: list[ArmResult] = []
    with world_retriever(world["corpus"], out) as served:
        retriever = served.url
        log(f"retrieval server {served.base_url}; verl parquet files (search_r1, r1, rag prompts)")
        train_datasets = tuple(d for d in args.train_datasets.split(",") if d)
        data = prepare_data(world, out / "data", retriever, train_datasets)
        exposure = write_exposure(world, train_datasets, retriever, out / EXPOSURE)
        log(f"{len(exposure['shown'])} of {len(exposure['held_out'])} held-out people's birth records are in training searches' results")
        models = {}
        for seed in seeds:
            if args.model:
                models[seed] = args.model.resolve()
            else:
                models[seed], losses = warm_started_model(
                    world, out / f"seed{seed}" / "model", retriever, seed, args.warm_start_steps, args.drill_steps, log, args.demo_passages
                )
                log(f"seed {seed}: warm-start loss {losses['first_loss']:.2f} -> {losses['last_loss']:.2f}")
        runs = [(arm, seed) for seed in seeds for arm in arms]
        results = run_concurrently(
            runs, args.jobs, lambda arm, seed: run_arm(arm, seed, models[seed], data, retriever, out / f"seed{seed}" / arm.name, args, log)
        )
    log("table and curves")
    write_report(results, arms, seeds, out, args, time.perf_counter() - t0)
    print((out / "learning.md").read_text())
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
