"""The files of a model directory, opened as untrusted input: a directory may come from anywhere.

Every file the loader, or transformers' tokenizer loader, opens must be a regular file: a named
pipe would block the read for ever, and /dev/zero (a config.json linked to it) would be read
until memory runs out. The small files (JSON, the tokenizer's) are read only up to a size far
above any real one's, and a JSON file only with a bounded count of objects and arrays: parsed,
each costs some 60 bytes, so 64 MiB of `{},{},...` would take over a gigabyte in every parser
that reads it (this one, then transformers'). The weights are memory-mapped by safetensors,
which checks their header; the loader checks each tensor's dtype and shape before reading it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from minillama.errors import ModelLoadError

# The most bytes a small file may take, by name: far above any real one's. Llama-3's
# tokenizer.json is 9 MB (the largest file of its kind); a config.json or
# generation_config.json is a few KB; a sharded checkpoint's index names every tensor, about
# 100 KB for Llama-3-405B.
MAX_TOKENIZER_BYTES = 64 * 2**20
MAX_SMALL_FILE_BYTES = {
    "tokenizer.json": MAX_TOKENIZER_BYTES, "vocab.json": MAX_TOKENIZER_BYTES, "merges.txt": MAX_TOKENIZER_BYTES,
    "tokenizer.model": MAX_TOKENIZER_BYTES, "tokenizer_config.json": 16 * 2**20,
    "model.safetensors.index.json": 16 * 2**20,
}
MAX_CONFIG_BYTES = 2**20  # every other small file (config.json, generation_config.json, ...)
# The most objects and arrays one JSON file may hold. Llama-3's tokenizer.json holds some 300k
# (a list per merge); Gemma's, with twice the vocabulary, some 600k.
MAX_JSON_CONTAINERS = 2**21
# The deepest a JSON file this loader parses may nest: a real config nests 3 levels; a deeper
# one would exhaust the recursion of whatever walks it next (transformers copies configs).
MAX_JSON_DEPTH = 32
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
        if path.is_dir():
            kind = "a folder"
        elif path.is_symlink() and not path.exists():  # pathlib answers False for both, never raising
            kind = "not a regular file but a link that leads to none (to a missing file, or round a loop)"
        else:
            kind = "not a regular file (a device, a pipe or a socket)"
        raise ModelLoadError(f"{path} is {kind}: a model directory's files must be regular files")


def max_bytes(path: Path) -> int:
    return MAX_SMALL_FILE_BYTES.get(path.name, MAX_CONFIG_BYTES)


def check_small_file(path: Path) -> None:
    """A regular file of at most max_bytes(path), or ModelLoadError."""
    require_regular_file(path)
    size, limit = path.stat().st_size, max_bytes(path)
    if size > limit:
        raise ModelLoadError(f"{path} is {size:,} bytes, over the {limit:,} a model's {path.name} may take")


def read_small_bytes(path: Path) -> bytes:
    """The bytes of a small file, checked first (check_small_file); a JSON file's count of
    objects and arrays is bounded too (MAX_JSON_CONTAINERS). Raises FileNotFoundError for a
    missing file (callers name what is missing)."""
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(path)
    check_small_file(path)
    limit = max_bytes(path)
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)  # bounded even if the file grew since its stat
    except OSError as exc:  # a file that stats as regular but cannot be read (/proc/self/mem: EIO)
        # The OSError alone was "[Errno 5] Input/output error", naming no file.
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise ModelLoadError(f"{path} is over the {limit:,} bytes a model's {path.name} may take")
    # Brackets inside strings count too: an upper bound, found at C speed before any parser runs.
    if path.suffix == ".json" and data.count(b"{") + data.count(b"[") > MAX_JSON_CONTAINERS:
        raise ModelLoadError(f"{path} holds over {MAX_JSON_CONTAINERS:,} JSON objects and arrays; "
                             "a model's files hold far fewer")
    return data


def read_json_object(path: Path) -> dict[str, Any]:
    """A small JSON file that must hold an object nesting at most MAX_JSON_DEPTH levels, or
    ModelLoadError naming the file. Raises FileNotFoundError for a missing file."""
    try:
        raw = json.loads(read_small_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    except FileNotFoundError:
        raise
    except OSError as exc:  # no permission to read it, ...
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    if _depth(raw) > MAX_JSON_DEPTH:
        raise ModelLoadError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels")
    return raw


def _depth(value: object) -> int:
    """How deep `value` nests (a scalar: 0), without recursion and stopping past MAX_JSON_DEPTH."""
    deepest, stack = 0, [(value, 0)]
    while stack and deepest <= MAX_JSON_DEPTH:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_model_directory(path: Path) -> None:
    """Every small file the directory holds, checked before anything reads one (transformers'
    tokenizer loader reads them with no such check): regular, bounded in bytes and, for JSON,
    in objects and arrays."""
    for name in SMALL_FILES:
        file = path / name
        if file.exists() or file.is_symlink():
            read_small_bytes(file)
