"""Warm-start demonstrations that teach the protocol, not the answers (``search-r1 demo --learn``).

A tiny random model never writes a tag, so RL from scratch sees reward 0 everywhere. These
demonstrations teach *how* to act, each with the passages the retrieval server returns for its searches,
**recombined** (:class:`Recombiner`: the same sentences about the same subjects, every other name drawn
at random from the same place elsewhere in the corpus), so that no demonstration tells a fact of the world:

* Search-R1 format: search with the question itself, read what comes back, then — at random, half
  the time — search again for a random name seen in those passages, and answer with **a random name
  (other than the question's subject) from the passages just read**. Which name answers the
  question, and when a second search helps, is left for RL: the warm start answers at chance.
* R1 format (no search): answer with a random name from the same passages, which the model never sees.
* RAG format (the passages retrieved for the question in the prompt, as ``prepare-data --template rag``
  writes them): answer with a random name from the Search-R1 demonstration's first passages.
* Copy drills (:func:`copy_drills`, the warm start's first phase): short prompts that teach copying —
  a question into a search (about made-up people with the world's question templates, and about every
  person of the corpus with a question the evaluation never asks), any name of random passages into an
  answer. A tiny model only copies names it has been trained to write, and learns copying over short
  contexts far faster than over the protocol's long prompt; the drills make every name of the corpus —
  test people's included — one it writes, without a question of the world about them and without
  telling which name answers what. The drills' passages are the corpus's recombined, drawn anew each
  round, so they teach copying and no fact.

Why everything shown is recombined: shown the real passages ten times in the drills, the warm-started model
learned people's birth cities in its weights, and the R1 arm, which never searches, answered 10 of 48
held-out people right after 4 steps. With only the drills recombined, the Search-R1 demonstrations' second
search (a random name of the first passages: often a held-out person who taught a training person) still
showed held-out people's real birth records beside answers drawn from them, and R1 still answered mostly
the same held-out people right across three seeds (docs/learning.md).

One warm-started checkpoint serves every arm, so the arms start from the same weights; each arm's
starting point is that checkpoint's validation EM under the arm's own prompt.
"""

from __future__ import annotations

import random
import re
from typing import Awaitable, Callable, Iterable, Sequence

from search_r1_plugin.protocol import format_docs, format_observation, make_messages
from search_r1_plugin.sandbox.learning_world import QUESTIONS
from search_r1_plugin.sandbox.tiny_model import Demonstration

SearchTopK = Callable[[str], Awaitable[list[dict]]]  # a search at the demonstrations' fixed top-k

THINK_SEARCH = "<think> I need to search. </think>\n"
THINK_ANSWER = "<think> I can answer now. </think>\n"
BASELINE_SHARE = 1 / 3  # questions that also get R1- and RAG-format demonstrations


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
    questions: Iterable[str],
    retrieve: SearchTopK,
    names: Iterable[str],
    corpus: Sequence[dict],
    seed: int = 0,
    second_search: float = 0.5,
    shown_as_they_are: Iterable[str] = (),
) -> list[Demonstration]:
    """Search-R1, R1 and RAG demonstrations for each question (see the module docstring); ``names`` are
    every name a question or passage may hold, ``corpus`` the passages the retriever searches (what every
    shown passage is recombined from). Questions are retrieved for concurrently.

    ``shown_as_they_are``: subjects whose passages are shown unchanged — the people the training questions
    name, whose facts RL sees anyway. Their real passages let the model lower the loss by copying the names
    of the passages it reads; every other passage (held-out people, cities) stays recombined, so nothing
    shown tells a fact about a person or city only the evaluation asks about."""
    import asyncio

    names = set(names)
    recombine = Recombiner(corpus, names, keep=shown_as_they_are)
    questions = list(questions)
    per_question = await asyncio.gather(
        *[_demonstrations(q, retrieve, names, recombine, random.Random(f"{seed}/{q}"), second_search) for q in questions]
    )
    return [demo for demos in per_question for demo in demos]


async def _demonstrations(
    question: str, retrieve: SearchTopK, names: set[str], recombine: Recombiner, rng: random.Random, second_search: float
) -> list[Demonstration]:
    async def search(query: str) -> list[dict]:
        # the real search's passages, each recombined: a demonstration shows what a search returns, never
        # who was born where (the answers are random names of these, so a real pairing shown would be
        # one the model could learn in its weights)
        results = await retrieve(query)
        shown = recombine([r.get("document", r) for r in results], rng)
        return [{**r, "document": doc} if "document" in r else doc for r, doc in zip(results, shown)]

    subject = subject_of(question, names)
    first = await search(question)
    candidates = [n for n in names_in(_contents(first), names) if n != subject] or [subject]
    segments = [(f"{THINK_SEARCH}<search> {question} </search>", True), (format_observation(first), False)]
    read = first
    if rng.random() < second_search:
        hop = rng.choice(candidates)
        read = await search(hop)
        segments += [(f"{THINK_SEARCH}<search> {hop} </search>", True), (format_observation(read), False)]
    pool = [n for n in names_in(_contents(read), names) if n != subject] or candidates
    answer = f"{THINK_ANSWER}<answer> {rng.choice(pool)} </answer>"
    guess = f"{THINK_ANSWER}<answer> {rng.choice(candidates)} </answer>"
    rag_prompt = make_messages(question, "rag", format_docs(await search(question)))[0]["content"]
    rag_answer = f"{THINK_ANSWER}<answer> {rng.choice(candidates)} </answer>"
    demos = [(make_messages(question)[0]["content"], [*segments, (answer, True)])]
    # The baselines' formats for one question in three: their first turn answers at once, and a tiny model
    # that sees it as often as the Search-R1 format stops searching under the Search-R1 prompt too.
    if rng.random() < BASELINE_SHARE:
        demos += [(make_messages(question, "r1")[0]["content"], [(guess, True)]), (rag_prompt, [(rag_answer, True)])]
    return demos


