"""The embedded model's first-run conversion (minillama/loader.py, convert_gguf): a failure part
way (a full disk, a file-size limit) leaves no half-written folder and says so in one line; an
empty MINILLAMA_CACHE is no cache folder (it was the current folder), and one that cannot take the
cache is named, with what is wrong, before any conversion (minillama/build_cache.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minillama import CacheFolderError, ModelLoadError, loader
from minillama.build_cache import cache_folder, cache_root


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


@pytest.fixture
def file(tmp_path) -> Path:
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file"


@pytest.mark.parametrize("variable, value, wrong", [
    ("MINILLAMA_CACHE", "{file}", "{file} is a file, not a folder"),
    ("MINILLAMA_CACHE", "{file}/cache", "{file} is a file, not a folder"),
    ("XDG_CACHE_HOME", "{file}", "{file} is a file, not a folder"),
    ("MINILLAMA_CACHE", "{file}.d/" + "x" * 300, "File name too long"),
    # An internal error (Path.expanduser's RuntimeError), and a conversion that ran 20 s before failing.
    ("MINILLAMA_CACHE", "~no-such-user-here/cache", "cannot expand ~"),
    ("MINILLAMA_CACHE", "{file}.d/caf\udce9", "the folder's name is not UTF-8 text"),
    ("XDG_CACHE_HOME", "{file}.d/\udcff", "the folder's name is not UTF-8 text"),
], ids=["file", "folder-in-a-file", "xdg-file", "name-too-long", "unknown-user", "not-utf-8", "xdg-not-utf-8"])
def test_a_cache_folder_that_cannot_be_made_names_its_variable(monkeypatch, file, variable, value, wrong):
    """It was "[Errno 17] File exists: '...'" (or "Not a directory"), naming no variable; the
    embedded model's conversion and the kernels' build both make the folder through here."""
    monkeypatch.delenv("MINILLAMA_CACHE", raising=False)
    monkeypatch.setenv(variable, value.format(file=file))
    with pytest.raises(CacheFolderError) as caught:
        cache_folder(cache_root() / "kernels")
    message = str(caught.value)
    assert message.startswith(f"{variable}={value.format(file=file)!r} cannot hold minillama's cache: ")
    assert wrong.format(file=file) in message and "set MINILLAMA_CACHE to a folder" in message
    assert isinstance(caught.value, OSError)  # the kernels' build catches it as it did the mkdir's


def test_a_cache_folder_that_cannot_be_written_says_so(monkeypatch, tmp_path):
    """An existing folder passes mkdir whatever its rights (root's tests cannot chmod it away)."""
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path))
    monkeypatch.setattr("minillama.build_cache.os.access", lambda path, mode: False)
    with pytest.raises(CacheFolderError, match=f"MINILLAMA_CACHE=.* {tmp_path} is not writable"):
        cache_folder(cache_root())


def test_the_embedded_model_names_a_bad_cache_before_converting(monkeypatch, file):
    def never(gguf: Path, target: Path) -> None:
        raise AssertionError("converted into a cache that cannot take it")

    monkeypatch.setenv("MINILLAMA_CACHE", str(file))
    monkeypatch.setattr(loader, "convert_gguf", never)
    with pytest.raises(CacheFolderError, match="MINILLAMA_CACHE="):
        loader.embedded_model_dir()
