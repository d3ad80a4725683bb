"""check_queues: the scheduler's guarantees about its queues, checked on a loaded trace.

Every step's ScheduleRecord is the scheduler's decision and its queues right after it
(minillama/engine/scheduler.py). Whatever run recorded it, the scheduler kept these rules, so a
file that breaks one was not recorded, and the views would draw what no engine did (a
sequence both running and waiting in the timeline, a finished one still decoding, a batch
larger than the engine's budget in the step details):

- one queue: a sequence is running or waiting, never both, and every scheduled one runs;
- arrival and end: a sequence is queued only from the step it was added at, and never after
  the step that ended it (its last token, or its beam search pruning it);
- the budget: a step runs at most max_num_seqs sequences; a prefill step computes at most
  max_num_batched_tokens tokens, a decode step one token a sequence, which it samples; no
  sequence computes past the engine's max_model_len;
- blocks: a running sequence holds the K/V it computed since it was last admitted (its block
  table in the step's KV snapshot is not empty), and a sequence preempted in a step, and not
  admitted again in it, holds no block at that step's end. One exception: a beam search that
  finds too few blocks for its forks after a step preempts its beams then, before the step's
  snapshot, and the next step's record lists them first among its preempted (rule
  "search-forks", Scheduler.preempt_search): such a beam runs in its step and holds no block
  at the step's end;
- order: the engine's step counter increases from step to step.

(That each scheduled sequence computes only positions it has, and samples exactly when it
computes its last one, validate.py checks with the positions.)

Loading cost stays linear in the trace: one pass over the steps, each step's checks set
operations over its own queues (a constant number of Python calls a step), and a call or
two a sequence (tests/test_trace_load_cost.py counts them).
"""

from __future__ import annotations

from inspector.trace.model import StepRecord, Trace, TraceError

# The rules, as the refusals name them.
ONE_QUEUE = "a sequence is running or waiting, never both, and every scheduled sequence runs"
ARRIVAL = "a sequence is queued only from the step it was added at"
ENDED = "a sequence that ended is never queued again"
BUDGET = "a step runs at most max_num_seqs sequences"
TOKENS = "a prefill step computes at most max_num_batched_tokens tokens"
DECODE = "a decode step computes, and samples, one token of each sequence it runs"
LENGTH = "no sequence computes past max_model_len"
HOLDS = "a running sequence holds blocks for the tokens it computed since it was admitted"
PREEMPTED = "a preempted sequence holds no block"
ORDER = "the engine's step counter increases from step to step"


