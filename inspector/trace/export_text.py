"""Readable text views of a trace: an overview, and one step in detail (python -m inspector show).

Both say why (why_text.py): the overview counts the recorded causes of waiting, preemption and
prefix-cache misses; a step lists each cause the scheduler recorded in it."""

from __future__ import annotations

from collections import Counter

from inspector.trace.arguments import instance, step_index
from inspector.trace.model import KVSnapshot, ScheduledRecord, StepRecord, TokenRecord, Trace
from inspector.trace.why_text import eviction_text, why_of


def format_overview(trace: Trace) -> str:
    m, e = instance(trace, Trace, "trace").model, trace.engine
    phases = [s.schedule.phase for s in trace.steps]
    preemptions = sum(len(s.schedule.preempted) for s in trace.steps)
    lines = [
        f"model: {m.name} ({m.num_layers} layers, {m.num_heads} heads / {m.num_kv_heads} kv heads, "
        f"head dim {m.head_dim}, {m.dtype})" + (f", weights fingerprint {m.weights_fingerprint}" if m.weights_fingerprint else ""),
        f"engine: {e.device}, {e.attention} attention, {e.num_blocks} KV blocks of {e.block_size} tokens, "
        f"prefix caching {'on' if e.prefix_caching else 'off'}" + (", CUDA graphs off" if e.enforce_eager else ""),
        f"{len(trace.steps)} steps ({phases.count('prefill')} prefill, {phases.count('decode')} decode), "
        f"{_count(len(trace.sequences), 'request')}, {_count(preemptions, 'preemption')}, "
        f"attention traced for {sorted(trace.attention)}",
    ]
    lines += _why_overview(trace)
    lines += [f"dropped: {e.message}" for e in trace.events if e.kind == "drop"]
    lines.append("sequences:")
    for seq in trace.sequences.values():
        state = seq.finish_reason or "unfinished"
        if seq.pruned_step is not None:
            state += f" at step {seq.pruned_step}"
        origin = f" <- #{seq.parent_id} at token {seq.fork_position} ({seq.fork_cause})" if seq.parent_id is not None else ""
        lines.append(
            f"  #{seq.seq_id}{origin} [{state}, {len(seq.prompt_ids)} prompt + {len(seq.output_ids)} generated tokens, "
            f"{_count(seq.num_preemptions, 'preemption')}] {_clip(seq.prompt_text)!r} -> {_clip(seq.text)!r}"
        )
    return terminal_safe("\n".join(lines))


def format_step(trace: Trace, index: int) -> str:
    """Step `index` (negative counts from the end, as Cursor.seek takes it) in detail: batch,
    tokens with their top-k, KV cache, timings. ArgumentError for a bad argument, NoSuchStep
    past either end."""
    index = step_index(index, len(instance(trace, Trace, "trace").steps))
    step = trace.steps[index]
    s = step.schedule
    lines = [
        f"step {index} of {len(trace.steps)} (engine step {step.engine_step}): {s.phase}, "
        f"{_count(len(s.scheduled), 'sequence')}, {_count(sum(x.num_tokens for x in s.scheduled), 'token')}",
        "scheduler",
        *(f"  {_scheduled(x)}" for x in s.scheduled),
        f"  running: {s.running}   waiting: {s.waiting}" + (f"   preempted: {s.preempted}" if s.preempted else ""),
    ]
    why = _why_step(step)
    if why:
        lines.append("why")
        lines += why
    events = [e for e in trace.events_at(index) if e.kind in ("fork", "prune")]
    if events:
        lines.append("forks and prunes")
        lines += [f"  {e.message}" for e in events]
    if step.tokens:
        lines.append("tokens")
        for token in step.tokens:
            lines += _token(token)
    lines += _kv(step.kv)
    if step.attention_seqs:
        lines.append(f"attention recorded for sequences {step.attention_seqs}")
    lines.append(_timings(step))
    return terminal_safe("\n".join(lines))


def terminal_safe(text: str) -> str:
    """`text` with every control character but the newline written as an escape (\\x1b...): a
    trace's strings come from a file, and a raw ESC could drive the reader's terminal."""
    return "".join(c if c == "\n" or c.isprintable() else repr(c)[1:-1] for c in text)


def piece(text: str, token_id: int) -> str:
    """A listed token: its text quoted, or "[id]" when it has none of its own (a byte of a
    character, a special token decoded away, a model without a tokenizer), as the views show it:
    a byte-level vocabulary's top 10 could read '' ten times over, ten different tokens."""
    return repr(text) if text else f"[{token_id}]"


