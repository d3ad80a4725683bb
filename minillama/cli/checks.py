"""The checks a command line makes before it loads a model: a mistake in a flag is reported in
a moment, not after the model has loaded or a whole run has been recorded."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from minillama.errors import ConfigError
from minillama.values import MAX_COUNT


def check_output_path(path: str, flag: str, reads: Sequence[str] = ()) -> Path:
    """`path` as a Path if a file can be written there, and it is none of the files the command
    `reads`; ConfigError otherwise. Checked before any work: a recording that runs to its end
    only to fail on saving loses the whole run, and `export-chrome run.mltrace -o run.mltrace`
    wrote the timings over the trace it had read."""
    if not path:  # Path("") is ".", which would be reported as a folder
        raise ConfigError(f"{flag} is empty: give a file name")
    try:
        target = Path(path).expanduser()
    except RuntimeError as exc:  # ~user for a user this machine does not know
        raise ConfigError(f"{flag} {path}: cannot expand ~ ({exc})") from exc
    try:
        writable = _writable(path, target, flag)
        for source in reads:  # samefile: the same file under another name or a link too
            if writable.is_file() and Path(source).expanduser().is_file() and writable.samefile(Path(source).expanduser()):
                raise ConfigError(f"{flag} {path} is the file this command reads ({source}): writing there would "
                                  "lose it; give another file name")
        return writable
    except OSError as exc:  # pathlib answers False for a missing path, but lets a name too long through
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from exc


def _writable(path: str, target: Path, flag: str) -> Path:
    folder = target.parent  # Path("run.mltrace").parent is Path(".")
    if target.is_dir() or path.endswith(("/", os.sep)):  # Path drops the slash: "new/" would be a file "new"
        raise ConfigError(f"{flag} {path} is a folder; give a file name in it")
    if target.exists() and not target.is_file():
        # A device, a pipe or a socket: writing there would hang (a pipe nobody reads), vanish
        # (/dev/null) or, as the writers replace the file whole, put a file in the device's place.
        raise ConfigError(f"{flag} {path} is not a regular file (a device, a pipe or a socket); give a file name")
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"{flag} {path}: no permission to write there")
    return target


# argparse types for flags that only a command line has (EngineConfig and SamplingParams check
# their own). argparse turns the ValueError into a usage error naming the flag and the type's
# __name__: "argument --max-steps: invalid integer >= 1 value: '0'".


# The largest a number flag may be: far past any real setting, and small enough that what the
# program computes from it (bytes from megabytes, a tensor's dimension) stays an int64.
MAX_INT_FLAG = MAX_COUNT
MAX_NUMBER_FLAG = 2.0**40


def int_at_least(minimum: int, maximum: int = MAX_INT_FLAG) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        if value > maximum:  # argparse shows this message as it is
            raise argparse.ArgumentTypeError(f"{text} is too large (at most {maximum:,})")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def path_text(text: str) -> str:
    """A path flag's value: an empty one is refused (it would read as "not given", or as ".")."""
    if not text:
        raise ValueError(text)
    return text


path_text.__name__ = "path (not empty)"


def number_at_least(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < minimum:
            raise ValueError(text)
        if value > MAX_NUMBER_FLAG:
            raise argparse.ArgumentTypeError(f"{text} is too large (at most {MAX_NUMBER_FLAG:g})")
        return value

    parse.__name__ = f"finite number >= {minimum:g}"
    return parse


def number_above(floor: float) -> Callable[[str], float]:
    """A finite number > `floor`: for an amount that must be some (a limit in MiB or minutes),
    where number_at_least(0) let 0 through to be refused later, naming no flag."""
    at_least = number_at_least(floor)

    def parse(text: str) -> float:
        value = at_least(text)
        if value <= floor:
            raise ValueError(text)
        return value

    parse.__name__ = f"finite number > {floor:g}"
    return parse


def check_encodes_text(tokenizer: object | None, model: str | None) -> None:
    """The command lines take prompts as text: a model directory without tokenizer files cannot
    encode them. ConfigError naming the directory (the engine's own message, for the Python API,
    says to pass token ids, which no command line can)."""
    if tokenizer is None:
        raise ConfigError(f"the model {model} has no tokenizer files (tokenizer.json, tokenizer_config.json), so its "
                          "text prompts cannot be encoded: copy the model's tokenizer files into the directory")
