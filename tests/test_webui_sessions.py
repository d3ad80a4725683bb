"""Browser sessions over one shared model: isolated pools and traces, all-or-nothing prompt
batches, limits with clear messages, idle sessions reclaimed."""

from __future__ import annotations

import gc
import html
import time
from pathlib import Path

import pytest

from inspector import load, save
from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.errors import InvalidRequestError
from webui.handlers import Handlers
from webui.layout import CACHE_MAX_AGE_SECONDS, CACHE_SWEEP_SECONDS, build_app
from webui.limits import Limits
from webui.render import status_html
from webui.sessions import CaptureSettings, EngineSettings, LimitReached, SessionEnded, SessionManager

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
    alice, bob = manager.open_tab("alice"), manager.open_tab("bob")
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
    carol = solo.open_tab("carol")
    solo.reset(carol, SMALL, CaptureSettings())
    solo.add_prompts(carol, prompts, GREEDY, chat=True)
    run_out(solo, carol)
    assert [s.output_ids for s in carol.trace.sequences.values()] == [s.output_ids for s in alice.trace.sequences.values()]


def test_a_bad_prompt_in_a_batch_queues_none_of_it(base):
    manager = SessionManager(base, Limits(max_prompt_chars=100_000))
    session = manager.open_tab("a")
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
    session = manager.open_tab("a")
    for client in ("b", "c"):
        manager.add_prompts(manager.open_tab(client), ["Hi"], GREEDY, chat=False)
    with pytest.raises(LimitReached, match="2 sessions open, its limit"):
        manager.add_prompts(session, ["Hi"], GREEDY, chat=False)
    manager.tab_closed("no such tab")  # a key it never issued changes nothing
    manager.limits = limits = Limits(max_sessions=3, max_prompts=2, max_new_tokens=16, max_steps=3,
                                     max_prompt_chars=20)
    with pytest.raises(LimitReached, match="3 prompts at once; the limit is 2"):
        manager.add_prompts(session, ["a", "b", "c"], GREEDY, chat=False)
    with pytest.raises(LimitReached, match="prompt 1 asks for 17 new tokens; this server allows 16"):
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


def test_idle_and_closed_sessions_give_their_slot_to_a_new_one(base, tmp_path):
    manager = SessionManager(base, Limits(max_sessions=1, idle_minutes=0.001))
    old = manager.open_tab("10.0.0.1")
    manager.add_prompts(old, ["Hi"], GREEDY, chat=False)
    old.last_download = tmp_path / "download" / "run.mltrace"  # as Handlers.save_trace leaves it
    old.last_download.parent.mkdir()
    old.last_download.write_bytes(b"a saved trace")
    time.sleep(0.1)
    new = manager.open_tab("10.0.0.2")
    manager.add_prompts(new, ["Hi"], GREEDY, chat=False)  # the idle one's slot
    assert old.key not in manager.sessions and new.holds_memory
    assert not (tmp_path / "download").exists()  # its saved trace went with it
    again = manager.get(old.key)  # its tab calls again: an empty session, told why
    assert again.debug is None and "reclaimed (it was idle" in again.notice

    manager.limits = Limits(max_sessions=1, idle_minutes=60)
    with pytest.raises(LimitReached, match="1 sessions open, its limit"):
        manager.add_prompts(again, ["Hi"], GREEDY, chat=False)
    manager.tab_closed(new.key)  # the tab went away: its slot is the first to go
    assert new.pause_requested  # and a Run it had going pauses
    manager.add_prompts(again, ["Hi"], GREEDY, chat=False)
    assert new.key not in manager.sessions and again.holds_memory


def test_a_session_is_reached_only_by_its_own_key(base):
    manager = SessionManager(base, Limits())
    alice = manager.open_tab("10.0.0.1")
    manager.add_prompts(alice, ["Hi"], GREEDY, chat=False)
    assert manager.get(alice.key) is alice
    tab_id, mac = alice.key.split(".")
    for forged in ["", None, 3, tab_id, f"{tab_id}.{'A' * len(mac)}", alice.key + "x", "x" * 10_000,
                   SessionManager(base, Limits()).open_tab("10.0.0.1").key]:  # another server's key
        with pytest.raises(SessionEnded, match="reload the page"):
            manager.get(forged)
    assert "alice-hash" not in alice.key and manager.get(alice.key).trace.sequences


