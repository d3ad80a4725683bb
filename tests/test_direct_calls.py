"""Direct calls (/gradio_api/run/<name>) take turns per tab key in the front door
(webui/direct_calls.py): a flood of one tab's calls waits in its own lane or is answered 429,
and never holds up another tab's call. Driven through FrontDoor with an app that blocks until
told, so what runs when is exact."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

import pytest

from webui.direct_calls import MAX_CLIENT_CALLS, MAX_WAITING, DirectCallLanes
from webui.front_door import FrontDoor, SessionsNamed

# Gradio's queue, as the door counts a tab's calls in it: empty.
QUEUE = SimpleNamespace(event_queue_per_concurrency_id={}, active_jobs=[])
# What the door reads of Gradio's application: no login, and one function, /seek.
GRADIO = SimpleNamespace(auth=None, get_blocks=lambda: SimpleNamespace(fns={0: SimpleNamespace(api_name="seek")}))


class HeldApp:
    """An ASGI app that answers each request only once `release` is set, and notes the keys it
    started, in order, with the body it was handed."""

    def __init__(self):
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, scope, receive, send):
        body = json.loads((await receive())["body"])
        self.started.append(body["data"][0])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def direct_call(door: FrontDoor, key: object, client: str = "10.0.0.9", path: str = "/gradio_api/run/seek") -> int:
    """POST /gradio_api/run/seek (or `path`) for tab `key` through the door; -> the status it answered."""
    scope = {"type": "http", "method": "POST", "path": path, "headers": [],
             "client": (client, 1), "app": GRADIO}
    body = json.dumps({"data": [key, 3]}).encode()
    messages = iter([{"type": "http.request", "body": body[:5], "more_body": True},
                     {"type": "http.request", "body": body[5:], "more_body": False}])

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await door(scope, receive, send)
    return statuses[0]


def make_door(app: HeldApp) -> FrontDoor:
    return FrontDoor(app, static_files={}, on_drawn=lambda key, update: None, on_closed=lambda key: None,
                     on_alive=lambda key, hidden: None, largest_upload=1024)


# Gradio answers a direct call under two spellings; /api/ skipped the lanes.
@pytest.mark.parametrize("path", ["/gradio_api/run/seek", "/gradio_api/api/seek", "/gradio_api/api/seek/"])
def test_one_tabs_flood_waits_in_its_lane_and_another_tab_passes(path):
    async def scenario():
        app = HeldApp()
        door = make_door(app)
        flood = [asyncio.create_task(direct_call(door, "tab-a", path=path)) for _ in range(MAX_WAITING + 3)]
        await asyncio.sleep(0.05)
        assert app.started == ["tab-a"]  # one of tab a's calls runs; the rest wait or were refused
        refused = [task.result() for task in flood if task.done()]
        assert refused == [429, 429]  # 1 running + MAX_WAITING waiting: the last two are refused
        other = asyncio.create_task(direct_call(door, "tab-b"))
        await asyncio.sleep(0.05)
        assert app.started == ["tab-a", "tab-b"]  # tab b did not wait behind tab a's line
        app.release.set()
        assert await other == 200
        statuses = await asyncio.gather(*flood)
        assert statuses.count(200) == MAX_WAITING + 1 and statuses.count(429) == 2
        assert app.started.count("tab-a") == MAX_WAITING + 1
        assert door.lanes._lanes == {}  # every lane went away with its last call
    asyncio.run(scenario())


def test_a_lane_counts_its_calls_and_forgets_a_key_when_empty():
    async def scenario():
        lanes = DirectCallLanes(max_waiting=1)
        first, second = lanes.enter("k", "c"), lanes.enter("k", "c")
        assert first is second is not None and lanes.enter("k", "c") is None  # one running, one waiting, full
        lanes.leave("k", "c")
        assert lanes.enter("k", "c") is first
        lanes.leave("k", "c")
        lanes.leave("k", "c")
        assert lanes._lanes == {} and lanes._clients == {}
    asyncio.run(scenario())


def test_a_client_has_a_bounded_number_of_calls_over_all_the_keys_it_makes_up():
    """A key made up per call got a lane of its own per call, so one script had as many calls
    running at once as it sent. Now a client address has at most MAX_CLIENT_CALLS in all its
    lanes; another client is not counted with it."""
    async def scenario():
        app = HeldApp()
        door = make_door(app)
        flood = [asyncio.create_task(direct_call(door, f"made-up-{i}")) for i in range(MAX_CLIENT_CALLS + 5)]
        await asyncio.sleep(0.05)
        assert len(app.started) == MAX_CLIENT_CALLS
        assert sorted(task.result() for task in flood if task.done()) == [429] * 5
        other = asyncio.create_task(direct_call(door, "tab-b", client="10.0.0.10"))
        await asyncio.sleep(0.05)
        assert app.started[-1] == "tab-b"
        app.release.set()
        assert await other == 200
        assert (await asyncio.gather(*flood)).count(200) == MAX_CLIENT_CALLS
        assert door.lanes._lanes == {} and door.lanes._clients == {}
    asyncio.run(scenario())


@pytest.mark.parametrize("first", [None, 7, [1], {"a": 1}])
def test_calls_without_a_key_take_turns_in_their_clients_lane(first):
    """The breakpoint form's live description carries no key; a script's calls whose first value
    is no string ran side by side without bound. They now share their client address's lane."""
    async def scenario():
        app = HeldApp()
        door = make_door(app)
        flood = [asyncio.create_task(direct_call(door, first)) for _ in range(MAX_WAITING + 3)]
        await asyncio.sleep(0.05)
        assert app.started == [first]
        assert [task.result() for task in flood if task.done()] == [429, 429]
        app.release.set()
        assert (await asyncio.gather(*flood)).count(200) == MAX_WAITING + 1
        assert door.lanes._lanes == {} and door.lanes._clients == {}
    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/gradio_api/run/seek", "/gradio_api/queue/join"])
