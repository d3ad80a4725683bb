"""The app's API through gradio_client, against a real server with the embedded model: submit
prompts, step, read every panel; bad input gives a message and changes nothing; sessions are
isolated; --auth refuses an unauthenticated client."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from webui_support import Tab, running_server

from inspector.views import join_text
from minillama import EngineConfig, LLMEngine
from webui.limits import Limits
from webui.render import API_OUTPUT_NAMES
from webui.sessions import SessionManager

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def base(embedded_dir):
    return LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=1, max_model_len=256))


@pytest.fixture(scope="module")
def manager(base):
    return SessionManager(base, Limits(max_sessions=64, max_sessions_per_client=64, max_new_tokens=256))


@pytest.fixture(scope="module")
def url(manager):
    with running_server(manager) as address:
        yield address


def panels(result: tuple) -> dict:
    """The outputs of a handler by name, each figure (plotly JSON) by its name, and the Text
    panel's HTML."""
    named = dict(zip(API_OUTPUT_NAMES, result, strict=True))
    carried = re.search(r'data-figures="([^"]*)"', named.pop("figures")).group(1)
    named.update(json.loads(html.unescape(carried)))
    named["text"] = join_text(json.loads(named["text"]))  # the Text panel's parts (render.text_carrier)
    return named


def shows_step(named: dict, index: int) -> bool:
    """Does every cursor-following panel say it shows step `index`?"""
    pattern = re.compile(rf"step {index}(?!\d)")
    texts = [named[n] for n in ("text", "tables", "details")]
    texts += [named[n]["layout"]["title"]["text"] for n in ("timeline", "kv", "attention", "logits", "history", "lens")]
    return all(pattern.search(t) for t in texts)


def add(client: Tab, prompts: str, max_tokens: int = 8) -> dict:
    return panels(client.predict(prompts, True, max_tokens, 0.0, 1.0, 0, "", 1, 1, api_name="/add_prompts"))


def test_submit_step_and_read_every_panel(url):
    client = Tab(url)
    named = add(client, "What is the capital of France?\nWrite a haiku about autumn.")
    assert "added #" in named["status"]
    for index in range(4):
        named = panels(client.predict(api_name="/step"))
        assert shows_step(named, index), index
    assert named["slider"]["maximum"] == 3 and named["slider"]["value"] == 3
    assert "decode" in named["details"]
    back = panels(client.predict(1, api_name="/seek"))  # time travel: panels follow the cursor
    assert shows_step(back, 1) and back["slider"]["label"].startswith("Step 1 ")
    assert "value" not in back["slider"]  # the user moved it there, and may have moved it on: left as it is
    assert shows_step(panels(client.predict(api_name="/next")), 2)
    done = panels(client.predict(api_name="/run"))
    assert "every request has finished" in done["status"] and "Paris" in done["text"]


