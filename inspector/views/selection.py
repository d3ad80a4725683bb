"""Selection: what the user picked in the UI, besides the cursor step; and the one rule for
what the views show when the user picked no sequence.

The cursor says *when* (which step); the selection says *what* to look at in that step: which
sequence, and for the attention views which layer and head. It is a frozen dataclass, so a view
can never change it behind the app's back, and two equal selections compare equal.

No sequence picked ("auto") follows the cursor: each step shows the sequence it is about
(sequence_of_step), so moving through a run shows whichever sequence was doing something.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.trace.arguments import flag, optional_whole, whole
from inspector.trace.model import Trace


@dataclass(frozen=True)
class Selection:
    seq_id: int | None = None  # the selected sequence; None: the one the cursor step is about
    layer: int = 0
    head: int | None = 0  # None: all heads of the layer, as small multiples (attention) or averaged (KV overlay)
    full_matrix: bool = False  # attention: every recorded query (rows) x keys, instead of the cursor's query only

    def __post_init__(self) -> None:
        """Check the fields (ArgumentError naming one): the views never raise, so a selection
        they could not read (head=1.5, layer=None, seq_id=[0]) is refused when it is made. A
        layer or head the model lacks is no error here: the views say so (the model is theirs)."""
        optional_whole(self.seq_id, "Selection.seq_id")
        whole(self.layer, "Selection.layer")
        optional_whole(self.head, "Selection.head")
        flag(self.full_matrix, "Selection.full_matrix")


def sequence_of_step(trace: Trace, index: int) -> int | None:
    """The sequence step `index` is about: a traced sequence (the most to look at) that sampled
    a token at that step, else a traced one it computed, else any it computed. With no such
    step, or one that computed nothing: the first traced sequence, else the first one; None
    when the trace has no sequence."""
    traced = [seq_id for seq_id, record in sorted(trace.sequences.items()) if record.traced]
    if 0 <= index < len(trace.steps):
        scheduled = trace.steps[index].schedule.scheduled
        for wanted in ([x.seq_id for x in scheduled if x.samples and x.seq_id in traced],
                       [x.seq_id for x in scheduled if x.seq_id in traced], [x.seq_id for x in scheduled]):
            if wanted:
                return wanted[0]
    return traced[0] if traced else min(trace.sequences, default=None)


def selected_seq_id(trace: Trace, selection: Selection, index: int) -> int | None:
    """The sequence a view shows at step `index`: the one picked (a view of a sequence the
    trace lacks says so), else the one the step is about."""
    return selection.seq_id if selection.seq_id is not None else sequence_of_step(trace, index)


def resolve(trace: Trace, selection: Selection, index: int) -> Selection:
    """The selection as a UI shows it at step `index`: a sequence always filled in (none picked,
    or one this trace lacks: the one the step is about), and the layer and head kept within the
    model (a head out of range: head 0)."""
    seq_id = selection.seq_id if selection.seq_id in trace.sequences else sequence_of_step(trace, index)
    layer = min(selection.layer, trace.model.num_layers - 1)
    head = selection.head if selection.head is None or selection.head < trace.model.num_heads else 0
    return Selection(seq_id, layer, head, selection.full_matrix)
