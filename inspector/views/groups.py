"""The text panel's order: plain requests by id, and a request's samples or beams together.

A request with n > 1 samples, or a beam search, is one request to its user and several
sequences to the engine: the first one (the request's own id, sample index 0) and the ones
forked from it, all with the request's id as their group_id (SequenceRecord). The text panel
lists them under the request: samples in sample order; a beam search's beams that have
finished first, best score first (the search's answer on top), then those still running, then
those the search pruned, which stay in the list (greyed by the panel) so its choices can be
followed, each kind in the order the beams were made.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.trace.model import Trace


@dataclass(frozen=True)
class Group:
    """A request's samples or beams, in the order the panel lists them (as of a step)."""

    group_id: int
    kind: str  # "samples" or "beams"
    members: list[int]


def beam_search(trace: Trace, group_id: int, members: list[int]) -> bool:
    """Is group `group_id` a beam search (not samples)? Its params say so, or its forks do."""
    width = trace.sequences[group_id].params.get("beam_width", 1) if group_id in trace.sequences else 1
    return width > 1 or any(trace.sequences[m].fork_cause == "beam" for m in members)


def text_order(trace: Trace, index: int) -> list[int | Group]:
    """The panel's items at step `index`: a plain sequence's id, or a Group, ordered by their
    first sequence id. A group whose first sequence is not in the trace still lists its members."""
    grouped: dict[int, list[int]] = {}
    items: list[tuple[int, int | Group]] = []
    for seq_id in sorted(trace.sequences):
        group_id = trace.sequences[seq_id].group_id
        if group_id is None:
            items.append((seq_id, seq_id))
        else:
            grouped.setdefault(group_id, []).append(seq_id)
    for group_id, members in grouped.items():
        beams = beam_search(trace, group_id, members)
        members = sorted(members, key=lambda s: _beam_rank(trace, s, index) if beams else trace.sequences[s].sample_index)
        items.append((min(members + [group_id]), Group(group_id, "beams" if beams else "samples", members)))
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


def pruned_at(trace: Trace, seq_id: int, index: int) -> int | None:
    """The step that pruned beam `seq_id`, when that is at or before step `index`."""
    pruned = trace.sequences[seq_id].pruned_step
    return pruned if pruned is not None and pruned <= index else None


def _beam_rank(trace: Trace, seq_id: int, index: int) -> tuple[int, float, int]:
    """Finished beams first, best score first; then running ones; then pruned ones; each in
    the order they were made (sequence id). Judged as of step `index`: a score known only later
    does not reorder earlier steps."""
    seq = trace.sequences[seq_id]
    if pruned_at(trace, seq_id, index) is not None:
        return (2, 0.0, seq_id)
    done = seq.token_steps and seq.token_steps[-1] <= index and seq.finish_reason in ("stop", "length")
    if done and seq.beam_score is not None:
        return (0, -seq.beam_score, seq_id)
    return (1, 0.0, seq_id)