def test_prompt_text_is_escaped(url):
    client = Tab(url)
    add(client, XSS, max_tokens=2)
    named = panels(client.predict(api_name="/step"))
    # The prompt's tokens split the tag over chips ("<", "img", " on", "error"): each shows escaped.
    assert "<img" not in named["text"] and ">&lt;</span>" in named["text"] and ">img</span>" in named["text"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (("", True, 8, 0.0, 1.0, 0, "", 1, 1), "no prompt"),
        (("Hi", True, 0, 0.0, 1.0, 0, "", 1, 1), "max tokens must be a whole number &gt;= 1"),
        (("Hi", True, 8, -1.0, 1.0, 0, "", 1, 1), "temperature must be"),
        (("Hi", True, 8, 0.0, 1.5, 0, "", 1, 1), "top_p must be in (0, 1]"),
        (("Hi", True, 257, 0.0, 1.0, 0, "", 1, 1), "prompt 1 asks for 257 new tokens; this server allows 256 (--max-new-tokens)"),
        (("word " * 300, False, 8, 0.0, 1.0, 0, "", 1, 1), "max_model_len is 256"),
        (("word " * 1000, False, 8, 0.0, 1.0, 0, "", 1, 1), "prompt 1 has 4999 characters; the limit is 4000"),
        (("Hi", True, 8, 0.0, 1.0, 0, "-3", 1, 1), "seed must be a whole number &gt;= 0"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", 0, 1), "samples must be a whole number &gt;= 1, got 0"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", 9, 1), "prompt 1 asks for 9 samples; this server allows 8"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", 1, -2), "beam width must be a whole number &gt;= 1, got -2"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", 2, 3), "samples (2) and beam width (3) cannot both be above 1"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", 1, 9), "prompt 1 asks for 9 beams; this server allows 8"),
    ],
)
def test_bad_input_gives_a_message_and_changes_nothing(url, inputs, message):
    client = Tab(url)
    add(client, "Hello", max_tokens=4)
    before = panels(client.predict(api_name="/step"))
    named = panels(client.predict(*inputs, api_name="/add_prompts"))
    assert "ml-error" in named["status"] and message in named["status"]
    assert named["text"] == before["text"]  # same requests, same step
    assert shows_step(panels(client.predict(api_name="/step")), 1)  # and the session still runs


def test_bad_settings_and_breakpoints_give_messages(url):
    client = Tab(url)
    named = panels(client.predict(10**6, "16", 8, 2048, True, True, 2, 10, False, api_name="/reset"))
    assert "KV blocks must be between 1 and" in named["status"]
    named = panels(client.predict([], "", "(unclosed", "", "", "", api_name="/run_to_breakpoint"))
    assert "is not a regular expression RE2 accepts" in named["status"]


def test_run_to_a_breakpoint_stops_there(url):
    client = Tab(url)
    client.predict(10, "8", 4, 2048, True, True, 2, 10, False, api_name="/reset")  # 10 blocks of 8: preempts
    add(client, "What is the capital of France?\nName three primary colors.\nWhat is 2 + 2?", max_tokens=12)
    named = panels(client.predict(["a preemption"], "", "", "", "", "", api_name="/run_to_breakpoint"))
    assert "breakpoint at step" in named["status"] and "preempt" in named["status"]
    index = named["slider"]["value"]
    assert shows_step(named, index) and "preempted" in named["details"]
    # The panels follow what the breakpoint is about: the evicted sequence, traced like every request.
    victim = re.search(r"#(\d+) was preempted", named["status"]).group(1)
    assert named["seq"]["value"] == victim and f"seq #{victim}" in named["attention"]["layout"]["title"]["text"]


def test_a_breakpoint_that_cannot_fire_is_refused_and_one_that_did_not_is_said(url):
    """"Stop at step" 3 with step 107 recorded ran 90 steps to the end; 1e9 was taken; and a run
    that ended with none of its breakpoints fired said only "every request has finished"."""
    client = Tab(url)
    add(client, "What is the capital of France?", max_tokens=6)
    for _ in range(4):
        client.predict(api_name="/step")
    for at_step, message in (("2", "'stop at step' 2 is already recorded (steps 0–3): give a later step"),
                             ("1e9", "'stop at step' 1000000000 is past this session's limit of")):
        named = panels(client.predict([], at_step, "", "", "", "", api_name="/run_to_breakpoint"))
        assert message in html.unescape(named["status"]) and "4 step(s) recorded" in named["status"]
    named = panels(client.predict(["a copy-on-write"], "", "", "", "", "", api_name="/run_to_breakpoint"))
    assert "no breakpoint fired (a copy-on-write); every request has finished" in named["status"]


