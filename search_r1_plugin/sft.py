"""The paper's rejection-sampling row: Search-R1 trajectories of a teacher, the correct ones kept, trained on
with verl's own SFT trainer, the retrieved spans out of the loss exactly as in RL.

    search-r1 sft-data --model TEACHER --data data/search_r1/train.parquet --samples 5 --out data/sft/train.parquet
    python -m verl.trainer.sft_trainer data.train_files=data/sft/train.parquet \\
        data.custom_cls.path=pkg://search_r1_plugin.sft data.custom_cls.name=SearchR1SFTDataset …

Why not verl's ``MultiTurnSFTDataset``: it applies the chat template to each message, so an observation
would become a ``user`` (or ``tool``) turn wrapped in ``<|im_start|>…<|im_end|>``; the RL loop injects it
inside the one assistant response instead, with no role tokens. Training on other tokens than the policy
generates (and is rewarded on) is a different task, so each row here stores the RL loop's own token ids —
the chat-templated prompt, then the response exactly as :func:`~search_r1_plugin.rollout.run_trajectory`
built it — and its loss mask: 0 on the prompt, the loop's ``response_mask`` on the response (1 on model
tokens, 0 on ``<information>`` spans). verl's SFT trainer takes the dataset class through its own
``data.custom_cls`` setting.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset


def sft_row(prompt_ids: Sequence[int], response_ids: Sequence[int], response_mask: Sequence[int], **extra: Any) -> dict[str, Any]:
    """One SFT example: the RL loop's tokens and its loss mask (prompt tokens never trained on)."""
    if len(response_ids) != len(response_mask):
        raise ValueError(f"{len(response_ids)} response tokens but {len(response_mask)} mask values")
    return {"input_ids": [*prompt_ids, *response_ids], "loss_mask": [0] * len(prompt_ids) + [int(m) for m in response_mask], **extra}


class SearchR1SFTDataset(Dataset):
    """verl SFT dataset of :func:`sft_row` rows (parquet columns ``input_ids``, ``loss_mask``), for
    ``data.custom_cls``; ``pad_mode`` ``no_padding`` (verl's default) or ``right``."""

    def __init__(self, parquet_files: str | list[str], tokenizer: Any, config: Any, processor: Any = None, max_samples: int = -1) -> None:
        import pandas as pd

        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        if max_samples is not None and max_samples > 0:
            frame = frame.iloc[:max_samples]
        missing = {"input_ids", "loss_mask"} - set(frame.columns)
        if missing:
            raise ValueError(f"{files}: missing columns {sorted(missing)} (write them with `search-r1 sft-data`)")
        self.input_ids = [list(map(int, x)) for x in frame["input_ids"]]
        self.loss_mask = [list(map(int, x)) for x in frame["loss_mask"]]
        config = config or {}
        self.max_length = int(config.get("max_length", 1024))
        self.pad_mode = config.get("pad_mode", "no_padding")
        self.truncation = config.get("truncation", "error")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        ids, mask = self.input_ids[item], self.loss_mask[item]
        if len(ids) > self.max_length:
            if self.truncation == "error":
                raise ValueError(f"example {item} has {len(ids)} tokens, data.max_length is {self.max_length}")
            ids, mask = (
                (ids[-self.max_length :], mask[-self.max_length :])
                if self.truncation == "left"
                else (ids[: self.max_length], mask[: self.max_length])
            )
        input_ids = torch.tensor(ids, dtype=torch.long)
        loss_mask = torch.tensor(mask, dtype=torch.long)
        position_ids = torch.arange(len(ids), dtype=torch.long)
        if self.pad_mode == "no_padding":
            return {"input_ids": input_ids, "position_ids": position_ids, "loss_mask": loss_mask}
        pad = self.max_length - len(ids)
        return {
            "input_ids": torch.cat([input_ids, torch.full((pad,), self.pad_token_id, dtype=torch.long)]),
            "attention_mask": torch.cat([torch.ones(len(ids), dtype=torch.long), torch.zeros(pad, dtype=torch.long)]),
            "position_ids": torch.cat([position_ids, torch.zeros(pad, dtype=torch.long)]),
            "loss_mask": torch.cat([loss_mask, torch.zeros(pad, dtype=torch.long)]),
        }