def _why_overview(trace: Trace) -> list[str]:
    """The causes over the run, counted: sequence-steps spent waiting, by kind; preemptions, by
    rule; prefix-cache lookups, by outcome; evictions."""
    waits = Counter(w.kind for step in trace.steps for w in step.schedule.waits)
    rules = Counter(p.rule for step in trace.steps for p in step.schedule.preemptions)
    lookups = Counter(p.miss or "hit all" for step in trace.steps for p in step.schedule.prefix)
    evictions = sum(len(step.schedule.evictions) for step in trace.steps)
    if not (waits or rules or lookups or evictions):
        return []

    def counts(counter: Counter) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in counter.most_common()) or "none"

    return [f"why: waiting (sequence-steps) {counts(waits)}; preemptions {counts(rules)}; "
            f"prefix-cache lookups {counts(lookups)}; {_count(evictions, 'cached block')} evicted"]


def _why_step(step: StepRecord) -> list[str]:
    s = step.schedule
    seq_ids = dict.fromkeys(r.seq_id for records in (s.preemptions, s.waits, s.prefix, s.chunks) for r in records)
    lines = [f"  seq {seq_id}  {line}" for seq_id in seq_ids for line in why_of(s, seq_id)]
    return lines + [f"  block {e.block_id}  {eviction_text(e)}" for e in s.evictions]


def _scheduled(x: ScheduledRecord) -> str:
    text = f"seq {x.seq_id}  positions {x.start}..{x.start + x.num_tokens - 1} ({_count(x.num_tokens, 'token')}"
    if x.num_cached_tokens:
        text += f", after {x.num_cached_tokens} from the prefix cache"
    return text + ")" + (f"  {x.reason}" if x.reason else "") + ("  samples" if x.samples else "")


def _token(t: TokenRecord) -> list[str]:
    done = f"  [finished: {t.finish_reason}]" if t.finish_reason else ""
    if t.logits is None:
        return [f"  seq {t.seq_id}  {t.text_delta!r} (id {t.token_id}){done}"]
    g = t.logits
    top = " | ".join(f"{piece(text, i)} {p:.3f}" for i, text, p in zip(g.top_ids, g.top_texts, g.top_probs))
    lines = [
        f"  seq {t.seq_id}  {t.text_delta!r} (id {t.token_id})  p={g.sampled_prob:.3f} rank {g.sampled_rank}  "
        f"entropy {g.entropy:.2f} nats{done}",
        f"         top: {top}",
    ]
    if t.lens is not None:  # each layer's first guess
        guesses = " | ".join(f"{layer}:{piece(texts[0], ids[0])}"
                             for layer, (ids, texts) in enumerate(zip(t.lens.top_ids, t.lens.top_texts)))
        lines.append(f"         logit lens: {guesses}")
    return lines


def _kv(kv: KVSnapshot) -> list[str]:
    hits = int(kv.hit.sum())
    unshown = "free, not cached" if kv.cached_free_listed else "free (the cached free blocks are too many to show)"
    return [
        f"KV cache: {kv.num_used} of {kv.num_blocks} blocks in use ({100 * kv.usage:.1f}%), {kv.num_free} free "
        f"({kv.num_cached_free} of them cached)" + (f", {hits} prefix-cache hit blocks this step" if hits else ""),
        *(f"  seq {seq_id}: {table}" for seq_id, table in kv.block_tables().items()),
        f"  blocks: {_block_runs(kv) or '-'}",
        f"  (# in use, + shared, * hit this step, c cached and free, . free; blocks not shown: {unshown})",
    ]


def _block_runs(kv: KVSnapshot) -> str:
    """The recorded blocks as runs of consecutive ids with the same mark: "0-11#  12+  40c"."""
    runs: list[list] = []  # [first, last, mark]
    for e in kv.entries():
        mark = "*" if e.hit else "+" if e.ref_count > 1 else "#" if e.ref_count else "c" if e.cached else "."
        if runs and runs[-1][1] == e.block_id - 1 and runs[-1][2] == mark:
            runs[-1][1] = e.block_id
        else:
            runs.append([e.block_id, e.block_id, mark])
    return "  ".join(f"{first}{mark}" if first == last else f"{first}-{last}{mark}" for first, last, mark in runs)


def _timings(step: StepRecord) -> str:
    t = step.timings
    return (
        f"timings (ms): schedule {t.schedule_ms:.2f} | prepare {t.prepare_ms:.2f} | forward {t.forward_ms:.2f} | "
        f"sample {t.sample_ms:.2f} | wall {t.wall_ms:.2f} (recorder {t.record_ms:.2f})"
        + (f" | joining the ranks {t.collective_ms:.2f}" if t.collective_ms else "")
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
