"""debug: drive the engine as a debugger does: step, run to a breakpoint, travel in time.

session.py (DebugSession: requests in, steps recorded), cursor.py (the step being looked at),
breakpoints.py (the conditions a run stops at, each saying why it fired), replay.py (a trace's
requests run again, under other settings or each alone).
"""

from inspector.debug.breakpoints import (
    AtStep,
    Breakpoint,
    CopyOnWrite,
    EntropyAbove,
    Hit,
    KVUsageAbove,
    Preemption,
    PrefixCacheHit,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
)
from inspector.debug.cursor import Cursor
from inspector.debug.replay import lineage_roots, recorded_top_k, replay
from inspector.debug.session import DebugSession, RecordingStopped, RunResult

__all__ = [
    "AtStep", "Breakpoint", "CopyOnWrite", "Cursor", "DebugSession", "EntropyAbove", "Hit", "KVUsageAbove", "Preemption",
    "PrefixCacheHit", "RecordingStopped", "RunResult", "SampledProbBelow", "SequenceFinished", "TextMatches", "lineage_roots",
    "recorded_top_k", "replay",
]
