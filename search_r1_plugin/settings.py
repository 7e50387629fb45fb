"""Typed settings of the Search-R1 rollout, with the paper's values as defaults.

They are the namespaced ``search_r1:`` block of the trainer's Hydra config: these
defaults, stored in Hydra's ConfigStore as ``search_r1_settings`` and placed by our
presets (:func:`search_r1_plugin.config.store_settings_node`), so ``search_r1.topk=5``
works on the ``main_ppo`` command line and no preset restates a default; init kwargs of an agent-loop YAML override them. Every value is
checked at construction, and a bad one raises with the key named; the presets also
construct it when the trainer resolves its config (``search_r1_check`` in
:mod:`search_r1_plugin.config`), so a bad value stops the run before models load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from search_r1_plugin.errors import ConfigError
from search_r1_plugin.health import HealthConfig

DEFAULT_RETRIEVER_URL = "http://127.0.0.1:8000/retrieve"


@dataclass(frozen=True)
class SearchR1Config:
    """Rollout settings (defaults = Search-R1 paper).

    retriever_url          POST endpoint speaking the Search-R1 ``/retrieve`` wire format; several servers as a
                           comma-separated string or a list (load spread, failover: retrieval_client).
    topk                   documents per search (paper: 3).
    max_turns              turns that may search; one final turn without retrieval follows (paper: 4).
    max_turn_tokens        generation cap per turn (paper: 500).
    max_obs_length         token cap of one injected ``<information>`` block (paper: 500).
    mask_retrieved_tokens  loss mask 0 on injected tokens; ``false`` is the paper's no-masking ablation.
    turn_cut               ``original`` (paper): stop on ``</search>``, cut at the first ``</search>`` if
                           any, else after the first ``</answer>``; ``earliest``: stop and cut at
                           whichever comes first (fewer tokens). See ``docs/protocol.md``.
    retrieval_timeout_s    per HTTP attempt.
    retrieval_retries      attempts after the first before the rollout fails loudly.
    retrieval_backoff_s    first retry delay, doubled each attempt.
    retrieval_max_batch    most queries coalesced into one request.
    retrieval_max_wait_ms  how long a query may wait for others to join its batch.
    retrieval_cache_size   in-process LRU cache of (query, topk) → documents; 0 disables.
    retrieval_api_key      bearer token for a server started with ``--api-key``.
    retrieval_replay       a record file (``search-r1 eval --record``): searches are answered from it,
                           and a query it lacks fails the rollout naming it (:mod:`.retrieval_record`).
    retrieval_replay_fallback  with a replay file, send the queries it lacks to ``retriever_url`` instead.
    health                 the training health guard's mode and rules (:mod:`search_r1_plugin.health`).
    """

    retriever_url: str = DEFAULT_RETRIEVER_URL
    topk: int = 3
    max_turns: int = 4
    max_turn_tokens: int = 500
    max_obs_length: int = 500
    mask_retrieved_tokens: bool = True
    turn_cut: str = "original"
    retrieval_timeout_s: float = 30.0
    retrieval_retries: int = 5
    retrieval_backoff_s: float = 0.5
    retrieval_max_batch: int = 512
    retrieval_max_wait_ms: float = 5.0
    retrieval_cache_size: int = 0
    retrieval_api_key: str | None = None
    retrieval_replay: str | None = None
    retrieval_replay_fallback: bool = False
    health: Mapping[str, Any] = field(default_factory=lambda: asdict(HealthConfig()))

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "health", asdict(HealthConfig.from_mapping(self.health)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        positive = ("topk", "max_turn_tokens", "max_obs_length", "retrieval_timeout_s", "retrieval_max_batch")
        non_negative = ("max_turns", "retrieval_retries", "retrieval_backoff_s", "retrieval_max_wait_ms", "retrieval_cache_size")
        for name in positive + non_negative:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"search_r1.{name} must be a number, got {value!r}")
            if name in positive and value <= 0:
                raise ConfigError(f"search_r1.{name} must be > 0, got {value!r}")
            if value < 0:
                raise ConfigError(f"search_r1.{name} must be >= 0, got {value!r}")
        if not isinstance(self.mask_retrieved_tokens, bool):
            raise ConfigError(f"search_r1.mask_retrieved_tokens must be true or false, got {self.mask_retrieved_tokens!r}")
        if self.turn_cut not in ("original", "earliest"):
            raise ConfigError(f"search_r1.turn_cut must be 'original' or 'earliest', got {self.turn_cut!r}")
        urls = self.retriever_url.split(",") if isinstance(self.retriever_url, str) else [None]
        if not all(isinstance(u, str) and u.strip().startswith(("http://", "https://")) for u in urls):
            raise ConfigError(f"search_r1.retriever_url must be an http(s) URL or several, comma-separated, got {self.retriever_url!r}")
        # The observation must at least hold "<information></information>" plus one token.
        if self.max_obs_length < 8:
            raise ConfigError(f"search_r1.max_obs_length must be >= 8 tokens, got {self.max_obs_length}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, **overrides: Any) -> "SearchR1Config":
        """Build from a (DictConfig) mapping; unknown keys are an error, not silently ignored."""
        merged = dict(values or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(merged.get("retriever_url"), (list, tuple)):  # a YAML list of servers
            merged["retriever_url"] = ",".join(map(str, merged["retriever_url"]))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown search_r1 key(s) {unknown}; known: {sorted(known)}")
        return cls(**merged)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_engine(name: str, skip_tokenizer_init: bool) -> None:
    """Every turn ends on a stop string (``</search>``), so the rollout engine must honour stop strings.
    SGLang refuses them when it starts without a tokenizer (``raise_if_tokenizer_required`` in its
    ``sampling_params.py``), and verl passes ``rollout.skip_tokenizer_init`` (default true) to it; verl's
    vLLM server always starts vLLM with its tokenizer (docs/engines.md)."""
    if str(name) == "sglang" and bool(skip_tokenizer_init):
        raise ConfigError(
            "actor_rollout_ref.rollout.skip_tokenizer_init=true: SGLang then refuses the stop strings every "
            "Search-R1 turn ends on; add search_r1_variant=[…,sglang] or set it to false"
        )


def check_rollout_logprobs(config: SearchR1Config, calculate_log_probs: bool) -> None:
    """The no-masking ablation trains on injected tokens, which were never sampled: they have no
    rollout log-prob (the loop records 0.0). verl compares rollout log-probs with the actor's, and its
    rollout-correction / bypass modes use them as the behaviour policy, so those numbers would be wrong
    on every injected token. Without rollout log-probs verl uses the actor's recomputed ones."""
    if not config.mask_retrieved_tokens and calculate_log_probs:
        raise ConfigError(
            "search_r1.mask_retrieved_tokens=false trains on injected tokens, which have no sampling "
            "log-probs; set actor_rollout_ref.rollout.calculate_log_probs=false (the no_mask ablation does)"
        )