def test_the_auto_selection_follows_the_step(url):
    client = Tab(url)
    add(client, "What is the capital of France?\nWhat is 2 + 2?", max_tokens=3)
    for _ in range(3):
        named = panels(client.predict(api_name="/step"))
    assert named["seq"]["value"] == "auto" and {c[1] for c in named["seq"]["choices"]} == {"auto", "0", "1"}
    assert all("attention" in c[0] for c in named["seq"]["choices"][1:])  # every request traced by default
    picked = panels(client.predict("1", 3, "all", False, api_name="/select"))  # an explicit choice sticks
    assert picked["seq"]["value"] == "1" and "seq #1" in picked["attention"]["layout"]["title"]["text"]
    assert "seq #1" in panels(client.predict(0, api_name="/seek"))["attention"]["layout"]["title"]["text"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (("Hi", True, None, 0.0, 1.0, 0, "", 1, 1), "max tokens is empty: give a whole number &gt;= 1"),
        (("Hi", True, 8, None, 1.0, 0, "", 1, 1), "temperature is empty: give a number"),
        (("Hi", True, 8, 0.0, 1.0, 0, "x7", 1, 1), "seed needs a whole number &gt;= 0, got &#39;x7&#39;"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", None, 1), "samples is empty: give a whole number &gt;= 1"),
        (("Hi", True, 8, 0.0, 1.0, 0, "", 1, None), "beam width is empty: give a whole number &gt;= 1"),
    ],
)
def test_empty_and_malformed_fields_say_so(url, inputs, message):
    named = panels(Tab(url).predict(*inputs, api_name="/add_prompts"))
    assert "ml-error" in named["status"] and message in named["status"] and "None" not in named["status"]


def test_an_empty_seed_means_no_seed(url, manager):
    client = Tab(url)
    add(client, "Hi", max_tokens=2)
    client.predict("Hi", True, 2, 0.7, 1.0, 0, "", 1, 1, api_name="/add_prompts")
    client.predict("Hi", True, 2, 0.7, 1.0, 0, "5", 1, 1, api_name="/add_prompts")
    seeds = [r.params["seed"] for r in manager.sessions[client.key].trace.sequences.values()]
    assert seeds == [None, None, 5]


def test_samples_from_the_form_share_their_prompt_and_are_listed_under_it(url, manager):
    client = Tab(url)
    named = panels(client.predict("What is 2 + 2?", True, 3, 0.8, 1.0, 0, "7", 3, 1, api_name="/add_prompts"))
    assert "added #0:" in named["status"]
    named = panels(client.predict(api_name="/step"))  # the prefill: each sample draws its first token
    trace = manager.sessions[client.key].trace
    assert trace.sequences[0].params["n"] == 3 and {r.group_id for r in trace.sequences.values()} == {0}
    assert len(trace.sequences) == 3 and 'data-group="0"' in named["text"] and "3 sample(s) of one prompt" in named["text"]
    assert "<sup>×3</sup>" in named["tables"]  # the prompt's full blocks, held by all three


def test_a_beam_search_from_the_form_lists_its_beams_best_first(url, manager):
    client = Tab(url)
    add_prompts = ("What is the capital of France?", True, 8, 0.7, 1.0, 0, "", 1, 3)
    assert "added #0:" in panels(client.predict(*add_prompts, api_name="/add_prompts"))["status"]
    named = panels(client.predict(api_name="/run"))
    trace = manager.sessions[client.key].trace
    assert trace.sequences[0].params["beam_width"] == 3 and {r.group_id for r in trace.sequences.values()} == {0}
    finished = sorted((r for r in trace.sequences.values() if r.beam_score is not None), key=lambda r: -r.beam_score)
    pruned = [r.seq_id for r in trace.sequences.values() if r.pruned_step is not None]
    assert len(finished) == 3 and pruned, "the search keeps 3 beams and drops others"
    listed = [int(s) for s in re.findall(r'data-seq="(\d+)"', named["text"])]
    assert listed[:3] == [r.seq_id for r in finished] and set(listed[3:]) >= set(pruned)
    assert "beam search · " in named["text"] and named["text"].count("mlv-seq mlv-pruned") == len(pruned)


