"""The wiki-18 jsonl corpus, looked up by row number without loading it into Python objects.

A 21M-passage corpus as Python dicts costs tens of GB; here the file is
memory-mapped and a NumPy array of line offsets (8 bytes a passage, cached
beside the corpus as ``<corpus>.offsets.npy``) maps a FAISS id to its line.
Row ``i`` of the index is line ``i`` of the file, as in the original.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm


def _offsets_path(path: Path) -> Path:
    return path.with_name(path.name + ".offsets.npy")


def build_offsets(path: str | Path, show_progress: bool = True) -> np.ndarray:
    """Byte offset of each non-blank line (one chunked pass over the mmap, with progress)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = [np.zeros(1, dtype=np.int64)]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data = np.frombuffer(mm, dtype=np.uint8)
        chunk = 1 << 26
        for lo in tqdm(range(0, size, chunk), desc=f"indexing {path.name}", disable=not show_progress):
            hi = min(lo + chunk, size)
            starts.append((np.flatnonzero(data[lo:hi] == 10) + lo + 1).astype(np.int64))
        del data
    line_starts = np.concatenate(starts)
    line_starts = line_starts[line_starts < size]
    line_ends = np.append(line_starts[1:], size)
    return line_starts[(line_ends - line_starts) > 1]  # drop blank lines


def contents_of(doc: dict[str, Any]) -> str:
    """A passage's ``contents`` (``"Title"\ntext``), built from ``title``/``text`` when a corpus has no such field."""
    if "contents" in doc:
        return doc["contents"]
    return f'"{doc.get("title", "")}"\n{doc.get("text", "")}'


def wire_document(doc: dict[str, Any], row: int | None = None) -> dict[str, Any]:
    """A corpus row as the ``/retrieve`` wire format promises it, whatever retriever found it:
    ``id`` a string (the row number when the corpus has none), ``contents`` present; other fields kept."""
    doc_id = doc.get("id", row if row is not None else "")
    return {**doc, "id": str(doc_id), "contents": contents_of(doc)}


class Corpus:
    """Read-only, memory-mapped jsonl corpus: ``corpus[i]`` → ``{"id", "contents", ...}``."""

    def __init__(self, path: str | Path, show_progress: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"corpus file not found: {self.path}")
        cache = _offsets_path(self.path)
        if cache.is_file() and cache.stat().st_mtime >= self.path.stat().st_mtime:
            self.offsets = np.load(cache, mmap_mode="r")
        else:
            self.offsets = build_offsets(self.path, show_progress)
            try:
                np.save(cache, self.offsets)
            except OSError:  # read-only location: keep the offsets in memory only
                pass
        self._file = open(self.path, "rb")
        size = os.fstat(self._file.fileno()).st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.size = size

    def __len__(self) -> int:
        return len(self.offsets)

    def raw(self, i: int) -> bytes:
        if not 0 <= i < len(self.offsets):
            raise IndexError(f"passage {i} out of range (corpus has {len(self)})")
        start = int(self.offsets[i])
        end = int(self.offsets[i + 1]) if i + 1 < len(self.offsets) else self.size
        return self._mm[start:end].rstrip(b"\r\n")

    def __getitem__(self, i: int) -> dict[str, Any]:
        return json.loads(self.raw(int(i)))

    def hit(self, i: int) -> dict[str, Any] | None:
        """The document of a search hit in the wire format (:func:`wire_document`); ``None`` for FAISS's
        -1 (fewer hits than asked), which must never turn into a real passage (FlashRAG maps it to the last one)."""
        return None if i < 0 else wire_document(self[i], int(i))

    def contents(self, i: int) -> str:
        return contents_of(self[i])

    def iter_contents(self, start: int = 0, stop: int | None = None) -> Iterator[str]:
        for i in range(start, len(self) if stop is None else min(stop, len(self))):
            yield self.contents(i)

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._file.close()
