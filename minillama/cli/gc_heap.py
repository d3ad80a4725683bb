"""Keeping Python's garbage collector off the startup heap, as serving engines do.

A process that has imported torch and transformers and loaded a model holds a few hundred
thousand objects that live as long as it does. CPython's cyclic garbage collector scans all of
them at every full collection, which it starts on its own once enough new objects have
survived: in a beam search benchmark, one such pause cost 0.15 s on a CPU and 0.3 s on the GPU
machine's host, in the middle of a timed run, on objects that can never be garbage.
gc.freeze() moves every object alive now into a permanent generation the collector skips
(vLLM does the same once its engine has started). Objects made later are collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect what is garbage now, then keep the collector off everything still alive. Call it
    once the model is loaded, in a process that serves or measures (app.py, the benchmarks)."""
    gc.collect()
    gc.freeze()
