"""Every API name the page serves, called with values its fields would never send (too few or
too many values, a value of the wrong type at each position): the caller gets a message naming
the call, the server logs one line and no traceback, and another tab's session is untouched
(webui/call_values.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from webui_support import Tab, embedded_manager, running_server

# A value no field of the page takes as it is: not a string, a number, a bool or a file's description.
ALIEN = {"not": ["a", "field value"]}


@pytest.fixture(scope="module")
def served(embedded_dir):
    manager = embedded_manager(embedded_dir)
    with running_server(manager) as url:
        yield manager, url


def call(url: str, api: str, data: list) -> str:
    """The event stream's answer to /gradio_api/call/<api> with `data` (NaN and Infinity written
    as Python's json writes them: the server's parser takes them)."""
    posted = httpx.post(f"{url}gradio_api/call/{api}", content=json.dumps({"data": data}),
                        headers={"content-type": "application/json"}, timeout=30)
    assert posted.status_code == 200, posted.text
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{posted.json()['event_id']}", timeout=60) as stream:
        return "".join(stream.iter_text())


def api_defaults(url: str) -> dict[str, list]:
    """{api name: a default value for each of its fields (None where it has none)}, from the
    server's own API description."""
    info = httpx.get(f"{url}gradio_api/info", timeout=30).json()
    return {name.lstrip("/"): [p.get("parameter_default") for p in spec["parameters"]]
            for name, spec in info["named_endpoints"].items()}


