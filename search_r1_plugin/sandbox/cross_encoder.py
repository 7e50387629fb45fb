"""A cross-encoder built offline: MiniLM's weights with a fresh one-logit head (seeded).

The shape of ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (6 layers, 384 wide), so it costs what that reranker
costs, but its scores are random: for the reranker stage's plumbing, tests and cost benchmark, not its quality.
"""

from __future__ import annotations

from pathlib import Path


def build_cross_encoder(out: str | Path, base: str, seed: int = 0) -> str:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    torch.nn.init.normal_(model.classifier.weight, std=1.0)  # a head that spreads the scores
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return str(out)
