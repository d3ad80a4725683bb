"""Browser sessions over one shared model: isolated pools and traces, all-or-nothing prompt
batches, limits with clear messages, idle sessions reclaimed."""

from __future__ import annotations

import time

import pytest

from inspector import load, save
from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.errors import InvalidRequestError
from webui.limits import Limits
from webui.sessions import CaptureSettings, EngineSettings, LimitReached, SessionManager

GREEDY = SamplingParams(temperature=0, max_tokens=12)
SMALL = EngineSettings(num_kv_blocks=10, block_size=8, max_num_seqs=4)  # small enough to preempt


@pytest.fixture(scope="module")
def base(embedded_dir):
    return LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=1))


def run_out(manager: SessionManager, session) -> None:
    while manager.step(session):
        pass


def test_sessions_share_the_weights_and_nothing_else(base):
    manager = SessionManager(base, Limits())
    alice, bob = manager.get("alice"), manager.get("bob")
    manager.reset(alice, SMALL, CaptureSettings())
    prompts = ["What is the capital of France?", "Name three primary colors.", "What is 2 + 2?"]
    manager.add_prompts(alice, prompts, GREEDY, chat=True)
    manager.add_prompts(bob, ["Say hello in Spanish."], GREEDY, chat=True)
    assert alice.debug.engine.runner.model is bob.debug.engine.runner.model is base.runner.model
    while manager.step(alice) | manager.step(bob):  # interleaved, one step each
        pass
    assert alice.debug.engine.stats.preemptions > 0  # alice's pool is small; bob's default one is not
    assert bob.debug.engine.stats.preemptions == 0
    assert len(alice.trace.sequences) == 3 and len(bob.trace.sequences) == 1
    assert "Paris" in alice.trace.sequences[min(alice.trace.sequences)].text

    solo = SessionManager(base, Limits())  # the same prompts in a session of their own
    carol = solo.get("carol")
    solo.reset(carol, SMALL, CaptureSettings())
    solo.add_prompts(carol, prompts, GREEDY, chat=True)
    run_out(solo, carol)
    assert [s.output_ids for s in carol.trace.sequences.values()] == [s.output_ids for s in alice.trace.sequences.values()]


def test_a_bad_prompt_in_a_batch_queues_none_of_it(base):
    manager = SessionManager(base, Limits(max_prompt_chars=100_000))
    session = manager.get("a")
    manager.reset(session, SMALL, CaptureSettings())
    too_long = "word " * (base.max_model_len + 10)
    with pytest.raises(InvalidRequestError, match="prompt 2: .*max_model_len"):
        manager.add_prompts(session, ["fine", too_long], GREEDY, chat=False)
    with pytest.raises(InvalidRequestError, match="never fit the KV cache"):
        manager.add_prompts(session, ["fine", "also fine"], SamplingParams(max_tokens=400), chat=False)
    assert session.trace.sequences == {} and not session.debug.engine.has_unfinished()


def test_limits_say_which_limit_was_reached(base):
    limits = Limits(max_sessions=2, max_prompts=2, max_new_tokens=16, max_steps=3, max_prompt_chars=20)
    manager = SessionManager(base, limits)
    session = manager.get("a")
    manager.get("b")
    with pytest.raises(LimitReached, match="2 sessions open, its limit"):
        manager.get("c")
    with pytest.raises(LimitReached, match="3 prompts at once; the limit is 2"):
        manager.add_prompts(session, ["a", "b", "c"], GREEDY, chat=False)
    with pytest.raises(LimitReached, match="max tokens 17 is over"):
        manager.add_prompts(session, ["a"], SamplingParams(max_tokens=17), chat=False)
    with pytest.raises(LimitReached, match="prompt 1 has 21 characters"):
        manager.add_prompts(session, ["x" * 21], GREEDY, chat=False)
    manager.add_prompts(session, ["Hello"], GREEDY, chat=False)
    for _ in range(3):
        assert manager.step(session)
    with pytest.raises(LimitReached, match="recorded 3 steps, its limit"):
        manager.step(session)
    with pytest.raises(ValueError, match="KV blocks must be between 1 and"):
        manager.reset(session, EngineSettings(num_kv_blocks=limits.max_kv_blocks + 1), CaptureSettings())
    assert len(session.trace.steps) == 3  # the refused reset kept the session as it was


def test_idle_sessions_are_reclaimed_when_a_new_one_needs_room(base):
    manager = SessionManager(base, Limits(max_sessions=1, idle_minutes=0.001))
    manager.get("old")
    time.sleep(0.1)
    assert manager.get("new") is manager.sessions["new"] and "old" not in manager.sessions
    manager.drop("new")
    assert manager.sessions == {}


def test_an_opened_trace_is_read_only_until_reset(base, tmp_path):
    manager = SessionManager(base, Limits())
    session = manager.get("a")
    manager.add_prompts(session, ["What is the capital of France?"], GREEDY, chat=True)
    run_out(manager, session)
    save(session.trace, tmp_path / "run.mltrace")
    viewer = manager.get("b")
    manager.open_trace(viewer, load(tmp_path / "run.mltrace"), "run.mltrace")
    assert not viewer.live and viewer.index == 0 and len(viewer.trace.steps) == len(session.trace.steps)
    assert manager.step(viewer) is False  # nothing runs on a file
    manager.reset(viewer, EngineSettings(), CaptureSettings())
    assert viewer.live and viewer.trace.steps == []


def test_a_server_without_a_model_serves_its_trace_to_every_session(base, tmp_path):
    manager = SessionManager(base, Limits())
    session = manager.get("a")
    manager.add_prompts(session, ["Hi"], SamplingParams(temperature=0, max_tokens=3), chat=False)
    run_out(manager, session)
    viewer_only = SessionManager(None, Limits(), session.trace, "run.mltrace")
    one, two = viewer_only.get("1"), viewer_only.get("2")
    assert one.trace is two.trace is session.trace and one.cursor is not two.cursor
    with pytest.raises(LimitReached, match="no model is loaded"):
        viewer_only.add_prompts(one, ["Hi"], GREEDY, chat=False)


def test_the_readme_tour_shows_what_it_says(base):
    """README.md's guided tour quotes this run: keep them in step."""
    from inspector import Preemption
    from webui.layout import EXAMPLE_PROMPTS

    manager = SessionManager(base, Limits())
    session = manager.get("tour")
    manager.reset(session, EngineSettings(num_kv_blocks=12, block_size=8), CaptureSettings())
    manager.add_prompts(session, EXAMPLE_PROMPTS.splitlines(), SamplingParams(temperature=0, max_tokens=48), chat=True)
    result = session.debug.run(until=[Preemption()])
    assert result.breakpoint is not None and session.trace.steps[-1].index == 13
    assert session.trace.steps[13].schedule.preempted == [2]
    session.debug.run()
    hits = [(s.index, x.seq_id, x.num_cached_tokens) for s in session.trace.steps for x in s.schedule.scheduled
            if x.num_cached_tokens]
    assert hits == [(8, 2, 24), (49, 2, 8)]
    assert "Paris" in session.trace.sequences[0].text
