"""Why: each scheduler decision carries its cause, built on purpose here and asserted exactly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import plotly.io as pio
import pytest
from conftest import make_hf_model
from test_inspector_support import record_tiny_run

from inspector import TraceError, load, save
from inspector.trace.export_text import format_overview, format_step
from inspector.trace.model import ChunkRecord, PreemptRecord, PrefixRecord, ScheduleRecord, Trace, WaitRecord
from inspector.trace.why_text import why_of
from inspector.views import kv_cache_figure, step_details_html, timeline_figure
from minillama import EngineConfig, LLMEngine, Observer, SamplingParams, SchedulerOutput
from minillama.engine.causes import ChunkCause, PreemptCause, PrefixCause, WaitCause

BS = 4
PROMPT = [(7 * i + 3) % 256 for i in range(11)]  # 11 tokens: blocks of 4, 4 and 3


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model("gqa-tied-llama3")


class Plans(Observer):
    """Every published plan, in step order."""

    def __init__(self):
        self.plans: list[SchedulerOutput] = []

    def on_schedule(self, batch: SchedulerOutput) -> None:
        self.plans.append(batch)


def make_engine(hf_model, num_kv_blocks: int = 64, prefix_caching: bool = True, **config) -> tuple[LLMEngine, Plans]:
    engine = LLMEngine.from_hf_model(hf_model, EngineConfig(
        device="cpu", dtype="float32", num_kv_blocks=num_kv_blocks, block_size=BS,
        enable_prefix_caching=prefix_caching, **config,
    ))
    plans = Plans()
    engine.add_observer(plans)
    return engine, plans


def finish(engine: LLMEngine) -> None:
    for _ in range(500):
        if not engine.has_unfinished():
            return
        engine.step()
    raise AssertionError("the engine looks stuck")


def test_waiting_for_blocks_and_behind_the_head(hf_model):
    engine, plans = make_engine(hf_model, num_kv_blocks=8, prefix_caching=False)
    a = engine.add_request(list(range(1, 21)), greedy(2))  # 20 tokens: 5 blocks
    b = engine.add_request(list(range(30, 46)), greedy(2))  # 16 tokens: 4 blocks, 3 are free
    c = engine.add_request(list(range(50, 54)), greedy(2))
    engine.step()
    plan = plans.plans[0]
    assert [item.seq_id for item in plan.scheduled] == [a]
    assert plan.waits == (WaitCause(b, "blocks", needs=4, free=3), WaitCause(c, "behind", head=b))


def test_token_budget_chunk_and_seat_limit(hf_model):
    engine, plans = make_engine(hf_model, max_num_batched_tokens=16, max_num_seqs=3)
    a = engine.add_request(list(range(1, 13)), greedy(2))  # 12 tokens
    b = engine.add_request(list(range(20, 28)), greedy(2))  # 8 tokens: 4 fit
    c = engine.add_request(list(range(40, 44)), greedy(2))
    d = engine.add_request(list(range(60, 64)), greedy(2))
    engine.step()
    first = plans.plans[0]
    assert first.chunks == (ChunkCause(b, budget_left=4, remaining=8),)
    assert first.waits == (WaitCause(c, "tokens", by=(a, b)), WaitCause(d, "behind", head=c))
    engine.step()  # b's last 4 tokens and c; d finds the three seats taken
    second = plans.plans[1]
    assert [item.seq_id for item in second.scheduled] == [b, c]
    assert second.waits == (WaitCause(d, "seats", needs=1, free=0),)


def test_preemption_names_the_needer_its_position_and_the_rule(hf_model):
    engine, plans = make_engine(hf_model, num_kv_blocks=4, prefix_caching=False)
    a = engine.add_request(PROMPT[:7], greedy(8))  # 2 blocks each, the pool holds 4
    b = engine.add_request(list(range(100, 107)), greedy(8))
    finish(engine)
    preempting = next(plan for plan in plans.plans if plan.preempted)
    assert preempting.preempted == (b,)
    # a's prompt is 7 tokens; its 2nd sampled token sits at position 8, the first of block 2.
    assert preempting.preemptions == (PreemptCause(b, needer=a, position=8, rule="latest-arrival"),)
    assert b not in {cause.seq_id for cause in preempting.waits}  # its cause is the preemption


@pytest.mark.parametrize("pool, needer_is_a_beam", [(6, False), (8, True)])
def test_a_beam_search_is_preempted_whole_with_the_whole_search_rule(hf_model, pool, needer_is_a_beam):
    """The latest arrival is a beam search of 2 beams: when a sequence needs a block (the older
    greedy request, or with a larger pool one of the beams itself), both beams go, each with the
    rule "whole-search" and the same needer and position."""
    engine, plans = make_engine(hf_model, num_kv_blocks=pool, prefix_caching=False)
    a = engine.add_request(PROMPT[:7], greedy(12))
    search = engine.add_request(list(range(100, 103)), SamplingParams(beam_width=2, max_tokens=8))
    finish(engine)
    plan = next(plan for plan in plans.plans if plan.preempted)
    beams = set(engine.beams(search)) | {s for s in engine.sequences if engine.request(s).beam_of == search}
    assert set(plan.preempted) <= beams and len(plan.preempted) == 2
    assert {p.rule for p in plan.preemptions} == {"whole-search"}
    assert {p.seq_id for p in plan.preemptions} == set(plan.preempted)
    (needer, position), = {(p.needer, p.position) for p in plan.preemptions}
    assert (needer in beams) == needer_is_a_beam and (needer == a) != needer_is_a_beam
    assert position % BS == 0  # the first position of the block it needed


def test_a_fork_without_a_seat_waits_for_one(hf_model):
    """max_num_seqs=1: a running request's fork holds its blocks and waits for the seat."""
    engine, plans = make_engine(hf_model, max_num_seqs=1)
    a = engine.add_request(PROMPT, greedy(6))
    engine.step()
    engine.step()
    child = engine.fork(a, 9, [42])
    engine.step()
    assert plans.plans[-1].waits == (WaitCause(child, "seats", needs=1, free=0),)
    finish(engine)
    assert engine.request(child).finish_reason == "length"