def test_stepping_a_fresh_session_says_to_add_prompts(url):
    for api_name in ("/step", "/run"):
        named = panels(Tab(url).predict(api_name=api_name))
        assert "add prompts first" in named["status"] and "trace from a file" not in named["status"]


def test_the_logit_lens_when_captured(url):
    client = Tab(url)
    client.predict(64, "16", 8, 2048, True, False, 1, 10, True, api_name="/reset")  # lens on, attention off
    add(client, "What is the capital of France?", max_tokens=4)
    client.predict(api_name="/step")
    named = panels(client.predict(api_name="/step"))
    lens = named["lens"]
    assert lens["layout"]["title"]["text"].startswith("Logit lens · step 1 · seq #0")
    assert len(lens["data"][0]["z"]) == 30 and len(lens["data"][0]["z"][0]) == 5  # the embedded model's layers x top-5


def test_two_clients_have_separate_sessions(url):
    first, second = Tab(url), Tab(url)
    add(first, "What is the capital of France?")
    for _ in range(3):
        first.predict(api_name="/step")
    named = panels(second.loaded)
    assert "No step yet" in named["text"] and "capital" not in named["text"]


def test_pause_stops_a_run_between_steps(url):
    client = Tab(url)
    # Room to spare: the pause must land before the run ends, however slowly it travels.
    add(client, "Write a long story about a dragon.", max_tokens=200)
    job = client.submit(api_name="/run")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:  # the run's first live update: it is running
        time.sleep(0.02)
    client.predict(api_name="/pause")
    named = panels(job.result(timeout=60))
    assert "paused" in named["status"]
    index = named["slider"]["value"]
    assert 0 < index < 200 and shows_step(named, index)
    resumed = panels(client.predict(api_name="/step"))  # and it goes on from there
    assert shows_step(resumed, index + 1)


def test_pause_with_nothing_running_says_so_and_changes_nothing(url):
    """Pause did nothing, silently, outside a run (after a Step, which it does not stop; before
    any prompt): the status line says why now, and the next Run is not stopped by it."""
    client = Tab(url)
    assert "nothing is running" in client.predict(api_name="/pause")  # a fresh tab
    add(client, "What is the capital of France?", max_tokens=3)
    stepped = panels(client.predict(api_name="/step"))
    status = client.predict(api_name="/pause")
    assert "nothing is running" in status and "1 step(s) recorded" in status
    finished = panels(client.predict(api_name="/run"))
    assert "every request has finished" in finished["status"] and finished["slider"]["value"] > stepped["slider"]["value"]


def test_a_saved_trace_opens_in_another_session(url):
    from gradio_client import handle_file

    author = Tab(url)
    add(author, "What is the capital of France?", max_tokens=6)
    for _ in range(3):
        author.predict(api_name="/step")
    path = author.predict(api_name="/save_trace")
    assert path.endswith(".mltrace")
    viewer = Tab(url)
    named = panels(viewer.predict(handle_file(path), api_name="/open_trace"))
    assert "opened" in named["status"] and "3 steps" in named["status"] and shows_step(named, 0)
    assert shows_step(panels(viewer.predict(2, api_name="/seek")), 2)
    named = panels(viewer.predict(api_name="/step"))  # a file is read-only
    assert "trace from a file" in named["status"] and shows_step(named, 2)


def test_a_bad_trace_upload_is_refused_with_a_message(url, tmp_path):
    from gradio_client import handle_file

    bogus = tmp_path / "bogus.mltrace"
    bogus.write_bytes(b"this is not a zip")
    named = panels(Tab(url).predict(handle_file(str(bogus)), api_name="/open_trace"))
    assert "ml-error" in named["status"] and "bogus.mltrace is not a .mltrace file" in named["status"]
    assert "/tmp" not in named["status"]  # the server's paths stay on the server


