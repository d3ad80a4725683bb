"""Cursor: a position in a trace's recorded steps.

Moving the cursor is time travel over what was recorded: it never re-runs the engine, so a
step seen again is exactly the step that ran. It works on a live trace (DebugSession keeps it
at the newest step as it runs) and on one loaded from a file.
"""

from __future__ import annotations

from inspector.trace.arguments import step_index
from inspector.trace.model import StepRecord, Trace


class Cursor:
    def __init__(self, trace: Trace):
        self.trace = trace
        self.index = len(trace.steps) - 1  # -1: no step yet

    @property
    def step(self) -> StepRecord | None:
        """The step under the cursor, or None while the trace is empty."""
        return self.trace.steps[self.index] if self.index >= 0 else None

    def seek(self, index: int) -> StepRecord:
        """Go to step `index` (negative counts from the end, like a list index). ArgumentError
        for an index that is not an int (True and 1.0 included), NoSuchStep (an IndexError too)
        past either end; the cursor stays where it was."""
        self.index = step_index(index, len(self.trace.steps))
        return self.trace.steps[self.index]

    def next(self) -> StepRecord | None:
        """One step forward; None (and no move) at the newest step."""
        if self.index + 1 >= len(self.trace.steps):
            return None
        return self.seek(self.index + 1)

    def prev(self) -> StepRecord | None:
        """One step back; None (and no move) at the first step."""
        if self.index <= 0:
            return None
        return self.seek(self.index - 1)
