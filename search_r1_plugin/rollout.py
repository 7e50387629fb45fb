"""One Search-R1 trajectory, token in / token out: the algorithm of the paper in one function.

    generate a turn (stop at </search>; cut as search_r1.turn_cut says) → parse the action →
      answer: done
      search: retrieve top-k → append <information>…</information> (mask 0)
      neither: append the invalid-action message (mask 0)
    repeat for ``max_turns`` turns, then one final turn without retrieval.

The function knows nothing of verl: the verl agent loop, the evaluator and
``search-r1 ask`` all call :func:`run_trajectory` with their own policy
(:mod:`search_r1_plugin.policy`: verl's server manager, HF ``generate``, vLLM, a scripted reader)
and ``retrieve``.

Invariants (tested on ≥ 10,000 random outputs):
* ``len(response_ids) == len(response_mask) == len(response_logprobs)`` and
  ``len(response_ids) <= response_length``;
* sampled ids and logprobs are kept exactly (model output is never re-tokenised);
* the response ends on a model token, so the outcome reward verl places on the
  last token is never dropped by GAE (it skips mask-0 positions);
* observations hold at most ``max_obs_length`` tokens and keep ``</information>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

from search_r1_plugin.policy import Policy
from search_r1_plugin.protocol import (
    INFO_CLOSE,
    INFO_OPEN,
    INVALID_ACTION_MESSAGE,
    STOP_STRINGS,
    format_docs,
    format_observation,
    observation_open,
    parse_action,
    turn_cut_stops,
    turn_stop_strings,
)
from search_r1_plugin.settings import SearchR1Config

# retrieve(query, topk) -> documents in the server's result format
Retrieve = Callable[[str, int], Awaitable[list[dict[str, Any]]]]
# on_event(kind, payload): "model" text, "search" query, "information" text, "invalid", "answer"
EventFn = Callable[[str, str], None]


@dataclass
class Trajectory:
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)  # loss mask handed to verl
    response_logprobs: list[float] = field(default_factory=list)
    is_model: list[bool] = field(default_factory=list)  # provenance, independent of the ablation switch
    turns: int = 0
    searches: int = 0
    valid_actions: int = 0
    invalid_actions: int = 0
    answered: bool = False
    obs_truncations: int = 0
    budget_exhausted: bool = False
    retrieval_seconds: float = 0.0
    has_logprobs: bool = True
    queries: list[str] = field(default_factory=list)

    def append(self, ids: Sequence[int], *, model: bool, mask: int, logprobs: Optional[Sequence[float]] = None) -> None:
        self.response_ids.extend(ids)
        self.is_model.extend([model] * len(ids))
        self.response_mask.extend([mask] * len(ids))
        self.response_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def trim_trailing_injected(self) -> None:
        """Drop injected tokens at the end so the reward lands on a model token."""
        while self.is_model and not self.is_model[-1]:
            for seq in (self.response_ids, self.response_mask, self.response_logprobs, self.is_model):
                seq.pop()

    def model_text(self, decode: Callable[[list[int]], str]) -> str:
        """What the model wrote: each run of model tokens decoded on its own, injected runs left out.

        The reward scores the last ``<answer>`` of this text, never one inside a retrieved passage or
        the invalid-action message (which itself contains ``<answer> and </answer>``).
        """
        runs, start = [], None
        for i, is_model in enumerate(self.is_model + [False]):
            if is_model and start is None:
                start = i
            elif not is_model and start is not None:
                runs.append(decode(self.response_ids[start:i]))
                start = None
        return "".join(runs)

    def metrics(self) -> dict[str, float]:
        """Per-trajectory numbers; the agent loop puts them in ``extra_fields`` for verl's logger."""
        n = len(self.response_ids)
        injected = n - sum(self.is_model)
        return {
            "turns": float(self.turns),
            "searches": float(self.searches),
            "valid_actions": float(self.valid_actions),
            "invalid_actions": float(self.invalid_actions),
            "answered": float(self.answered),
            "obs_truncations": float(self.obs_truncations),
            "budget_exhausted": float(self.budget_exhausted),
            "retrieval_latency_s": self.retrieval_seconds,
            "injected_token_share": injected / n if n else 0.0,
            "masked_token_share": (n - sum(self.response_mask)) / n if n else 0.0,
        }


