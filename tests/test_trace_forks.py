"""Forks, copies on write and parallel samples in the trace (schema 3): what the recorder writes
against what the engine did, the copy-on-write breakpoint, old files, and hostile fork records."""

from __future__ import annotations

import json
import zipfile

import pytest
from test_inspector_support import add_forks, record_tiny_run

from inspector import CopyOnWrite, TraceError, load, save
from inspector.trace.codec import encode
from minillama import SamplingParams


@pytest.fixture(scope="module")
def run():
    run = record_tiny_run()
    run.ids_of_forks = add_forks(run)
    return run


@pytest.fixture(scope="module")
def saved(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("forks") / "forks.mltrace"
    save(run.session.trace, path)
    return path


def fork_event(trace, child):
    return next(e for e in trace.events if e.kind == "fork" and e.seq_id == child)


def test_a_user_fork_is_recorded_with_its_shared_blocks_and_copy(run):
    trace, engine, ids = run.session.trace, run.engine, run.ids_of_forks
    parent, child = trace.sequences[ids["parent"]], trace.sequences[ids["fork"]]
    event = fork_event(trace, ids["fork"])
    fork, bs = event.fork, trace.engine.block_size
    position = len(parent.prompt_ids) + 1
    assert (fork.parent_id, fork.position, fork.forced_ids, fork.cause, fork.prefix) == (
        ids["parent"], position, [7], "user", "shared")
    assert child.parent_id == ids["parent"] and child.fork_position == position and child.fork_cause == "user"
    # Its prompt: the parent's first `position` tokens, then the forced one.
    assert child.prompt_ids == (parent.prompt_ids + parent.output_ids)[:position] + [7]
    # The fork shares the parent's full blocks and has a copy of the partial one (the tables as
    # the step that ran next ended with them).
    step = trace.steps[event.step]
    parent_table = step.kv.block_tables()[ids["parent"]]
    child_item = next(s for s in step.schedule.scheduled if s.seq_id == ids["fork"])
    assert fork.shared_blocks == parent_table[: position // bs] == child_item.block_table[: position // bs]
    assert (fork.copy.src_block, fork.copy.num_slots) == (parent_table[position // bs], position % bs)
    assert fork.copy.dst_block == child_item.block_table[position // bs] != fork.copy.src_block
    # Its first step computes only its forced token, and says why it runs.
    assert (child_item.start, child_item.num_tokens, child_item.reason) == (position, 1, "forked")
    # The KV snapshot shows the shared blocks with reference count 2, held by both.
    for block in fork.shared_blocks:
        entry = step.kv.entry(block)
        assert entry.ref_count == 2 and set(entry.owners) == {ids["parent"], ids["fork"]}
    assert "copy on write" in event.message and engine.request(ids["fork"]).fork_prefix == "shared"


def test_samples_are_recorded_as_a_group_with_their_first_token_from_the_leaders_row(run):
    trace, ids = run.session.trace, run.ids_of_forks
    leader_id = ids["samples"]
    sample_id = run.engine.samples(leader_id)[1]
    leader, sample = trace.sequences[leader_id], trace.sequences[sample_id]
    assert leader.group_id == leader_id and sample.group_id == leader_id
    assert (sample.sample_index, sample.fork_cause, sample.parent_id) == (1, "sample", leader_id)
    assert sample.prompt_ids == leader.prompt_ids and sample.fork_position == len(leader.prompt_ids)
    assert leader.params["n"] == 2
    # Both first tokens were drawn in one step from the leader's logits row: one distribution.
    step = trace.steps[sample.token_steps[0]]
    assert leader.token_steps[0] == step.index
    first, other = step.token_of(leader_id).logits, step.token_of(sample_id).logits
    assert first.top_ids == other.top_ids and first.entropy == other.entropy
    assert other.sampled_prob == pytest.approx(other.top_probs[other.top_ids.index(sample.output_ids[0])]
                                               if sample.output_ids[0] in other.top_ids else other.sampled_prob)
    # The sample shares the prompt's full blocks: never scheduled at its first token's step.
    assert sample_id not in {s.seq_id for s in step.schedule.scheduled}
    event = fork_event(trace, sample_id)
    assert event.step == step.index and event.fork.cause == "sample" and event.fork.forced_ids == sample.output_ids[:1]


def test_the_trace_with_forks_round_trips(run, saved):
    loaded = load(saved)
    tensors_a, tensors_b = {}, {}
    assert encode(run.session.trace, tensors_a, "t") == encode(loaded, tensors_b, "t")
    assert loaded.forks() == run.session.trace.forks() and len(loaded.forks()) == 2


def test_copy_on_write_breakpoint_fires_where_the_copy_was_made(run):
    trace, ids = run.session.trace, run.ids_of_forks
    event = fork_event(trace, ids["fork"])
    # Two copies: the user's fork, and the sample's (its prompt ends inside a block too).
    hits = [(s.index, h.seq_id) for s in trace.steps for h in CopyOnWrite().hits(trace, s)]
    sample = run.engine.samples(ids["samples"])[1]
    assert sorted(hits) == sorted([(event.step, ids["fork"]), (fork_event(trace, sample).step, sample)])
    watched = [(s.index, h) for s in trace.steps for h in CopyOnWrite(seq_id=ids["parent"]).hits(trace, s)]
    assert [(index, hit.seq_id) for index, hit in watched] == [(event.step, ids["fork"])]
    assert "copy on write of block" in watched[0][1].reason


def test_a_live_run_stops_at_a_copy_on_write():
    run = record_tiny_run()
    session = run.session
    parent = session.add(list(range(1, 10)), SamplingParams(temperature=0, max_tokens=4))
    session.step()
    session.fork(parent, 9, [3])  # 9 tokens: 2 full blocks of 4 and one slot of the third
    result = session.run(until=[CopyOnWrite()])
    assert result.breakpoint is not None and result.steps == 1 and "slot(s)" in result.reason


def edited(saved, tmp_path, edit) -> object:
    with zipfile.ZipFile(saved) as zf:
        document, tensors = json.loads(zf.read("trace.json")), zf.read("tensors.safetensors")
    edit(document)
    path = tmp_path / "edited.mltrace"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("trace.json", json.dumps(document))
        zf.writestr("tensors.safetensors", tensors)
    return path


def test_a_schema_2_file_still_opens(tmp_path):
    run = record_tiny_run()
    path = tmp_path / "v3.mltrace"
    save(run.session.trace, path)
    new_fields = {"sequences": ("parent_id", "fork_position", "fork_cause", "group_id", "sample_index",
                                "pruned_step", "beam_score")}

    def to_schema_2(document):
        document["schema_version"] = 2
        trace = document["trace"]
        for seq in trace["sequences"].values():
            for name in new_fields["sequences"]:
                del seq[name]
        for step in trace["steps"]:
            for item in step["schedule"]["scheduled"]:
                del item["reason"]
        for event in trace["events"]:
            del event["fork"]

    old = load(edited(path, tmp_path, to_schema_2))
    assert len(old.steps) == len(run.session.trace.steps) and old.forks() == []
    assert all(s.parent_id is None for s in old.sequences.values())


def _fork_event_json(document, child):
    return next(e for e in document["trace"]["events"] if e["kind"] == "fork" and e["seq_id"] == child)


@pytest.mark.parametrize(("what", "message"), [
    ("child-mismatch", "must name the event's sequence as its child"),
    ("parent-unknown", "must name the event's sequence as its child and another as its parent"),
    ("block-outside", "names blocks outside"),
    ("copy-too-many-slots", "moves 1..4 slots"),
    ("copy-same-block", "between two different blocks"),
    ("no-forced", "forces at least one token"),
    ("texts-mismatch", "forces at least one token, each with its text"),
    ("fork-without-record", "carries its fork"),
    ("events-out-of-order", "before the event ahead of it"),
    ("pruned-without-step", "names the step"),
    ("parent-self", "is not another sequence"),
    ("sample-token-unexplained", "forked"),
    # The lineage, recorded twice (the sequences' parents, the fork events), must say one thing.
    ("parent-cycle", "is not another sequence of the trace, made before it"),
    ("record-parent-differs", "disagree with its fork event's"),
    ("record-position-differs", "disagree with its fork event's"),
    ("record-cause-differs", "disagree with its fork event's"),
    ("fork-without-event", "each fork must have one fork event, and only a fork"),
    ("fork-event-twice", "each fork must have one fork event, and only a fork"),
    ("prefix-differs", "does not start with that sequence's tokens up to there"),
])
def test_hostile_fork_records_are_refused(run, saved, tmp_path, what, message):
    ids = run.ids_of_forks

    def edit(document):
        trace = document["trace"]
        fork = _fork_event_json(document, ids["fork"])
        record = fork["fork"]
        if what == "child-mismatch":
            record["child_id"] = ids["parent"]
        elif what == "parent-unknown":
            record["parent_id"] = 9999
        elif what == "block-outside":
            record["shared_blocks"] = [trace["engine"]["num_blocks"]]
        elif what == "copy-too-many-slots":
            record["copy"]["num_slots"] = trace["engine"]["block_size"] + 1
        elif what == "copy-same-block":
            record["copy"]["dst_block"] = record["copy"]["src_block"]
        elif what == "no-forced":
            record["forced_ids"], record["forced_texts"] = [], []
        elif what == "texts-mismatch":
            record["forced_texts"] = []
        elif what == "fork-without-record":
            fork["fork"] = None
        elif what == "events-out-of-order":
            trace["events"][0]["step"] = len(trace["steps"])
        elif what == "pruned-without-step":
            trace["sequences"][str(ids["fork"])]["finish_reason"] = "pruned"
        elif what == "parent-self":
            trace["sequences"][str(ids["fork"])]["parent_id"] = ids["fork"]
        elif what == "parent-cycle":  # the parent made a fork of its own fork
            parent = trace["sequences"][str(ids["parent"])]
            parent["parent_id"], parent["fork_position"] = ids["fork"], 1
        elif what == "record-parent-differs":
            record["parent_id"] = 0
        elif what == "record-position-differs":
            record["position"] -= 1
        elif what == "record-cause-differs":
            record["cause"] = "beam"
        elif what == "fork-without-event":
            trace["events"].remove(fork)
        elif what == "fork-event-twice":
            trace["events"].insert(trace["events"].index(fork), fork)
        elif what == "prefix-differs":
            child = trace["sequences"][str(ids["fork"])]
            child["prompt_ids"][0] = (child["prompt_ids"][0] + 1) % trace["model"]["vocab_size"]
        elif what == "sample-token-unexplained":
            sample = run.engine.samples(ids["samples"])[1]
            sample_fork = _fork_event_json(document, sample)
            sample_fork["fork"]["cause"] = "user"  # then the sample's first token has no reason to be there
            trace["sequences"][str(sample)]["fork_cause"] = "user"  # (its record says the same)

    with pytest.raises(TraceError, match=message):
        load(edited(saved, tmp_path, edit))


def test_show_tells_the_forks(run):
    from inspector import format_overview, format_step

    trace, ids = run.session.trace, run.ids_of_forks
    overview = format_overview(trace)
    fork = trace.sequences[ids["fork"]]
    assert f"#{ids['fork']} <- #{ids['parent']} at token {fork.fork_position} (user)" in overview
    step = format_step(trace, fork_event(trace, ids["fork"]).step)
    assert "forks and prunes" in step
    assert "copy on write: block" in step and "forked" in step