async def rejection_sample(
    rows: Sequence[dict[str, Any]],
    policy: Any,
    retrieve: Any,
    tokenizer: Any,
    config: Any,
    *,
    samples: int,
    response_length: int,
    keep: str = "first",
    concurrency: int = 16,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``samples`` trajectories per question through :func:`run_trajectory`; the ones whose answer is an
    exact match are kept (``keep``: ``first`` correct one a question, or ``all``). ``rows``: verl RL
    parquet rows (``prompt`` messages, ``reward_model.ground_truth.target``)."""
    from search_r1_plugin.evaluation.backends import chat_prompt_ids
    from search_r1_plugin.protocol import extract_answer
    from search_r1_plugin.reward import em_check, golden_answers
    from search_r1_plugin.rollout import ObservationEncoder, run_trajectory

    enc = ObservationEncoder(tokenizer)
    slots = asyncio.Semaphore(concurrency)
    stats = {"questions": len(rows), "trajectories": 0, "correct": 0, "kept": 0, "questions_with_a_correct_one": 0}

    async def one(row: dict[str, Any], prompt_ids: list[int]):
        async with slots:
            traj = await run_trajectory(prompt_ids, policy, retrieve, tokenizer, config, response_length, obs_encoder=enc)
        answer = extract_answer(traj.model_text(enc.decode))
        return traj, answer is not None and bool(em_check(answer, golden_answers(row["reward_model"]["ground_truth"])))

    async def question(row: dict[str, Any]):
        prompt_ids = chat_prompt_ids(tokenizer, [dict(m) for m in row["prompt"]])
        return prompt_ids, await asyncio.gather(*(one(row, prompt_ids) for _ in range(samples)))

    out = []
    # every question's samples at once (``concurrency`` bounds the trajectories in flight); kept in row order
    for row, (prompt_ids, results) in zip(rows, await asyncio.gather(*(question(row) for row in rows))):
        stats["trajectories"] += len(results)
        correct = [t for t, ok in results if ok]
        stats["correct"] += len(correct)
        stats["questions_with_a_correct_one"] += bool(correct)
        for traj in correct[: 1 if keep == "first" else None]:
            out.append(
                sft_row(
                    prompt_ids,
                    traj.response_ids,
                    traj.response_mask,
                    data_source=row.get("data_source", ""),
                    question=row.get("extra_info", {}).get("question", ""),
                    response_text=enc.decode(traj.response_ids),
                )
            )
    stats["kept"] = len(out)
    return out, stats


def answer_messages(row: dict[str, Any]) -> dict[str, Any]:
    """The paper's SFT baseline: the question with the direct-answer prompt, the first gold answer as the
    reply (verl's ``MultiTurnSFTDataset`` reads ``messages``)."""
    from search_r1_plugin.protocol import DIRECT_TEMPLATE
    from search_r1_plugin.reward import golden_answers

    question = row.get("extra_info", {}).get("question") or row["prompt"][-1]["content"]
    gold = golden_answers(row["reward_model"]["ground_truth"])[0]
    return {
        "messages": [
            {"role": "user", "content": DIRECT_TEMPLATE.format(question=question)},
            {"role": "assistant", "content": f"<answer> {gold} </answer>"},
        ],
        "data_source": row.get("data_source", ""),
    }


def write_sft_parquet(rows: list[dict[str, Any]], path: Any) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path)


def main(argv: list[str] | None = None) -> int:
    """``search-r1 sft-data``: rejection-sampled Search-R1 trajectories of a teacher as verl SFT data."""
    import argparse
    import json
    from pathlib import Path

    import pandas as pd

    from search_r1_plugin.settings import DEFAULT_RETRIEVER_URL, SearchR1Config

    p = argparse.ArgumentParser(prog="search-r1 sft-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="the teacher: HF model path or checkpoint directory")
    p.add_argument(
        "--answers",
        action="store_true",
        help="the paper's plain SFT row: question -> '<answer> gold </answer>' messages for verl's own dataset (no teacher)",
    )
    p.add_argument("--data", required=True, help="verl RL parquet (search-r1 prepare-data), e.g. data/search_r1/train.parquet")
    p.add_argument("--out", required=True, help="SFT parquet to write (columns input_ids, loss_mask, and the text for reading)")
    p.add_argument("--samples", type=int, default=5, help="trajectories per question (the paper: 5)")
    p.add_argument("--keep", choices=["first", "all"], default="first", help="correct trajectories kept per question")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    p.add_argument("--retriever-url", default=DEFAULT_RETRIEVER_URL)
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--max-turns", type=int, default=SearchR1Config.max_turns)
    args = p.parse_args(argv)

    from search_r1_plugin.config import response_budget
    from search_r1_plugin.evaluation.backends import load_policy
    from search_r1_plugin.retrieval_client import check_ready, client_from_config

    rows = pd.read_parquet(args.data).to_dict("records")[: args.limit]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.answers:
        answer_rows = [answer_messages(row) for row in rows]
        pd.DataFrame(answer_rows).to_parquet(args.out)
        print(f"{len(answer_rows)} question -> answer examples -> {args.out}")
        return 0
    if not args.model:
        p.error("--model (the teacher) is needed, unless --answers")
    check_ready(args.retriever_url)
    policy = load_policy(args.model, args.backend, args.temperature)
    config = SearchR1Config(retriever_url=args.retriever_url, max_turns=args.max_turns)
    budget = response_budget(config.max_turns, config.max_turn_tokens, config.max_obs_length)  # as training computes it

    async def go():
        client = client_from_config(config)
        try:
            return await rejection_sample(
                rows, policy, client.search, policy.tokenizer, config, samples=args.samples, response_length=budget, keep=args.keep
            )
        finally:
            await client.close()

    kept, stats = asyncio.run(go())
    write_sft_parquet(kept, args.out)
    print(json.dumps(stats))
    print(f"{stats['kept']} trajectories -> {args.out}")
    return 0 if kept else 1