def cut_at_stop(token_ids: list[int], decode: Callable[[list[int]], str], stops: Sequence[str] = STOP_STRINGS) -> int:
    """Length of the shortest prefix of ``token_ids`` whose text contains a stop string.

    vLLM already stops there (possibly one token late, which we keep: whole sampled
    tokens are never split); HF ``generate`` and scripted policies may run past it.
    Prefix containment is monotone, so a binary search needs O(log n) decodes.
    """
    if not any(s in decode(token_ids) for s in stops):
        return len(token_ids)
    lo, hi = 1, len(token_ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(token_ids[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def cut_turn(token_ids: list[int], decode: Callable[[list[int]], str], turn_cut: str) -> int:
    """Length of the kept part of a generated turn under ``search_r1.turn_cut`` (protocol.turn_cut_stops)."""
    return cut_at_stop(token_ids, decode, turn_cut_stops(decode(token_ids), turn_cut))


class ObservationEncoder:
    """Tokenises injected text once per tokenizer and truncates ``<information>`` blocks safely."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special_ids = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
        self.open_ids = self.encode(INFO_OPEN)
        self.close_ids = self.encode(INFO_CLOSE)
        self.invalid_ids = self.encode(INVALID_ACTION_MESSAGE)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def information(self, docs: Sequence[Mapping[str, Any]], limit: int, turn_text: str = "") -> tuple[list[int], bool]:
        """The observation after the search turn ``turn_text``
        (:func:`~search_r1_plugin.protocol.format_observation`) in at most ``limit`` tokens; when it is
        too long the passages are cut, never the closing tag."""
        full = self.encode(format_observation(docs, turn_text))
        if len(full) <= limit:
            return full, False
        open_ids = self.encode(observation_open(turn_text))
        body_room = limit - len(open_ids) - len(self.close_ids)
        body = self.encode(format_docs(docs).strip())[: max(body_room, 0)]
        return open_ids + body + self.close_ids, True


async def run_trajectory(
    prompt_ids: list[int],
    policy: Policy,
    retrieve: Retrieve,
    tokenizer: Any,
    config: SearchR1Config,
    response_length: int,
    *,
    on_event: Optional[EventFn] = None,
    obs_encoder: Optional[ObservationEncoder] = None,
) -> Trajectory:
    """Roll out one Search-R1 trajectory and return its response tokens, masks and stats."""
    enc = obs_encoder or ObservationEncoder(tokenizer)
    traj = Trajectory()
    injected_mask = 0 if config.mask_retrieved_tokens else 1
    emit = on_event or (lambda kind, payload: None)
    stops = list(turn_stop_strings(config.turn_cut))

    for turn in range(config.max_turns + 1):
        remaining = response_length - len(traj.response_ids)
        if remaining <= 0:
            traj.budget_exhausted = True
            break
        max_tokens = min(config.max_turn_tokens, remaining)
        ids, logprobs = await policy(list(prompt_ids) + traj.response_ids, max_tokens, stops)
        ids = list(ids)[:max_tokens]
        ids = ids[: cut_turn(ids, enc.decode, config.turn_cut)]
        text = enc.decode(ids)  # unchanged by dropping a trailing special token below (decoded without them)
        action = parse_action(text)
        if (
            config.turn_cut == "original"
            and action.kind is None
            and turn < config.max_turns
            and len(ids) > 1
            and ids[-1] in enc.special_ids
        ):
            # The original decoded without special tokens and re-encoded, so an action-less turn that
            # ended on EOS lost it before the invalid-action message; the kept tokens are unchanged. A turn
            # that is nothing but EOS keeps it: an empty turn would end the trajectory with no response at
            # all, and verl cannot place the reward of an empty response (its step fails).
            ids = ids[:-1]
        if logprobs is None:
            traj.has_logprobs = False
        else:
            logprobs = list(logprobs)[: len(ids)]
        traj.turns += 1
        if not ids:  # nothing generated: the trajectory cannot continue
            break
        traj.append(ids, model=True, mask=1, logprobs=logprobs)
        emit("model", text)

        if action.kind == "answer":
            traj.valid_actions += 1
            traj.answered = True
            emit("answer", action.content)
            break
        if turn == config.max_turns:  # final turn: no retrieval, nothing appended
            if action.kind == "search":
                traj.valid_actions += 1
            else:
                traj.invalid_actions += 1
            break
        # Room for the observation plus at least one more model token.
        room = response_length - len(traj.response_ids) - 1
        if action.kind == "search":
            traj.valid_actions += 1
            traj.searches += 1
            traj.queries.append(action.content)
            emit("search", action.content)
            t0 = time.perf_counter()
            docs = await retrieve(action.content, config.topk)
            traj.retrieval_seconds += time.perf_counter() - t0
            limit = min(config.max_obs_length, room)
            if limit < len(enc.open_ids) + len(enc.close_ids) + 1:
                traj.budget_exhausted = True
                break
            obs_ids, truncated = enc.information(docs, limit, text)
            traj.obs_truncations += int(truncated)
            emit("information", enc.decode(obs_ids))
        else:
            traj.invalid_actions += 1
            obs_ids = enc.invalid_ids
            if len(obs_ids) > room:
                traj.budget_exhausted = True
                break
            emit("invalid", INVALID_ACTION_MESSAGE)
        # (A turn that ended on EOS without an action is invalid too; the original keeps going.)
        traj.append(obs_ids, model=False, mask=injected_mask)

    # Cut by the budget however the loop ended: the response is as long as it may be.
    traj.budget_exhausted = traj.budget_exhausted or len(traj.response_ids) >= response_length
    traj.trim_trailing_injected()
    return traj
