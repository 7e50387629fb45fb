"""``search-r1-retriever download wiki-18 --index flat|ivfpq|bm25 --out DIR``: the paper's retrieval assets.

The original publishes wiki-18's E5 Flat index as parts to concatenate (``PeterJinGo/wiki-18-e5-index``:
``part_aa``, ``part_ab``) and the corpus gzipped (``PeterJinGo/wiki-18-corpus``: ``wiki-18.jsonl.gz``), for
queries encoded by ``intfloat/e5-base-v2``. This command:

1. asks the hub for every file's size and checksum and refuses to start, naming both numbers, when the
   disk lacks the space the choice needs at its peak;
2. downloads from the hub (``HF_ENDPOINT`` and the token of ``huggingface_hub``; progress bars; an
   interrupted download resumes where it stopped when the command is run again) and checks each file
   against the hub's SHA-256 when the hub gives one;
3. appends the index parts to ``e5_Flat.index`` one at a time, deleting each part once appended (peak:
   the index plus one part); a run interrupted in the middle knows which parts are in;
4. decompresses the corpus to ``wiki-18.jsonl``, writes ``e5_Flat.index.meta.json`` (family e5) and
   prints the ``serve`` command to run next.

Without 64 GB of RAM for the Flat index: ``--index ivfpq`` builds an IVF-PQ index from the downloaded
vectors (read from the Flat file through a memory map, never re-encoded) and serves it with exact re-ranking
from the Flat file on disk; ``--index bm25`` builds our bm25s index from the corpus (no vectors at all).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm


@dataclass(frozen=True)
class Assets:
    index_repo: str
    index_parts: tuple[str, ...]
    corpus_repo: str
    corpus_file: str
    encoder: str
    family: str
    dim: int


ASSETS = {
    "wiki-18": Assets(
        index_repo="PeterJinGo/wiki-18-e5-index",
        index_parts=("part_aa", "part_ab"),
        corpus_repo="PeterJinGo/wiki-18-corpus",
        corpus_file="wiki-18.jsonl.gz",
        encoder="intfloat/e5-base-v2",
        family="e5",
        dim=768,
    )
}
GB = 1e9
# gzip's own size field wraps at 4 GiB, so the decompressed corpus is estimated; wiki-18's jsonl is about
# 3 times its .gz (jsonl of plain text compresses 3-4×; the estimate only decides whether to start)
CORPUS_EXPANSION = 3.5
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Remote:
    repo: str
    filename: str
    size: int
    sha256: Optional[str]
    endpoint: Optional[str] = None


def remote_files(assets: Assets, index: str, revision: str, endpoint: Optional[str]) -> tuple[Remote, list[Remote]]:
    """The corpus and the index parts (none for bm25) with the sizes and checksums the hub reports."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    def remote(repo: str, filename: str) -> Remote:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename, repo_type="dataset", revision=revision, endpoint=endpoint))
        etag = (meta.etag or "").strip('"')
        return Remote(repo, filename, int(meta.size or 0), etag if _SHA256.match(etag) else None, endpoint)

    parts = [remote(assets.index_repo, p) for p in assets.index_parts] if index in ("flat", "ivfpq") else []
    return remote(assets.corpus_repo, assets.corpus_file), parts


def ivfpq_bytes(n: int, factory: str) -> int:
    """RAM of an IVF-PQ index: ``PQm`` bytes and an 8-byte id per vector, plus the coarse centroids."""
    m = re.search(r"PQ(\d+)", factory)
    nlist = re.search(r"IVF(\d+)", factory)
    code = int(m.group(1)) if m else 0
    return n * (code + 8) + (int(nlist.group(1)) * 768 * 4 if nlist else 0)


