"""What a hostile client on the LAN can do to a shared server, and what it cannot: reach another
tab's session (with its Gradio session hash or a made-up key), learn a session key from a saved
trace's name, read the API or touch a session before logging in, guess passwords quickly,
freeze the server with a regular expression, or put markup into a toast."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from webui_support import Tab, free_port, running_server

from minillama import EngineConfig, LLMEngine
from webui import comparing, handlers
from webui.direct_calls import queued_calls
from webui.front_door import LOGIN_FAILURES_ALLOWED, MAX_UPLOAD_PARTS, SESSIONS_KEPT_PER_CLIENT
from webui.limits import Limits
from webui.render import API_OUTPUT_NAMES
from webui.server import PLOTLY_JS, plotly_name, serve
from webui.sessions import BUSY_WAIT_S, SessionBusy, SessionManager, UISession

AUTH = ("ada", "s3cret")


@pytest.fixture(scope="module")
def base(embedded_dir):
    return LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=1, max_model_len=256))


@pytest.fixture(scope="module")
def manager(base):
    return SessionManager(base, Limits(max_sessions=16, max_sessions_per_client=16, max_new_tokens=64))


@pytest.fixture(scope="module")
def url(manager):
    with running_server(manager) as address:
        yield address


def status(result: tuple) -> str:
    return dict(zip(API_OUTPUT_NAMES, result[: len(API_OUTPUT_NAMES)], strict=True))["status"]


def recorded_steps(manager: SessionManager, tab: Tab) -> int:
    return len(manager.sessions[tab.key].trace.steps)


def test_another_clients_calls_never_reach_a_session(url, manager):
    victim = Tab(url)
    victim.predict("What is the capital of France?", True, 6, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    victim.predict(api_name="/step")
    attacker = Client(url, verbose=False)
    attacker.session_hash = victim.client.session_hash  # Gradio's hash is the client's to choose
    tab_id, mac = victim.key.split(".")
    for forged in ["", victim.client.session_hash, tab_id, f"{tab_id}.{mac[::-1]}", f"{tab_id[::-1]}.{mac}"]:
        for api_name in ("/step", "/reset", "/seek", "/add_prompts"):
            inputs = {"/step": (), "/seek": (0,), "/add_prompts": ("Hi", True, 4, 0.0, 1.0, 0, None, 1, 1),
                      "/reset": (64, "16", 8, 2048, True, True, 2, 10, False)}[api_name]
            result = attacker.predict(forged, *inputs, api_name=api_name)
            assert "reload the page" in status(result) and "capital" not in str(result)
    assert attacker.predict(victim.client.session_hash, api_name="/save_trace") is None
    assert recorded_steps(manager, victim) == 1  # untouched: one step, its own engine
    assert "capital" in manager.sessions[victim.key].trace.sequences[0].prompt_text


def test_a_saved_trace_is_named_without_any_session_key(url):
    author = Tab(url)
    author.predict("What is the capital of France?", True, 6, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    for _ in range(3):
        author.predict(api_name="/step")
    first = author.predict(api_name="/save_trace")
    name = os.path.basename(first)
    assert re.fullmatch(r"minillama-[\w.-]+-3steps-\d{6}\.mltrace", name), name
    for secret in [author.client.session_hash, *author.key.split(".")]:
        assert secret[:6] not in first
    author.predict(api_name="/step")
    second = author.predict(api_name="/save_trace")  # each click: the trace as it is then
    assert "-4steps-" in os.path.basename(second)


def test_a_range_the_file_route_cannot_serve_gets_the_whole_file(url, capfd):
    """Several ranges of a saved trace were answered 400 "ValueError: too many values to
    unpack"; a range ending before it starts, with a byte it did not ask for. HTTP lets a server
    ignore a Range header: each gets the whole file. A range it can serve is still served."""
    author = Tab(url)
    author.predict("Hi", False, 2, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    author.predict(api_name="/step")
    saved = httpx.post(f"{url}gradio_api/run/save_trace", json={"data": [author.key]}, timeout=30).json()["data"][0]["url"]
    whole = httpx.get(saved, timeout=30).content
    capfd.readouterr()
    for asked in ["bytes=0-1,3-4", "bytes=" + ",".join(f"{i}-{i}" for i in range(500)), "bytes=5-1", "bytes=0-1, 3-4"]:
        answer = httpx.get(saved, headers={"range": asked}, timeout=30)
        assert (answer.status_code, answer.content) == (200, whole), (asked, answer.status_code, answer.text[:200])
    for asked, part in [("bytes=0-9", whole[:10]), ("bytes=10-", whole[10:]), ("bytes=-5", whole[-5:])]:
        answer = httpx.get(saved, headers={"range": asked}, timeout=30)
        assert (answer.status_code, answer.content) == (206, part), asked
    assert "failed" not in capfd.readouterr().err


def test_an_auth_server_lets_strangers_reach_only_the_login(manager):
    with running_server(manager, auth=AUTH) as address:
        page = httpx.get(address)
        assert page.status_code == 200 and "gradio_api_info = null" in page.text
        assert "add_prompts" not in page.text and "named_endpoints" not in page.text
        for path in ("config", "gradio_api/info", "gradio_api/heartbeat/abc", "gradio_api/queue/data?session_hash=x",
                     "gradio_api/file=/etc/passwd"):
            assert httpx.get(address + path, timeout=5).status_code == 401, path
        for path in ("gradio_api/cancel", "gradio_api/reset", "gradio_api/queue/join", "gradio_api/upload"):
            assert httpx.post(address + path, json={"session_hash": "x", "event_id": "y", "fn_index": 0}).status_code == 401
        # What the page needs: plotly.js under a name of its bytes' digest, kept by the browser for good.
        script = httpx.get(address + "ml-static/" + plotly_name())
        assert script.status_code == 200 and script.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert script.content == PLOTLY_JS.read_bytes()
        assert httpx.get(address + "ml-static/plotly.min.js").status_code == 404  # no other name
        with httpx.Client() as browser:  # logged in: the app's config, with no server path in it
            assert browser.post(address + "login", data=dict(zip(("username", "password"), AUTH))).status_code == 200
            config = browser.get(address + "config")
            assert config.status_code == 200 and "add_prompts" in config.text
            assert '"connect_heartbeat":false' in config.text.replace(" ", "")  # the page holds no stream open
            assert browser.get(address + "gradio_api/heartbeat/abc", timeout=5).status_code == 404
            for path in (os.getcwd(), sys.prefix, os.path.expanduser("~")):
                assert path not in config.text and path not in browser.get(address).text


def test_password_guessing_is_slowed_down(manager):
    with running_server(manager, auth=AUTH) as address:
        wrong = {"username": AUTH[0], "password": "guess"}
        codes = [httpx.post(address + "login", data=wrong).status_code for _ in range(LOGIN_FAILURES_ALLOWED + 2)]
        assert codes == [400] * LOGIN_FAILURES_ALLOWED + [429, 429]
        refused = httpx.post(address + "login", data=dict(zip(("username", "password"), AUTH)))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0  # even the right one, for now


def test_a_backtracking_pattern_does_not_stall_other_sessions(url):
    runner, other = Tab(url), Tab(url)
    runner.predict("Tell me a story.", True, 60, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    other.predict("What is 2 + 2?", True, 8, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    job = runner.submit([], "", r"^([\w\s]+)+#", "", "", "", api_name="/run_to_breakpoint")
    started = time.monotonic()
    for _ in range(3):
        other.predict(api_name="/step")
    assert time.monotonic() - started < 30  # re would need minutes per check; the run and the steps share the model
    assert "every request has finished" in status(job.result(timeout=120))


def stepped_tab(url: str) -> Tab:
    tab = Tab(url)
    tab.predict("What is 2 + 2?", True, 8, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    tab.predict(api_name="/step")
    return tab


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_a_tabs_long_job_and_its_pile_of_calls_do_not_hold_up_another_tab(url, manager, monkeypatch):
    """A comparison holds its tab's session for as long as it runs (a minute). That tab's calls
    sent meanwhile waited for it in the queue's slots, which every tab shares, and another
    tab's Step waited for the comparison to end (51 s measured): now one call of a tab may wait
    for its session, briefly, and a tab has at most MAX_QUEUED calls in the queue."""
    release = threading.Event()

    def long_comparison(manager, session, on_step):
        release.wait(120)
        raise ValueError("comparison stopped by the test")

    monkeypatch.setattr(comparing, "alone", long_comparison)
    busy, other = stepped_tab(url), stepped_tab(url)
    job = busy.submit(api_name="/compare_alone")
    wait_for(lambda: manager.find(busy.key).lock.locked())
    pile = [busy.submit(api_name="/step") for _ in range(20)]  # more than the step event's 16 slots
    try:
        started = time.monotonic()
        other.submit(api_name="/step").result(timeout=30)
        other.predict(0, api_name="/seek")
        assert time.monotonic() - started < 30 and not job.done()  # answered while the comparison runs
    finally:
        release.set()
    job.result(timeout=60)
    answers = []
    for call in pile:
        try:
            answers.append(status(call.result(timeout=60)))
        except Exception as refused:  # noqa: BLE001 - past MAX_QUEUED the door answers 429
            answers.append(str(refused))
    # How many are refused at the door depends on timing (a call refused as busy leaves the
    # queue at once, making room for a later one), but a pile of 20 meets both refusals.
    assert any("429" in a for a in answers)
    assert any("busy with an earlier action" in a for a in answers)


def test_one_call_of_a_tab_waits_for_its_session_and_the_rest_are_refused_at_once():
    session = UISession("key")
    waited: list[float] = []

    def step() -> None:
        started = time.monotonic()
        with session.hold():
            waited.append(time.monotonic() - started)

    with session.hold():  # a long job
        waiter = threading.Thread(target=step)
        waiter.start()
        wait_for(lambda: session.waiting)
        started = time.monotonic()
        with pytest.raises(SessionBusy, match="busy"):
            step()
        # Refused at once, not after waiting BUSY_WAIT_S: the bound is that wait, not a second,
        # which a loaded machine can take to schedule this thread.
        assert time.monotonic() - started < BUSY_WAIT_S
        time.sleep(0.2)
    waiter.join(BUSY_WAIT_S + 5)
    assert len(waited) == 1 and not session.waiting  # the one waiter ran once the job let go


def test_saves_of_two_tabs_run_side_by_side(url, manager, monkeypatch):
    """Every save went through one lock: a tab's Save waited for another tab's (a 76 MB trace
    takes seconds to write)."""
    release, saving = threading.Event(), threading.Event()
    busy, other = stepped_tab(url), stepped_tab(url)
    original = handlers.save

    def slow_save(trace, path):
        if trace is manager.find(busy.key).trace:
            saving.set()
            release.wait(120)
        original(trace, path)

    monkeypatch.setattr(handlers, "save", slow_save)
    job = busy.submit(api_name="/save_trace")
    assert saving.wait(30)
    try:
        assert other.submit(api_name="/save_trace").result(timeout=30).endswith(".mltrace")
        assert not job.done()
    finally:
        release.set()
    assert job.result(timeout=60).endswith(".mltrace")


def test_toasts_carry_text_not_markup(monkeypatch):
    shown = []
    monkeypatch.setattr(handlers.gr, "Warning", shown.append)
    handlers.toast("the text pattern '<img src=x onerror=alert(1)>' is bad")
    assert shown == ["the text pattern &#39;&lt;img src=x onerror=alert(1)&gt;&#39; is bad"]


def test_pause_with_a_forged_key_changes_nothing(url, manager):
    victim = Tab(url)
    victim.predict("Write a long story about a dragon.", True, 40, 0.0, 1.0, 0, None, 1, 1, api_name="/add_prompts")
    job = victim.submit(api_name="/run")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.02)
    Client(url, verbose=False).predict("forged.key", api_name="/pause")  # answers, and pauses nothing
    Client(url, verbose=False).predict(victim.client.session_hash, api_name="/pause")
    assert "every request has finished" in status(job.result(timeout=120))


def test_uploads_are_bounded_per_client_within_the_cache_window(base):
    """Gradio takes uploads without a tab key and keeps each a quarter of an hour: ten 20 MB
    posts took 1.8 s. Per client, four uploads' worth at most within that window."""
    limited = SessionManager(base, Limits(upload_mb=1))
    with running_server(limited) as address:
        def upload() -> int:
            files = {"files": ("f.bin", os.urandom(2**20 - 1024), "application/octet-stream")}
            return httpx.post(f"{address}gradio_api/upload", files=files, timeout=30).status_code

        assert [upload() for _ in range(4)] == [200] * 4
        refused = httpx.post(f"{address}gradio_api/upload", files={"files": ("f.bin", bytes(2**16))}, timeout=30)
        assert refused.status_code == 429 and "too many uploads" in refused.json()["detail"]


