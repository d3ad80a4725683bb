"""The garbage collector tuning a serving or measuring process applies (minillama/cli/gc_heap.py)."""

from __future__ import annotations

import gc

from minillama.cli import tune_gc
from minillama.cli.gc_heap import YOUNG_GENERATION_THRESHOLD


def test_tune_gc_freezes_the_heap_and_collects_the_young_generation_less_often():
    """What app.py and the benchmarks call once the model is loaded."""
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
