"""The one way the project draws a trajectory: model-written text plain, injected text shaded, the reward
last (``search-r1 report`` for training runs, the evaluation's ``report.html``)."""

from __future__ import annotations

import html

STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 3px 8px; font-size: 90%; }
pre.trajectory { white-space: pre-wrap; background: #fafafa; border: 1px solid #ddd; padding: 8px; font-size: 85%; }
span.injected { background: #e3ecf7; color: #345; } span.model { color: #111; }
span.reward { background: #fde9b8; font-weight: bold; margin-left: 6px; padding: 0 4px; }
.alarm { color: #a00; }
"""


def trajectory_spans(ids: list[int], mask: list[int], decode) -> list[tuple[str, bool]]:
    """Runs of model-written (mask 1) and injected (mask 0) tokens, each decoded on its own."""
    spans: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            spans.append((decode(ids[start:i]), bool(mask[start])))
            start = i
    return spans


def render_trajectory(spans: list[tuple[str, bool]], reward: float) -> str:
    """One trajectory as HTML: model text plain, injected text in a shaded box, the reward on the last token.
    The one way the project draws a trajectory."""
    parts = []
    for text, model in spans:
        cls = "model" if model else "injected"
        parts.append(f'<span class="{cls}">{html.escape(text)}</span>')
    parts.append(f'<span class="reward">reward {reward:g}</span>')
    return f'<pre class="trajectory">{"".join(parts)}</pre>'
