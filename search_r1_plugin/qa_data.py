"""FlashRAG-format QA files (``{"id", "question", "golden_answers"}``), local or from the hub.

Shared by ``search_r1_plugin/data_prep.py`` (training parquet) and ``search-r1 eval``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from search_r1_plugin.errors import DataError

HUB_DATASET = "RUC-NLPIR/FlashRAG_datasets"
# The splits the paper evaluates on.
PAPER_TEST_SPLITS = {
    "nq": "test",
    "triviaqa": "test",
    "popqa": "test",
    "hotpotqa": "dev",
    "2wikimultihopqa": "dev",
    "musique": "dev",
    "bamboogle": "test",
}


def read_local(local_dir: Path, name: str, split: str) -> Iterator[dict]:
    path = Path(local_dir) / name / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found (expected FlashRAG layout {{dir}}/{{dataset}}/{{split}}.jsonl)")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"__error__": f"{path}:{lineno}: invalid JSON ({exc})"}


def read_hub(name: str, split: str) -> Iterator[dict]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError("loading from the hub needs the datasets package: pip install 'search-r1-plugin[eval]'") from exc
    try:
        ds = datasets.load_dataset(HUB_DATASET, name, split=split)
    except Exception as exc:
        raise DataError(
            f"could not load {HUB_DATASET}/{name} split {split} from the hub ({exc}); offline? "
            "download the FlashRAG files and use a local directory"
        ) from exc
    yield from ds


def read_dataset(name: str, split: str, local_dir: Path | None) -> Iterator[dict]:
    return read_local(local_dir, name, split) if local_dir is not None else read_hub(name, split)
