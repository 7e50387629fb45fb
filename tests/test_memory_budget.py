"""recipes/memory_budget.py: parameter counts exact against transformers, the table printed for every preset model."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "memory_budget.py"


@pytest.fixture(scope="module")
def mb():
    spec = importlib.util.spec_from_file_location("memory_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_matches_transformers(mb, family, tied):
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if family == "qwen2" else (Qwen3Config, Qwen3ForCausalLM)
    extra = {"head_dim": 24} if family == "qwen3" else {}
    config = config_cls(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96, vocab_size=301,
        tie_word_embeddings=tied, **extra,
    )  # fmt: skip
    arch = mb.Architecture.from_config(config.to_dict())
    assert arch.parameters() == model_cls(config).num_parameters()


def test_known_models_and_kv_cache(mb):
    counts = {name: mb.Architecture(**cfg).parameters() for name, cfg in mb.KNOWN_MODELS.items()}
    assert counts["qwen2.5-7b"] == 7_615_616_512 and counts["qwen2.5-3b"] == 3_085_938_688  # the model cards' 7.61B / 3.09B
    assert mb.Architecture(**mb.KNOWN_MODELS["qwen2.5-7b"]).kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2
    arch = mb.Architecture(**mb.KNOWN_MODELS["qwen2.5-14b"])
    assert mb.verdict(arch, mb.Run(gpus=8), 24).startswith("no")
    assert mb.verdict(mb.Architecture(**mb.KNOWN_MODELS["qwen2.5-3b"]), mb.Run(gpus=8), 80).startswith("yes")


def test_cli_prints_every_model(mb, capsys, tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, vocab_size=300).save_pretrained(tmp_path)
    assert mb.main(["--model", "qwen2.5-7b-base", "--model", str(tmp_path), "--gpus", "1", "--lora-rank", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].startswith("qwen2.5-7b") and " 7.62B " in out[1] and out[2].startswith(tmp_path.name)
    with pytest.raises(SystemExit, match="unknown model"):
        mb.main(["--model", "llama-7b"])
