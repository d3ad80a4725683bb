"""The bounds on the numbers of a trace: what trace.py's schema declares beside each type.

A trace file is input from outside, so every number in it is checked when it is loaded. A
field's bound travels with its type, as typing.Annotated metadata:

    num_heads: Annotated[int, Range(1, MAX_HEADS)]

and inspector/trace/codec.py checks it while decoding, naming the field when a value is out of range.
What one field cannot say alone (a token id below the vocabulary size, a block id inside the
pool) is checked by inspector/trace/validate.py once the whole trace is decoded.

The upper bounds below are not limits of the engine: they bound what the views (and the UI
around them) allocate from a number read from the file, so that a small hostile file cannot
make a panel build a billion-cell grid. Each is far above any real model or run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from minillama import MAX_COUNT


@dataclass(frozen=True)
class Range:
    """low <= value <= high (None: unbounded on that side)."""

    low: float | None = None
    high: float | None = None

    def holds(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        low, high = (f"{v:,}" if isinstance(v, int) else f"{v:g}" for v in (self.low or 0, self.high or 0))
        if self.high is None:
            return f">= {low}"
        return f"<= {high}" if self.low is None else f"in [{low}, {high}]"


@dataclass(frozen=True)
class MaxLength:
    """A text of at most `high` characters (the codec checks it as it checks a Range)."""

    high: int


# The recorder's float32 arithmetic (exp, sums) can put a probability a hair above 1 or an
# entropy a hair below 0; a bound on either allows this much.
ROUNDING = 1e-3

Count = Annotated[int, Range(0)]  # a number of things, an index or an id: never negative
Positive = Annotated[int, Range(1)]
# A sequence id. The views hand the ids they read from a trace back to the inspector's calls
# (Selection, breakpoints, text_until), which take ids up to minillama's MAX_COUNT, as the
# engine's own calls do: an id past it loaded, then made the UI's every redraw of the trace
# raise. (The engine counts ids from 0: a run never comes near.)
MAX_SEQ_ID = MAX_COUNT
SeqId = Annotated[int, Range(0, MAX_SEQ_ID)]
# A bound on any time in a trace, about 30 years: arithmetic on a time (the Chrome export's
# microseconds) stays finite.
MAX_MILLIS = 1e12
Millis = Annotated[float, Range(0, MAX_MILLIS)]  # a duration
Instant = Annotated[float, Range(-MAX_MILLIS, MAX_MILLIS)]  # a time since the trace began
Probability = Annotated[float, Range(0, 1 + ROUNDING)]
Entropy = Annotated[float, Range(-ROUNDING)]  # in nats

# Llama 3.1 405B has 126 layers and 128 query heads. The UI lists every head in a menu, and the
# attention panel computes one row per head.
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 4096
# The recorder carries top-k token ids through float32, exact up to 2**24 (Llama 3: 128,256).
MAX_VOCAB = 2**24
# An attention row is padded to whole blocks to sum it per block (views/kv_cache.py).
MAX_BLOCK_SIZE = 2**16
# An 80 GB GPU holds about 131,000 blocks of a 1B model (the KV panel draws at most 2**18).
MAX_NUM_BLOCKS = 2**24
# The scheduler timeline is a cell per sequence per step (sequences x steps), rebuilt on every
# redraw: 2**20 cells (1,000 requests over 1,000 steps) is the most that redraws in under a
# second (docs/perf-notes.md). A 256-request benchmark run is about 150,000.
MAX_TIMELINE_CELLS = 2**20
# The text panel draws a chip for every token of every sequence (prompt and output) on every
# redraw: 2**18 tokens is about a second of it (docs/perf-notes.md).
MAX_TOKENS = 2**18
# The full attention matrix of a traced sequence is [T, T] (64 MB of fp32 at 2**12, and a
# figure of 16 million cells). With the default memory budget, attention capture stops after
# about 3,000 positions of a 1B model.
MAX_STORE_POSITIONS = 2**12
# The KV panels draw every recorded block and block-table entry of a step. A full pool of an
# 80 GB GPU is about 131,000 blocks.
MAX_SNAPSHOT_BLOCKS = 2**18
# A token's text (a chip, a bar's label, a hover): what one token decodes to, a few characters,
# the longest of any vocabulary a few hundred. Unbounded, one token of a small file (64 MB of
# one repeated letter deflate to 64 KB) was the Next token tab's label on every redraw. A
# prompt's text is at most this much a prompt token (validate.py).
MAX_TOKEN_TEXT = 4096
TokenText = Annotated[str, MaxLength(MAX_TOKEN_TEXT)]
# A name or a message the recorder wrote (the model's, the device's, an event's): one line of a
# panel. A model's name may be its folder's path, at most PATH_MAX (4096) bytes on Linux.
MAX_LINE_TEXT = 4096
LineText = Annotated[str, MaxLength(MAX_LINE_TEXT)]
