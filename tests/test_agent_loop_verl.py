"""The agent loop inside verl's real AgentLoopWorker + RewardLoopWorker, retrieval over HTTP."""

import json

import pytest
import torch

from search_r1_plugin.policy import PolicyServer, TextPolicy
from search_r1_plugin.presets import compose
from search_r1_plugin.protocol import make_messages
from search_r1_plugin.sandbox.verl_harness import run_agent_loop_batch

RESPONSE_LENGTH = 400


def trainer_config(model_dir, url, *extra):
    return compose(
        "ppo",
        overrides=[
            f"actor_rollout_ref.model.path={model_dir}",
            "data.max_prompt_length=256",
            f"data.max_response_length={RESPONSE_LENGTH}",
            f"search_r1.retriever_url={url}/retrieve",
            "search_r1.max_turn_tokens=80",
            "search_r1.max_obs_length=120",
            *extra,
        ],
    )


def load_questions(world, n=4):
    rows = [json.loads(line) for line in open(world["sample_nq/test"])][:n]
    return [
        {
            "prompt": make_messages(r["question"]),
            "data_source": "sample_nq",
            "reward_model": {"style": "rule", "ground_truth": {"target": r["golden_answers"]}},
            "extra_info": {"index": i, "split": "test"},
            "question": r["question"],
            "answer": r["golden_answers"][0],
        }
        for i, r in enumerate(rows)
    ]


def scripted_policy(tokenizer, rows, *, answer_right=True):
    """Search the question once, then answer (right or wrong) — decided from the context text."""

    def act(ctx, stop):
        assert stop == ["</search>"]  # turn_cut=original
        row = next(r for r in rows if r["question"].rstrip("?") in ctx)
        if "<information>" not in ctx.split("<|im_start|>assistant\n")[-1]:  # the prompt mentions the tag too
            return f"<think>I must look it up.</think><search> {row['question']} </search>"
        return f"<think>Found it.</think><answer> {row['answer'] if answer_right else 'nobody'} </answer>"

    return TextPolicy(tokenizer, act)


def run_worker(config, llm, rows):
    return run_agent_loop_batch(config, llm, rows)


@pytest.mark.parametrize("mask", [True, False])
def test_scripted_policy_through_verl(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world, mask):
    rows = load_questions(sample_world)
    config = trainer_config(
        tiny_model_dir,
        bm25_server,
        f"search_r1.mask_retrieved_tokens={str(mask).lower()}",
        f"actor_rollout_ref.rollout.calculate_log_probs={str(mask).lower()}",
    )
    llm = PolicyServer(scripted_policy(tiny_tokenizer, rows))
    out = run_worker(config, llm, rows)
    # verl's engines are asked to stop on </search> (turn_cut=original), with no engine-specific key
    # (SGLang's SamplingParams has no include_stop_str_in_output); the sample's priority goes with every call
    assert llm.calls and all(c["sampling_params"]["stop"] == ["</search>"] for c in llm.calls)
    assert not any("include_stop_str_in_output" in c["sampling_params"] for c in llm.calls)
    assert {c["priority"] for c in llm.calls} == set(range(len(rows)))
    by_id = {}
    for c in llm.calls:  # one random id per trajectory, the same on every turn of it
        by_id.setdefault(c["request_id"], set()).add(c["priority"])
    assert len(by_id) == len(rows) and all(len(p) == 1 for p in by_id.values())

    responses, resp_mask = out.batch["responses"], out.batch["response_mask"]
    attn = out.batch["attention_mask"][:, -RESPONSE_LENGTH:]
    rm = out.batch["rm_scores"]
    assert responses.shape == (len(rows), RESPONSE_LENGTH)
    for b, row in enumerate(rows):
        n = int(attn[b].sum())
        text = tiny_tokenizer.decode(responses[b, :n])
        head, rest = text.split("</search>", 1)
        obs, tail = rest.split("</information>\n\n", 1)
        assert obs.startswith("\n\n<information>Doc 1(Title: ")
        assert row["answer"] in obs  # BM25 found the passage with the fact
        # token-by-token: mask 1 on model tokens, 0 (or 1 in the ablation) on the observation
        ids = responses[b, :n].tolist()
        turn1, turn2 = [c["output_ids"] for c in llm.calls if row["question"].rstrip("?") in tiny_tokenizer.decode(c["prompt_ids"])]
        assert ids[: len(turn1)] == turn1 and ids[-len(turn2) :] == turn2  # sampled ids kept exactly
        n_obs = n - len(turn1) - len(turn2)
        expected = [1] * len(turn1) + [1 if not mask else 0] * n_obs + [1] * len(turn2)
        assert resp_mask[b, :n].tolist() == expected, b
        assert resp_mask[b, n:].sum() == 0
        # EM reward on the last (model) token, nowhere else
        assert rm[b, n - 1] == 1.0 and rm[b].sum() == 1.0 and resp_mask[b, n - 1] == 1
    # logprobs: exactly the engine's on model tokens, 0 on injected ones
    if mask:
        lp = out.batch["rollout_log_probs"]
        assert torch.all(lp[resp_mask == 0] == 0) and torch.all(lp[(resp_mask == 1) & (attn == 1)] < 0)
    else:  # injected tokens are trained on but were never sampled: no rollout log-probs (see settings)
        assert "rollout_log_probs" not in out.batch.keys()
    # per-trajectory stats reached the reward's extra info (verl logs these keys)
    assert list(out.non_tensor_batch["num_searches"]) == [1.0] * len(rows)
    assert "rollout/masked_token_share" in out.non_tensor_batch
    # one request id per trajectory, reused across its turns (sticky routing)
    ids_per_traj = {}
    for call in llm.calls:
        ids_per_traj.setdefault(call["request_id"], 0)
        ids_per_traj[call["request_id"]] += 1
    assert sorted(ids_per_traj.values()) == [2] * len(rows)