def test_one_upload_holds_a_few_files_and_a_refused_one_leaves_none(url):
    """Gradio took 1,000 files a post, each kept a quarter of an hour, and the quota counted the
    post once: a million empty files within the window. A post holds at most MAX_UPLOAD_PARTS;
    one with more is refused with the reason, and the files Gradio began are deleted."""
    from gradio.utils import get_upload_folder

    def post(count: int, tag: str) -> httpx.Response:
        files = [("files", (f"{tag}{i}.mltrace", os.urandom(64))) for i in range(count)]
        return httpx.post(f"{url}gradio_api/upload", files=files, timeout=30)

    taken = post(MAX_UPLOAD_PARTS, "taken")
    assert taken.status_code == 200 and len(taken.json()) == MAX_UPLOAD_PARTS
    def files_kept() -> int:
        return sum(1 for path in Path(get_upload_folder()).rglob("*") if path.is_file())

    for count in (MAX_UPLOAD_PARTS + 1, 1000):
        before = files_kept()
        refused = post(count, "refused")
        assert refused.status_code == 400 and "Too many files" in refused.text, refused.text[:200]
        assert files_kept() - before < MAX_UPLOAD_PARTS, "a refused upload left its files"
    assert Tab(url).predict(0, api_name="/seek")  # the server goes on


