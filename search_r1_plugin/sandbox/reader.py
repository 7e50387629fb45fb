"""A scripted multi-hop reader over the sample world's phrasing, as a policy (no language model).

It searches the question, reads the returned passages with regular expressions and searches again
for two-hop questions, then answers. It shows the loop and the retriever working end to end and
gives an upper-bound-style sanity number; the demo, the dry run and the tests use it.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from search_r1_plugin.policy import TextPolicy

ASSISTANT = "<|im_start|>assistant\n"


def next_action(question: str, infos: list[str]) -> str:
    """The reader's next turn, given the question and the ``<information>`` blocks read so far."""
    last = infos[-1] if infos else ""
    first_doc = last.split("Doc 2(")[0]
    q = question.rstrip("?")
    if not infos:
        return f"<think>I need to look this up.</think><search> {q} </search>"
    if m := re.search(r"In which country was (.+) born", q):
        if len(infos) == 1 and (city := re.search(r"born in (\w+)", first_doc)):
            return f"<think>{m.group(1)} was born in {city.group(1)}.</think><search> {city.group(1)} city </search>"
        found = re.search(r"is a city in (\w+)", first_doc)
    elif m := re.search(r"capital of (\w+) founded", q):
        if len(infos) == 1 and (cap := re.search(r"capital is (\w+)", first_doc)):
            return f"<think>The capital is {cap.group(1)}.</think><search> {cap.group(1)} founded </search>"
        found = re.search(r"founded in (\d+)", first_doc)
    elif "year" in q:
        found = re.search(r"born in \w+ in (\d+)", first_doc)
    elif "city" in q:
        found = re.search(r"born in (\w+)", first_doc)
    else:
        found = re.search(r"was an? (\w+)", first_doc)
    answer = found.group(1) if found else "unknown"
    return f"<think>The passages say {answer}.</think><answer> {answer} </answer>"


def reader_policy(tokenizer: Any) -> TextPolicy:
    """The reader as a :class:`~search_r1_plugin.policy.Policy` over chat-formatted contexts."""

    def act(context: str, stop: Sequence[str]) -> str:
        question = re.search(r"Question: (.*?)\n", context).group(1)
        response = context.split(ASSISTANT)[-1]
        return next_action(question, re.findall(r"<information>(.*?)</information>", response, re.DOTALL))

    return TextPolicy(tokenizer, act)
