"""Both doors through which requests enter a server's engines, Add prompts and a Compare replay
of a trace (a file's requests may ask for anything), hold them to one set of limits with one
set of messages (webui/request_limits.py). One table, each row through both doors: at a limit
passes, one past it is refused naming it, and a refusal changes nothing."""

from __future__ import annotations

import dataclasses

import pytest
from tiny_model import write_tiny_model

from inspector import DebugSession, Trace
from minillama import EngineConfig, LLMEngine, SamplingParams
from webui import comparing
from webui.limits import Limits
from webui.sessions import LimitReached, SessionManager

LIMITS = Limits(max_new_tokens=8, max_samples=3, max_sequences=6, max_prompt_chars=40)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> LLMEngine:
    return LLMEngine.from_pretrained(write_tiny_model(tmp_path_factory.mktemp("tiny")), EngineConfig(device="cpu"))


@pytest.fixture(scope="module")
def recorded(base) -> Trace:
    """A finished greedy run of one request: the trace the replay door's rows edit."""
    session = DebugSession(LLMEngine.sharing_weights(base, EngineConfig(device="cpu", num_kv_blocks=32)))
    session.add("hello", SamplingParams(temperature=0.0, max_tokens=2))
    session.run()
    return session.trace


# (requests, n, beam width, max tokens, the refusal or None). Each request makes max(n, beam)
# sequences; the limits are LIMITS'.
ROWS = [
    (1, 1, 1, 8, None),  # the new tokens at the limit
    (1, 1, 1, 9, "request 1 asks for 9 new tokens; this server allows 8 (--max-new-tokens)"),
    (2, 3, 1, 4, None),  # samples at the limit, 6 sequences: at the limit
    (1, 4, 1, 4, "request 1 asks for 4 samples; this server allows 3"),
    (2, 1, 3, 4, None),  # beams at the limit
    (1, 1, 4, 4, "request 1 asks for 4 beams; this server allows 3"),
    (6, 1, 1, 4, None),  # one sequence each, 6 in all
    (7, 1, 1, 4, "this would make 7 sequences; a session may make 6 (--max-sequences)"),
    (3, 3, 1, 4, "this would make 9 sequences; a session may make 6 (--max-sequences)"),
]


def _params(n: int, beam: int, max_tokens: int) -> SamplingParams:
    return SamplingParams(n=n, beam_width=beam, max_tokens=max_tokens, temperature=1.0 if n > 1 else 0.0)


def _through_add_prompts(base: LLMEngine, requests: int, n: int, beam: int, max_tokens: int) -> None:
    manager = SessionManager(base, LIMITS)
    session = manager.open_tab("client")
    try:
        manager.add_prompts(session, ["hi"] * requests, _params(n, beam, max_tokens), chat=False)
    except LimitReached:
        assert session.debug is None and session.sequences_asked == 0  # nothing was made
        raise
    assert session.sequences_asked == requests * max(n, beam)


def _through_replay(base: LLMEngine, recorded: Trace, requests: int, n: int, beam: int, max_tokens: int) -> None:
    """The recorded run with `requests` requests like its first, asking for these; checked by
    a replay of each request alone, as the Compare tab's button asks for it."""
    trace = dataclasses.replace(recorded, sequences={})
    first = recorded.sequences[min(recorded.sequences)]
    params = {**first.params, "n": n, "beam_width": beam, "max_tokens": max_tokens}
    for i in range(requests):
        trace.sequences[i] = dataclasses.replace(first, seq_id=i, params=params)
    manager = SessionManager(base, LIMITS)
    session = manager.open_tab("client")
    manager.open_trace(session, trace, "edited.mltrace")
    comparing.alone(manager, session, lambda done, total: None)


@pytest.mark.parametrize(("requests", "n", "beam", "max_tokens", "refusal"), ROWS)
def test_add_prompts_and_a_replay_hold_requests_to_the_same_limits(base, recorded, requests, n, beam, max_tokens,
                                                                   refusal):
    doors = {
        "prompt": lambda: _through_add_prompts(base, requests, n, beam, max_tokens),
        "request #0 of the trace": lambda: _through_replay(base, recorded, requests, n, beam, max_tokens),
    }
    for label, door in doors.items():
        if refusal is None:
            door()
            continue
        with pytest.raises(LimitReached) as refused:
            door()
        assert refusal.replace("request 1", label if label != "prompt" else "prompt 1") in str(refused.value)


def test_a_typed_prompt_is_held_to_its_characters_and_forks_count_one_sequence_each(base):
    """What only one door has: a typed prompt's length (a trace's prompt is token ids), and
    the forks a user made, which a replay makes again (and a session's fork makes now)."""
    manager = SessionManager(base, LIMITS)
    session = manager.open_tab("client")
    with pytest.raises(LimitReached, match="prompt 2 has 41 characters; the limit is 40"):
        manager.add_prompts(session, ["x" * 40, "x" * 41], _params(1, 1, 2), chat=False)
    manager.add_prompts(session, ["hi"] * 5, _params(1, 1, 2), chat=False)
    assert manager.step(session)
    manager.fork(session, 0, 1, [42], _params(1, 1, 2))  # the sixth
    with pytest.raises(LimitReached, match=r"make 7 sequences; a session may make 6 \(--max-sequences\): save"):
        manager.fork(session, 0, 1, [43], _params(1, 1, 2))
    while manager.step(session):
        pass
    manager.limits = dataclasses.replace(LIMITS, max_sequences=5)  # the replay would make the fork again
    with pytest.raises(LimitReached, match="this would make 6 sequences; a session may make 5"):
        comparing._check_requests(manager, session.trace)
