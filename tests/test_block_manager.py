"""BlockManager on its own: reference counts, the free list, prefix caching and its LRU order.

No model runs here. Where a test needs "the K/V a block holds", it keeps a fake KV store (slot ->
(position, token id)) and writes into it what a forward pass would, so a prefix-cache hit can be
checked to serve exactly the tokens the sequence would otherwise compute.
"""

from __future__ import annotations

import itertools
import random

import pytest

from minillama.engine.block_manager import BlockManager
from minillama.engine.sequence import Sequence
from minillama.sampling_params import SamplingParams

BS = 4  # block size used throughout


_ids = itertools.count()


def seq_of(tokens) -> Sequence:
    return Sequence(next(_ids), list(tokens), SamplingParams())


def slot(seq: Sequence, position: int) -> int:
    """The flat KV-cache slot of a token: its physical block * block size + its offset."""
    return seq.block_table[position // BS] * BS + position % BS


def compute(bm: BlockManager, seq: Sequence, upto: int | None = None, kv: dict | None = None) -> None:
    """Pretend a forward pass computed `seq`'s tokens up to `upto` (default: all of them), as the
    scheduler records it: advance num_computed_tokens, then hash the blocks that became full."""
    upto = seq.num_tokens if upto is None else upto
    before = seq.num_computed_tokens
    if kv is not None:
        for p in range(before, upto):
            kv[slot(seq, p)] = (p, seq.token_ids[p])
    seq.num_computed_tokens = upto
    bm.commit_full_blocks(seq, before)


def admit(bm: BlockManager, tokens, kv: dict | None = None) -> Sequence:
    """Allocate and fully compute a sequence (a finished prefill)."""
    seq = seq_of(tokens)
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    compute(bm, seq, kv=kv)
    return seq


def check_invariants(bm: BlockManager, live: list[Sequence]) -> None:
    """The bookkeeping identities that must hold between any two operations."""
    users: dict[int, int] = {}
    for seq in live:
        assert len(set(seq.block_table)) == len(seq.block_table), f"{seq} holds a block twice"
        assert len(seq.block_table) == seq.num_blocks_needed(bm.block_size), f"{seq} has the wrong number of blocks"
        for block_id in seq.block_table:
            users[block_id] = users.get(block_id, 0) + 1
    # Every reference count is exactly the number of block-table entries naming the block.
    assert sum(b.ref_count for b in bm.blocks) == sum(len(s.block_table) for s in live)
    for block in bm.blocks:
        assert block.ref_count == users.get(block.block_id, 0), f"block {block.block_id}"
    # The free list is exactly the unreferenced blocks: none leaked, none both free and in use.
    assert set(bm.free_block_ids) == {b.block_id for b in bm.blocks if b.ref_count == 0}
    assert len(bm.free_block_ids) == bm.num_free_blocks
    # A block shared by several sequences must be a hashed (full, computed) one.
    for block_id, n in users.items():
        if n > 1:
            assert bm.blocks[block_id].hash is not None, f"unhashed block {block_id} is shared"
    # The hash index only names blocks that still carry that hash.
    for h, block_id in bm.hash_to_block_id.items():
        assert bm.blocks[block_id].hash == h


# -- reference counts and the free list -------------------------------------------------------


def test_allocate_takes_blocks_and_free_returns_them():
    bm = BlockManager(num_blocks=8, block_size=BS)
    seq = seq_of(range(10))  # 10 tokens -> 3 blocks
    bm.allocate(seq)
    assert len(seq.block_table) == 3
    assert all(bm.blocks[b].ref_count == 1 for b in seq.block_table)
    assert bm.num_free_blocks == 5
    assert seq.num_computed_tokens == seq.num_cached_tokens == 0
    check_invariants(bm, [seq])

    bm.free(seq)
    assert seq.block_table == ()
    assert bm.num_free_blocks == 8
    assert all(b.ref_count == 0 for b in bm.blocks)
    check_invariants(bm, [])


def test_shared_block_returns_to_free_list_only_with_its_last_user():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = admit(bm, range(10))
    b = seq_of(range(10))
    bm.allocate(b)
    shared = a.block_table[:2]
    assert b.block_table[:2] == shared
    assert [bm.blocks[i].ref_count for i in shared] == [2, 2]
    check_invariants(bm, [a, b])

    bm.free(a)
    assert [bm.blocks[i].ref_count for i in shared] == [1, 1]
    assert not any(i in bm.free_block_ids for i in shared)  # b still uses them
    assert a.block_table == () and bm.num_free_blocks == 8 - 3  # b's 3 blocks
    check_invariants(bm, [b])

    bm.free(b)
    assert all(i in bm.free_block_ids for i in shared)
    assert bm.num_free_blocks == 8
    check_invariants(bm, [])


def test_double_free_is_caught():
    bm = BlockManager(num_blocks=4, block_size=BS)
    seq = seq_of(range(5))
    bm.allocate(seq)
    table = seq.block_table
    bm.free(seq)
    seq.block_table = table  # a buggy caller freeing the same blocks again
    with pytest.raises(AssertionError, match="freed more often"):
        bm.free(seq)


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_random_allocate_append_free_cycles_never_leak(seed, prefix_caching):
    """Property-style: random admissions (from a tiny alphabet, so prefixes collide and hit the
    cache), decode appends and frees. After every operation the bookkeeping identities hold, and
    every computed position of every live sequence holds its own token in the fake KV store,
    which fails if a prefix-cache hit ever serves a block that was overwritten or belongs to
    other tokens."""
    rng = random.Random(seed)
    bm = BlockManager(num_blocks=12, block_size=BS, enable_prefix_caching=prefix_caching)
    kv: dict[int, tuple[int, int]] = {}
    live: list[Sequence] = []
    prompts = [[rng.randrange(3) for _ in range(rng.randint(1, 14))] for _ in range(6)]
    hits = 0

    for _ in range(400):
        op = rng.random()
        if op < 0.35:  # admit: a known prompt, maybe with a random tail
            tokens = rng.choice(prompts) + [rng.randrange(3) for _ in range(rng.randint(0, 3))]
            seq = seq_of(tokens)
            cached = bm.cached_prefix(seq)
            revived = sum(1 for b in cached if bm.blocks[b].ref_count == 0)
            takes = seq.num_blocks_needed(BS) - len(cached) + revived  # blocks leaving the free list
            if bm.can_allocate(seq):
                free_before = bm.num_free_blocks
                bm.allocate(seq)
                assert free_before - bm.num_free_blocks == takes
                assert list(seq.block_table[: len(cached)]) == cached
                assert seq.num_computed_tokens == seq.num_cached_tokens == len(cached) * BS
                assert seq.num_cached_tokens < seq.num_tokens
                hits += len(cached)
                # The cached prefix must already hold this sequence's tokens.
                for p in range(seq.num_cached_tokens):
                    assert kv[slot(seq, p)] == (p, seq.token_ids[p])
                compute(bm, seq, kv=kv)
                live.append(seq)
            else:
                assert takes > bm.num_free_blocks  # refused only for a real lack of blocks
        elif op < 0.75 and live:  # decode: append one token and compute it
            seq = rng.choice(live)
            seq.token_ids.append(rng.randrange(3))
            if bm.can_append(seq):
                bm.append_slot(seq)
                compute(bm, seq, kv=kv)
            else:
                seq.token_ids.pop()  # no room: a scheduler would preempt; here we just skip
        elif live:  # free a random sequence
            seq = live.pop(rng.randrange(len(live)))
            bm.free(seq)
        check_invariants(bm, live)
        for seq in live:
            for p in range(seq.num_computed_tokens):
                assert kv[slot(seq, p)] == (p, seq.token_ids[p]), f"{seq} position {p}"

    for seq in live:
        bm.free(seq)
    check_invariants(bm, [])
    assert bm.num_free_blocks == bm.num_blocks
    if prefix_caching:
        assert hits > 0, "the random workload should exercise prefix-cache hits"
    else:
        assert hits == 0 and bm.hash_to_block_id == {}


# -- prefix caching ---------------------------------------------------------------------------


def test_blocks_are_hashed_only_once_computed():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = seq_of(range(10))
    bm.allocate(a)
    # Allocated but not computed: nobody may hit these blocks (they hold no K/V yet).
    assert all(bm.blocks[b].hash is None for b in a.block_table)
    assert bm.hash_to_block_id == {}
    assert bm.cached_prefix(seq_of(range(10))) == []

    compute(bm, a, upto=4)  # a chunk that fills block 0 only
    assert bm.blocks[a.block_table[0]].hash is not None
    assert bm.blocks[a.block_table[1]].hash is None
    assert bm.cached_prefix(seq_of(range(10))) == list(a.block_table[:1])

    compute(bm, a)  # the rest: block 1 becomes full; block 2 (tokens 8, 9) stays partial
    assert [bm.blocks[b].hash is not None for b in a.block_table] == [True, True, False]
    assert set(bm.hash_to_block_id.values()) == set(a.block_table[:2])
    assert bm.blocks[a.block_table[1]].token_ids == [4, 5, 6, 7]


def test_second_sequence_with_same_prefix_shares_blocks():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = admit(bm, list(range(10)))
    b = seq_of(list(range(8)) + [50, 51, 52])  # same first 2 full blocks, different tail
    assert bm.can_allocate(b)
    bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2]
    assert b.block_table[2] not in a.block_table
    assert b.num_cached_tokens == b.num_computed_tokens == 8
    assert [bm.blocks[i].ref_count for i in b.block_table] == [2, 2, 1]
    assert bm.num_hit_blocks == 2
    check_invariants(bm, [a, b])


