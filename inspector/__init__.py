"""inspector: record what the minillama engine does, step by step, and look at it afterwards.

The folder is not called `inspect`: a top-level package of that name would shadow Python's
standard-library module, which torch imports.

    from inspector import DebugSession, Preemption, load, save
    session = DebugSession(engine)            # attaches a Recorder to the engine
    session.add("Hello", chat=True)
    session.run(until=[Preemption()])
    save(session.trace, "run.mltrace")
    trace = load("run.mltrace")               # no model needed

Dependency direction: app -> inspector -> minillama; minillama never imports this package.
"""

from inspector.debug import (
    AtStep,
    Breakpoint,
    Cursor,
    DebugSession,
    EntropyAbove,
    Hit,
    KVUsageAbove,
    Preemption,
    PrefixCacheHit,
    RunResult,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
)
from inspector.record import CapturePolicy, Recorder
from inspector.trace import (
    NotRecorded,
    Trace,
    TraceError,
    export_chrome_trace,
    format_overview,
    format_step,
    load,
    save,
)

__all__ = [
    "AtStep", "Breakpoint", "CapturePolicy", "Cursor", "DebugSession", "EntropyAbove", "Hit", "KVUsageAbove",
    "NotRecorded", "Preemption", "PrefixCacheHit", "Recorder", "RunResult", "SampledProbBelow",
    "SequenceFinished", "TextMatches", "Trace", "TraceError", "export_chrome_trace", "format_overview", "format_step",
    "load", "save",
]
