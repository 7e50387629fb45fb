"""The learning demo's world and warm start: retrieval is necessary, test people are held out, and the
warm start teaches the format at chance accuracy, never the answers."""

import asyncio
import json
import random
import re

import pytest

from search_r1_plugin.protocol import make_messages
from search_r1_plugin.sandbox.format_demos import (
    DRILL_QUESTION,
    THINK_ANSWER,
    THINK_SEARCH,
    Recombiner,
    copy_drills,
    format_demonstrations,
    names_in,
    subject_of,
)
from search_r1_plugin.sandbox.learning_world import generate_learning_world


@pytest.fixture(scope="module")
def world():
    return generate_learning_world(seed=3)


def test_test_questions_are_about_people_no_training_question_names(world):
    names = set(world.entity_names())
    subjects = {
        split: {subject_of(q["question"], names) for d in world.questions.values() for q in d[split]} for split in ("train", "test")
    }
    assert subjects["train"] and subjects["test"] and not subjects["train"] & subjects["test"]
    for dataset in world.questions.values():
        for split in ("train", "test"):
            for q in dataset[split]:
                assert q["golden_answers"][0] in names  # every answer is a name, written in some passage
    corpus = " ".join(p["contents"] for p in world.passages)
    assert all(n in corpus for n in names)


def fake_retriever(world):
    """Top-3 passages that mention a name of the query (what the real server returns: measured in
    docs/learning.md), as the server's result rows."""
    names = set(world.entity_names())

    async def retrieve(query):
        wanted = set(names_in(query, names))
        hits = [p for p in world.passages if wanted & set(re.findall(r"[A-Za-z]+", p["contents"]))]
        return [{"document": p, "score": 1.0} for p in hits[:3]]

    return retrieve


def test_warm_start_answers_are_read_names_at_chance(world):
    names = world.entity_names()
    train = [q for d in world.questions.values() for q in d["train"]]
    demos = asyncio.run(format_demonstrations([q["question"] for q in train], fake_retriever(world), names, world.passages, seed=1))
    search_r1 = [d for d in demos if "search engine" in d[0]]
    assert len(search_r1) == len(train) and 0.2 < (len(demos) - len(train)) / 2 / len(train) < 0.5  # baselines for ~1 in 3
    gold = {json.dumps(q["question"]): q["golden_answers"][0] for q in train}
    correct = 0
    for (prompt, segments), question in zip(search_r1, [q["question"] for q in train]):
        answer = re.search(r"<answer> (\w+) </answer>", segments[-1][0]).group(1)
        shown = " ".join(text for text, trained in segments if not trained)
        assert answer in names_in(shown, set(names))  # "answer with something you read"
        assert segments[0][0].endswith(f"<search> {question} </search>")  # it searches with the question
        correct += answer == gold[json.dumps(question)]
    assert correct / len(train) < 0.3  # chance, not the skill RL must learn


def test_copy_drills_make_every_name_one_the_model_writes(world):
    names = world.entity_names()
    people = [p["name"] for p in world.people]
    questions = [q["question"] for q in world.questions["learn_nq"]["train"]]
    drills = copy_drills(questions, world.passages, names, rounds=10, seed=0, practice=world.practice, people=people)
    written = " ".join(text for _, segments in drills for text, _ in segments)
    assert set(names) <= set(re.findall(r"<answer> (\w+) </answer>", written))  # every name of the corpus
    searched = [re.search(r"<search> (.*) </search>", d[1][0][0]).group(1) for d in drills if "<search>" in d[1][0][0]]
    assert {n for q in searched for n in re.findall(r"\w+", q)} >= set(world.practice) | set(people)
    evaluated = {q["question"] for d in world.questions.values() for split in d.values() for q in split}
    assert not set(searched) & evaluated  # no drill is a question of the world: people only in DRILL_QUESTION
    assert all(q == DRILL_QUESTION.format(name=q.split()[-1][:-1]) for q in searched if set(re.findall(r"\w+", q)) & set(people))
    for prompt, [(text, trained)] in drills:
        assert trained and text.startswith((THINK_ANSWER, THINK_SEARCH))
        question = prompt.rsplit("Question: ", 1)[1].strip()
        assert len(prompt) < 400 or prompt == make_messages(question)[0]["content"]
        if text.startswith(THINK_SEARCH):  # the search is the question itself
            assert text.endswith(f"<search> {question} </search>")
        else:  # a name read in the prompt, not the question's answer
            assert re.search(r"<answer> (\w+) </answer>", text).group(1) in names_in(prompt.rsplit("Question:", 1)[0], set(names))


