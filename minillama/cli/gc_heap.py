"""Tuning Python's garbage collector for a process that serves or measures, as serving engines do.

Two costs, each measured on a beam search benchmark (docs/perf-notes.md):

- The startup heap. A process that has imported torch and transformers and loaded a model
  holds a few hundred thousand objects that live as long as it does. CPython's cyclic garbage
  collector scans all of them at every full collection, which it starts on its own once enough
  new objects have survived: one such pause cost 0.15 s on a CPU and 0.3 s on the GPU machine's
  host, in the middle of a timed run, on objects that can never be garbage. gc.freeze() moves
  every object alive now into a permanent generation the collector skips (vLLM does the same
  once its engine has started).
- The young generation. CPython collects it every 700 container objects made (net of those
  freed), and an engine step makes thousands: records, outputs, and with beam search a sequence
  per fork. Most of a step's objects are freed by reference
  counting within the step; collected every 700, many are still alive, scanned, and scanned
  again in the older generation. Every 10,000, a step's short-lived objects are mostly gone
  first: a beam search run spent 33 ms collecting instead of 61 (of ~440 ms of host time).
  SGLang (--gc-threshold), TensorRT-LLM and LMDeploy raise this threshold for the same reason.

Only processes that call tune_gc() change: the library itself leaves a host program's collector
as it found it.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 10_000  # CPython's default: 700


def tune_gc() -> None:
    """Collect what is garbage now, keep the collector off everything still alive, and collect
    the young generation less often. Call it once the model is loaded, in a process that serves
    or measures (app.py, the benchmarks)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
