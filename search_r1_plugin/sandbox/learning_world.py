"""A world where retrieval is necessary and reading is learnable by a tiny model (``search-r1 demo --learn``).

Fictional people, cities and countries, each name one word that the tiny model's tokenizer keeps as
one token (:func:`entity_names`), so "reading" is choosing which token of the retrieved passages to
copy. Passages are in the wiki-18 jsonl format:

* a birth record per person: ``"Kalomi" / Kalomi was born in Ravenor.``
* a mentor record per person: ``"Kalomi" / Kalomi studied under Tilsaro.``
* a page per city: ``"Ravenor" / Ravenor is a city in Quelmia.``

so a search returns several names (the person's city and mentor, the people they taught, other people
born in a city) and only one answers the question. Questions (FlashRAG rows) end with their subject
(``What is the birth city of Kalomi?``): one-hop (``learn_nq``: the birth city) and two-hop
(``learn_hotpotqa``: the birth country, which needs a second search for the city); the mentor records are
distractors. Train and test questions are about **disjoint people**: a validation question's subject never
appears in a training question. Answers are spread over many values (40 cities, 20 countries), so a policy
that cannot read (R1) gains at most a few points by guessing the commonest answer of the right type.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from search_r1_plugin.sandbox.world import write_jsonl

PEOPLE_SYLLABLES = "ka lo mi ra ven tor sa qui bel dun fa nim pel zar gu thi won bra cel dra ish mon yan ro".split()
PLACE_SYLLABLES = "vor dal mer quen stad hal brin kor lund wick fen gard mos tal ber".split()

# Every question ends with its subject, so a model that searches with the question copies the one name it
# has to copy from the same distance back whatever the person (a tiny model learns that copy quickly).
SEEN_MAX = 200  # training people's one-hop questions validated apart (all of them in the default world: 152)
QUESTIONS = {"city": "What is the birth city of {name}?", "country": "What is the birth country of {name}?"}


@dataclass
class LearningWorld:
    people: list[dict]
    cities: list[dict]
    countries: list[str]
    passages: list[dict]
    questions: dict[str, dict[str, list[dict]]]  # dataset -> split -> FlashRAG rows
    practice: list[str]  # made-up names in no passage and no question: warm-start drills only

    def entity_names(self) -> list[str]:
        return [p["name"] for p in self.people] + [c["name"] for c in self.cities] + self.countries


def _unique(rng: random.Random, syllables: list[str], parts: int, used: set[str], suffix: str = "") -> str:
    while True:
        name = ("".join(rng.choice(syllables) for _ in range(parts)) + suffix).capitalize()
        if name.lower() not in used:
            used.add(name.lower())
            return name


def generate_learning_world(
    num_people: int = 200, num_cities: int = 40, num_countries: int = 20, test_people: int = 48, practice: int = 400, seed: int = 0
):
    rng = random.Random(seed)
    used: set[str] = set()
    countries = [_unique(rng, PLACE_SYLLABLES, 2, used, "ia") for _ in range(num_countries)]
    cities = [{"name": _unique(rng, PLACE_SYLLABLES, 2, used), "country": countries[i % num_countries]} for i in range(num_cities)]
    people = [{"name": _unique(rng, PEOPLE_SYLLABLES, 3, used)} for _ in range(num_people)]
    for i, p in enumerate(people):
        p["city"] = cities[rng.randrange(num_cities)]
        p["mentor"] = people[rng.choice([j for j in range(num_people) if j != i])]["name"]

    passages: list[dict] = []

    def add(title: str, text: str) -> None:
        passages.append({"id": str(len(passages)), "contents": f'"{title}"\n{text}'})

    for p in people:
        add(p["name"], f"{p['name']} was born in {p['city']['name']}.")
        add(p["name"], f"{p['name']} studied under {p['mentor']}.")
    for c in cities:
        add(c["name"], f"{c['name']} is a city in {c['country']}.")

    order = list(range(num_people))
    rng.shuffle(order)
    test_ids = set(order[:test_people])
    questions: dict[str, dict[str, list[dict]]] = {"learn_nq": {"train": [], "test": []}, "learn_hotpotqa": {"train": [], "test": []}}
    for i, p in enumerate(people):
        split = "test" if i in test_ids else "train"
        name = p["name"]
        questions["learn_nq"][split].append(
            {"id": f"city_{i}", "question": QUESTIONS["city"].format(name=name), "golden_answers": [p["city"]["name"]]}
        )
        questions["learn_hotpotqa"][split].append(
            {"id": f"country_{i}", "question": QUESTIONS["country"].format(name=name), "golden_answers": [p["city"]["country"]]}
        )
    # Made-up names for the warm start's copy drills: with only the training people to copy, a tiny model
    # memorises each one instead of learning to copy; these make that impossible (format_demos.copy_drills).
    drill_names = [_unique(rng, PEOPLE_SYLLABLES, 3, used) for _ in range(practice)]
    return LearningWorld(people, cities, countries, passages, questions, drill_names)


def write_learning_world(out: str | Path, **kwargs) -> dict[str, Path]:
    """``corpus.jsonl``, ``{dataset}/{split}.jsonl`` (and ``learn_nq_seen/test.jsonl``: the training people's
    one-hop questions, validated apart), ``entities.txt`` (one name a line), ``people.txt`` (the
    people among them) and ``practice.txt`` (made-up names for the warm start's drills) under ``out``."""
    out = Path(out)
    world = generate_learning_world(**kwargs)
    paths = {"corpus": out / "corpus.jsonl", "entities": out / "entities.txt", "practice": out / "practice.txt"}
    paths["people"] = out / "people.txt"
    write_jsonl(paths["corpus"], world.passages)
    paths["people"].write_text("\n".join(p["name"] for p in world.people) + "\n")
    paths["entities"].write_text("\n".join(world.entity_names()) + "\n")
    paths["practice"].write_text("\n".join(world.practice) + "\n")
    for dataset, splits in world.questions.items():
        for split, rows in splits.items():
            paths[f"{dataset}/{split}"] = out / dataset / f"{split}.jsonl"
            write_jsonl(paths[f"{dataset}/{split}"], rows)
    # The one-hop questions about the training people, as a validation set of their own: EM on people a policy
    # trained on against EM on people it never saw tells reading from remembering.
    # Capped at SEEN_MAX questions so that a large world's validation stays as cheap as the default one's.
    paths["learn_nq_seen/test"] = out / "learn_nq_seen" / "test.jsonl"
    write_jsonl(paths["learn_nq_seen/test"], world.questions["learn_nq"]["train"][:SEEN_MAX])
    return paths


def questions(world: dict[str, Path], dataset: str, split: str) -> list[str]:
    """The question texts of one ``{dataset}/{split}`` file of a world :func:`write_learning_world` wrote."""
    return [json.loads(line)["question"] for line in open(world[f"{dataset}/{split}"])]
