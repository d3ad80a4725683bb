"""snapshot_kv: the paged KV cache's bookkeeping at the end of a step, as compact arrays."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from inspector.trace import KVSnapshot
from minillama.engine.block_manager import BlockManager
from minillama.engine.sequence import Sequence


def snapshot_kv(block_manager: BlockManager, holders: list[Sequence], hit_blocks: Iterable[int]) -> KVSnapshot:
    """holders: the sequences holding blocks (the running ones), in arrival order;
    hit_blocks: the physical blocks that served prefix-cache hits in this step."""
    bs = block_manager.block_size
    blocks = block_manager.blocks
    # A hashed block holds a full block of valid K/V, in use or free (a free one keeps its
    # contents until reused, so a later prompt can still hit it). Other blocks hold what their
    # owner has computed so far: all of it, part of it for the last block, nothing for a block
    # allocated ahead of a prompt chunk that has not run yet.
    fill = [bs if b.hash is not None else 0 for b in blocks]
    offsets, table_blocks = [0], []
    for seq in holders:
        for i, block_id in enumerate(seq.block_table):
            computed = min(bs, max(0, seq.num_computed_tokens - i * bs))
            fill[block_id] = max(fill[block_id], computed)
        table_blocks += seq.block_table
        offsets.append(len(table_blocks))
    hit = torch.zeros(len(blocks), dtype=torch.bool)
    hit[list(hit_blocks)] = True
    return KVSnapshot(
        ref_count=torch.tensor([b.ref_count for b in blocks], dtype=torch.int32),
        fill=torch.tensor(fill, dtype=torch.int32),
        cached=torch.tensor([b.hash is not None for b in blocks], dtype=torch.bool),
        hit=hit,
        table_seq_ids=torch.tensor([s.seq_id for s in holders], dtype=torch.int64),
        table_offsets=torch.tensor(offsets, dtype=torch.int64),
        table_blocks=torch.tensor(table_blocks, dtype=torch.int32),
        num_free=block_manager.num_free_blocks,
    )


def kv_snapshot_bytes(kv: KVSnapshot) -> int:
    tensors = (kv.ref_count, kv.fill, kv.cached, kv.hit, kv.table_seq_ids, kv.table_offsets, kv.table_blocks)
    return sum(t.nbytes for t in tensors)
