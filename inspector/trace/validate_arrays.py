"""The arrays of a trace read from a file: KV snapshots and attention stores.

safetensors only promises each tensor is well formed. Here every one the trace references is
checked for the dtype and shape its field implies (KVSnapshot's per-block arrays [M], the
stores' q [L, T, H, D] and k [L, T, Hkv, D] in the model's dtype...), and for values the
views index by: block ids inside the pool and sorted, table offsets that slice the table,
fills within a block, reference counts that count the tables holding each block, every stored
query computed by the step its q_step names, and finite queries and keys (a NaN would turn every attention row it touches to NaN).
"""

from __future__ import annotations

import torch

from inspector.trace.bounds import MAX_SNAPSHOT_BLOCKS, MAX_STORE_POSITIONS
from inspector.trace.model import AttentionStore, KVSnapshot, Trace, TraceError, TraceTooLarge

KV_DTYPES = {
    "block_ids": torch.int32, "ref_count": torch.int32, "fill": torch.int32, "cached": torch.bool, "hit": torch.bool,
    "table_seq_ids": torch.int64, "table_offsets": torch.int64, "table_blocks": torch.int32,
}
KV_PER_BLOCK = ("ref_count", "fill", "cached", "hit")  # aligned to block_ids


def check_kv(trace: Trace, index: int, kv: KVSnapshot) -> None:
    num_blocks, where = trace.engine.num_blocks, f"step {index}"
    for name, dtype in KV_DTYPES.items():
        tensor = getattr(kv, name)
        if tensor.dtype != dtype or tensor.dim() != 1:
            raise TraceError(f"{where}: kv.{name} is {tensor.dtype} [{tuple(tensor.shape)}], expected a 1-d {dtype}")
    if kv.num_blocks != num_blocks or not kv.num_cached_free <= kv.num_free <= num_blocks:
        raise TraceError(f"{where}: the KV snapshot's counts (pool {kv.num_blocks}, free {kv.num_free}, cached "
                         f"free {kv.num_cached_free}) do not fit the engine's pool of {num_blocks} blocks")
    ids = kv.block_ids
    check_snapshot_size(kv, where)
    for name in KV_PER_BLOCK:
        if getattr(kv, name).shape != ids.shape:
            raise TraceError(f"{where}: kv.{name} has shape {tuple(getattr(kv, name).shape)}, "
                             f"kv.block_ids {tuple(ids.shape)}")
    if ids.numel() and not (0 <= int(ids[0]) and int(ids[-1]) < num_blocks and bool((ids[1:] > ids[:-1]).all())):
        raise TraceError(f"{where}: kv.block_ids must be increasing block ids in 0..{num_blocks - 1}")
    if bool((kv.ref_count < 0).any()) or bool(((kv.fill < 0) | (kv.fill > trace.engine.block_size)).any()):
        raise TraceError(f"{where}: kv.ref_count must be >= 0 and kv.fill in 0..{trace.engine.block_size}")
    seq_ids, offsets, blocks = kv.table_seq_ids.tolist(), kv.table_offsets.tolist(), kv.table_blocks
    if len(set(seq_ids)) != len(seq_ids) or not all(s in trace.sequences for s in seq_ids):
        raise TraceError(f"{where}: kv.table_seq_ids must be distinct sequences of the trace")
    if (
        len(offsets) != len(seq_ids) + 1
        or offsets[0] != 0
        or offsets[-1] != blocks.numel()
        or any(a > b for a, b in zip(offsets, offsets[1:]))
        or not bool(torch.isin(blocks, ids).all())
    ):
        raise TraceError(f"{where}: the KV block tables are inconsistent, or name blocks the snapshot lacks")
    # A block's reference count is the number of tables holding it: the grid marks a block x2
    # by the count and lists its holders from the tables, and the two must tell one story.
    # (Every table entry is a recorded block, so its index among block_ids counts it.)
    holders = torch.bincount(torch.searchsorted(ids, blocks), minlength=ids.numel())  # [M]
    if not torch.equal(holders, kv.ref_count.long()):
        block = int(ids[torch.nonzero(holders != kv.ref_count.long())[0, 0]])
        raise TraceError(f"{where}: block {block}'s ref_count is not the number of block tables that hold it")