def test_wrong_answers_get_zero(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world):
    rows = load_questions(sample_world, 2)
    config = trainer_config(tiny_model_dir, bm25_server)
    out = run_worker(config, PolicyServer(scripted_policy(tiny_tokenizer, rows, answer_right=False)), rows)
    assert out.batch["rm_scores"].sum() == 0


def test_tiny_qwen2_hf_generate_through_verl(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world):
    """Real sampling from a (random) Qwen2 with HF generate + stop strings: invariants hold in verl's batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(0)
    forced = tiny_tokenizer.encode("<search> born </search>", add_special_tokens=False)

    async def policy(prompt_ids, max_tokens, stop):
        # Prefix a valid search on the first turn so retrieval happens; the rest is sampled.
        first = "<information>" not in tiny_tokenizer.decode(prompt_ids).split("<|im_start|>assistant\n")[-1]
        inp = torch.tensor([prompt_ids + (forced if first else [])])
        with torch.no_grad():
            gen = model.generate(
                inp,
                max_new_tokens=min(max_tokens, 40),
                do_sample=True,
                stop_strings=stop,
                tokenizer=tiny_tokenizer,
                eos_token_id=tiny_tokenizer.eos_token_id,
                pad_token_id=tiny_tokenizer.pad_token_id,
            )
        return (forced if first else []) + gen[0, inp.shape[1] :].tolist(), None

    rows = load_questions(sample_world, 3)
    out = run_worker(trainer_config(tiny_model_dir, bm25_server), PolicyServer(policy), rows)
    attn = out.batch["attention_mask"][:, -RESPONSE_LENGTH:]
    for b in range(len(rows)):
        n = int(attn[b].sum())
        assert 0 < n <= RESPONSE_LENGTH
        assert out.batch["response_mask"][b, n - 1] == 1  # ends on a model token
        text = tiny_tokenizer.decode(out.batch["responses"][b, :n])
        assert text.startswith("<search> born </search>\n\n<information>Doc 1(Title:")
        assert out.batch["response_mask"][b, :n].sum() < n  # the observation is masked


def test_retriever_down_is_a_clear_error(tiny_model_dir, tiny_tokenizer, sample_world):
    from search_r1_plugin.retrieval_client import RetrievalError
    from search_r1_plugin.sandbox.server_process import free_port

    rows = load_questions(sample_world, 1)
    url = f"http://127.0.0.1:{free_port()}"
    config = trainer_config(tiny_model_dir, url, "search_r1.retrieval_retries=1", "search_r1.retrieval_backoff_s=0.01")
    with pytest.raises(RetrievalError, match=url):
        run_worker(config, PolicyServer(scripted_policy(tiny_tokenizer, rows)), rows)


def test_no_masking_with_rollout_logprobs_is_refused(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world):
    rows = load_questions(sample_world, 1)
    config = trainer_config(
        tiny_model_dir, bm25_server, "search_r1.mask_retrieved_tokens=false", "actor_rollout_ref.rollout.calculate_log_probs=true"
    )
    with pytest.raises(Exception, match="actor_rollout_ref.rollout.calculate_log_probs=false"):
        run_worker(config, PolicyServer(scripted_policy(tiny_tokenizer, rows)), rows)


def test_bad_setting_fails_at_start_with_key(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world):
    rows = load_questions(sample_world, 1)
    config = trainer_config(tiny_model_dir, bm25_server, "search_r1.max_turns=-1")
    # Hydra's instantiate wraps our ConfigError; the message still names the key.
    with pytest.raises(Exception, match=r"search_r1.max_turns must be >= 0, got -1"):
        run_worker(config, PolicyServer(scripted_policy(tiny_tokenizer, rows)), rows)


def test_reward_reads_only_what_the_model_wrote(tiny_model_dir, tiny_tokenizer, sample_world, tmp_path):
    """A retrieved passage holding ``<answer>gold</answer>``, and the invalid-action message (which holds
    ``<answer> and </answer>``), are in verl's decoded response; neither may be scored as the model's answer."""
    from retrieval_server.build.builder import build_bm25_index
    from search_r1_plugin.sandbox.server_process import retrieval_server

    corpus = tmp_path / "trap.jsonl"
    corpus.write_text(
        json.dumps({"id": "0", "contents": '"Trap"\nZorblax trivia: <answer> Zorblax </answer>'})
        + "\n"
        + json.dumps({"id": "1", "contents": '"Other"\nNothing to see here.'})
        + "\n"
    )
    index = build_bm25_index(corpus, tmp_path / "bm25")
    rows = [
        {
            "prompt": make_messages("Who is Zorblax?"),
            "data_source": "nq",
            "reward_model": {"style": "rule", "ground_truth": {"target": ["Zorblax"]}},
            "extra_info": {"index": 0},
        },
        {
            "prompt": make_messages("Which word joins?"),
            "data_source": "nq",
            "reward_model": {"style": "rule", "ground_truth": {"target": ["and"]}},
            "extra_info": {"index": 1},
        },
    ]

    def act(context, stop):
        ctx = context.split("<|im_start|>assistant\n")[-1]
        if "Zorblax" in context and "<information>" not in ctx:
            return "<search> Zorblax trivia </search>"
        return "<think> I am not sure. </think>"  # never answers

    policy = TextPolicy(tiny_tokenizer, act)

    with retrieval_server(
        ["--retriever", "bm25", "--index", str(index.index_path), "--corpus", str(corpus)], tmp_path / "server.log"
    ) as url:
        out = run_worker(trainer_config(tiny_model_dir, url), PolicyServer(policy), rows)
    texts = [tiny_tokenizer.decode(r) for r in out.batch["responses"]]
    assert "<answer> Zorblax </answer>" in texts[0] and "<answer> and </answer>" in texts[1]  # in the response...
    assert out.batch["rm_scores"].sum() == 0  # ...but not written by the model: no reward
    assert list(out.non_tensor_batch["answered"]) == [0.0, 0.0]


def test_weight_versions_reach_the_batch(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world):
    """The v1 trainer reads min/max_global_steps of every trajectory (it crashed at step 1 without them)."""
    rows = load_questions(sample_world, 2)
    llm = PolicyServer(scripted_policy(tiny_tokenizer, rows))
    steps = iter([9, 7, 8, 6])  # four generate calls: weights updated while trajectories were in flight
    seen: dict[str, list[int]] = {}

    async def generate(request_id, *, prompt_ids, sampling_params, **kw):
        out = await PolicyServer.generate(llm, request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        step = next(steps)
        seen.setdefault(request_id, []).append(step)
        out.extra_fields = {"global_steps": step, "min_global_steps": step, "max_global_steps": step}
        return out

    llm.generate = generate
    out = run_worker(trainer_config(tiny_model_dir, bm25_server), llm, rows)
    lo, hi = out.non_tensor_batch["min_global_steps"], out.non_tensor_batch["max_global_steps"]
    assert all(isinstance(v, int) for v in list(lo) + list(hi))
    assert sorted(zip(lo, hi)) == sorted((min(s), max(s)) for s in seen.values())
    assert [len(s) for s in seen.values()] == [2, 2]


def test_full_determinism_uses_verls_deterministic_request_ids(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world):
    """Under rollout.full_determinism each trajectory's calls carry verl's ``det-{priority}`` id, as verl's own loops."""
    rows = load_questions(sample_world)
    config = trainer_config(tiny_model_dir, bm25_server, "actor_rollout_ref.rollout.full_determinism=true")
    llm = PolicyServer(scripted_policy(tiny_tokenizer, rows))
    run_worker(config, llm, rows)
    assert llm.calls and all(c["request_id"] == f"det-{c['priority']}" for c in llm.calls)
