"""BlockPoolSnapshot: the paged KV cache's bookkeeping at one moment, as an immutable value.

Observers (the inspector's recorder) read the block pool through this, not through the
BlockManager's own structures. A snapshot may be taken every step, and a GPU's pool holds about
131,000 blocks, so it never walks the pool: it reaches the blocks it lists through the holders'
block tables and the prefix-cache index (hash_to_block_id), and costs what the blocks in use and
the cached ones it lists cost (docs/perf-notes.md has the figures).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate, chain

import numpy as np

from minillama.engine.block_manager import BlockManager
from minillama.engine.sequence import Sequence

# The free blocks that still hold a cached full block are listed only while there are at most
# this many. Listing them reads the whole prefix-cache index, which after a long run on a GPU
# can grow towards the pool's size; past the limit only their number is given, so neither the
# time a snapshot takes nor its size grows with the pool.
MAX_LISTED_CACHED_FREE = 1024


@dataclass(frozen=True, slots=True)
class BlockPoolSnapshot:
    """The pool of num_blocks blocks, sparse: only M blocks are listed, the others are free and
    hold nothing a prompt can hit (or are cached free blocks past MAX_LISTED_CACHED_FREE):
    - every block in a holder's block table (a block with ref_count > 0 is always one);
    - the free blocks still holding a cached full block, when cached_free_listed;
    - the blocks the caller asked to include.
    Per-block arrays are aligned to block_ids; the holders' block tables are concatenated, with
    offsets. The arrays are the snapshot's own: read them, do not write them."""

    num_blocks: int  # NB: blocks in the pool
    num_free: int  # blocks on the free list
    num_cached_free: int  # free blocks holding a cached full block, listed or not
    cached_free_listed: bool  # are all of those among the listed blocks?
    block_ids: np.ndarray  # [M] int32, sorted
    ref_count: np.ndarray  # [M] int32: sequences sharing the block
    fill: np.ndarray  # [M] int32: tokens whose K/V the block holds
    cached: np.ndarray  # [M] bool: the prefix-cache index's entry for its hash (a later prompt can hit it)
    table_seq_ids: np.ndarray  # [S] int64: the sequences holding blocks, in arrival order
    table_offsets: np.ndarray  # [S + 1] int64: sequence i's table is table_blocks[offsets[i]:offsets[i + 1]]
    table_blocks: np.ndarray  # [sum of table lengths] int32


def snapshot_block_pool(block_manager: BlockManager, holders: list[Sequence], computed: Mapping[int, int] | None = None,
                        include: Iterable[int] = ()) -> BlockPoolSnapshot:
    """holders: the sequences holding blocks (the running ones), in arrival order;
    computed: seq id -> tokens whose K/V it has once the step's forward is done, for a snapshot
    taken during the forward (default: seq.num_computed_tokens, what the engine has committed);
    include: blocks to list whatever their state."""
    bm, index = block_manager, block_manager.hash_to_block_id
    held = _held_fill(holders, bm.block_size, computed or {})
    # A block is cached when the index names it for its hash (of two blocks that computed the
    # same prefix in one batch, only the first is). Every block in use is held by a running
    # sequence, so the cached free blocks are the index's entries less the held ones.
    num_cached_free = len(index) - sum(index.get(bm.blocks[b].hash) == b for b in held)
    listed = num_cached_free <= MAX_LISTED_CACHED_FREE
    # In C, over the index; the free list is only probed, never walked.
    cached_free = bm.free_block_ids.keys() & index.values() if listed else set()
    block_ids = sorted(held.keys() | cached_free | set(include))
    blocks = [bm.blocks[b] for b in block_ids]
    return BlockPoolSnapshot(
        num_blocks=bm.num_blocks,
        num_free=bm.num_free_blocks,
        num_cached_free=num_cached_free,
        cached_free_listed=listed,
        block_ids=np.array(block_ids, dtype=np.int32),
        ref_count=np.array([block.ref_count for block in blocks], dtype=np.int32),
        # A hashed block is full; any other holds what its owners computed.
        fill=np.array([bm.block_size if b.hash is not None else held.get(b.block_id, 0) for b in blocks], np.int32),
        cached=np.array([index.get(block.hash) == block.block_id for block in blocks], dtype=np.bool_),
        table_seq_ids=np.array([seq.seq_id for seq in holders], dtype=np.int64),
        table_offsets=np.array([0, *accumulate(len(seq.block_table) for seq in holders)], dtype=np.int64),
        table_blocks=np.array(list(chain.from_iterable(seq.block_table for seq in holders)), dtype=np.int32),
    )


def cached_flags(block_manager: BlockManager, block_ids: Iterable[int]) -> list[bool]:
    """For each block: is it the prefix-cache index's entry for its hash? (The `cached` of a
    snapshot, for a few blocks, without taking one.)"""
    index, blocks = block_manager.hash_to_block_id, block_manager.blocks
    return [index.get(blocks[b].hash) == b for b in block_ids]


def _held_fill(holders: list[Sequence], block_size: int, computed: Mapping[int, int]) -> dict[int, int]:
    """The blocks in the holders' tables -> tokens whose K/V they hold, which is what their
    owner computed: all of each block before the one holding its last computed token, part of
    that one, nothing past it (blocks allocated ahead of a prompt chunk that has not run yet).
    A shared block counts its fullest owner. Whole slices at a time, not block by block."""
    fill = dict.fromkeys(chain.from_iterable(seq.block_table for seq in holders), 0)
    done = [computed.get(seq.seq_id, seq.num_computed_tokens) for seq in holders]
    for seq, num_done in zip(holders, done):
        full, part = divmod(num_done, block_size)
        if part:
            block_id = seq.block_table[full]
            fill[block_id] = max(fill[block_id], part)
    for seq, num_done in zip(holders, done):  # last, so that a block full for one owner is full
        fill.update(dict.fromkeys(seq.block_table[: num_done // block_size], block_size))
    return fill
