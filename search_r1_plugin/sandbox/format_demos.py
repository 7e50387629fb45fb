"""Warm-start demonstrations that teach the protocol, not the answers (``search-r1 demo --learn``).

A tiny random model never writes a tag, so RL from scratch sees reward 0 everywhere. These
demonstrations teach *how* to act, each with the real passages the retrieval server returns:

* Search-R1 format: search for the question's subject (the one name in the question), read what
  comes back, then — at random, half the time — search again for a random name seen in those
  passages, and answer with **a random name from the passages just read**. Which name answers the
  question, and when a second search helps, is left for RL: the warm start answers at chance.
* R1 format (no search): answer with a random name from the same passages, which the model never sees.
* RAG format (the passages retrieved for the question in the prompt, as ``prepare-data --template rag``
  writes them): answer with a random name from the Search-R1 demonstration's first passages.

One warm-started checkpoint serves every arm, so the arms start from the same weights; each arm's
starting point is that checkpoint's validation EM under the arm's own prompt.
"""

from __future__ import annotations

import random
import re
from typing import Awaitable, Callable, Iterable, Sequence

from search_r1_plugin.protocol import format_docs, format_observation, make_messages
from search_r1_plugin.sandbox.tiny_model import Demonstration

Retrieve = Callable[[str], Awaitable[list[dict]]]

THINK_SEARCH = "<think> I need to search. </think>\n"
THINK_ANSWER = "<think> I can answer now. </think>\n"


def names_in(text: str, names: set[str]) -> list[str]:
    """The entity names in ``text``, in order of first appearance."""
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z]+", text):
        if word in names and word not in seen:
            seen.append(word)
    return seen


def subject_of(question: str, names: set[str]) -> str:
    found = names_in(question, names)
    if len(found) != 1:
        raise ValueError(f"a question of the learning world names exactly one entity, got {found} in {question!r}")
    return found[0]


def _contents(results: Sequence[dict]) -> str:
    return " ".join(r.get("document", r)["contents"] for r in results)


async def format_demonstrations(
    questions: Iterable[str], retrieve: Retrieve, names: Iterable[str], seed: int = 0, second_search: float = 0.5
) -> list[Demonstration]:
    """Search-R1, R1 and RAG demonstrations for each question (see the module docstring)."""
    rng = random.Random(seed)
    names = set(names)
    demos: list[Demonstration] = []
    for question in questions:
        subject = subject_of(question, names)
        first = await retrieve(subject)
        candidates = [n for n in names_in(_contents(first), names) if n != subject] or [subject]
        segments = [(f"{THINK_SEARCH}<search> {subject} </search>", True), (format_observation(first), False)]
        read = first
        if rng.random() < second_search:
            hop = rng.choice(candidates)
            read = await retrieve(hop)
            segments += [(f"{THINK_SEARCH}<search> {hop} </search>", True), (format_observation(read), False)]
        pool = [n for n in names_in(_contents(read), names) if n != subject] or candidates
        answer = f"{THINK_ANSWER}<answer> {rng.choice(pool)} </answer>"
        demos.append((make_messages(question)[0]["content"], [*segments, (answer, True)]))
        guess = f"{THINK_ANSWER}<answer> {rng.choice(candidates)} </answer>"
        demos.append((make_messages(question, "r1")[0]["content"], [(guess, True)]))
        rag_prompt = make_messages(question, "rag", format_docs(await retrieve(question)))[0]["content"]
        demos.append((rag_prompt, [(f"{THINK_ANSWER}<answer> {rng.choice(candidates)} </answer>", True)]))
    return demos
