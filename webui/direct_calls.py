"""Direct calls take turns per tab, so one tab's flood cannot starve the others.

The cursor's events (seek, prev, next, select, pause) skip Gradio's queue: each is answered at
once by a thread of the server's pool (/gradio_api/run/<name>). A page sends one at a time, but a
script can send hundreds at once for its own tab, and each renders the panels: on a 2-core
server 16 such callers took another tab's seek from 29 ms to 523 ms (median).

So each tab key (the first value of every call: webui/tab_keys.py) gets a lane: one direct call
of that key runs at a time, the next few wait in line, and any beyond MAX_WAITING are answered
429 at once. A flood then costs its own tab its speed, and every other tab one call's worth of
sharing. The front door reads the call's body (small: a key and a few numbers) to find the key,
then hands the same body on. A call whose first value is no string (the breakpoint form's live
description has none) takes its client address's lane instead.

A script is not bound to one key: it can make up a new one per call (refused by the handler,
but only once it runs) or fetch valid ones by loading the page again and again. So the calls of
one client address, over all its keys, are bounded too: MAX_CLIENT_CALLS direct calls at once,
MAX_CLIENT_QUEUED calls in the queue (a page's four tabs, MAX_SESSIONS_PER_CLIENT by default,
each with its MAX_QUEUED).

Queued calls (step, add, run, compare, save...) are bounded per tab too: Gradio's queue is one
line, first come first served, so a script's 60 Steps for its own tab made another tab's Step
wait behind all of them (3.7 s; 600 would take a minute). A tab may have MAX_QUEUED calls in the
queue, running or waiting; the next is answered 429 at the door, without entering it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import chain
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

MAX_BODY = 1024 * 1024  # bytes: the page's direct calls carry a key and a few small values
MAX_WAITING = 8  # calls of one tab waiting behind the one running
MAX_QUEUED = 4  # calls of one tab in Gradio's queue, running or waiting (a page sends one or two)
MAX_CLIENT_CALLS = 4 * (MAX_WAITING + 1)  # direct calls of one client address at once, over all its keys
MAX_CLIENT_QUEUED = 4 * MAX_QUEUED  # calls of one client address in Gradio's queue, over all its keys


class TooLarge(Exception):
    """A direct call's body over MAX_BODY."""


class DirectCallLanes:
    """One lane per tab key: a lock, and how many calls hold or wait for it; and how many calls
    each client address has in all its lanes. A lane or a client's count exists only while some
    call is in it, so made-up keys leave nothing behind."""

    def __init__(self, max_waiting: int = MAX_WAITING, max_client_calls: int = MAX_CLIENT_CALLS):
        self.max_waiting = max_waiting
        self.max_client_calls = max_client_calls
        # tab key, or ("client", address) for calls without one -> (lock, [calls in the lane])
        self._lanes: dict[str | tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}
        self._clients: dict[str, int] = {}  # client address -> its calls in any lane

    def enter(self, key: str | tuple[str, str], client: str) -> asyncio.Lock | None:
        """Count a call of `client` into `key`'s lane and return the lock it must hold to run,
        or None (nothing counted) when the lane or the client's allowance is full."""
        lock, count = self._lanes.setdefault(key, (asyncio.Lock(), [0]))
        if count[0] > self.max_waiting or self._clients.get(client, 0) >= self.max_client_calls:
            if not count[0]:
                del self._lanes[key]
            return None
        count[0] += 1
        self._clients[client] = self._clients.get(client, 0) + 1
        return lock

    def leave(self, key: str | tuple[str, str], client: str) -> None:
        _, count = self._lanes[key]
        count[0] -= 1
        if not count[0]:
            del self._lanes[key]
        self._clients[client] -= 1
        if not self._clients[client]:
            del self._clients[client]


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The request's whole body; raises TooLarge past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once, whole, then what the client sends next (its disconnect)."""
    given = False

    async def wrapped() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


def call_payload(body: bytes) -> dict[str, Any]:
    """A call's body as the JSON object it should be; {} when it is none (Gradio refuses it then)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: brackets nested past Python's stack
        return {}
    return payload if isinstance(payload, dict) else {}


def tab_key(payload: dict[str, Any]) -> str | None:
    """The call's tab key (its first value), or None when its first value is no string: the
    breakpoint form's live description (`armed`, cheap, no session) is the page's only such call."""
    data = payload.get("data")
    return data[0] if isinstance(data, list) and data and isinstance(data[0], str) else None


def queued_calls(queue: Any, key: str | None, client: str) -> tuple[int, int]:
    """How many calls Gradio's queue holds now, waiting or running: (of tab `key`, of client
    address `client`). Read from the queue itself (each event keeps its call's body and
    request), so a call that was cancelled, refused or has ended is never counted: nothing to
    leave behind."""
    waiting = (event for line in queue.event_queue_per_concurrency_id.values() for event in line.queue)
    running = (event for job in queue.active_jobs if job for event in job)
    of_tab = of_client = 0
    for event in chain(waiting, running):
        of_tab += key is not None and _event_key(event) == key
        of_client += _event_client(event) == client
    return of_tab, of_client


def _event_key(event: Any) -> object:
    data = getattr(getattr(event, "data", None), "data", None)
    return data[0] if isinstance(data, list) and data else None


def _event_client(event: Any) -> str | None:
    address = getattr(getattr(event, "request", None), "client", None)
    return getattr(address, "host", None)