def test_an_uploaded_trace_is_named_in_characters_that_show(url, tmp_path):
    """The file's name, as the uploader's browser sends it, is shown in the status line (and to
    everyone a share link reaches): a right-to-left override in it turned the rest of the line
    around. Such a character is shown as its escape."""
    from gradio_client import handle_file

    author = Tab(url)
    add(author, "What is the capital of France?", max_tokens=2)
    author.predict(api_name="/step")
    spoofed = tmp_path / "\u202egnp.mltrace"
    spoofed.write_bytes(Path(author.predict(api_name="/save_trace")).read_bytes())
    named = panels(Tab(url).predict(handle_file(str(spoofed)), api_name="/open_trace"))
    assert "opened" in named["status"] and "\u202e" not in named["status"], named["status"]
    assert "\\u202egnp.mltrace" in named["status"]


def test_auth_refuses_an_unauthenticated_client(base):
    with running_server(SessionManager(base, Limits(max_sessions=2)), auth=("ada", "s3cret")) as address:
        assert httpx.get(address + "config").status_code == 401
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain error on a refused login
            Tab(address)
        authed = Tab(address, auth=("ada", "s3cret"))
        assert "No step yet" in panels(authed.loaded)["text"]


def test_a_share_link_names_a_snapshot_and_a_step_but_no_session(url):
    author = Tab(url)
    add(author, "What is the capital of France?\nWhat is 2 + 2?", max_tokens=6)
    for _ in range(4):
        author.predict(api_name="/step")
    author.predict(2, api_name="/seek")
    author.predict("1", 0, "all", False, api_name="/select")
    link = author.predict(api_name="/share_link")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?view=[0-9a-f]{24}&step=2&seq=1", link), link
    assert author.key.split(".")[0] not in link and author.client.session_hash not in link
    assert Tab(url).predict(api_name="/share_link") == ""  # nothing recorded: nothing to share


def test_a_share_link_from_the_serving_machine_names_its_lan_address(manager):
    """A server shared on the LAN, reached from its own machine as 127.0.0.1: the link names the
    address app.py printed for the LAN, which another machine can open, not 127.0.0.1."""
    with running_server(manager, shared_as="192.0.2.7") as address:
        author = Tab(address)
        add(author, "What is 2 + 2?", max_tokens=2)
        author.predict(api_name="/step")
        port = address.rstrip("/").rsplit(":", 1)[1]
        link = author.predict(api_name="/share_link")
        assert re.fullmatch(rf"http://192\.0\.2\.7:{port}/\?view=[0-9a-f]{{24}}&step=0(&seq=0)?", link), link


def test_a_one_layer_model_and_its_trace_are_shown(tmp_path):
    """Gradio refuses a slider whose minimum is its maximum, and the layer slider's range was
    0..layers-1: with one layer every render failed, the error's render too, so a one-layer
    model's session could not step and its trace (valid, recorded) could not be opened."""
    from gradio_client import handle_file
    from tiny_model import TINY, write_byte_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(**{**TINY, "num_hidden_layers": 1}, bos_token_id=None, eos_token_id=None,
                                 pad_token_id=None)).save_pretrained(tmp_path)
    write_byte_tokenizer(tmp_path)
    engine = LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=1, max_model_len=128))
    with running_server(SessionManager(engine, Limits(max_sessions=4))) as address:
        author = Tab(address)
        panels(author.predict("Hi", False, 3, 0.0, 1.0, 0, "", 1, 1, api_name="/add_prompts"))
        named = panels(author.predict(api_name="/step"))
        assert "ml-error" not in named["status"] and shows_step(named, 0)
        assert named["layer"]["visible"] is False  # its 0..1 offered a layer 1 the model lacks
        viewer = Tab(address)
        named = panels(viewer.predict(handle_file(author.predict(api_name="/save_trace")), api_name="/open_trace"))
        assert "opened" in named["status"] and shows_step(named, 0)
        named = panels(viewer.predict("0", 0, "all", True, api_name="/select"))
        assert "ml-error" not in named["status"]
