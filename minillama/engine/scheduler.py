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

The beams of a beam search (minillama/engine/beam_search.py) advance together, and the scheduler
keeps them so: a search's first beam is admitted only with seats for all its beams (reserved
until it makes them), preempting a beam preempts its whole search, a preempted search is admitted
again whole, and a beam's prefill stops one token short, so it samples only in a decode step,
with its siblings.

The decision is published as a SchedulerOutput, an immutable value: the model runner builds
the step's tensors from it, and observers read it, so what they see is exactly what ran. The
live Sequence objects stay inside the scheduler.

With it go the causes (minillama/engine/causes.py), made where each decision is made: why each
waiting sequence waits, why each preemption happened and who was chosen, what budget a chunked
prefill had, what each admission's prefix-cache lookup found and why it stopped, and which cached
blocks were evicted for whom. A decode step with nobody waiting makes none.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Literal, NamedTuple

from minillama.engine.block_manager import BlockManager
from minillama.engine.causes import ChunkCause, Eviction, PreemptCause, PrefixCause, WaitCause
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
    # Why (causes.py): one per waiting id (but those preempted in this step: see preemptions),
    # one per preempted id, one per prefill cut short by the budget, one per admission with
    # blocks allocated (its prefix-cache lookup), and the cached blocks reused since last step.
    waits: tuple[WaitCause, ...] = ()
    preemptions: tuple[PreemptCause, ...] = ()
    chunks: tuple[ChunkCause, ...] = ()
    prefix: tuple[PrefixCause, ...] = ()
    evictions: tuple[Eviction, ...] = ()

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
        # Seats held for the beams a search's running first beam will make: its id -> how many.
        self.reserved_seats: dict[int, int] = {}
        # Running beams whose search's selection is in flight (async scheduling, LLMEngine): they
        # sit out the decode steps planned meanwhile, since their next beams are not known yet.
        self.selecting: set[int] = set()
        # The step being planned: why the head of the queue could not start (None: it did, or
        # nobody waits), the causes gathered so far, and the last waits made, reused while the
        # queue and the head's cause stay the same (most decode steps).
        self._head_cause: WaitCause | None = None
        self._preemptions: list[PreemptCause] = []
        self._late_preemptions: list[PreemptCause] = []  # preempt_search's, for the next step
        self._chunks: list[ChunkCause] = []
        self._prefix: list[PrefixCause] = []
        self._waits: tuple[tuple[int, ...], WaitCause | None, tuple[WaitCause, ...]] = ((), None, ())

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
        if self._free_seats() > 0:
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
        else:
            self.forked.append(seq)

    def add_beam(self, seq: Sequence) -> None:
        """A beam its search just forked, holding its parent's blocks and one uncomputed token:
        it decodes from the next step with its siblings, in a seat its search holds (reserved
        for it, or left by a beam the same selection pruned or finished)."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def release_seats(self, seq_id: int) -> None:
        """Give back the seats reserved for the beams of search `seq_id` (it has made them)."""
        self.reserved_seats.pop(seq_id, None)

    def _free_seats(self) -> int:
        return self.max_num_seqs - len(self.running) - sum(self.reserved_seats.values())

    @staticmethod
    def _seats_needed(seq: Sequence) -> int:
        """A beam search's first beam takes seats for all its beams; anything else one."""
        return seq.params.beam_width if seq.beam_of is not None and not seq.is_lockstep_beam else 1

    def _start(self, seq: Sequence) -> None:
        """`seq` joins the running sequences (a first beam with its reserved seats)."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        seats = self._seats_needed(seq)
        if seats > 1:
            self.reserved_seats[seq.seq_id] = seats - 1

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.forked)

    @property
    def holders(self) -> list[Sequence]:
        """The sequences holding blocks: the running ones, then the forks not yet started."""
        return [*self.running, *self.forked] if self.forked else self.running

    def schedule(self, split_searches: bool = False) -> SchedulerOutput:
        """The next step's plan. With split_searches (async scheduling with beam searches
        running, LLMEngine) a decode step takes at most half of the running beams, whole
        searches, so the searches fall into two halves whose steps alternate (see
        _sitting_out)."""
        self._head_cause = None
        if self._preemptions or self._chunks or self._prefix or self._late_preemptions:
            # Preemptions made after the last step (preempt_search) are this step's first.
            self._preemptions, self._chunks, self._prefix = self._late_preemptions, [], []
            self._late_preemptions = []
        seqs, batch = self._schedule_prefill()
        if not batch.scheduled:
            seqs, batch = self._schedule_decode(split_searches)
            if not batch.scheduled and batch.preempted:
                # Every sequence the decode step would run gave its blocks up: the one running
                # sequence, the latest arrival, preempted itself for a block that a fork waiting
                # for a seat holds. A plan of preemptions alone would run nothing (the engine
                # stopped there, and no observer saw them): the step admits what they freed
                # room for instead, listing them as its preempted.
                self._head_cause = None
                ids = tuple(p.seq_id for p in self._preemptions if p.rule != "search-forks")
                seqs, batch = self._schedule_prefill(ids)
        self.in_flight = seqs
        return batch

    def _schedule_prefill(self, preempted: tuple[int, ...] = ()) -> tuple[list[Sequence], SchedulerOutput]:
        budget = self.max_num_batched_tokens
        seqs: list[Sequence] = []
        scheduled: list[ScheduledSequence] = []
        # 1. Running sequences whose prompt did not fit one step continue first. A sequence
        #    with a single token left goes to decode instead, which computes exactly that.
        for seq in self.running:
            if seq.num_uncomputed_tokens > 1 and budget > 0:
                n = self._take(seq, seq.prefill_end - seq.num_computed_tokens, budget)
                seqs.append(seq)
                scheduled.append(self._prefill_item(seq, n, "prefill-continues"))
                budget -= n
        # 2. Forks holding shared blocks start next: they need a seat and tokens, no blocks.
        while self.forked and budget > 0 and self._free_seats() >= self._seats_needed(self.forked[0]):
            seq = self.forked.popleft()
            self._start(seq)
            n = self._take(seq, seq.num_uncomputed_tokens, budget)
            seqs.append(seq)
            scheduled.append(self._prefill_item(seq, n, "forked"))
            budget -= n
        # 3. Admit waiting sequences, oldest first, while tokens, seats and blocks last. A
        #    preempted beam search is admitted whole, its beams side by side.
        while self.waiting and budget > 0:
            head = self.waiting[0]
            group = [s for s in self.waiting if s.beam_of == head.beam_of] if head.is_lockstep_beam else [head]
            seats, free_seats = max(len(group), self._seats_needed(head)), self._free_seats()
            if free_seats < seats:
                self._head_cause = WaitCause(head.seq_id, "seats", seats, free_seats)
                break
            needs, free = self.block_manager.blocks_needed_all(group), self.block_manager.num_free_blocks
            if needs > free:  # the oldest waits for blocks; admitting younger ones would starve it
                self._head_cause = WaitCause(head.seq_id, "blocks", needs, free)
                break
            for seq in group:
                # Prefix-cache hits count as computed.
                self._prefix.append(self.block_manager.allocate(seq))
                self.waiting.remove(seq)
                self._start(seq)
                n = self._take(seq, seq.prefill_end - seq.num_computed_tokens, budget)
                if n > 0:  # a beam may find all but its last token in the prefix cache, or no budget left
                    seqs.append(seq)
                    scheduled.append(self._prefill_item(seq, n, self._admission_reason(seq)))
                    budget -= n
            self._waiting_ids = None
        if budget <= 0 and (self.waiting or self.forked):
            head = self.waiting[0] if self.waiting else self.forked[0]
            self._head_cause = WaitCause(head.seq_id, "tokens", by=tuple(map(_seq_id, scheduled)))
        return seqs, self._output("prefill", scheduled, preempted)

    def _take(self, seq: Sequence, remaining: int, budget: int) -> int:
        """The tokens of `remaining` that `seq` computes this step with `budget` left; a prefill
        cut short says so."""
        if remaining > budget:
            self._chunks.append(ChunkCause(seq.seq_id, budget, remaining))
            return budget
        return remaining

    def _schedule_decode(self, split_searches: bool) -> tuple[list[Sequence], SchedulerOutput]:
        scheduled: list[ScheduledSequence] = []
        preempted: list[int] = []
        sitting_out = self._sitting_out() if split_searches else self.selecting
        for seq in list(self.running):  # oldest first
            if seq.status is not SequenceStatus.RUNNING or (sitting_out and seq.seq_id in sitting_out):
                continue  # preempted earlier in this loop to make room for an older one, or sitting out
            while not self.block_manager.can_append(seq):
                preempted += self._preempt_latest(seq)
                if seq.status is not SequenceStatus.RUNNING:
                    break  # it was the latest arrival (or a beam of its search)
            if seq.status is SequenceStatus.RUNNING:
                self.block_manager.append_slot(seq)
                start = seq.num_computed_tokens
                # The token sampled last step, at position num_tokens - 1 == start. Every field,
                # in order, through tuple.__new__ (C): this is the host's hottest loop, and a
                # NamedTuple's own constructor is a slower Python function.
                scheduled.append(_record(ScheduledSequence, (
                    seq.seq_id, start, 1, True, "decode", seq.block_table, (seq.token_ids[start],), 0, ()
                )))
        if preempted and len(scheduled) > len(self.running):  # a search preempted whole took an older beam
            running = {seq.seq_id for seq in self.running}
            scheduled = [item for item in scheduled if item.seq_id in running]
        # Every running sequence left runs, in order (but those sitting out).
        runs = [seq for seq in self.running if seq.seq_id not in sitting_out] if sitting_out else list(self.running)
        return runs, self._output("decode", scheduled, tuple(preempted))

    def _sitting_out(self) -> set[int]:
        """The running beams a decode step leaves out when searches are split: those whose
        selection is in flight (`selecting`), and the searches, whole, past half of all running
        beams (any but the first search to go in).

        Why: a search's beams sit out the step planned while their selection is in flight, so
        searches fall into two sets whose steps alternate, and the host applies one set's
        selection (its forks and prunes, the costly part) while the GPU runs the other's step.
        Which set a search joins depends on the prefill step that finished its prompt, and the
        sets can be far from even (200 and 56 beams): then the host works a whole selection of
        the large set while the GPU runs the small set's short step, and waits for the large
        set's step after. Capping a step at half the beams evens the sets within two steps."""
        selecting = self.selecting
        sizes: dict[int, int] = {}  # search -> its beams that may run, in running order
        for seq in self.running:
            if seq.beam_of is not None and seq.seq_id not in selecting:
                sizes[seq.beam_of] = sizes.get(seq.beam_of, 0) + 1
        half = (sum(sizes.values()) + len(selecting) + 1) // 2
        taken, deferred = 0, set()
        for search, size in sizes.items():
            if taken and taken + size > half:
                deferred.add(search)
            else:
                taken += size
        if not deferred:
            return selecting
        return selecting | {seq.seq_id for seq in self.running if seq.beam_of in deferred}

    def _preempt_latest(self, needer: Sequence) -> list[int]:
        """Preempt the latest arrival, and with a beam all the beams of its search (they advance
        together), to make room for `needer`'s next token; returns their ids."""
        assert not self.selecting, "no preemption while a selection is in flight (LLMEngine._overlaps)"
        victim = self.running[-1]
        group = [s for s in self.running if s.beam_of == victim.beam_of] if victim.is_lockstep_beam else [victim]
        rule = "whole-search" if victim.is_lockstep_beam else "latest-arrival"
        for seq in reversed(group):
            self._preempt(seq)
            self._preemptions.append(PreemptCause(seq.seq_id, needer.seq_id, needer.num_tokens - 1, rule))
        return [seq.seq_id for seq in reversed(group)]

    def preempt_search(self, beams: list[Sequence]) -> None:
        """Send a beam search's running beams back to the waiting queue (LLMEngine: its first
        selection, after the step, found too few blocks for its forks). The next step's output
        lists them first among its preempted, each with the position of its new token."""
        for seq in beams:
            self._preempt(seq)
            self._late_preemptions.append(PreemptCause(seq.seq_id, seq.beam_of, seq.num_tokens - 1, "search-forks"))

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
        if self._preemptions and self._preemptions[0].rule == "search-forks":  # after the last step: first
            preempted = (*(p.seq_id for p in self._preemptions if p.rule == "search-forks"), *preempted)
        if self._waiting_ids is None:
            self._waiting_ids = tuple(map(_seq_id, self.waiting))
        waiting = self._waiting_ids
        if self.forked:  # forks without a seat wait too
            waiting = tuple(sorted((*waiting, *map(_seq_id, self.forked))))
        running = tuple(map(_seq_id, self.running))
        bm = self.block_manager
        evictions = bm.take_evictions() if bm.new_evictions else ()
        return SchedulerOutput(phase, tuple(scheduled), preempted, waiting, running, self._wait_causes(waiting),
                               tuple(self._preemptions), tuple(self._chunks), tuple(self._prefix), evictions)

    def _wait_causes(self, waiting: tuple[int, ...]) -> tuple[WaitCause, ...]:
        """A cause per waiting id: the head's, as the plan found it; the others queue behind it
        (a sequence preempted in this step has its PreemptCause instead)."""
        head = self._head_cause
        if not waiting or (head is None and not self.forked):
            return ()
        last_waiting, last_head, last_causes = self._waits
        if last_waiting is waiting and last_head == head and not self.forked:
            return last_causes  # a decode step like the one before
        victims = {cause.seq_id for cause in self._preemptions}
        # A fork without a seat waits apart from the queue, for a seat (or, like all, tokens).
        forks = {seq.seq_id: self._seats_needed(seq) for seq in self.forked}
        free_seats = self._free_seats()

        def cause(seq_id: int) -> WaitCause:
            if head is not None and (seq_id == head.seq_id or (seq_id in forks and head.kind == "tokens")):
                return head._replace(seq_id=seq_id)
            if seq_id in forks:
                return WaitCause(seq_id, "seats", forks[seq_id], free_seats)
            return WaitCause(seq_id, "behind", head=head.seq_id if head is not None else -1)

        causes = tuple(cause(seq_id) for seq_id in waiting if seq_id not in victims)
        self._waits = (waiting, head, causes)
        return causes

    def _preempt(self, seq: Sequence) -> None:
        """Free all of `seq`'s blocks and queue it to be recomputed from scratch."""
        self.block_manager.free(seq)
        if self.reserved_seats:
            self.reserved_seats.pop(seq.seq_id, None)
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
        """Record the K/V the step computed: advance each sequence and hash its full blocks. A
        sequence that finished meanwhile is left as it is: with async scheduling (in_flight.py)
        the tokens of the step before, read after this step was launched, may have ended it."""
        assert len(self.in_flight) == len(batch.scheduled), "update_after_step takes the last plan"
        for seq, item in zip(self.in_flight, batch.scheduled):
            if seq.status is SequenceStatus.FINISHED:
                continue
            before = seq.num_computed_tokens
            seq.num_computed_tokens = item.end
            self.block_manager.commit_full_blocks(seq, before)

    def finish(self, seq: Sequence, reason: str, free_blocks: bool = True) -> None:
        """`seq` is done: its blocks go back (with free_blocks False the caller takes them: a
        pruned beam's, handed to a fork, BlockManager.fork). It is running, or in the waiting
        queue: not admitted yet (an abort), or preempted while the step that sampled its last
        token was in flight (async scheduling, in_flight.py)."""
        if seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
            self._waiting_ids = None
        else:
            self.running.remove(seq)
        seq.finish(reason)
        if free_blocks:
            self.block_manager.free(seq)
        if self.reserved_seats:
            self.reserved_seats.pop(seq.seq_id, None)

    def abort(self, seq: Sequence) -> None:
        """Drop a request wherever it is, giving back its blocks."""
        if seq.status is SequenceStatus.WAITING and seq.block_table:  # a fork that has not started yet
            self.forked.remove(seq)
            self.block_manager.free(seq)
            seq.finish("abort")
        elif seq.status is not SequenceStatus.FINISHED:
            self.finish(seq, "abort")

