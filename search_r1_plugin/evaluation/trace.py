"""Live trace for ``search-r1 ask``: think / search / information / answer, coloured on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

COLOURS = {"model": "\033[37m", "search": "\033[1;33m", "information": "\033[36m", "invalid": "\033[31m", "answer": "\033[1;32m"}
LABELS = {"search": "search", "information": "retrieved", "invalid": "invalid action", "answer": "answer"}
RESET = "\033[0m"


class TracePrinter:
    def __init__(self, stream: TextIO = sys.stdout, colour: bool | None = None) -> None:
        self.stream = stream
        self.colour = stream.isatty() if colour is None else colour

    def __call__(self, kind: str, payload: str) -> None:
        text = payload if kind == "model" else f"[{LABELS.get(kind, kind)}] {payload.strip()}"
        if self.colour:
            text = f"{COLOURS.get(kind, '')}{text}{RESET}"
        self.stream.write(text + "\n")
        self.stream.flush()
