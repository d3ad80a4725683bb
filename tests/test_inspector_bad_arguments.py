"""Bad arguments to the inspector's public calls are refused before anything changes.

Each call below is given a value of the wrong type (bool, float, str, None, a list), out of
range (negative, NaN, 2**70) or of the wrong kind (a class for an instance, one str for a list),
and must raise ArgumentError (or NoSuchStep, or TraceError for a path nothing can be written to)
whose message names the argument: never a bare TypeError or IndexError from deep inside, never a
silent no-op. And nothing changes: the engine has not stepped, the trace has no new step, no
request was queued, no file was written.
"""

from __future__ import annotations

import copy
import io
import math
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import pytest

from inspector import (
    ArgumentError,
    AtStep,
    CapturePolicy,
    CopyOnWrite,
    Cursor,
    DebugSession,
    EntropyAbove,
    KVUsageAbove,
    NoSuchStep,
    Preemption,
    PrefixCacheHit,
    Recorder,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
    TraceError,
    diff_traces,
    export_chrome_trace,
    format_diff,
    format_overview,
    format_step,
    load,
    replay,
    save,
)
from inspector.views import (
    Selection,
    attention_figure,
    block_tables_html,
    branch_html,
    fork_choices_html,
    kv_cache_figure,
    logit_lens_figure,
    logits_figure,
    logits_history_figure,
    step_details_html,
    text_html,
    timeline_figure,
)
from minillama import EngineConfig, LLMEngine, SamplingParams

HUGE = 2**70
NAN = math.nan
# Not an int: bool (an int to Python), floats (whole or not, NaN), a str of digits, None, a list.
NOT_INTS = [True, False, 1.5, 2.0, NAN, "1", None, [0]]


@pytest.fixture(scope="module")
def session(embedded_dir):
    """The embedded model with one long greedy request under way: a bad argument taken as a
    good one would step it, which the checks below see."""
    engine = LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=16, block_size=8,
                                                                  max_model_len=128))
    session = DebugSession(engine)
    session.add("Hello", SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))
    session.run(max_steps=3)
    return session


@pytest.fixture(scope="module")
def trace(session):
    return session.trace