def test_copy_drills_tell_no_fact_of_the_world(world):
    """The drills show every passage ten times: were they the real passages, a tiny model would learn who was
    born where (it did: the R1 arm, which never searches, then answered held-out people right). Each round's
    passages are recombined, so a person appears beside their real city about as often as beside any other."""
    names = world.entity_names()
    people = [p["name"] for p in world.people]
    questions = [q["question"] for q in world.questions["learn_nq"]["train"]]
    drills = copy_drills(questions, world.passages, names, rounds=10, seed=0, practice=world.practice, people=people)
    born = dict(re.findall(r"(\w+) was born in (\w+)\.", " ".join(p["contents"] for p in world.passages)))
    shown = re.findall(r"(\w+) was born in (\w+)\.", " ".join(prompt for prompt, _ in drills))
    assert len(shown) > 5 * len(born)  # every person's birth sentence, several times
    real = sum(born[person] == city for person, city in shown) / len(shown)
    assert real < 3 / len(world.cities), real  # chance is about 1 / (number of cities)
    assert {p for p, _ in shown} == set(born) and {c for _, c in shown} == set(born.values())  # same sentences, same names


def test_format_demonstrations_tell_no_fact_of_the_world(world):
    """Every passage a demonstration shows is recombined: with the real ones, a demonstration whose second
    search was a held-out person showed that person's birth record beside an answer drawn from it, and the R1
    arm, which never searches, answered mostly the same held-out people right across three seeds."""
    names = world.entity_names()
    train = [q["question"] for d in world.questions.values() for q in d["train"]]
    demos = asyncio.run(format_demonstrations(train, fake_retriever(world), names, world.passages, seed=1))
    born = dict(re.findall(r"(\w+) was born in (\w+)\.", " ".join(p["contents"] for p in world.passages)))
    text = " ".join(prompt + " ".join(t for t, _ in segments) for prompt, segments in demos)
    shown = re.findall(r"(\w+) was born in (\w+)\.", text)
    assert len(shown) > len(born)
    real = sum(born[person] == city for person, city in shown) / len(shown)
    assert real < 3 / len(world.cities), real  # chance is about 1 / (number of cities); 1.0 with real passages
    test_people = {q["question"].rstrip("?").split()[-1] for q in world.questions["learn_nq"]["test"]}
    assert {p for p, _ in shown} & test_people  # held-out people's records are shown (second searches), recombined
    # --demo-passages trained-on-real: the training people's passages as they are, every other one recombined
    kept = {q.rstrip("?").split()[-1] for q in train}
    demos = asyncio.run(format_demonstrations(train, fake_retriever(world), names, world.passages, seed=1, shown_as_they_are=kept))
    text = " ".join(prompt + " ".join(t for t, _ in segments) for prompt, segments in demos)
    shown = re.findall(r"(\w+) was born in (\w+)\.", text)
    of_kept = [born[p] == c for p, c in shown if p in kept]
    of_others = [born[p] == c for p, c in shown if p not in kept]
    assert of_kept and all(of_kept)
    assert len(of_others) > 20 and sum(of_others) / len(of_others) < 3 / len(world.cities)
    with pytest.raises(ValueError, match="not from the corpus"):  # a passage it cannot recombine is never shown as it is
        person, city = world.people[0]["name"], world.cities[0]["name"]
        Recombiner(world.passages, names)([{"id": "x", "contents": f'"{person}"\n{person} was crowned in {city}.'}], random.Random(0))


