"""Step details: everything the engine did in one step, as tables.

Read it top to bottom as the step ran: the scheduler decided (the batch, with why each
sequence is in it: admitted, resumed, its prefill continues, decode, or forked; who was
preempted, the queues, and why: each waiting, preempted, admitted or chunked sequence's cause as
the scheduler recorded it), the model ran the batch (how many tokens: a prefill step computes many per sequence, a
decode step one each), the sampler drew tokens, and the KV cache ended as shown. The timings
split the step's wall time into the engine's phases; "recorder" is what recording cost.

Capture: a decode step copies each layer's queries out inside the forward (inside its CUDA
graph on a GPU), so recording attention there costs a few copies. A prefill that computes a
traced sequence, or any step with the logit lens on, calls a Python hook at every layer: on a
GPU that step "ran eagerly", without a CUDA graph, and the timings show it.
"""

from __future__ import annotations

from inspector.trace.model import StepRecord, Trace
from inspector.trace.why_text import eviction_text, why_of
from inspector.views.figure import step_problem
from inspector.views.markup import empty_panel, escape, panel, seq_label, step_of
from inspector.views.tokens import chip_text


def step_details_html(trace: Trace, index: int) -> str:
    """The details of step `index`."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_panel(problem)
    step = trace.steps[index]
    s = step.schedule
    num_tokens = sum(x.num_tokens for x in s.scheduled)
    head = (
        f'<div class="mlv-caption"><b>{step_of(index, len(trace.steps))}</b> (engine step {step.engine_step}) · '
        f"<b>{escape(s.phase)}</b> · {len(s.scheduled)} sequence(s), {num_tokens} token(s) in the batch</div>"
    )
    sections = [head, _batch(trace, step), _queues(step), _why(step), _kv(trace, step), _capture(step), _timings(trace, step),
                _events(trace, index)]
    return panel("".join(sections), "mlv-details")


def _batch(trace: Trace, step: StepRecord) -> str:
    rows = []
    for x in step.schedule.scheduled:
        token = step.token_of(x.seq_id)
        if token is not None:
            text = chip_text(token.text_delta) or f"[{token.token_id}]"
            sampled = f'<span class="tok">{text}</span>' + (f" (finished: {escape(token.finish_reason)})"
                                                            if token.finish_reason else "")
        else:
            sampled = "—" if not x.samples else "?"
        rows.append(
            f"<tr><td>{seq_label(x.seq_id)}</td><td>{escape(x.reason or '')}</td>"
            f"<td>{x.start}..{x.start + x.num_tokens - 1}</td>"
            f"<td>{x.num_tokens}</td><td>{x.num_cached_tokens}</td><td>{'yes' if x.samples else 'no'}</td>"
            f"<td>{sampled}</td></tr>"
        )
    # A new sample or beam draws its first token from the row of the sequence it was forked from
    # in this step: it computed nothing (it shares that sequence's blocks), so it is not in the batch.
    scheduled = {x.seq_id for x in step.schedule.scheduled}
    for token in step.tokens:
        if token.seq_id not in scheduled:
            seq = trace.sequences.get(token.seq_id)
            parent = seq.parent_id if seq is not None else None
            source = f"drawn from {seq_label(parent)}'s logits" if parent is not None else "drawn"
            text = chip_text(token.text_delta) or f"[{token.token_id}]"
            rows.append(f'<tr><td>{seq_label(token.seq_id)}</td><td colspan="5">{source}, nothing computed</td>'
                        f'<td><span class="tok">{text}</span></td></tr>')
    total = sum(x.num_tokens for x in step.schedule.scheduled)
    return (
        "<h4>Batch</h4><table><tr><th>seq</th><th>why</th><th>positions</th><th>tokens</th><th>from prefix cache</th>"
        f"<th>samples</th><th>sampled token</th></tr>{''.join(rows)}"
        f"<tr><th>total</th><td></td><td></td><td><b>{total}</b></td><td></td><td></td><td></td></tr></table>"
    )


def _queues(step: StepRecord) -> str:
    s = step.schedule

    def ids(seq_ids: list[int]) -> str:
        return ", ".join(seq_label(i) for i in seq_ids) or "none"

    return (
        f"<h4>Scheduler</h4><table><tr><th>preempted</th><td>{ids(s.preempted)}</td></tr>"
        f"<tr><th>running</th><td>{ids(s.running)}</td></tr><tr><th>waiting</th><td>{ids(s.waiting)}</td></tr></table>"
    )


def _why(step: StepRecord) -> str:
    """A line per sequence the scheduler decided something about, and the blocks it evicted."""
    s = step.schedule
    seq_ids = dict.fromkeys(r.seq_id for records in (s.preemptions, s.waits, s.prefix, s.chunks) for r in records)
    rows = [f"<tr><td>{seq_label(i)}</td><td>{'<br>'.join(map(escape, why_of(s, i)))}</td></tr>" for i in seq_ids]
    rows += [f"<tr><td>block {e.block_id}</td><td>{escape(eviction_text(e))}</td></tr>" for e in s.evictions]
    if not rows:
        return ""
    return f"<h4>Why</h4><table>{''.join(rows)}</table>"


def _kv(trace: Trace, step: StepRecord) -> str:
    kv = step.kv
    hits = int(kv.hit.sum())
    return (
        f"<h4>KV cache</h4><table><tr><th>blocks in use</th><td>{kv.num_used} of {kv.num_blocks} "
        f"({100 * kv.usage:.1f}%), {trace.engine.block_size} tokens each</td></tr>"
        f"<tr><th>free</th><td>{kv.num_free} ({kv.num_cached_free} of them still hold a cached prefix)</td></tr>"
        f"<tr><th>prefix-cache hits</th><td>{hits} block(s) in this step</td></tr></table>"
    )


def _capture(step: StepRecord) -> str:
    parts = []
    if step.attention_seqs:
        seqs = ", ".join(seq_label(i) for i in step.attention_seqs)
        how = "a hook at every layer" if step.layer_hooks else "copied out inside the forward"
        parts.append(f"queries and keys of {seqs} recorded ({how})")
    if step.layer_hooks:
        parts.append("ran eagerly: per-layer hooks (on a GPU, without a CUDA graph)")
    else:
        parts.append("no per-layer hook: CUDA graphs where available")
    return f"<h4>Capture</h4><div>{'; '.join(parts)}</div>"


def _timings(trace: Trace, step: StepRecord) -> str:
    t = step.timings
    parts = [("schedule", t.schedule_ms), ("prepare", t.prepare_ms), ("forward", t.forward_ms),
             ("sample", t.sample_ms), ("wall", t.wall_ms), ("recorder", t.record_ms)]
    if trace.model.tensor_parallel_size > 1:  # of which joining the ranks: all-reduces, gathers, messages
        parts.append((f"all-reduce etc. ({trace.model.tensor_parallel_size} ranks)", t.collective_ms))
    head = "".join(f"<th>{name}</th>" for name, _ in parts)
    cells = "".join(f"<td>{ms:.2f}</td>" for _, ms in parts)
    return f"<h4>Timings (ms)</h4><table><tr>{head}</tr><tr>{cells}</tr></table>"


def _events(trace: Trace, index: int) -> str:
    events = trace.events_at(index)
    if not events:
        return ""
    items = "".join(f"<li>{escape(e.kind)}: {escape(e.message)}</li>" for e in events)
    return f"<h4>Events</h4><ul>{items}</ul>"
