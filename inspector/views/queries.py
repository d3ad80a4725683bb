"""Which query the attention views show at a step.

A step computes a range of positions for each sequence in its batch: a prompt chunk in a
prefill step, one position in a decode step. Each computed position has a query, which looks at
the keys of every position up to its own. The views show the *last* position the cursor step
computed for the sequence (in a prefill step, the prompt's last token, whose query produces the
first output token). When the sequence was not in the cursor step's batch (another sequence's
prefill ran alone, or it was preempted), they show the last query it computed before, and say so.
Every view that shows a query asks cursor_query, so the attention panel and the KV cache's
overlay always name the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.trace.model import NotRecorded, ScheduledRecord, Trace


@dataclass(frozen=True)
class Query:
    position: int  # the query's position in the sequence
    step: int  # the step that computed it (the cursor step, or an earlier one)
    scheduled: ScheduledRecord  # the sequence's share of that step (its block table, positions)


def scheduled_in(trace: Trace, seq_id: int, index: int) -> ScheduledRecord | None:
    """Sequence `seq_id`'s share of step `index`, or None when it was not in the batch."""
    return next((x for x in trace.steps[index].schedule.scheduled if x.seq_id == seq_id), None)


def cursor_query(trace: Trace, seq_id: int, index: int) -> Query:
    """The last query position computed for `seq_id` at step `index`, or before it.
    Raises NotRecorded when the sequence is unknown or computed nothing by then."""
    if seq_id not in trace.sequences:
        raise NotRecorded(f"there is no sequence #{seq_id} in this trace")
    for step in range(index, -1, -1):
        x = scheduled_in(trace, seq_id, step)
        if x is not None:
            return Query(x.start + x.num_tokens - 1, step, x)
    raise NotRecorded(f"sequence #{seq_id} computed no token up to step {index}")


def query_note(trace: Trace, seq_id: int, index: int, query: Query) -> str:
    """What a title adds after the query's position: the step that computed it, when not the
    cursor step `index`; else whether the stored query is a later recomputation of it."""
    if query.step != index:
        return f" (from step {query.step}: #{seq_id} computed nothing in this step)"
    return recomputed_note(trace, seq_id, query)


def recomputed_note(trace: Trace, seq_id: int, query: Query) -> str:
    """A note when the stored query is not the one this step computed: after a preemption, the
    sequence computed the same position again later, and the store keeps the latest."""
    store = trace.attention.get(seq_id)
    if store is None or query.position >= store.length:
        return ""
    stored = int(store.q_step[query.position])
    if stored > query.step:
        return f" (as recomputed at step {stored}, after a preemption)"
    return ""
