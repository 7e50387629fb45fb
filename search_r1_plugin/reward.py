"""Exact-match reward of Search-R1, usable as verl's custom reward function.

``reward.custom_reward_function.path=pkg://search_r1_plugin.reward`` and
``reward.custom_reward_function.name=compute_score``.

The score is the original ``qa_em`` rule: SQuAD-normalised exact match of the
*last* ``<answer>`` of the response (verl passes the decoded response only, so
the example answer in the prompt is never scored; the original needed two
matches because it scored prompt + response). ``format_reward=True`` switches
to the original format-aware variant (``qa_em_format``) whose constants are
parameters. The returned dict carries ``em``, ``f1``, ``sub_em``, ``format_ok``
and ``num_searches`` so verl logs them next to ``score``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Iterable, Mapping

from search_r1_plugin.protocol import extract_answer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_INFO_BLOCK = re.compile(r"<information>(.*?)</information>", re.DOTALL)
# extra_info key under which the agent loop passes the text the model wrote (injected spans left out).
MODEL_TEXT_KEY = "search_r1_model_text"


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower, drop punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def golden_answers(ground_truth: Any) -> list[str]:
    """Accept ``{"target": [...]}``, ``{"target": "x"}``, a list or a string (numpy arrays too)."""
    if isinstance(ground_truth, Mapping):
        if "target" not in ground_truth:
            raise ValueError(f"ground_truth has no 'target' key: {ground_truth!r}")
        ground_truth = ground_truth["target"]
    if isinstance(ground_truth, str):
        return [ground_truth]
    if hasattr(ground_truth, "tolist"):
        ground_truth = ground_truth.tolist()
    return [str(g) for g in ground_truth]


def em_check(prediction: str, golds: Iterable[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def subem_check(prediction: str, golds: Iterable[str]) -> float:
    """1 if a normalised gold answer is a substring of the normalised prediction."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in golds))


# HotpotQA's official F1 (also FlashRAG's F1_Score): a yes/no/noanswer answer scores 0 unless it is exact.
_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    """Token-level F1 against the best-matching gold answer, by the HotpotQA-official rule."""
    pred_norm = normalize_answer(prediction)
    pred_tokens = pred_norm.split()
    best = 0.0
    for g in golds:
        gold_norm = normalize_answer(g)
        if (pred_norm in _SPECIAL_ANSWERS or gold_norm in _SPECIAL_ANSWERS) and pred_norm != gold_norm:
            continue
        gold_tokens = gold_norm.split()
        common = Counter(pred_tokens) & Counter(gold_tokens)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(pred_tokens), same / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


_SPLIT_TAGS = re.compile(r"(</?(?:think|search|information|answer)>)")
# The original ``is_valid_sequence`` state machine: tag -> {allowed states: next state}.
_TRANSITIONS = {
    "<think>": ({"start", "information"}, "in_think"),
    "</think>": ({"in_think"}, "after_think"),
    "<search>": ({"after_think"}, "in_search"),
    "</search>": ({"in_search"}, "after_search"),
    "<information>": ({"after_search"}, "in_information"),
    "</information>": ({"in_information"}, "information"),
    "<answer>": ({"after_think"}, "in_answer"),
    "</answer>": ({"in_answer"}, "end"),
}
_INSIDE = {"in_think", "in_search", "in_information", "in_answer"}


def is_well_formed(response: str) -> bool:
    """Tags balanced and ordered think → (search → information → think)* → answer.

    The original ``is_valid_sequence`` check on the response: no text outside
    the tags, every transition allowed, and the sequence ends after ``</answer>``.
    """
    state = "start"
    for part in _SPLIT_TAGS.split(response):
        if not part.strip():
            continue
        if part in _TRANSITIONS:
            allowed, nxt = _TRANSITIONS[part]
            if state not in allowed:
                return False
            state = nxt
        elif state not in _INSIDE:
            return False
    return state == "end"


def answer_in_information(response: str, golds: Iterable[str]) -> bool:
    """A gold answer appears (normalised substring) in one of the ``<information>`` blocks."""
    golds = list(golds)
    return any(subem_check(block, golds) for block in _INFO_BLOCK.findall(response))


def answer_read(answer: str | None, response: str) -> bool:
    """The model's own answer appears, as whole words, in one of the ``<information>`` blocks it was shown.

    Whether a policy answers from what it read (the skill Search-R1 trains) or from memory and guessing,
    right or wrong (docs/learning.md reads it beside EM).
    """
    words = normalize_answer(answer) if answer is not None else ""
    return bool(words) and any(f" {words} " in f" {normalize_answer(block)} " for block in _INFO_BLOCK.findall(response))


def format_score(
    correct: bool,
    answered: bool,
    well_formed: bool,
    retrieval_hit: bool,
    *,
    structure_format_score: float = 0.2,
    final_format_score: float = 0.1,
    retrieval_score: float = 0.0,
) -> float:
    """The original ``qa_em_format`` table (v0.3)."""
    if not answered:
        return structure_format_score if well_formed else 0.0
    if correct:
        return 1.0 if well_formed else 1.0 - structure_format_score
    if well_formed:
        return structure_format_score + (retrieval_score if retrieval_hit else 0.0)
    return final_format_score


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    format_reward: bool = False,
    structure_format_score: float = 0.2,
    final_format_score: float = 0.1,
    retrieval_score: float = 0.0,
    **_: Any,
) -> dict[str, float]:
    """verl reward entry point: ``score`` is EM (or the format variant) of the last answer.

    verl decodes ``solution_str`` from the whole response, retrieved passages and the invalid-action
    message included; the answer is taken from what the model wrote (``extra_info[MODEL_TEXT_KEY]``,
    set by our agent loop), so an ``<answer>`` inside a passage is never scored. Without that key
    (other callers, plain text) the whole ``solution_str`` is read.
    """
    golds = golden_answers(ground_truth)
    model_text = extra_info.get(MODEL_TEXT_KEY) if isinstance(extra_info, Mapping) else None
    answer = extract_answer(model_text if isinstance(model_text, str) else solution_str)
    well_formed = is_well_formed(solution_str)
    em = em_check(answer, golds) if answer is not None else 0.0
    if format_reward:
        score = format_score(
            em == 1.0,
            answer is not None,
            well_formed,
            answer_in_information(solution_str, golds),
            structure_format_score=structure_format_score,
            final_format_score=final_format_score,
            retrieval_score=retrieval_score,
        )
    else:
        score = em
    # The agent loop's per-trajectory stats arrive in extra_info["search_r1"] (verl merges the
    # loop's extra_fields into extra_info); returning them makes verl log them.
    stats = extra_info.get("search_r1") if isinstance(extra_info, Mapping) else None
    stats = dict(stats) if isinstance(stats, Mapping) else {}
    num_searches = stats.get("searches", solution_str.count("<information>"))
    return {
        "score": float(score),
        "em": em,
        "f1": f1_score(answer, golds) if answer is not None else 0.0,
        "sub_em": subem_check(answer, golds) if answer is not None else 0.0,
        "format_ok": float(well_formed),
        "answered": float(answer is not None),
        "answer_read": float(answer_read(answer, solution_str)),
        "num_searches": float(num_searches),
        **{f"rollout/{k}": float(v) for k, v in stats.items()},
    }
