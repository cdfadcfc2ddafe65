"""One place for output: data to stdout, talk and progress to stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console


def _width(stream: object) -> int | None:
    """Rich's own width on a terminal; piped output (CI logs, files) is not cut at 80 columns."""
    if os.environ.get("COLUMNS") or getattr(stream, "isatty", lambda: False)():
        return None
    return 160


out = Console(soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))


def print_json(data: Any) -> None:
    text = json.dumps(data, default=str, ensure_ascii=False)
    if len(text) < 256_000:  # indented for people; large documents stay compact (C encoder)
        text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_raw(text: str) -> None:
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