def test_partial_prefix_match_hits_only_the_matching_leading_blocks():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = admit(bm, list(range(12)))
    b = seq_of([0, 1, 2, 3, 99, 5, 6, 7, 8, 9, 10, 11, 12])  # differs inside block 1
    assert bm.cached_prefix(b) == list(a.block_table[:1])
    # Same tokens as a's block 1, but after a different block 0: the chained hash differs.
    c = seq_of([99, 1, 2, 3, 4, 5, 6, 7, 8])
    assert bm.cached_prefix(c) == []


def test_sequence_differing_in_first_block_gets_no_hit():
    bm = BlockManager(num_blocks=8, block_size=BS)
    admit(bm, list(range(12)))
    b = seq_of([1] + list(range(1, 12)))
    bm.allocate(b)
    assert b.num_cached_tokens == 0 and b.num_computed_tokens == 0
    assert bm.num_hit_blocks == 0


def test_last_token_is_never_served_from_the_cache():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = admit(bm, list(range(12)))  # exactly 3 full blocks, all hashed
    assert all(bm.blocks[i].hash is not None for i in a.block_table)
    same = seq_of(range(12))
    # The last token's output gives the next token's logits, so it must be computed: 2 hits.
    assert bm.cached_prefix(same) == list(a.block_table[:2])
    bm.allocate(same)
    assert same.num_cached_tokens == 8
    assert same.num_uncomputed_tokens == 4
    assert same.block_table[2] != a.block_table[2]
    # One more token and all 3 full blocks are hits.
    longer = seq_of(list(range(12)) + [0])
    assert bm.cached_prefix(longer) == list(a.block_table)
    # A prompt shorter than one block, or of exactly one block, gets nothing.
    assert bm.cached_prefix(seq_of(range(4))) == []
    assert bm.cached_prefix(seq_of(range(3))) == []


