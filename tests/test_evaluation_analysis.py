"""Evaluation that explains: failure labels, retrieval noise, record/replay, manifest and compare."""

import asyncio
import json
import random

import pytest

from search_r1_plugin.evaluation.attribution import attribute, breakdown, gold_in
from search_r1_plugin.evaluation.manifest import compare
from search_r1_plugin.evaluation.retrievers import CorpusSampler, Noisy, Replay, RetrievalOptions
from search_r1_plugin.policy import TextPolicy
from tests.test_evaluation import answers_of, oracle_policy, run_eval


def test_gold_in_passage_by_em_normalisation_and_by_substring():
    assert gold_in(["The EIFFEL Tower, in Paris!"], ["eiffel tower"])  # only after normalisation
    assert not gold_in(["The Eiffel-Tower"], ["eiffel tower"])  # as EM: punctuation is removed, not spaced
    assert gold_in(["Born in the city of Paris."], ["The Paris"])  # articles dropped on both sides
    assert not gold_in(["a Parisian painter"], ["Paris"]) and gold_in(["a Parisian painter"], ["Paris"], "sub")
    assert not gold_in([], ["x"]) and not gold_in(["anything"], [""])


@pytest.mark.parametrize(
    "golds, answer, em, searches, label, over, first",
    [
        (["Paris"], "Paris", 1.0, [["Paris is the capital"]], "correct", False, 1),
        (["Paris"], None, 0.0, [["Paris is the capital"]], "format_failure", False, 1),
        (["Paris"], "Lyon", 0.0, [], "no_search", False, None),
        (["Paris"], "Lyon", 0.0, [["Lyon is big"], ["Nice is warm"]], "retrieval_miss", False, None),
        (["Paris"], "Lyon", 0.0, [["Lyon is big"], ["PARIS, France."]], "reading_miss", False, 2),  # miss, then found at turn 2
        (["Paris"], "Paris", 1.0, [["Paris is here"], ["more"], ["more"]], "correct", True, 1),  # kept searching after it
        (["Paris"], "Lyon", 0.0, [["Parisian"]], "retrieval_miss", False, None),  # sub-EM hit only: labels use EM's rule
    ],
)
def test_failure_labels(golds, answer, em, searches, label, over, first):
    a = attribute(golds, answer, em, searches)
    assert (a["label"], a["over_search"], a["first_hit_search"]) == (label, over, first)


def test_breakdown_shares_and_recall_per_search():
    recs = [
        attribute(["rome"], "rome", 1.0, [["rome b"]]),
        attribute(["rome"], "x", 0.0, [["b"], ["rome"]]),
        attribute(["rome"], "x", 0.0, [["b"]]),
        attribute(["rome"], None, 0.0, []),
    ]
    b = breakdown(recs)
    assert b["correct"] == b["reading_miss"] == b["retrieval_miss"] == b["format_failure"] == 0.25 and b["no_search"] == 0
    assert b["recall@search1"] == pytest.approx(1 / 3) and b["recall@search2"] == 1.0
    assert sum(b[k] for k in ("correct", "format_failure", "no_search", "retrieval_miss", "reading_miss")) == 1.0


def test_eval_writes_labels_breakdown_and_manifest(sample_world, tmp_path, tiny_tokenizer, bm25_server):
    answers = answers_of(sample_world)
    first = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:4]
    gen = TextPolicy(tiny_tokenizer, oracle_policy(answers, set(first[:2])))
    out = run_eval(sample_world, tmp_path, gen, tiny_tokenizer, bm25_server, limit=4)
    lines = [json.loads(x) for x in (tmp_path / "trajectories" / "sample_nq.jsonl").read_text().splitlines()]
    by_q = {r["question"]: r for r in lines}
    assert {by_q[q]["failure"]["label"] for q in first[:2]} == {"correct"}
    wrong = {by_q[q]["failure"]["label"] for q in first[2:]}
    assert wrong <= {"reading_miss", "retrieval_miss"} and all(len(by_q[q]["retrievals"]) == 1 for q in first)
    f = out["scores"]["sample_nq"]["failures"]
    assert f["correct"] == 0.5 and f["correct"] + f["reading_miss"] + f["retrieval_miss"] == 1.0
    assert "Why answers failed" in (tmp_path / "table.md").read_text() and "reading_miss" in (tmp_path / "table.md").read_text()
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["search"]["topk"] == 3 and m["search"]["response_length"] == 5 * 60 + 4 * 500  # max_turn_tokens=60 in run_eval
    assert m["questions"]["sample_nq"]["n"] == 4 and len(m["questions"]["sample_nq"]["sha256"]) == 16
    assert m["retriever"]["documents"] > 0 and "bm25" in m["retriever"]["description"].lower()
    assert m["versions"]["verl"] and m["retrieval"]["noise"] == 0.0
    page = (tmp_path / "report.html").read_text()
    assert_balanced_html(page)
    assert page.count('src="data:image/png;base64,') == 1  # the failure breakdown (no robustness curve here)
    assert '<span class="injected">' in page and "&lt;information&gt;" in page and "<information>" not in page
    expected = 0  # up to 3 trajectories per failure label and dataset
    for name in ("sample_nq", "sample_hotpotqa"):
        labels = [json.loads(x)["failure"]["label"] for x in (tmp_path / "trajectories" / f"{name}.jsonl").read_text().splitlines()]
        expected += sum(min(3, labels.count(label)) for label in set(labels))
    assert page.count('<pre class="trajectory">') == expected


def assert_balanced_html(page: str) -> None:
    """Every element opened is closed, in order (void elements aside): a structural check of a page."""
    from html.parser import HTMLParser

    void = {"meta", "img", "br", "hr", "link", "input"}

    class Checker(HTMLParser):
        stack: list = []

        def handle_starttag(self, tag, attrs):
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack.pop() == tag, tag

    checker = Checker()
    checker.stack = []
    checker.feed(page)
    assert checker.stack == [] and page.startswith("<!DOCTYPE html>")


