"""The retrieval server's own command as real processes: build an index, serve it on 127.0.0.1.

The plugin reaches the server only through its command line and HTTP (the dependency rule the
tests enforce), so the sandbox does too.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from search_r1_plugin.retrieval_client import RetrievalError, server_health


def build_index(args: Sequence[str], log_path: str | Path) -> Path:
    """``python -m retrieval_server build-index <args>``; the path of the index it wrote."""
    log_path = Path(log_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with open(log_path, "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "retrieval_server", "build-index", *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    text = log_path.read_text()
    built = built_index_path(text)
    if code != 0 or built is None:
        raise RuntimeError(f"build-index exited with code {code}:\n{text[-3000:]}")
    return built


def built_index_path(log_text: str) -> Path | None:
    """The index path of the builder's ``built <path> — <summary>`` line (a path may hold spaces)."""
    built = re.search(r"^built (.+?) — ", log_text, re.MULTILINE)
    return Path(built.group(1)) if built else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url: str, proc: subprocess.Popen, timeout_s: float = 120.0, log: Path | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            detail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"retrieval server exited with code {proc.returncode}:\n{detail}")
        try:
            health = server_health(f"{base_url}/retrieve", timeout_s=2)
        except RetrievalError:
            health = {}
        if health.get("status") == "ready":
            return
        if health.get("status") == "failed":
            raise RuntimeError(f"retrieval server failed to load: {health.get('error')}")
        time.sleep(0.2)
    raise TimeoutError(f"retrieval server at {base_url} not ready after {timeout_s} s")


@contextmanager
def retrieval_server(
    args: Sequence[str], log_path: str | Path, port: int | None = None, timeout_s: float = 120.0, stop_timeout_s: float = 10.0
) -> Iterator[str]:
    """``python -m retrieval_server serve <args>`` on a free port; yields the base URL. Stopped with SIGTERM
    (a ``--ray`` server then deletes its application and its local cluster) and killed after ``stop_timeout_s``."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log_path = Path(log_path)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "retrieval_server", "serve", *args, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_ready(base, proc, timeout_s, log_path)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
