"""The scheduler's queue rules (inspector/trace/validate_queues.py), checked when a trace loads.

Every real recording keeps them: a run with preemptions, prefix-cache hits and chunked
prefills, then a user's fork with its copy on write, samples and a beam search (forks and
prunes) passes. Each rule is then broken in that recording, in memory, at every place it can
be (every step, every sequence it can name), and the loader's own validate_trace must refuse
it naming the step, the sequence and the rule; one edit goes through a file and load().
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import make_hf_model
from test_inspector_support import add_forks, record_tiny_run
from test_trace_recorded_twice import changed, edited_file

from inspector import CapturePolicy, DebugSession, TraceError, load, save
from inspector.trace import validate_queues as rules
from inspector.trace.model import KVSnapshot, StepRecord, Trace
from inspector.trace.validate import validate_trace
from minillama import EngineConfig, LLMEngine, SamplingParams


@pytest.fixture(scope="module")
def recorded() -> Trace:
    # A budget of 8 tokens chunks the prompts; the 14-block pool preempts.
    run = record_tiny_run(CapturePolicy(attention_requests=(0, 2)), max_num_batched_tokens=8)
    add_forks(run, beams=True)
    trace = run.session.trace
    validate_trace(trace)  # a real recording keeps every rule
    schedules = [step.schedule for step in trace.steps]
    assert any(s.preempted for s in schedules) and any(x.num_cached_tokens for s in schedules for x in s.scheduled)
    assert {seq.fork_cause for seq in trace.sequences.values()} >= {"user", "sample", "beam"}
    assert any(seq.pruned_step is not None for seq in trace.sequences.values())
    return trace


def test_every_pool_size_records_traces_that_keep_the_rules(tmp_path):
    """Two greedy requests and a beam search in pools from too small to roomy: preemptions of
    every kind, among them a search's own after a step that found too few blocks for its forks
    (rule "search-forks": its beams ran in that step and hold no block at its end, which the
    loader refused as a broken rule, so such a run could not be saved)."""
    hf = make_hf_model("gqa-tied-llama3")
    rules_met: set[str] = set()
    for num_blocks in range(8, 20):
        engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=num_blocks,
                                                          block_size=4))
        session = DebugSession(engine, CapturePolicy(attention=False))
        generator = torch.Generator().manual_seed(num_blocks)
        for length in (18, 18):
            session.add(torch.randint(0, 256, (length,), generator=generator).tolist(),
                        SamplingParams(temperature=0, max_tokens=6))
        session.add(torch.randint(0, 256, (10,), generator=generator).tolist(), SamplingParams(max_tokens=4, beam_width=2))
        session.run()
        save(session.trace, tmp_path / "run.mltrace")  # validated whole, as load() does
        assert len(load(tmp_path / "run.mltrace").steps) == len(session.trace.steps), num_blocks
        rules_met |= {p.rule for step in session.trace.steps for p in step.schedule.preemptions}
    assert "search-forks" in rules_met


@pytest.fixture
def trace(recorded) -> Trace:
    return copy.deepcopy(recorded)




def refused(trace: Trace, step: int, seq_id: int | None, rule: str) -> None:
    named = f"step {step}: " + ("" if seq_id is None else f".*sequence {seq_id}\\b")
    with pytest.raises(TraceError, match=f"{named}.*{rule}"):
        validate_trace(trace)


def ended(trace: Trace) -> dict[int, int]:
    """A sequence -> the step it ended at (its finishing token, or its pruning), as recorded."""
    ends = {}
    for seq_id, seq in trace.sequences.items():
        if seq.pruned_step is not None:
            ends[seq_id] = seq.pruned_step
        elif seq.finish_reason is not None:
            ends[seq_id] = seq.token_steps[-1]
    return ends


def test_a_sequence_both_running_and_waiting_is_refused_at_every_step(trace):
    edits = 0
    for step in trace.steps:
        for seq_id in step.schedule.running:
            edits += 1
            with changed(step.schedule, "waiting", sorted([*step.schedule.waiting, seq_id])):
                refused(trace, step.index, seq_id, rules.ONE_QUEUE)
    assert edits > 30


def test_a_scheduled_sequence_missing_from_running_is_refused_at_every_step(trace):
    for step in trace.steps:
        for x in step.schedule.scheduled:
            with changed(step.schedule, "running", [s for s in step.schedule.running if s != x.seq_id]):
                refused(trace, step.index, x.seq_id, rules.ONE_QUEUE)


def test_a_sequence_queued_before_it_was_added_is_refused(trace):
    edits = 0
    for seq_id, seq in trace.sequences.items():
        for step in trace.steps[: seq.added_step]:
            if seq_id not in step.schedule.waiting:
                edits += 1
                with changed(step.schedule, "waiting", sorted([*step.schedule.waiting, seq_id])):
                    refused(trace, step.index, seq_id, rules.ARRIVAL)
    assert edits > 30


def test_a_sequence_queued_after_it_ended_is_refused(trace):
    edits = 0
    for seq_id, end in ended(trace).items():
        for step in trace.steps[end + 1 :]:
            edits += 1
            with changed(step.schedule, "waiting", sorted([*step.schedule.waiting, seq_id])):
                refused(trace, step.index, seq_id, rules.ENDED)
    assert edits > 100


def busiest(trace: Trace, size) -> tuple[StepRecord, int]:
    """The step where `size(step)` is largest, and that size."""
    step = max(trace.steps, key=size)
    return step, size(step)


@pytest.mark.parametrize(("field", "size", "rule"), [
    ("max_num_seqs", lambda step: len(step.schedule.running), rules.BUDGET),
    ("max_num_batched_tokens",
     lambda step: sum(x.num_tokens for x in step.schedule.scheduled) * (step.schedule.phase == "prefill"), rules.TOKENS),
    ("max_model_len", lambda step: max((x.start + x.num_tokens for x in step.schedule.scheduled), default=0),
     rules.LENGTH),
])
def test_a_step_past_the_engines_budget_is_refused(trace, field, size, rule):
    """The engine's setting one below what the busiest step used: that step is refused (an
    earlier step at the same size first), at the setting itself it passes."""
    step, used = busiest(trace, size)
    first = next(s for s in trace.steps if size(s) == used)
    trace.engine = dataclasses.replace(trace.engine, **{field: used})
    validate_trace(trace)
    trace.engine = dataclasses.replace(trace.engine, **{field: used - 1})
    refused(trace, first.index, None, rule)


def test_a_decode_step_computing_two_tokens_of_a_sequence_is_refused_at_every_one(trace):
    edits = 0
    for step in trace.steps:
        if step.schedule.phase != "decode":
            continue
        for x in step.schedule.scheduled:
            if x.start > x.num_cached_tokens:
                edits += 1
                with changed(x, "start", x.start - 1), changed(x, "num_tokens", 2):
                    refused(trace, step.index, x.seq_id, rules.DECODE)
    assert edits > 30


def test_a_sequence_sampling_before_its_last_token_or_not_at_it_is_refused(trace):
    for step in trace.steps:
        for x in step.schedule.scheduled:
            with changed(x, "samples", not x.samples):
                refused(trace, step.index, x.seq_id, "a sequence samples exactly when a step computes its last token")


def without_table(kv: KVSnapshot, seq_id: int) -> KVSnapshot:
    """The snapshot with `seq_id`'s block table gone, its blocks' counts lowered to match."""
    tables = kv.block_tables()
    ref_count = kv.ref_count.clone()
    for block in tables.pop(seq_id):
        ref_count[torch.searchsorted(kv.block_ids, block)] -= 1
    return with_tables(kv, tables, ref_count)


def with_table(kv: KVSnapshot, seq_id: int) -> KVSnapshot:
    """The snapshot with `seq_id` holding its first recorded block too."""
    tables, ref_count = kv.block_tables(), kv.ref_count.clone()
    tables[seq_id] = [int(kv.block_ids[0])]
    ref_count[0] += 1
    return with_tables(kv, tables, ref_count)


def with_tables(kv: KVSnapshot, tables: dict[int, list[int]], ref_count: torch.Tensor) -> KVSnapshot:
    lengths = torch.tensor([0, *map(len, tables.values())], dtype=torch.int64)
    return dataclasses.replace(
        kv, ref_count=ref_count, table_seq_ids=torch.tensor(list(tables), dtype=torch.int64),
        table_offsets=lengths.cumsum(0), table_blocks=torch.tensor([b for t in tables.values() for b in t],
                                                                   dtype=torch.int32))


def test_a_running_sequence_that_lost_its_blocks_is_refused_at_every_step(trace):
    """Its table gone from the step's snapshot, the block counts made to agree: all that is
    left to say the blocks are missing is the rule. (A sequence ending in the step gave its
    blocks back: it holds none, rightly.)"""
    ends, edits = ended(trace), 0
    for step in trace.steps:
        tables = step.kv.block_tables()
        for seq_id in step.schedule.running:
            if tables.get(seq_id) and ends.get(seq_id) != step.index and any(
                    x.seq_id == seq_id for s in trace.steps[: step.index + 1] for x in s.schedule.scheduled):
                edits += 1
                with changed(step, "kv", without_table(step.kv, seq_id)):
                    refused(trace, step.index, seq_id, rules.HOLDS)
    assert edits > 30


def test_a_preempted_sequence_still_holding_blocks_is_refused(trace):
    edits = 0
    for step in trace.steps:
        for seq_id in set(step.schedule.preempted) - set(step.schedule.running):
            edits += 1
            with changed(step, "kv", with_table(step.kv, seq_id)):
                refused(trace, step.index, seq_id, rules.PREEMPTED)
    assert edits >= 2


def test_engine_steps_that_do_not_increase_are_refused_at_every_step(trace):
    for step, following in zip(trace.steps, trace.steps[1:]):
        with changed(step, "engine_step", following.engine_step):  # later steps' checks read only their own
            refused(trace, following.index, None, rules.ORDER)


def test_a_file_breaking_a_queue_rule_is_refused_by_load(recorded, tmp_path):
    def running_and_waiting(document: dict) -> None:
        schedule = next(s["schedule"] for s in document["steps"] if s["schedule"]["running"])
        schedule["waiting"] = sorted([*schedule["waiting"], schedule["running"][0]])

    with pytest.raises(TraceError, match=f"is both running and waiting; {rules.ONE_QUEUE}"):
        load(edited_file(recorded, tmp_path, running_and_waiting))