def test_a_beam_search_short_of_blocks_for_its_new_beams_waits_whole_and_the_next_step_says_why(hf_model):
    """After the step that samples its prompt, a search of 3 beams needs a fresh block for each of
    its 2 forks and finds 1 (the other request holds the rest): its beams go back to the queue,
    and the next step's output lists them first among its preempted, rule "search-forks"."""
    from test_fork import PROMPT as LONG_PROMPT

    engine, plans = make_engine(hf_model, num_kv_blocks=15)
    engine.add_request(LONG_PROMPT * 4, greedy(4))
    search = engine.add_request(LONG_PROMPT, SamplingParams(beam_width=3, max_tokens=10))
    finish(engine)
    step = next(i for i, plan in enumerate(plans.plans) if any(p.rule == "search-forks" for p in plan.preemptions))
    plan = plans.plans[step]
    late = [p for p in plan.preemptions if p.rule == "search-forks"]
    beams = [p.seq_id for p in late]
    assert plan.preempted[: len(beams)] == tuple(beams) and search in beams
    assert {(p.needer, p.position) for p in late} == {(search, len(LONG_PROMPT))}  # its first new token
    assert any(item.seq_id == search for item in plans.plans[step - 1].sampling)  # the step that sampled it
    assert not set(beams) & {cause.seq_id for cause in plan.waits}  # their cause is the preemption


def admission(plans: Plans, seq_id: int) -> PrefixCause:
    return next(cause for plan in plans.plans for cause in plan.prefix if cause.seq_id == seq_id)


def test_prefix_hit_names_the_blocks(hf_model):
    engine, plans = make_engine(hf_model)
    a = engine.add_request(PROMPT, greedy(1))
    finish(engine)
    table = next(item.block_ids for plan in plans.plans for item in plan.scheduled if item.seq_id == a)
    b = engine.add_request(PROMPT, greedy(1))
    finish(engine)
    assert admission(plans, a) == PrefixCause(a, (), "not-cached", 0, -1)
    assert admission(plans, b) == PrefixCause(b, tuple(table[:2]), "")


