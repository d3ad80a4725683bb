"""Every read of the engine that names a request refuses an id it does not hold.

engine.request(id) raised UnknownRequestError for an id never given or already forgotten, but
text(id) answered "" and samples(id) and beams(id) answered (id,): a caller's wrong id (a typo,
an aborted request) read as an empty answer. Each is now checked the same way, before anything
is read; the engine keeps serving. A tiny random-weight engine, prompts as token ids.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from minillama import EngineConfig, InvalidRequestError, LLMEngine, ModelConfig, SamplingParams
from minillama.errors import UnknownRequestError

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
PROMPT = [1, 2, 3, 4]

# Every read that names a request, as (engine, id) -> its answer.
READS: dict[str, Callable[[LLMEngine, object], object]] = {
    "request": lambda engine, rid: engine.request(rid),
    "text": lambda engine, rid: engine.text(rid),
    "samples": lambda engine, rid: engine.samples(rid),
    "beams": lambda engine, rid: engine.beams(rid),
}


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return LLMEngine.from_config(ModelConfig.from_dict(TINY),
                                 EngineConfig(device="cpu", num_kv_blocks=32, block_size=4, max_model_len=48))


def finish(engine: LLMEngine) -> None:
    while engine.has_unfinished():
        engine.step()


def unknown_ids(engine: LLMEngine) -> dict[str, int]:
    """Ids the engine does not hold, each gone another way."""
    aborted = engine.add_request(PROMPT, SamplingParams(max_tokens=3))
    engine.abort(aborted)
    forgotten = engine.add_request(PROMPT, SamplingParams(max_tokens=2))
    finish(engine)
    engine.forget(forgotten)
    search = engine.add_request(PROMPT, SamplingParams(max_tokens=2, beam_width=2))
    finish(engine)
    engine.forget(search)  # the search's id, and every beam it made
    return {"never given": 10**6, "negative": -1, "aborted": aborted, "forgotten": forgotten,
            "a forgotten beam search": search}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_read_of_a_request_the_engine_does_not_hold_is_refused(engine, read):
    for rid in unknown_ids(engine).values():
        with pytest.raises(UnknownRequestError, match=f"no request {rid} "):
            read(engine, rid)
    served = engine.add_request(PROMPT, SamplingParams(max_tokens=2))  # and the engine serves on
    finish(engine)
    assert len(engine.request(served).output_token_ids) == 2


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
@pytest.mark.parametrize("rid", [None, "0", 1.0, True, [0]])
def test_a_read_refuses_what_is_no_request_id(engine, read, rid):
    with pytest.raises(InvalidRequestError, match="a request id is an integer"):
        read(engine, rid)


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_read_of_a_request_the_engine_holds_answers(engine, read):
    """Queued, running and finished requests, samples and a beam search's results are held."""
    queued = engine.add_request(PROMPT, SamplingParams(max_tokens=3))
    assert read(engine, queued) is not None
    engine.step()
    assert read(engine, queued) is not None  # running
    samples = engine.add_request(PROMPT, SamplingParams(max_tokens=2, n=3, seed=0))
    search = engine.add_request(PROMPT, SamplingParams(max_tokens=2, beam_width=2))
    finish(engine)
    for rid in (queued, *engine.samples(samples), search, *engine.beams(search)):
        assert read(engine, rid) is not None
    assert len(engine.samples(samples)) == 3 and len(engine.beams(search)) == 2
    for rid in (queued, samples, search, *engine.samples(samples)[1:]):
        engine.forget(rid)