def test_arms_run_apart_make_one_table(tmp_path):
    """``search-r1 demo --learn --from-runs A B``: arms (and seeds) run in separate ``--out`` folders, read back
    from verl's metrics files into one table and one set of curves; a folder that is no run is a clear error."""
    from search_r1_plugin.demo.learning import main

    def fake_run(folder, arm, seed, start, end):
        run_dir = folder / f"seed{seed}" / arm
        run_dir.mkdir(parents=True)
        rows = []
        for step, em in ((0, start), (40, end)):
            data = {f"val-aux/{d}/em/mean@1": em if d == "learn_nq" else 0.0 for d in ("learn_nq", "learn_hotpotqa", "learn_nq_seen")}
            data["val-aux/learn_nq/answer_read/mean@1"] = 2 * em  # answers read: a column of its own
            rows.append({"step": step, "data": {**data, **({"critic/score/mean": end} if step else {})}})
        (run_dir / "main_ppo_metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (folder / "learning.json").write_text(json.dumps([{"arm": arm, "seed": seed, "seconds": 60.0, "returncode": 0}]))

    fake_run(tmp_path / "a", "grpo", 0, 0.02, 0.46)
    fake_run(tmp_path / "b", "r1", 0, 0.04, 0.10)
    # the reading-or-remembering split, from the folder's exposure.json and the run's last validation dump
    (tmp_path / "a" / "exposure.json").write_text(json.dumps({"held_out": ["Kalomi", "Tilsaro"], "shown": ["Kalomi"]}))
    rows = [{"input": f"Question: What is the birth city of {p}?\n", "score": em} for p, em in (("Kalomi", 1.0), ("Tilsaro", 0.0))]
    (tmp_path / "a" / "seed0" / "grpo" / "validation").mkdir()
    (tmp_path / "a" / "seed0" / "grpo" / "validation" / "40.jsonl").write_text("\n".join(map(json.dumps, rows)))
    assert main(["--from-runs", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "all")]) == 0
    table = (tmp_path / "all" / "learning.md").read_text()
    assert "| Search-R1 (GRPO) | 0.020 → 0.460 |" in table and "| R1 (GRPO, no search) | 0.040 → 0.100 |" in table
    assert "| 0.04 → 0.92 |" in table  # GRPO's answers read, start → end
    assert "(shown: 1 people; never shown: 1)" in table and "- Search-R1 (GRPO): seed 0: shown 1.000, never shown 0.000" in table
    assert (tmp_path / "all" / "learning_curves.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no learning.json"):
        main(["--from-runs", str(tmp_path), "--out", str(tmp_path / "x")])


def test_arms_run_side_by_side_longest_first(tmp_path):
    """``--jobs 2``: two runs at once (both must be running before either may finish), the costliest arm
    starts first, and the results come back in the order the table lists them."""
    import threading

    from search_r1_plugin.demo.learning import ARMS, run_concurrently

    started, both_running = [], threading.Barrier(2, timeout=30)

    def fake(arm, seed):
        started.append(arm.name)
        if len(started) <= 2:
            both_running.wait()  # times out (BrokenBarrierError) unless the first two run at once
        return (arm.name, seed)

    runs = [(ARMS[a], s) for s in (0, 1) for a in ("r1", "grpo", "ppo", "rag")]
    assert run_concurrently(runs, 2, fake) == [(a.name, s) for a, s in runs]
    assert started[:2] == ["ppo", "ppo"] and started[-2:] == ["rag", "rag"]
    assert run_concurrently(runs[:1], 1, lambda arm, seed: arm.name) == ["r1"]


def test_exposure_splits_held_out_people_by_what_training_searches_return(tmp_path):
    """The reading-or-remembering split of the learning report: which held-out people's birth records the
    real server returns for training questions, and one run's held-out one-hop EM on either side of it."""
    from search_r1_plugin.demo.exposure import birth_records, split_em, write_exposure
    from search_r1_plugin.retrieval_client import RetrievalClient
    from search_r1_plugin.sandbox.learning_world import write_learning_world
    from search_r1_plugin.sandbox.stack import world_retriever

    world = write_learning_world(tmp_path / "world")
    train = [json.loads(line)["question"] for line in open(world["learn_nq/train"])]
    with world_retriever(world["corpus"], tmp_path / "server") as served:  # the demo's dense index
        exposure = write_exposure(world, ["learn_nq"], served.url, tmp_path / "exposure.json")

        async def first_results():
            client = RetrievalClient(served.url)
            try:
                return await client.search_batch(train, 3)
            finally:
                await client.close()

        returned = set().union(*(birth_records(r["document"]["contents"]) for rs in asyncio.run(first_results()) for r in rs))
    held_out, shown = exposure["held_out"], set(exposure["shown"])
    assert json.loads((tmp_path / "exposure.json").read_text()) == exposure
    assert len(held_out) == 48 and not set(held_out) & {q.rstrip("?").split()[-1] for q in train}
    assert shown == returned & set(held_out) and 0 < len(shown) < len(held_out)

    # a validation dump as verl writes it: the prompt, the reward's extra info (em)
    never = [p for p in held_out if p not in shown]
    rows = [(p, "birth city", 1.0) for p in sorted(shown)[:2]] + [(sorted(shown)[2], "birth city", 0.0)]
    rows += [(never[0], "birth city", 1.0), (never[1], "birth country", 1.0)]  # a two-hop question is not counted
    dump = tmp_path / "40.jsonl"
    lines = [json.dumps({"input": f"… Question: What is the {k} of {p}?\n", "score": em, "em": em}) for p, k, em in rows]
    dump.write_text("\n".join(lines) + "\n")
    split = split_em(dump, held_out, shown)
    assert split["shown"] == (pytest.approx(2 / 3), 3) and split["never"] == (1.0, 1)
