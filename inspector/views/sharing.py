"""Shared blocks and copies on write, in words: what the KV grid and the block tables say about them.

A paged KV cache lets sequences share blocks, as the vLLM paper's figures show: two requests
with the same prompt prefix, a fork ("what if it had picked another token?"), the n samples of
one prompt, the beams of a search all point their block tables at the same physical blocks,
and each block counts its holders (its reference count). A block is written only while one
sequence holds it. So when a fork's prefix ends inside a block, the full blocks before it are
shared, and the partly filled one is copied (copy on write): the fork gets a fresh block
holding the same first slots, and writes its own tokens after them.

The trace records each copy with the fork that made it (Trace.copies_at): a user's fork
before the step it joins, a sample's or a beam's inside the step that drew its first token.
Both panels mark a copy at that step, on both blocks.
"""

from __future__ import annotations

from inspector.trace.model import KVBlockEntry, Trace


def shared_words(entry: KVBlockEntry) -> str:
    """"shared ×2 by #0, #3" for a block several sequences hold; "" for one that only one holds."""
    if entry.ref_count <= 1:
        return ""
    holders = ", ".join(f"#{o}" for o in entry.owners)
    return f"shared ×{entry.ref_count}" + (f" by {holders}" if holders else "")


def copied_blocks(trace: Trace, index: int) -> set[int]:
    """The blocks a copy on write filled in step `index` (or just before it)."""
    return {copy.dst_block for _, copy in trace.copies_at(index)}


def copy_notes(trace: Trace, index: int) -> dict[int, list[str]]:
    """Physical block -> what the copies on write of step `index` did with it: the copy, and the
    block it was copied from (ids and counts only, nothing a trace could inject)."""
    notes: dict[int, list[str]] = {}
    for fork, copy in trace.copies_at(index):
        notes.setdefault(copy.dst_block, []).append(
            f"copy of block {copy.src_block}'s {copy.num_slots} slots for #{fork.child_id} (copy on write)")
        notes.setdefault(copy.src_block, []).append(
            f"its first {copy.num_slots} slots copied to block {copy.dst_block} for #{fork.child_id}")
    return notes
