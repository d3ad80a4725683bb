"""Selection: what the user picked in the UI, besides the cursor step.

The cursor says *when* (which step); the selection says *what* to look at in that step: which
sequence, and for the attention views which layer and head. It is a frozen dataclass, so a view
can never change it behind the app's back, and two equal selections compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.trace.model import Trace


@dataclass(frozen=True)
class Selection:
    seq_id: int | None = None  # the selected sequence; None: the first traced one, else the first one
    layer: int = 0
    head: int | None = 0  # None: all heads of the layer, as small multiples (attention) or averaged (KV overlay)
    full_matrix: bool = False  # attention: every recorded query (rows) x keys, instead of the cursor's query only


def selected_seq_id(trace: Trace, selection: Selection) -> int | None:
    """The sequence the views show: the one named, else the first whose attention was recorded
    (the most to look at), else the first one. None when the trace has no sequence at all."""
    if selection.seq_id is not None:
        return selection.seq_id
    traced = [seq_id for seq_id in sorted(trace.sequences) if seq_id in trace.attention]
    if traced:
        return traced[0]
    return min(trace.sequences) if trace.sequences else None
