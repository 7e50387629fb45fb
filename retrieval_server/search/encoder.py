"""Text encoders for dense retrieval; the server and the index builder share this one module.

Per model family, the conventions the model was trained with:

=========  ===============  ==================  =======
family     query prefix     passage prefix      pooling
=========  ===============  ==================  =======
e5         ``query: ``      ``passage: ``       mean
bge        instruction      (none)              cls
plain      (none)           (none)              mean
=========  ===============  ==================  =======

The family is a setting (``--encoder-family``, the original's ``--retriever_name``), written next
to the index by the builder (``<index>.meta.json``) so the server encodes queries the way the
passages were encoded. Without it, the family is guessed from the model name and the guess is logged.

Embeddings are L2-normalised (inner product = cosine), queries are cut at 256
tokens, passages at 512; fp16 on GPU, bf16 on CPUs with AMX (``dtype="fp32"``
for bit-exact fp32). Sentence-transformers checkpoints
(a folder with ``modules.json``) can be loaded through sentence-transformers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class EncoderSpec:
    query_prefix: str
    passage_prefix: str
    pooling: str  # "mean" | "cls"


FAMILIES = {
    "e5": EncoderSpec("query: ", "passage: ", "mean"),
    "bge": EncoderSpec(BGE_QUERY_INSTRUCTION, "", "cls"),
    "plain": EncoderSpec("", "", "mean"),
}


def guess_family(model_name: str) -> str:
    """Family from the model's name (the default when none is set): ``e5``, ``bge`` or ``plain``."""
    name = Path(model_name.rstrip("/")).name.lower() or model_name.lower()
    for family in ("e5", "bge"):
        if family in name:
            return family
    return "plain"


def resolve_family(model_name: str, family: str | None) -> str:
    if family is None:
        family = guess_family(model_name)
        logger.info("encoder family %r guessed from the name %r; set --encoder-family to be explicit", family, model_name)
    if family not in FAMILIES:
        raise ValueError(f"--encoder-family must be one of {sorted(FAMILIES)}, got {family!r}")
    return family


def cpu_has_amx_bf16() -> bool:
    """Intel AMX makes bf16 matmuls several times faster than fp32 on CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def pick_dtype(device: str, dtype: str | None) -> str:
    """auto: fp16 on GPU, bf16 on CPUs with AMX, fp32 otherwise."""
    if dtype and dtype != "auto":
        if dtype not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"--dtype must be auto, fp32, fp16 or bf16, got {dtype!r}")
        return dtype
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_amx_bf16() else "fp32"


def pick_device(device: str | None = None) -> str:
    import torch

    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# Folder names that say nothing about the model (verl's exports, package layouts, HF snapshot folders).
_GENERIC_FOLDERS = {"model", "models", "huggingface", "hf", "checkpoint", "checkpoints", "snapshot", "snapshots", "encoder"}
_NAMED_FAMILIES = ("e5", "bge", "contriever", "gte", "minilm")


def _model_names(model_name: str) -> list[str]:
    """Names that identify the model, most specific first: its own folder (or hub id) name, the
    ``_name_or_path`` its ``config.json`` records, then the parent folder when the folder's own name is
    generic. Never the rest of the path: where a checkout lives (``/home/x/code5/…``) says nothing."""
    import json

    path = Path(model_name.rstrip("/"))
    own = path.name.lower()
    names = [] if own in _GENERIC_FOLDERS or re.fullmatch(r"[0-9a-f]{12,40}", own) else [own]
    config = path / "config.json"
    if config.is_file():
        try:
            recorded = json.loads(config.read_text()).get("_name_or_path") or ""
        except (OSError, ValueError):
            recorded = ""
        if recorded:
            names.append(Path(str(recorded).rstrip("/")).name.lower())
    if not names and path.parent.name:
        names.append(path.parent.name.lower())
    return names or [own]


def method_name(model_name: str) -> str:
    """Short name used in index file names (``e5_Flat.index``), as the original builder does: the
    encoder family found in the model's own name (:func:`_model_names`), else that name."""
    names = _model_names(model_name)
    for name in names:
        for family in _NAMED_FAMILIES:
            if family in name:
                return family
    return names[0]


class Encoder:
    """HF ``AutoModel`` encoder with the model family's prefixes and pooling."""

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        pooling: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        family: str | None = None,
        query_max_length: int = 256,
        passage_max_length: int = 512,
        use_sentence_transformers: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.family = resolve_family(model_name_or_path, family)
        spec = FAMILIES[self.family]
        self.name = model_name_or_path
        self.pooling = pooling or spec.pooling
        self.query_prefix = spec.query_prefix if query_prefix is None else query_prefix
        self.passage_prefix = spec.passage_prefix if passage_prefix is None else passage_prefix
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]
        self._st = None
        if use_sentence_transformers:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(model_name_or_path, device=self.device)
            self._st.to(torch_dtype)
            self.dim = int(self._st.get_sentence_embedding_dimension())
            return
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        self.model = AutoModel.from_pretrained(model_name_or_path).to(self.device, torch_dtype).eval()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: Sequence[str], *, is_query: bool, batch_size: int) -> np.ndarray:
        """``len(texts) × dim`` float32, L2-normalised."""
        prefix = self.query_prefix if is_query else self.passage_prefix
        texts = [prefix + t for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._st is not None:
            out = self._st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
            return np.asarray(out, dtype=np.float32)
        torch = self._torch
        max_length = self.query_max_length if is_query else self.passage_max_length
        # Encode in length order so each batch pads to similar lengths; restore order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        texts = [texts[i] for i in order]
        chunks = []
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[lo : lo + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                if self.pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                emb = torch.nn.functional.normalize(emb.float(), dim=-1)
                chunks.append(emb.cpu().numpy())
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[order] = np.concatenate(chunks)
        return out

    def flops_per_token(self) -> float:
        """≈ 2 × non-embedding parameters: the matmul work of one token in a forward pass."""
        model = self._st if self._st is not None else self.model
        params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
        return 2.0 * params