def test_the_upload_quota_also_bounds_every_client_together():
    from webui.front_door import UPLOADS_IN_ALL, UploadQuota

    quota = UploadQuota(largest_upload=100)
    for i in range(UPLOADS_IN_ALL // 4):  # each client within its own share
        assert quota.take(f"10.0.0.{i}", 400)
    assert not quota.take("10.0.1.1", 1)  # the whole is full
    assert UploadQuota(100, window_s=0.0).take("10.0.0.1", 400) and not UploadQuota(100).take("10.0.0.1", 401)


def test_an_unknown_api_name_is_a_404_not_a_server_error(url):
    answer = httpx.post(f"{url}gradio_api/call/nope", json={"data": []}, timeout=30)
    assert answer.status_code == 404 and answer.json() == {"detail": "no such API endpoint"}
    assert httpx.get(f"{url}gradio_api/call/nope/123", timeout=30).status_code == 404
    assert httpx.post(f"{url}gradio_api/call/v2/nope", json={"data": []}, timeout=30).status_code == 404
    known = httpx.post(f"{url}gradio_api/call/v2/state", json={"data": []}, timeout=30)  # a real name passes
    assert known.status_code != 404


def function_ids(url: str) -> dict[str, int]:
    """{API name: its fn_index}, from the page's config."""
    return {fn["api_name"]: fn["id"] for fn in httpx.get(f"{url}config", timeout=30).json()["dependencies"]
            if fn.get("api_name")}


DEEP_JSON = {"content": '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}", "headers": {"content-type": "application/json"}}
# Requests Gradio itself could not read, each answered 500 with a traceback in the server's log:
# (method, path, what is sent, status). KEY stands for a tab key, SEEK for /seek's fn_index.
MALFORMED_REQUESTS = {
    "run-unknown-name": ("POST", "gradio_api/run/nope", {"json": {"data": []}}, 404),
    "api-unknown-name": ("POST", "gradio_api/api/nope/", {"json": {"data": []}}, 404),
    "run-unknown-fn-index": ("POST", "gradio_api/run/seek", {"json": {"data": ["KEY", 0], "fn_index": 9999}}, 404),
    "run-negative-fn-index": ("POST", "gradio_api/run/seek", {"json": {"data": ["KEY", 0], "fn_index": -1}}, 404),
    "run-predict-without-fn-index": ("POST", "gradio_api/run/predict", {"json": {"data": ["KEY", 0]}}, 404),
    # How Gradio's page calls an event outside the queue: the function named by fn_index.
    "run-predict-names-its-function-by-index": ("POST", "gradio_api/run/predict",
                                                {"json": {"data": ["KEY", 0], "fn_index": "SEEK"}}, 200),
    "join-unknown-fn-index": ("POST", "gradio_api/queue/join",
                              {"json": {"data": ["KEY", 0], "fn_index": 9999, "session_hash": "x"}}, 404),
    "v2-unknown-keyword": ("POST", "gradio_api/call/v2/seek", {"json": {"data": ["KEY", 0]}}, 400),
    "json-nested-past-the-stack": ("POST", "gradio_api/run/seek",
                                   DEEP_JSON, 400),
    "queued-json-nested-past-the-stack": ("POST", "gradio_api/call/seek",
                                          DEEP_JSON, 400),
    "upload-a-field-not-a-file": ("POST", "gradio_api/upload", {"files": {"files": (None, "not a file")}}, 400),
    "events-of-an-unknown-session": ("GET", "gradio_api/queue/data?session_hash=nobody", {}, 200),
    # An empty session hash: the join answered 400 naming a KeyError, the queue's worker logged a
    # traceback, and Gradio kept the event's id under "" for good.
    "join-empty-session-hash": ("POST", "gradio_api/queue/join",
                                {"json": {"data": ["KEY", 0], "fn_index": "SEEK", "session_hash": ""}}, 400),
    "call-empty-session-hash": ("POST", "gradio_api/call/seek", {"json": {"data": ["KEY", 0], "session_hash": ""}}, 400),
}


@pytest.mark.parametrize("method, path, sent, expected", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_a_request_gradio_cannot_read_gets_a_reason_and_the_log_one_line(url, capfd, method, path, sent, expected):
    """The front door answers what would reach no function, and turns what Gradio raises on a
    malformed request into one log line and a 400 with the reason (webui/front_door.py)."""
    tab = Tab(url)
    seek = function_ids(url)["seek"]
    if "json" in sent:
        sent = {"json": {**sent["json"], "data": [tab.key if v == "KEY" else v for v in sent["json"]["data"]],
                         **({"fn_index": seek} if sent["json"].get("fn_index") == "SEEK" else {})}}
    capfd.readouterr()
    answer = httpx.request(method, f"{url}{path}", timeout=30, **sent)
    assert answer.status_code == expected, answer.text[:300]
    if expected != 200:
        assert answer.json()["detail"]  # a reason, not "Internal Server Error"
    assert tab.predict(0, api_name="/seek")  # the server, and the tab, go on (a queued call: after any the request made)
    logged = capfd.readouterr()
    assert "Traceback" not in logged.err + logged.out
    assert len([line for line in logged.err.splitlines() if "minillama:" in line]) <= 1


def test_calls_that_name_no_session_leave_no_state_behind(manager):
    """A /call/<name> that names no session got a Gradio state of its own (~0.3 MB, a copy of every
    component's settings), kept until 10,000 were held: a script's thousand calls grew the
    server by 270 MB. Once its result is read, the state goes; of calls whose results are never
    read, only the newest SESSIONS_KEPT_PER_CLIENT keep theirs (webui/front_door.py)."""
    port = free_port()
    app = serve(manager, "127.0.0.1", port, block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        tab = Tab(url)
        held = len(app.state_holder.session_data)
        for _ in range(30):
            event = httpx.post(f"{url}gradio_api/call/seek", json={"data": [tab.key, 0]}, timeout=30).json()["event_id"]
            assert "event: complete" in httpx.get(f"{url}gradio_api/call/seek/{event}", timeout=30).text
        assert len(app.state_holder.session_data) <= held + 1  # the last call's, gone at the next one's read
        unread = 0
        while unread < SESSIONS_KEPT_PER_CLIENT + 20:  # calls whose results are never read
            posted = httpx.post(f"{url}gradio_api/call/seek", json={"data": [tab.key, 0]}, timeout=30)
            unread += posted.status_code == 200
            time.sleep(0.05 if posted.status_code == 429 else 0)  # the queue holds 16 of a client's calls
        # The last ones run: waited for until the queue holds none of them (a fixed 2 s could
        # end first on a busy machine; the bound is only a safety net), then counted.
        wait_for(lambda: queued_calls(app._queue, tab.key, "127.0.0.1") == (0, 0), timeout=120)
        assert len(app.state_holder.session_data) <= held + SESSIONS_KEPT_PER_CLIENT
        assert tab.predict(0, api_name="/seek")  # a session the caller named keeps its state
    finally:
        app.close()


def test_idle_connections_by_the_thousand_leave_the_page_loading(url):
    """A "slowloris" client: 1,500 connections that send half a request and wait. The HTTP
    server closes none of them, so each holds an open file; the server raises its open-file
    limit at start (a default soft limit of 1,024 would let such a client lock everyone out),
    and the page still loads."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4000:
        pytest.skip(f"this machine allows {hard} open files; the test needs both ends of 1,500 connections")
    assert soft == hard or soft >= 2**20  # raised by serve()
    port = int(url.rsplit(":", 1)[1].strip("/"))
    idle = []
    try:
        for _ in range(1500):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.send(b"GET / HTTP/1.1\r\nHost: slow\r\n")  # never finished
            idle.append(connection)
        # Locked out, the page would never load: the request's own timeout tells, not a duration
        # (5 s, which a loaded machine's 1,500 open connections could take).
        page = httpx.get(url, timeout=60)
        assert page.status_code == 200
    finally:
        for connection in idle:
            connection.close()


def test_the_open_file_limit_is_raised_to_the_hard_limit():
    import subprocess

    code = ("import resource; soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
            "from webui.server import raise_open_file_limit, OPEN_FILES_WANTED; raise_open_file_limit(); "
            "now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; "
            "print(now == (OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "evil"])
def test_a_page_of_another_site_cannot_upload_or_log_in(url, origin):
    """A browser sends a form's POST to any address without asking the server first (no CORS
    preflight), with the page's origin in its Origin header: a site a user of the server visits
    could upload files from that user's browser, using up the upload quota for every client. A
    request that may change something, from a page of another site, is refused 403."""
    before = Tab(url)  # a tab of the server's own page goes on working
    upload = httpx.post(f"{url}gradio_api/upload", files=[("files", ("a.mltrace", b"x"))],
                        headers={"origin": origin}, timeout=30)
    assert upload.status_code == 403 and "another site" in upload.text
    login = httpx.post(f"{url}login", data={"username": "a", "password": "b"}, headers={"origin": origin}, timeout=30)
    assert login.status_code == 403
    # Reading is not changing: a GET from anywhere is answered as before.
    assert httpx.get(f"{url}gradio_api/app_id", headers={"origin": origin}, timeout=30).status_code == 200
    assert before.predict(0, api_name="/seek")


def test_the_pages_own_origin_and_scripts_without_one_still_upload(url):
    host = url.split("://", 1)[1].rstrip("/")
    for headers in ({"origin": f"http://{host}"}, {"origin": f"http://{host.upper()}/"}, {}):
        taken = httpx.post(f"{url}gradio_api/upload", files=[("files", ("a.mltrace", b"x"))], headers=headers, timeout=30)
        assert taken.status_code == 200, (headers, taken.text[:200])
