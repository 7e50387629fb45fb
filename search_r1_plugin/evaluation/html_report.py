"""``report.html`` next to an evaluation's ``table.md``: a page to look at (docs/evaluation.md).

The EM table, the failure breakdown as one stacked bar per dataset, the robustness curve when the
directory holds one (``search-r1 robustness``), and a sample of trajectories per failure label, drawn as
every trajectory in the project is drawn (:mod:`search_r1_plugin.trajectory_html`). Offline: images are
embedded.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from search_r1_plugin.evaluation.attribution import LABELS
from search_r1_plugin.evaluation.plots import pyplot
from search_r1_plugin.trajectory_html import STYLE, render_trajectory

COLORS = {"correct": "#4c9a4c", "format_failure": "#999999", "no_search": "#c9a227", "retrieval_miss": "#c0504d", "reading_miss": "#4f81bd"}


def breakdown_png(scores: dict) -> bytes:
    plt = pyplot()
    names = [n for n in scores if scores[n].get("failures")]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 3.5))
    bottom = [0.0] * len(names)
    for label in LABELS:
        values = [scores[n]["failures"].get(label, 0.0) for n in names]
        ax.bar(names, values, bottom=bottom, label=label, color=COLORS[label])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("share of questions")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _trajectory(line: dict) -> str:
    spans = [(text, bool(model)) for text, model in line.get("spans") or []] or [(line.get("response", ""), True)]
    return render_trajectory(spans, float(line.get("em", 0.0)))


def build_eval_report(out_dir: Path, per_label: int = 3) -> str:
    out_dir = Path(out_dir)
    scores = json.loads((out_dir / "scores.json").read_text())
    manifest = json.loads((out_dir / "manifest.json").read_text()) if (out_dir / "manifest.json").exists() else {}
    names = list(scores)
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>search-r1 eval: {html.escape(out_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Evaluation {html.escape(str(out_dir))}</h1>",
        f"<p>Method {html.escape(str(manifest.get('method', '?')))}, model "
        f"{html.escape(str(manifest.get('model', {}).get('path', '?')))}.</p>",
        "<h2>Exact match</h2><table><tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>avg</th></tr>",
    ]
    for metric in ("em", "f1", "sub_em"):
        vals = [scores[n][metric] for n in names]
        cells = "".join(f"<td>{v:.3f}</td>" for v in vals)
        page.append(f"<tr><td>{metric.upper().replace('_', '-')}</td>{cells}<td>{sum(vals) / len(vals):.3f}</td></tr>")
    page.append("</table>")
    if any(scores[n].get("failures") for n in names):
        page += ["<h2>Why answers failed</h2>", _img(breakdown_png(scores), "failure breakdown per dataset")]
    curve = out_dir / "robustness.png"
    if curve.exists():
        page += ["<h2>Robustness to a worse retriever</h2>", _img(curve.read_bytes(), "EM against retrieval noise")]
    page.append("<h2>Trajectories by failure label</h2><p>Model text plain, retrieved text shaded, EM last.</p>")
    for name in names:
        path = out_dir / "trajectories" / f"{name}.jsonl"
        if not path.exists():
            continue
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        for label in LABELS:
            chosen = [x for x in lines if x.get("failure", {}).get("label") == label][:per_label]
            if chosen:
                page.append(f"<h3>{html.escape(name)}: {label} ({sum(x.get('failure', {}).get('label') == label for x in lines)})</h3>")
                for x in chosen:
                    page.append(f"<p>{html.escape(x['question'])} — gold {html.escape(', '.join(x['golden_answers']))}</p>")
                    page.append(_trajectory(x))
    page.append("</body></html>")
    return "\n".join(page)


def write_eval_report(out_dir: Path) -> Path:
    path = Path(out_dir) / "report.html"
    path.write_text(build_eval_report(out_dir), encoding="utf-8")
    return path
