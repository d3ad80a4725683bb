"""What each sequence was doing at each step, read back from the scheduler's decisions.

The trace records, per step, the scheduler's batch (which sequences computed which tokens),
who it preempted, and its queues right after deciding. A sequence's state at step i follows:

    absent     it was not added yet (i < its added_step)
    waiting    in the waiting queue: holds no KV blocks, computes nothing
    prefill    in the batch of a prefill step: computing prompt tokens (a chunk of them, or
               prompt + generated tokens again after a preemption)
    decode     in the batch of a decode step: computing the one token it sampled last step
    idle       running (it holds its KV blocks) but left out of this step's batch: a prefill
               step runs only prompts, so the decoding sequences sit it out
    preempted  evicted in this step to free blocks for older sequences; it waits from the
               next step on, and will recompute everything it had
    finished   after the step that produced its last token (that step itself shows what it
               computed), from the step before which it was aborted, or after the step whose
               beam search pruned it (dropped it for better beams)

The scheduler never mixes prefill and decode in one step, so the step's phase is the state
of every sequence in its batch.
"""

from __future__ import annotations

from inspector.trace.model import Trace

STATES = ("absent", "waiting", "prefill", "decode", "idle", "preempted", "finished")


def finish_steps(trace: Trace) -> dict[int, int]:
    """Sequence id -> the first step index at which it counts as finished: the step after the
    one that produced its last token or pruned it, or the step before which it was aborted."""
    result: dict[int, int] = {}
    for seq_id, seq in trace.sequences.items():
        if seq.pruned_step is not None:
            result[seq_id] = seq.pruned_step + 1
        elif seq.token_steps:
            last = trace.steps[seq.token_steps[-1]].token_of(seq_id)
            if last is not None and last.finish_reason is not None:
                result[seq_id] = seq.token_steps[-1] + 1
    for event in trace.events:  # an abort is recorded before the step with its index
        if event.kind == "abort" and event.seq_id is not None:
            result[event.seq_id] = min(result.get(event.seq_id, event.step), event.step)
    return result


def sequence_states(trace: Trace) -> dict[int, list[str]]:
    """Sequence id -> its state (one of STATES) at each step index, for every sequence in id order."""
    done = finish_steps(trace)
    states = {seq_id: ["absent"] * len(trace.steps) for seq_id in sorted(trace.sequences)}
    for i, step in enumerate(trace.steps):
        s = step.schedule
        scheduled = {x.seq_id for x in s.scheduled}
        preempted, running = set(s.preempted), set(s.running)
        for seq_id, row in states.items():
            if i < trace.sequences[seq_id].added_step:
                continue  # stays "absent"
            if i >= done.get(seq_id, len(trace.steps)):
                row[i] = "finished"
            elif seq_id in preempted:
                row[i] = "preempted"
            elif seq_id in scheduled:
                row[i] = s.phase  # "prefill" or "decode"
            elif seq_id in running:
                row[i] = "idle"
            else:
                row[i] = "waiting"
    return states


def status_at(trace: Trace, seq_id: int, index: int, states: dict[int, list[str]]) -> str:
    """The coarse status the text panel's badge shows: waiting, running, preempted, finished,
    pruned or absent. Unlike sequence_states, a sequence is already "finished" at the step that
    produced its last token, and "pruned" at the step that pruned it: the panel shows that
    token, and why it was the last."""
    pruned = trace.sequences[seq_id].pruned_step
    if pruned is not None and index >= pruned:
        return "pruned"
    state = states[seq_id][index]
    token = trace.steps[index].token_of(seq_id)
    if state == "finished" or (token is not None and token.finish_reason is not None):
        return "finished"
    if state in ("prefill", "decode", "idle"):
        return "running"
    return state