def check_snapshot_size(kv: KVSnapshot, where: str) -> None:
    """TraceTooLarge when a KV snapshot records more blocks or table entries than the KV panels
    draw (also what inspector/trace/file_meter.py says of a recording that grows past it)."""
    if max(kv.block_ids.numel(), kv.table_blocks.numel()) > MAX_SNAPSHOT_BLOCKS:
        raise TraceTooLarge(f"{where}: the KV snapshot records {kv.block_ids.numel():,} blocks and "
                            f"{kv.table_blocks.numel():,} block-table entries, over the limit of {MAX_SNAPSHOT_BLOCKS:,}")


def check_store_length(length: int, where: str) -> None:
    """TraceTooLarge for an attention store of more positions than the attention matrix draws."""
    if length > MAX_STORE_POSITIONS:
        raise TraceTooLarge(f"{where}: {length:,} positions, over the limit of {MAX_STORE_POSITIONS:,}")


def check_stores(trace: Trace) -> None:
    """Every attention store. Which positions each step computed for a sequence is gathered
    once, in one pass over the steps, so checking the stores costs no step-by-store product."""
    computed: dict[int, list[tuple[int, int, int]]] = {seq_id: [] for seq_id in trace.attention}
    for step in trace.steps:
        for x in step.schedule.scheduled:
            if x.seq_id in computed:
                computed[x.seq_id].append((step.index, x.start, x.start + x.num_tokens))
    for seq_id, store in trace.attention.items():
        if seq_id not in trace.sequences or not trace.sequences[seq_id].traced:
            raise TraceError(f"attention store of sequence {seq_id}: not a traced sequence of the trace")
        _check_store(trace, seq_id, store, computed[seq_id])


def _check_store(trace: Trace, seq_id: int, store: AttentionStore, computed: list[tuple[int, int, int]]) -> None:
    """computed: (step, start, end) of each step that scheduled the sequence, in step order."""
    m, seq, where = trace.model, trace.sequences[seq_id], f"attention store of sequence {seq_id}"
    layers, length = len(store.layers), store.length
    expected_q, expected_k = (layers, length, m.num_heads, m.head_dim), (layers, length, m.num_kv_heads, m.head_dim)
    if store.seq_id != seq_id or tuple(store.q.shape) != expected_q or tuple(store.k.shape) != expected_k:
        raise TraceError(f"{where}: q {tuple(store.q.shape)} / k {tuple(store.k.shape)} do not match the model "
                         f"({expected_q} / {expected_k})")
    if str(store.q.dtype).removeprefix("torch.") != m.dtype or store.k.dtype != store.q.dtype:
        raise TraceError(f"{where}: q is {store.q.dtype} and k {store.k.dtype}, the model's cache {m.dtype}")
    if len(set(store.layers)) != layers or not all(layer < m.num_layers for layer in store.layers):
        raise TraceError(f"{where}: layers {store.layers[:10]} must be distinct layers of the model's {m.num_layers}")
    if length > len(seq.prompt_ids) + len(seq.output_ids):
        raise TraceError(f"{where}: {length:,} positions, more than the sequence's tokens")
    check_store_length(length, where)
    if store.q_step.dtype != torch.int32 or store.q_step.shape != (length,):
        raise TraceError(f"{where}: q_step must be int32 [{length}]")
    # Each recorded query's step must have computed its position: find the step among those
    # that scheduled the sequence, and the position within that step's range.
    q_step = store.q_step.long()
    positions = torch.nonzero(q_step >= 0).flatten()
    if bool((q_step < -1).any()) or (positions.numel() and not computed):
        raise TraceError(f"{where}: q_step holds a step that is not one that computed the sequence")
    if positions.numel():
        steps, starts, ends = torch.tensor(computed, dtype=torch.long).T.contiguous()  # [n] each
        wanted = q_step[positions]
        at = torch.searchsorted(steps, wanted).clamp(max=steps.numel() - 1)
        if not bool(((steps[at] == wanted) & (starts[at] <= positions) & (positions < ends[at])).all()):
            raise TraceError(f"{where}: q_step names a step that did not compute the position")
    for slot in range(layers):  # a layer at a time: the check's temporary is a fraction of the store
        if not (bool(torch.isfinite(store.q[slot]).all()) and bool(torch.isfinite(store.k[slot]).all())):
            raise TraceError(f"{where}: layer {store.layers[slot]} holds a query or key that is not finite")