@pytest.fixture(scope="module")
def saved(trace, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "run.mltrace"
    save(trace, path)
    return path


@contextmanager
def unchanged(session: DebugSession):
    """Nothing the session holds moves inside the block: steps, requests, observers, cursor."""
    engine = session.engine

    def state() -> tuple:
        return (engine.step_count, len(session.trace.steps), sorted(engine.sequences), len(engine.observers),
                session.cursor.index, len(session.trace.sequences), len(session.trace.events))

    before = state()
    yield
    assert state() == before


def refused(call, fragment: str, error: type[Exception] = ArgumentError) -> str:
    """The message of the `error` that `call()` raises; it must name `fragment` (the argument)."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert fragment in message and "\n" not in message and len(message) < 300, message
    return message


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the cursor and format_step ----------------------------------------------------------------


@pytest.mark.parametrize("index", NOT_INTS)
def test_seek_refuses_an_index_that_is_not_an_int(session, index):
    with unchanged(session):
        refused(lambda: session.seek(index), "index must be an integer")
        refused(lambda: Cursor(session.trace).seek(index), "index must be an integer")


@pytest.mark.parametrize("head", [*NOT_INTS, -1, 9, HUGE])  # the embedded model has heads 0 to 8
def test_rank_of_head_refuses_a_head_the_model_lacks(trace, head):
    with pytest.raises(ArgumentError, match="head must be an integer"):
        trace.model.rank_of_head(head)
    assert [trace.model.rank_of_head(h) for h in (0, 8)] == [0, 0]


@pytest.mark.parametrize("past", ["end", "before", "huge", "-huge"])
def test_seek_refuses_a_step_past_either_end(session, past):
    count = len(session.trace.steps)
    index = {"end": count, "before": -count - 1, "huge": HUGE, "-huge": -HUGE}[past]
    with unchanged(session):
        message = refused(lambda: session.seek(index), "index", NoSuchStep)
        assert f"the trace has {count} step(s)" in message
    assert issubclass(NoSuchStep, IndexError)  # what a list index past the end raises


def test_seek_in_an_empty_trace_says_there_is_no_step(trace):
    empty = copy.copy(trace)
    empty.steps = []
    assert "no step yet" in refused(lambda: Cursor(empty).seek(0), "index", NoSuchStep)


@pytest.mark.parametrize("index", [*NOT_INTS, HUGE, -HUGE])
def test_format_step_refuses_a_bad_index(trace, index):
    error = NoSuchStep if isinstance(index, int) and not isinstance(index, bool) else ArgumentError
    refused(lambda: format_step(trace, index), "index", error)


def test_format_step_counts_negative_indices_from_the_end_as_seek_does(trace):
    last = len(trace.steps) - 1
    assert format_step(trace, -1) == format_step(trace, last)


@pytest.mark.parametrize("call", [format_overview, lambda t: format_step(t, 0)], ids=["overview", "step"])
@pytest.mark.parametrize("not_a_trace", [None, "run.mltrace", 5])
def test_the_text_exports_refuse_what_is_no_trace(call, not_a_trace):
    refused(lambda: call(not_a_trace), "trace must be of type Trace")


# -- run, run_iter and their breakpoints ---------------------------------------------------------


@pytest.mark.parametrize("max_steps", ["2", -1, 0, NAN, True, False, 1.5, 2.0, HUGE, [1]])
def test_run_refuses_a_bad_max_steps(session, max_steps):
    with unchanged(session):
        refused(lambda: session.run(max_steps=max_steps), "max_steps")
        refused(lambda: session.run_iter(max_steps=max_steps), "max_steps")  # at the call, not at next()


BAD_BREAKPOINTS = {
    "AtStep-str": (lambda: AtStep("1"), "AtStep.index"),
    "AtStep-negative": (lambda: AtStep(-1), "AtStep.index"),
    "AtStep-float": (lambda: AtStep(1.5), "AtStep.index"),
    "AtStep-bool": (lambda: AtStep(True), "AtStep.index"),
    "AtStep-None": (lambda: AtStep(None), "AtStep.index"),
    "AtStep-nan": (lambda: AtStep(NAN), "AtStep.index"),
    "AtStep-huge": (lambda: AtStep(HUGE), "AtStep.index"),
    "SequenceFinished-str": (lambda: SequenceFinished("0"), "SequenceFinished.seq_id"),
    "SequenceFinished-negative": (lambda: SequenceFinished(-1), "SequenceFinished.seq_id"),
    "SequenceFinished-bool": (lambda: SequenceFinished(True), "SequenceFinished.seq_id"),
    "Preemption-list": (lambda: Preemption([1]), "Preemption.seq_id"),
    "Preemption-float": (lambda: Preemption(1.5), "Preemption.seq_id"),
    "PrefixCacheHit-str": (lambda: PrefixCacheHit("x"), "PrefixCacheHit.seq_id"),
    "CopyOnWrite-huge": (lambda: CopyOnWrite(HUGE), "CopyOnWrite.seq_id"),
    "EntropyAbove-nan": (lambda: EntropyAbove(NAN), "EntropyAbove.threshold"),
    "EntropyAbove-inf": (lambda: EntropyAbove(math.inf), "EntropyAbove.threshold"),
    "EntropyAbove-str": (lambda: EntropyAbove("x"), "EntropyAbove.threshold"),
    "EntropyAbove-negative": (lambda: EntropyAbove(-1), "EntropyAbove.threshold"),
    "EntropyAbove-bool": (lambda: EntropyAbove(True), "EntropyAbove.threshold"),
    "EntropyAbove-None": (lambda: EntropyAbove(None), "EntropyAbove.threshold"),
    "EntropyAbove-seq_id": (lambda: EntropyAbove(1.0, seq_id=0.5), "EntropyAbove.seq_id"),
    "SampledProbBelow-str": (lambda: SampledProbBelow("a"), "SampledProbBelow.threshold"),
    "SampledProbBelow-zero": (lambda: SampledProbBelow(0), "SampledProbBelow.threshold"),
    "SampledProbBelow-above-one": (lambda: SampledProbBelow(1.5), "SampledProbBelow.threshold"),
    "SampledProbBelow-nan": (lambda: SampledProbBelow(NAN), "SampledProbBelow.threshold"),
    "KVUsageAbove-None": (lambda: KVUsageAbove(None), "KVUsageAbove.percent"),
    "KVUsageAbove-100": (lambda: KVUsageAbove(100), "KVUsageAbove.percent"),
    "KVUsageAbove-negative": (lambda: KVUsageAbove(-1), "KVUsageAbove.percent"),
    "KVUsageAbove-nan": (lambda: KVUsageAbove(NAN), "KVUsageAbove.percent"),
    "KVUsageAbove-str": (lambda: KVUsageAbove("50"), "KVUsageAbove.percent"),
    "TextMatches-None": (lambda: TextMatches(None), "TextMatches.pattern"),
    "TextMatches-int": (lambda: TextMatches(5), "TextMatches.pattern"),
    "TextMatches-bytes": (lambda: TextMatches(b"x"), "TextMatches.pattern"),
    "TextMatches-list": (lambda: TextMatches(["Paris"]), "TextMatches.pattern"),
    "TextMatches-seq_id": (lambda: TextMatches("Paris", seq_id="0"), "TextMatches.seq_id"),
}


@pytest.mark.parametrize("case", BAD_BREAKPOINTS)
def test_a_breakpoint_checks_its_fields_when_it_is_made(case):
    make, fragment = BAD_BREAKPOINTS[case]
    refused(make, fragment)


BAD_UNTIL = {"class": [Preemption], "int": [3], "str": ["Paris"], "None": [None], "mixed": [Preemption(), 3],
             "one-str": "Paris", "one-int": 5, "none": None, "one-class": Preemption, "dict": {"at": AtStep(1)}}


@pytest.mark.parametrize("until", BAD_UNTIL.values(), ids=BAD_UNTIL.keys())
def test_run_refuses_until_that_is_not_breakpoints_before_the_first_step(session, until):
    with unchanged(session):
        refused(lambda: session.run(until=until, max_steps=1), "until")
        refused(lambda: session.run_iter(until=until, max_steps=1), "until")


def test_run_takes_one_breakpoint_or_a_generator_of_them(session):
    at = len(session.trace.steps)
    result = session.run(until=AtStep(at), max_steps=3)
    assert result.steps == 1 and isinstance(result.breakpoint, AtStep)
    result = session.run(until=(bp for bp in [AtStep(at + 1)]), max_steps=3)  # read once, not twice
    assert result.steps == 1 and isinstance(result.breakpoint, AtStep)


# -- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompts", ["Hello", b"Hello", None, 5, 1.5])
def test_add_batch_refuses_what_is_no_list_of_prompts(session, prompts):
    with unchanged(session):
        message = refused(lambda: session.add_batch(prompts), "prompts")
    if isinstance(prompts, str):
        assert "put it in a list" in message


@pytest.mark.parametrize("prompts, remedy", [
    ({"Hello": 1}, "its keys would be read"),
    ({"Hello": [1, 2], "Bye": [3]}, "its keys would be read"),
    (MappingProxyType({"Hello": 1}), "its keys would be read"),
    ({"Hello", "Bye"}, "a set has no order"),
    (frozenset({"Hello"}), "a set has no order"),
    ({(1, 2), (3,)}, "a set has no order"),
], ids=["dict", "dict-of-ids", "mapping", "set", "frozenset", "set-of-ids"])
def test_add_batch_refuses_a_mapping_or_a_set(session, prompts, remedy):
    """A dict was queued as its keys, a set in an order that is no one's (the ids returned
    follow the order of `prompts`, so which id is which prompt was left to chance)."""
    with unchanged(session):
        message = refused(lambda: session.add_batch(prompts), "prompts must be a list")
    assert remedy in message and type(prompts).__name__ in message


def test_add_batch_takes_the_keys_of_a_dict_in_their_order(session):
    """dict.keys() is ordered (insertion order): only the dict itself is ambiguous."""
    ids = session.add_batch({"Hello": 1, "Bye": 2}.keys())
    assert [session.trace.sequences[i].prompt_text for i in ids] == ["Hello", "Bye"]
    for seq_id in ids:
        session.abort(seq_id)


@pytest.mark.parametrize("chat", [1, "yes", None])
def test_add_batch_refuses_a_chat_that_is_not_a_bool(session, chat):
    with unchanged(session):
        refused(lambda: session.add_batch(["Hello"], chat=chat), "chat")
        refused(lambda: session.add("Hello", chat=chat), "chat")


def test_add_batch_reads_a_generator_once(session):
    ids = session.add_batch(prompt for prompt in ([1, 2, 3], [4, 5]))
    assert len(ids) == 2 and all(i in session.engine.sequences for i in ids)
    for seq_id in ids:
        session.abort(seq_id)
    assert not any(i in session.engine.sequences for i in ids)


@pytest.mark.parametrize("seq_id", ["0", 1.5, True, None, -1, HUGE])
def test_abort_refuses_a_bad_seq_id(session, seq_id):
    with unchanged(session):
        refused(lambda: session.abort(seq_id), "seq_id")


# -- the capture policy ----------------------------------------------------------------------


BAD_POLICIES = {
    "top_k": [0, -1, "5", True, 1.5, None, NAN, HUGE],
    "memory_budget": [-1, None, 1.5, "1", True, NAN, HUGE],
    "layers": [5, "0", (True,), (1.5,), (-1,), (0, 0), [None], (HUGE,), {0: 1}, {0, 1.5}],
    "attention_requests": [5, "01", (True,), (-1,), 1.5],
    "attention_seqs": [(1.5,), 3, ("0",)],
    "attention": ["yes", 1, None],
    "logit_lens": [1, "no"],
}


@pytest.mark.parametrize("field,value", [(f, v) for f, values in BAD_POLICIES.items() for v in values])
def test_capture_policy_checks_its_fields_when_it_is_made(field, value):
    refused(lambda: CapturePolicy(**{field: value}), f"CapturePolicy.{field}")


def test_capture_policy_takes_any_iterable_as_a_tuple():
    policy = CapturePolicy(layers=[0, 1], attention_requests=(i for i in range(3)))
    assert policy.layers == (0, 1) and policy.attention_requests == (0, 1, 2)


def test_capture_policy_takes_a_set_sorted():
    """A set of distinct layers is what a policy means; its order is none, so it is sorted."""
    policy = CapturePolicy(layers={3, 1, 2}, attention_seqs=frozenset({9, 4}))
    assert policy.layers == (1, 2, 3) and policy.attention_seqs == (4, 9)


def test_a_layer_the_model_lacks_is_refused_when_the_policy_meets_the_model(session):
    layers = session.engine.model_config.num_hidden_layers
    with unchanged(session):
        policy = CapturePolicy(layers=(0, layers))
        assert f"layer {layers}" in refused(lambda: DebugSession(session.engine, policy), "CapturePolicy.layers")


@pytest.mark.parametrize("make", [lambda s: DebugSession("engine"), lambda s: DebugSession(s.engine, policy="all"),
                                  lambda s: Recorder(None), lambda s: Recorder(s.engine, CapturePolicy)],
                         ids=["engine-str", "policy-str", "recorder-engine", "recorder-policy-class"])
def test_the_session_and_the_recorder_check_their_arguments_before_attaching(session, make):
    with unchanged(session):
        refused(lambda: make(session), "must be of type")


# -- save, load, export ------------------------------------------------------------------------


@pytest.mark.parametrize("not_a_trace", [None, 5, "x", "session"])
def test_save_refuses_what_is_no_trace(session, tmp_path, not_a_trace):
    value = session if not_a_trace == "session" else not_a_trace
    refused(lambda: save(value, tmp_path / "x.mltrace"), "trace must be of type Trace")
    assert written(tmp_path) == []


@pytest.mark.parametrize("path", [None, 5, b"x.mltrace", "", "a\x00b.mltrace", io.BytesIO()])
def test_save_refuses_what_is_no_file_path(trace, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    refused(lambda: save(trace, path), "path")
    assert written(tmp_path) == []


WHERE = {
    "folder": (lambda tmp: tmp, "is not a regular file but a folder"),
    "missing-folder": (lambda tmp: tmp / "missing" / "x.mltrace", "there is no folder"),
    # pathlib answers False for a missing path, but let OSError through for a name too long.
    "name-too-long": (lambda tmp: tmp / ("t" * 300 + ".mltrace"), "File name too long; not written"),
}


@pytest.mark.parametrize("where", WHERE)
def test_save_and_export_refuse_a_path_where_nothing_can_be_written(trace, tmp_path, where):
    make, fragment = WHERE[where]
    target = make(tmp_path)
    refused(lambda: save(trace, target), fragment, TraceError)
    refused(lambda: export_chrome_trace(trace, target), fragment, TraceError)
    assert written(tmp_path) == []


@pytest.mark.parametrize("field", ["sampled_prob", "entropy"])
@pytest.mark.parametrize("value", [NAN, -math.inf])
def test_save_refuses_a_non_finite_number_naming_its_field(trace, tmp_path, field, value):
    odd = copy.deepcopy(trace)
    token = next(t for s in odd.steps for t in s.tokens if t.logits is not None)
    setattr(token.logits, field, value)
    refused(lambda: save(odd, tmp_path / "x.mltrace"), f".logits.{field} is {value!r}", TraceError)
    assert written(tmp_path) == []


def test_save_refuses_a_non_finite_tensor_naming_it(trace, tmp_path):
    odd = copy.deepcopy(trace)
    store = next(iter(odd.attention.values()))
    store.q[(0,) * store.q.dim()] = math.nan
    refused(lambda: save(odd, tmp_path / "x.mltrace"), "not finite; not saved", TraceError)
    assert written(tmp_path) == []


@pytest.mark.parametrize("path", [b"run.mltrace", io.BytesIO(b"PK"), 3, None, 1.5, "", "/tmp/a\x00b"])
def test_load_refuses_what_is_no_file_path(path):
    refused(lambda: load(path), "path")


@pytest.mark.parametrize("max_bytes", [None, "1", NAN, 0, -1, True, 1.5, HUGE])
def test_load_refuses_a_bad_max_bytes(saved, max_bytes):
    refused(lambda: load(saved, max_bytes=max_bytes), "max_bytes")


def test_load_reads_what_save_wrote(saved, trace):
    assert len(load(saved).steps) == len(trace.steps)


@pytest.mark.parametrize("path", [None, 5, b"t.json", "", "a\x00b.json"])
def test_export_chrome_refuses_what_is_no_file_path(trace, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    refused(lambda: export_chrome_trace(trace, path), "path")
    refused(lambda: export_chrome_trace(None, tmp_path / "t.json"), "trace must be of type Trace")
    assert written(tmp_path) == []


# -- diff and replay -----------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ["a-None", "b-None", "a-str", "b-session"])
def test_diff_traces_refuses_what_is_no_trace(session, trace, pair):
    side, kind = pair.split("-")
    bad = {"None": None, "str": "run.mltrace", "session": session}[kind]
    a, b = (bad, trace) if side == "a" else (trace, bad)
    refused(lambda: diff_traces(a, b), f"{side} must be of type Trace")


def test_format_diff_checks_its_arguments(trace):
    refused(lambda: format_diff(None), "diff must be of type TraceDiff")
    refused(lambda: format_diff(diff_traces(trace, trace), tokens="yes"), "tokens")


BAD_REPLAYS = {
    "max_steps-str": (dict(max_steps="x"), "max_steps"),
    "max_steps-zero": (dict(max_steps=0), "max_steps"),
    "max_steps-float": (dict(max_steps=1.5), "max_steps"),
    "max_steps-bool": (dict(max_steps=True), "max_steps"),
    "max_steps-nan": (dict(max_steps=NAN), "max_steps"),
    "max_steps-huge": (dict(max_steps=HUGE), "max_steps"),
    "engine-str": (dict(engine="x"), "engine"),
    "engine-int": (dict(engine=5), "engine"),
    "model-int": (dict(model=5), "model"),
    "model-bytes": (dict(model=b"dir"), "model"),
    "alone": (dict(alone="yes"), "alone"),
    "force": (dict(force=1), "force"),
    "progress": (dict(progress=None), "progress"),
    "policy": (dict(policy="none"), "policy"),
    "on_note": (dict(on_note=5), "on_note"),
    "on_step": (dict(on_step="x"), "on_step"),
    "step_lock": (dict(step_lock=5), "step_lock"),
}


@pytest.mark.parametrize("case", BAD_REPLAYS)
def test_replay_checks_its_arguments_before_anything_runs(session, trace, case):
    kwargs, fragment = BAD_REPLAYS[case]
    with unchanged(session):
        refused(lambda: replay(trace, **{"engine": session.engine, **kwargs}), fragment)
    refused(lambda: replay(None, engine=session.engine), "trace must be of type Trace")


# -- the views: a bad index is a placeholder (they never raise), a bad Selection is refused -----

VIEWS = [timeline_figure, text_html, step_details_html, block_tables_html, kv_cache_figure, attention_figure,
         logits_figure, logits_history_figure, logit_lens_figure, branch_html, fork_choices_html]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
@pytest.mark.parametrize("index", [None, 1.5, "1", True, [0], NAN])
def test_a_view_given_no_step_index_says_so(trace, view, index):
    shown = view(trace, index)
    text = shown if isinstance(shown, str) else shown.layout.annotations[0].text
    assert "a step is an integer" in text


SELECTIONS = {
    "seq_id": ["0", 1.5, [0], True, -1, HUGE],
    "layer": [None, 1.5, "0", True, -1, HUGE],
    "head": [1.5, "a", True, -1, HUGE],
    "full_matrix": [1, "yes", None],
}


@pytest.mark.parametrize("field,value", [(f, v) for f, values in SELECTIONS.items() for v in values])
def test_selection_checks_its_fields_when_it_is_made(field, value):
    refused(lambda: Selection(**{field: value}), f"Selection.{field}")


@pytest.mark.parametrize("call, name", [
    (lambda t: t.attention_row(0, 0, True, 3), "head"),
    (lambda t: t.attention_row(0, 0, 0, True), "query_pos"),
    (lambda t: t.attention_row(0, 0, 1.5, 3), "head"),
    (lambda t: t.attention_row(0, 0, "0", 3), "head"),
    (lambda t: t.attention_row(0, True, 0, 3), "layer"),
    (lambda t: t.attention_row(True, 0, 0, 3), "seq_id"),
    (lambda t: t.text_until(0, 1.5), "index"),
    (lambda t: t.text_until(0, NAN), "index"),
    (lambda t: t.text_until(99, 3), "no sequence 99"),
], ids=["head-bool", "pos-bool", "head-float", "head-str", "layer-bool", "seq-bool", "index-float", "index-nan",
        "unknown-seq"])
def test_trace_queries_refuse_what_is_no_index(trace, call, name):
    """attention_row and text_until took True as 1 and handed 1.5 or "0" to torch's indexing
    (a RuntimeError about batch2's shape); an unknown sequence was a KeyError."""
    refused(lambda: call(trace), name)


@pytest.mark.parametrize("query", ["events_at", "forks_at", "copies_at"])
@pytest.mark.parametrize("index", NOT_INTS + [-1, HUGE])
def test_the_event_queries_refuse_what_is_no_step_index(trace, query, index):
    """events_at (which forks_at and copies_at ask) read True as step 1 and compared 1.5, NaN
    or "0" with the events' steps: a wrong answer or a TypeError, never a message."""
    refused(lambda: getattr(trace, query)(index), "index must be an integer")


def test_the_event_queries_take_a_step_past_the_last(trace):
    """Events made after the last step (an add, a fork) carry the next step's index."""
    assert trace.events_at(0) == [e for e in trace.events if e.step == 0]
    assert trace.events_at(len(trace.steps)) == [e for e in trace.events if e.step == len(trace.steps)]
