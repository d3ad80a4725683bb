"""Flags that the rest of a command line leaves unread: given, the command line is refused.

`--num-kv-blocks 64 --kv-cache-gb 4` ran with 64 blocks: a pool given in blocks is not sized
from memory, so --kv-cache-gb (and on CUDA --gpu-memory-utilization) was read by nothing, and
the user, who asked for 4 GiB, was not told. So were --temperature, --top-p and --top-k with a
beam search (deterministic: it draws no token), and --length-penalty without one. A flag is
refused only when it is on the command line, whatever its value (`--kv-cache-gb 1.0`, the
default, is given too): a default is never refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from minillama.config import EngineConfig, flag_of
from minillama.errors import ConfigError
from minillama.sampling_params import GREEDY_BELOW


@dataclass(frozen=True)
class Unread:
    """The flags of `dests` are read by nothing when `applies(args)`; `why` says so after the
    flag ("not read with --num-kv-blocks (...)")."""

    dests: tuple[str, ...]
    applies: Callable[[argparse.Namespace], bool]
    why: str


# The engine's flags (minillama/cli/flags.py), by their EngineConfig field. --num-kv-blocks has
# no default (None: sized from memory; in a replay, as recorded): not None, it was given.
ENGINE_UNREAD = (
    Unread(("kv_cache_memory_gb", "gpu_memory_utilization"), lambda args: args.num_kv_blocks is not None,
           "with --num-kv-blocks (a KV cache given in blocks is not sized from memory)"),
    # Each device sizes its pool by one of the two: `--device cpu --gpu-memory-utilization 0.5`
    # ran with a 1 GiB pool, the 0.5 read by nothing.
    Unread(("gpu_memory_utilization",), lambda args: _device_type(args) == "cpu",
           "on a CPU, whose KV cache --kv-cache-gb sizes"),
    Unread(("kv_cache_memory_gb",), lambda args: _device_type(args) == "cuda",
           "on CUDA, whose KV cache --gpu-memory-utilization sizes"),
)
# The sampling flags (add_sampling_args).
SAMPLING_UNREAD = (
    Unread(("temperature", "top_p", "top_k"), lambda args: args.beam_width > 1,
           "by a beam search (--beam-width > 1), which is deterministic: it draws no token"),
    Unread(("length_penalty",), lambda args: args.beam_width == 1,
           "without a beam search: it scores finished beams (give --beam-width > 1)"),
    # The command lines' temperature defaults to 0: `--top-p 0.9` alone decoded greedily, unsaid.
    # Greedy takes the most likely token, which every top-p and top-k keeps.
    Unread(("top_p", "top_k"), lambda args: args.beam_width == 1 and args.temperature < GREEDY_BELOW,
           "by greedy decoding (--temperature 0, the default), which takes the most likely token, whatever they "
           "keep (give --temperature > 0 to sample)"),
)


def _device_type(args: argparse.Namespace) -> str | None:
    """"cpu" or "cuda": where --device (auto: this machine) runs the engine; None where that is
    not known yet (a replay's device, left as recorded) or the device is one validation refuses."""
    if not isinstance(getattr(args, "device", None), str):
        return None
    try:
        return EngineConfig(device=args.device).resolved_device().type
    except (ConfigError, RuntimeError):  # RuntimeError: torch.device("cpu:x") and the like
        return None


def given(parser: argparse.ArgumentParser, argv: Sequence[str], dests: Sequence[str]) -> set[str]:
    """The `dests` a flag of `argv` sets. argparse sets a flag's default only where the namespace
    has no value yet: parsed into one holding a marker, a flag left out keeps the marker. (A
    parser with subcommands copies the subcommand's defaults over it: pass the subcommand's
    parser and the arguments after the subcommand.)"""
    unset = object()
    parsed = parser.parse_args(list(argv), argparse.Namespace(**dict.fromkeys(dests, unset)))
    return {dest for dest in dests if getattr(parsed, dest) is not unset}


def refuse_unread(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace,
                  rules: Sequence[Unread]) -> None:
    """parser.error naming the first flag of `argv` that a rule says the parsed `args` leave
    unread."""
    on_the_line = given(parser, argv, sorted({d for rule in rules for d in rule.dests}))
    for rule in rules:
        unread = [d for d in rule.dests if d in on_the_line]
        if unread and rule.applies(args):
            parser.error(f"argument {flag_of(unread[0])}: not read {rule.why}; leave it out")
