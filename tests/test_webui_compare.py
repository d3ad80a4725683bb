"""The Compare tab through gradio_client, against a real server with the embedded model: each
request alone and the float32 reference replays of a greedy session agree with it; a trace file
with a planted divergence is marked there; every refusal (nothing to compare, a run not
finished, a bad file, another model, settings over the server's limits, too many steps) says
why and leaves the session as it was."""

from __future__ import annotations

import copy
import dataclasses
import html
import json
import re
import zipfile

import pytest
from gradio_client import handle_file
from safetensors.torch import save as save_safetensors
from test_diff import planted
from test_webui_api import add, panels
from tiny_model import write_tiny_model
from webui_support import Tab, embedded_manager, running_server
from wide_traces import fork_chain

from inspector import DebugSession, TraceError, load, save
from inspector.trace.codec import encode
from inspector.trace.model import SCHEMA_VERSION
from minillama import ConfigError, EngineConfig, LLMEngine, SamplingParams
from webui import comparing
from webui.limits import Limits
from webui.sessions import LimitReached, SessionManager

PROMPTS = "What is the capital of France?\nWrite a haiku about autumn."


@pytest.fixture(scope="module")
def manager(embedded_dir):
    return embedded_manager(embedded_dir)


@pytest.fixture(scope="module")
def url(manager):
    with running_server(manager) as address:
        yield address


@pytest.fixture(scope="module")
def finished(url):
    """A tab whose two greedy requests ran to their end (8 tokens each), and its steps."""
    tab = Tab(url)
    add(tab, PROMPTS)
    named = panels(tab.predict(api_name="/run"))
    assert "every request has finished" in named["status"]
    return tab, int(re.search(r"(\d+) step\(s\) recorded", named["status"]).group(1))


def compare(tab: Tab, api_name: str, *inputs) -> tuple[str, str]:
    """(the Compare panel, the status banner) after a comparison."""
    panel, status = tab.predict(*inputs, api_name=api_name)
    return panel, status


def chart(panel: str) -> dict:
    carried = re.search(r'data-figures="([^"]*)"', panel).group(1)
    return json.loads(html.unescape(carried))["compare"]


def unchanged(tab: Tab, steps: int) -> bool:
    named = panels(tab.predict(api_name="/step"))
    return "every request has finished" in named["status"] and f"{steps} step(s) recorded" in named["status"]


def test_each_request_alone_gives_the_same_greedy_tokens(finished):
    tab, steps = finished
    panel, status = compare(tab, "/compare_alone")
    assert "compared with each request alone: all 2 request(s) give the same tokens" in status
    assert "The same tokens: all 2 request(s) agree" in panel and 'class="mlv-diverged"' not in panel
    assert f"this session: 2 request(s) in one batch ({steps} steps)" in panel
    assert "each replayed alone" in panel
    figure = chart(panel)
    assert figure["layout"]["yaxis"]["title"]["text"] == "max |Δ log p|" and len(figure["data"]) == 8
    assert unchanged(tab, steps)  # the session is only read


def test_the_fidelity_check_replays_in_float32_with_the_reference_kernels(finished, manager):
    tab, steps = finished
    panel, status = compare(tab, "/compare_fidelity")
    assert "compared with float32 and the reference kernels: all 2 request(s) give the same tokens" in status
    assert "<tr><td>attention</td><td>cpu</td><td>reference</td></tr>" in panel
    drift = [float(x) for x in re.findall(r'<td class="mlv-num">(\d\.\d\de[-+]\d\d)</td>', panel)]
    assert len(drift) == 2 and max(drift) < 1e-3  # the C kernels against the reference, both float32
    reference = manager.reference_engine()  # made by the first check, kept for the next
    compare(tab, "/compare_fidelity")
    assert manager.reference_engine() is reference
    assert unchanged(tab, steps)


