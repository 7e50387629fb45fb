"""``search-r1 demo --scripted``: the rollout pipeline end to end, as a subprocess, on a few questions."""

import os
import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    command = [sys.executable, "-m", "search_r1_plugin.cli", "demo", "--scripted", "--out", str(tmp_path / "demo"), "--limit", "10"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    em_row = next(line for line in out.stdout.splitlines() if "| EM |" in line)
    ems = [float(x) for x in em_row.strip("| ").split(" | ")[2:]]  # sample_nq, sample_hotpotqa, avg
    assert len(ems) == 3 and all(em >= 0.5 for em in ems), out.stdout  # the reader finds most answers
    assert (tmp_path / "demo" / "trajectories.jsonl").read_text().count("\n") == 20
    assert (tmp_path / "demo" / "comparison.png").stat().st_size > 1000
