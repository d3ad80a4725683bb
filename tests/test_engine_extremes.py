"""The engine API at its edges: values that passed validation and then failed a step (taking
the batch's other requests with them), or sampled token 0 in silence; observers that raise
mid-step; calls whose arguments were accepted and then half-done. Each is refused up front or
handled whole, and the other requests go on as if nothing had happened."""

from __future__ import annotations

import numpy as np
import pytest

from minillama import (
    LLM,
    ConfigError,
    EngineConfig,
    InvalidRequestError,
    LLMEngine,
    ModelConfig,
    ModelLoadError,
    Observer,
    ObserverError,
    SamplingParams,
    check_text,
)

GREEDY = SamplingParams(temperature=0, max_tokens=4)
PROMPT = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def base(embedded_dir):
    return LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=64, max_model_len=256))


@pytest.fixture
def engine(base):
    """A fresh engine on the module's weights (LLMEngine.sharing_weights): its own cache and queue."""
    return LLMEngine.sharing_weights(base, EngineConfig(device="cpu", num_kv_blocks=64, max_model_len=256))


def run(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> list[list[int]]:
    ids = [engine.add_request(p, params) for p, params in requests]
    while engine.has_unfinished():
        engine.step()
    return [list(engine.request(i).output_token_ids) for i in ids]


def test_extreme_but_valid_sampling_values_sample_sensibly_beside_a_greedy_request(engine):
    alone = run(engine, [(PROMPT, GREEDY)])[0]
    extremes = [SamplingParams(temperature=10**30, max_tokens=4),  # an int past int64: the sampler used to fail
                SamplingParams(temperature=1e-300, max_tokens=4),  # 0 in fp32: sampled token 0 in silence
                SamplingParams(temperature=0.7, top_p=1e-46, max_tokens=4)]  # top_p 0 in fp32: the same
    outputs = run(engine, [(PROMPT, GREEDY), *((PROMPT, p) for p in extremes)])
    assert outputs[0] == alone
    assert outputs[2] == alone and outputs[3] == alone  # below GREEDY_BELOW, and the top token only: greedy
    assert len(outputs[1]) == 4 and engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


@pytest.mark.parametrize("field, value", [
    ("temperature", 10**400), ("top_p", 10**400), ("length_penalty", 10**400),
    ("early_stopping", np.array([1, 2])), ("temperature", np.array([0.5, 1.0])),
])
def test_values_no_float_holds_or_no_step_survives_are_refused(engine, field, value):
    with pytest.raises(InvalidRequestError, match=field):
        engine.add_request(PROMPT, SamplingParams(**{field: value}))
    assert not engine.has_unfinished()


@pytest.mark.parametrize("penalty", [1e308, -1e308])
def test_a_beam_search_with_an_extreme_length_penalty_runs_to_the_end(engine, penalty):
    """length ** 1e308 leaves float's range: it used to raise OverflowError in the check of
    whether a running beam can still win (early_stopping "never"), and every later step failed."""
    params = SamplingParams(beam_width=2, max_tokens=6, length_penalty=penalty, early_stopping="never",
                            stop_token_ids=tuple(range(2, 3000)))
    outputs = run(engine, [(PROMPT, GREEDY), (PROMPT, params)])
    assert outputs[0] == run(engine, [(PROMPT, GREEDY)])[0]
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


@pytest.mark.parametrize("field, value", [
    ("kv_cache_memory_gb", 10**400), ("gpu_memory_utilization", 10**400), ("dtype", np.array([1, 2])),
    ("attention", np.array(["a"])), ("async_scheduling", np.array([1])),
])
def test_engine_settings_that_failed_later_are_refused_naming_them(field, value):
    with pytest.raises(ConfigError, match=field):
        EngineConfig(**{"device": "cpu", field: value}).validate()


def test_a_batch_size_whose_tables_do_not_fit_is_refused_naming_them(base):
    """2**31 sequences passed validation, then numpy asked for 256 GiB of decode tables."""
    with pytest.raises(ConfigError, match="the decode block tables .* --max-num-seqs"):
        LLMEngine.sharing_weights(base, EngineConfig(device="cpu", num_kv_blocks=16, max_num_seqs=2**31 - 1))


class Raising(Observer):
    """Raises in one hook, once."""

    def __init__(self, hook: str):
        self.hook, self.calls = hook, 0
        setattr(self, hook, self._raise)

    def _raise(self, *args: object) -> None:
        self.calls += 1
        raise RuntimeError(f"boom in {self.hook}")


HOOK_REQUESTS = {
    "on_schedule": SamplingParams(temperature=0, max_tokens=4),
    "on_logits": SamplingParams(temperature=0, max_tokens=4),
    "on_step_end": SamplingParams(temperature=0, max_tokens=4),
    "on_fork": SamplingParams(temperature=0.8, seed=1, n=2, max_tokens=4),  # samples are forks of the prompt
    "on_prune": SamplingParams(beam_width=2, max_tokens=4),
}


@pytest.mark.parametrize("hook", HOOK_REQUESTS)
def test_an_observer_that_raises_is_detached_and_the_engine_finishes_the_step_whole(engine, hook):
    alone = run(engine, [(PROMPT, GREEDY)])[0]
    observer = Raising(hook)
    engine.add_observer(observer)
    victim = engine.add_request(PROMPT, GREEDY)
    engine.add_request([7, 8, 9], HOOK_REQUESTS[hook])
    failures, outputs = [], []
    while engine.has_unfinished():
        try:
            outputs += engine.step()
        except ObserverError as error:
            failures.append(error)
            outputs += error.result  # the step's outputs: nothing lost
    assert len(failures) == 1 and observer.calls == 1 and observer not in engine.observers
    assert f"raised in {hook}" in str(failures[0]) and isinstance(failures[0].__cause__, RuntimeError)
    assert list(engine.request(victim).output_token_ids) == alone
    assert [o.token_id for o in outputs if o.request_id == victim] == alone
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_a_fork_whose_observer_raises_still_returns_its_id_and_runs(engine):
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()
    engine.add_observer(Raising("on_fork"))
    with pytest.raises(ObserverError) as info:
        engine.fork(parent, 5, [9])
    child = info.value.result
    while engine.has_unfinished():
        engine.step()
    assert engine.request(child).finish_reason == "length"


def test_observer_registration_is_checked(engine):
    with pytest.raises(InvalidRequestError, match="minillama.Observer"):
        engine.add_observer(None)
    with pytest.raises(InvalidRequestError, match="not an observer of this engine"):
        engine.remove_observer(Observer())


def test_a_fork_is_one_sequence(engine):
    leader = engine.add_request(PROMPT, SamplingParams(temperature=0.8, seed=3, n=3, max_tokens=4))
    engine.step()
    sample = engine.samples(leader)[1]
    with pytest.raises(InvalidRequestError, match="n must be 1"):
        engine.fork(sample, 5, [9], SamplingParams(n=3, max_tokens=2))
    child = engine.fork(sample, 5, [9])  # the parent's params, whose n is its request's
    assert engine.request(child).params.n == 1 and engine.samples(child) == (child,)


def test_generate_takes_none_as_the_defaults_and_refuses_other_non_params(base):
    llm = LLM.from_engine(LLMEngine.sharing_weights(base, EngineConfig(device="cpu", num_kv_blocks=64)))
    with pytest.raises(InvalidRequestError, match="SamplingParams"):
        llm.generate([PROMPT], 0)  # once run with the defaults, as `params or SamplingParams()`
    assert not llm.engine.has_unfinished()
    [completion] = llm.generate([PROMPT], [None])  # the defaults: up to 64 tokens, temperature 1
    assert 1 <= len(completion.token_ids) <= SamplingParams().max_tokens and not llm.engine.sequences


def test_generate_leaves_no_request_behind_when_an_observer_raises(base):
    llm = LLM.from_engine(LLMEngine.sharing_weights(base, EngineConfig(device="cpu", num_kv_blocks=64)))
    llm.engine.add_observer(Raising("on_step_end"))
    with pytest.raises(ObserverError):
        llm.generate([PROMPT, [5, 6, 7]], [GREEDY, SamplingParams(temperature=0.9, n=2, max_tokens=4)])
    assert not llm.engine.has_unfinished() and not llm.engine.sequences
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks


@pytest.mark.parametrize("method", ["request", "abort", "samples", "beams", "text", "forget"])
@pytest.mark.parametrize("bad_id", [[0], True, 1.0, "0", None])
def test_request_ids_that_are_no_int_are_refused_by_every_lookup(engine, method, bad_id):
    kept = engine.add_request(PROMPT, GREEDY)
    with pytest.raises(InvalidRequestError, match="a request id is an integer"):
        getattr(engine, method)(bad_id)
    assert engine.request(kept).status == "waiting"  # nothing changed (True is not request 1)


SHAPE = ModelConfig.from_dict(dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
WRONG_KINDS = {
    "int-model": (lambda: LLM(5), "a model is a directory"),
    "bytes-model": (lambda: LLM(b"/tmp"), "a model is a directory"),
    # Path("") is ".": the current folder was read as the model ("config.json is missing").
    "empty-model": (lambda: LLM(""), "the model path is empty"),
    # pathlib answers False for a missing path, but raised OSError for a name too long.
    "name-too-long": (lambda: LLM("m" * 5000), "File name too long"),
    "dict-config": (lambda: LLMEngine.from_pretrained(config={"x": 1}), "must be an EngineConfig"),
    "no-base": (lambda: LLMEngine.sharing_weights(None, EngineConfig()), "shares an LLMEngine"),
    # Each failed deep inside, on a missing attribute or in torch.manual_seed.
    "dict-shape": (lambda: LLMEngine.from_config({"vocab_size": 64}), "takes a ModelConfig"),
    "str-seed": (lambda: LLMEngine.from_config(SHAPE, EngineConfig(device="cpu", num_kv_blocks=4), seed="1"),
                 r"seed \(of the random weights\)"),
    "negative-seed": (lambda: LLMEngine.from_config(SHAPE, EngineConfig(device="cpu", num_kv_blocks=4), seed=-1),
                      r"seed \(of the random weights\)"),
    "no-hf-model": (lambda: LLMEngine.from_hf_model(None), "takes a transformers LlamaForCausalLM"),
    "no-reference-base": (lambda: LLMEngine.reference_copy(None), "copies an LLMEngine's model"),
    "no-engine": (lambda: LLM.from_engine(None), "from_engine takes an LLMEngine"),
    "list-shape": (lambda: ModelConfig.from_dict([]), "must hold a JSON object"),
}


@pytest.mark.parametrize("make, message", WRONG_KINDS.values(), ids=WRONG_KINDS.keys())
def test_constructors_refuse_arguments_of_the_wrong_kind_by_name(make, message):
    with pytest.raises((ConfigError, ModelLoadError), match=message):
        make()


def test_a_model_config_file_may_be_named_by_a_str(embedded_dir):
    assert ModelConfig.from_file(str(embedded_dir / "config.json")).vocab_size > 0


def test_forgetting_an_unfinished_request_is_refused_and_the_engine_keeps_serving(engine):
    """forget() dropped a waiting or running request's bookkeeping but left it in the scheduler:
    the next step failed on it (KeyError), and every step after it, the other requests with it."""
    expected = run(engine, [(PROMPT, GREEDY)])
    waiting = engine.add_request(PROMPT, GREEDY)
    running = engine.add_request([7, 8, 9], GREEDY)
    engine.step()
    search = engine.add_request([4, 5], SamplingParams(beam_width=2, max_tokens=3))
    engine.step()
    beam = engine.beams(search)[-1]
    for request_id in (waiting, running, search, beam):
        with pytest.raises(InvalidRequestError, match=f"request {request_id} has not finished: abort"):
            engine.forget(request_id)
    while engine.has_unfinished():
        engine.step()
    assert list(engine.request(waiting).output_token_ids) == expected[0]
    for request_id in (waiting, running, search):
        engine.forget(request_id)  # finished: forgotten
    with pytest.raises(KeyError, match="no request"):  # an InvalidRequestError too, saying which
        engine.request(waiting)
    with pytest.raises(InvalidRequestError, match=f"no request {waiting} "):
        engine.request(waiting)


@pytest.mark.parametrize("call", ["add_request", "check_request", "generate", "progress", "encode_prompt"])
@pytest.mark.parametrize("chat", ["no", None, 1, np.bool_(True)])
def test_a_flag_that_is_no_bool_is_refused_before_anything_is_queued(engine, call, chat):
    """`if chat:` read "no" as yes and None as no, and ran the request either way."""
    calls = {
        "add_request": lambda: engine.add_request("Hi", GREEDY, chat=chat),
        "check_request": lambda: engine.check_request("Hi", GREEDY, chat),
        "generate": lambda: LLM.from_engine(engine).generate(["Hi"], GREEDY, chat=chat),
        "progress": lambda: LLM.from_engine(engine).generate(["Hi"], GREEDY, progress=chat),
        "encode_prompt": lambda: engine.encode_prompt("Hi", chat),
    }
    with pytest.raises(InvalidRequestError, match="must be True or False"):
        calls[call]()
    assert not engine.has_unfinished() and not engine.sequences


@pytest.mark.parametrize("prompt, message", [
    (None, "a prompt text is a str, not NoneType"), (b"Hi", r"not bytes \(decode bytes"), (["Hi"], "not list"),
    ("a\ud800", "character 1 is U\\+D800, a lone surrogate"), ("", "the prompt is empty"),
])
def test_encode_prompt_and_check_text_refuse_what_is_no_text(engine, prompt, message):
    """The tokenizer raised its own TypeError or ValueError, naming neither the prompt nor the character."""
    for call in (engine.encode_prompt, check_text):
        with pytest.raises(InvalidRequestError, match=message):
            call(prompt)


def test_an_observer_attached_twice_is_refused(engine):
    observer = Observer()
    engine.add_observer(observer)
    with pytest.raises(InvalidRequestError, match="already observes this engine"):
        engine.add_observer(observer)  # it would have seen, and a recorder recorded, every step twice
    assert engine.observers == [observer]


@pytest.mark.parametrize("block_ids", [[-1], [64], ["0"], [1.0], "01", 5, None])
def test_block_lookups_refuse_what_is_no_block_of_the_pool(engine, block_ids):
    """-1 read the pool from its end; the others raised IndexError or TypeError."""
    with pytest.raises(InvalidRequestError, match="block ids|list of block ids"):
        engine.cached_flags(block_ids)
    with pytest.raises(InvalidRequestError, match="block ids|list of block ids"):
        engine.block_pool_snapshot(include=block_ids)
    with pytest.raises(InvalidRequestError, match="computed must be a mapping"):
        engine.block_pool_snapshot(computed=5)
    assert engine.cached_flags([0, 63]) == [False, False]


# computed maps a request's id to a count of its tokens; each bad key and each bad count. "HELD"
# is the running request, "PAST" one token more than it has.
BAD_COMPUTED = [("a", 1), (None, 1), (True, 1), (-1, 1), (10**6, 1), (1.0, 1),
                ("HELD", "3"), ("HELD", None), ("HELD", 1.5), ("HELD", float("nan")), ("HELD", True), ("HELD", -1),
                ("HELD", "PAST"), ("HELD", 10**9), ("HELD", [1])]


@pytest.mark.parametrize("key, count", BAD_COMPUTED)
def test_a_snapshot_refuses_computed_counts_that_are_no_request_tokens(engine, key, count):
    """-5 read a block from the table's end and 10**9 filled blocks not computed, in silence; a
    str, None or a float raised TypeError from divmod or a tuple index."""
    held = engine.add_request(PROMPT, GREEDY)
    engine.step()
    tokens = engine.request(held).num_prompt_tokens + 1
    key, count = held if key == "HELD" else key, tokens + 1 if count == "PAST" else count
    with pytest.raises(InvalidRequestError, match=r"computed names|computed\[\d+\] must be a count"):
        engine.block_pool_snapshot({held: 1, key: count})
    for good in (0, tokens):  # the bounds are taken, and the engine steps on
        assert engine.block_pool_snapshot({held: good}).num_blocks == 64
    while engine.has_unfinished():
        engine.step()
    assert len(engine.request(held).output_token_ids) == GREEDY.max_tokens


def test_a_debug_session_whose_recorder_fails_stops_stepping_until_reset(engine):
    """The recorder is an observer: when it raises, the engine detaches it and finishes the
    step. Steps it could not record would be lost to the debugger, so the session refuses to
    step on (RecordingStopped) until reset() starts a new trace with the recorder attached again."""
    from inspector import DebugSession, RecordingStopped

    session = DebugSession(engine)
    session.add_batch([PROMPT], GREEDY)
    session.step()
    session.recorder.on_logits = Raising("on_logits")._raise  # a bug in the recorder, as it were
    with pytest.raises(RecordingStopped, match="stopped recording after 1 step"):
        session.step()
    steps = engine.step_count
    with pytest.raises(RecordingStopped):
        session.step()
    assert engine.step_count == steps  # refused before the engine stepped
    del session.recorder.on_logits
    session.reset()
    session.add_batch([PROMPT], GREEDY)
    assert session.step() is not None and len(session.trace.steps) == 1


@pytest.mark.parametrize("hook", HOOK_REQUESTS)
@pytest.mark.parametrize("call", ["step", "run"])
def test_a_debug_session_moves_to_the_step_its_callers_observer_failed_in(engine, hook, call):
    """An observer of the caller's (not the recorder) raising mid-step: the engine finishes the
    step and the recorder records it, then ObserverError reaches the caller. The cursor stayed
    before that step (at -1 for the first), as though it had not run."""
    from inspector import DebugSession

    session = DebugSession(engine)
    session.add_batch([PROMPT, [7, 8, 9]], HOOK_REQUESTS[hook])
    observer = Raising(hook)
    engine.add_observer(observer)
    with pytest.raises(ObserverError, match=f"raised in {hook}"):
        if call == "run":
            session.run()
        while session.step() is not None:  # to the step whose hook raises (a beam prunes later)
            pass
    recorded = len(session.trace.steps)
    assert recorded >= 1 and session.recorder in engine.observers and observer not in engine.observers
    assert session.cursor.index == recorded - 1 and session.trace.steps[-1].engine_step == engine.step_count - 1
    assert session.run().finished  # the session goes on


class Reentering(Observer):
    """Calls back into the engine from a hook, as a script that drives it from an observer might."""

    def __init__(self, hook: str, call):
        self.call, self.errors = call, []
        setattr(self, hook, self._call)

    def _call(self, *args: object) -> None:
        try:
            self.call()
        except InvalidRequestError as error:
            self.errors.append(str(error))
            raise


@pytest.mark.parametrize("hook, call", [("on_step_end", "generate"), ("on_schedule", "step"), ("on_step_end", "abort"),
                                        ("on_schedule", "add_request"), ("on_fork", "forget"), ("on_fork", "fork")])
def test_a_hook_that_calls_back_into_the_engine_is_refused_and_the_step_finishes_whole(engine, hook, call):
    """generate() from on_step_end stepped inside the step, whose hook generated again, to
    Python's recursion limit, and _notify then failed detaching the observer twice; an abort
    from a hook freed blocks the running step was using."""
    expected = run(engine, [(PROMPT, GREEDY)])
    parent = engine.add_request([9, 8, 7], GREEDY)
    calls = {
        "generate": lambda: LLM.from_engine(engine).generate([PROMPT], GREEDY),
        "step": engine.step, "abort": lambda: engine.abort(parent), "forget": lambda: engine.forget(parent),
        "add_request": lambda: engine.add_request(PROMPT, GREEDY), "fork": lambda: engine.fork(parent, 2, [5]),
    }
    observer = Reentering(hook, calls[call])
    engine.add_observer(observer)
    first = engine.add_request(PROMPT, GREEDY)
    with pytest.raises(ObserverError):
        while engine.has_unfinished():
            engine.step()
            if hook == "on_fork":
                engine.fork(parent, 2, [6])
    assert observer.errors and "from an observer's hook" in observer.errors[0] and observer not in engine.observers
    while engine.has_unfinished():
        engine.step()
    assert list(engine.request(first).output_token_ids) == expected[0]


@pytest.mark.parametrize("at_call", [1, 3, 5])
def test_a_ctrl_c_inside_the_recorder_stops_recording_and_never_saves_a_file_load_refuses(engine, tmp_path,
                                                                                         monkeypatch, at_call):
    """A KeyboardInterrupt landing while a step's record is completed left it half made: the
    next run() went on recording after it, and save() wrote a file load() refused ("sequence
    0 computes positions 15..15 but has 15 tokens by then"). Now the session stops recording
    (RecordingStopped until reset()), and save() refuses what load() would."""
    from inspector import DebugSession, RecordingStopped, TraceError, load, save
    from inspector.record.recorder import Recorder

    complete, calls = Recorder._complete, [0]

    def interrupted_once(self, step):
        calls[0] += 1
        if calls[0] == at_call:
            raise KeyboardInterrupt
        return complete(self, step)

    monkeypatch.setattr(Recorder, "_complete", interrupted_once)
    session = DebugSession(engine)
    session.add_batch([PROMPT], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    with pytest.raises(KeyboardInterrupt):
        session.run()
    with pytest.raises(RecordingStopped, match="interrupted \\(KeyboardInterrupt\\)"):
        session.run()
    path = tmp_path / "interrupted.mltrace"
    try:
        save(session.trace, path)
    except TraceError as error:
        assert str(error).endswith("not saved") and not path.exists()
    else:
        assert len(load(path).steps) == len(session.trace.steps)
    session.reset()
    session.add_batch([PROMPT], GREEDY)
    assert session.run().finished
