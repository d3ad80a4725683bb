"""trace: the recorded run as data, with no engine behind it.

model.py (the data model: Trace, StepRecord, KVSnapshot, ...), arguments.py (the checks of the
inspector's call arguments, and their ArgumentError), tracefile.py (the .mltrace file:
save, load), codec.py and the validate*/bounds/json_limits/zip_members/tensor_member modules (a
file is read as hostile: checked whole, within bounds, or refused), attention_rows.py (attention
rows computed from the stored queries and keys), and two exports: export_text.py (what
`python -m inspector show` prints) and export_chrome.py (timings for ui.perfetto.dev); diff.py
(two runs of the same requests compared) and diff_text.py (`python -m inspector diff`'s text).
"""

from inspector.trace.arguments import ArgumentError, NoSuchStep
from inspector.trace.diff import RequestDiff, TraceDiff, diff_traces
from inspector.trace.diff_text import format_diff
from inspector.trace.export_chrome import export_chrome_trace
from inspector.trace.export_text import format_overview, format_step, terminal_safe
from inspector.trace.model import (
    AttentionStore,
    EngineInfo,
    Event,
    KVSnapshot,
    LogitLens,
    LogitsSummary,
    ModelInfo,
    NotRecorded,
    ScheduledRecord,
    ScheduleRecord,
    SequenceRecord,
    StepRecord,
    Timings,
    TokenRecord,
    Trace,
    TraceError,
)
from inspector.trace.tracefile import load, save

__all__ = [
    "ArgumentError", "AttentionStore", "EngineInfo", "Event", "KVSnapshot", "LogitLens", "LogitsSummary", "ModelInfo",
    "NoSuchStep", "NotRecorded", "RequestDiff", "ScheduleRecord", "ScheduledRecord", "SequenceRecord", "StepRecord",
    "Timings", "TokenRecord", "Trace", "TraceDiff", "TraceError", "diff_traces", "export_chrome_trace", "format_diff",
    "format_overview", "format_step", "load", "save", "terminal_safe",
]
