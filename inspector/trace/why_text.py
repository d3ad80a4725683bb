"""Why: the recorded causes (model.py: WaitRecord ... EvictionRecord) in words.

The words are plain text built from numbers, ids and the schema's enum values only, never from a
trace's texts; the HTML views escape them all the same (markup.escape), and the figures' hovers
and the text export use them as they are. Each function says one cause; why_of gathers a
sequence's causes in one step, for the step details and the timeline's hover.
"""

from __future__ import annotations

from inspector.trace.model import (
    ChunkRecord,
    EvictionRecord,
    PreemptRecord,
    PrefixRecord,
    ScheduleRecord,
    WaitRecord,
)

_RULES = {"latest-arrival": "the latest arrival goes first",
          "whole-search": "the latest arrival goes first, with every beam of its search",
          "search-forks": "too few free blocks for the new beams of its search's first selection: "
                          "the search waits whole (after the previous step)"}


MAX_IDS = 8  # sequences named in one line; the rest are counted


def _ids(seq_ids: list[int]) -> str:
    """The sequences named, the first MAX_IDS of them: a token budget used by 256 sequences
    named them all in the hover of every cell the waiting sequences had in the timeline (1.5 KB
    a cell, the figure sent whole on every cursor move)."""
    named = ", ".join(f"#{i}" for i in seq_ids[:MAX_IDS]) or "nobody"
    return named + (f" and {len(seq_ids) - MAX_IDS} more" if len(seq_ids) > MAX_IDS else "")


def wait_text(w: WaitRecord) -> str:
    if w.kind == "blocks":
        return f"waits for KV blocks: needs {w.needs}, {w.free} free"
    if w.kind == "tokens":
        return f"waits: the step's token budget was used by {_ids(w.by)}"
    if w.kind == "seats":
        return f"waits for a seat: the sequence limit is reached (needs {w.needs}, {w.free} free)"
    head = f"#{w.head}" if w.head is not None else "the head of the queue"
    return f"waits behind {head}, the oldest waiting request, which could not start"


def preempt_text(p: PreemptRecord) -> str:
    return f"preempted: #{p.needer} needed a new block for position {p.position}; victim rule: {_RULES[p.rule]}"


def chunk_text(c: ChunkRecord) -> str:
    return f"chunked prefill: the token budget left {c.budget_left} of its {c.remaining} tokens"


def prefix_text(p: PrefixRecord) -> str:
    if p.miss == "off":
        return "prefix cache: off"
    if p.miss == "no-full-block":
        return "prefix cache: no full block in the prompt to look up"
    # Two numberings meet here: the blocks hit are physical ids (the KV grid's), the block the
    # lookup stopped at is the sequence's own, logical index (its tokens [i * block size, ...)).
    # Said bare, "hit (0, 1, 2, 7); block 4 was evicted" read as physical block 4, which may be
    # another sequence's, never evicted.
    hits = (f"{len(p.hit_blocks)} block(s) hit (physical {', '.join(map(str, p.hit_blocks))})" if p.hit_blocks
            else "no hit")
    if p.miss == "":
        return f"prefix cache: {hits}, every full block"
    where = f"its logical block {p.miss_block}" if p.miss_block is not None else "its next block"
    if p.miss == "evicted":
        step = f"engine step {p.evicted_step}" if p.evicted_step is not None else "an earlier step"
        whom = f"#{p.evicted_for}" if p.evicted_for is not None else "a sequence before this trace"
        return f"prefix cache: {hits}; {where} was cached but evicted at {step} to serve {whom}"
    differs = (f" (the prompt differs from the nearest cached prefix at token {p.differs_at})"
               if p.differs_at is not None else "")
    return f"prefix cache: {hits}; {where} is not cached{differs}"


def eviction_text(e: EvictionRecord) -> str:
    return f"evicted from the prefix cache at engine step {e.engine_step} to serve #{e.for_seq}"


def why_of(schedule: ScheduleRecord, seq_id: int) -> list[str]:
    """Every cause recorded for `seq_id` in one step, in the order it was decided."""
    causes = [
        (schedule.preemption_of(seq_id), preempt_text),
        (schedule.wait_of(seq_id), wait_text),
        (schedule.prefix_of(seq_id), prefix_text),
        (schedule.chunk_of(seq_id), chunk_text),
    ]
    return [say(record) for record, say in causes if record is not None]
