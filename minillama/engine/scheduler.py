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
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from minillama.engine.block_manager import BlockManager
from minillama.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSequence:
    """One sequence's share of a step: compute tokens [start, start + num_tokens)."""

    seq: Sequence
    start: int
    num_tokens: int
    num_cached_tokens: int = 0  # prefix-cache hits served at admission in this step
    # Does this step produce the sequence's next token (all its tokens are then computed)?
    # Fixed when scheduled: once the token is appended, end == num_tokens no longer holds.
    samples: bool = field(init=False)

    def __post_init__(self) -> None:
        self.samples = self.end == self.seq.num_tokens

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass
class SchedulerOutput:
    """What one step runs. The model runner consumes it; observers receive it as it is."""

    phase: Literal["prefill", "decode"]
    scheduled: list[ScheduledSequence]
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)

    @cached_property
    def sampling(self) -> list[ScheduledSequence]:
        """The sequences that produce a token this step, in batch order (the logits' rows)."""
        return [s for s in self.scheduled if s.samples]


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()  # in arrival order
        self.running: list[Sequence] = []  # in arrival order: the last one is preempted first

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        batch = self._schedule_prefill()
        return batch if batch.scheduled else self._schedule_decode()

    def _schedule_prefill(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSequence] = []
        # 1. Running sequences whose prompt did not fit one step continue first. A sequence
        #    with a single token left goes to decode instead, which computes exactly that.
        for seq in self.running:
            if seq.num_uncomputed_tokens > 1 and budget > 0:
                n = min(seq.num_uncomputed_tokens, budget)
                scheduled.append(ScheduledSequence(seq, seq.num_computed_tokens, n))
                budget -= n
        # 2. Admit waiting sequences, oldest first, while tokens, seats and blocks last.
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq):
                break  # the oldest waits for blocks; admitting younger ones would starve it
            self.block_manager.allocate(seq)  # prefix-cache hits count as computed
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            scheduled.append(ScheduledSequence(seq, seq.num_computed_tokens, n, seq.num_cached_tokens))
            budget -= n
        return SchedulerOutput("prefill", scheduled)

    def _schedule_decode(self) -> SchedulerOutput:
        scheduled: list[ScheduledSequence] = []
        preempted: list[Sequence] = []
        for seq in list(self.running):  # oldest first
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop to make room for an older one
            while not self.block_manager.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                self.block_manager.append_slot(seq)
                scheduled.append(ScheduledSequence(seq, seq.num_computed_tokens, 1))
        return SchedulerOutput("decode", scheduled, preempted)

    def _preempt(self, seq: Sequence) -> None:
        """Free all of `seq`'s blocks and queue it to be recomputed from scratch."""
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.running.remove(seq)
        # Victims are taken latest arrival first, so putting each at the front keeps the
        # waiting queue in arrival order.
        self.waiting.appendleft(seq)

    def update_after_step(self, batch: SchedulerOutput) -> None:
        """Record the K/V the step computed: advance each sequence and hash its full blocks."""
        for item in batch.scheduled:
            before = item.seq.num_computed_tokens
            item.seq.num_computed_tokens = item.end
            self.block_manager.commit_full_blocks(item.seq, before)

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
            self.waiting.remove(seq)
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