def test_only_a_clients_newest_sessions_keep_their_gradio_state(path):
    """Gradio keeps a state (~0.3 MB) for every session a call names, up to 10,000; the name is
    the client's to make up. Only a client address's newest SESSIONS_KEPT_PER_CLIENT (3 here)
    keep theirs: every call still runs, and another client's states stay."""
    states = SimpleNamespace(session_data={}, time_last_used={}, lock=threading.Lock())
    queue = SimpleNamespace(**vars(QUEUE), pending_messages_per_session={}, pending_event_ids_session={})
    blocks = SimpleNamespace(fns={0: SimpleNamespace(api_name="seek")}, state_holder=states, _queue=queue)

    async def call(door: FrontDoor, session: str, client: str = "10.0.0.9") -> int:
        states.session_data[session] = states.time_last_used[session] = "state"  # as Gradio makes them
        queue.pending_messages_per_session[session] = queue.pending_event_ids_session[session] = "results"
        scope = {"type": "http", "method": "POST", "path": path, "headers": [], "client": (client, 1),
                 "app": SimpleNamespace(auth=None, get_blocks=lambda: blocks)}
        body = iter([{"type": "http.request", "body": json.dumps({"data": ["tab", 0], "session_hash": session}).encode()}])
        statuses = []

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await door(scope, lambda: asyncio.sleep(0, next(body, {"type": "http.disconnect"})), send)
        return statuses[0]

    async def scenario():
        app = HeldApp()
        app.release.set()
        door = make_door(app)
        door.sessions = SessionsNamed(kept=3)
        assert await call(door, "other", client="10.0.0.10") == 200
        assert [await call(door, f"made-up-{i}") for i in range(5)] == [200] * 5
        assert await call(door, "made-up-2") == 200  # named again: the newest
        assert sorted(states.session_data) == ["made-up-2", "made-up-3", "made-up-4", "other"]
        assert states.session_data.keys() == states.time_last_used.keys() == queue.pending_messages_per_session.keys()
        assert await call(door, "x" * 129) == 400  # a session name Gradio would never make
    asyncio.run(scenario())


def test_an_oversized_body_is_refused_before_any_lane():
    async def scenario():
        app = HeldApp()
        app.release.set()
        door = make_door(app)
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/run/seek", "headers": [],
                 "client": ("10.0.0.9", 1), "app": GRADIO}
        statuses = []

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        huge = iter([{"type": "http.request", "body": b"x" * (1024 * 1024 + 1), "more_body": False}])
        await door(scope, lambda: asyncio.sleep(0, next(huge)), send)
        assert statuses == [413] and app.started == [] and door.lanes._lanes == {}
    asyncio.run(scenario())


@pytest.mark.parametrize(("path", "heard_of_a_report"), [("/ml-api/drawn", ("drawn", "k", 3)), ("/ml-api/closed", ("closed", "k")),
                                                        ("/ml-api/alive", ("alive", "k", True))])
def test_a_pages_reports_are_read_whole_when_small_and_refused_when_large_or_not_an_object(path, heard_of_a_report):
    """POST /ml-api/drawn (the page has drawn update n), /ml-api/closed (the tab is going away)
    and /ml-api/alive (it is still open): read through read_body, as the lanes are; anything but
    a small JSON object is refused."""
    async def post(body: bytes) -> tuple[int, list]:
        heard = []
        door = FrontDoor(HeldApp(), static_files={}, on_drawn=lambda key, update: heard.append(("drawn", key, update)),
                         on_closed=lambda key: heard.append(("closed", key)),
                         on_alive=lambda key, hidden: heard.append(("alive", key, hidden)), largest_upload=1024)
        scope = {"type": "http", "method": "POST", "path": path, "headers": [],
                 "client": ("10.0.0.9", 1), "app": GRADIO}
        messages = iter([{"type": "http.request", "body": body[:3], "more_body": True},
                         {"type": "http.request", "body": body[3:], "more_body": False}])
        statuses = []

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await door(scope, lambda: asyncio.sleep(0, next(messages)), send)
        return statuses[0], heard

    assert asyncio.run(post(b'{"key": "k", "update": 3, "hidden": true}')) == (200, [heard_of_a_report])
    for refused in (b"not json", b"[1, 2]", b'"k"', b"\xff\xfe", b""):
        assert asyncio.run(post(refused)) == (400, [])
    assert asyncio.run(post(b"x" * 2000)) == (413, [])
