"""One training step's data path on CPU, before renting GPUs.

    search-r1 dry-run [--algo ppo] [--data data/search_r1/train.parquet]

prepared parquet → verl's ``RLHFDataset`` → our ``search_r1`` agent loop inside verl's
``AgentLoopWorker`` (scripted reader policy, BM25 retrieval server as a real process) →
verl's ``RewardLoopWorker`` (EM) → verl's advantage estimator of the preset (GAE with a
value tensor for PPO, GRPO over groups of ``rollout.n``). Prints, for one trajectory,
each span of tokens with its loss mask and advantage, so you can see that observation
tokens are masked and the reward reaches every model token.
Without ``--data`` it prepares the sample world first.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def spans(tokenizer, ids, mask, adv):
    """Consecutive tokens with the same mask, with their mean advantage."""
    out, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            text = tokenizer.decode(ids[start:i])
            out.append((int(mask[start]), float(adv[start:i].mean()), text))
            start = i
    return out


def main(argv: list[str] | None = None) -> None:
    from search_r1_plugin.presets import choices

    p = argparse.ArgumentParser(prog="search-r1 dry-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", default="ppo", choices=choices("search_r1_algo"), help="algorithm (search_r1_algo)")
    p.add_argument("--data", default=None, help="prepared train parquet (default: the sample world)")
    p.add_argument("--questions", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer
    from verl.trainer.ppo import core_algos
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    from search_r1_plugin.data_prep import prepare
    from search_r1_plugin.policy import PolicyServer
    from search_r1_plugin.presets import compose
    from search_r1_plugin.sandbox.reader import reader_policy
    from search_r1_plugin.sandbox.stack import offline, world_retriever
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2
    from search_r1_plugin.sandbox.verl_harness import run_agent_loop_batch
    from search_r1_plugin.sandbox.world import write_world

    offline()
    work = Path(tempfile.mkdtemp(prefix="search_r1_dry_run_"))
    world = write_world(work / "world", num_people=60)
    data = args.data
    if data is None:
        prepare(work / "data", "sample_nq:train,sample_hotpotqa:train", "", "search_r1", work / "world", False)
        data = str(work / "data" / "train.parquet")
    model_dir = str(build_tiny_qwen2(work / "tiny_model"))  # tokenizer + config for verl's worker
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with world_retriever(world["corpus"], work, index="bm25") as served:
        url = served.base_url
        cfg = compose(
            args.algo,
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                f"search_r1.retriever_url={url}/retrieve",
                "data.max_response_length=1500",
                "search_r1.max_turn_tokens=120",
                "search_r1.max_obs_length=200",
            ],
        )
        n = int(cfg.actor_rollout_ref.rollout.n)
        ds = RLHFDataset(data_files=[data], tokenizer=tokenizer, config=cfg.data)
        batch = next(iter(DataLoader(ds, batch_size=args.questions, collate_fn=collate_fn, shuffle=True)))
        rows = []
        for i in range(args.questions):
            row = {
                "prompt": list(batch["raw_prompt"][i]),
                "data_source": batch["data_source"][i],
                "reward_model": batch["reward_model"][i],
                "extra_info": dict(batch["extra_info"][i]),
            }
            rows += [row] * n  # verl repeats each question rollout.n times (a GRPO group)
        out = run_agent_loop_batch(cfg, PolicyServer(reader_policy(tokenizer)), rows)
    mask = out.batch["response_mask"].float()
    scores = out.batch["rm_scores"]
    if cfg.algorithm.adv_estimator == "gae":
        torch.manual_seed(0)
        values = 0.1 * torch.randn_like(mask)  # stands in for the critic
        adv, _ = core_algos.compute_gae_advantage_return(scores, values, mask, cfg.algorithm.gamma, cfg.algorithm.lam)
    else:
        index = [r["extra_info"]["index"] for r in rows]
        fn = core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
        import numpy as np

        adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=np.array(index, dtype=object), config=cfg.algorithm)
    print(f"algorithm {args.algo}: adv_estimator={cfg.algorithm.adv_estimator}, {len(rows)} trajectories, EM {scores.sum(-1).tolist()}")
    resp_len = out.batch["responses"].shape[1]
    length = int(out.batch["attention_mask"][0, -resp_len:].sum())
    print(f"\ntrajectory 0 ({length} response tokens): mask | mean advantage | text")
    for m, a, text in spans(tokenizer, out.batch["responses"][0, :length].tolist(), mask[0, :length], adv[0, :length]):
        print(f"  {m} | {a:+.3f} | {text[:110]!r}{'…' if len(text) > 110 else ''}")
    injected = adv[0, :length][mask[0, :length] == 0]
    print(
        f"\nadvantage on masked tokens: max |a| = {injected.abs().max().item() if len(injected) else 0:.3g} "
        "(loss ignores them either way); reward on last token:",
        float(scores[0, length - 1]),
    )


if __name__ == "__main__":
    main()
