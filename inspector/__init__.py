"""inspector: record what the minillama engine does, step by step, and look at it afterwards.

The folder is not called `inspect`: a top-level package of that name would shadow Python's
standard-library module, which torch imports.

    from inspector import DebugSession, Preemption, diff_traces, format_diff, load, replay, save
    session = DebugSession(engine)            # attaches a Recorder to the engine
    session.add("Hello", chat=True)
    session.run(until=[Preemption()])
    save(session.trace, "run.mltrace")
    trace = load("run.mltrace")               # no model needed
    again = replay(trace, num_kv_blocks=12)   # the same requests under other settings (or alone=True)
    print(format_diff(diff_traces(trace, again)))

Dependency direction: app -> inspector -> minillama; minillama never imports this package.
"""

import importlib

# Public name -> the room that defines it. Imported on first use (PEP 562), so that reading a
# trace (`import inspector.trace`, the views) does not load the engine the recorder and the
# debugger run.
_HOMES = {
    **dict.fromkeys(
        ("AtStep", "Breakpoint", "CopyOnWrite", "Cursor", "DebugSession", "EntropyAbove", "Hit", "KVUsageAbove", "Preemption",
         "PrefixCacheHit", "RecordingStopped", "RunResult", "SampledProbBelow", "SequenceFinished", "TextMatches",
         "replay"),
        "inspector.debug",
    ),
    **dict.fromkeys(("CapturePolicy", "Recorder"), "inspector.record"),
    **dict.fromkeys(("ArgumentError", "NoSuchStep", "NotRecorded", "Trace", "TraceDiff", "TraceError", "diff_traces",
                     "export_chrome_trace", "format_diff", "format_overview", "format_step", "load", "save"),
                    "inspector.trace"),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'inspector' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
