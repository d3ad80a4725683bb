"""Where minillama keeps what it builds once per machine: converted models, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$MINILLAMA_CACHE, else $XDG_CACHE_HOME/minillama (by default ~/.cache/minillama). An
    empty variable counts as unset: Path("") is the current folder, which would fill with the
    cache's files."""
    if os.environ.get("MINILLAMA_CACHE"):
        return Path(os.environ["MINILLAMA_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minillama"
