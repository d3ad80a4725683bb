"""The embedded model's first-run conversion (minillama/loader.py, convert_gguf): a failure part
way (a full disk, a file-size limit) leaves no half-written folder and says so in one line; an
empty MINILLAMA_CACHE is no cache folder (it was the current folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minillama import ModelLoadError, loader
from minillama.build_cache import cache_root


class SafetensorLikeError(Exception):
    """What safetensors raises on a failed write: no OSError."""


@pytest.mark.parametrize("error, raised", [(SafetensorLikeError("File too large (os error 27)"), ModelLoadError),
                                           (OSError(28, "No space left on device"), OSError)])
def test_a_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch, error, raised):
    def write_part_then_fail(gguf: Path, staging: Path) -> None:
        (staging / "model.safetensors").write_bytes(b"half")
        raise error

    monkeypatch.setattr(loader, "_write_converted", write_part_then_fail)
    target = tmp_path / "cache" / "SmolLM2"
    with pytest.raises(raised, match="File too large|No space left"):
        loader.convert_gguf(tmp_path / "model.gguf", target)
    assert list((tmp_path / "cache").iterdir()) == []  # no staging folder, no target


def test_an_empty_cache_variable_is_unset(monkeypatch):
    monkeypatch.setenv("MINILLAMA_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_root() == Path.home() / ".cache" / "minillama"
