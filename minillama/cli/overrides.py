"""Flags that another flag makes unread: given together, the command line is refused.

`--num-kv-blocks 64 --kv-cache-gb 4` ran with 64 blocks: a pool given in blocks is not sized
from memory, so --kv-cache-gb (and on CUDA --gpu-memory-utilization) was read by nothing, and
the user, who asked for 4 GiB, was not told. A flag is refused only when it is on the command
line, whatever its value (`--kv-cache-gb 1.0`, the default, is given too): a default never
conflicts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from minillama.config import flag_of


@dataclass(frozen=True)
class Override:
    """Given, the flag of `dest` leaves the flags of `unread` unread, for the reason `why`."""

    dest: str
    unread: tuple[str, ...]
    why: str


# The engine's flags (minillama/cli/flags.py), by their EngineConfig field.
ENGINE_OVERRIDES = (
    Override("num_kv_blocks", ("kv_cache_memory_gb", "gpu_memory_utilization"),
             "a KV cache given in blocks is not sized from memory"),
)


def given(parser: argparse.ArgumentParser, argv: Sequence[str], dests: Sequence[str]) -> set[str]:
    """The `dests` a flag of `argv` sets. argparse sets a flag's default only where the namespace
    has no value yet: parsed into one holding a marker, a flag left out keeps the marker. (A
    parser with subcommands copies the subcommand's defaults over it: pass the subcommand's
    parser and the arguments after the subcommand.)"""
    unset = object()
    parsed = parser.parse_args(list(argv), argparse.Namespace(**dict.fromkeys(dests, unset)))
    return {dest for dest in dests if getattr(parsed, dest) is not unset}


def refuse_overridden(parser: argparse.ArgumentParser, argv: Sequence[str],
                      overrides: Sequence[Override] = ENGINE_OVERRIDES) -> None:
    """parser.error naming the first flag of `argv` that another flag of `argv` leaves unread."""
    dests = sorted({o.dest for o in overrides} | {d for o in overrides for d in o.unread})
    on_the_line = given(parser, argv, dests)
    for override in overrides:
        unread = [d for d in override.unread if d in on_the_line]
        if override.dest in on_the_line and unread:
            parser.error(f"argument {flag_of(unread[0])}: not read with {flag_of(override.dest)} ({override.why}); "
                         "give one of them")
