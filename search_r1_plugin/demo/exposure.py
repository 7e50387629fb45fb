"""Reading or remembering: held-out EM split by whether training ever showed the answer.

Test questions of the learning world are about people no training question names, but a training
question's search returns its nearest passages, and some of those are a held-out person's birth record.
Every arm's RL rollouts show them (the Search-R1 arms mask them out of the loss; the no-mask arm trains on
them), so a policy could answer those held-out people from memory. It cannot answer the others that way:
on the people whose record no training search returns, only reading the passages at test time helps.

:func:`shown_people` asks the world's retrieval server what each training question's search returns (the
question as the query, the presets' top-k: the warm-started policy searches with the question);
:func:`split_em` splits one run's held-out one-hop EM by it, from verl's validation dump.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Iterable

# a one-hop question of the learning world ends with its subject; its answer is the subject's birth record
ONE_HOP = re.compile(r"What is the birth city of (\w+)\?")
QUESTION = re.compile(r"Question: (.*?\?)")


def write_exposure(world: dict, train_datasets: Iterable[str], retriever_url: str, path: Path) -> dict[str, list[str]]:
    """``{"held_out": [...], "shown": [...]}`` of the learning world, written to ``path`` (JSON)."""
    from search_r1_plugin.sandbox.format_demos import subject_of
    from search_r1_plugin.sandbox.learning_world import questions

    names = set(world["entities"].read_text().split())
    held_out = sorted({subject_of(q, names) for q in questions(world, "learn_nq", "test")})
    train = [q for d in train_datasets for q in questions(world, d, "train")]
    exposure = {"held_out": held_out, "shown": sorted(shown_people(train, held_out, retriever_url))}
    path.write_text(json.dumps(exposure, indent=1))
    return exposure


def birth_records(text: str) -> set[str]:
    """People whose ``<person> was born in <city>.`` sentence ``text`` holds."""
    return set(re.findall(r"(\w+) was born in \w+\.", text))


def shown_people(questions: Iterable[str], held_out: Iterable[str], retriever_url: str, topk: int | None = None) -> set[str]:
    """Held-out people whose birth record the search for one of ``questions`` returns (``topk``: the
    presets' ``search_r1.topk`` unless given)."""
    from search_r1_plugin.retrieval_client import RetrievalClient
    from search_r1_plugin.settings import SearchR1Config

    topk = topk or SearchR1Config().topk

    async def search_all() -> list[list[dict]]:
        client = RetrievalClient(retriever_url)
        try:
            return await client.search_batch(list(questions), topk)
        finally:
            await client.close()

    shown: set[str] = set()
    for results in asyncio.run(search_all()):
        for r in results:
            shown |= birth_records(r.get("document", r)["contents"])
    return shown & set(held_out)


def split_em(validation_dump: Path, held_out: Iterable[str], shown: set[str]) -> dict[str, tuple[float, int]]:
    """Held-out one-hop EM of one validation dump (verl's ``validation_data_dir/<step>.jsonl``), for the people
    ``shown`` and the others: ``{"shown": (em, n), "never": (em, n)}`` (em NaN where n is 0)."""
    held_out = set(held_out)
    scores: dict[str, list[float]] = {"shown": [], "never": []}
    for line in validation_dump.read_text().splitlines():
        row = json.loads(line)
        asked = QUESTION.findall(row["input"])
        one_hop = ONE_HOP.fullmatch(asked[-1]) if asked else None
        if one_hop and one_hop.group(1) in held_out:
            scores["shown" if one_hop.group(1) in shown else "never"].append(float(row.get("em", row["score"])))
    return {k: (sum(v) / len(v) if v else float("nan"), len(v)) for k, v in scores.items()}
