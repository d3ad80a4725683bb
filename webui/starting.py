"""The page's starting values, within this server's limits.

webui/defaults.py says where the page starts: a pool of 64 KV blocks, 48 new tokens, three
example prompts. A server's flags may allow less (app.py --max-kv-blocks 32, --max-kv-mb 20,
--max-new-tokens 16, --max-sequences 2), and then every user's first Add prompts was refused
("KV blocks must be between 1 and 32, got 64") until they found the field to change. Each
starting value is now the default or what the limits allow, whichever is smaller. A limit that
leaves a session no room at all (--max-kv-mb below a pool of one block) is refused when the
server starts, naming the flag: every session would otherwise be refused, one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from minillama import ConfigError
from webui import defaults
from webui.limits import Limits

MIB = 2**20


@dataclass(frozen=True)
class Starting:
    num_kv_blocks: int  # the KV blocks of a session's pool until its user sets others (Reset)
    max_tokens: int  # the Prompts panel's "Max tokens"
    num_prompts: int  # how many of the example prompts the Prompts panel starts with


def blocks_within(max_kv_mb: float, block_bytes: int) -> int:
    """The most KV blocks of `block_bytes` bytes each a session's pool may have within
    `max_kv_mb` MiB: the engine adds a scratch block to every pool, so one fewer than fit."""
    return max(int(max_kv_mb * MIB // block_bytes) - 1, 0)


def starting_values(limits: Limits, block_bytes: int | None, num_examples: int) -> Starting:
    """The page's starting values under `limits`. block_bytes: one KV block of the model at the
    starting block size (None: the server runs no model, so no pool starts). Raises
    ConfigError when --max-kv-mb holds no block."""
    num_kv_blocks = min(defaults.ENGINE.num_kv_blocks, limits.max_kv_blocks)
    if block_bytes is not None:
        fits = blocks_within(limits.max_kv_mb, block_bytes)
        if fits < 1:
            raise ConfigError(
                f"--max-kv-mb {limits.max_kv_mb:g} leaves a session no KV block: a pool of one block of "
                f"{defaults.ENGINE.block_size} tokens (and the engine's scratch block) takes "
                f"{2 * block_bytes / MIB:.3g} MiB with this model")
        num_kv_blocks = min(num_kv_blocks, fits)
    # A prompt asks for a sequence (the page starts at one sample each), and one Add takes at
    # most limits.max_prompts of them.
    num_prompts = min(num_examples, limits.max_sequences, limits.max_prompts)
    return Starting(num_kv_blocks, min(defaults.SAMPLING.max_tokens, limits.max_new_tokens), num_prompts)
