"""Browser sessions: each has its own debugger (engine, KV pool, trace); all share the weights.

One model is loaded once (SessionManager.base). A session's engine is a
LLMEngine.sharing_weights view of it with the user's own KV pool and scheduler limits, so one
user's preemptions, prefix hits and trace never show up in another's. The model itself is one
object, so engine steps of all sessions run one at a time under `model_lock`; between steps
the sessions interleave, which keeps every browser responsive.

Who reaches which session: each page load gets a tab key (webui/tab_keys.py), which the page
sends back with every call; Gradio's client-chosen session hash is used only to hear that a tab
closed. A session that holds memory (an engine with its KV pool and trace, or an uploaded
trace) takes a slot: at most Limits.max_sessions of them, and at most
Limits.max_sessions_per_client from one client address, so one script cannot lock everyone
else out. Slots of closed tabs and of sessions unused for Limits.idle_minutes are reclaimed
when a new one is needed. A tab that holds nothing costs nothing: its table entry may be
dropped at any time and is remade, empty, on its next call.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from inspector import CapturePolicy, Cursor, DebugSession, RunResult, Trace
from inspector.views import Selection
from minillama import EngineConfig, InvalidRequestError, LLMEngine, SamplingParams
from webui import defaults
from webui.limits import LimitReached, Limits
from webui.request_limits import Ask, check_requests
from webui.shares import Shares
from webui.starting import blocks_within, starting_values
from webui.tab_keys import TabKeys

_T = TypeVar("_T")
MAX_TABS = 4096  # table entries of tabs (cheap); past it, those holding nothing are forgotten first
MAX_NUM_SEQS = 64  # the largest batch a session's engine may run
MAX_BATCHED_TOKENS = 16384  # the most tokens one of its prefill steps may take (the activations grow with it)
# A page says it is alive (POST ml-api/alive, static/app.js) every 5 s while shown and, while
# hidden, as often as the browser lets a hidden tab's timers run (once a minute at worst). A
# page silent for longer than this has gone without saying goodbye (its browser was killed, its
# machine sleeps): its slot goes to a session that would otherwise be refused, and no sooner.
# Shown: three of the page's 15-s check timeouts, so a loaded server's slow answers never count.
SILENT_SHOWN_S = 45.0
SILENT_HIDDEN_S = 300.0
# The longest a call waits for another call of its own tab to let go of the session (one step
# of a Run, usually; a comparison or a save of a long trace takes far longer): UISession.hold.
BUSY_WAIT_S = 5.0


class SessionBusy(LimitReached):
    """Another call of the same tab holds its session (UISession.hold): try again when it ends."""


class SessionEnded(Exception):
    """A call whose tab key this server did not issue (it restarted since the page loaded, or
    the key was tampered with): the page must reload."""


@dataclass(frozen=True)
class EngineSettings:
    """The part of the engine a user sets for their own session (applied at Reset). It starts at
    the web UI's engine settings (webui/defaults.py)."""

    num_kv_blocks: int = defaults.ENGINE.num_kv_blocks
    block_size: int = defaults.ENGINE.block_size
    max_num_seqs: int = defaults.ENGINE.max_num_seqs
    max_num_batched_tokens: int = defaults.ENGINE.max_num_batched_tokens
    prefix_caching: bool = defaults.ENGINE.enable_prefix_caching


_CAPTURE = CapturePolicy()  # the recorder's defaults


@dataclass(frozen=True)
class CaptureSettings:
    """What a session's recorder keeps (applied at Reset): the recorder's defaults, except which
    requests are traced (webui/defaults.py)."""

    attention: bool = _CAPTURE.attention
    # Trace the attention (and the logit lens) of the first n requests; None: of all.
    traced_requests: int | None = defaults.TRACED_REQUESTS
    top_k: int = _CAPTURE.top_k
    logit_lens: bool = _CAPTURE.logit_lens