def test_prefix_miss_where_the_prompt_differs(hf_model):
    engine, plans = make_engine(hf_model)
    engine.add_request(PROMPT, greedy(1))
    finish(engine)
    changed = [*PROMPT[:6], 255, *PROMPT[7:]]
    b = engine.add_request(changed, greedy(1))
    finish(engine)
    cause = admission(plans, b)
    assert (len(cause.hit_blocks), cause.miss, cause.miss_block, cause.differs_at) == (1, "not-cached", 1, 6)


def test_prefix_miss_without_a_full_block_or_with_caching_off(hf_model):
    engine, plans = make_engine(hf_model)
    a = engine.add_request(PROMPT[:4], greedy(1))  # less its last token, 3: no full block
    finish(engine)
    assert admission(plans, a) == PrefixCause(a, (), "no-full-block")
    engine, plans = make_engine(hf_model, prefix_caching=False)
    b = engine.add_request(PROMPT, greedy(1))
    finish(engine)
    assert admission(plans, b) == PrefixCause(b, (), "off")


def test_prefix_miss_after_an_eviction_says_when_and_for_whom(hf_model):
    engine, plans = make_engine(hf_model, num_kv_blocks=8)
    engine.add_request(PROMPT, greedy(1))
    finish(engine)
    big = engine.add_request(list(range(100, 131)), greedy(1))  # 31 tokens: all 8 blocks
    finish(engine)
    evicting = next(index for index, plan in enumerate(plans.plans) if plan.evictions)
    assert {e.for_seq for e in plans.plans[evicting].evictions} == {big}
    assert {e.step for e in plans.plans[evicting].evictions} == {evicting}
    c = engine.add_request(PROMPT, greedy(1))
    finish(engine)
    cause = admission(plans, c)
    assert (cause.miss, cause.miss_block, cause.evicted_step, cause.evicted_for) == ("evicted", 0, evicting, big)


def test_a_decode_step_with_nobody_waiting_makes_no_cause(hf_model):
    engine, plans = make_engine(hf_model)
    engine.add_request(PROMPT, greedy(3))
    finish(engine)
    decodes = [plan for plan in plans.plans if plan.phase == "decode"]
    assert decodes and all(
        not (plan.waits or plan.preemptions or plan.chunks or plan.prefix or plan.evictions) for plan in decodes
    )