def test_replay_reproduces_the_table_with_the_server_stopped(sample_world, tmp_path, tiny_tokenizer, tiny_model_dir, bm25_args):
    from search_r1_plugin.sandbox.server_process import free_port, retrieval_server

    answers = answers_of(sample_world)
    right = set(list(answers)[::2])
    record = tmp_path / "record.jsonl"
    with retrieval_server(bm25_args, tmp_path / "server.log") as url:
        gen = TextPolicy(tiny_tokenizer, oracle_policy(answers, right))
        live = run_eval(sample_world, tmp_path / "live", gen, tiny_tokenizer, url, retrieval=RetrievalOptions(record=str(record)))
    stopped = f"http://127.0.0.1:{free_port()}"  # nothing listens here now
    gen = TextPolicy(tiny_tokenizer, oracle_policy(answers, right))
    replayed = run_eval(sample_world, tmp_path / "replay", gen, tiny_tokenizer, stopped, retrieval=RetrievalOptions(replay=str(record)))
    assert (tmp_path / "live" / "table.md").read_text() == (tmp_path / "replay" / "table.md").read_text()
    assert live["scores"] == replayed["scores"]
    for name in ("sample_nq", "sample_hotpotqa"):
        a = [json.loads(x)["response"] for x in (tmp_path / "live" / "trajectories" / f"{name}.jsonl").read_text().splitlines()]
        b = [json.loads(x)["response"] for x in (tmp_path / "replay" / "trajectories" / f"{name}.jsonl").read_text().splitlines()]
        assert sorted(a) == sorted(b)
    with pytest.raises(KeyError, match="not in the retrieval record"):
        asyncio.run(Replay(record)("a query nobody made", 3))
    # training reads the same file (search_r1.retrieval_replay), through verl's AgentLoopWorker, no server
    from search_r1_plugin.policy import PolicyServer
    from search_r1_plugin.sandbox.verl_harness import run_agent_loop_batch
    from tests.test_agent_loop_verl import load_questions, scripted_policy, trainer_config

    rows = load_questions(sample_world, 3)
    config = trainer_config(tiny_model_dir, stopped, f"search_r1.retrieval_replay={record}")
    out = run_agent_loop_batch(config, PolicyServer(scripted_policy(tiny_tokenizer, rows)), rows)
    recorded = {json.loads(x)["query"]: json.loads(x)["results"] for x in record.read_text().splitlines()}
    for b, row in enumerate(rows):
        text = tiny_tokenizer.decode(out.batch["responses"][b][out.batch["attention_mask"][b, -out.batch["responses"].shape[1] :] == 1])
        first = recorded[row["question"]][0]
        assert first.get("document", first)["contents"].split("\n", 1)[1][:30] in text
    assert out.batch["rm_scores"].sum() == len(rows)
    table, warnings = compare([tmp_path / "live", tmp_path / "replay"], tmp_path / "cmp.png")
    assert "| live |" in table and "| replay |" in table and (tmp_path / "cmp.png").stat().st_size > 1000
    assert any("retrieval.replay" in w for w in warnings)  # a replayed run says so


def test_compare_names_the_fields_that_differ(sample_world, tmp_path, tiny_tokenizer, bm25_server):
    answers = answers_of(sample_world)
    gen = TextPolicy(tiny_tokenizer, oracle_policy(answers, set(answers)))
    run_eval(sample_world, tmp_path / "a", gen, tiny_tokenizer, bm25_server, limit=2)
    run_eval(sample_world, tmp_path / "b", gen, tiny_tokenizer, bm25_server, limit=2)
    run_eval(sample_world, tmp_path / "c", gen, tiny_tokenizer, bm25_server, limit=3)
    assert compare([tmp_path / "a", tmp_path / "b"])[1] == []  # same data, same retriever: comparable
    _, warnings = compare([tmp_path / "a", tmp_path / "c"])
    assert any(w.startswith("not comparable: limit differs") for w in warnings)
    assert any("questions.sample_nq.n" in w for w in warnings)
    with pytest.raises(FileNotFoundError, match="not a finished"):
        compare([tmp_path / "a", tmp_path / "nothing"])


def test_noise_replaces_passages_seeded_and_drop_top1(sample_world):
    corpus = CorpusSampler(sample_world["corpus"])
    docs = [{"document": {"id": str(i), "contents": f'"t{i}"\nreal passage {i}'}, "score": 1.0} for i in range(4)]

    async def server(query, k):
        return docs[:k]

    clean = asyncio.run(Noisy(server, 0.0, corpus)("q", 3))
    assert clean == docs[:3]
    noisy = asyncio.run(Noisy(server, 1.0, corpus, seed=7)("q", 3))
    assert all("real passage" not in d["document"]["contents"] for d in noisy) and len(noisy) == 3
    assert noisy == asyncio.run(Noisy(server, 1.0, corpus, seed=7)("q", 3))  # seeded by the query: a rerun sees the same
    half = [asyncio.run(Noisy(server, 0.5, corpus, seed=s)("q", 3)) for s in range(40)]
    replaced = sum("real passage" not in d["document"]["contents"] for r in half for d in r) / 120
    assert 0.3 < replaced < 0.7
    assert asyncio.run(Noisy(server, 0.0, None, drop_top1=True)("q", 3)) == docs[1:4]
    with pytest.raises(ValueError, match="needs the corpus"):
        Noisy(server, 0.5, None)
    rng = random.Random(0)
    assert all("contents" in corpus.sample(rng) for _ in range(50))
