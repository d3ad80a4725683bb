"""The prefix-cache "why" names each block in the numbering it belongs to, checked against the
engine's own block tables: the blocks hit are physical ids (the KV grid's), the block the
lookup stopped at is the sequence's logical index. Said bare, "4 block(s) hit (0, 1, 2, 7);
block 4 was cached but evicted at engine step 16 to serve #0" sent a reader to physical block
4, which another sequence held all along; the evicted one was the block the sequence had held
at its logical index 4 before it was preempted.

The run: two greedy requests sharing a 12-token prefix in a 9-block pool of 4-token blocks;
the second is preempted, and when it comes back one of its cached blocks has been reused.
"""

from __future__ import annotations

import pytest
import torch
from test_inspector_support import Checker
from tiny_model import write_tiny_model

from inspector import DebugSession
from inspector.trace.why_text import prefix_text
from minillama import EngineConfig, LLMEngine, SamplingParams


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tiny = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    engine = LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", num_kv_blocks=9, block_size=4))
    session = DebugSession(engine)
    checker = Checker(engine, set())
    engine.add_observer(checker)
    prefix = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(0)).tolist()
    session.add_batch([prefix + [5, 6, 7], prefix + [9, 9, 9, 1]], SamplingParams(temperature=0, max_tokens=16))
    session.run()
    return session.trace, checker


def test_the_blocks_hit_are_named_physical_and_are_the_ones_the_engine_mapped(run):
    trace, checker = run
    lookups = [(step, p) for step in trace.steps for p in step.schedule.prefix]
    assert {p.miss for _, p in lookups} >= {"", "not-cached", "evicted"}
    for step, p in lookups:
        text = prefix_text(p)
        table = next(x.block_table for x in step.schedule.scheduled if x.seq_id == p.seq_id)
        hit = len(p.hit_blocks)
        assert checker.steps[step.index].cached.get(p.seq_id, 0) == hit * trace.engine.block_size
        assert p.hit_blocks == table[:hit]  # the engine's own table, as the step ran it
        if hit:
            assert f"hit (physical {', '.join(map(str, p.hit_blocks))})" in text
        if p.miss_block is not None:
            assert p.miss_block == hit and f"its logical block {p.miss_block} " in text
            assert f"; block {p.miss_block}" not in text


def test_an_evicted_miss_names_the_logical_block_whose_physical_block_was_reused(run):
    trace, checker = run
    step, p = next((s, p) for s in trace.steps for p in s.schedule.prefix if p.miss == "evicted")
    # The physical block the sequence held at that logical index before it was preempted, from
    # the engine's block tables at the end of each earlier step.
    held = [seen.tables[p.seq_id][p.miss_block] for seen in checker.steps[: step.index]
            if len(seen.tables.get(p.seq_id, [])) > p.miss_block]
    assert held, "the sequence held that logical block before"
    evicted = [e for s in trace.steps[: step.index + 1] for e in s.schedule.evictions
               if e.block_id == held[-1] and e.engine_step == p.evicted_step]
    assert [e.for_seq for e in evicted] == [p.evicted_for]
    text = prefix_text(p)
    assert text.endswith(f"its logical block {p.miss_block} was cached but evicted at engine step {p.evicted_step} "
                         f"to serve #{p.evicted_for}")
    # The bare number would have pointed at another block: one the engine had not reused.
    assert held[-1] != p.miss_block
