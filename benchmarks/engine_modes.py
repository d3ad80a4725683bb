"""The runs of `python -m benchmarks.engine`, and which of its flags each one reads.

A mode flag picks one run (at most one: argparse refuses two); each run reads some of the other
flags and ignored the rest without a word: `--context` without --decode-steps, `--hf-requests`
without --gpu, `--device` on a GPU run (they all use cuda). The figures printed then were not
those of the command line. A flag given to a run that does not read it is now refused, naming
the flag and the mode flag it needs; READ_BY is the one place that says who reads what, and
engine.py dispatches on run_mode, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from minillama.cli import given

SMALL, GPU, SPLIT, ASYNC_AB, DECODE, PROFILE = "small", "gpu", "split", "async-ab", "decode-steps", "profile"

# How the command line picks each run, as a message names it.
PICKED_BY = {
    SMALL: "the small workload (no mode flag)",
    GPU: "--gpu",
    SPLIT: "--gpu --tensor-parallel-size N (N > 1)",
    ASYNC_AB: "--async-ab",
    DECODE: "--decode-steps",
    PROFILE: "--profile",
}

# A flag's argparse dest -> (the flag, the runs that read it). --config is read by every run.
READ_BY: dict[str, tuple[str, frozenset[str]]] = {
    "device": ("--device", frozenset({SMALL})),
    "max_tokens": ("--max-tokens", frozenset({SMALL})),
    "kv_blocks": ("--num-kv-blocks", frozenset({SMALL})),
    "num_requests": ("--num-requests", frozenset({GPU, SPLIT, ASYNC_AB, PROFILE})),
    "output_len": ("--output-len", frozenset({GPU, SPLIT, ASYNC_AB, PROFILE})),
    "peers": ("--peers", frozenset({GPU, SPLIT})),
    "hf_requests": ("--hf-requests", frozenset({GPU, SPLIT})),
    "tensor_parallel_size": ("--tensor-parallel-size", frozenset({GPU, SPLIT})),
    "max_num_seqs": ("--max-num-seqs", frozenset({GPU, SPLIT})),
    "max_num_batched_tokens": ("--max-num-batched-tokens", frozenset({GPU, SPLIT})),
    "eager": ("--eager", frozenset({GPU, SPLIT})),
    "async_scheduling": ("--async-scheduling", frozenset({GPU, SPLIT, DECODE})),
    # The split engine keeps the library's backend (benchmarks/tensor_parallel.py).
    "attention": ("--attention", frozenset({GPU, ASYNC_AB, DECODE, PROFILE})),
    "context": ("--context", frozenset({DECODE})),
}


def run_mode(args: argparse.Namespace) -> str:
    """The run the parsed flags pick."""
    if args.profile:
        return PROFILE
    if args.async_ab:
        return ASYNC_AB
    if args.decode_steps:
        return DECODE
    if args.gpu:
        return SPLIT if args.tensor_parallel_size > 1 else GPU
    return SMALL


def refuse_unread_flags(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace) -> None:
    """parser.error naming a flag of `argv` that the run `args` picks does not read, and the
    mode flags of the runs that do."""
    mode = run_mode(args)
    on_the_line = given(parser, argv, list(READ_BY))  # whatever their value: `--context 512`, the default, too
    for dest in (d for d in READ_BY if d in on_the_line):
        flag, readers = READ_BY[dest]
        if mode not in readers:
            parser.error(f"argument {flag}: not read by {PICKED_BY[mode]}; only by {_readers(readers)}")


def _readers(readers: frozenset[str]) -> str:
    """The runs that read a flag, as the mode flags that pick them: "--gpu" for both of its runs."""
    names = [PICKED_BY[m] for m in PICKED_BY if m in readers]
    if {GPU, SPLIT} <= readers:
        names.remove(PICKED_BY[SPLIT])
    elif GPU in readers:
        names[names.index(PICKED_BY[GPU])] = "--gpu (without --tensor-parallel-size)"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


if __name__ == "__main__":
    import sys

    from benchmarks import not_a_command

    sys.exit(not_a_command("benchmarks.engine_modes"))
