"""``search-r1 report RUN_DIR``: one static HTML page that says how a training run went.

    search-r1 report runs/learn/seed0/grpo                 # → runs/learn/seed0/grpo/report.html
    search-r1 report RUN_DIR --tokenizer PATH --out x.html

Reads what verl and our sampler wrote into the run directory: verl's metrics file (``*metrics.jsonl``
from its ``file`` logger), the token dumps of our sampler (``rollouts/search_r1_tokens/<step>.jsonl``:
ids, loss mask, token rewards) and the run record of :mod:`search_r1_plugin.sandbox.trainer_run`
(``run.json``: model path, command). The page holds the learning curves (PNG, embedded), the health
alarms with the step each fired (``search_r1/health/…`` metrics and the alarm lines of the log), the
best validation step (and its checkpoint when one was saved), and a handful of trajectories of the
last dumped step with what the model wrote and what was injected told apart, and the reward on the
last token. Nothing is fetched from anywhere: the page opens offline.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re
import sys
from pathlib import Path
from typing import Optional

from search_r1_plugin.trajectory_html import STYLE, render_trajectory, trajectory_spans

CURVES = [
    ("validation EM", "val"),
    ("training reward", "critic/score/mean"),
    ("searches per trajectory", "search_r1/searches_per_trajectory"),
    ("valid-action rate", "search_r1/valid_action_rate"),
    ("answers read from a passage", "search_r1/answer_read"),
    ("response length", "response_length/mean"),
    ("entropy", "actor/entropy"),
    ("grad norm", "actor/grad_norm"),
    ("zero-variance groups", "search_r1/health/zero_variance_groups"),
]
ALARM_LINE = re.compile(r"search_r1 health: rule '(\w+)' fired at step (\d+): (.*)")


def read_rows(run_dir: Path) -> list[dict]:
    """verl's metric rows of every ``*metrics.jsonl`` in the run (a resumed run writes one per launch),
    by step; a later launch's row for the same step wins."""
    files = sorted(run_dir.glob("*metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    by_step: dict[int, dict] = {}
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                by_step.setdefault(row["step"], {"step": row["step"], "data": {}})["data"].update(row["data"])
    if not by_step:
        raise FileNotFoundError(f"no verl metrics (*metrics.jsonl from trainer.logger 'file') in {run_dir}")
    return [by_step[s] for s in sorted(by_step)]


def validation_em(data: dict[str, float]) -> Optional[float]:
    """Mean over datasets of ``val-aux/<dataset>/em/mean@1`` (our reward's EM), if validated at this step."""
    values = [v for k, v in data.items() if k.startswith("val-aux/") and k.endswith("/em/mean@1")]
    return sum(values) / len(values) if values else None


def series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    points = []
    for row in rows:
        value = validation_em(row["data"]) if key == "val" else row["data"].get(key)
        if isinstance(value, (int, float)):
            points.append((row["step"], float(value)))
    return sorted(points)


def alarms(rows: list[dict], log_text: str) -> list[dict]:
    found = {(m.group(1), int(m.group(2))): m.group(3) for m in ALARM_LINE.finditer(log_text)}
    for row in rows:
        if row["data"].get("search_r1/health/alarms", 0) and not any(step == row["step"] - 1 for _, step in found):
            found[("(see log)", row["step"] - 1)] = "alarm counted in the metrics"
    return [{"rule": rule, "step": step, "message": msg} for (rule, step), msg in sorted(found.items(), key=lambda kv: kv[0][1])]


def best_validation(rows: list[dict], run_dir: Path) -> Optional[dict]:
    points = series(rows, "val")
    if not points:
        return None
    step, em = max(points, key=lambda p: (p[1], -p[0]))
    checkpoints = sorted(run_dir.glob(f"**/global_step_{step}"))
    return {"step": step, "em": em, "checkpoint": str(checkpoints[0]) if checkpoints else None}


def plot_png(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(title, series(rows, key)) for title, key in CURVES]
    panels = [(t, pts) for t, pts in panels if pts]
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(3.4 * ((len(panels) + 1) // 2), 5.6), squeeze=False)
    for ax, (title, pts) in zip(axes.flat, panels):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def sample_trajectories(run_dir: Path, tokenizer_path: Optional[str], limit: int = 6) -> tuple[Optional[int], list[str]]:
    dumps = sorted((run_dir / "rollouts" / "search_r1_tokens").glob("*.jsonl"), key=lambda p: int(p.stem))
    if not dumps or not tokenizer_path:
        return None, []
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    rows = [json.loads(line) for line in dumps[-1].read_text().splitlines() if line.strip()][:limit]
    rendered = []
    for row in rows:
        ids, mask = row["response_ids"], row["response_mask"]
        n = len(ids)
        while n and ids[n - 1] == tokenizer.pad_token_id and mask[n - 1] == 0:  # verl's right padding
            n -= 1
        spans = trajectory_spans(ids[:n], mask[:n], lambda t: tokenizer.decode(t, skip_special_tokens=False))
        rendered.append(render_trajectory(spans, float(sum(row["rm_scores"]))))
    return int(dumps[-1].stem), rendered


def build_report(run_dir: Path, tokenizer_path: Optional[str] = None) -> str:
    rows = read_rows(run_dir)
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    tokenizer_path = tokenizer_path or record.get("model")
    log_text = "\n".join(p.read_text(errors="replace") for p in run_dir.glob("*.log"))
    png = base64.b64encode(plot_png(rows)).decode()
    found = alarms(rows, log_text)
    best = best_validation(rows, run_dir)
    step, trajectories = sample_trajectories(run_dir, tokenizer_path)
    steps = [r["step"] for r in rows]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>search-r1 report: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Run {html.escape(str(run_dir))}</h1>",
        f"<p>{len(rows)} logged steps ({min(steps)}–{max(steps)}); model {html.escape(str(record.get('model', 'unknown')))}.</p>",
    ]
    if record.get("command"):
        out.append(f"<p>Command:</p><pre>{html.escape(' '.join(record['command']))}</pre>")
    out.append(f'<h2>Curves</h2><img alt="learning curves" src="data:image/png;base64,{png}">')
    out.append("<h2>Health</h2>")
    if found:
        out.append("<table><tr><th>step</th><th>rule</th><th>numbers</th></tr>")
        out += [
            f'<tr class="alarm"><td>{a["step"]}</td><td>{html.escape(a["rule"])}</td><td>{html.escape(a["message"])}</td></tr>'
            for a in found
        ]
        out.append("</table>")
    else:
        out.append("<p>No health rule fired.</p>")
    out.append("<h2>Best validation</h2>")
    if best:
        where = html.escape(best["checkpoint"]) if best["checkpoint"] else "no checkpoint saved at that step"
        out.append(f"<p>Step {best['step']}: EM {best['em']:.3f} ({where}).</p>")
    else:
        out.append("<p>The run never validated.</p>")
    out.append("<h2>Trajectories</h2>")
    if trajectories:
        out.append(f"<p>Step {step}: model text plain, injected text shaded, the reward on the last token.</p>")
        out += trajectories
    else:
        out.append("<p>No token dumps (set trainer.rollout_data_dir) or no tokenizer (--tokenizer).</p>")
    out.append("</body></html>")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="search-r1 report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--tokenizer", default=None, help="to decode token dumps (default: the model of run.json)")
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/report.html")
    args = p.parse_args(argv)
    page = build_report(args.run_dir, args.tokenizer)
    out = args.out or args.run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