def test_one_client_cannot_take_every_slot(base):
    manager = SessionManager(base, Limits(max_sessions=4, max_sessions_per_client=2))
    for _ in range(2):
        manager.add_prompts(manager.open_tab("10.0.0.9"), ["Hi"], GREEDY, chat=False)
    with pytest.raises(LimitReached, match="your address already holds 2 sessions"):
        manager.add_prompts(manager.open_tab("10.0.0.9"), ["Hi"], GREEDY, chat=False)
    manager.add_prompts(manager.open_tab("10.0.0.7"), ["Hi"], GREEDY, chat=False)  # someone else gets in
    for _ in range(100):  # page loads that hold nothing take no slot
        manager.open_tab("10.0.0.9")
    manager.add_prompts(manager.open_tab("10.0.0.8"), ["Hi"], GREEDY, chat=False)


def test_a_page_gone_silent_gives_its_slot_only_to_a_session_that_would_be_refused(base, monkeypatch):
    """A tab whose browser was killed never sends its pagehide beacon: its session is known gone
    by its silence (no ml-api/alive for SILENT_SHOWN_S, SILENT_HIDDEN_S while hidden), and its
    slot goes to a new session of its own address at the per-client limit, or of anyone when the
    server is full; never while it would not be refused, never a running one, and never one no
    page ever spoke for (a script's)."""
    import webui.sessions as sessions

    clock = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: clock[0])
    manager = SessionManager(base, Limits(max_sessions=3, max_sessions_per_client=2))
    shown, hidden = manager.open_tab("10.0.0.9"), manager.open_tab("10.0.0.9")
    for tab, is_hidden in ((shown, False), (hidden, True)):
        manager.add_prompts(tab, ["Hi"], GREEDY, chat=False)
        manager.tab_alive(tab.key, is_hidden)
    manager.tab_alive("no such tab", False)  # a key it never issued changes nothing

    clock[0] += sessions.SILENT_SHOWN_S - 1  # not silent yet: still refused
    with pytest.raises(LimitReached, match="your address already holds 2 sessions"):
        manager.add_prompts(manager.open_tab("10.0.0.9"), ["Hi"], GREEDY, chat=False)
    clock[0] += 2  # the shown page is silent now; the hidden one may still be throttled
    shown.running = True  # ... but a running session is never taken
    with pytest.raises(LimitReached, match="your address already holds 2 sessions"):
        manager.add_prompts(manager.open_tab("10.0.0.9"), ["Hi"], GREEDY, chat=False)
    shown.running = False
    third = manager.open_tab("10.0.0.9")
    manager.add_prompts(third, ["Hi"], GREEDY, chat=False)
    assert shown.key not in manager.sessions and hidden.key in manager.sessions
    assert "its page stopped answering" in manager.get(shown.key).notice

    # The server is full (3): another address takes a silent page's slot, not a live one's.
    manager.tab_alive(third.key, False)
    script = manager.open_tab("10.0.0.5")  # no page ever says it is alive for a script
    manager.add_prompts(script, ["Hi"], GREEDY, chat=False)
    clock[0] += sessions.SILENT_HIDDEN_S
    manager.tab_alive(third.key, False)  # still open
    manager.add_prompts(manager.open_tab("10.0.0.7"), ["Hi"], GREEDY, chat=False)
    assert hidden.key not in manager.sessions and third.key in manager.sessions and script.key in manager.sessions
    with pytest.raises(LimitReached, match="3 sessions open, its limit"):
        manager.add_prompts(manager.open_tab("10.0.0.8"), ["Hi"], GREEDY, chat=False)


def test_a_slot_counts_from_its_check_so_parallel_claims_cannot_all_pass(base, monkeypatch):
    """claim_slot checked under its lock, but a session counted only once its engine existed:
    50 parallel Resets all passed a limit of 16."""
    manager = SessionManager(base, Limits(max_sessions=4, max_sessions_per_client=1))
    first, second = manager.open_tab("10.0.0.5"), manager.open_tab("10.0.0.5")
    manager.claim_slot(first)  # its engine is still being built
    with pytest.raises(LimitReached, match="your address already holds 1 sessions"):
        manager.claim_slot(second)
    def fail(*args, **kwargs):
        raise InvalidRequestError("no memory left")

    monkeypatch.setattr(LLMEngine, "sharing_weights", fail)
    with pytest.raises(InvalidRequestError):  # a reset that fails gives its claim back
        manager.reset(first, SMALL, CaptureSettings())
    assert not first.holds_memory
    monkeypatch.undo()
    manager.add_prompts(second, ["Hi"], GREEDY, chat=False)


