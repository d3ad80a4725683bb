"""Scheduler + BlockManager without a model.

A step is simulated the way LLMEngine runs it: schedule(), "run" the batch, update_after_step(),
then append a fake sampled token to every sequence that samples and finish the ones that have
produced what they want. The fake run writes (position, token) into a fake KV store at each
computed token's slot and first checks that the context it attends to is already there, so a
scheduling or paging mistake (attending to K/V never computed, overwritten or someone else's)
fails the test even though no model runs.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest

from minillama.engine.block_manager import BlockManager
from minillama.engine.scheduler import Scheduler, SchedulerOutput
from minillama.engine.sequence import Sequence, SequenceStatus
from minillama.sampling_params import SamplingParams

BS = 4


@dataclass(frozen=True)
class Item:
    """A published ScheduledSequence with the live Sequence its id names, so tests can compare
    with `is` and read the sequence's state afterwards."""

    seq: Sequence
    start: int
    num_tokens: int
    samples: bool
    num_cached_tokens: int
    reason: str
    hit_block_ids: tuple[int, ...]


@dataclass
class Step:
    phase: str
    items: list[Item]
    preempted: list[Sequence]

    @property
    def seqs(self) -> list[Sequence]:
        return [i.seq for i in self.items]

    @property
    def num_tokens(self) -> int:
        return sum(i.num_tokens for i in self.items)