def test_a_smaller_pool_preempts_says_why_and_keeps_the_greedy_tokens(finished):
    """The Engine panel's settings (not applied to the session): 10 KV blocks of 8 tokens
    cannot hold both requests, so one is preempted; the schedules differ, with their causes."""
    tab, steps = finished
    panel, status = compare(tab, "/compare_settings", 10, "8", 64, 4096, True)
    assert "compared with the Engine panel's settings: all 2 request(s) give the same tokens" in html.unescape(status)
    assert "replayed with 10 KV blocks of 8 tokens, batches of up to 64, 4096 batched tokens, prefix caching on" in panel
    assert "<tr><td>num_blocks</td><td>64</td><td>10</td></tr>" in panel
    # Every request the smaller pool scheduled differently has its causes (the one that only came
    # later, behind the other's recomputed prefill, too): the preemption is among them.
    why = " ".join(html.unescape(row.split("</tr>")[0]) for row in panel.split('<tr class="mlv-why">')[1:])
    assert "preempted: #0 needed a new block for position" in why and "the latest arrival goes first" in why
    assert unchanged(tab, steps)


@pytest.mark.parametrize(("fields", "message"), [
    ((0, "8", 64, 4096, True), "KV blocks must be a whole number >= 1, got 0"),
    ((5000, "8", 64, 4096, True), "KV blocks must be between 1 and 1024, got 5000"),
    ((2, "8", 64, 4096, True), "can never fit the KV cache: the K/V of 44 tokens need 6 blocks of 8, the cache has 2"),
    ((16, "8", 65, 4096, True), "max batch size must be between 1 and 64, got 65"),
    ((16, "8", 64, None, True), "max batched tokens is empty"),
    ((16, "8", 64, 10**9, True), "max batched tokens must be between 1 and 16384, got 1000000000"),
])
def test_bad_engine_settings_are_refused_before_any_step(finished, fields, message):
    tab, steps = finished
    assert message in refused(tab, "/compare_settings", *fields)
    assert unchanged(tab, steps)


def test_a_compared_files_name_is_shown_as_text(finished, tmp_path):
    """The status line now names what the session was compared with: an uploaded file's name,
    which its sender chose, goes out as text, in the status and in the panel."""
    tab, _ = finished
    path = tmp_path / "<img src=x onerror=alert(1)>.mltrace"
    save(load(tab.predict(api_name="/save_trace")), path)
    panel, status = compare(tab, "/compare_file", handle_file(str(path)))
    # (Gradio's upload drops the name's < and >; whatever arrives is escaped.)
    assert "<img" not in status and "<img" not in panel
    assert "compared with " in status and "onerror=alert(1).mltrace: all 2 request(s)" in status


def test_a_trace_file_with_a_planted_divergence_is_marked(finished, tmp_path):
    tab, steps = finished
    trace = load(tab.predict(api_name="/save_trace"))
    seq = trace.sequences[1]
    other = (seq.output_ids[3] + 1) % trace.model.vocab_size
    path = tmp_path / "planted.mltrace"
    save(planted(trace, 1, 3, other), path)
    panel, status = compare(tab, "/compare_file", handle_file(str(path)))
    assert "compared with planted.mltrace: 1 of 2 request(s) differ, first request 1" in status
    marked = panel.split('<tr class="mlv-diverged">')[1].split("</tr>")[0]
    assert f"differs from token 3</b> (step {seq.token_steps[3]} / {seq.token_steps[3]})" in marked
    assert "planted.mltrace (2 request(s)" in panel and "/tmp" not in panel
    assert unchanged(tab, steps)


def refused(tab: Tab, api_name: str, *inputs) -> str:
    panel, status = compare(tab, api_name, *inputs)
    assert "ml-error" in status
    return html.unescape(status)


def told_twice(trace, tmp_path, what: str):
    """A copy of `trace` saved with one thing it records twice saying two things."""
    trace = copy.deepcopy(trace)
    seq = next(s for s in trace.sequences.values() if s.output_ids)
    if what == "text":
        seq.text += "<b>not what the tokens say</b>"
    elif what == "num_preemptions":
        seq.num_preemptions += 1
    else:  # a block's ref_count
        kv = next(step.kv for step in trace.steps if step.kv.block_ids.numel())
        kv.ref_count = kv.ref_count + 1
    path = tmp_path / f"{what}.mltrace"
    with pytest.raises(TraceError):  # save() refuses what load() would
        save(trace, path)
    with zipfile.ZipFile(path, "w") as zf:  # so it is written as a hostile sender would
        tensors: dict = {}
        zf.writestr("trace.json", json.dumps({"format": "mltrace", "schema_version": SCHEMA_VERSION,
                                              "trace": encode(trace, tensors, "trace")}))
        zf.writestr("tensors.safetensors", save_safetensors(tensors))
    return path


