"""Scheduler: decides, every step, which sequences run and how many tokens each computes.

Continuous batching: the batch is rebuilt every step, so a sequence joins as soon as there is
room and leaves the moment it finishes, instead of the whole batch waiting for its slowest
member. Each step is one of two kinds:

- prefill: compute the prompt tokens of newly admitted sequences (and continue prompts longer
  than one step's token budget: chunked prefill). Prefill goes first, so new requests start
  quickly.
- decode: every running sequence computes the one token it sampled last step.

When the KV cache runs out of blocks during decode, the latest arrival among the running
sequences is preempted: its blocks are freed and it goes back to the front of the waiting queue,
to be recomputed later (its prompt and generated tokens are prefilled again, often mostly from
the prefix cache). Evicting the latest arrival means the oldest sequences always make progress,
and a request that fits the cache on its own (checked at add time) always finishes: nothing
starves.

A fork (LLMEngine.fork) that shares its parent's blocks holds them from the moment it is made,
so it does not queue behind the waiting requests: it starts as soon as it has a seat, before any
admission (a fork whose parent's blocks were gone queues like any new request).

The decision is published as a SchedulerOutput, an immutable value: the model runner builds
the step's tensors from it, and observers read it, so what they see is exactly what ran. The
live Sequence objects stay inside the scheduler.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Literal, NamedTuple

from minillama.engine.block_manager import BlockManager
from minillama.engine.sequence import Sequence, SequenceStatus

Phase = Literal["prefill", "decode"]
# Why a sequence is in a step: "admitted" from the waiting queue for the first time; "resumed",
# admitted again after a preemption (recomputing its tokens); "prefill-continues", the next
# chunk of a prompt longer than one step's token budget; "decode", its one new token; "forked",
# the first step of a fork (its forced tokens, and whatever of its prefix it could not share).
Reason = Literal["admitted", "resumed", "prefill-continues", "decode", "forked"]

_seq_id, _num_tokens, _samples = attrgetter("seq_id"), attrgetter("num_tokens"), attrgetter("samples")
_record = tuple.__new__


class ScheduledSequence(NamedTuple):
    """One sequence's share of a step: compute tokens [start, start + num_tokens).

    A NamedTuple, not a frozen dataclass: a decode step at batch 256 makes 256 of these, and a
    frozen dataclass sets each field through object.__setattr__, several times slower than
    building a tuple (docs/perf-notes.md). Immutable all the same."""

    seq_id: int
    start: int
    num_tokens: int
    # Does this step produce the sequence's next token (all its tokens are then computed)?
    samples: bool
    reason: Reason
    block_ids: tuple[int, ...]  # its block table in this step: logical block i -> physical block
    token_ids: tuple[int, ...]  # the tokens this step computes, positions [start, end)
    num_cached_tokens: int = 0  # prefix-cache hits served at admission in this step
    hit_block_ids: tuple[int, ...] = ()  # the blocks that served them: block_ids[:num hit blocks]

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """What one step runs, and the scheduler's queues right after deciding it. The model runner
    consumes it; observers receive the same value."""

    phase: Phase
    scheduled: tuple[ScheduledSequence, ...]
    preempted: tuple[int, ...] = ()  # ids of the sequences evicted to make room, in eviction order
    waiting: tuple[int, ...] = ()  # ids, in arrival order
    running: tuple[int, ...] = ()  # ids, in arrival order
    num_tokens: int = field(init=False)  # tokens computed in the step, N
    # The sequences that produce a token this step, in batch order (the logits' rows).
    sampling: tuple[ScheduledSequence, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Derived once here: a frozen value cannot cache them later.
        scheduled = self.scheduled
        if self.phase == "decode":  # one token each, and it is each sequence's last: all sample
            num_tokens, sampling = len(scheduled), scheduled
        else:
            num_tokens = sum(map(_num_tokens, scheduled))
            sampling = tuple(compress(scheduled, map(_samples, scheduled)))
        object.__setattr__(self, "num_tokens", num_tokens)
        object.__setattr__(self, "sampling", sampling)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()  # in arrival order
        # In admission order, which is arrival order but for forks (they start ahead of the
        # waiting queue): the last one is preempted first.
        self.running: list[Sequence] = []
        # Forks holding their parent's shared blocks, waiting for a seat to take their first step.
        self.forked: deque[Sequence] = deque()
        # The live sequences of the last plan, aligned with its `scheduled`: what
        # update_after_step advances.
        self.in_flight: list[Sequence] = []
        # The waiting queue as ids, kept until the queue changes: most decode steps leave it
        # as it is, and it can be long.
        self._waiting_ids: tuple[int, ...] | None = None

    def add(self, seq: Sequence) -> None:
        """Queue a new request; a fork that already holds blocks (BlockManager.fork) waits
        apart, for a seat only."""
        if seq.block_table:
            self.forked.append(seq)
        else:
            self.waiting.append(seq)
            self._waiting_ids = None

    def add_sample(self, seq: Sequence) -> None:
        """A sample of a request with n > 1 (LLMEngine), holding the leader's prompt blocks and
        one uncomputed token, its first: it runs as a decode from the next step when it has a
        seat, and waits with the forks otherwise."""
        if len(self.running) < self.max_num_seqs:
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
        else:
            self.forked.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.forked)

    @property
    def holders(self) -> list[Sequence]:
        """The sequences holding blocks: the running ones, then the forks not yet started."""
        return [*self.running, *self.forked] if self.forked else self.running

    def schedule(self) -> SchedulerOutput:
        seqs, batch = self._schedule_prefill()
        if not batch.scheduled:
            seqs, batch = self._schedule_decode()
        self.in_flight = seqs
        return batch

    def _schedule_prefill(self) -> tuple[list[Sequence], SchedulerOutput]:
        budget = self.max_num_batched_tokens
        seqs: list[Sequence] = []
        scheduled: list[ScheduledSequence] = []
        # 1. Running sequences whose prompt did not fit one step continue first. A sequence
        #    with a single token left goes to decode instead, which computes exactly that.
        for seq in self.running:
            if seq.num_uncomputed_tokens > 1 and budget > 0:
                n = min(seq.num_uncomputed_tokens, budget)
                seqs.append(seq)
                scheduled.append(self._prefill_item(seq, n, "prefill-continues"))
                budget -= n
        # 2. Forks holding shared blocks start next: they need a seat and tokens, no blocks.
        while self.forked and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.forked.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            seqs.append(seq)
            scheduled.append(self._prefill_item(seq, n, "forked"))
            budget -= n
        # 3. Admit waiting sequences, oldest first, while tokens, seats and blocks last.
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq):
                break  # the oldest waits for blocks; admitting younger ones would starve it
            self.block_manager.allocate(seq)  # prefix-cache hits count as computed
            self.waiting.popleft()
            self._waiting_ids = None
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            seqs.append(seq)
            scheduled.append(self._prefill_item(seq, n, self._admission_reason(seq)))
            budget -= n
        return seqs, self._output("prefill", scheduled, ())

    def _schedule_decode(self) -> tuple[list[Sequence], SchedulerOutput]:
        scheduled: list[ScheduledSequence] = []
        preempted: list[int] = []
        for seq in list(self.running):  # oldest first
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop to make room for an older one
            while not self.block_manager.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                self.block_manager.append_slot(seq)
                start = seq.num_computed_tokens
                # The token sampled last step, at position num_tokens - 1 == start. Every field,
                # in order, through tuple.__new__ (C): this is the host's hottest loop, and a
                # NamedTuple's own constructor is a slower Python function.
                scheduled.append(_record(ScheduledSequence, (
                    seq.seq_id, start, 1, True, "decode", seq.block_table, (seq.token_ids[start],), 0, ()
                )))
        # Every running sequence left runs, in order.
        return list(self.running), self._output("decode", scheduled, tuple(preempted))

    @staticmethod
    def _admission_reason(seq: Sequence) -> Reason:
        """Why `seq` leaves the waiting queue; a fork's first admission also records how it got
        its prefix."""
        if seq.parent_id is not None and seq.fork_prefix is None:
            # A fork whose parent's blocks were gone: allocate() just served what the prefix
            # cache still held, and the rest of its prefix is computed again.
            seq.fork_prefix = "prefix-cache" if seq.num_cached_tokens else "recomputed"
            return "forked"
        return "resumed" if seq.num_preemptions else "admitted"

    def _prefill_item(self, seq: Sequence, num_tokens: int, reason: Reason) -> ScheduledSequence:
        """`seq`'s next `num_tokens` uncomputed tokens as one prefill record; an admission
        carries the prefix-cache hits that allocate() just served."""
        start = seq.num_computed_tokens
        end = start + num_tokens
        admission = reason != "prefill-continues"
        cached = seq.num_cached_tokens if admission else 0
        hits = seq.block_table[: cached // self.block_manager.block_size]
        return ScheduledSequence(seq.seq_id, start, num_tokens, end == seq.num_tokens, reason, seq.block_table,
                                 tuple(seq.token_ids[start:end]), cached, hits)

    def _output(self, phase: Phase, scheduled: list[ScheduledSequence], preempted: tuple[int, ...]) -> SchedulerOutput:
        if self._waiting_ids is None:
            self._waiting_ids = tuple(map(_seq_id, self.waiting))
        waiting = self._waiting_ids
        if self.forked:  # forks without a seat wait too
            waiting = tuple(sorted((*waiting, *map(_seq_id, self.forked))))
        running = tuple(map(_seq_id, self.running))
        return SchedulerOutput(phase, tuple(scheduled), preempted, waiting, running)

    def _preempt(self, seq: Sequence) -> None:
        """Free all of `seq`'s blocks and queue it to be recomputed from scratch."""
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.running.remove(seq)
        # Keep the waiting queue in arrival (id) order. A victim was admitted before every
        # waiting request, so it usually goes to the front; but a fork starts without queueing,
        # and may be younger than some of them.
        if self.waiting and self.waiting[0].seq_id < seq.seq_id:
            self.waiting.insert(bisect.bisect(self.waiting, seq.seq_id, key=_seq_id), seq)
        else:
            self.waiting.appendleft(seq)
        self._waiting_ids = None

    def update_after_step(self, batch: SchedulerOutput) -> None:
        """Record the K/V the step computed: advance each sequence and hash its full blocks."""
        assert len(self.in_flight) == len(batch.scheduled), "update_after_step takes the last plan"
        for seq, item in zip(self.in_flight, batch.scheduled):
            before = seq.num_computed_tokens
            seq.num_computed_tokens = item.end
            self.block_manager.commit_full_blocks(seq, before)

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.block_manager.free(seq)
        self.running.remove(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a request wherever it is, giving back its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.finish(seq, "abort")
        elif seq.status is SequenceStatus.WAITING:
            if seq.block_table:  # a fork that has not started yet
                self.forked.remove(seq)
                self.block_manager.free(seq)
            else:
                self.waiting.remove(seq)
                self._waiting_ids = None
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"

