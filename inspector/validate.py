"""validate_trace: what JSON types cannot check in a trace read from a file.

The codec already checked every field's type. This checks that the pieces agree: arrays have
the shapes and dtypes the model and the KV cache imply, and every index (block ids, steps,
sequence ids) points at something that exists, so that no later read of a loaded trace fails
with an IndexError deep in the UI. Each check raises TraceError naming the first problem.
"""

from __future__ import annotations

import torch

from inspector.trace import AttentionStore, KVSnapshot, StepRecord, Trace, TraceError

KV_DTYPES = {
    "block_ids": torch.int32, "ref_count": torch.int32, "fill": torch.int32, "cached": torch.bool, "hit": torch.bool,
    "table_seq_ids": torch.int64, "table_offsets": torch.int64, "table_blocks": torch.int32,
}
KV_PER_BLOCK = ("ref_count", "fill", "cached", "hit")  # aligned to block_ids


def validate_trace(trace: Trace) -> None:
    m = trace.model
    if m.num_kv_heads < 1 or m.num_heads % m.num_kv_heads:
        raise TraceError(f"model: {m.num_heads} query heads is not a multiple of {m.num_kv_heads} kv heads")
    for i, step in enumerate(trace.steps):
        if step.index != i:
            raise TraceError(f"steps[{i}] says it is step {step.index}")
        _check_step(trace, step)
    for seq_id, seq in trace.sequences.items():
        if seq.seq_id != seq_id or len(seq.token_steps) != len(seq.output_ids):
            raise TraceError(f"sequence {seq_id}: its record is inconsistent")
        for s in seq.token_steps:
            if not 0 <= s < len(trace.steps) or trace.steps[s].token_of(seq_id) is None:
                raise TraceError(f"sequence {seq_id}: token_steps names step {s}, which has no token of it")
    for seq_id, store in trace.attention.items():
        _check_store(trace, seq_id, store)


def _check_step(trace: Trace, step: StepRecord) -> None:
    bs, nb = trace.engine.block_size, trace.engine.num_blocks
    for x in step.schedule.scheduled:
        if x.seq_id not in trace.sequences or len(x.block_table) * bs < x.start + x.num_tokens:
            raise TraceError(f"step {step.index}: scheduled sequence {x.seq_id} is unknown or lacks blocks")
        if not all(0 <= b < nb for b in x.block_table):
            raise TraceError(f"step {step.index}: sequence {x.seq_id}'s block table names blocks outside 0..{nb - 1}")
    if any(t.seq_id not in trace.sequences for t in step.tokens):
        raise TraceError(f"step {step.index}: a token belongs to an unknown sequence")
    _check_kv(step.index, step.kv, nb)


def _check_kv(index: int, kv: KVSnapshot, num_blocks: int) -> None:
    for name, dtype in KV_DTYPES.items():
        tensor = getattr(kv, name)
        if tensor.dtype != dtype or tensor.dim() != 1:
            raise TraceError(f"step {index}: kv.{name} is {tensor.dtype} [{tuple(tensor.shape)}], expected a 1-d {dtype}")
    if kv.num_blocks != num_blocks or not 0 <= kv.num_cached_free <= kv.num_free <= num_blocks:
        raise TraceError(f"step {index}: the KV snapshot's counts (pool {kv.num_blocks}, free {kv.num_free}, cached "
                         f"free {kv.num_cached_free}) do not fit the engine's pool of {num_blocks} blocks")
    ids = kv.block_ids
    for name in KV_PER_BLOCK:
        if getattr(kv, name).shape != ids.shape:
            raise TraceError(f"step {index}: kv.{name} has shape {tuple(getattr(kv, name).shape)}, "
                             f"kv.block_ids {tuple(ids.shape)}")
    if ids.numel() and not (0 <= int(ids[0]) and int(ids[-1]) < num_blocks and bool((ids[1:] > ids[:-1]).all())):
        raise TraceError(f"step {index}: kv.block_ids must be increasing block ids in 0..{num_blocks - 1}")
    offsets, blocks = kv.table_offsets.tolist(), kv.table_blocks
    if (
        len(offsets) != kv.table_seq_ids.numel() + 1
        or offsets[0] != 0
        or offsets[-1] != blocks.numel()
        or any(a > b for a, b in zip(offsets, offsets[1:]))
        or not bool(torch.isin(blocks, ids).all())
    ):
        raise TraceError(f"step {index}: the KV block tables are inconsistent, or name blocks the snapshot lacks")


def _check_store(trace: Trace, seq_id: int, store: AttentionStore) -> None:
    m, where = trace.model, f"attention store of sequence {seq_id}"
    layers, length = len(store.layers), store.length
    expected_q, expected_k = (layers, length, m.num_heads, m.head_dim), (layers, length, m.num_kv_heads, m.head_dim)
    if store.seq_id != seq_id or tuple(store.q.shape) != expected_q or tuple(store.k.shape) != expected_k:
        raise TraceError(f"{where}: q {tuple(store.q.shape)} / k {tuple(store.k.shape)} do not match the model "
                         f"({expected_q} / {expected_k})")
    if str(store.q.dtype).removeprefix("torch.") != m.dtype or store.k.dtype != store.q.dtype:
        raise TraceError(f"{where}: q is {store.q.dtype} and k {store.k.dtype}, the model's cache {m.dtype}")
    if not all(0 <= layer < m.num_layers for layer in store.layers) or seq_id not in trace.sequences:
        raise TraceError(f"{where}: layers {store.layers} out of range, or an unknown sequence")
    if store.q_step.dtype != torch.int32 or store.q_step.shape != (length,):
        raise TraceError(f"{where}: q_step must be int32 [{length}]")
    for s in set(store.q_step.tolist()) - {-1}:
        if not 0 <= s < len(trace.steps) or not any(r.seq_id == seq_id for r in trace.steps[s].schedule.scheduled):
            raise TraceError(f"{where}: q_step names step {s}, which did not run it")
