"""Step timings as Chrome trace JSON, for chrome://tracing or https://ui.perfetto.dev.

One track of slices: each step spans its wall time, with the engine's four phases inside it,
laid end to end from the step's start (schedule, prepare, forward, sample), and "observers"
for the rest of the wall time (hooks outside those phases, and the engine's bookkeeping).
Two counter tracks follow the KV blocks in use and the tokens per step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspector.trace.arguments import instance, output_file
from inspector.trace.model import Trace
from inspector.trace.replacing import replacing

PID, TID = 1, 1


def chrome_trace_events(trace: Trace) -> dict[str, Any]:
    """The Chrome trace document: {"traceEvents": [...]} with times in microseconds."""
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": PID, "name": "process_name", "args": {"name": f"mini-llama: {trace.model.name}"}},
        {"ph": "M", "pid": PID, "tid": TID, "name": "thread_name", "args": {"name": "engine steps"}},
    ]
    for step in trace.steps:
        t, s = step.timings, step.schedule
        start = t.start_ms * 1e3
        args = {
            "phase": s.phase, "sequences": len(s.scheduled), "tokens": sum(x.num_tokens for x in s.scheduled),
            "preempted": s.preempted, "record_ms": round(t.record_ms, 3),
        }
        events.append(_slice(f"step {step.index} ({s.phase})", start, t.wall_ms * 1e3, args))
        at = start
        engine_ms = t.schedule_ms + t.prepare_ms + t.forward_ms + t.sample_ms
        phases = [("schedule", t.schedule_ms), ("prepare", t.prepare_ms), ("forward", t.forward_ms),
                  ("sample", t.sample_ms), ("observers", max(0.0, t.wall_ms - engine_ms))]
        for name, ms in phases:
            events.append(_slice(name, at, ms * 1e3, {}))
            at += ms * 1e3
        used = step.kv.num_used
        events.append({"ph": "C", "pid": PID, "name": "KV blocks in use", "ts": start, "args": {"blocks": used}})
        events.append({"ph": "C", "pid": PID, "name": "batch tokens", "ts": start, "args": {"tokens": args["tokens"]}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def export_chrome_trace(trace: Trace, path: str | Path) -> None:
    """Write the Chrome trace document to `path`. Refused with nothing written: ArgumentError for
    a `trace` that is no Trace or a `path` that is no file path, TraceError for a path where no
    file can be written (a folder, a device, in a folder that does not exist)."""
    instance(trace, Trace, "trace")
    target = output_file(path)
    # Strict JSON (no Infinity or NaN, which Perfetto refuses): load() bounds every time. Written
    # beside the target and renamed, so a write cut short leaves the file there as it was.
    text = json.dumps(chrome_trace_events(trace), allow_nan=False)
    with replacing(target) as partial, open(partial, "x", encoding="utf-8") as out:
        out.write(text)


def _slice(name: str, ts: float, dur: float, args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "X", "pid": PID, "tid": TID, "name": name, "ts": ts, "dur": dur, "args": args}