def test_form_numbers_are_read_exactly_and_bounded():
    from webui.handlers import MAX_TRACED_REQUESTS, _whole

    assert _whole("9223372036854775806", "seed", minimum=0, maximum=2**63 - 1) == 2**63 - 2  # not via a float
    with pytest.raises(ValueError, match="top-k must be at most 2,147,483,647"):
        _whole(str(2**63), "top-k", minimum=0)
    with pytest.raises(ValueError, match="traced requests must be at most 10,000"):
        _whole("10000000", "traced requests", minimum=0, maximum=MAX_TRACED_REQUESTS)
    assert _whole(3.0, "layer", minimum=0) == 3


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "-1", " 3", None, 7])
def test_a_link_step_that_is_not_plain_digits_is_ignored(value):
    from webui.sessions import _link_number

    assert _link_number(value) is None
    assert _link_number("12") == 12


def test_an_opened_trace_is_read_only_until_reset(base, tmp_path):
    manager = SessionManager(base, Limits())
    session = manager.open_tab("a")
    manager.add_prompts(session, ["What is the capital of France?"], GREEDY, chat=True)
    run_out(manager, session)
    save(session.trace, tmp_path / "run.mltrace")
    viewer = manager.open_tab("b")
    manager.open_trace(viewer, load(tmp_path / "run.mltrace"), "run.mltrace")
    assert not viewer.live and viewer.index == 0 and len(viewer.trace.steps) == len(session.trace.steps)
    assert manager.step(viewer) is False  # nothing runs on a file
    manager.reset(viewer, EngineSettings(), CaptureSettings())
    assert viewer.live and viewer.trace.steps == []


# Prompts a session refuses, each for another reason: not text, past the model's context, more
# sequences than a session may ask for, past the KV cache.
REFUSED_ADDS = {"not-text": (["\ud800"], GREEDY), "past-the-context": (["word " * 9000], GREEDY),
                "too-many-sequences": (["a"] * 8, SamplingParams(n=64)),
                "past-the-kv-cache": (["a"], SamplingParams(max_tokens=2000))}


@pytest.mark.parametrize("view", ["file", "shared-link", "fresh-tab"])
@pytest.mark.parametrize("prompts, params", REFUSED_ADDS.values(), ids=REFUSED_ADDS.keys())
def test_refused_prompts_leave_a_tab_as_it_was(base, tmp_path, view, prompts, params):
    """Adding prompts to a tab that shows a trace (a file, a shared link) starts a live engine in
    its place; one that refused them replaced the trace with an empty engine all the same (the
    view lost), and a fresh tab took a slot for nothing."""
    manager = SessionManager(base, Limits(max_prompt_chars=100_000, max_samples=64, max_sequences=100,
                                          max_new_tokens=4096))
    author = manager.open_tab("author")
    manager.add_prompts(author, ["What is the capital of France?"], SamplingParams(temperature=0, max_tokens=3), chat=True)
    run_out(manager, author)
    viewer = manager.open_tab("viewer")
    if view == "file":
        save(author.trace, tmp_path / "run.mltrace")
        manager.open_trace(viewer, load(tmp_path / "run.mltrace"), "run.mltrace")
    elif view == "shared-link":
        assert manager.open_shared(viewer, manager.shares.share(author.trace, "a link", "10.0.0.1"), "1")
    before = (viewer.trace, viewer.index, viewer.opened_name, viewer.holds_memory)
    with pytest.raises((InvalidRequestError, LimitReached)):
        manager.add_prompts(viewer, prompts, params, chat=False)
    assert (viewer.trace, viewer.index, viewer.opened_name, viewer.holds_memory) == before
    assert viewer.debug is None and not viewer.claiming
    manager.add_prompts(viewer, ["Hi"], GREEDY, chat=False)  # good prompts still start the engine
    assert viewer.live and list(viewer.trace.sequences) == [0]


def test_a_server_without_a_model_serves_its_trace_to_every_session(base, tmp_path):
    manager = SessionManager(base, Limits())
    session = manager.open_tab("a")
    manager.add_prompts(session, ["Hi"], SamplingParams(temperature=0, max_tokens=3), chat=False)
    run_out(manager, session)
    viewer_only = SessionManager(None, Limits(), session.trace, "run.mltrace")
    one, two = viewer_only.open_tab("1"), viewer_only.open_tab("2")
    assert one.trace is two.trace is session.trace and one.cursor is not two.cursor
    with pytest.raises(LimitReached, match="no model is loaded"):
        viewer_only.add_prompts(one, ["Hi"], GREEDY, chat=False)
    status = status_html(one)
    assert "read-only: this server runs no model" in status and "Reset" not in status  # Reset is off here
    assert not one.holds_memory  # the server's trace is one object: no slot per viewer


