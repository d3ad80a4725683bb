"""BlockManager: the bookkeeping of the paged KV cache.

The KV cache is one big pool of fixed-size blocks, each holding the keys and values of
`block_size` consecutive tokens of one sequence. A sequence owns a list of physical block ids
(its block table), so its tokens need not be contiguous in memory: like pages of virtual memory,
a sequence grows one block at a time and gives every block back when it finishes.

Prefix caching: when a block is full and its K/V computed, it gets a hash of its tokens chained
with the hash of the block before it, so the hash names the whole prefix up to the block's end.
A new sequence whose leading blocks hash the same reuses those physical blocks instead of
computing them again (several system prompts, a chat's earlier turns). A block shared by n
sequences has reference count n. A block whose count drops to 0 goes on the free list but keeps
its contents and hash until it is reused, so a later request can still hit it.

Forking (LLMEngine.fork): a child sequence that starts with its parent's first tokens shares
the parent's full computed blocks by reference count, as the vLLM paper's parallel sampling
does. The block where the shared prefix ends, if the prefix ends inside it, is copied on write:
the child gets a fresh block holding a copy of the parent's slots up to that point, since it
writes its own tokens after them. Only full blocks are ever shared, and nobody writes a full
computed block again, so a shared block never changes under a reader.

A beam search forks about as many beams per step as it prunes, and its beams share their
prompt's blocks: freeing a pruned beam's ~40 references and taking ~40 for a fork would move
the same counts down and up again. So a fork may take a donor, a sequence ending in the same
breath (a pruned beam), whose references the two have in common pass over as they are: only the
blocks where they differ, usually the last few, are counted.

Causes (minillama/engine/causes.py): allocate() says why its lookup stopped where it did, and a
cached block reused for another sequence is remembered as an Eviction (bounded: the latest
MAX_EVICTIONS, by hash), so a later miss on that prefix can say when and for whom it went.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import xxhash

from minillama.engine.causes import Eviction, PrefixCause
from minillama.engine.sequence import Sequence

# Evictions remembered for the causes of later misses, the latest first to go when full: about
# 100 bytes each, so the record stays small however long the engine runs.
MAX_EVICTIONS = 4096


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    # Chained hash of the prefix ending with this block; None until the block is full and computed.
    hash: int | None = None
    token_ids: list[int] = field(default_factory=list)  # what a hashed block holds
    prev_hash: int | None = None  # a hashed block's predecessor's hash (None: the first block)


def chain_hash(prev_hash: int | None, token_ids: list[int]) -> int:
    """Hash of a block's tokens, chained to the previous block's hash (the prefix before it)."""
    h = xxhash.xxh3_64()
    if prev_hash is not None:
        h.update(prev_hash.to_bytes(8, "little"))
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return h.intdigest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks in least-recently-freed order: allocation takes from the front, so a freed
        # block keeps its cached contents as long as possible.
        self.free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.hash_to_block_id: dict[int, int] = {}
        self.num_hit_blocks = 0  # prefix-cache hits since start, in blocks
        # The last hashed block after each prefix (its predecessor's hash -> block id): the
        # nearest cached block when a prompt misses, to tell where the prompt differs from it.
        self.successors: dict[int | None, int] = {}
        self.step = 0  # the engine step being planned (LLMEngine sets it): evictions name it
        self.evictions: dict[int, Eviction] = {}  # a hash no longer cached -> how it went
        self.new_evictions: list[Eviction] = []  # since the scheduler last took them

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    # -- admitting a sequence -------------------------------------------------------------

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """Physical blocks that already hold this sequence's leading full blocks.

        Only blocks entirely within the first num_tokens - 1 tokens count: the last token must
        be computed anyway, because its output gives the logits of the next token.
        """
        return self._lookup(seq)[0]

    def _lookup(self, seq: Sequence) -> tuple[list[int], int | None, int | None]:
        """cached_prefix's hits, with the hash of the prefix before the first block missed and
        that block's own hash (None, None when nothing was missed)."""
        hits: list[int] = []
        if not self.enable_prefix_caching:
            return hits, None, None
        prev_hash = None
        for index in range((seq.num_tokens - 1) // self.block_size):
            tokens = seq.block_tokens(index, self.block_size)
            block_hash = chain_hash(prev_hash, tokens)
            block_id = self.hash_to_block_id.get(block_hash)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                return hits, prev_hash, block_hash
            hits.append(block_id)
            prev_hash = block_hash
        return hits, None, None

    def _prefix_cause(self, seq: Sequence, hits: list[int], prev_hash: int | None,
                      miss_hash: int | None) -> PrefixCause:
        """Why the lookup that found `hits` stopped: at admission only, never in a decode step."""
        num_full = (seq.num_tokens - 1) // self.block_size
        if not self.enable_prefix_caching:
            return PrefixCause(seq.seq_id, (), "off")
        if num_full == 0:
            return PrefixCause(seq.seq_id, (), "no-full-block")
        if miss_hash is None:
            return PrefixCause(seq.seq_id, tuple(hits), "")
        index = len(hits)
        gone = self.evictions.get(miss_hash)
        if gone is not None:
            return PrefixCause(seq.seq_id, tuple(hits), "evicted", index, -1, gone.step, gone.for_seq)
        # The nearest cached prefix: a cached block after the same prefix as the missed one.
        differs_at = -1
        near = self.successors.get(prev_hash)
        if near is not None and self.blocks[near].hash is not None and self.blocks[near].prev_hash == prev_hash:
            tokens = seq.block_tokens(index, self.block_size)
            offset = next((i for i, (a, b) in enumerate(zip(tokens, self.blocks[near].token_ids)) if a != b), -1)
            if offset >= 0:
                differs_at = index * self.block_size + offset
        return PrefixCause(seq.seq_id, tuple(hits), "not-cached", index, differs_at)

    def can_allocate(self, seq: Sequence) -> bool:
        """Are there enough free blocks to hold all of `seq`'s tokens?"""
        return self.can_allocate_all((seq,))

    def can_allocate_all(self, seqs: Iterable[Sequence]) -> bool:
        """Could allocate() take all of `seqs` at once (a beam search's beams, admitted
        together)? A prefix-cache hit they share costs its block once."""
        return self.blocks_needed_all(seqs) <= self.num_free_blocks

    def blocks_needed_all(self, seqs: Iterable[Sequence]) -> int:
        """The free blocks allocate() would take for all of `seqs` at once."""
        fresh, revived = 0, set()
        for seq in seqs:
            hits = self.cached_prefix(seq)
            # A hit on a block nobody uses right now still takes that block off the free list.
            revived.update(block_id for block_id in hits if self.blocks[block_id].ref_count == 0)
            fresh += seq.num_blocks_needed(self.block_size) - len(hits)
        return fresh + len(revived)

    def allocate(self, seq: Sequence) -> PrefixCause:
        """Give `seq` blocks for all its tokens, reusing prefix-cache hits; the caller checked
        can_allocate. Sets num_computed_tokens to the tokens the hits already hold. Returns
        what the lookup found, and why it stopped there."""
        assert not seq.block_table, f"{seq} already holds blocks"
        hits, prev_hash, miss_hash = self._lookup(seq)
        cause = self._prefix_cause(seq, hits, prev_hash, miss_hash)  # before the blocks below are taken
        self._share(hits)
        fresh = [self._take_free_block(seq.seq_id) for _ in range(seq.num_blocks_needed(self.block_size) - len(hits))]
        seq.block_table = (*hits, *fresh)
        seq.num_cached_tokens = seq.num_computed_tokens = len(hits) * self.block_size
        self.num_hit_blocks += len(hits)
        return cause

    # -- forking ------------------------------------------------------------------------------------

    def _num_shared_blocks(self, parent: Sequence, child: Sequence) -> int:
        """The parent's full blocks of K/V that the child's prefix (its first
        child.fork_position tokens) can share."""
        return min(child.fork_position, parent.num_computed_tokens) // self.block_size

    def can_fork(self, parent: Sequence, child: Sequence) -> bool:
        """Are there enough free blocks for the child's blocks that are not shared?"""
        return child.num_blocks_needed(self.block_size) - self._num_shared_blocks(parent, child) <= self.num_free_blocks

    def fork(self, parent: Sequence, child: Sequence, donor: Sequence | None = None) -> tuple[int, int, int] | None:
        """Give `child` blocks for all its tokens, sharing `parent`'s computed K/V of the
        child's prefix; the caller checked can_fork. Sets the child's num_computed_tokens to
        the prefix tokens whose K/V it now has. Returns the copy on write the caller must make
        before the child runs, (source block, destination block, slots to copy), or None when
        the prefix ends on a block boundary.

        With a donor (a finished sequence that still holds its blocks), the result is that of
        free(donor) then fork(parent, child), but the leading blocks the donor holds in common
        with the child's shared prefix pass to the child without counting them off and on."""
        assert not child.block_table, f"{child} already holds blocks"
        num_computed = min(child.fork_position, parent.num_computed_tokens)
        num_full, num_slots = divmod(num_computed, self.block_size)
        shared = parent.block_table[:num_full]
        handed = 0  # leading shared blocks whose reference the donor passes over
        if donor is not None:
            handed = common_prefix_length(donor.block_table, shared)
            self._share(shared[handed:])  # before the release: a block in both never looks free
            self._release(donor.block_table[handed:])
            donor.block_table = ()
        else:
            self._share(shared)
        fresh = [self._take_free_block(child.seq_id) for _ in range(child.num_blocks_needed(self.block_size) - num_full)]
        child.block_table = (*shared, *fresh)
        child.num_computed_tokens = num_computed
        # The child always has a token past the prefix, so it has a block after the shared ones.
        return (parent.block_table[num_full], fresh[0], num_slots) if num_slots else None

    # -- growing and freeing ----------------------------------------------------------------

    def needs_new_block(self, seq: Sequence) -> bool:
        """Does the next token to compute fall past the last block `seq` holds?"""
        return seq.num_tokens > len(seq.block_table) * self.block_size

    def can_append(self, seq: Sequence) -> bool:
        return not self.needs_new_block(seq) or self.num_free_blocks > 0

    def append_slot(self, seq: Sequence) -> None:
        """Make room for the token a decode step is about to compute."""
        if self.needs_new_block(seq):
            seq.block_table = (*seq.block_table, self._take_free_block(seq.seq_id))

    def free(self, seq: Sequence) -> None:
        """Give back every block of `seq` (finished or preempted)."""
        self._release(seq.block_table)
        seq.block_table = ()

    def _release(self, block_ids: tuple[int, ...]) -> None:
        """One holder fewer for each block; a block nobody holds goes on the free list."""
        # Tail blocks first: they join the free list before the prefix blocks and are reused
        # first, while the prefix blocks, the ones other requests are likely to share, stay
        # cached longer.
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} freed more often than taken"
            if block.ref_count == 0:
                self.free_block_ids[block_id] = None

    def commit_full_blocks(self, seq: Sequence, num_computed_before: int) -> None:
        """Hash the blocks that became full and computed in this step, so later sequences can
        share them. Hashing only computed blocks matters: a block allocated for a chunk that has
        not run yet holds no K/V, and nobody may hit it."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for index in range(num_computed_before // bs, seq.num_computed_tokens // bs):
            block = self.blocks[seq.block_table[index]]
            if block.hash is not None:  # a prefix-cache hit: hashed already
                continue
            prev_hash = self.blocks[seq.block_table[index - 1]].hash if index > 0 else None
            block.token_ids = seq.block_tokens(index, bs)
            block.hash, block.prev_hash = chain_hash(prev_hash, block.token_ids), prev_hash
            # Two sequences may compute the same prefix in one batch: the first block wins.
            self.hash_to_block_id.setdefault(block.hash, block.block_id)
            self.successors[prev_hash] = block.block_id
            self.evictions.pop(block.hash, None)  # cached again

    # -- internals ----------------------------------------------------------------------------

    def take_evictions(self) -> tuple[Eviction, ...]:
        """The evictions since the last call (the scheduler puts them in its step's output)."""
        taken = tuple(self.new_evictions)
        self.new_evictions.clear()
        return taken

    def _take_free_block(self, for_seq: int) -> int:
        block_id, _ = self.free_block_ids.popitem(last=False)
        block = self.blocks[block_id]
        # Reusing a block overwrites what it cached: forget its hash, and remember why.
        if block.hash is not None:
            if self.hash_to_block_id.get(block.hash) == block_id:
                del self.hash_to_block_id[block.hash]
                self._remember_eviction(block.hash, Eviction(block_id, self.step, for_seq))
            if self.successors.get(block.prev_hash) == block_id:
                del self.successors[block.prev_hash]
        block.hash, block.prev_hash, block.token_ids, block.ref_count = None, None, [], 1
        return block_id

    def _remember_eviction(self, block_hash: int, eviction: Eviction) -> None:
        if len(self.evictions) >= MAX_EVICTIONS:
            del self.evictions[next(iter(self.evictions))]  # the oldest
        self.evictions[block_hash] = eviction
        self.new_evictions.append(eviction)

    def _share(self, block_ids: Iterable[int]) -> None:
        """One more holder for each block (a free one, cached, leaves the free list)."""
        blocks, free = self.blocks, self.free_block_ids
        for block_id in block_ids:
            block = blocks[block_id]
            if block.ref_count == 0:
                del free[block_id]
            block.ref_count += 1


def common_prefix_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading entries `a` and `b` have in common. Block tables of one search (a pruned
    beam's and a fork's) hold their common ancestors' blocks, then part a few blocks from their
    ends: so the last agreeing entry is looked for from the end, one entry at a time, then the
    whole prefix up to it checked in one C comparison. Should that fail, a binary search on
    slices finds the answer (whether the first m agree is true up to it and false after it): a
    few comparisons, each one C loop, where a Python loop from the front would visit every
    block of a long table."""
    high = min(len(a), len(b))
    if a[:high] == b[:high]:  # one starts with the other
        return high
    end = high - 1  # a[end] differs from b[end], or an entry before it does
    while end > 0 and high - end <= 8 and a[end - 1] != b[end - 1]:
        end -= 1
    if a[:end] == b[:end]:
        return end
    low, high = 0, end - 1  # a[:low] == b[:low]; the answer is at most high
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low