def test_freed_blocks_keep_their_hash_and_are_revived_by_a_hit():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = admit(bm, list(range(10)))
    cached = a.block_table[:2]
    bm.free(a)
    assert all(i in bm.free_block_ids for i in cached)
    assert all(bm.blocks[i].hash is not None for i in cached)
    assert bm.num_free_blocks == 8

    b = seq_of(list(range(8)) + [42])
    assert bm.can_allocate(b)
    bm.allocate(b)
    assert b.block_table[:2] == cached
    assert b.num_cached_tokens == 8
    # Revived: off the free list, referenced once; plus one fresh block for the tail.
    assert not any(i in bm.free_block_ids for i in cached)
    assert [bm.blocks[i].ref_count for i in b.block_table] == [1, 1, 1]
    assert bm.num_free_blocks == 8 - 3
    check_invariants(bm, [b])


def test_free_order_puts_tail_blocks_before_head_blocks():
    bm = BlockManager(num_blocks=6, block_size=BS)
    a = admit(bm, range(10))  # takes blocks 0, 1, 2 (free list front first)
    assert a.block_table == (0, 1, 2)
    assert list(bm.free_block_ids) == [3, 4, 5]
    bm.free(a)
    # Never-used blocks first, then a's blocks tail first: the head (most shareable) is reused last.
    assert list(bm.free_block_ids) == [3, 4, 5, 2, 1, 0]


def test_reused_free_block_loses_its_hash_mapping():
    bm = BlockManager(num_blocks=6, block_size=BS)
    a = admit(bm, range(10))
    head_hash, second_hash = (bm.blocks[i].hash for i in a.block_table[:2])
    bm.free(a)  # free list: 3, 4, 5, 2, 1, 0
    filler = seq_of([77] * 20)  # 5 blocks: 3, 4, 5, then 2 (unhashed) and 1 (a's block 1)
    bm.allocate(filler)
    assert filler.block_table == (3, 4, 5, 2, 1)
    # Block 1 was overwritten: its hash is gone from the index and from the block.
    assert second_hash not in bm.hash_to_block_id
    assert bm.blocks[1].hash is None and bm.blocks[1].token_ids == []
    # Block 0 is still free and cached.
    assert bm.hash_to_block_id[head_hash] == 0
    b = seq_of(range(10))
    assert bm.cached_prefix(b) == [0]  # the chain stops at the lost block
    check_invariants(bm, [filler])


def test_hash_collision_guard_checks_block_contents():
    """A hash index entry is only trusted if the block still holds those tokens."""
    bm = BlockManager(num_blocks=4, block_size=BS)
    a = admit(bm, range(6))
    bm.blocks[a.block_table[0]].token_ids = [9, 9, 9, 9]  # as if the hash had collided
    assert bm.cached_prefix(seq_of(range(6))) == []