def test_the_readme_tour_shows_what_it_says(base):
    """README.md's guided tour quotes this run: keep them in step."""
    from inspector import Preemption
    from webui.defaults import EXAMPLE_PROMPTS

    manager = SessionManager(base, Limits())
    session = manager.open_tab("tour")
    manager.reset(session, EngineSettings(num_kv_blocks=12, block_size=8), CaptureSettings())
    manager.add_prompts(session, list(EXAMPLE_PROMPTS), SamplingParams(temperature=0, max_tokens=48), chat=True)
    result = session.debug.run(until=[Preemption()])
    assert result.breakpoint is not None and session.trace.steps[-1].index == 13
    assert session.trace.steps[13].schedule.preempted == [2]
    session.debug.run()
    hits = [(s.index, x.seq_id, x.num_cached_tokens) for s in session.trace.steps for x in s.schedule.scheduled
            if x.num_cached_tokens]
    assert hits == [(8, 2, 24), (49, 2, 8)]
    assert "Paris" in session.trace.sequences[0].text


def test_the_server_leaves_no_files_behind(base):
    """The folder of saved traces goes with the page's handlers (at the latest when the server
    exits), and Gradio's own copies of served and uploaded files are swept by age."""
    manager = SessionManager(base, Limits())
    handlers = Handlers(manager)
    folder = handlers.downloads
    assert folder.is_dir()
    del handlers
    gc.collect()
    assert not folder.exists()
    app = build_app(manager)
    assert app.delete_cache == (CACHE_SWEEP_SECONDS, CACHE_MAX_AGE_SECONDS) and CACHE_MAX_AGE_SECONDS <= 3600


def test_a_session_asks_for_at_most_max_sequences_counting_samples_beams_and_forks(base):
    """Each render draws every sequence: a script adding 5,000 made each Step take 6-9 s. A
    prompt with n samples (or a beam width) counts n at once, before its step makes them."""
    manager = SessionManager(base, Limits(max_sequences=6))
    session = manager.open_tab("a")
    manager.add_prompts(session, ["Hi", "Ho"], SamplingParams(n=2, temperature=1.0, max_tokens=2), chat=False)
    with pytest.raises(LimitReached, match="make 7 sequences; a session may make 6"):
        manager.add_prompts(session, ["Hey"], SamplingParams(beam_width=3, max_tokens=2), chat=False)
    manager.add_prompts(session, ["Hey"], GREEDY, chat=False)  # 5: within it
    assert manager.step(session)
    child = manager.fork(session, 0, 1, [42], GREEDY)  # 6
    with pytest.raises(LimitReached, match="a session may make 6"):
        manager.fork(session, 0, 1, [43], GREEDY)
    assert set(session.debug.engine.sequences) >= {child} and session.sequences_asked == 6
    manager.reset(session, session.settings, session.capture)  # Reset gives the allowance back
    manager.add_prompts(session, ["Hi"], SamplingParams(n=6, temperature=1.0, max_tokens=2), chat=False)


def test_a_fork_at_the_step_limit_is_refused_and_adds_nothing(base):
    manager = SessionManager(base, Limits(max_steps=2))
    session = manager.open_tab("a")
    manager.add_prompts(session, ["Hi"], GREEDY, chat=False)
    manager.step(session)
    manager.step(session)
    before = set(session.debug.engine.sequences)
    with pytest.raises(LimitReached, match="recorded 2 steps, its limit"):
        manager.fork(session, 0, 1, [42], GREEDY)
    assert set(session.debug.engine.sequences) == before and session.sequences_asked == 1


