"""What if? The fork requests of the web UI through gradio_client, against a real server with
the embedded model: a click on another token forks there and runs the fork to its parent's
length, typed text does the same, and every hostile request (bad JSON, a sequence, step or
token that does not exist, a trace from a file, an aborted parent, a running session) gets a
message and changes nothing."""

from __future__ import annotations

import html
import json
import re
import time

import pytest
from test_webui_api import add, panels
from webui_support import Tab, embedded_manager, running_server

from minillama import SamplingParams

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def manager(embedded_dir):
    return embedded_manager(embedded_dir)


@pytest.fixture(scope="module")
def url(manager):
    with running_server(manager) as address:
        yield address


def stepped(url: str, steps: int = 4) -> tuple[Tab, dict]:
    """A tab with one greedy request (MAX_TOKENS tokens) stepped `steps` times; its last panels."""
    tab = Tab(url)
    add(tab, "What is the capital of France?", max_tokens=MAX_TOKENS)
    for _ in range(steps):
        named = panels(tab.predict(api_name="/step"))
    return tab, named


def choices(named: dict) -> list[dict]:
    """The fork buttons of the Next token tab: their data attributes, and whether enabled."""
    buttons = re.findall(r"<button ([^>]*class=\"mlv-fork-tok[^>]*)>", named["forks"])
    found = []
    for attributes in buttons:
        data = dict(re.findall(r'data-(\w+)="(\d+)"', attributes))
        found.append({**{k: int(v) for k, v in data.items()}, "enabled": " disabled" not in attributes})
    return found


def click(choice: dict) -> str:
    return json.dumps({"seq": choice["seq"], "step": choice["step"], "token": choice["token"]})


def test_a_click_forks_there_and_runs_the_fork_to_its_parents_length(url, manager):
    tab, named = stepped(url)
    buttons = choices(named)
    assert len(buttons) > 1 and sum(not b["enabled"] for b in buttons) == 1  # the drawn token's is disabled
    alternative = next(b for b in buttons if b["enabled"])
    parent_id, step = alternative["seq"], alternative["step"]
    assert step == 3  # the cursor's step, the last one
    done = panels(tab.predict(click(alternative), api_name="/fork_token"))
    trace = manager.find(tab.key).trace
    child_id = max(trace.sequences)
    parent, child = trace.sequences[parent_id], trace.sequences[child_id]
    status = html.unescape(done["status"])
    assert f"#{child_id} ← #{parent_id} at step {step}" in status and "finished at step" in status
    # It kept the parent's tokens before that step's token, then the clicked one.
    kept = parent.token_steps.index(step)
    assert child.prompt_ids == parent.prompt_ids + parent.output_ids[:kept] + [alternative["token"]]
    assert child.parent_id == parent_id and child.fork_cause == "user" and child.finish_reason is not None
    if child.finish_reason == "length":  # it ends where its parent may: the same max tokens in all
        assert kept + 1 + len(child.output_ids) == MAX_TOKENS
    # Listed under its parent, selected, and shown beside it in the Branch tab.
    assert done["seq"]["value"] == str(child_id)
    labels = [label for label, _ in done["seq"]["choices"]]
    under = labels[labels.index(next(x for x in labels if x.startswith(f"#{parent_id}"))) + 1]
    assert under.startswith(f"↳ #{child_id} ← #{parent_id} at step {step}, ")
    assert f"#{child_id} ← #{parent_id} at step {step}" in done["text"]
    assert "mlv-diverge" in done["branch"] and "first difference" in done["branch"]
    # The picker now shows the fork: typed text at an earlier step, where only its parent drew,
    # is refused naming the parent to pick (the message named the fork alone).
    tab.predict(1, api_name="/seek")
    refused = html.unescape(panels(tab.predict(" x", api_name="/fork_text"))["status"])
    assert f"#{child_id} drew no token at step 1" in refused
    assert f"or pick #{parent_id} in the Sequence picker" in refused


def test_typed_text_forks_at_the_cursor_step_of_the_selected_sequence(url, manager):
    tab, _ = stepped(url, steps=3)
    done = panels(tab.predict(" Berlin", api_name="/fork_text"))
    trace = manager.find(tab.key).trace
    child = trace.sequences[max(trace.sequences)]
    parent = trace.sequences[child.parent_id]
    assert "finished at step" in done["status"]
    kept = parent.token_steps.index(2)  # the cursor was at step 2
    forced = child.prompt_ids[len(parent.prompt_ids) + kept:]
    assert forced and child.fork_position == len(parent.prompt_ids) + kept
    assert "Berlin" in "".join(child.prompt_tokens[child.fork_position:])


CLICKS = [
    ("", "carried none"),
    ("not json", "exactly a sequence, a step and a token"),
    ('{"seq": 0, "step": 3}', "exactly a sequence, a step and a token"),
    ('{"seq": 0, "step": 3, "token": 5, "params": {}}', "exactly a sequence, a step and a token"),
    ('[0, 3, 5]', "exactly a sequence, a step and a token"),
    ('{"seq": "0", "step": 3, "token": 5}', "whole numbers"),
    ('{"seq": true, "step": 3, "token": 5}', "whole numbers"),
    ('{"seq": 0, "step": -1, "token": 5}', "whole numbers"),
    ('{"seq": 0, "step": 3, "token": 1.5}', "whole numbers"),
    ('{"seq": 0, "step": 3, "token": 5' + " " * 300 + "}", "three small numbers, not 333 characters"),
    ('{"seq": 99, "step": 3, "token": 5}', "no sequence #99"),
    ('{"seq": 0, "step": 999, "token": 5}', "drew no token at step 999"),
    ('{"seq": 0, "step": 3, "token": 999999999}', "not in the model's vocabulary"),
]


