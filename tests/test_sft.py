"""Rejection-sampling SFT data (``search-r1 sft-data``): the RL loop's own tokens and masks, token by token."""

import asyncio

import pandas as pd
import torch

from search_r1_plugin.policy import PolicyServer
from search_r1_plugin.retrieval_client import RetrievalClient
from search_r1_plugin.settings import SearchR1Config
from search_r1_plugin.sft import SearchR1SFTDataset, rejection_sample, write_sft_parquet
from tests.test_agent_loop_verl import RESPONSE_LENGTH, load_questions, run_worker, scripted_policy, trainer_config


def sample(rows, policy, tokenizer, url, samples=2, keep="first"):
    config = SearchR1Config(retriever_url=f"{url}/retrieve", max_turn_tokens=80, max_obs_length=120)

    async def go():
        client = RetrievalClient(config.retriever_url)
        try:
            return await rejection_sample(
                rows, policy, client.search, tokenizer, config, samples=samples, response_length=RESPONSE_LENGTH, keep=keep
            )
        finally:
            await client.close()

    return asyncio.run(go())


def test_sft_rows_carry_the_rl_loops_tokens_and_masks(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world, tmp_path):
    rows = load_questions(sample_world)
    kept, stats = sample(rows, scripted_policy(tiny_tokenizer, rows), tiny_tokenizer, bm25_server)
    assert stats == {"questions": 4, "trajectories": 8, "correct": 8, "kept": 4, "questions_with_a_correct_one": 4}

    # the same trajectories through verl's real AgentLoopWorker: what RL trains on
    out = run_worker(trainer_config(tiny_model_dir, bm25_server), PolicyServer(scripted_policy(tiny_tokenizer, rows)), rows)
    prompts, responses = out.batch["prompts"], out.batch["responses"]
    attn, resp_mask = out.batch["attention_mask"], out.batch["response_mask"]
    write_sft_parquet(kept, tmp_path / "sft.parquet")
    dataset = SearchR1SFTDataset(str(tmp_path / "sft.parquet"), tiny_tokenizer, {"max_length": 1024})
    for b in range(len(rows)):
        prompt = prompts[b][attn[b, : prompts.shape[1]] == 1].tolist()
        n = int(attn[b, prompts.shape[1] :].sum())
        item = dataset[b]
        assert item["input_ids"].tolist() == prompt + responses[b, :n].tolist()
        assert item["loss_mask"].tolist() == [0] * len(prompt) + resp_mask[b, :n].tolist()  # token by token
        assert 0 < int(item["loss_mask"].sum()) < n  # model tokens in the loss, the observation out of it
        assert torch.equal(item["position_ids"], torch.arange(len(item["input_ids"])))
    assert "<information>" in kept[0]["response_text"] and kept[0]["data_source"] == "sample_nq"


def test_only_correct_trajectories_are_kept(tiny_tokenizer, bm25_server, sample_world, tmp_path):
    rows = load_questions(sample_world)
    kept, stats = sample(rows, scripted_policy(tiny_tokenizer, rows, answer_right=False), tiny_tokenizer, bm25_server)
    assert kept == [] and stats["correct"] == 0 and stats["trajectories"] == 8
    kept, stats = sample(rows, scripted_policy(tiny_tokenizer, rows), tiny_tokenizer, bm25_server, samples=3, keep="all")
    assert len(kept) == 12 and stats["kept"] == 12


def test_right_padding_and_length_errors(tiny_tokenizer, tmp_path):
    import pytest

    write_sft_parquet([{"input_ids": [5, 6, 7, 8], "loss_mask": [0, 0, 1, 1]}], tmp_path / "x.parquet")
    padded = SearchR1SFTDataset(str(tmp_path / "x.parquet"), tiny_tokenizer, {"max_length": 6, "pad_mode": "right"})[0]
    assert padded["loss_mask"].tolist() == [0, 0, 1, 1, 0, 0] and padded["attention_mask"].tolist() == [1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="has 4 tokens, data.max_length is 3"):
        SearchR1SFTDataset(str(tmp_path / "x.parquet"), tiny_tokenizer, {"max_length": 3})[0]
    pd.DataFrame([{"text": "x"}]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        SearchR1SFTDataset(str(tmp_path / "bad.parquet"), tiny_tokenizer, {})


def test_the_plain_sft_row_is_question_to_answer_for_verls_own_dataset(sample_world, tmp_path):
    from search_r1_plugin.sft import main

    rows = load_questions(sample_world)
    for r in rows:
        r["extra_info"]["question"] = r["question"]
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    assert main(["--answers", "--data", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "sft.parquet")]) == 0
    messages = pd.read_parquet(tmp_path / "sft.parquet")["messages"][0]
    assert messages[0]["role"] == "user" and rows[0]["question"] in messages[0]["content"] and "directly" in messages[0]["content"]
    assert messages[1] == {"role": "assistant", "content": f"<answer> {rows[0]['answer']} </answer>"}


def sft_steps(tmp_path, model_dir, train_file, steps, extra=()):
    """``torchrun -m search_r1_plugin.cpu.sft_trainer`` (verl's SFT trainer on the cpu platform): the
    training losses it printed, one a step."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "VERL_PLATFORM": "cpu", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += ["-m", "search_r1_plugin.cpu.sft_trainer", f"data.train_files={train_file}", "data.val_files=null", f"model.path={model_dir}"]
    cmd += [
        "data.train_batch_size=4",
        "data.micro_batch_size_per_gpu=2",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=100",
    ]
    cmd += [f"trainer.default_local_dir={tmp_path / 'ckpt'}", "trainer.save_freq=-1", "data.max_length=1024", *extra]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [float(x) for x in re.findall(r"train/loss:([0-9.]+)", run.stdout + run.stderr)]


def test_verls_sft_trainer_learns_the_rejection_sampled_trajectories_on_cpu(
    tiny_model_dir, tiny_tokenizer, bm25_server, sample_world, tmp_path
):
    """The rejection-sampling row end to end: kept trajectories → SearchR1SFTDataset (verl's data.custom_cls)
    → verl's SFTTrainer on the cpu platform; the loss on the model's tokens falls over a few steps."""
    rows = load_questions(sample_world)
    kept, _ = sample(rows, scripted_policy(tiny_tokenizer, rows), tiny_tokenizer, bm25_server)
    write_sft_parquet(kept, tmp_path / "sft.parquet")
    custom = ["data.custom_cls.path=pkg://search_r1_plugin.sft", "data.custom_cls.name=SearchR1SFTDataset"]
    losses = sft_steps(tmp_path, tiny_model_dir, tmp_path / "sft.parquet", steps=4, extra=["optim.lr=1e-3", *custom])
    assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_verls_sft_trainer_takes_the_plain_sft_row_on_cpu(tiny_model_dir, sample_world, tmp_path):
    from search_r1_plugin.sft import main

    rows = load_questions(sample_world)
    for r in rows:
        r["extra_info"]["question"] = r["question"]
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    assert main(["--answers", "--data", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "sft.parquet")]) == 0
    assert len(sft_steps(tmp_path, tiny_model_dir, tmp_path / "sft.parquet", steps=1)) == 1  # verl's own multi-turn dataset
