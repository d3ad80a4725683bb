"""Lineage: which sequence continues which, and how to say it.

A fork (DebugSession.fork, a parallel sample, a beam) continues its parent's first
`fork_position` tokens with tokens of its own. Wherever the UI lists sequences it lists a fork
right under its parent, indented, and labels it the way the question is asked:

    #3 ← #1 at step 12, " the" → " a"

that is: #1 sampled " the" at step 12; #3 is #1 up to there, with " a" instead. A fork made
inside the parent's prompt says "at prompt token 5"; one made past the parent's last token
(nothing replaced) says "after token 40, + " a"". A sample or a beam says which it is.

Labels are plain text: a view puts them into HTML through markup.escape, like any trace text.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.trace.model import ForkCause, ForkRecord, Trace
from inspector.views.tokens import prompt_piece, visible

MAX_QUOTED = 24  # characters of a token text quoted in a label


@dataclass(frozen=True)
class ForkOrigin:
    """Where sequence `seq_id` branched off its parent."""

    seq_id: int
    parent_id: int
    position: int  # the parent's tokens the fork kept (its own tokens start at this position)
    cause: ForkCause | None
    # The step at which the parent sampled the token the fork replaced; None when that token
    # was a prompt token, or when the parent had no token at `position` yet.
    step: int | None
    replaced: str | None  # that token's text; None when the parent had none there
    forced: str  # the fork's own tokens at `position`, as text ("" when not recorded)


def fork_origin(trace: Trace, seq_id: int, forks: dict[int, ForkRecord] | None = None) -> ForkOrigin | None:
    """Where `seq_id` branched off, or None when it is no fork (or its parent is not in the
    trace). `forks`: trace.forks() by child id, when the caller has it already."""
    seq = trace.sequences.get(seq_id)
    if seq is None or seq.parent_id is None or seq.fork_position is None or seq.parent_id not in trace.sequences:
        return None
    forks = forks if forks is not None else forks_by_child(trace)
    record = forks.get(seq_id)
    parent, position = trace.sequences[seq.parent_id], seq.fork_position
    step, replaced = None, None
    if position < len(parent.prompt_ids):
        replaced = prompt_piece(trace, parent.seq_id, position) or f"[{parent.prompt_ids[position]}]"
    elif position - len(parent.prompt_ids) < len(parent.output_ids):
        out = position - len(parent.prompt_ids)
        step = parent.token_steps[out]
        token = trace.steps[step].token_of(parent.seq_id) if step < len(trace.steps) else None
        replaced = (token.text_delta if token is not None else "") or f"[{parent.output_ids[out]}]"
    forced = "".join(text or f"[{i}]" for i, text in zip(record.forced_ids, record.forced_texts)) if record else ""
    return ForkOrigin(seq_id, parent.seq_id, position, seq.fork_cause, step, replaced, forced)


def fork_label(trace: Trace, seq_id: int, forks: dict[int, ForkRecord] | None = None) -> str:
    """"#3 ← #1 at step 12, " the" → " a"" for a fork; "#3" for any other sequence."""
    origin = fork_origin(trace, seq_id, forks)
    if origin is None:
        return f"#{seq_id}"
    head = f"#{seq_id} ← #{origin.parent_id}"
    if origin.cause == "sample":
        return f"{head} (sample {trace.sequences[seq_id].sample_index}), {quote(origin.forced)}"
    if origin.cause == "beam":
        return f"{head} (beam), {quote(origin.forced)}"
    if origin.replaced is None:
        return f"{head} after token {origin.position}, + {quote(origin.forced)}"
    where = f"at step {origin.step}" if origin.step is not None else f"at prompt token {origin.position}"
    return f"{head} {where}, {quote(origin.replaced)} → {quote(origin.forced)}"


def fork_labels(trace: Trace) -> dict[int, str]:
    """fork_label of every sequence, by id (the fork records looked up once)."""
    forks = forks_by_child(trace)
    return {seq_id: fork_label(trace, seq_id, forks) for seq_id in trace.sequences}


def lineage_order(trace: Trace) -> list[tuple[int, int]]:
    """(seq_id, depth) of every sequence: those with no parent in the trace in id order, each
    followed by its forks (depth + 1), theirs in turn, in id order (the order they were made).
    A fork is always made after its parent, so a parent has the smaller id; a file claiming
    otherwise (a loop of parents) has those sequences listed as if they had none."""
    children: dict[int, list[int]] = {}
    roots = []
    for seq_id, seq in sorted(trace.sequences.items()):
        if seq.parent_id is not None and seq.parent_id in trace.sequences and seq.parent_id < seq_id:
            children.setdefault(seq.parent_id, []).append(seq_id)
        else:
            roots.append(seq_id)
    order: list[tuple[int, int]] = []
    stack = [(seq_id, 0) for seq_id in reversed(roots)]
    while stack:  # depth first, without recursion (a chain of forks can be long)
        seq_id, depth = stack.pop()
        order.append((seq_id, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(seq_id, [])))
    return order


def quote(text: str) -> str:
    """A token text in double quotes, whitespace and bidi controls made visible, clipped."""
    shown = visible(text)
    if len(shown) > MAX_QUOTED:
        shown = shown[: MAX_QUOTED - 1] + "…"
    return f'"{shown}"'


def forks_by_child(trace: Trace) -> dict[int, ForkRecord]:
    """Every fork record of the trace, by the id of the sequence it made."""
    return {fork.child_id: fork for fork in trace.forks()}
