"""The front door: an ASGI middleware in front of every route Gradio serves.

Gradio checks a login on most of its routes but not all: on an --auth server its `/cancel`,
`/reset` and `/heartbeat/<hash>` answered strangers (a heartbeat that disconnects makes the
server run that browser's unload), its login page carried the app's whole API description, and
nothing slowed a password guesser. Rather than patch route by route, this door decides before
any route runs:

- With a login required, a request without a valid login cookie reaches only what the login
  page itself needs (OPEN_PATHS, OPEN_PREFIXES); anything else gets 401. Valid cookies are the
  ones Gradio issued at its /login (`app.tokens`), so the door and Gradio agree on who is in.
- The login page loses its API description (`window.gradio_api_info`) before it is sent.
- Failed logins are counted per client address: after LOGIN_FAILURES_ALLOWED within
  LOGIN_WINDOW_S, /login answers 429 until the window has passed.
- The page's own scripts (plotly.js) are served here, under /ml-static/, so no page or config
  shows where the server keeps its files. Their names carry a digest of their bytes
  (webui/server.py plotly_name), so they are served immutable: a browser keeps them for good.
- What the page says of itself, behind the login like everything else (FrontDoor.page_reports):
  POST /ml-api/drawn {"key": tab key, "update": n}: it has drawn update n, which paces a Run's
  live updates (webui/handlers.py); POST /ml-api/closed {"key": tab key}: the tab is going away
  (its pagehide), so its session's slot is the first to reclaim; POST /ml-api/alive {"key": tab
  key, "hidden": bool}: the tab is still open, every 5 s while shown and about once a minute
  while hidden, so a page gone without its pagehide (a killed browser) is known by its silence
  (webui/sessions.py SILENT_SHOWN_S). The page says all this itself rather than through
  Gradio's unload event, because an unload makes every tab hold a heartbeat event stream open
  for its whole life, and a browser opens at most six connections to one
  HTTP/1.1 server: the sixth tab of one browser stayed on "Loading..." for good. Gradio's
  heartbeat route, unused by the page since, answers 404: a stream held open by a stranger
  for nothing, and its end marked that session's state closed.
- Uploads (POST /gradio_api/upload) are counted per client address and in all over a sliding
  window (UploadQuota): Gradio keeps each uploaded file in its cache for a quarter of an hour,
  needs no tab key to take one, and would take file after file until the disk is full.
  One upload holds at most MAX_UPLOAD_PARTS files (Gradio took 1,000 a post).
- A call that reaches no function answers 404 (Gradio raised, and answered 500): an API name the
  app does not have, or a body whose fn_index names no function of the app. A direct call's body
  may name its function by fn_index whatever its route's name, as Gradio's own page does for an
  event outside the queue (POST /gradio_api/run/predict): Gradio runs the function fn_index names.
- A queued call (/gradio_api/queue/join, or a POST to /gradio_api/call/<name>) is refused 429 when its tab already has
  MAX_QUEUED calls in the queue, or its client address MAX_CLIENT_QUEUED (webui/direct_calls.py).
- A direct call (/gradio_api/run/<name>, or its older spelling /gradio_api/api/<name>) runs in its tab's lane, one at a time per tab, and a
  client address has at most MAX_CLIENT_CALLS of them at once (webui/direct_calls.py); one whose values were refused (webui/call_values.py) answers 400:
  Gradio answers any failed direct call with 500, as if the server were at fault.
- What Gradio raises while reading a malformed request (a form field where an upload's file
  belongs, keyword values /call/v2/<name> does not take, the event stream of a session it does not
  know) is one line in the server's log, and a 400 naming it when no answer has begun: uvicorn
  logged a 40-line traceback and answered 500 with no reason.
- A request from a page of another site (its Origin header names another host than its Host
  header) that could change something (any method but GET, HEAD and OPTIONS, and any websocket)
  is refused 403 (_from_another_site). A browser sends a form's POST to any address without
  asking (no CORS preflight for a form's body), so any site a user of the server visits could
  otherwise upload files from that user's browser, using up the server's upload quota for
  everyone, or post a login. The page's own requests name its own host; scripts and curl send
  no Origin at all.
- A Range header Gradio's file route cannot serve (several ranges, or one that ends before it
  starts) is dropped, and the whole file sent (_without_unservable_range).
- Gradio keeps a state (~0.3 MB) for each session a call names, up to 10,000. A /call/<name>
  that names none leaves no state behind once its result is read
  (FrontDoor._forget_states_of_calls_without_session), and only the newest
  SESSIONS_KEPT_PER_CLIENT sessions a client address names keep theirs (SessionsNamed).

A pure ASGI class, not a Starlette BaseHTTPMiddleware: the event streams (/queue/data, the
heartbeat when the page used it) pass through untouched.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from minillama.cli import printable_line
from webui.call_values import REFUSED_TITLE
from webui.direct_calls import (
    MAX_CLIENT_QUEUED,
    MAX_QUEUED,
    DirectCallLanes,
    TooLarge,
    call_payload,
    queued_calls,
    read_body,
    replaying,
    tab_key,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATIC_PREFIX = "/ml-static/"
DRAWN_PATH = "/ml-api/drawn"
CLOSED_PATH = "/ml-api/closed"
ALIVE_PATH = "/ml-api/alive"
MAX_REPORT_BODY = 1024  # bytes of a page's report: a tab key and a number
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_S = 60.0
# The sessions of one client address whose Gradio state is kept (SessionsNamed): a browser tab,
# a reload or a gradio_client names one each.
SESSIONS_KEPT_PER_CLIENT = 64
MAX_SESSION_NAME = 128  # characters of a session hash (Gradio's own are 11 to 36)
# What the login page loads before anyone has logged in: the page, its assets, the login form.
OPEN_PATHS = {"/", "/login", "/login/", "/favicon.ico", "/theme.css", "/manifest.json", "/robots.txt",
              "/gradio_api/startup-events", "/gradio_api/app_id", "/gradio_api/app_id/"}
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", STATIC_PREFIX)
API_INFO_MARKER = b"<script>window.gradio_api_info = "
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
IMMUTABLE = b"private, max-age=31536000, immutable"  # a static file's name changes with its bytes


class LoginThrottle:
    """Failed logins per client address within a sliding window."""

    def __init__(self, allowed: int = LOGIN_FAILURES_ALLOWED, window_s: float = LOGIN_WINDOW_S):
        self.allowed, self.window_s = allowed, window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        with self._lock:
            failures = self._recent(client)
            return failures[0] + self.window_s - time.monotonic() if len(failures) >= self.allowed else 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures[client]
        while failures and failures[0] < time.monotonic() - self.window_s:
            failures.popleft()
        if len(self._failures) > 10_000:  # addresses that stopped trying: forget the oldest
            self._failures.pop(next(iter(self._failures)))
        return failures


class SessionsNamed:
    """The sessions (Gradio session hashes) each client address has named, newest last. Gradio
    makes a state for every session a call names (~0.3 MB, a copy of every component's
    settings) and keeps up to 10,000; the name is the client's to make up, and a script naming
    a new one per call grew the server by 290 MB a thousand calls. So the state of a client's
    oldest session goes when it names one more than SESSIONS_KEPT_PER_CLIENT, with the results
    of its calls that were never read: its calls still run, and no other client's session is
    touched."""

    def __init__(self, kept: int = SESSIONS_KEPT_PER_CLIENT):
        self.kept = kept
        self._named: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()  # client -> its sessions
        self._lock = threading.Lock()

    def named(self, blocks: Any, client: str, session: str) -> None:
        """`client` names `session` in a call (Gradio will hold a state for it)."""
        with self._lock:
            mine = self._named.setdefault(client, OrderedDict())
            self._named.move_to_end(client)
            mine[session] = None
            mine.move_to_end(session)
            dropped = [mine.popitem(last=False)[0] for _ in range(len(mine) - self.kept)]
            if len(self._named) > 10_000:  # addresses that went away: forget the least recent
                self._named.popitem(last=False)
        states, queue = getattr(blocks, "state_holder", None), getattr(blocks, "_queue", None)
        if dropped and states is not None:
            with states.lock:
                for old in dropped:
                    states.session_data.pop(old, None)
                    states.time_last_used.pop(old, None)
        for old in dropped if queue is not None else ():  # the results of its calls nobody read
            queue.pending_messages_per_session.pop(old, None)
            queue.pending_event_ids_session.pop(old, None)


CALL_PREFIX = "/gradio_api/call/"  # + an API name: one of the app's events, by name
# + an API name: the same, answered directly (no queue, no events). Gradio serves both spellings:
# the door knew only the first, so /api/<name> skipped the lanes and every check below.
DIRECT_PREFIXES = ("/gradio_api/run/", "/gradio_api/api/")
HEARTBEAT_PREFIX = "/gradio_api/heartbeat/"  # unused by this app's page (see the module doc): answered 404
JOIN_PATHS = ("/gradio_api/queue/join", "/gradio_api/queue/join/")  # a queued call enters the queue
MAX_ERROR_BODY = 64 * 1024  # bytes of a 500's body read to tell a refusal: Gradio's error JSON is short
RECENT_CALLS = 64  # events read whose states are dropped again on each read (_forget_states_of_calls_without_session)
UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/upload/", "/upload", "/upload/")
UPLOAD_WINDOW_S = 900.0  # as long as Gradio's cache keeps a file (webui/layout.py)
UPLOADS_PER_CLIENT = 4  # the largest upload's worth, per client within the window
UPLOADS_IN_ALL = 32  # and across every client
MAX_UPLOAD_PARTS = 8  # files (and fields) in one upload's body: the page sends one file (_counting_parts)


class UploadQuota:
    """Bytes uploaded per client address, and in all, within a sliding window. A request says
    its size up front (Content-Length) and is refused whole when it would go over either."""

    def __init__(self, largest_upload: int, window_s: float = UPLOAD_WINDOW_S):
        self.per_client, self.in_all = UPLOADS_PER_CLIENT * largest_upload, UPLOADS_IN_ALL * largest_upload
        # Each upload costs at least this, so the window holds at most 1,024 x UPLOADS_IN_ALL of
        # them, however small (empty ones would otherwise grow the log without bound).
        self.least = largest_upload // 1024
        self.window_s = window_s
        self._uploads: deque[tuple[float, str, int]] = deque()  # (when, client, bytes), oldest first
        self._by_client: dict[str, int] = defaultdict(int)  # bytes within the window, kept as they come and go
        self._total = 0
        self._lock = threading.Lock()

    def take(self, client: str, size: int) -> bool:
        """Count `size` bytes for `client` if both limits allow them; False (nothing counted) if not."""
        size = max(size, self.least)
        with self._lock:
            now = time.monotonic()
            while self._uploads and self._uploads[0][0] < now - self.window_s:
                _, who, n = self._uploads.popleft()
                self._total -= n
                self._by_client[who] -= n
                if not self._by_client[who]:
                    del self._by_client[who]
            if self._by_client.get(client, 0) + size > self.per_client or self._total + size > self.in_all:
                return False
            self._uploads.append((now, client, size))
            self._by_client[client] += size
            self._total += size
            return True


class FrontDoor:
    """ASGI middleware; Gradio adds it through launch(app_kwargs={"middleware": [...]})."""

    def __init__(self, app: ASGIApp, static_files: dict[str, Path], on_drawn: Callable[[object, object], None],
                 on_closed: Callable[[object], None], on_alive: Callable[[object, object], None], largest_upload: int,
                 throttle: LoginThrottle | None = None):
        self.app = app
        self.static = {name: (file.read_bytes(), file.suffix) for name, file in static_files.items()}
        # path -> what a page's report there does with its JSON object
        self.page_reports: dict[str, Callable[[dict[str, Any]], None]] = {
            DRAWN_PATH: lambda report: on_drawn(report.get("key"), report.get("update")),
            CLOSED_PATH: lambda report: on_closed(report.get("key")),
            ALIVE_PATH: lambda report: on_alive(report.get("key"), report.get("hidden")),
        }
        self.throttle = throttle or LoginThrottle()
        self.sessions = SessionsNamed()
        self.uploads = UploadQuota(largest_upload)
        self.lanes = DirectCallLanes()
        # tab key, or ("client", address) -> its queue joins under way
        self.joining: dict[str | tuple[str, str], int] = defaultdict(int)
        self.read_calls: deque[str] = deque(maxlen=RECENT_CALLS)  # events whose result was read (their states go)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._answering_failures(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._route(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _answering_failures(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route an HTTP request; what escapes (Gradio reading a malformed request: see the module
        doc) is one line in the log and, when no answer has begun, a 400 (or the status an
        HTTPException carries) with the reason. A handler's failure never gets here: Gradio
        answers it, and the handlers report their own."""
        started = ended = False

        async def watched(message: Message) -> None:
            nonlocal started, ended
            started = started or message["type"] == "http.response.start"
            ended = ended or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        try:
            await self._route(scope, receive, watched)
        except Exception as error:  # noqa: BLE001 - see the docstring
            reason = printable_line(f"{type(error).__name__}: {error}")
            print(f"minillama: {scope.get('method')} {printable_line(scope['path'])} failed: {reason}", file=sys.stderr)
            if not started:
                await _respond(send, getattr(error, "status_code", 400), {"detail": f"the request was malformed: {reason}"})
            elif not ended:  # an event stream already under way: it ends here
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        scope = _without_unservable_range(scope)
        if _from_another_site(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # policy violation
            else:
                await _respond(send, 403, {"detail": "a request from a page of another site is refused"})
            return
        if path.startswith(STATIC_PREFIX) and scope["type"] == "http":
            await self._static(path[len(STATIC_PREFIX):], send)
            return
        gradio = scope["app"]  # Starlette puts the application in the scope before any middleware runs
        if getattr(gradio, "auth", None) is None or _logged_in(gradio, scope):
            if path in self.page_reports and scope.get("method") == "POST":
                await self._page_report(self.page_reports[path], receive, send)
            elif path in UPLOAD_PATHS and scope.get("method") == "POST":
                await self._upload(scope, receive, send)
            elif path.startswith(HEARTBEAT_PREFIX):
                await _respond(send, 404, {"detail": "this app's pages keep no heartbeat"})
            elif path.startswith(CALL_PREFIX) and not _known_api(gradio, _api_name(path)):
                await _respond(send, 404, {"detail": "no such API endpoint"})  # Gradio answered 500
            elif scope.get("method") == "POST" and (path in JOIN_PATHS or path.startswith(CALL_PREFIX)):
                # /call/<name> puts the call in the same queue as a join (its result is then read
                # with a GET): bounded alike, or a script's 300 posts slowed every tab's Step.
                await self._queue_join(scope, receive, send)
            elif path.startswith(DIRECT_PREFIXES) and scope["type"] == "http":
                await self._direct_call(scope, receive, _refusals_as_400(send))
            elif path.startswith(CALL_PREFIX) and scope.get("method") == "GET":
                await self.app(scope, receive, send)
                self._forget_states_of_calls_without_session(gradio, path.rstrip("/").rsplit("/", 1)[-1])
            else:
                await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation: not logged in
        elif path in ("/login", "/login/") and scope.get("method") == "POST":
            await self._login(scope, receive, send)
        elif path == "/" and scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, _without_api_info(send))
        elif path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
        else:
            await _respond(send, 401, {"detail": "Not authenticated: log in first"})

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = _client(scope)
        wait = self.throttle.wait_s(client)
        if wait > 0:
            await _respond(send, 429, {"detail": f"Too many failed logins: try again in {wait:.0f} s"},
                           {"retry-after": str(int(wait) + 1)})
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.throttle.succeeded(client)
                elif message["status"] in (400, 401):
                    self.throttle.failed(client)
            await send(message)

        await self.app(scope, receive, watch)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An upload goes through if its declared size fits the quota; Gradio then checks that the
        body holds no more than that (and its own size limit)."""
        declared = _header(scope, b"content-length") or b""
        if not declared.isdigit() or len(declared) > 15:
            await _respond(send, 411, {"detail": "an upload must state its size (Content-Length)"})
            return
        if not self.uploads.take(_client(scope), int(declared)):
            await _respond(send, 429, {"detail": "too many uploads for now: try again in a quarter of an hour"},
                           {"retry-after": str(int(UPLOAD_WINDOW_S))})
            return
        await self.app(scope, _counting_parts(scope, receive), send)

    async def _direct_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A call answered without the queue runs in its tab's lane, or its client's when it
        carries no key (webui/direct_calls.py)."""
        read = await self._call_body(scope, receive, send, "too large for a direct call")
        if read is None:
            return
        body, payload = read
        client = _client(scope)
        lane = tab_key(payload) or ("client", client)  # a tuple: no made-up key names a client's lane
        lock = self.lanes.enter(lane, client)
        if lock is None:
            await _too_many_calls(send)
            return
        try:
            async with lock:
                await self.app(scope, replaying(body, receive), send)
        finally:
            self.lanes.leave(lane, client)

    async def _queue_join(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A call enters Gradio's queue unless its tab has MAX_QUEUED there already, or its
        client address MAX_CLIENT_QUEUED. Joins still under way count too: parallel joins would
        otherwise all pass before any is queued."""
        read = await self._call_body(scope, receive, send, "too large for a call")
        if read is None:
            return
        body, payload = read
        key, client = tab_key(payload), _client(scope)
        if scope["path"].startswith(CALL_PREFIX) and not isinstance(payload.get("session_hash"), str):
            send = self._naming_its_event(scope, send)
        of_tab, of_client = queued_calls(scope["app"].get_blocks()._queue, key, client)
        client_joins = ("client", client)  # a tuple: no made-up key names a client's count
        if key is not None and self.joining.get(key, 0) + of_tab >= MAX_QUEUED \
                or self.joining.get(client_joins, 0) + of_client >= MAX_CLIENT_QUEUED:
            await _too_many_calls(send)
            return
        counted = [client_joins] if key is None else [client_joins, key]
        for name in counted:
            self.joining[name] += 1
        try:
            await self.app(scope, replaying(body, receive), send)
        finally:
            for name in counted:
                self.joining[name] -= 1
                if not self.joining[name]:
                    del self.joining[name]

    def _naming_its_event(self, scope: Scope, send: Send) -> Send:
        """Wrap `send` so that the event id a /call/<name> that names no session is answered with
        counts as a session its client named (SessionsNamed): Gradio names the call's session
        after its event, and a script that never reads the results would otherwise leave a
        state per call. The answer is a short JSON object."""
        chunks: list[bytes] = []

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                event = call_payload(b"".join(chunks)).get("event_id") if not message.get("more_body") else None
                if isinstance(event, str):
                    self.sessions.named(scope["app"].get_blocks(), _client(scope), event)
            await send(message)

        return wrapped

    def _forget_states_of_calls_without_session(self, gradio: Any, event_id: str) -> None:
        """Drop the state Gradio made for a /call/<name> that named no session, once its result
        has been read (GET /call/<name>/<event id>). Gradio names such a session after the event
        and keeps a state for it (~0.3 MB: a copy of every component's settings) until 10,000
        are held: a script's thousand calls grew the server by 270 MB. The queue's worker may
        touch the state again after the result went out, so the last RECENT_CALLS events' states
        are dropped again each time. A session a caller named is never an event's id."""
        states = getattr(gradio.get_blocks(), "state_holder", None)
        if states is None:
            return
        self.read_calls.append(event_id)
        with states.lock:  # the queue's workers add states meanwhile
            for read in self.read_calls:
                states.session_data.pop(read, None)
                states.time_last_used.pop(read, None)

    async def _call_body(self, scope: Scope, receive: Receive, send: Send,
                         too_large: str) -> tuple[bytes, dict[str, Any]] | None:
        """A call's body (a tab key and small values) and its JSON (call_payload: {} for one that
        is none), or None once it has been answered: 413
        over the size limit, 404 when it reaches no function (_no_function), 400 for a session
        hash that is empty or past MAX_SESSION_NAME characters. The session it names is counted to its client
        address (SessionsNamed)."""
        try:
            body = await read_body(receive)
        except TooLarge:
            await _respond(send, 413, {"detail": too_large})
            return None
        payload = call_payload(body)
        wrong = _no_function(scope["app"], scope["path"], payload.get("fn_index"))
        if wrong is not None:
            await _respond(send, 404, {"detail": wrong})
            return None
        named = payload.get("session_hash")
        # An empty one is no name either: Gradio's queue filed the call's messages under "" and
        # its event under the event's id, so the join answered 400 naming a KeyError, the queue's
        # worker logged a traceback, and "" kept every such event's id for good.
        if isinstance(named, str) and not 0 < len(named) <= MAX_SESSION_NAME:
            await _respond(send, 400, {"detail": f"a session hash is 1 to {MAX_SESSION_NAME} characters"})
            return None
        if isinstance(named, str):
            self.sessions.named(scope["app"].get_blocks(), _client(scope), named)
        return body, payload

    async def _page_report(self, act: Callable[[dict[str, Any]], None], receive: Receive, send: Send) -> None:
        """A page's report of itself (see the module doc): a small JSON object, or 400."""
        try:
            body = await read_body(receive, MAX_REPORT_BODY)
        except TooLarge:
            await _respond(send, 413, {"detail": "too large"})
            return
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            await _respond(send, 400, {"detail": "expected a JSON object with the tab's key"})
            return
        act(payload)
        await _respond(send, 200, {})

    async def _static(self, name: str, send: Send) -> None:
        if name not in self.static:
            await _respond(send, 404, {"detail": "Not found"})
            return
        body, suffix = self.static[name]
        headers = [(b"content-type", CONTENT_TYPES.get(suffix, "application/octet-stream").encode()),
                   (b"content-length", str(len(body)).encode()), (b"cache-control", IMMUTABLE)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The value of header `name` (lower case, as ASGI servers give names), the last if repeated."""
    return dict(scope.get("headers") or []).get(name)


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # what reads and changes nothing (RFC 9110, 9.2.1)


def _from_another_site(scope: Scope) -> bool:
    """Is this a request that may change something, sent by a page of another site? Browsers
    put the page's origin (scheme://host[:port], or "null" for a sandboxed or file page) in the
    Origin header of every cross-origin POST and websocket; it is compared with the Host header
    the request was sent to, so a server shared on the LAN under any of its addresses still takes
    its own page's requests."""
    if scope["type"] == "http" and scope.get("method") in SAFE_METHODS:
        return False
    origin = _header(scope, b"origin")
    if origin is None:  # no browser page sent it (a script, curl, gradio_client)
        return False
    host = _header(scope, b"host") or b""
    _, separator, origin_host = origin.partition(b"://")
    return not separator or origin_host.rstrip(b"/").lower() != host.lower()


# One byte range, as Gradio's file route reads it: first-last, first- or -suffix, digits only.
SERVABLE_RANGE = re.compile(rb"bytes=(?:[0-9]{1,18}-[0-9]{0,18}|-[0-9]{1,18})")


def _without_unservable_range(scope: Scope) -> Scope:
    """`scope` without a Range header that Gradio's file route cannot serve: several ranges
    ("bytes=0-1,3-4") were answered 400 "ValueError: too many values to unpack", and a range
    that ends before it starts ("bytes=5-1") with a byte it did not ask for. HTTP lets a server
    ignore a Range header (RFC 9110, 14.2): the whole file is sent instead, 200."""
    headers = scope.get("headers") or []
    ranges = [value for name, value in headers if name.lower() == b"range"]
    if not ranges:
        return scope
    if len(ranges) == 1 and SERVABLE_RANGE.fullmatch(ranges[0].strip()):
        first, _, last = ranges[0].strip()[len(b"bytes="):].partition(b"-")
        if not first or not last or int(first) <= int(last):
            return scope
    return {**scope, "headers": [(name, value) for name, value in headers if name.lower() != b"range"]}


def _counting_parts(scope: Scope, receive: Receive) -> Receive:
    """`receive` for an upload's multipart body, which stops it past MAX_UPLOAD_PARTS parts.
    Gradio takes up to 1,000 files a post and keeps each a quarter of an hour (an inode, an
    entry in a set its cache sweeper walks), and the quota counts a post once: 1,000 empty files
    took 0.6 s, a million within the window. The page posts one file at a time. The parts are
    counted by the boundary that opens each (no file holds it); the refusal is raised as the
    parser's own MultiPartException, so Gradio deletes the files it began and answers 400 with
    the message."""
    from gradio.route_utils import MultiPartException  # Gradio's upload route catches this one

    content_type = _header(scope, b"content-type") or b""
    found = re.search(rb'boundary="?([^";,]+)', content_type)
    if found is None:  # no multipart body: Gradio refuses it itself
        return receive
    delimiter = b"--" + found.group(1)
    seen, tail = 0, b""

    async def counted() -> Message:
        nonlocal seen, tail
        message = await receive()
        chunk = tail + message.get("body", b"")
        seen += chunk.count(delimiter)
        tail = chunk[-(len(delimiter) - 1):] if len(delimiter) > 1 else b""  # a delimiter split across chunks
        if seen > MAX_UPLOAD_PARTS + 1:  # the last delimiter closes the body
            raise MultiPartException(f"Too many files: an upload takes at most {MAX_UPLOAD_PARTS}")
        return message

    return counted


def _logged_in(gradio: Any, scope: Scope) -> bool:
    """Does the request carry a login cookie that Gradio issued? (Gradio names its cookies
    access-token[-unsecure]-<cookie_id> and keeps the tokens it issued in app.tokens.)"""
    cookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                cookie.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed Cookie header is a request without a login
                return False
    suffix = getattr(gradio, "cookie_id", "")
    tokens = getattr(gradio, "tokens", {})
    return any(key in cookie and cookie[key].value in tokens
               for key in (f"access-token-{suffix}", f"access-token-unsecure-{suffix}"))


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _without_api_info(send: Send) -> Send:
    """Wrap `send` so that the page's body goes out with `window.gradio_api_info` set to null.
    The body is collected (the page is ~50 KB) so the script can be cut out whole."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = _strip_api_info(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _refusals_as_400(send: Send) -> Send:
    """Wrap `send` so that a 500 carrying a refusal of the caller's values goes out as 400. Only
    a 500's body is held back (to read its title); every other answer streams through."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] == 500:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body") and sum(map(len, chunks)) <= MAX_ERROR_BODY:
            return
        body = b"".join(chunks)
        status = 400 if _is_refusal(body) else 500
        await send({**start, "status": status})
        await send({"type": "http.response.body", "body": body, "more_body": message.get("more_body", False)})
        start = None

    return wrapped


def _is_refusal(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(payload, dict) and payload.get("title") == REFUSED_TITLE


def _strip_api_info(body: bytes) -> bytes:
    begin = body.find(API_INFO_MARKER)
    if begin < 0:
        return body
    end = body.find(b"</script>", begin)
    if end < 0:
        return body[:begin]
    return body[:begin] + API_INFO_MARKER + b"null;" + body[end:]


def _no_function(gradio: Any, path: str, fn_index: object) -> str | None:
    """Why a call on `path` with a body's `fn_index` reaches no function, or None. Gradio runs
    the function fn_index names, whatever a direct call's route is named (its page posts
    /run/predict so), and raised (a 500, a traceback) for an index it does not have; without
    one, it looks the route's name up. A queue join names its function only by fn_index."""
    if isinstance(fn_index, int) and not isinstance(fn_index, bool):
        return None if fn_index in gradio.get_blocks().fns else f"no function has fn_index {fn_index}"
    name = _api_name(path)
    if name is not None and not _known_api(gradio, name):
        return "no such API endpoint"
    return None  # anything else as fn_index: Gradio's own 422


async def _too_many_calls(send: Send) -> None:
    await _respond(send, 429, {"detail": "too many calls at once for this tab: wait for its answers"},
                   {"retry-after": "1"})


async def _respond(send: Send, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    all_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    all_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def _api_name(path: str) -> str | None:
    """The API name in /gradio_api/call/<name>[/<event id>] (or its /call/v2/ spelling), or in a
    direct call's route; None for a route named for no function."""
    if path.startswith(CALL_PREFIX):
        return path[len(CALL_PREFIX):].removeprefix("v2/").split("/")[0]
    for prefix in DIRECT_PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix):].split("/")[0]
    return None


def _known_api(gradio: Any, name: str) -> bool:
    """Whether `name` is one of the app's API names (Gradio answers any other with a 500)."""
    return any(fn.api_name == name for fn in gradio.get_blocks().fns.values())
