"""The scheduler's causes (minillama/engine/causes.py) as trace records: copied as decided,
never worked out again here. A decode step with nobody waiting has none, and costs nothing."""

from __future__ import annotations

from collections.abc import Container

from inspector.trace.model import ChunkRecord, EvictionRecord, PreemptRecord, PrefixRecord, WaitRecord
from minillama import SchedulerOutput


def _or_none(value: int) -> int | None:
    """The engine's -1 ("none") as the trace's None."""
    return None if value < 0 else value


def cause_records(batch: SchedulerOutput, known: Container[int]) -> dict[str, list]:
    """ScheduleRecord's cause fields for `batch`; known: the trace's sequence ids (an eviction
    for a sequence the trace never met, before a reset, is recorded as for nobody known)."""
    if not (batch.waits or batch.preemptions or batch.chunks or batch.prefix or batch.evictions):
        return {}
    return {
        "waits": [WaitRecord(w.seq_id, w.kind, w.needs, w.free, list(w.by), _or_none(w.head)) for w in batch.waits],
        "preemptions": [PreemptRecord(*p) for p in batch.preemptions],
        "chunks": [ChunkRecord(*c) for c in batch.chunks],
        "prefix": [
            PrefixRecord(p.seq_id, list(p.hit_blocks), p.miss, _or_none(p.miss_block), _or_none(p.differs_at),
                         _or_none(p.evicted_step), p.evicted_for if p.evicted_for in known else None)
            for p in batch.prefix
        ],
        "evictions": [EvictionRecord(e.block_id, e.step, e.for_seq) for e in batch.evictions if e.for_seq in known],
    }
