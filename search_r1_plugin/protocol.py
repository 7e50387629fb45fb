"""The Search-R1 text protocol: prompt, action parsing, observation formatting.

This is the single home of everything the model sees or emits as text. Training
(the verl agent loop), evaluation and the demo all import it, so the three can
never drift apart. Behaviour follows the original Search-R1 repository exactly
(``search_r1/llm_agent/generation.py`` and ``scripts/data_process/nq_search.py``):

* one user message built from :data:`PROMPT_TEMPLATE`;
* a turn is cut after the first ``</search>`` if it has one anywhere, else after the first
  ``</answer>`` (``turn_cut="original"``, the default; generation stops on ``</search>`` only).
  ``turn_cut="earliest"`` stops and cuts at whichever tag comes first (fewer generated tokens);
  ``docs/protocol.md`` has the cases where the two differ;
* the first ``<(search|answer)>(.*?)</\\1>`` match (DOTALL, stripped) is the action;
* a search appends ``\\n\\n<information>{docs}</information>\\n\\n`` where docs is the
  original ``Doc {i}(Title: {title}) {text}\\n`` listing, stripped — less the newlines the model's
  last token already wrote after ``</search>`` (:func:`observation_open`);
* anything else appends :data:`INVALID_ACTION_MESSAGE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

PROMPT_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> "
    "and it will return the top searched results between <information> and </information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, "
    "without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

# Baselines that train or evaluate without search (the paper's R1 and RAG rows): same tags, same
# EM reward, a single generation (``search_r1.max_turns=0``).
R1_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first. "
    "After reasoning, provide the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)
RAG_TEMPLATE = (
    "Answer the given question using the documents below. "
    "You must conduct reasoning inside <think> and </think> first. "
    "After reasoning, provide the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>.\nDocuments:\n{documents}Question: {question}\n"
)
TEMPLATES = {"search_r1": PROMPT_TEMPLATE, "r1": R1_TEMPLATE, "rag": RAG_TEMPLATE}

# Prompts of the paper's baselines (search-r1 eval --method …; docs/methods.md).
DIRECT_TEMPLATE = (
    "Answer the given question directly, without explanation. Provide the answer inside <answer> and </answer>. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)
COT_TEMPLATE = (
    "Answer the given question. Let's think step by step inside <think> and </think>, then provide the answer "
    "inside <answer> and </answer>. For example, <answer> Beijing </answer>. Question: {question}\n"
)
IRCOT_TEMPLATE = (
    "Answer the question by reasoning one sentence at a time over the documents. When you know the answer, "
    'write "So the answer is: <answer> ... </answer>".\nDocuments:\n{documents}Question: {question}\n'
    "Reasoning so far: {reasoning}"
)
SEARCH_O1_REASON_TEMPLATE = (
    'You are reading search results for the query "{query}" while answering "{question}". Extract only the '
    'information relevant to the query, in one or two sentences; write "No helpful information found." if none.\n'
    "Documents:\n{documents}Relevant information:"
)

SEARCH_STOP = "</search>"
ANSWER_STOP = "</answer>"
STOP_STRINGS = (SEARCH_STOP, ANSWER_STOP)

INFO_OPEN = "\n\n<information>"
INFO_CLOSE = "</information>\n\n"

INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. "
    "If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

_ACTION_RE = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def normalize_question(question: str) -> str:
    """Strip the question and append ``?`` if missing, as the original data prep did."""
    question = question.strip()
    if not question:
        raise ValueError("empty question")
    if question[-1] != "?":
        question += "?"
    return question


def make_prompt(question: str, template: str = "search_r1", documents: str = "") -> str:
    """The user message (same for base and instruct models); ``template`` is search_r1, r1 or rag."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose from {sorted(TEMPLATES)}")
    if template == "rag":
        return RAG_TEMPLATE.format(question=normalize_question(question), documents=documents)
    return TEMPLATES[template].format(question=normalize_question(question))


def make_messages(question: str, template: str = "search_r1", documents: str = "") -> list[dict[str, str]]:
    """Chat messages as stored in the training parquet's ``prompt`` column."""
    return [{"role": "user", "content": make_prompt(question, template, documents)}]


@dataclass(frozen=True)
class Action:
    """What the model asked for in one turn: ``kind`` is "search", "answer" or None (invalid)."""

    kind: str | None
    content: str = ""


def parse_action(text: str) -> Action:
    """First ``<search>``/``<answer>`` block of a turn, exactly like the original parser."""
    match = _ACTION_RE.search(text)
    if match is None:
        return Action(None, "")
    return Action(match.group(1), match.group(2).strip())


def extract_answer(response: str) -> str | None:
    """Content of the *last* ``<answer>`` block of a response (the scored answer), or None."""
    matches = _ANSWER_RE.findall(response)
    if not matches:
        return None
    return matches[-1].strip()


TURN_CUTS = ("original", "earliest")


def turn_stop_strings(turn_cut: str) -> tuple[str, ...]:
    """Stop strings the engine gets for a turn: the original generated until ``</search>`` (or EOS)."""
    return (SEARCH_STOP,) if turn_cut == "original" else STOP_STRINGS


def turn_cut_stops(text: str, turn_cut: str) -> tuple[str, ...]:
    """The tag(s) a generated turn is cut after: the original's ``_postprocess_responses`` cuts at the
    first ``</search>`` if the text has one anywhere, otherwise at the first ``</answer>``."""
    if turn_cut == "original":
        return (SEARCH_STOP,) if SEARCH_STOP in text else (ANSWER_STOP,)
    return STOP_STRINGS


def document_contents(item: Mapping[str, Any]) -> str:
    """The passage text of one ``/retrieve`` result (``"title"\ntext``): return_scores=true gives
    ``{"document": {...}, "score": x}``, false gives the document itself."""
    doc = item.get("document", item)
    contents = doc.get("contents")
    if contents is None:  # some corpora store title/text separately
        contents = f'"{doc.get("title", "")}"\n{doc.get("text", "")}'
    return str(contents)


def format_docs(results: Sequence[Mapping[str, Any]]) -> str:
    """The original ``_passages2string``: ``Doc {i}(Title: {title}) {text}\\n`` per document."""
    out = []
    for idx, item in enumerate(results):
        content = document_contents(item)
        lines = content.split("\n")
        title, text = lines[0], "\n".join(lines[1:])
        out.append(f"Doc {idx + 1}(Title: {title}) {text}\n")
    return "".join(out)


def observation_open(turn_text: str) -> str:
    """How the observation opens after a search turn: :data:`INFO_OPEN` less what the model already wrote.

    An engine stops on the token that *completes* ``</search>`` and returns it whole; with Qwen's
    vocabulary that token is often ``>\\n\\n`` (id 1339) or ``>\\n``. The original cut the decoded text at
    ``</search>`` and then appended ``\\n\\n<information>``; sampled tokens are never split here, so the
    newlines the model wrote stand in for the observation's own (up to its two) and the text stays the
    original's. Any other tail (``><``, ``> ``) is not part of the opening, so the full opening follows it.
    """
    tail = turn_text.split(SEARCH_STOP, 1)[1] if SEARCH_STOP in turn_text else ""
    if not tail or tail.strip("\n"):
        return INFO_OPEN
    newlines = len(INFO_OPEN) - len(INFO_OPEN.lstrip("\n"))
    return INFO_OPEN[min(len(tail), newlines) :]


def format_observation(results: Sequence[Mapping[str, Any]], turn_text: str = "") -> str:
    """The text injected after a search turn (the original strips the docs listing)."""
    return f"{observation_open(turn_text)}{format_docs(results).strip()}{INFO_CLOSE}"