@pytest.mark.parametrize("blocks, block_size", [(1024, 32), (1024, 16), (400, 32)])
def test_a_sessions_kv_pool_is_bounded_in_memory_whatever_its_block_size(base, blocks, block_size):
    """One client's four tabs of 1,024 blocks of 32 tokens held ~6 GB of KV pools with the
    embedded model. The pool's bytes (blocks + the scratch block) are bounded, and the message
    says how many blocks of that size would fit."""
    config = base.model_config
    per_block = 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * config.head_dim
    per_block *= base.dtype.itemsize
    assert base.kv_block_bytes(block_size) == per_block
    limits = Limits(max_kv_mb=100)
    fits = int(100 * 2**20 // per_block) - 1
    assert blocks > fits  # each case is over the budget
    manager = SessionManager(base, limits)
    session = manager.open_tab("a")
    with pytest.raises(ValueError, match=rf"{blocks} KV blocks of {block_size} tokens take .* at most 100 MiB "
                                         rf"\(--max-kv-mb\): {fits} blocks of that size"):
        manager.reset(session, EngineSettings(num_kv_blocks=blocks, block_size=block_size), CaptureSettings())
    assert session.debug is None  # nothing was made
    manager.reset(session, EngineSettings(num_kv_blocks=fits, block_size=block_size), CaptureSettings())
    pool = session.debug.engine.runner.kv_cache
    assert pool.numel() * pool.element_size() <= 100 * 2**20


def test_the_armed_list_says_when_a_stop_step_is_past_the_step_limit(base):
    """It listed "step 1000000000 is reached", which Run to breakpoint then refuses."""
    handlers = Handlers(SessionManager(base, Limits(max_steps=50)))
    assert "step 49 is reached" in handlers.armed([], "49", "", "", "", "")
    past = handlers.armed([], "1e9", "", "", "", "")
    assert "ml-error" in past and "'stop at step' 1000000000 is past this session's limit of 50" in html.unescape(past)


@pytest.mark.parametrize("template", [True, False], ids=["chat-template", "none"])
def test_the_chat_box_starts_ticked_only_where_the_model_has_a_template(tmp_path, template):
    """A base model's tokenizer has no chat template: with the box ticked, every prompt would be
    refused ("run without chat") until the user found and unticked it."""
    import json

    from tiny_model import write_tiny_model

    path = write_tiny_model(tmp_path)
    if not template:
        (path / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((path / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    base = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=1))
    app = build_app(SessionManager(base, Limits()))
    [chat] = [block for block in app.blocks.values() if getattr(block, "elem_id", None) == "ml-chat"]
    assert chat.value is template


def test_a_trace_over_a_file_limit_is_neither_saved_nor_shared_and_the_tab_goes_on(base, monkeypatch):
    """Save trace and Share link write a .mltrace: a trace load() would refuse is refused
    there, with the limit named in the page, and the session, its run and its last download
    stay as they were (inspector.save checks the file by load()'s own code)."""
    import webui.handlers
    from inspector.trace import tracefile

    shown: list[str] = []
    monkeypatch.setattr(webui.handlers.gr, "Warning", shown.append)
    manager = SessionManager(base, Limits())
    handlers = Handlers(manager)
    session = manager.open_tab("a")
    manager.add_prompts(session, ["What is 2 + 2?"], GREEDY, chat=True)
    manager.step(session)
    first = handlers.save_trace(session.key)
    trace, steps = session.trace, len(session.trace.steps)

    limit = tracefile.MAX_JSON_ELEMENTS
    monkeypatch.setattr(tracefile, "MAX_JSON_ELEMENTS", 100)  # the run is over it
    assert handlers.save_trace(session.key) is None and handlers.share_link(session.key, None) == ""
    assert len(shown) == 2 and shown[1].startswith("not shared: ")
    for message in shown:
        assert "elements, over the limit of 100; not saved" in message and "record fewer steps" in message
        assert str(handlers.downloads) not in message and "/tmp" not in message  # the server's paths stay there
    assert session.trace is trace and len(trace.steps) == steps and session.last_download == Path(first)
    assert [p.parent for p in handlers.downloads.glob("*/*")] == [Path(first).parent]  # no file, no folder left

    monkeypatch.setattr(tracefile, "MAX_JSON_ELEMENTS", limit)
    manager.step(session)  # the tab goes on, and saves again
    assert len(load(handlers.save_trace(session.key)).steps) == steps + 1


def test_a_saved_trace_over_the_upload_limit_is_downloaded_with_a_note_on_opening_it(base, monkeypatch):
    """A session's attention stores may make a file larger than this server's --upload-mb (the
    trace budget's default is twice it): the file is saved whole, and the page says how to open
    it, since the server's own Open would refuse it."""
    import webui.handlers

    shown: list[str] = []
    monkeypatch.setattr(webui.handlers.gr, "Warning", shown.append)
    manager = SessionManager(base, Limits(upload_mb=1))
    handlers = Handlers(manager)
    session = manager.open_tab("a")
    manager.add_prompts(session, ["What is 2 + 2?"], GREEDY, chat=True)
    manager.step(session)  # the prompt's queries and keys, 30 layers of them: over 1 MiB
    path = Path(handlers.save_trace(session.key))
    assert path.stat().st_size > 2**20 and len(load(path).steps) == len(session.trace.steps)
    assert len(shown) == 1 and "uploads of at most 1 MiB" in shown[0] and "app.py --trace" in shown[0]
    assert str(handlers.downloads) not in shown[0]
