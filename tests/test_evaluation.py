"""search-r1 eval: aggregation, scripted scores, every method on the tiny model through the server, resume."""

import asyncio
import json

import pytest

from search_r1_plugin.evaluation.backends import HFPolicy
from search_r1_plugin.evaluation.methods import METHODS
from search_r1_plugin.evaluation.runner import aggregate, evaluate, write_table
from search_r1_plugin.policy import TextPolicy
from search_r1_plugin.retrieval_client import RetrievalError
from search_r1_plugin.settings import SearchR1Config

DATASETS = [("sample_nq", "test"), ("sample_hotpotqa", "test")]


def test_aggregation_matches_hand_computed(tmp_path):
    traj = tmp_path / "trajectories"
    traj.mkdir()
    rows = {"a": [(1, 1.0, 1), (0, 0.5, 1), (0, 0.0, 0), (1, 1.0, 1)], "b": [(0, 0.0, 0), (1, 1.0, 1)]}
    for name, vals in rows.items():
        with open(traj / f"{name}.jsonl", "w") as f:
            for i, (em, f1, sub) in enumerate(vals):
                f.write(json.dumps({"id": str(i), "em": em, "f1": f1, "sub_em": sub}) + "\n")
    scores = aggregate(tmp_path, [("a", "x"), ("b", "x")], {"a": 4, "b": 2})
    assert scores["a"]["em"] == 0.5 and scores["a"]["f1"] == 0.625 and scores["a"]["sub_em"] == 0.75
    assert scores["b"]["em"] == 0.5
    md = write_table(tmp_path, "m", scores)
    assert "| m | EM | 0.500 | 0.500 | 0.500 |" in md
    assert (tmp_path / "table.csv").read_text().splitlines()[0] == "method,metric,a,b,avg"
    with pytest.raises(RuntimeError, match="2 of 3"):
        aggregate(tmp_path, [("b", "x")], {"b": 3})


def answers_of(world):
    out = {}
    for name, _ in DATASETS:
        for line in open(world[f"{name}/test"]):
            r = json.loads(line)
            out[r["question"]] = r["golden_answers"][0]
    return out


def oracle_policy(answers, right):
    """Searches once, then answers right for questions in ``right`` and wrong otherwise."""

    def policy(context, stop):
        q = next(q for q in answers if q in context)
        if "<information>" not in context.split("<|im_start|>assistant\n")[-1]:
            return f"<think>look up</think><search> {q} </search>"
        return f"<think>ok</think><answer> {answers[q] if q in right else 'nope'} </answer>"

    return policy


def run_eval(world, tmp_path, gen, tokenizer, url, method="search_r1", limit=6, **kw):
    return asyncio.run(
        evaluate(
            method=method,
            policy=gen,
            tokenizer=tokenizer,
            datasets=DATASETS,
            local_dir=world["corpus"].parent,
            retriever_url=f"{url}/retrieve",
            out_dir=tmp_path,
            limit=limit,
            config=SearchR1Config(retriever_url=f"{url}/retrieve", max_turn_tokens=60),
            **kw,
        )
    )


def test_scripted_policy_gives_expected_scores(sample_world, tmp_path, tiny_tokenizer, bm25_server):
    answers = answers_of(sample_world)
    first = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:6]
    right = set(first[:3]) | {json.loads(line)["question"] for line in open(sample_world["sample_hotpotqa/test"])}
    gen = TextPolicy(tiny_tokenizer, oracle_policy(answers, right))
    out = run_eval(sample_world, tmp_path, gen, tiny_tokenizer, bm25_server, paper_model="qwen2.5-7b")
    assert out["scores"]["sample_nq"]["em"] == pytest.approx(0.5)
    assert out["scores"]["sample_hotpotqa"]["em"] == 1.0
    assert (tmp_path / "comparison.png").stat().st_size > 1000 and (tmp_path / "table.md").exists()
    line = json.loads((tmp_path / "trajectories" / "sample_nq.jsonl").read_text().splitlines()[0])
    assert line["searches"] == 1 and "<information>" in line["response"]


def test_resume_skips_finished_questions(sample_world, tmp_path, tiny_tokenizer, bm25_server):
    answers = answers_of(sample_world)
    calls = []
    policy = oracle_policy(answers, set(answers))

    def counting(context, stop):
        calls.append(1)
        return policy(context, stop)

    gen = TextPolicy(tiny_tokenizer, counting)
    run_eval(sample_world, tmp_path, gen, tiny_tokenizer, bm25_server, limit=2)
    first = len(calls)
    out = run_eval(sample_world, tmp_path, gen, tiny_tokenizer, bm25_server, limit=3)
    assert len(calls) - first == first // 2  # only the one new question per dataset ran
    assert out["scores"]["sample_nq"]["n"] == 3


def test_retriever_down_is_clear_and_writes_no_table(sample_world, tmp_path, tiny_tokenizer):
    from search_r1_plugin.sandbox.server_process import free_port

    url = f"http://127.0.0.1:{free_port()}"
    gen = TextPolicy(tiny_tokenizer, lambda c, s: "<answer>x</answer>")
    with pytest.raises(RetrievalError, match=url):
        run_eval(sample_world, tmp_path, gen, tiny_tokenizer, url)
    assert not (tmp_path / "table.md").exists()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_tiny_model(method, sample_world, tmp_path, tiny_model_dir, bm25_server):
    gen = HFPolicy(tiny_model_dir)
    out = run_eval(sample_world, tmp_path, gen, gen.tokenizer, bm25_server, method=method, limit=1)
    assert set(out["scores"]) == {"sample_nq", "sample_hotpotqa"}
    line = json.loads((tmp_path / "trajectories" / "sample_nq.jsonl").read_text())
    if method in ("rag", "ircot"):
        assert line["searches"] >= 1  # retrieval happened through the server
