"""What an index was built with, written next to it (``<index>.meta.json``) and checked when served.

Queries must be encoded the way the passages were (same prefixes, same pooling). The builder records
the encoder and its family; the server takes the family from there, and refuses a different
``--encoder-family`` instead of serving silently worse results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def meta_path(index_path: str | Path) -> Path:
    """``<index>.meta.json``; for shards (``a,b,c``) the first shard's (the builder writes one per shard)."""
    return Path(f"{str(index_path).split(',')[0]}.meta.json")


def write_meta(index_path: str | Path, encoder: Any) -> Path:
    path = meta_path(index_path)
    path.write_text(
        json.dumps(
            {
                "encoder": encoder.name,
                "family": encoder.family,
                "pooling": encoder.pooling,
                "query_prefix": encoder.query_prefix,
                "passage_prefix": encoder.passage_prefix,
                "dim": encoder.dim,
            },
            indent=1,
        )
    )
    return path


def read_meta(index_path: str | Path) -> Optional[dict]:
    path = meta_path(index_path)
    return json.loads(path.read_text()) if path.exists() else None


def family_for_serving(index_path: str | Path, family: Optional[str]) -> Optional[str]:
    """The family to encode queries with: the index's recorded one; ``family`` (or a guess) without it."""
    meta = read_meta(index_path)
    if meta is None:
        return family
    if family is not None and family != meta["family"]:
        raise ValueError(
            f"--encoder-family {family} but {index_path} was built with family {meta['family']!r} "
            f"(encoder {meta['encoder']}, {meta_path(index_path).name}); queries must be encoded "
            "like the passages"
        )
    return meta["family"]