@dataclass
class UISession:
    """One browser tab's debugger: a live DebugSession, or a trace opened from a file (read-only)."""

    key: str  # the tab key (never shown, logged or written into a file name)
    client: str = ""  # the client's address: slots are counted per address
    debug: DebugSession | None = None
    opened: Trace | None = None  # a trace loaded from a file; shown instead of the live one
    opened_name: str = ""
    cursor: Cursor | None = None
    selection: Selection = field(default_factory=Selection)
    settings: EngineSettings = field(default_factory=EngineSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    last_used: float = field(default_factory=time.monotonic)
    pause_requested: bool = False
    running: bool = False
    closed: bool = False  # its page said it is going away (pagehide): the first slot to reclaim
    # When its page last said it is alive (monotonic seconds), and whether it was hidden then;
    # None: no page ever did (a script calling the API), so only Limits.idle_minutes reclaims it.
    heard: float | None = None
    page_hidden: bool = False
    notice: str = ""  # said once, on the next call (e.g. that its slot was reclaimed)
    shares_startup_trace: bool = False  # shows the server's --trace file
    shared_view: bool = False  # shows a shared snapshot (webui/shares.py), one object for every tab
    # Can Reset start an engine here? Not on a server that loaded no model (app.py --trace):
    # there every message that offered Reset sent the user to a button that refuses.
    can_start_engine: bool = True
    last_download: Path | None = None  # the trace file it saved last (deleted when it saves again)
    # The run the Compare tab shows a comparison of: its trace and step count then (render.py
    # clears the tab once the session shows another run).
    compared: tuple[Trace, int] | None = None
    # Sequences asked of its engine since Reset (Limits.max_sequences): a prompt with n samples
    # or a beam width counts that many at once, before its step makes them; a fork counts one.
    sequences_asked: int = 0
    # Live updates: how many renders were sent, and the latest the page says it has drawn
    # (webui/handlers.py paces a run by them).
    updates_sent: int = 0
    updates_drawn: int = 0
    # One handler at a time changes the session (add, step, reset) or reads it whole (compare,
    # save): through hold(), never held for long by a waiting call. Cursor moves need no lock.
    lock: threading.Lock = field(default_factory=threading.Lock)
    _waiter: threading.Lock = field(default_factory=threading.Lock, repr=False)  # held by the one call waiting in hold()
    # Set by SessionManager.claim_slot under its lock, until the engine or trace is in place:
    # the slot counts from the check, so parallel claims cannot all pass it.
    claiming: bool = False

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The session's lock, for one call's work; SessionBusy when another call of this tab
        holds it and either a call already waits or it is not let go within BUSY_WAIT_S.

        Why not simply wait: a waiting call sits in a slot every tab shares (each event's
        queue slots, --max-sessions of them, and the server's 40 worker threads). A comparison
        holds its tab's lock for a minute; that tab's calls sent meanwhile (a script sends
        twenty) then filled every slot of their event, and another tab's Step waited for the
        comparison to end (measured: 51 s). So one call may wait, briefly (a Run's step, a
        Reset after Pause), and the rest are answered at once."""
        if not self.lock.acquire(blocking=False):
            if not self._waiter.acquire(blocking=False):  # another call waits already
                raise SessionBusy(_BUSY)
            try:
                acquired = self.lock.acquire(timeout=BUSY_WAIT_S)
            finally:
                self._waiter.release()
            if not acquired:
                raise SessionBusy(_BUSY)
        try:
            yield
        finally:
            self.lock.release()

    @property
    def waiting(self) -> bool:
        """Does a call wait in hold() for the lock?"""
        return self._waiter.locked()

    def forget_download(self) -> None:
        """Delete the trace file it saved last, with the folder made for it (webui/handlers.py)."""
        if self.last_download is not None:
            shutil.rmtree(self.last_download.parent, ignore_errors=True)
            self.last_download = None

    @property
    def trace(self) -> Trace | None:
        if self.opened is not None:
            return self.opened
        return self.debug.trace if self.debug is not None else None

    @property
    def past_file_limit(self) -> str | None:
        """When the live recording has passed a limit of a trace file, what to tell the user
        (the limit, and what to do); else None. Said as soon as the step that passed it is
        drawn, not first at Save trace or Share link, which will refuse the run."""
        limit = self.debug.recorder.file_limit() if self.live else None
        if limit is None:
            return None
        return (f"this run is past what a trace file may hold ({limit}): it goes on and keeps every step, but Save "
                f"trace and Share link will refuse it; for a run you can save, Reset and record fewer steps or "
                f"requests, a smaller logits top-k, attention for fewer requests, or no logit lens")

    @property
    def live(self) -> bool:
        """Can this session step an engine? (False while it shows an opened trace.)"""
        return self.opened is None and self.debug is not None

    @property
    def no_fork_reason(self) -> str:
        """Why a fork is refused while the session shows a trace from a file, and what to do."""
        if self.can_start_engine:
            return "this is a trace from a file: forking needs the live engine (Reset starts one)"
        return "this is a trace from a file, and this server runs no model (--trace): forking needs one"

    @property
    def holds_memory(self) -> bool:
        """Does it hold a slot: its own engine, or a trace it uploaded, or one it is taking
        (`claiming`)? (The server's --trace file is one object shown to every tab: it takes none.)"""
        return self.claiming or self.debug is not None or (
            self.opened is not None and not self.shares_startup_trace and not self.shared_view)

    @property
    def index(self) -> int:
        """The cursor's step index, -1 with no step."""
        return self.cursor.index if self.cursor is not None else -1


_PER_CLIENT, _SERVER_FULL = "per client", "server full"  # the two limits a new slot must pass
_BUSY = "this tab is still busy with an earlier action (a comparison, a save, a step): try again when it ends"


class SessionManager:
    def __init__(self, base: LLMEngine | None, limits: Limits, startup_trace: Trace | None = None,
                 startup_name: str = ""):
        """base: the engine whose model every session shares; None serves traces only
        (`app.py --trace FILE`), which every new session then opens."""
        self.base = base
        self.limits = limits
        # Where a new tab starts, within the limits (webui/starting.py): ConfigError for limits
        # that leave no session room to start.
        block = base.kv_block_bytes(defaults.ENGINE.block_size) if base is not None else None
        self.starting = starting_values(limits, block, len(defaults.EXAMPLE_PROMPTS))
        self.starting_settings = EngineSettings(num_kv_blocks=self.starting.num_kv_blocks)
        self.startup_trace, self.startup_name = startup_trace, startup_name
        self.keys = TabKeys()
        self.shares = Shares()
        self.sessions: OrderedDict[str, UISession] = OrderedDict()  # by tab key, least recently used first
        self._reclaimed: OrderedDict[str, str] = OrderedDict()  # tab key -> why its session went
        self.model_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the two tables above
        # The float32 reference copy of the model for fidelity checks (webui/comparing.py): made
        # by the first one, under its own lock so two first clicks make one copy, then kept.
        self._reference: LLMEngine | None = None
        self._reference_lock = threading.Lock()

    # -- the session table ----------------------------------------------------------------------

    def open_tab(self, client: str) -> UISession:
        """A page loaded: a new tab key and its (empty) session."""
        return self._make(self.keys.issue(), client)

    def get(self, key: object, client: str = "") -> UISession:
        """The session of tab `key`. Raises SessionEnded for a key this server did not issue; a
        valid key whose session was dropped gets a fresh empty one (saying so once)."""
        if not self.keys.is_valid(key):
            raise SessionEnded("this page's session is not known to the server (it restarted, or the page is stale): "
                               "reload the page")
        with self._lock:
            session = self.sessions.get(key)
            if session is not None:
                self.sessions.move_to_end(key)
                session.last_used, session.closed = time.monotonic(), False
                return session
            reclaimed = self._reclaimed.pop(key, None)
        session = self._make(key, client)
        if reclaimed:
            session.notice = reclaimed
        return session

    def find(self, key: object) -> UISession | None:
        """The session of tab `key` if it has one now; unlike get(), nothing is made."""
        return self.sessions.get(key) if self.keys.is_valid(key) else None  # type: ignore[arg-type]

    def drawn(self, key: object, update: object) -> None:
        """The page of tab `key` has drawn update number `update` (static/app.js says so)."""
        session = self.find(key)
        if session is not None and isinstance(update, int) and not isinstance(update, bool):
            session.updates_drawn = min(max(session.updates_drawn, update), session.updates_sent)

    def tab_closed(self, key: object) -> None:
        """The page of tab `key` is going away (static/app.js says so on pagehide): its Run
        pauses and its slot is the first to reclaim. Only marked, not dropped: a page the browser
        keeps to go back to also hides, and its next call with the key clears the mark."""
        session = self.find(key)
        if session is not None:
            with self._lock:
                session.closed, session.pause_requested = True, True

    def tab_alive(self, key: object, hidden: object) -> None:
        """The page of tab `key` is still open (static/app.js says so every few seconds), shown
        or hidden: a page that stops saying so has gone (see SILENT_SHOWN_S)."""
        session = self.find(key)
        if session is not None:
            with self._lock:
                session.heard, session.page_hidden = time.monotonic(), hidden is True

    def claim_slot(self, session: UISession) -> None:
        """Before `session` takes memory (an engine, an uploaded trace): make sure it may.
        Reclaims closed and idle sessions' slots, then, only if it would be refused, the slots
        of pages gone silent (its own address's first); raises LimitReached when none is left
        for it, naming the limit."""
        if session.holds_memory:
            return
        with self._lock:
            self._reclaim_slots()
            refusal = self._refusal(session)
            if refusal == _PER_CLIENT:  # its own address's pages gone silent
                self._reclaim_slots(lambda s: s.client == session.client and self._silent(s))
                refusal = self._refusal(session)
            if refusal == _SERVER_FULL:  # anyone's
                self._reclaim_slots(self._silent)
                refusal = self._refusal(session)
            holders = [s for s in self.sessions.values() if s.holds_memory and s is not session]
            if refusal == _PER_CLIENT:
                raise LimitReached(
                    f"your address already holds {sum(s.client == session.client for s in holders)} sessions, "
                    f"the limit per client (--max-sessions-per-client {self.limits.max_sessions_per_client}): "
                    "close a tab you no longer use"
                )
            if refusal == _SERVER_FULL:
                raise LimitReached(
                    f"the server already has {len(holders)} sessions open, its limit "
                    f"(--max-sessions {self.limits.max_sessions}); try again when one closes or goes idle"
                )
            session.claiming = True  # the caller clears it once it holds the memory, or gave up

    def _refusal(self, session: UISession) -> str | None:
        """Which limit a slot for `session` would pass now: _PER_CLIENT, _SERVER_FULL or None."""
        holders = [s for s in self.sessions.values() if s.holds_memory and s is not session]
        if sum(s.client == session.client for s in holders) >= self.limits.max_sessions_per_client:
            return _PER_CLIENT
        return _SERVER_FULL if len(holders) >= self.limits.max_sessions else None

    @staticmethod
    def _silent(session: UISession) -> bool:
        """Has its page gone without saying goodbye? (Never for a session no page spoke for.)"""
        if session.heard is None:
            return False
        return time.monotonic() - session.heard > (SILENT_HIDDEN_S if session.page_hidden else SILENT_SHOWN_S)

    def _make(self, key: str, client: str) -> UISession:
        session = UISession(key, client=client, settings=self.starting_settings, can_start_engine=self.base is not None)
        if self.startup_trace is not None:
            self.open_trace(session, self.startup_trace, self.startup_name, shared=True)
            session.shares_startup_trace = True
        with self._lock:
            self.sessions[key] = session
            self._forget_empty_tabs()
        return session

    def _reclaim_slots(self, gone: Callable[[UISession], bool] = lambda session: False) -> None:
        """Free the slots of closed tabs, of sessions idle past Limits.idle_minutes, and of
        those `gone` picks (never one that is running). Their tabs get an empty session, and a
        notice, on their next call."""
        cutoff = time.monotonic() - self.limits.idle_minutes * 60
        for key, s in list(self.sessions.items()):
            if s.holds_memory and not s.running and (s.closed or s.last_used < cutoff or gone(s)):
                del self.sessions[key]
                s.pause_requested = True
                s.forget_download()
                if s.closed:
                    why = "its tab closed"
                elif s.last_used < cutoff:
                    why = f"it was idle for {self.limits.idle_minutes:g} minutes"
                else:
                    why = "its page stopped answering"
                self._reclaimed[key] = f"this tab's session was reclaimed ({why}) and its trace is gone: start again"
                while len(self._reclaimed) > MAX_TABS:
                    self._reclaimed.popitem(last=False)

    def _forget_empty_tabs(self) -> None:
        """Keep the table bounded: drop the least recently used tabs that hold nothing (they
        are remade, empty, if they call again)."""
        if len(self.sessions) <= MAX_TABS:
            return
        for key in [k for k, s in self.sessions.items() if not s.holds_memory][: len(self.sessions) - MAX_TABS]:
            del self.sessions[key]

    def reference_engine(self) -> LLMEngine:
        """The model in float32 with the reference kernels (LLMEngine.reference_copy): made on
        first use (4 bytes a parameter more), then kept for every session's fidelity checks."""
        if self.base is None:
            raise LimitReached("this server runs no model (--trace): a fidelity check needs one")
        with self._reference_lock:
            if self._reference is None:
                self._reference = LLMEngine.reference_copy(self.base)
            return self._reference

    # -- what a session does ------------------------------------------------------------------------

    def reset(self, session: UISession, settings: EngineSettings, capture: CaptureSettings) -> None:
        """A fresh engine with the given settings and an empty trace (the opened trace, if
        any, is closed). Raises ValueError naming a bad setting, changing nothing."""
        self._start_engine(session, settings, capture, lambda debug: None)

    def _start_engine(self, session: UISession, settings: EngineSettings, capture: CaptureSettings,
                      first: Callable[[DebugSession], _T]) -> _T:
        """Make a fresh engine and DebugSession with these settings, let `first` act on it, and
        only then put it in `session` (Reset's work); returns what `first` returned. What any
        of it raises leaves `session` as it was: its opened trace open, no slot taken."""
        if self.base is None:
            raise LimitReached("no model is loaded (the server runs with --trace): open a trace file to view")
        self.check_engine_settings(settings)
        if capture.top_k < 1 or capture.top_k > 50:
            raise ValueError(f"logits top-k must be between 1 and 50, got {capture.top_k}")
        config = EngineConfig(
            num_kv_blocks=settings.num_kv_blocks, block_size=settings.block_size,
            max_num_seqs=settings.max_num_seqs, max_num_batched_tokens=settings.max_num_batched_tokens,
            enable_prefix_caching=settings.prefix_caching, enforce_eager=self.base.config.enforce_eager,
        )
        self.claim_slot(session)
        try:
            engine = LLMEngine.sharing_weights(self.base, config)  # validates the rest (block size, ...)
            policy = CapturePolicy(
                attention=capture.attention,
                attention_requests=None if capture.traced_requests is None else tuple(range(capture.traced_requests)),
                top_k=capture.top_k, logit_lens=capture.logit_lens,
                memory_budget=int(self.limits.trace_budget_mb * 2**20),
            )
            debug = DebugSession(engine, policy)
            result = first(debug)
            session.pause_requested = True  # a run in progress stops at its next step
            session.debug = debug
        finally:
            session.claiming = False
        session.opened, session.opened_name = None, ""
        session.shares_startup_trace = session.shared_view = False
        session.sequences_asked = 0
        session.cursor = session.debug.cursor
        session.settings, session.capture = settings, capture
        session.selection = Selection()
        return result

    def check_engine_settings(self, settings: EngineSettings) -> None:
        """Raise ValueError naming a setting outside what this server lets a session use (the
        engine checks the rest, such as a block size its attention takes)."""
        if not 1 <= settings.num_kv_blocks <= self.limits.max_kv_blocks:
            raise ValueError(f"KV blocks must be between 1 and {self.limits.max_kv_blocks}, got {settings.num_kv_blocks}")
        if self.base is not None:  # a session's pool is of the shared model
            self.check_kv_memory(self.base, settings.num_kv_blocks, settings.block_size)
        if not 1 <= settings.max_num_seqs <= MAX_NUM_SEQS:
            raise ValueError(f"max batch size must be between 1 and {MAX_NUM_SEQS}, got {settings.max_num_seqs}")
        if not 1 <= settings.max_num_batched_tokens <= MAX_BATCHED_TOKENS:
            raise ValueError(f"max batched tokens must be between 1 and {MAX_BATCHED_TOKENS}, "
                             f"got {settings.max_num_batched_tokens}")

    def check_kv_memory(self, engine: LLMEngine, num_kv_blocks: int, block_size: int) -> None:
        """Raise ValueError when a pool of `num_kv_blocks` blocks of `block_size` tokens over
        `engine`'s model takes more than --max-kv-mb: a session's Reset, and a Compare replay,
        whose settings may come from a trace file (a block size of 65,536 is a valid one)."""
        block = engine.kv_block_bytes(block_size)
        pool_mb = (num_kv_blocks + 1) * block / 2**20  # + 1: the engine's scratch block
        if pool_mb > self.limits.max_kv_mb:
            fits = blocks_within(self.limits.max_kv_mb, block)
            raise ValueError(f"{num_kv_blocks} KV blocks of {block_size} tokens take {pool_mb:.0f} MiB; "
                             f"this server gives a session at most {self.limits.max_kv_mb:g} MiB (--max-kv-mb): "
                             f"{fits} blocks of that size")

    def add_prompts(self, session: UISession, prompts: list[str], params: SamplingParams, chat: bool) -> list[int]:
        """Queue every prompt, or none: each is checked first (InvalidRequestError names the
        bad one). Returns the new sequence ids."""
        limits = self.limits
        if not prompts:
            raise InvalidRequestError("no prompt: write one prompt per line")
        if len(prompts) > limits.max_prompts:
            raise LimitReached(f"{len(prompts)} prompts at once; the limit is {limits.max_prompts}")
        asks = [Ask(f"prompt {i + 1}", params.max_tokens, params.n, params.beam_width, len(prompt))
                for i, prompt in enumerate(prompts)]
        if session.live:
            asked = self._check_requests(session, asks)
            seq_ids = session.debug.add_batch(prompts, params, chat)
        else:  # a fresh engine, which replaces an opened trace only once it has taken the prompts
            asked = self._check_requests(session, asks, fresh=True)
            seq_ids = self._start_engine(session, session.settings, session.capture,
                                         lambda debug: debug.add_batch(prompts, params, chat))
        session.sequences_asked += asked
        return seq_ids

    def fork(self, session: UISession, seq_id: int, num_tokens: int, forced: list[int], params: SamplingParams) -> int:
        """Fork sequence `seq_id` (DebugSession.fork), waiting for other sessions' steps: the
        fork's copy on write runs on the device the model shares. Returns the fork's id;
        raises InvalidRequestError, changing nothing, when the engine refuses it."""
        if not session.live:
            raise LimitReached(session.no_fork_reason)
        self._check_step_limit(session)  # the fork runs at once: a session at its step limit could not
        self._check_requests(session, [], forks=1)
        with self.model_lock:
            child = session.debug.fork(seq_id, num_tokens, forced, params)
        session.sequences_asked += 1
        session.last_used = time.monotonic()
        return child

    def step(self, session: UISession) -> bool:
        """One engine step (waiting for other sessions' steps); False when nothing is left to
        run. Raises LimitReached at the per-session step limit."""
        if not session.live:
            return False
        self._check_step_limit(session)
        with self.model_lock:
            record = session.debug.step()
        session.last_used = time.monotonic()
        return record is not None

    def run_step(self, session: UISession, run: Generator[int, None, RunResult]) -> RunResult | None:
        """The next step of `run` (a DebugSession.run_iter of the session's), waiting for other
        sessions' steps, with the cursor moved to it; the RunResult instead when the run ends.
        Raises LimitReached at the per-session step limit."""
        self._check_step_limit(session)
        with self.model_lock:
            try:
                index = next(run)
            except StopIteration as end:
                result = end.value
            else:
                # The panels show each step as it ends; its record is completed here, under the
                # session's lock, so a handler reading the trace meanwhile finds nothing half-done.
                session.debug.seek(index)
                result = None
        session.last_used = time.monotonic()
        return result

    def _check_requests(self, session: UISession, asks: list[Ask], forks: int = 0, fresh: bool = False) -> int:
        """The sequences `asks` and `forks` make, within the server's request limits
        (webui/request_limits.py), counting those the session made since Reset (none for a
        `fresh` engine): every sequence is drawn on each render (the text panel, the pickers),
        and 5,000 of them made each Step take 6-9 s."""
        return check_requests(self.limits, asks, 0 if fresh else session.sequences_asked, forks,
                              advice=": save the trace if you want it, then Reset")

    def _check_step_limit(self, session: UISession) -> None:
        if len(session.debug.trace.steps) >= self.limits.max_steps:
            raise LimitReached(
                f"this session has recorded {self.limits.max_steps} steps, its limit: save the trace, then Reset"
            )

    def open_trace(self, session: UISession, trace: Trace, name: str, shared: bool = False) -> None:
        """Show a trace from a file, read-only; Reset goes back to a live engine. The live
        engine, if any, is let go (its slot now holds the trace)."""
        if not shared:  # one trace object shown to many tabs takes no slot
            self.claim_slot(session)
        session.pause_requested = True
        session.debug, session.shares_startup_trace, session.shared_view = None, False, False
        session.opened, session.opened_name = trace, name
        session.claiming = False
        session.cursor = Cursor(trace)
        if trace.steps:
            session.cursor.seek(0)
        session.selection = Selection()

    def open_shared(self, session: UISession, share_id: object, step: object = None, seq: object = None) -> bool:
        """Open shared snapshot `share_id` (from a link) at `step` with sequence `seq` picked,
        read-only and without a slot. False when the link is unknown or expired. The step and
        sequence come from a URL: anything that is not one of the trace's is ignored."""
        found = self.shares.get(share_id)
        if found is None:
            return False
        trace, name = found
        self.open_trace(session, trace, name, shared=True)
        session.shared_view = True
        self.show_linked(session, step, seq)
        return True

    @staticmethod
    def show_linked(session: UISession, step: object, seq: object) -> None:
        """Move to the step and sequence a link names, when they are valid for the session's trace."""
        trace = session.trace
        if trace is None:
            return
        step, seq = _link_number(step), _link_number(seq)
        if step is not None and step < len(trace.steps):
            session.cursor.seek(step)
        if seq is not None and seq in trace.sequences:
            session.selection = Selection(seq_id=seq)


def _link_number(value: object) -> int | None:
    """A link's step or sequence: ASCII digits, at most nine of them, else None (ignored).
    str.isdigit() also takes "²", which int() then refuses, and int() refuses 4,300 digits."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    return None