SAID_TWICE = {"text": "its text is not the text deltas of its tokens, joined",
              "num_preemptions": "num_preemptions is 1, but 0 step(s) preempted it",
              "ref_count": "ref_count is not the number of block tables that hold it"}


@pytest.mark.parametrize("what", SAID_TWICE)
def test_a_trace_file_that_says_two_things_is_refused_and_the_session_keeps_serving(url, finished, tmp_path, what):
    """By Compare, and by Open in another tab: refused with what disagrees, and the session
    that compared is as it was."""
    tab, steps = finished
    path = told_twice(load(tab.predict(api_name="/save_trace")), tmp_path, what)
    assert SAID_TWICE[what] in refused(tab, "/compare_file", handle_file(str(path)))
    named = panels(Tab(url).predict(handle_file(str(path)), api_name="/open_trace"))
    assert "ml-error" in named["status"] and SAID_TWICE[what] in html.unescape(named["status"])
    assert unchanged(tab, steps)


def test_a_trace_file_of_a_deep_chain_of_forks_compares_in_a_panel_of_its_size(finished, tmp_path):
    """2,000 forks deep (60 KB): each request's label names its last two forks, not all of
    them (the server built 2,000 labels of up to 2,000 parts, and the panel's rows, at most
    200, held labels of up to 200)."""
    tab, steps = finished
    path = tmp_path / "chain.mltrace"
    save(fork_chain(2000), path)
    panel, status = compare(tab, "/compare_file", handle_file(str(path)))
    assert "ml-error" not in status and "chain.mltrace (2001 request(s)" in panel
    labels = re.findall(r"<td>(request 0[^<]*)</td>", panel)
    assert len(labels) > 100 and max(map(len, labels)) <= 80
    assert re.search(r"request 0 / \.\.\. 19\d fork\(s\) \.\.\. / sample 0 / sample 0", panel)
    assert unchanged(tab, steps)


def test_nothing_to_compare_and_an_unfinished_run_are_refused(url):
    tab = Tab(url)
    for api_name in ("/compare_alone", "/compare_fidelity"):
        assert "nothing to compare yet: add prompts and Run first" in refused(tab, api_name)
    add(tab, PROMPTS)
    tab.predict(api_name="/step")
    assert "2 request(s) have not finished (#0 first): Run to the end first" in refused(tab, "/compare_alone")
    named = panels(tab.predict(api_name="/step"))
    assert "2 request(s) · 2 step(s) recorded" in named["status"]  # still its own run, one step on