def check_queues(trace: Trace) -> None:
    """TraceError naming the first step, sequence and rule (above) that the trace breaks."""
    engine = trace.engine
    # A sequence -> the step that ended it: its last token, when that finished it (validate.py
    # checked that its finish_reason is its last token's), or the step its beam search pruned
    # it in, whichever came first. (No call a sequence but for the pruned: the cost above.)
    ended: dict[int, int] = {}
    for seq_id, seq in trace.sequences.items():
        if seq.pruned_step is not None:
            last = trace.steps[seq.token_steps[-1]].token_of(seq_id) if seq.token_steps else None
            finished = last is not None and last.finish_reason is not None
            ended[seq_id] = min(seq.token_steps[-1], seq.pruned_step) if finished else seq.pruned_step
        elif seq.token_steps and seq.finish_reason is not None and seq.finish_reason != "abort":
            ended[seq_id] = seq.token_steps[-1]
    first_queued: dict[int, int] = {}  # a sequence -> the first step that queued it
    last_queued: dict[int, int] = {}  # a sequence -> the last step that queued it
    computed: dict[int, int] = {}  # a running sequence -> its positions computed since it was admitted
    previous = -1
    for number, step in enumerate(trace.steps):
        where, s = f"step {step.index}", step.schedule
        if step.engine_step <= previous:
            raise TraceError(f"{where}: engine step {step.engine_step} follows engine step {previous}; {ORDER}")
        previous = step.engine_step
        running, waiting = set(s.running), set(s.waiting)
        _none(running & waiting, f"{where}: sequence {{}} is both running and waiting; {ONE_QUEUE}")
        _none({x.seq_id for x in s.scheduled} - running, f"{where}: sequence {{}} is scheduled but not running; {ONE_QUEUE}")
        for queue in (s.running, s.waiting):
            for seq_id in queue:
                if seq_id not in first_queued:
                    first_queued[seq_id] = step.index
                last_queued[seq_id] = step.index
        _check_budget(step, engine.max_num_seqs, engine.max_num_batched_tokens, engine.max_model_len, where)
        for x in s.scheduled:
            computed[x.seq_id] = x.start + x.num_tokens
        for seq_id in s.preempted:
            computed.pop(seq_id, None)
        after_the_step = trace.steps[number + 1].schedule.preemptions if number + 1 < len(trace.steps) else []
        released = {p.seq_id for p in after_the_step if p.rule == "search-forks"}  # before this step's snapshot
        _check_blocks(step, running - released, computed, ended, where)
    for seq_id, first in first_queued.items():  # the sequences of the queues are the trace's (validate.py)
        if first < trace.sequences[seq_id].added_step:
            raise TraceError(f"step {first}: sequence {seq_id} is queued, but it was added at step "
                             f"{trace.sequences[seq_id].added_step}; {ARRIVAL}")
        if seq_id in ended and last_queued[seq_id] > ended[seq_id]:
            raise TraceError(f"step {last_queued[seq_id]}: sequence {seq_id} is queued, but it ended at step "
                             f"{ended[seq_id]}; {ENDED}")


def _none(found: set[int], message: str) -> None:
    """TraceError saying `message` of the smallest sequence in `found`, if any."""
    if found:
        raise TraceError(message.format(min(found)))


def _check_budget(step: StepRecord, max_seqs: int, max_tokens: int, max_len: int, where: str) -> None:
    s = step.schedule
    if len(s.running) > max_seqs:
        raise TraceError(f"{where}: {len(s.running)} sequences run, over max_num_seqs {max_seqs}; {BUDGET}")
    if s.phase == "prefill":
        tokens = sum(x.num_tokens for x in s.scheduled)
        if tokens > max_tokens:
            raise TraceError(f"{where}: the prefill computes {tokens} tokens, over max_num_batched_tokens "
                             f"{max_tokens} (sequence {s.scheduled[-1].seq_id} last); {TOKENS}")
    for x in s.scheduled:
        if s.phase == "decode" and (x.num_tokens != 1 or not x.samples):
            raise TraceError(f"{where}: the decode step computes {x.num_tokens} token(s) of sequence {x.seq_id}"
                             f"{'' if x.samples else ' and samples none'}; {DECODE}")
        if x.start + x.num_tokens > max_len:
            raise TraceError(f"{where}: sequence {x.seq_id} computes up to position {x.start + x.num_tokens - 1}, "
                             f"past max_model_len {max_len}; {LENGTH}")


def _check_blocks(step: StepRecord, running: set[int], computed: dict[int, int], ended: dict[int, int],
                  where: str) -> None:
    """Who holds blocks at the step's end (its KV snapshot's non-empty tables): each running
    sequence with computed tokens, but one that ended in this step (its blocks went back);
    no sequence preempted in this step and not running again."""
    kv = step.kv
    offsets = kv.table_offsets
    held = set(kv.table_seq_ids[offsets[1:] > offsets[:-1]].tolist()) if kv.table_seq_ids.numel() else set()
    for seq_id in sorted(running.intersection(computed) - held):
        if seq_id not in ended or ended[seq_id] != step.index:
            raise TraceError(f"{where}: running sequence {seq_id} has computed {computed[seq_id]} token(s) but "
                             f"holds no block; {HOLDS}")
    _none(held.intersection(step.schedule.preempted) - running,
          f"{where}: sequence {{}} was preempted but still holds blocks; {PREEMPTED}")
