"""The README's main command, as a subprocess, on a few questions."""

import os
import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "recipes.demo", "--out", str(tmp_path / "demo"), "--limit", "10"],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| sample_")]
    assert len(rows) == 2
    ems = [float(r.split("|")[3]) for r in rows]
    assert all(em >= 0.5 for em in ems), out.stdout  # the reader finds most answers through the server
    assert (tmp_path / "demo" / "trajectories.jsonl").read_text().count("\n") == 20
