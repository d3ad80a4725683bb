"""The block pool at a step's end, as the trace keeps it (KVSnapshot).

The engine publishes the pool as a BlockPoolSnapshot (minillama/engine/block_pool.py: sparse, it
never walks the pool); this turns one into the trace's type, sharing its arrays, and adds what
only the recorder knows: which blocks served a prefix-cache hit in the step.

The recorder takes the snapshot while the step's forward runs on a GPU, when the host would
otherwise wait, and brings it up to the step's end afterwards (commit_filled_blocks): a decode
step on a GPU is short, and a new snapshot at the step's end would lengthen every one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from inspector.trace.model import KVSnapshot
from minillama import BlockPoolSnapshot, LLMEngine, SchedulerOutput


def kv_snapshot(pool: BlockPoolSnapshot, hit_blocks: set[int]) -> KVSnapshot:
    """The trace's snapshot of `pool` (its arrays shared, not copied); hit_blocks: the blocks
    that served prefix-cache hits in this step (the pool lists them: ask for them with include)."""
    return KVSnapshot(
        num_blocks=pool.num_blocks,
        num_free=pool.num_free,
        num_cached_free=pool.num_cached_free,
        cached_free_listed=pool.cached_free_listed,
        block_ids=torch.from_numpy(pool.block_ids),
        ref_count=torch.from_numpy(pool.ref_count),
        fill=torch.from_numpy(pool.fill),
        cached=torch.from_numpy(pool.cached),
        hit=torch.from_numpy(np.isin(pool.block_ids, np.fromiter(hit_blocks, np.int32, len(hit_blocks)))),
        table_seq_ids=torch.from_numpy(pool.table_seq_ids),
        table_offsets=torch.from_numpy(pool.table_offsets),
        table_blocks=torch.from_numpy(pool.table_blocks),
    )


def commit_filled_blocks(kv: KVSnapshot, engine: LLMEngine, batch: SchedulerOutput) -> KVSnapshot:
    """Bring a snapshot taken during the step's forward (with computed = each scheduled
    sequence's end) up to the step's end, provided no sequence finished in between.

    Between the forward and the step's end the engine only commits what the step computed: the
    blocks a sequence filled get their hash, and the first block of each hash enters the
    prefix-cache index. So only those blocks' `cached` flag can change: they are asked again.
    (The free and cached-free counts stay: a newly cached block is held, not free.) A sequence
    that finished frees its blocks: then the caller takes a new snapshot instead."""
    bs = engine.config.block_size
    filled = [item.block_ids[i] for item in batch.scheduled for i in range(item.start // bs, item.end // bs)]
    if not filled:  # most decode steps: no block filled up
        return kv
    positions = torch.searchsorted(kv.block_ids, torch.tensor(filled, dtype=torch.int32))
    cached = kv.cached.clone()  # the pool snapshot's own array stays as it was
    cached[positions] = torch.tensor(engine.cached_flags(filled))
    return dataclasses.replace(kv, cached=cached)


def kv_snapshot_bytes(kv: KVSnapshot) -> int:
    """The snapshot's payload: its arrays' bytes."""
    return sum(value.nbytes for value in vars(kv).values() if isinstance(value, torch.Tensor))
