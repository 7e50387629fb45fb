"""Why each evaluated answer failed, from what the trajectory searched and read (docs/evaluation.md).

EM says how often a policy is right; it does not say whether a wrong answer is the retriever's fault or
the reader's. Every evaluated question gets exactly one **label**:

* ``correct`` — EM 1;
* ``format_failure`` — no valid ``<answer>`` (never answered, or the token budget ran out);
* ``no_search`` — answered wrongly without searching;
* ``retrieval_miss`` — searched, but the gold answer was in none of the passages any search returned;
* ``reading_miss`` — a search returned the gold answer, and the final answer is still wrong.

and one flag, **over_search**: the gold answer was in the passages of search *k* and the policy still
searched again after it (correct or not). "Gold in a passage" uses EM's normalisation (lower case, no
punctuation or articles): ``em`` when the normalised gold is a whole-word span of the normalised passage,
``sub`` when it is any substring of it (sub-EM's rule); labels use ``em``, both are reported.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from search_r1_plugin.reward import normalize_answer

LABELS = ("correct", "format_failure", "no_search", "retrieval_miss", "reading_miss")


def gold_in(passages: Iterable[str], golds: Sequence[str], rule: str = "em") -> bool:
    """Whether a normalised gold answer occurs in a normalised passage (``em``: as whole words; ``sub``: anywhere)."""
    norm_golds = [g for g in (normalize_answer(x) for x in golds) if g]
    for passage in passages:
        text = normalize_answer(passage)
        for gold in norm_golds:
            if rule == "sub" and gold in text:
                return True
            if rule == "em" and f" {gold} " in f" {text} ":
                return True
    return False


def attribute(golds: Sequence[str], answer: str | None, em: float, searches: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The label, the over-search flag and the per-search hits of one question.

    ``searches`` holds, for each search in order, the texts of the passages it returned."""
    hits_em = [gold_in(p, golds, "em") for p in searches]
    hits_sub = [gold_in(p, golds, "sub") for p in searches]
    first_hit = next((i + 1 for i, h in enumerate(hits_em) if h), None)
    if em >= 1.0:
        label = "correct"
    elif answer is None:
        label = "format_failure"
    elif not searches:
        label = "no_search"
    elif first_hit is None:
        label = "retrieval_miss"
    else:
        label = "reading_miss"
    return {
        "label": label,
        "over_search": first_hit is not None and first_hit < len(searches),
        "first_hit_search": first_hit,  # 1-based; None when no search returned the answer
        "gold_retrieved_em": any(hits_em),
        "gold_retrieved_sub": any(hits_sub),
        "hits_em": hits_em,
    }


def breakdown(records: Sequence[Mapping[str, Any]], max_searches: int = 4) -> dict[str, float]:
    """Shares of each label and of over-searching, gold-retrieved rates (em, sub), and answer recall of the
    k-th search (among questions that searched at least k times) — one dataset's numbers."""
    n = len(records)
    out: dict[str, float] = {label: sum(r["label"] == label for r in records) / n for label in LABELS} if n else {}
    if not n:
        return out
    out["over_search"] = sum(bool(r["over_search"]) for r in records) / n
    out["gold_retrieved_em"] = sum(bool(r["gold_retrieved_em"]) for r in records) / n
    out["gold_retrieved_sub"] = sum(bool(r["gold_retrieved_sub"]) for r in records) / n
    for k in range(1, max_searches + 1):
        made = [r for r in records if len(r["hits_em"]) >= k]
        if made:
            out[f"recall@search{k}"] = sum(bool(r["hits_em"][k - 1]) for r in made) / len(made)
    return out


def breakdown_table(per_dataset: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown: failure labels (and over-searching, gold retrieved) as rows, datasets as columns."""
    names = list(per_dataset)
    rows = [*LABELS, "over_search", "gold_retrieved_em", "gold_retrieved_sub"]
    rows += sorted({k for d in per_dataset.values() for k in d if k.startswith("recall@")})
    md = "| share | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    for row in rows:
        md += f"| {row} | " + " | ".join(f"{per_dataset[n][row]:.3f}" if row in per_dataset[n] else "–" for n in names) + " |\n"
    return md