DRILL_QUESTION = "What is known about {name}?"  # a question the evaluation never asks


class Recombiner:
    """Passages with every name but the subject (the title) replaced by a random name that fills the same
    place of the same sentence somewhere in the corpus (``X was born in <a city>``): the same sentences and
    the same names, but no fact of the world. The places are learned from the whole corpus once; each call
    draws anew, so one passage shown twice tells two different things."""

    _WORDS = re.compile(r"[A-Za-z]+")

    def __init__(self, corpus: Sequence[dict], names: Iterable[str], keep: Iterable[str] = ()):
        self.names = set(names)
        self.keep = set(keep)  # subjects whose passages pass unchanged
        self.pools: dict[tuple[str, int], list[str]] = {}  # (sentence with its names taken out, place) -> names there
        for p in corpus:
            _, _, template, slots = self._parse(p)
            for i, name in enumerate(slots):
                self.pools.setdefault((template, i), []).append(name)

    def _parse(self, passage: dict) -> tuple[str, str, str, list[str]]:
        """Title, subject, the text with the subject as ``\\1`` and every other name as ``\\0``, and those names."""
        title, _, text = passage["contents"].partition("\n")
        subject = title.strip('"')
        found, between = self._WORDS.findall(text), self._WORDS.split(text)
        template = between[0] + "".join(("\1" if w == subject else "\0" if w in self.names else w) + b for w, b in zip(found, between[1:]))
        return title, subject, template, [w for w in found if w in self.names and w != subject]

    def __call__(self, passages: Sequence[dict], rng: random.Random) -> list[dict]:
        out = []
        for p in passages:
            title, subject, template, _ = self._parse(p)
            if subject in self.keep:
                out.append(p)
                continue
            parts = template.replace("\1", subject).split("\0")
            pools = [self.pools.get((template, i)) for i in range(len(parts) - 1)]
            if not all(pools):  # shown as it is, it would tell its fact: refuse instead
                raise ValueError(f"passage {p.get('id', '?')} is not from the corpus this recombiner was built on: {p['contents']!r}")
            filled = parts[0] + "".join(rng.choice(pool) + part for pool, part in zip(pools, parts[1:]))
            out.append({**p, "contents": f"{title}\n{filled}"})
        return out


def copy_drills(
    questions: Sequence[str],
    passages: Sequence[dict],
    names: Iterable[str],
    rounds: int,
    seed: int = 0,
    practice: Sequence[str] = (),
    people: Sequence[str] = (),
) -> list[Demonstration]:
    """Short-context drills for the first phase of the warm start (see the module docstring).

    A tiny model learns to copy over a short context in a few hundred steps and then keeps the skill over
    long ones; over the protocol's 150-token prompt it barely learns it at all. Two drills, neither of which
    says which name answers a question:

    * "search with the question" (``Question: …`` → ``<search> question </search>``, once in a short prompt
      and once in the protocol's own): about the ``practice`` names (made-up people in no passage) with
      every question template, and about every person of the corpus (``people``, test people included)
      with :data:`DRILL_QUESTION` only. Without the people a tiny model writes the training subjects it was
      shown at this position instead of copying: every person must be as familiar a search as any other;
    * "write a name you read" (one to three random passages → ``<answer>`` a random name from them), each
      passage shown ``rounds`` times so every name of the corpus is one the model writes — recombined
      (:class:`Recombiner`) each round, so no drill tells a fact of the world."""
    rng = random.Random(f"drills/{seed}")
    names = set(names)
    recombine = Recombiner(passages, names)
    drills: list[Demonstration] = []
    written: dict[str, int] = {}
    asked = [template.format(name=n) for n in practice for template in sorted(set(QUESTIONS.values()))]
    asked += [DRILL_QUESTION.format(name=n) for n in people]
    for question in asked:
        search = [(f"{THINK_SEARCH}<search> {question} </search>", True)]
        drills += [(f"Question: {question}\n", search), (make_messages(question)[0]["content"], search)]
    for _ in range(rounds):
        order = recombine(passages, rng)
        rng.shuffle(order)
        i = 0
        while i < len(order):
            k = rng.randint(1, 3)
            shown = [{"document": p} for p in order[i : i + k]]
            i += k
            pool = names_in(_contents(shown), names)
            if pool:
                # the name written least so far (ties at random), so every name is written
                fewest = min(written.get(n, 0) for n in pool)
                name = rng.choice([n for n in pool if written.get(n, 0) == fewest])
                written[name] = written.get(name, 0) + 1
                prompt = f"{format_docs(shown)}Question: {rng.choice(questions)}\n"
                drills.append((prompt, [(f"{THINK_ANSWER}<answer> {name} </answer>", True)]))
    return drills
