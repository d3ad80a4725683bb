"""Where minillama keeps what it builds once per machine: converted models, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$MINILLAMA_CACHE, else $XDG_CACHE_HOME/minillama (by default ~/.cache/minillama)."""
    if "MINILLAMA_CACHE" in os.environ:
        return Path(os.environ["MINILLAMA_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minillama"