@pytest.fixture(scope="module")
def target(url):
    """One stepped tab for every hostile click (each must leave it as it was)."""
    return stepped(url)


@pytest.mark.parametrize(("payload", "message"), CLICKS)
def test_a_hostile_click_gets_a_message_and_changes_nothing(target, manager, payload, message):
    tab, before = target
    session = manager.find(tab.key)
    sequences, steps = len(session.trace.sequences), len(session.trace.steps)
    named = panels(tab.predict(payload, api_name="/fork_token"))
    assert "ml-error" in named["status"] and message in html.unescape(named["status"])
    assert (len(session.trace.sequences), len(session.trace.steps)) == (sequences, steps)
    assert named["text"] == before["text"]


def test_the_drawn_token_itself_is_refused(url, manager):
    tab, named = stepped(url)
    drawn = next(b for b in choices(named) if not b["enabled"])
    refused = panels(tab.predict(click(drawn), api_name="/fork_token"))
    assert "drew that very token" in refused["status"] and len(manager.find(tab.key).trace.sequences) == 1


def test_an_aborted_parent_cannot_be_forked(url, manager):
    tab, named = stepped(url)
    session = manager.find(tab.key)
    alternative = next(b for b in choices(named) if b["enabled"])
    session.debug.abort(alternative["seq"])  # the engine lets go of it
    refused = panels(tab.predict(click(alternative), api_name="/fork_token"))
    assert "no longer held by the engine" in refused["status"] and len(session.trace.sequences) == 1


def test_a_trace_from_a_file_cannot_be_forked(url, manager):
    from gradio_client import handle_file

    author, named = stepped(url)
    alternative = next(b for b in choices(named) if b["enabled"])
    path = author.predict(api_name="/save_trace")
    viewer = Tab(url)
    opened = panels(viewer.predict(handle_file(path), api_name="/open_trace"))
    assert "read-only" in opened["forks"] or "drew no token" in opened["forks"]
    refused = panels(viewer.predict(click(alternative), api_name="/fork_token"))
    assert "trace from a file" in refused["status"]
    refused = panels(viewer.predict(" Berlin", api_name="/fork_text"))
    assert "trace from a file" in refused["status"]


def test_empty_fork_text_and_a_running_session_are_refused(url, manager):
    tab, named = stepped(url, steps=2)
    assert "fork text is empty" in panels(tab.predict("", api_name="/fork_text"))["status"]
    add(tab, "Write a long story about a dragon.", max_tokens=60)
    job = tab.submit(api_name="/run")
    session = manager.find(tab.key)
    deadline = time.monotonic() + 30
    while not session.running and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        refused = panels(tab.predict(" Berlin", api_name="/fork_text"))
        assert "already running" in refused["status"]
    finally:
        tab.predict(api_name="/pause")
        job.result(timeout=60)
    assert all(s.parent_id is None for s in session.trace.sequences.values())


def test_pause_stops_a_forks_run(url, manager):
    tab = Tab(url)
    add(tab, "Write a long story about a dragon.", max_tokens=60)
    for _ in range(3):
        named = panels(tab.predict(api_name="/step"))
    job = tab.submit(click(next(b for b in choices(named) if b["enabled"])), api_name="/fork_token")
    session = manager.find(tab.key)
    deadline = time.monotonic() + 30
    while not session.running and time.monotonic() < deadline:  # the fork was made and runs
        time.sleep(0.02)
    tab.predict(api_name="/pause")
    paused = panels(job.result(timeout=60))
    assert "paused" in paused["status"]
    child = session.trace.sequences[max(session.trace.sequences)]
    assert child.parent_id is not None and child.finish_reason is None  # stopped midway, resumable


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0, seed=1, max_tokens=6, n=2),
                                    SamplingParams(max_tokens=6, beam_width=2)], ids=["sample", "beam"])
def test_a_sample_or_a_beam_forks_into_one_plain_sequence(url, manager, params):
    tab, _ = stepped(url, steps=1)
    session = manager.find(tab.key)
    session.debug.add("Name a colour.", params, chat=True)
    tab.predict(api_name="/step")  # its prompt: the samples (or beams) draw their first token
    trace = session.trace
    member = max(s for s, r in trace.sequences.items() if r.group_id is not None and r.parent_id is not None)
    step = trace.sequences[member].token_steps[0]
    drawn = trace.steps[step].token_of(member)
    other = next(t for t in drawn.logits.top_ids if t != drawn.token_id)
    done = panels(tab.predict(json.dumps({"seq": member, "step": step, "token": other}), api_name="/fork_token"))
    child = next(r for r in trace.sequences.values() if r.fork_cause == "user")  # (a search goes on forking beams)
    assert "finished at step" in html.unescape(done["status"]) and child.parent_id == member
    assert child.group_id is None and child.fork_cause == "user"
    assert child.params["n"] == 1 and child.params["beam_width"] == 1
    if params.beam_width > 1:  # a beam's fork goes on greedily, as the search would
        assert child.params["temperature"] == 0