def test_prefix_caching_disabled_gives_no_hits():
    bm = BlockManager(num_blocks=8, block_size=BS, enable_prefix_caching=False)
    a = admit(bm, range(10))
    assert all(bm.blocks[i].hash is None for i in a.block_table)
    b = seq_of(range(10))
    assert bm.cached_prefix(b) == []
    bm.allocate(b)
    assert b.num_cached_tokens == 0
    assert set(a.block_table).isdisjoint(b.block_table)
    assert bm.num_hit_blocks == 0 and bm.hash_to_block_id == {}


# -- can_allocate -------------------------------------------------------------------------------


def test_can_allocate_does_not_charge_for_hits_on_live_blocks():
    bm = BlockManager(num_blocks=4, block_size=BS)
    a = admit(bm, range(9))  # 3 blocks, 2 hashed and in use; 1 block free
    assert bm.num_free_blocks == 1
    # 9 tokens -> 3 blocks, 2 of them hits on a's live blocks: needs just 1 free block.
    b = seq_of(list(range(8)) + [5])
    assert bm.can_allocate(b)
    # 13 tokens -> 4 blocks, 2 hits: needs 2 free blocks, only 1 is free.
    assert not bm.can_allocate(seq_of(list(range(8)) + [5] * 5))
    bm.allocate(b)
    assert bm.num_free_blocks == 0
    check_invariants(bm, [a, b])


def test_can_allocate_charges_for_reviving_free_blocks():
    """Hits on blocks that sit on the free list still consume free blocks; the exact count
    decides admission at the boundary."""
    bm = BlockManager(num_blocks=6, block_size=BS)
    a = admit(bm, range(9))  # blocks 0, 1, 2; 0 and 1 hashed
    other = admit(bm, [50] * 8)  # blocks 3, 4: keeps 2 blocks busy
    bm.free(a)  # free: 5, 2, 1, 0 -> 4 free blocks, 2 of them cached hits for range(8)
    assert bm.num_free_blocks == 4

    fits = seq_of(list(range(8)) + [7] * 8)  # 16 tokens -> 4 blocks: 2 revived + 2 fresh = 4
    too_big = seq_of(list(range(8)) + [7] * 9)  # 17 tokens -> 5 blocks: 2 revived + 3 fresh = 5
    assert bm.cached_prefix(too_big) == [0, 1]
    # Counting the hits as free would wrongly admit too_big (5 - 2 = 3 <= 4).
    assert not bm.can_allocate(too_big)
    assert bm.can_allocate(fits)
    bm.allocate(fits)
    assert fits.block_table[:2] == (0, 1)
    assert bm.num_free_blocks == 0
    check_invariants(bm, [other, fits])


def test_can_allocate_without_hits_is_plain_block_count():
    bm = BlockManager(num_blocks=3, block_size=BS)
    assert bm.can_allocate(seq_of(range(12)))  # exactly 3 blocks
    assert not bm.can_allocate(seq_of(range(13)))  # 4 blocks


# -- growing at block boundaries ------------------------------------------------------------


def test_needs_new_block_and_append_slot_at_block_boundaries():
    bm = BlockManager(num_blocks=3, block_size=BS)
    seq = seq_of(range(4))  # exactly one full block
    bm.allocate(seq)
    assert len(seq.block_table) == 1
    assert not bm.needs_new_block(seq)
    bm.append_slot(seq)  # nothing to do
    assert len(seq.block_table) == 1

    grown = []
    for token in range(4, 13):  # the 5th .. 13th tokens
        seq.token_ids.append(token)
        # The new token is the first of a block exactly when it lands at offset 0.
        assert bm.needs_new_block(seq) == ((seq.num_tokens - 1) % BS == 0)
        if seq.num_tokens == 13:
            break
        bm.append_slot(seq)
        grown.append(len(seq.block_table))
        assert not bm.needs_new_block(seq)
        assert slot(seq, seq.num_tokens - 1) // BS == seq.block_table[-1]
    # A new block exactly when the 5th and 9th tokens arrive.
    assert grown == [2, 2, 2, 2, 3, 3, 3, 3]
    # The pool (3 blocks) is exhausted: the 13th token needs a 4th block.
    assert bm.num_free_blocks == 0
    assert bm.needs_new_block(seq) and not bm.can_append(seq)


def test_can_append_without_a_new_block_needs_no_free_block():
    bm = BlockManager(num_blocks=1, block_size=BS)
    seq = seq_of(range(2))
    bm.allocate(seq)
    assert bm.num_free_blocks == 0
    seq.token_ids.append(2)  # 3rd token still fits in the block
    assert bm.can_append(seq)
    bm.append_slot(seq)
    assert seq.block_table == (0,)