# -- recorded, saved, shown -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The tiny recorded run with a budget of 8 tokens: chunks, a token-budget wait and one
    behind it, block waits, preemptions, prefix hits and misses (one after an eviction)."""
    run = record_tiny_run(max_num_batched_tokens=8)
    path = tmp_path_factory.mktemp("why") / "run.mltrace"
    save(run.session.trace, path)
    return run.session.trace, path


def first_step(trace: Trace, has) -> int:
    return next(i for i, step in enumerate(trace.steps) if has(step.schedule))


def test_the_causes_are_recorded_and_survive_a_round_trip(recorded):
    trace, path = recorded
    s = trace.steps[1].schedule
    assert [(w.seq_id, w.kind, w.by, w.head) for w in s.waits] == [(2, "tokens", [0, 1], None), (3, "behind", [], 2)]
    assert [(c.seq_id, c.budget_left, c.remaining) for c in s.chunks] == [(1, 1, 9)]
    kinds = {field: any(getattr(step.schedule, field) for step in trace.steps)
             for field in ("waits", "preemptions", "chunks", "prefix", "evictions")}
    assert all(kinds.values()), kinds
    assert any(p.miss == "evicted" and p.evicted_for is not None for step in trace.steps for p in step.schedule.prefix)
    loaded = load(path)
    assert [step.schedule for step in loaded.steps] == [step.schedule for step in trace.steps]


def rewritten(path: Path, out: Path, edit) -> Path:
    """A copy of the trace file at `path` with its JSON document passed through `edit`."""
    with zipfile.ZipFile(path) as zf:
        document, tensors = json.loads(zf.read("trace.json")), zf.read("tensors.safetensors")
    edit(document)
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("trace.json", json.dumps(document))
        zf.writestr("tensors.safetensors", tensors)
    return out


def test_a_file_of_schema_4_opens_without_causes(recorded, tmp_path):
    trace, path = recorded

    def older(document: dict) -> None:
        document["schema_version"] = 4
        for step in document["trace"]["steps"]:
            for field in ("waits", "preemptions", "chunks", "prefix", "evictions"):
                del step["schedule"][field]

    loaded = load(rewritten(path, tmp_path / "v4.mltrace", older))
    assert all(not step.schedule.waits and not step.schedule.prefix for step in loaded.steps)
    assert "Why" not in step_details_html(loaded, 1)


def test_hostile_causes_are_refused(recorded, tmp_path):
    trace, path = recorded
    step = first_step(trace, lambda s: s.evictions)
    prefix = first_step(trace, lambda s: any(p.miss == "evicted" for p in s.prefix))
    miss = next(i for i, p in enumerate(trace.steps[prefix].schedule.prefix) if p.miss == "evicted")
    edits = {
        "the causes in waits name sequences": (1, "waits", 0, "seq_id", 999),
        "names sequences not scheduled": (1, "waits", 0, "by", [3]),
        "had the budget for all": (1, "chunks", 0, "budget_left", 9),
        "an eviction names block": (step, "evictions", 0, "block_id", trace.engine.num_blocks),
        "a later step": (prefix, "prefix", miss, "evicted_step", trace.steps[prefix].engine_step + 1),
    }
    for message, (index, field, row, key, value) in edits.items():
        def edit(document: dict, at=(index, field, row, key), value=value) -> None:
            document["trace"]["steps"][at[0]]["schedule"][at[1]][at[2]][at[3]] = value

        with pytest.raises(TraceError, match=message):
            load(rewritten(path, tmp_path / "hostile.mltrace", edit))
    with pytest.raises(TraceError, match="expected one of"):
        load(rewritten(path, tmp_path / "enum.mltrace", lambda d: d["trace"]["steps"][1]["schedule"]["waits"][0]
                       .update(kind="<b>tokens</b>")))


def test_the_views_say_why(recorded):
    trace, _ = recorded
    details = step_details_html(trace, 1)
    assert "<h4>Why</h4>" in details and "waits: the step&#39;s token budget was used by #0, #1" in details
    assert "waits behind #2, the oldest waiting request" in details
    assert "chunked prefill: the token budget left 1 of its 9 tokens" in details
    hover = pio.to_json(timeline_figure(trace, 1), validate=False)
    assert "waits: the step's token budget was used by #0, #1" in hover
    preempting = first_step(trace, lambda s: s.preemptions)
    p = trace.steps[preempting].schedule.preemptions[0]
    assert f"preempted: #{p.needer} needed a new block for position {p.position}" in hover
    evicting = first_step(trace, lambda s: s.evictions)
    e = trace.steps[evicting].schedule.evictions[0]
    words = f"evicted from the prefix cache at engine step {e.engine_step} to serve #{e.for_seq}"
    assert words in pio.to_json(kv_cache_figure(trace, evicting), validate=False)
    assert f"block {e.block_id}  {words}" in format_step(trace, evicting)
    assert "seq 2  waits: the step's token budget was used by #0, #1" in format_step(trace, 1)
    assert "why: waiting (sequence-steps)" in format_overview(trace)


class CountingList(list):
    """A list that counts the passes made over it."""

    passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()


CAUSES = {
    "waits": lambda seq_id: WaitRecord(seq_id, "behind", head=0),
    "preemptions": lambda seq_id: PreemptRecord(seq_id, 0, 0, "latest-arrival"),
    "chunks": lambda seq_id: ChunkRecord(seq_id, 0, 1),
    "prefix": lambda seq_id: PrefixRecord(seq_id, [], ""),
}


@pytest.mark.parametrize("field", CAUSES)
def test_each_sequences_causes_are_found_without_a_pass_over_the_step(field):
    """The step details and `show --step` ask for each sequence's causes (why_of): a pass over
    the step's causes for each made a file's step of 20,000 waiting sequences take 10 s a
    redraw. One pass indexes a list, again only when it has grown (the recorder appends)."""
    records = CountingList(CAUSES[field](seq_id) for seq_id in range(1000))
    schedule = ScheduleRecord("decode", [], [], [], [], **{field: records})
    assert all(len(why_of(schedule, seq_id)) == 1 for seq_id in range(1000)) and records.passes == 1
    records.append(CAUSES[field](1000))
    assert len(why_of(schedule, 1000)) == 1 and why_of(schedule, 1001) == [] and records.passes == 2