def test_malformed_values_get_a_message_and_no_traceback(served, capfd):
    manager, url = served
    victim = Tab(url)
    victim.predict("Hello", True, 4, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    victim.predict(api_name="/step")
    before = len(manager.sessions[victim.key].trace.steps)
    caller = Tab(url)  # the calls go to a session of their own: a value a field does take acts on it
    endpoints = api_defaults(url)
    assert {"step", "seek", "add_prompts", "reset", "open_trace"} <= endpoints.keys()
    capfd.readouterr()
    for api, defaults in endpoints.items():
        count = len(defaults)
        for data in ([caller.key] * (count - 1), [caller.key] * (count + 1)):  # one too few, one too many
            if count == 0 and not data:
                continue
            answer = call(url, api, data)
            assert "event: error" in answer and f"the call to /{api} was refused" in answer, (api, answer)
        for position in range(1, count):  # the tab key (position 0) is any string: see test_webui_security
            data = [caller.key, *defaults[1:]]
            data[position] = ALIEN
            answer = call(url, api, data)
            assert '"error": null' not in answer, (api, position, answer)  # a reason, always
            if "event: error" in answer:
                assert f"the call to /{api} was refused: value {position + 1} (" in answer, (api, position, answer)
    logged = capfd.readouterr()
    assert "Traceback" not in logged.err + logged.out
    assert len(manager.sessions[victim.key].trace.steps) == before
    assert victim.predict(api_name="/step")  # and the victim's tab still steps


def test_a_number_that_is_not_finite_is_refused_at_every_position_of_every_call(served, capfd):
    """NaN passes every range check a field makes (NaN > 4 is False): a seek with NaN reached
    int() in its handler, which logged a warning and answered a vague message. JSON has no
    NaN, but the server's parser takes NaN and Infinity; each is refused before any handler,
    also inside a list."""
    manager, url = served
    caller = Tab(url)
    caller.predict("Hello", True, 4, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    caller.predict(api_name="/step")
    before = len(manager.sessions[caller.key].trace.steps)
    capfd.readouterr()
    for api, defaults in api_defaults(url).items():
        for position in range(1, len(defaults)):
            for alien in (float("nan"), [1, float("-inf")]):
                data = [caller.key, *defaults[1:]]
                data[position] = alien
                answer = call(url, api, data)
                assert f"the call to /{api} was refused: value {position + 1} (" in answer, (api, position, answer)
                assert "not finite" in answer or "not a file uploaded" in answer, (api, position, answer)
    direct = httpx.post(f"{url}gradio_api/run/seek", content=json.dumps({"data": [caller.key, float("nan")]}),
                        headers={"content-type": "application/json"}, timeout=30)
    assert direct.status_code == 400 and "not finite" in direct.json()["error"]
    logged = capfd.readouterr()
    assert "Traceback" not in logged.err + logged.out and "Warning" not in logged.err
    assert len(manager.sessions[caller.key].trace.steps) == before


# For each kind of field, JSON values of a type the page never sends there, which Gradio took:
# a Textbox made any of them its text (the prompt "['Hi']"), a Checkbox passed them on ("false"
# read as true), a Number rounded true to 1.
WRONG_TYPES = {"Textbox": [["Hi"], {"text": "Hi"}, True], "Checkbox": ["false", "true", 0, 1, None, []],
               "Number": [True, False, "5", [5]], "Slider": [True, "0", None, [0]]}


def api_components(url: str) -> dict[str, list[str]]:
    """{api name: the kind of field of each of its values}, from the server's own API description."""
    info = httpx.get(f"{url}gradio_api/info", timeout=30).json()
    return {name.lstrip("/"): [p["component"] for p in spec["parameters"]] for name, spec in info["named_endpoints"].items()}


@pytest.mark.parametrize("kind", WRONG_TYPES)
def test_a_value_of_a_type_its_field_never_sends_is_refused_at_every_position(served, capfd, kind):
    manager, url = served
    caller = Tab(url)
    caller.predict("Hello", True, 4, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    caller.predict(api_name="/step")
    before = (len(manager.sessions[caller.key].trace.steps), len(manager.sessions[caller.key].trace.sequences))
    defaults, components = api_defaults(url), api_components(url)
    positions = [(api, position) for api, kinds in components.items() for position, field in enumerate(kinds)
                 if field == kind and position > 0]  # the tab key (position 0): see test_webui_security
    assert positions, kind
    capfd.readouterr()
    for api, position in positions:
        for alien in WRONG_TYPES[kind]:
            data = [caller.key, *defaults[api][1:]]
            data[position] = alien
            answer = call(url, api, data)
            assert f"the call to /{api} was refused: value {position + 1} (" in answer and "it takes" in answer, \
                (api, position, alien, answer)
    assert "Traceback" not in capfd.readouterr().err
    session = manager.sessions[caller.key]
    assert (len(session.trace.steps), len(session.trace.sequences)) == before  # nothing was added, stepped or reset


def test_every_choice_the_api_description_lists_is_taken(served):
    """A client reads the choices of a dropdown from /gradio_api/info: the block size was listed as
    the strings "4" ... "32" while the field took only the numbers, and refused "16"."""
    _, url = served
    caller = Tab(url)
    info = httpx.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"]
    defaults = api_defaults(url)
    checked = 0
    for api in ("reset", "compare_settings"):
        for position, parameter in enumerate(info[f"/{api}"]["parameters"]):
            for choice in parameter["type"].get("enum", []):
                assert isinstance(choice, str) == (parameter["type"]["type"] == "string"), parameter
                data = [caller.key, *defaults[api][1:]]
                data[position] = choice
                assert "was refused" not in call(url, api, data), (api, position, choice)
                checked += 1
    assert checked == 8  # the block size's four choices, in both calls


@pytest.mark.parametrize("api, data", [("seek", ["KEY", "abc"]), ("seek", ["KEY"]), ("select", ["KEY", ALIEN, 0, "0", False]),
                                       ("step", ["KEY", 1, 1]), ("step", ["KEY", 0]), ("step", ["KEY", 33])])
def test_a_direct_call_with_malformed_values_is_a_400_with_the_reason(served, api, data):
    """/gradio_api/run/<name> answers at once (no queue); Gradio gave every failure there a 500."""
    _, url = served
    caller = Tab(url)
    answer = httpx.post(f"{url}gradio_api/run/{api}", json={"data": [caller.key if v == "KEY" else v for v in data]},
                        timeout=30)
    assert answer.status_code == 400 and answer.json()["error"].startswith(f"the call to /{api} was refused: ")
    assert httpx.post(f"{url}gradio_api/run/seek", json={"data": [caller.key, 0]}, timeout=30).status_code == 200


def test_the_log_line_of_a_refusal_is_printable(served, capfd):
    """The log line quotes what the caller sent: an ESC in it must not drive the server's terminal."""
    _, url = served
    caller = Tab(url)
    capfd.readouterr()
    # The block size is a dropdown: Gradio's own refusal quotes the value raw ("Value: ... is not in the list").
    answer = call(url, "reset", [caller.key, 64, "\x1b[2J", 8, 2048, True, True, "", 10, False])
    assert "was refused" in answer
    logged = capfd.readouterr().err
    assert "the call to /reset was refused" in logged and "\x1b" not in logged and "\\x1b" in logged


# (a value, the escapes the refusal writes of its characters)
@pytest.mark.parametrize("value, escapes", [("\ud800", ["\\ud800"]), ("a\u202eb\x00c", ["\\u202e", "\\x00"])])
@pytest.mark.parametrize("api, data", [("reset", ["KEY", 64, "VALUE", 8, 2048, True, True, "", 10, False]),
                                       ("select", ["KEY", "VALUE", 0, "0", False]),
                                       ("compare_settings", ["KEY", 64, "VALUE", 8, 2048, True])])
def test_a_refusal_quoting_characters_no_text_holds_is_a_printable_400(served, api, data, value, escapes):
    """Gradio's refusal of a dropdown's value quotes the value raw: a lone surrogate (no character
    UTF-8 can write) failed the direct call's answer, a 400 naming a UnicodeEncodeError, and
    an RTL mark or a NUL reached the toast. The refusal is answered, every such character
    written as its escape, and the caller's session still answers."""
    _, url = served
    caller = Tab(url)
    sent = [caller.key if v == "KEY" else value if v == "VALUE" else v for v in data]
    answer = httpx.post(f"{url}gradio_api/run/{api}", content=json.dumps({"data": sent}),
                        headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith(f"the call to /{api} was refused: "), error
    assert all(c.isprintable() for c in error) and all(escape in error for escape in escapes), error
    assert httpx.post(f"{url}gradio_api/run/seek", json={"data": [caller.key, 0]}, timeout=30).status_code == 200


def test_a_refusal_quotes_markup_as_text(served):
    """Gradio shows an error's message as HTML: the value quoted back goes out escaped."""
    _, url = served
    caller = Tab(url)
    probe = "<img src=x onerror=alert(1)>"
    answer = call(url, "reset", [caller.key, 64, probe, 8, 2048, True, True, "", 10, False])
    assert "was refused" in answer and "<img" not in answer and "&lt;img src=x onerror=alert(1)&gt;" in answer


@pytest.mark.parametrize("path", ["https://example.com/x.mltrace", "x.mltrace", "", "/etc/hostname", "UPLOADS"])
def test_a_file_value_must_name_a_file_the_upload_route_received(served, path):
    """Gradio takes any path a caller writes into a file value: a URL it fetches from the server,
    a path that the refusal answered with the server's working folder, or a folder of its own
    upload cache, which its cache sweeper later failed to delete, dying (uploads then piled up)."""
    from gradio.utils import get_upload_folder

    _, url = served
    caller = Tab(url)
    path = get_upload_folder() if path == "UPLOADS" else path
    value = {"path": path, "url": path if path.startswith("http") else None, "meta": {"_type": "gradio.FileData"}}
    answer = call(url, "open_trace", [caller.key, value])
    assert "event: error" in answer and "value 2 (" in answer and "is not a file uploaded to this server" in answer
    assert "/work" not in answer and "example.com" not in answer.split("refused")[1]
    assert caller.predict(0, api_name="/seek")  # the tab goes on


def test_posts_to_the_call_route_are_bounded_per_tab_like_queue_joins(served, monkeypatch):
    """POST /gradio_api/call/<name> queues a call as /queue/join does, but the front door only
    counted joins: 300 posts of one tab were all queued, and another tab's Step took 7.8 s.
    (Here the tab's queue is made to look full; the door must count the post against it.)"""
    from webui import front_door
    from webui.direct_calls import MAX_QUEUED

    _, url = served
    caller, other = Tab(url), Tab(url)
    monkeypatch.setattr(front_door, "queued_calls",
                        lambda queue, key, client: (MAX_QUEUED if key == caller.key else 0, 0))
    refused = httpx.post(f"{url}gradio_api/call/step", json={"data": [caller.key, 1]}, timeout=30)
    assert refused.status_code == 429
    assert httpx.post(f"{url}gradio_api/call/step", json={"data": [other.key, 1]}, timeout=30).status_code == 200


@pytest.mark.parametrize("first", [None, 7, ["a"], "made-up.key"])
def test_queued_calls_of_one_client_are_bounded_over_all_its_keys(served, monkeypatch, first):
    """A queued call whose first value is no tab key (no string, or a key made up per call)
    was counted against no tab: 300 of them made another tab's Step take 2-3 s. Now a client
    address has at most MAX_CLIENT_QUEUED calls in the queue, whatever their keys. (Here the
    client's share of the queue is made to look full.)"""
    from webui import front_door
    from webui.direct_calls import MAX_CLIENT_QUEUED

    _, url = served
    monkeypatch.setattr(front_door, "queued_calls", lambda queue, key, client: (0, MAX_CLIENT_QUEUED))
    refused = httpx.post(f"{url}gradio_api/call/step", json={"data": [first, 1]}, timeout=30)
    assert refused.status_code == 429 and "too many calls" in refused.text
    monkeypatch.setattr(front_door, "queued_calls", lambda queue, key, client: (0, MAX_CLIENT_QUEUED - 1))
    assert Tab(url).predict(1, api_name="/step") is not None  # one below the bound, a tab's call goes in


def test_the_queue_is_counted_per_tab_and_per_client_from_its_own_events():
    """queued_calls reads the queue itself: each waiting or running event's first value and its
    request's client address."""
    from types import SimpleNamespace as Ns

    from webui.direct_calls import queued_calls

    def event(key: object, host: str) -> Ns:
        return Ns(data=Ns(data=[key, 1]), request=Ns(client=Ns(host=host)))

    line = Ns(queue=[event("a", "10.0.0.1"), event(5, "10.0.0.1"), event("b", "10.0.0.2")])
    queue = Ns(event_queue_per_concurrency_id={"step": line}, active_jobs=[None, [event("a", "10.0.0.1")]])
    assert queued_calls(queue, "a", "10.0.0.1") == (2, 3)
    assert queued_calls(queue, None, "10.0.0.2") == (0, 1)