def test_bad_files_and_bad_keys_are_refused_with_a_message(finished, tmp_path):
    tab, steps = finished
    bogus = tmp_path / "bogus.mltrace"
    bogus.write_bytes(b"this is not a zip")
    message = refused(tab, "/compare_file", handle_file(str(bogus)))
    assert "bogus.mltrace is not a .mltrace file" in message and "/tmp" not in message
    assert "no trace file came with the request" in refused(tab, "/compare_file", None)
    panel, status = tab.client.predict("not-a-key", api_name="/compare_alone")
    assert "reload the page" in status
    assert unchanged(tab, steps)


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory):
    """A finished run of another model (the tiny one), saved."""
    tiny = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    session = DebugSession(LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", num_kv_blocks=32, block_size=4)))
    session.add("hello there", SamplingParams(temperature=0.0, max_tokens=4))
    session.run()
    path = tmp_path_factory.mktemp("traces") / "tiny.mltrace"
    save(session.trace, path)
    return path


def test_a_trace_of_another_model_is_not_replayed_on_this_one(url, manager, tiny_trace, tmp_path):
    tab = Tab(url)
    named = panels(tab.predict(handle_file(str(tiny_trace)), api_name="/open_trace"))
    assert "opened tiny.mltrace" in named["status"]
    message = refused(tab, "/compare_alone")
    assert re.search(r"a different model: the trace was recorded on tiny\d*, this replay runs SmolLM2.* \(num_layers 2 against 30\)",
                     message)
    # Over the server's limits: refused before anything runs (the model is not even compared).
    trace = load(tiny_trace)
    trace.engine = dataclasses.replace(trace.engine, max_num_seqs=100)
    big = tmp_path / "big.mltrace"
    save(trace, big)
    assert "opened big.mltrace" in panels(tab.predict(handle_file(str(big)), api_name="/open_trace"))["status"]
    assert "the trace ran batches of up to 100; this server replays at most 64" in refused(tab, "/compare_fidelity")
    trace.engine = dataclasses.replace(trace.engine, max_num_seqs=8, max_num_batched_tokens=10**6)
    save(trace, big)
    tab.predict(handle_file(str(big)), api_name="/open_trace")
    assert "prefill steps of up to 1000000 tokens; this server replays at most 16384" in refused(tab, "/compare_alone")
    small_pool = SessionManager(manager.base, Limits(max_kv_blocks=16))
    session = small_pool.open_tab("client")
    small_pool.open_trace(session, load(tiny_trace), "tiny.mltrace")
    with pytest.raises(LimitReached, match="the trace ran with 32 KV blocks; this server replays at most 16"):
        comparing.alone(small_pool, session, lambda done, total: None)


@pytest.mark.parametrize("check", [comparing.alone, comparing.fidelity])
def test_a_trace_files_block_size_cannot_size_a_replays_pool_past_the_memory_limit(manager, tiny_trace, tmp_path, check):
    """A file may record any block size up to 65,536 tokens: 32 blocks of it, replayed, would
    be a pool of gigabytes, past what a session's pool may take (--max-kv-mb). Refused before
    the engine is made; the session keeps its trace."""
    trace = load(tiny_trace)
    trace.engine = dataclasses.replace(trace.engine, block_size=2**16)
    path = tmp_path / "wide.mltrace"
    save(trace, path)
    server = SessionManager(manager.base, Limits())
    session = server.open_tab("client")
    server.open_trace(session, load(path), "wide.mltrace")
    with pytest.raises(ValueError, match=r"32 KV blocks of 65536 tokens take \d+ MiB; this server gives a session at "
                                         r"most 512 MiB \(--max-kv-mb\)"):
        check(server, session, lambda done, total: None)
    assert session.trace.engine.block_size == 2**16 and session.opened_name == "wide.mltrace"


def test_a_file_of_other_requests_compares_as_not_the_same(finished, tiny_trace):
    tab, _ = finished
    panel, status = compare(tab, "/compare_file", handle_file(str(tiny_trace)))
    assert "2 of 2 request(s) differ" in status
    assert "the models&#39; names differ" in panel and "not the same request</b>: the prompts differ" in panel
    assert "<b>only in a</b>" in panel


def test_a_replay_stops_at_the_step_limit_and_a_running_session_is_refused(manager, embedded_dir):
    small = SessionManager(manager.base, Limits(max_steps=12))
    session = small.open_tab("client")
    small.add_prompts(session, PROMPTS.splitlines(), SamplingParams(temperature=0.0, max_tokens=8), chat=True)
    while small.step(session):
        pass
    assert len(session.trace.steps) <= 12  # batched, the run fits; one request after the other does not
    with pytest.raises(ConfigError, match="the replay has run 12 steps, its limit"):
        comparing.alone(small, session, lambda done, total: None)
    many = copy.deepcopy(session.trace)  # a file may claim any number of requests
    for i in range(300):
        many.sequences[1000 + i] = dataclasses.replace(many.sequences[0], seq_id=1000 + i)
    other = small.open_tab("client")
    small.open_trace(other, many, "many.mltrace")
    with pytest.raises(LimitReached, match="the trace has 302 requests; this server replays at most 256"):
        comparing.alone(small, other, lambda done, total: None)
    session.running = True
    with pytest.raises(ValueError, match="a run is in progress: Pause it"):
        comparing.alone(small, session, lambda done, total: None)


def test_a_comparison_is_cleared_once_the_session_shows_another_run(url):
    """The Compare tab's verdict is about the run it compared: a cursor move keeps it; Reset (as
    a step, a fork or an opened trace would) puts a note there instead, once. The verdict stood
    beside the empty session after a Reset, read as the new run's."""
    tab = Tab(url)
    add(tab, PROMPTS)
    tab.predict(api_name="/run")
    panel, _ = compare(tab, "/compare_alone")
    assert "The same tokens" in panel
    assert "earlier run" not in str(panels(tab.predict(1, api_name="/seek"))["compare"])
    named = panels(tab.predict(64, "16", 8, 2048, True, True, 2, 10, False, api_name="/reset"))
    assert "The comparison shown here was of an earlier run" in named["compare"]
    add(tab, PROMPTS)
    assert "earlier run" not in str(panels(tab.predict(api_name="/step"))["compare"])  # said once