def slot(block_ids: tuple[int, ...], position: int) -> int:
    """The flat KV-cache slot of a token: its physical block * block size + its offset."""
    return block_ids[position // BS] * BS + position % BS


class Sim:
    def __init__(self, num_blocks: int, max_num_seqs: int = 8, max_num_batched_tokens: int = 64,
                 prefix_caching: bool = True):
        self.bm = BlockManager(num_blocks, BS, prefix_caching)
        self.sched = Scheduler(self.bm, max_num_seqs, max_num_batched_tokens)
        self.want: dict[int, int] = {}  # seq_id -> output tokens to produce
        self.kv: dict[int, tuple[int, int]] = {}  # slot -> (position, token id)
        self.seqs: list[Sequence] = []
        self.steps = 0

    def add(self, prompt, max_tokens: int = 4) -> Sequence:
        seq = Sequence(len(self.seqs), list(prompt), SamplingParams(max_tokens=max_tokens))
        self.want[seq.seq_id] = max_tokens
        self.seqs.append(seq)
        self.sched.add(seq)
        return seq

    def step(self) -> Step:
        batch = self.sched.schedule()
        self.last_batch = batch
        record = Step(batch.phase, [
            Item(self.seqs[i.seq_id], i.start, i.num_tokens, i.samples, i.num_cached_tokens, i.reason, i.hit_block_ids)
            for i in batch.scheduled
        ], [self.seqs[seq_id] for seq_id in batch.preempted])
        self.steps += 1
        assert batch.scheduled, "schedule() found nothing to run while work remains"
        assert len(batch.scheduled) <= self.sched.max_num_seqs
        if batch.phase == "prefill":
            assert batch.num_tokens <= self.sched.max_num_batched_tokens
        else:
            assert all(i.num_tokens == 1 for i in batch.scheduled)
        # The queues as published: ids, in arrival order, as the scheduler holds them.
        assert batch.running == tuple(s.seq_id for s in self.sched.running)
        assert batch.waiting == tuple(s.seq_id for s in self.sched.waiting)
        for item in batch.scheduled:
            seq = self.seqs[item.seq_id]
            assert seq.status is SequenceStatus.RUNNING
            assert item.start == seq.num_computed_tokens and item.num_tokens >= 1
            assert item.end <= seq.num_tokens
            assert item.samples == (item.end == seq.num_tokens)
            # What a model runner reads: the tokens to compute and the block table.
            assert item.token_ids == tuple(seq.token_ids[item.start : item.end])
            assert item.block_ids == seq.block_table
            assert len(item.block_ids) * BS >= item.end, "computing into a slot with no block"
            for p in range(item.start):  # the context this chunk attends to
                assert self.kv.get(slot(item.block_ids, p)) == (p, seq.token_ids[p]), f"{seq} context {p}"
            for p, token in zip(range(item.start, item.end), item.token_ids):
                self.kv[slot(item.block_ids, p)] = (p, token)
        self.sched.update_after_step(batch)
        for item in batch.sampling:
            seq = self.seqs[item.seq_id]
            seq.token_ids.append(1000 + seq.seq_id)  # the fake sampled token
            if len(seq.output_token_ids) >= self.want[seq.seq_id]:
                self.sched.finish(seq, "length")
        self.check_invariants()
        return record

    def run(self, max_steps: int = 500) -> list[Step]:
        batches = []
        while self.sched.has_unfinished():
            assert len(batches) < max_steps, "no progress: the scheduler looks stuck"
            batches.append(self.step())
        return batches

    def check_invariants(self) -> None:
        running, waiting = self.sched.running, list(self.sched.waiting)
        assert len(running) <= self.sched.max_num_seqs
        # running ++ waiting is in arrival order, which is id order (new arrivals join at the
        # back, preempted sequences, always the latest running ones, return to the front).
        order = [s.seq_id for s in running + waiting]
        assert order == sorted(order)
        assert all(s.status is SequenceStatus.RUNNING for s in running)
        assert all(s.status is SequenceStatus.WAITING and s.block_table == () for s in waiting)
        refs: dict[int, int] = {}
        for seq in running:
            for b in seq.block_table:
                refs[b] = refs.get(b, 0) + 1
        for block in self.bm.blocks:
            assert block.ref_count == refs.get(block.block_id, 0)
        assert set(self.bm.free_block_ids) == {b.block_id for b in self.bm.blocks if b.ref_count == 0}

    def all_blocks_free(self) -> bool:
        return (all(b.ref_count == 0 for b in self.bm.blocks)
                and self.bm.num_free_blocks == self.bm.num_blocks)


# -- phases ---------------------------------------------------------------------------------------


def test_prefill_comes_before_decode():
    sim = Sim(num_blocks=16)
    a = sim.add(range(5), max_tokens=5)
    b1 = sim.step()
    assert b1.phase == "prefill" and b1.seqs == [a]
    assert b1.items[0].samples and len(a.output_token_ids) == 1
    # a now decodes; a new arrival is prefilled first, with a waiting.
    b = sim.add(range(10, 17), max_tokens=5)
    b2 = sim.step()
    assert b2.phase == "prefill" and b2.seqs == [b]
    assert len(a.output_token_ids) == 1  # a did not advance in b's prefill step
    b3 = sim.step()
    assert b3.phase == "decode"
    assert b3.seqs == [a, b]
    assert all(s.num_tokens == 1 and s.samples for s in b3.items)
    # Decode computes exactly the token sampled last step.
    assert [s.start for s in b3.items] == [a.num_tokens - 2, b.num_tokens - 2]


def test_max_num_seqs_caps_the_running_set():
    sim = Sim(num_blocks=32, max_num_seqs=2)
    seqs = [sim.add(range(i, i + 3), max_tokens=3) for i in range(5)]
    first = sim.step()
    assert first.phase == "prefill" and first.seqs == seqs[:2]
    assert list(sim.sched.waiting) == seqs[2:]
    batches = [first] + sim.run()
    assert max(len(b.items) for b in batches) == 2
    assert all(s.finish_reason == "length" and len(s.output_token_ids) == 3 for s in seqs)
    # Later sequences were admitted only as earlier ones finished, in arrival order.
    admitted = [s.seq for b in batches if b.phase == "prefill" for s in b.items]
    assert admitted == seqs
    assert sim.all_blocks_free()


def test_token_budget_chunks_a_long_prompt_and_only_the_last_chunk_samples():
    sim = Sim(num_blocks=16, max_num_batched_tokens=8)
    long = sim.add(range(20), max_tokens=2)
    chunks = []
    while long.num_computed_tokens < 20:
        batch = sim.step()
        assert batch.phase == "prefill" and batch.num_tokens <= 8
        (item,) = batch.items
        chunks.append((item.start, item.num_tokens, item.samples))
    assert chunks == [(0, 8, False), (8, 8, False), (16, 4, True)]
    assert len(long.output_token_ids) == 1
    # All 5 blocks were allocated at admission, hashed as their chunks completed.
    assert len(long.block_table) == 5
    sim.run()
    assert long.finish_reason == "length" and sim.all_blocks_free()


def test_token_budget_is_shared_and_a_running_chunk_continues_first():
    sim = Sim(num_blocks=16, max_num_batched_tokens=8)
    a = sim.add(range(6), max_tokens=2)
    b = sim.add(range(10, 16), max_tokens=2)
    s1 = sim.step()
    # a fits whole (6 tokens); b gets the remaining 2 tokens of the budget.
    assert [(s.seq, s.num_tokens, s.samples) for s in s1.items] == [(a, 6, True), (b, 2, False)]
    c = sim.add(range(20, 26), max_tokens=2)
    s2 = sim.step()
    # b's unfinished prompt goes first, then the new arrival takes what the budget leaves;
    # a (in decode) waits for the prefill to finish.
    assert [(s.seq, s.start, s.num_tokens) for s in s2.items] == [(b, 2, 4), (c, 0, 4)]
    assert s2.num_tokens == 8
    sim.run()
    assert all(len(s.output_token_ids) == 2 for s in (a, b, c))
    assert sim.all_blocks_free()


def test_waiting_queue_keeps_arrival_order():
    sim = Sim(num_blocks=4, max_num_seqs=8)  # room for one 12-token prompt (+ growth) at a time
    seqs = [sim.add([i] * 12, max_tokens=2) for i in range(4)]
    sim.step()
    assert sim.sched.running == seqs[:1]
    # The oldest waiting one cannot fit; younger ones must not jump the queue either.
    assert list(sim.sched.waiting) == seqs[1:]
    steps = sim.run()
    admitted = [s.seq for b in steps if b.phase == "prefill" for s in b.items]
    assert admitted == seqs[1:]
    assert all(len(s.output_token_ids) == 2 for s in seqs)


def test_an_oldest_request_that_does_not_fit_blocks_younger_ones():
    """No overtaking: a small young request waits behind an old one that needs more blocks,
    so the old one cannot be starved by a stream of small ones."""
    sim = Sim(num_blocks=4)
    a = sim.add([1] * 8, max_tokens=6)  # 2 blocks, grows to 4
    sim.step()
    big = sim.add([2] * 12, max_tokens=1)  # needs 3 blocks: must wait for a
    small = sim.add([3], max_tokens=1)  # would fit right away
    step = sim.step()
    assert step.phase == "decode" and step.seqs == [a]
    assert list(sim.sched.waiting) == [big, small]
    steps = sim.run()
    admitted = [s.seq for b in steps if b.phase == "prefill" for s in b.items]
    assert admitted.index(big) < admitted.index(small)
    assert sim.all_blocks_free()


# -- preemption -----------------------------------------------------------------------------------


def test_decode_out_of_blocks_preempts_the_latest_arrival_and_readmits_it():
    sim = Sim(num_blocks=4, prefix_caching=False)
    a = sim.add([1, 2, 3, 4], max_tokens=8)
    b = sim.add([5, 6, 7], max_tokens=8)
    c = sim.add([8, 9, 10], max_tokens=8)
    first = sim.step()  # one block each
    assert first.seqs == [a, b, c] and sim.bm.num_free_blocks == 1
    # a has 5 tokens and needs a 2nd block: takes the last free one. b and c still have room.
    s2 = sim.step()
    assert s2.phase == "decode" and s2.preempted == []
    assert sim.bm.num_free_blocks == 0
    # b and c now hold 5 tokens each: b (older) needs a block -> c, the latest arrival, goes.
    c_blocks = list(c.block_table)
    s3 = sim.step()
    assert s3.phase == "decode"
    assert s3.preempted == [c]
    assert s3.seqs == [a, b]
    assert c.block_table == () and c.num_computed_tokens == 0 and c.num_preemptions == 1
    assert c.status is SequenceStatus.WAITING and sim.sched.waiting[0] is c
    assert b.block_table[-1] in c_blocks  # b got the block c gave back
    assert len(c.output_token_ids) == 2  # what c generated is kept, to be recomputed
    # A newcomer queues behind c: c is back at the FRONT of waiting.
    d = sim.add([11], max_tokens=1)
    assert list(sim.sched.waiting) == [c, d]
    sim.run()
    for s in (a, b, c):
        assert s.finish_reason == "length" and len(s.output_token_ids) == 8
    assert a.num_preemptions == 0 and c.num_preemptions >= 1  # the oldest is never the victim
    assert d.is_finished
    assert sim.all_blocks_free()


def test_preempted_sequence_is_recomputed_with_its_generated_tokens():
    sim = Sim(num_blocks=3, prefix_caching=False)
    a = sim.add([1, 2, 3, 4], max_tokens=6)
    b = sim.add([5, 6, 7, 8], max_tokens=3)
    sim.step()  # prefill both: 2 blocks used, 1 free
    s2 = sim.step()  # a takes the free block; b then needs one -> b preempts itself
    assert s2.preempted == [b] and s2.seqs == [a]
    generated = list(b.output_token_ids)
    assert len(generated) == 1
    batches = sim.run()
    # b's re-admission prefills prompt + generated token (5 tokens) and samples at its end.
    readmit = next(s for x in batches if x.phase == "prefill" for s in x.items if s.seq is b)
    assert (readmit.start, readmit.num_tokens, readmit.samples) == (0, 5, True)
    assert b.output_token_ids[:1] == generated and len(b.output_token_ids) == 3
    assert sim.all_blocks_free()


def test_preemption_with_prefix_caching_readmits_from_the_cache():
    sim = Sim(num_blocks=3, prefix_caching=True)
    a = sim.add([1, 2, 3, 4], max_tokens=4)  # finishes within 2 blocks, leaving b's block alone
    b = sim.add([5, 6, 7, 8], max_tokens=3)
    sim.step()
    assert sim.step().preempted == [b]
    (free_id,) = sim.bm.free_block_ids  # b's prompt block, the only free one
    b_prompt_block = sim.bm.blocks[free_id]
    assert b_prompt_block.hash is not None and b_prompt_block.token_ids == [5, 6, 7, 8]
    steps = sim.run()
    readmit = next(s for x in steps if x.phase == "prefill" for s in x.items if s.seq is b)
    # b's prompt block survived on the free list: only its sampled token is recomputed.
    assert readmit.num_cached_tokens == 4 and (readmit.start, readmit.num_tokens) == (4, 1)
    assert readmit.samples
    assert len(a.output_token_ids) == 4 and len(b.output_token_ids) == 3
    assert sim.all_blocks_free()


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_tiny_pool_many_sequences_all_finish(seed, prefix_caching):
    """Many sequences, some arriving mid-run, sharing prompt prefixes, through a pool much too
    small for all of them: every one finishes with its full output, within a bounded number of
    steps, and every block is free at the end."""
    rng = random.Random(seed)
    num_blocks = 6
    sim = Sim(num_blocks=num_blocks, max_num_seqs=4, max_num_batched_tokens=10, prefix_caching=prefix_caching)
    shared = [rng.randrange(5) for _ in range(8)]

    def new_request():
        prompt = shared[: rng.randint(0, 8)] + [rng.randrange(5) for _ in range(rng.randint(1, 8))]
        # The engine admits a request only if it fits the cache on its own (its last sampled
        # token is never computed, so it needs prompt + max_tokens - 1 slots).
        max_tokens = rng.randint(1, num_blocks * BS - len(prompt) + 1)
        return sim.add(prompt, max_tokens=min(max_tokens, 10))

    for _ in range(8):
        new_request()
    late = 0
    while sim.sched.has_unfinished():
        assert sim.steps < 1000, "no progress: starvation or livelock"
        sim.step()
        if late < 6 and rng.random() < 0.2:
            new_request()
            late += 1
    assert len(sim.seqs) == 8 + late
    for seq in sim.seqs:
        assert seq.finish_reason == "length"
        assert len(seq.output_token_ids) == sim.want[seq.seq_id]
    assert sim.all_blocks_free()
    assert sum(s.num_preemptions for s in sim.seqs) > 0  # the pool is tight enough to preempt
    if prefix_caching:
        assert sim.bm.num_hit_blocks > 0  # shared prefixes and re-admissions hit the cache
    else:
        assert sim.bm.num_hit_blocks == 0


def test_the_oldest_sequence_is_never_preempted():
    sim = Sim(num_blocks=5, max_num_seqs=4, prefix_caching=False)
    seqs = [sim.add([i, i + 1, i + 2], max_tokens=12) for i in range(4)]
    oldest_preempted = False
    while sim.sched.has_unfinished():
        assert sim.steps < 500
        batch = sim.step()
        if sim.sched.running or sim.sched.waiting:
            oldest = min(sim.sched.running + list(sim.sched.waiting), key=lambda s: s.seq_id)
            oldest_preempted |= oldest in batch.preempted
    assert not oldest_preempted
    assert sum(s.num_preemptions for s in seqs) > 0
    assert all(len(s.output_token_ids) == 12 for s in seqs)
    assert sim.all_blocks_free()


def test_each_record_says_why_its_sequence_runs():
    """admitted (first time), prefill-continues (the next chunk of a long prompt), decode, and
    resumed (admitted again after a preemption)."""
    sim = Sim(num_blocks=4, max_num_batched_tokens=6, prefix_caching=False)
    a = sim.add(range(1, 9), max_tokens=8)  # 8 tokens: two chunks of the 6-token budget
    b = sim.add(range(10, 13), max_tokens=8)
    s1 = sim.step()
    assert [(i.seq, i.reason, i.num_tokens) for i in s1.items] == [(a, "admitted", 6)]
    s2 = sim.step()
    assert [(i.seq, i.reason, i.num_tokens) for i in s2.items] == [(a, "prefill-continues", 2), (b, "admitted", 3)]
    steps = sim.run()
    assert all(i.reason == "decode" for x in steps if x.phase == "decode" for i in x.items)
    preempting = next(i for i, x in enumerate(steps) if x.preempted)
    assert steps[preempting].preempted == [b]
    resumed = next(i for x in steps[preempting:] if x.phase == "prefill" for i in x.items if i.seq is b)
    assert resumed.reason == "resumed" and resumed.start == 0
    assert sim.all_blocks_free()


def test_the_plan_publishes_the_queues_after_deciding():
    sim = Sim(num_blocks=32, max_num_seqs=2)
    seqs = [sim.add(range(i, i + 3), max_tokens=2) for i in range(4)]
    sim.step()
    assert (sim.last_batch.running, sim.last_batch.waiting) == ((0, 1), (2, 3))
    sim.step()  # decode: 0 and 1 finish at its end, so the next step admits 2 and 3
    assert (sim.last_batch.running, sim.last_batch.waiting) == ((0, 1), (2, 3))
    sim.step()
    assert (sim.last_batch.running, sim.last_batch.waiting) == ((2, 3), ())
    sim.run()
    assert all(s.is_finished for s in seqs)


def test_an_admission_names_the_blocks_its_prefix_cache_hits_came_from():
    sim = Sim(num_blocks=16)
    a = sim.add(range(10), max_tokens=2)  # blocks [0..3] [4..7] full, then [8, 9]
    sim.step()
    b = sim.add([*range(8), 50, 51, 52], max_tokens=2)
    sim.step()
    (item,) = sim.last_batch.scheduled
    assert item.seq_id == b.seq_id and item.reason == "admitted"
    assert item.hit_block_ids == a.block_table[:2] == b.block_table[:2]
    assert (item.num_cached_tokens, item.start, item.num_tokens) == (8, 8, 3)
    # A continuing chunk or a decode step served no hit.
    sim.step()
    assert all(i.hit_block_ids == () and i.num_cached_tokens == 0 for i in sim.last_batch.scheduled)


def test_a_published_plan_cannot_change_after_the_fact():
    """Observers keep the plan: neither it nor its records change when the engine moves on."""
    sim = Sim(num_blocks=8)
    seq = sim.add([1, 2, 3, 4, 5], max_tokens=3)
    sim.step()
    batch: SchedulerOutput = sim.last_batch
    (item,) = batch.scheduled
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.phase = "decode"
    with pytest.raises(AttributeError):  # a NamedTuple: immutable, built at C speed
        item.start = 3
    assert isinstance(batch.scheduled, tuple) and isinstance(item.block_ids, tuple)
    sim.run()
    # The sequence sampled, grew, finished and gave its blocks back: the record says what ran.
    assert seq.is_finished and seq.block_table == ()
    assert (item.start, item.end, item.samples, item.token_ids) == (0, 5, True, (1, 2, 3, 4, 5))
    assert batch.sampling == (item,) and len(item.block_ids) == 2


# -- abort ------------------------------------------------------------------------------------------


def test_abort_running_and_waiting_sequences_frees_their_blocks():
    sim = Sim(num_blocks=4, max_num_seqs=2)
    a = sim.add(range(6), max_tokens=10)
    b = sim.add(range(10, 16), max_tokens=10)
    c = sim.add(range(20, 26), max_tokens=10)  # waits: max_num_seqs is 2
    sim.step()
    assert sim.sched.running == [a, b] and list(sim.sched.waiting) == [c]
    assert sim.bm.num_free_blocks == 0

    sim.sched.abort(c)  # waiting, never held blocks
    assert c.finish_reason == "abort" and c.is_finished and not sim.sched.waiting
    sim.sched.abort(a)  # running
    assert a.finish_reason == "abort" and a.block_table == () and sim.sched.running == [b]
    assert sim.bm.num_free_blocks == 2
    sim.check_invariants()
    sim.run()
    assert len(b.output_token_ids) == 10
    assert sim.all_blocks_free()


def test_abort_a_preempted_sequence():
    sim = Sim(num_blocks=3, prefix_caching=False)
    a = sim.add([1, 2, 3, 4], max_tokens=6)
    b = sim.add([5, 6, 7, 8], max_tokens=6)
    sim.step()
    assert sim.step().preempted == [b]
    sim.sched.abort(b)  # waiting again, its blocks already given back
    assert b.finish_reason == "abort" and not sim.sched.waiting
    sim.run()
    assert len(a.output_token_ids) == 6
    assert sim.all_blocks_free()


def test_abort_with_shared_prefix_keeps_the_other_users_blocks():
    sim = Sim(num_blocks=8)
    a = sim.add(range(9), max_tokens=5)
    sim.step()
    b = sim.add(range(9), max_tokens=5)
    sim.step()  # b hits a's two full prompt blocks
    shared = a.block_table[:2]
    assert b.block_table[:2] == shared
    sim.sched.abort(b)
    assert [sim.bm.blocks[i].ref_count for i in shared] == [1, 1]
    sim.check_invariants()
    sim.run()
    assert len(a.output_token_ids) == 5 and sim.all_blocks_free()
