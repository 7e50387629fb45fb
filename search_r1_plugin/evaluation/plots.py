"""The evaluation's charts, drawn one way: grouped bars (a run against the paper, runs side by side) and
lines (EM against retrieval noise). Written as PNG files next to the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def grouped_bars(path: Path, labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str = "exact match") -> Path:
    """One group of bars per label, one bar per series (NaN where a series has no value)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 3.5))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))], list(values), width, label=name)
    ax.set_xticks(list(range(len(labels))), list(labels), rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend()
    return _save(plt, fig, path)


def noise_curves(path: Path, levels: Sequence[float], curves: dict[str, Sequence[float]], title: str = "") -> Path:
    """EM (averaged over datasets) against the share of passages replaced by random ones, one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, ems in curves.items():
        ax.plot(list(levels), list(ems), marker="o", label=method)
    ax.set_xlabel("retrieval noise p (share of passages replaced by random ones)")
    ax.set_ylabel("exact match (average over datasets)")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    ax.legend()
    return _save(plt, fig, path)