def space_needed(corpus: Remote, parts: list[Remote], index: str, out: Path, ivfpq_factory: str) -> int:
    """Bytes the run still needs at its peak in ``out``: what is already there is not counted again."""
    have_corpus = (out / corpus.filename.removesuffix(".gz")).exists()
    need = 0 if have_corpus else int(corpus.size * (1 + CORPUS_EXPANSION))  # the .gz and the jsonl, briefly both
    if index in ("flat", "ivfpq"):
        state = _State(out / "e5_Flat.index")
        todo = [p for p in parts if p.filename not in state.appended]
        total = sum(p.size for p in parts)
        done = total if state.complete else state.offset()
        need += (total - done) + max((p.size for p in todo), default=0)  # the index grows; one part on disk at a time
        if index == "ivfpq":
            need += ivfpq_bytes(total // (4 * 768), ivfpq_factory)
    if index == "bm25":
        need += int(corpus.size * CORPUS_EXPANSION * 0.6)  # bm25s's sparse matrix and vocabulary (rough)
    return need


class _State:
    """Which index parts are already appended to the Flat file (``<index>.download.json``)."""

    def __init__(self, index_path: Path) -> None:
        self.index_path = index_path
        self.partial = Path(f"{index_path}.partial")
        self.path = Path(f"{index_path}.download.json")
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.appended: list[str] = data.get("appended", [])
        self.sizes: list[int] = data.get("sizes", [])
        self.complete = index_path.exists() and not self.partial.exists() and data.get("complete", False)

    def offset(self) -> int:
        return sum(self.sizes)

    def save(self, complete: bool = False) -> None:
        self.path.write_text(json.dumps({"appended": self.appended, "sizes": self.sizes, "complete": complete}))


def sha256_of(path: Path, label: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"checking {label}") as bar:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def fetch(remote: Remote, out: Path, revision: str) -> Path:
    """One file into ``out``, resumed from ``<file>.incomplete`` when a previous run stopped in the middle
    (``huggingface_hub`` 1.x downloads to a fresh per-process file each time, so its downloads do not resume
    across runs: the bytes are fetched here with a Range request on the hub's own URL, its headers and token),
    then checked against the hub's size and SHA-256."""
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    path = out / remote.filename
    if path.exists() and path.stat().st_size == remote.size:
        return path
    partial = out / f"{remote.filename}.incomplete"
    have = partial.stat().st_size if partial.exists() else 0
    if remote.size and have > remote.size:
        partial.unlink()
        have = 0
    url = hf_hub_url(remote.repo, remote.filename, repo_type="dataset", revision=revision, endpoint=remote.endpoint)
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if have:
        headers["Range"] = f"bytes={have}-"
    with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as resp:
        hf_raise_for_status(resp)
        if have and resp.status_code != 206:  # the server ignored the range: start over
            have = 0
        with (
            open(partial, "ab" if have else "wb") as sink,
            tqdm(total=remote.size or None, initial=have, unit="B", unit_scale=True, desc=remote.filename) as bar,
        ):
            for chunk in resp.iter_bytes():  # as it arrives: what was received is on disk if the run stops
                sink.write(chunk)
                sink.flush()
                bar.update(len(chunk))
    if remote.size and partial.stat().st_size != remote.size:
        raise ValueError(
            f"{remote.filename}: {partial.stat().st_size} bytes received, the hub says {remote.size}; run the command again to resume"
        )
    if remote.sha256 and sha256_of(partial, remote.filename) != remote.sha256:
        partial.unlink()
        raise ValueError(f"{remote.filename}: SHA-256 differs from the hub's ({remote.sha256}); deleted, run the command again")
    partial.replace(path)
    return path


def assemble_flat(parts: list[Remote], out: Path, revision: str, log: Callable[[str], None]) -> Path:
    """``e5_Flat.index`` from its parts, appended in order; each part deleted once it is in."""
    index_path = out / "e5_Flat.index"
    state = _State(index_path)
    if state.complete:
        log(f"{index_path.name}: already assembled")
        return index_path
    if not state.partial.exists():
        state.appended, state.sizes = [], []
    with open(state.partial, "ab") as sink:
        sink.truncate(state.offset())  # a run stopped while appending: back to the last whole part
        sink.seek(state.offset())
        for part in parts:
            if part.filename in state.appended:
                continue
            path = fetch(part, out, revision)
            with open(path, "rb") as src, tqdm(total=part.size, unit="B", unit_scale=True, desc=f"appending {part.filename}") as bar:
                for chunk in iter(lambda: src.read(1 << 24), b""):
                    sink.write(chunk)
                    bar.update(len(chunk))
            sink.flush()
            state.appended.append(part.filename)
            state.sizes.append(part.size)
            state.save()
            path.unlink()
    state.partial.replace(index_path)
    state.save(complete=True)
    return index_path


def decompress_corpus(corpus: Remote, out: Path, revision: str, log: Callable[[str], None]) -> Path:
    target = out / corpus.filename.removesuffix(".gz")
    if target.exists():
        log(f"{target.name}: already there")
        return target
    gz = fetch(corpus, out, revision)
    partial = Path(f"{target}.partial")
    with gzip.open(gz, "rb") as src, open(partial, "wb") as dst, tqdm(unit="B", unit_scale=True, desc=f"decompressing {gz.name}") as bar:
        for chunk in iter(lambda: src.read(1 << 24), b""):
            dst.write(chunk)
            bar.update(len(chunk))
    partial.replace(target)
    gz.unlink()
    return target


def write_family_meta(index_path: Path, assets: Assets) -> None:
    from retrieval_server.search.encoder import FAMILIES

    family = FAMILIES[assets.family]
    meta = {
        "encoder": assets.encoder,
        "family": assets.family,
        "pooling": family.pooling,
        "query_prefix": family.query_prefix,
        "passage_prefix": family.passage_prefix,
        "dim": assets.dim,
    }
    Path(f"{index_path}.meta.json").write_text(json.dumps(meta, indent=1))


def download(
    name: str,
    index: str,
    out: Path,
    *,
    revision: str,
    ivfpq_factory: str,
    endpoint: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Everything above; returns the ``serve`` command to run next (as argv). ``endpoint``: the hub's URL
    (default ``HF_ENDPOINT``, else huggingface.co)."""
    assets = ASSETS[name]
    out.mkdir(parents=True, exist_ok=True)
    corpus, parts = remote_files(assets, index, revision, endpoint)
    need, free = space_needed(corpus, parts, index, out, ivfpq_factory), shutil.disk_usage(out).free
    sizes = ", ".join(f"{r.filename} {r.size / GB:.1f} GB" for r in [corpus, *parts])
    log(f"{name} ({index}): {sizes}; needs about {need / GB:.1f} GB free in {out} at its peak, {free / GB:.1f} GB free")
    if need > free:
        raise ValueError(f"not enough disk space in {out}: about {need / GB:.1f} GB needed, {free / GB:.1f} GB free")
    corpus_path = decompress_corpus(corpus, out, revision, log)
    if index == "bm25":
        from retrieval_server.build.builder import build_bm25_index

        summary = build_bm25_index(corpus_path, out)
        return ["search-r1-retriever", "serve", "--retriever", "bm25", "--index", str(summary.index_path), "--corpus", str(corpus_path)]
    flat = assemble_flat(parts, out, revision, log)
    write_family_meta(flat, assets)
    serve = ["search-r1-retriever", "serve", "--corpus", str(corpus_path), "--encoder", assets.encoder]
    if index == "flat":
        return [*serve, "--index", str(flat)]
    from retrieval_server.search.index import vectors_on_disk

    vectors = vectors_on_disk(flat)
    ivf_path = out / f"{assets.family}_{ivfpq_factory.replace(',', '_')}.index"
    if not ivf_path.exists():
        from retrieval_server.build.builder import build_faiss

        log(f"{ivf_path.name}: about {ivfpq_bytes(len(vectors), ivfpq_factory) / GB:.1f} GB of RAM to build and to serve")
        import faiss

        faiss.write_index(build_faiss(vectors, ivfpq_factory), str(ivf_path))
        write_family_meta(ivf_path, assets)
    return [*serve, "--index", str(ivf_path), "--nprobe", "64", "--rerank-embeddings", str(flat), "--rerank-k", "100"]
