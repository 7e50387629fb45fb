"""A deterministic fictional world: a wiki-18-style corpus and QA sets that need retrieval.

Entities (people, cities, countries, rivers) have invented names, so a model
cannot know the answers without searching. Each fact is written as passages in
the wiki-18 jsonl format (``{"id", "contents": "\\"Title\\"\\ntext"}``), plus
distractor passages. Questions come in FlashRAG format
(``{"id", "question", "golden_answers"}``): single-hop (NQ-like) and two-hop
(HotpotQA-like). The same world backs the tests, the benchmarks and the
README's main command.

    python -m search_r1_plugin.sandbox.world --out data/sample
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "sa",
    "qui",
    "bel",
    "dun",
    "ez",
    "or",
    "fa",
    "nim",
    "pel",
    "zar",
    "gu",
    "thi",
    "won",
    "bra",
    "cel",
    "dra",
    "ish",
    "mon",
    "ul",
    "yan",
]
OCCUPATIONS = ["painter", "chemist", "poet", "architect", "astronomer", "composer", "engineer", "sculptor"]


@dataclass
class World:
    passages: list[dict]
    single_hop: list[dict]
    multi_hop: list[dict]


def _name(rng: random.Random, parts: int, used: set[str]) -> str:
    while True:
        name = _plain(rng, parts)
        if name not in used:
            used.add(name)
            return name


def _plain(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def generate_world(num_people: int = 200, num_cities: int = 40, num_countries: int = 12, seed: int = 0) -> World:
    rng = random.Random(seed)
    used: set[str] = set()
    countries = [_name(rng, 3, used) + "ia" for _ in range(num_countries)]
    rivers = [_name(rng, 2, used) + " River" for _ in range(num_countries)]
    cities = [{"name": _name(rng, 3, used), "country": rng.choice(countries), "founded": rng.randint(900, 1900)} for _ in range(num_cities)]
    capitals = {}
    for c in countries:
        options = [city for city in cities if city["country"] == c]
        if options:
            capitals[c] = options[0]["name"]
    people = []
    for _ in range(num_people):
        # Full names are unique; a name that is also a place is skipped by _name's shared ``used`` set.
        while (full := f"{_plain(rng, 2)} {_plain(rng, 2)}") in used:
            pass
        used.add(full)
        people.append({"name": full, "city": rng.choice(cities), "year": rng.randint(1700, 1990), "job": rng.choice(OCCUPATIONS)})

    passages: list[dict] = []

    def add(title: str, text: str) -> None:
        passages.append({"id": str(len(passages)), "contents": f'"{title}"\n{text}'})

    for i, country in enumerate(countries):
        cap = capitals.get(country, "no capital")
        add(country, f"{country} is a country whose capital is {cap}. The {rivers[i]} flows through {country}.")
    for city in cities:
        add(city["name"], f"{city['name']} is a city in {city['country']}. It was founded in {city['founded']}.")
    for p in people:
        add(p["name"], f"{p['name']} was a {p['job']} born in {p['city']['name']} in {p['year']}.")
        add(p["name"], f"{p['name']} is remembered for work as a {p['job']}; little else is recorded.")
    for _ in range(num_people):  # distractors that mention entities without the asked facts
        a, b = rng.sample(people, 2)
        add(f"{a['name']} and {b['name']}", f"{a['name']} once corresponded with {b['name']} about {rng.choice(OCCUPATIONS)}s.")

    single, multi = [], []
    for i, p in enumerate(people):
        kind = i % 3
        if kind == 0:
            q, a = f"In which city was {p['name']} born", p["city"]["name"]
        elif kind == 1:
            q, a = f"In what year was {p['name']} born", str(p["year"])
        else:
            q, a = f"What was the occupation of {p['name']}", p["job"]
        single.append({"id": f"single_{i}", "question": q, "golden_answers": [a]})
        multi.append({"id": f"multi_{i}", "question": f"In which country was {p['name']} born", "golden_answers": [p["city"]["country"]]})
    for i, city in enumerate(cities):
        multi.append(
            {
                "id": f"multi_city_{i}",
                "question": f"When was the capital of {city['country']} founded",
                "golden_answers": [str(next(c["founded"] for c in cities if c["name"] == capitals[city["country"]]))],
            }
        )
    return World(passages, single, multi)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_world(out: str | Path, **kwargs) -> dict[str, Path]:
    """Write ``corpus.jsonl`` and FlashRAG-style ``{dataset}/{split}.jsonl`` files; return their paths."""
    out = Path(out)
    world = generate_world(**kwargs)
    paths = {"corpus": out / "corpus.jsonl"}
    write_jsonl(paths["corpus"], world.passages)
    for name, rows in (("sample_nq", world.single_hop), ("sample_hotpotqa", world.multi_hop)):
        cut = len(rows) // 2
        for split, part in (("train", rows[:cut]), ("test", rows[cut:])):
            paths[f"{name}/{split}"] = out / name / f"{split}.jsonl"
            write_jsonl(paths[f"{name}/{split}"], part)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="search-r1 sample-world", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data/sample")
    parser.add_argument("--num-people", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_world(args.out, num_people=args.num_people, seed=args.seed)
    for key, path in paths.items():
        print(f"{key}: {path}")


if __name__ == "__main__":
    main()
