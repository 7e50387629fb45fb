"""The paper's methods, each one async function of a question; prompts in ``docs/methods.md``.

Search-R1, R1, RAG, Direct, CoT and SFT are all :func:`~search_r1_plugin.rollout.run_trajectory`
(the training rollout) with a different prompt and number of retrieval turns — one rollout
implementation. IRCoT and Search-o1 add their own control flow on top of the same generator,
retriever and answer parser. Every answer is scored by the training reward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from search_r1_plugin.evaluation.backends import chat_prompt_ids
from search_r1_plugin.policy import Policy
from search_r1_plugin.protocol import (
    COT_TEMPLATE,
    DIRECT_TEMPLATE,
    IRCOT_TEMPLATE,
    SEARCH_O1_REASON_TEMPLATE,
    extract_answer,
    format_docs,
    make_messages,
    normalize_question,
)
from search_r1_plugin.rollout import Retrieve, run_trajectory
from search_r1_plugin.settings import SearchR1Config
from search_r1_plugin.trajectory_html import trajectory_spans


@dataclass
class MethodContext:
    policy: Policy  # search_r1_plugin.policy: await policy(ids, max_tokens, stop)
    tokenizer: Any
    retrieve: Retrieve
    config: SearchR1Config = field(default_factory=SearchR1Config)
    response_length: int = 4500
    on_event: Optional[Callable[[str, str], None]] = None


@dataclass
class MethodResult:
    response: str
    answer: Optional[str]
    searches: int = 0
    turns: int = 0
    queries: list[str] = field(default_factory=list)
    spans: list[tuple[str, bool]] = field(default_factory=list)  # (text, written by the model) runs, for report.html


async def _single_turn(ctx: MethodContext, content: str) -> MethodResult:
    cfg = SearchR1Config(**{**ctx.config.as_dict(), "max_turns": 0})
    return await _protocol(ctx, [{"role": "user", "content": content}], cfg)


async def _protocol(
    ctx: MethodContext, messages: list[dict[str, str]], cfg: SearchR1Config, retrieve: Optional[Retrieve] = None
) -> MethodResult:
    prompt_ids = chat_prompt_ids(ctx.tokenizer, messages)
    traj = await run_trajectory(
        prompt_ids, ctx.policy, retrieve or ctx.retrieve, ctx.tokenizer, cfg, ctx.response_length, on_event=ctx.on_event
    )
    decode = lambda ids: ctx.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    text = decode(traj.response_ids)
    spans = trajectory_spans(traj.response_ids, [int(m) for m in traj.is_model], decode)
    return MethodResult(text, extract_answer(traj.model_text(decode)), traj.searches, traj.turns, traj.queries, spans)


async def search_r1(question: str, ctx: MethodContext) -> MethodResult:
    return await _protocol(ctx, make_messages(question), ctx.config)


async def r1(question: str, ctx: MethodContext) -> MethodResult:
    return await _single_turn(ctx, make_messages(question, "r1")[0]["content"])


async def direct(question: str, ctx: MethodContext) -> MethodResult:
    return await _single_turn(ctx, DIRECT_TEMPLATE.format(question=normalize_question(question)))


sft = direct  # SFT checkpoints are trained to answer directly with the same tags


async def cot(question: str, ctx: MethodContext) -> MethodResult:
    return await _single_turn(ctx, COT_TEMPLATE.format(question=normalize_question(question)))


async def rag(question: str, ctx: MethodContext) -> MethodResult:
    docs = await ctx.retrieve(normalize_question(question), ctx.config.topk)
    result = await _single_turn(ctx, make_messages(question, "rag", format_docs(docs))[0]["content"])
    result.searches, result.queries = 1, [question]
    return result


async def ircot(question: str, ctx: MethodContext, max_steps: int = 5) -> MethodResult:
    """IRCoT: each reasoning sentence becomes the next retrieval query (Trivedi et al., 2023)."""
    q = normalize_question(question)
    docs = {d.get("document", d)["id"]: d for d in await ctx.retrieve(q, ctx.config.topk)}
    reasoning, queries = "", [q]
    for step in range(max_steps):
        prompt = IRCOT_TEMPLATE.format(documents=format_docs(list(docs.values())), question=q, reasoning=reasoning)
        ids = chat_prompt_ids(ctx.tokenizer, [{"role": "user", "content": prompt}])
        out, _ = await ctx.policy(ids, ctx.config.max_turn_tokens, stop=[". ", "\n", "</answer>"])
        sentence = ctx.tokenizer.decode(out, skip_special_tokens=True)
        reasoning += sentence
        if ctx.on_event:
            ctx.on_event("model", sentence)
        if "<answer>" in reasoning or not sentence.strip() or step == max_steps - 1:
            break
        queries.append(sentence.strip())
        for d in await ctx.retrieve(sentence.strip(), ctx.config.topk):
            docs.setdefault(d.get("document", d)["id"], d)
    answer = extract_answer(reasoning)
    if answer is None and (m := re.search(r"answer is:?\s*(.+)", reasoning)):
        answer = m.group(1).strip().rstrip(".")
    return MethodResult(reasoning, answer, len(queries), step + 1, queries)


async def search_o1(question: str, ctx: MethodContext) -> MethodResult:
    """Search-o1: agentic search whose results are first condensed by a reason-in-documents step."""
    q = normalize_question(question)

    async def reason_in_documents(query: str, k: int) -> list[dict[str, Any]]:
        docs = await ctx.retrieve(query, k)
        prompt = SEARCH_O1_REASON_TEMPLATE.format(query=query, question=q, documents=format_docs(docs))
        ids = chat_prompt_ids(ctx.tokenizer, [{"role": "user", "content": prompt}])
        out, _ = await ctx.policy(ids, ctx.config.max_obs_length, stop=["\n\n"])
        summary = ctx.tokenizer.decode(out, skip_special_tokens=True).strip()
        return [{"document": {"id": "reasoned", "contents": f'"{query}"\n{summary}'}}]

    return await _protocol(ctx, make_messages(question), ctx.config, retrieve=reason_in_documents)


METHODS = {"direct": direct, "cot": cot, "rag": rag, "ircot": ircot, "search_o1": search_o1, "r1": r1, "sft": sft, "search_r1": search_r1}
# The paper's row name for each method (for the comparison plot).
PAPER_METHOD_NAMES = {
    "direct": "Direct Inference",
    "cot": "CoT",
    "rag": "RAG",
    "ircot": "IRCoT",
    "search_o1": "Search-o1",
    "r1": "R1-{variant}",
    "sft": "SFT",
    "search_r1": "Search-R1-{variant} (PPO)",
}
