"""The Hydra config groups the plugin ships, as ``main_ppo`` arguments.

Three groups under ``search_r1_plugin/config`` (searched through ``hydra.searchpath``):

* ``search_r1_algo``: ``ppo`` (paper default), ``grpo``, ``rloo``, ``reinforce_pp``; chosen with ``+``;
  it brings the paper's settings and the two slots below;
* ``search_r1_model``: one file per model (path, tensor parallelism), chosen without ``+``;
* ``search_r1_variant``: a list applied last (``cpu``, ``smoke``, ``no_mask``, ``r1``).

``search-r1 train``, ``search-r1 presets``, the sandbox harness and the tests all build the
command line here, so there is one spelling of a run.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from typing import Sequence

from search_r1_plugin.errors import ConfigError

SEARCHPATH = "hydra.searchpath=[pkg://search_r1_plugin.config]"
GROUPS = ("search_r1_algo", "search_r1_model", "search_r1_variant")


def choices(group: str) -> list[str]:
    """Option names of one config group (its YAML files)."""
    if group not in GROUPS:
        raise ConfigError(f"unknown config group {group!r}; groups: {', '.join(GROUPS)}")
    folder = files("search_r1_plugin.config").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def describe(group: str, name: str) -> str:
    """The first comment line of an option's file: what it is."""
    text = files("search_r1_plugin.config").joinpath(group, f"{name}.yaml").read_text()
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#") and "@package" not in ln]
    return lines[0] if lines else ""


def check_choice(group: str, name: str) -> str:
    if name not in choices(group):
        raise ConfigError(f"{group} has no {name!r}; choose one of: {', '.join(choices(group))}")
    return name


def preset_overrides(algo: str, model: str | None = None, variants: Sequence[str] = ()) -> list[str]:
    """Hydra overrides choosing an algorithm, optionally a model file, and variants (in that order)."""
    out = [f"+search_r1_algo={check_choice('search_r1_algo', algo)}"]
    if model:
        out.append(f"search_r1_model={check_choice('search_r1_model', model)}")
    if variants:
        out.append(f"search_r1_variant=[{','.join(check_choice('search_r1_variant', v) for v in variants)}]")
    return out


def split_preset_words(words: Sequence[str]) -> tuple[str, str | None, list[str], list[str]]:
    """``ppo qwen2.5-7b-base no_mask search_r1.topk=5`` → (algorithm, model, variants, overrides).

    The first word is the algorithm; a word naming a model or variant file is one; a word with ``=``
    is a Hydra override handed to ``main_ppo`` as it is. Anything else is an error naming the choices.
    """
    if not words or "=" in words[0]:
        raise ConfigError(f"first name an algorithm: {', '.join(choices('search_r1_algo'))}")
    algo, model, variants, overrides = check_choice("search_r1_algo", words[0]), None, [], []
    models, kinds = choices("search_r1_model"), choices("search_r1_variant")
    for word in words[1:]:
        if "=" in word:
            overrides.append(word)
        elif word in models:
            if model is not None:
                raise ConfigError(f"two models named: {model} and {word}")
            model = word
        elif word in kinds:
            variants.append(word)
        else:
            raise ConfigError(f"{word!r} is not a model ({', '.join(models)}) nor a variant ({', '.join(kinds)}), nor a key=value override")
    return algo, model, variants, overrides


def main_ppo_command(algo: str, model: str | None = None, variants: Sequence[str] = (), overrides: Sequence[str] = ()) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with the search path, the presets and ``overrides``."""
    return [sys.executable, "-m", "verl.trainer.main_ppo", SEARCHPATH, *preset_overrides(algo, model, variants), *overrides]


def compose(algo: str = "ppo", model: str | None = None, variants: Sequence[str] = (), overrides: Sequence[str] = ()):
    """The trainer config ``main_ppo`` would build (verl's ``ppo_trainer`` + presets + overrides), unresolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import search_r1_plugin.config  # noqa: F401  (registers the resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_module("search_r1_plugin.config", version_base=None):
        return hydra_compose("search_r1_trainer", overrides=[*preset_overrides(algo, model, variants), *overrides])
