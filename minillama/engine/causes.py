"""Causes: why the scheduler and the block manager decided what they did, as immutable values.

The code that decides attaches them, at the moment it decides, to the step's SchedulerOutput;
observers read them and never work them out again (a guess from the queues after the fact can
be wrong: the pool changed since). NamedTuples, like ScheduledSequence: cheap to build and
immutable. None is made in a decode step with nobody waiting and no block to find: the batch-256
decode loop pays nothing for them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

# Why a sequence is still waiting after the step was planned:
# - "blocks": the pool has `free` free blocks and admitting it needs `needs`;
# - "tokens": the step's token budget was used up, by the sequences `by`;
# - "seats": max_num_seqs sequences run already (`needs` seats wanted, `free` left);
# - "behind": it queues behind `head`, the oldest waiting request, which could not start
#   (admitting younger ones first would starve the oldest).
WaitKind = Literal["blocks", "tokens", "seats", "behind"]

# The rule that picked a preemption's victim: the latest arrival among the running sequences
# ("latest-arrival"), with all the beams of its beam search when it is a beam ("whole-search");
# or a beam search whose first selection, after its step, found fewer free blocks than its new
# beams need ("search-forks": it goes back whole, and the next step's output reports it).
VictimRule = Literal["latest-arrival", "whole-search", "search-forks"]

# Why a prefix-cache lookup at admission did not serve the whole prompt's full blocks:
# - "": it did (or there were none to serve: see "no-full-block");
# - "off": prefix caching is disabled;
# - "no-full-block": the prompt, less its last token, fills no block;
# - "not-cached": the hash of block `miss_block` (its whole prefix) is not in the cache;
# - "evicted": it was, until the block holding it was reused at step `evicted_step` for
#   sequence `evicted_for`.
MissKind = Literal["", "off", "no-full-block", "not-cached", "evicted"]


class WaitCause(NamedTuple):
    seq_id: int
    kind: WaitKind
    needs: int = 0  # blocks (or seats) it needs
    free: int = 0  # blocks (or seats) there were
    by: tuple[int, ...] = ()  # "tokens": the sequences that took the budget, in batch order
    head: int = -1  # "behind": the request at the head of the queue


class PreemptCause(NamedTuple):
    seq_id: int  # the victim
    needer: int  # the sequence that needed a new block
    position: int  # the token position it needed the block for (the block is position // block_size)
    rule: VictimRule


class ChunkCause(NamedTuple):
    """A prefill cut short by the step's token budget: `budget_left` tokens were left for it,
    of the `remaining` it still had to compute."""

    seq_id: int
    budget_left: int
    remaining: int


class PrefixCause(NamedTuple):
    """One admission's prefix-cache lookup: the blocks it hit, and why it stopped there."""

    seq_id: int
    hit_blocks: tuple[int, ...]  # the physical blocks that served its leading full blocks
    miss: MissKind
    miss_block: int = -1  # logical index of the first full block not served
    # "not-cached": the first token position where the prompt differs from the nearest cached
    # prefix (a cached block after the same prefix as miss_block), -1 when none is known.
    differs_at: int = -1
    evicted_step: int = -1  # "evicted": the engine step that reused the block
    evicted_for: int = -1  # "evicted": the sequence it was reused for


class Eviction(NamedTuple):
    """A cached block taken off the free list and overwritten: its prefix is no longer cached."""

    block_id: int
    step: int  # the engine step (the one being planned, or the fork made before it)
    for_seq: int  # the sequence the block was taken for
