"""The robustness curve: EM against retrieval noise, one line per method (``search-r1 robustness``)."""

from __future__ import annotations

from pathlib import Path


def plot_robustness(levels: list[float], curves: dict[str, list[float]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, ems in curves.items():
        ax.plot(levels, ems, marker="o", label=method)
    ax.set_xlabel("retrieval noise p (share of passages replaced by random ones)")
    ax.set_ylabel("exact match (average over datasets)")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
