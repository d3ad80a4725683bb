"""The files of a model directory, opened as untrusted input: a directory may come from anywhere.

Every file the loader, or transformers' tokenizer loader, opens must be a regular file: a named
pipe would block the read for ever, and /dev/zero (a config.json linked to it) would be read
until memory runs out. The small files (JSON, the tokenizer's) are read only up to a size far
above any real one's; the weights are memory-mapped by safetensors, which checks their header.
"""

from __future__ import annotations

import os
from pathlib import Path

from minillama.errors import ModelLoadError

# Llama-3's tokenizer.json, the largest small file of a model directory, is 9 MB.
MAX_SMALL_FILE_BYTES = 64 * 2**20
# What a model directory may hold that something opens and reads whole.
SMALL_FILES = (
    "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "tokenizer.model", "chat_template.jinja", "chat_template.json",
)


def expand_user(path: str | os.PathLike) -> Path:
    """`path` with a leading ~ or ~user expanded; a user this machine does not know is an error
    that names the path (Path.expanduser raises a bare RuntimeError)."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: cannot expand ~ ({exc})") from exc


def require_regular_file(path: Path) -> None:
    """Raise ModelLoadError unless `path` (its target, if a link) is a regular file."""
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, a pipe or a socket)"
        raise ModelLoadError(f"{path} is {kind}: a model directory's files must be regular files")


def check_small_file(path: Path) -> None:
    """A regular file of at most MAX_SMALL_FILE_BYTES, or ModelLoadError."""
    require_regular_file(path)
    size = path.stat().st_size
    if size > MAX_SMALL_FILE_BYTES:
        raise ModelLoadError(f"{path} is {size:,} bytes, over the {MAX_SMALL_FILE_BYTES:,} a model's "
                             "configuration or tokenizer file may take")


def read_small_text(path: Path) -> str:
    """The UTF-8 text of a small file, checked first (check_small_file). Raises FileNotFoundError
    for a missing file (callers name what is missing), UnicodeDecodeError for another encoding."""
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(path)
    check_small_file(path)
    with open(path, "rb") as file:
        data = file.read(MAX_SMALL_FILE_BYTES + 1)  # bounded even if the file grew since its stat
    if len(data) > MAX_SMALL_FILE_BYTES:
        raise ModelLoadError(f"{path} is over the {MAX_SMALL_FILE_BYTES:,} bytes a model's configuration "
                             "or tokenizer file may take")
    return data.decode("utf-8")


def check_model_directory(path: Path) -> None:
    """Every small file the directory holds, checked before anything reads one (transformers'
    tokenizer loader reads them with no such check)."""
    for name in SMALL_FILES:
        file = path / name
        if file.exists() or file.is_symlink():
            check_small_file(file)
