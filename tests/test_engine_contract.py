"""What our agent loop sends through verl's server manager fits every rollout engine verl 0.9.1 drives.

No GPU engine installs here (vLLM and SGLang need CUDA builds), so their ``SamplingParams`` field lists are
written down from their sources (names only, with the file and commit they come from), together with what
verl 0.9.1's server for each engine does to the dict before building them (``vllm_async_server.py``:
``generate``; ``async_sglang_server.py``: ``generate``). docs/engines.md has the lines.
"""

import pytest

from search_r1_plugin.policy import PolicyServer
from search_r1_plugin.sandbox.verl_harness import run_agent_loop_batch

from .test_agent_loop_verl import load_questions, scripted_policy, trainer_config

# vllm-project/vllm vllm/sampling_params.py @ 00388f65 (class SamplingParams, fields meant as input)
VLLM_FIELDS = set(
    "n presence_penalty frequency_penalty repetition_penalty temperature top_p top_k min_p seed stop "
    "stop_token_ids ignore_eos max_tokens min_tokens logprobs prompt_logprobs prompt_logprob_token_ids "
    "prompt_logprob_start logprob_token_ids flat_logprobs detokenize skip_special_tokens "
    "spaces_between_special_tokens include_stop_str_in_output output_kind stream_interval skip_clone "
    "structured_outputs logit_bias allowed_token_ids extra_args bad_words skip_reading_prefix_cache "
    "thinking_token_budget repetition_detection routed_experts_prompt_start trace_decode_token_ids".split()
)
# sgl-project/sglang python/sglang/srt/sampling/sampling_params.py @ 00c17caf (API parameters; a msgspec
# Struct, kw_only: any other key is a TypeError)
SGLANG_FIELDS = set(
    "max_new_tokens stop stop_token_ids stop_regex temperature top_p top_k min_p frequency_penalty "
    "presence_penalty repetition_penalty min_new_tokens n json_schema regex ebnf structural_tag ignore_eos "
    "skip_special_tokens spaces_between_special_tokens no_stop_trim custom_params stream_interval logit_bias "
    "sampling_seed".split()
)


def vllm_server_params(params: dict) -> dict:
    """verl's vLLM server: max_tokens taken out and passed apart, logprobs → 0/None, defaults added."""
    p = dict(params)
    max_tokens = p.pop("max_tokens", None) or p.pop("max_new_tokens", None)
    p["logprobs"] = 0 if p.pop("logprobs", False) else None
    p.setdefault("repetition_penalty", 1.0)
    p.setdefault("ignore_eos", False)
    return {"max_tokens": max_tokens, **p}


def sglang_server_params(params: dict) -> dict:
    """verl's SGLang server: max_tokens renamed max_new_tokens, logprobs / prompt_logprobs taken out."""
    p = dict(params)
    p["max_new_tokens"] = p.pop("max_new_tokens", None) or p.pop("max_tokens", None)
    p.pop("logprobs", None)
    p.pop("prompt_logprobs", None)
    return p


@pytest.mark.parametrize("validate", [False, True])
def test_every_engine_takes_the_sampling_params_we_send(tiny_model_dir, tiny_tokenizer, bm25_server, sample_world, validate):
    rows = load_questions(sample_world)
    config = trainer_config(tiny_model_dir, bm25_server, "actor_rollout_ref.rollout.calculate_log_probs=true")
    llm = PolicyServer(scripted_policy(tiny_tokenizer, rows))
    run_agent_loop_batch(config, llm, rows, validate=validate)
    assert llm.calls
    for call in llm.calls:
        sent = call["sampling_params"]
        assert sent["stop"] == ["</search>"] and sent["max_tokens"] >= 1
        for engine, fields, server in (("vllm", VLLM_FIELDS, vllm_server_params), ("sglang", SGLANG_FIELDS, sglang_server_params)):
            unknown = set(server(sent)) - fields
            assert not unknown, f"{engine}'s SamplingParams has no {sorted(unknown)}"
