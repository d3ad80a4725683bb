"""Browser sessions: each has its own debugger (engine, KV pool, trace); all share the weights.

One model is loaded once (SessionManager.base). A session's engine is a
LLMEngine.sharing_weights view of it with the user's own KV pool and scheduler limits, so one
user's preemptions, prefix hits and trace never show up in another's. The model itself is one
object, so engine steps of all sessions run one at a time under `model_lock`; between steps
the sessions interleave, which keeps every browser responsive.

Sessions are keyed by Gradio's session hash (one per browser tab, or per gradio_client
Client), capped at Limits.max_sessions, and reclaimed after Limits.idle_minutes unused or when
the tab closes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from inspector import CapturePolicy, Cursor, DebugSession, Trace
from inspector.views import Selection
from minillama.config import EngineConfig
from minillama.engine.llm_engine import LLMEngine
from minillama.errors import InvalidRequestError
from minillama.sampling_params import SamplingParams
from webui.limits import Limits


class LimitReached(Exception):
    """A server limit stops the action; the message says which and what to do."""


@dataclass(frozen=True)
class EngineSettings:
    """The part of the engine a user sets for their own session (applied at Reset)."""

    num_kv_blocks: int = 64
    block_size: int = 16
    max_num_seqs: int = 8
    max_num_batched_tokens: int = 2048
    prefix_caching: bool = True


@dataclass(frozen=True)
class CaptureSettings:
    attention: bool = True
    traced_requests: int = 2  # trace the attention (and logit lens) of the first n requests
    top_k: int = 10
    logit_lens: bool = False


@dataclass
class UISession:
    """One browser's debugger: a live DebugSession, or a trace opened from a file (read-only)."""

    key: str
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
    # One handler at a time changes the session (add, step, reset); reads need no lock.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def trace(self) -> Trace | None:
        if self.opened is not None:
            return self.opened
        return self.debug.trace if self.debug is not None else None

    @property
    def live(self) -> bool:
        """Can this session step an engine? (False while it shows an opened trace.)"""
        return self.opened is None and self.debug is not None

    @property
    def index(self) -> int:
        """The cursor's step index, -1 with no step."""
        return self.cursor.index if self.cursor is not None else -1


class SessionManager:
    def __init__(self, base: LLMEngine | None, limits: Limits, startup_trace: Trace | None = None,
                 startup_name: str = ""):
        """base: the engine whose model every session shares; None serves traces only
        (`app.py --trace FILE`), which every new session then opens."""
        self.base = base
        self.limits = limits
        self.startup_trace, self.startup_name = startup_trace, startup_name
        self.sessions: dict[str, UISession] = {}
        self.model_lock = threading.Lock()
        self._lock = threading.Lock()  # guards self.sessions

    # -- the session table ----------------------------------------------------------------------

    def get(self, key: str) -> UISession:
        """The session of browser `key`, made on first use; raises LimitReached when the server
        already holds max_sessions others (after reclaiming the idle ones)."""
        with self._lock:
            session = self.sessions.get(key)
            if session is None:
                self._reap_idle()
                if len(self.sessions) >= self.limits.max_sessions:
                    raise LimitReached(
                        f"the server already has {len(self.sessions)} sessions open, its limit "
                        f"(--max-sessions {self.limits.max_sessions}); try again when one closes or goes idle"
                    )
                session = UISession(key)
                if self.startup_trace is not None:
                    self.open_trace(session, self.startup_trace, self.startup_name)
                self.sessions[key] = session
            session.last_used = time.monotonic()
            return session

    def drop(self, key: str) -> None:
        """Forget a session (its tab closed): its engine, KV pool and trace go with it."""
        with self._lock:
            session = self.sessions.pop(key, None)
        if session is not None:
            session.pause_requested = True

    def _reap_idle(self) -> None:
        cutoff = time.monotonic() - self.limits.idle_minutes * 60
        for key in [k for k, s in self.sessions.items() if s.last_used < cutoff and not s.running]:
            del self.sessions[key]

    # -- what a session does ------------------------------------------------------------------------

    def reset(self, session: UISession, settings: EngineSettings, capture: CaptureSettings) -> None:
        """A fresh engine with the given settings and an empty trace (the opened trace, if
        any, is closed). Raises ValueError naming a bad setting, changing nothing."""
        if self.base is None:
            raise LimitReached("no model is loaded (the server runs with --trace): open a trace file to view")
        if not 1 <= settings.num_kv_blocks <= self.limits.max_kv_blocks:
            raise ValueError(f"KV blocks must be between 1 and {self.limits.max_kv_blocks}, got {settings.num_kv_blocks}")
        if not 1 <= settings.max_num_seqs <= 64:
            raise ValueError(f"max batch size must be between 1 and 64, got {settings.max_num_seqs}")
        if capture.top_k < 1 or capture.top_k > 50:
            raise ValueError(f"logits top-k must be between 1 and 50, got {capture.top_k}")
        config = EngineConfig(
            num_kv_blocks=settings.num_kv_blocks, block_size=settings.block_size,
            max_num_seqs=settings.max_num_seqs, max_num_batched_tokens=settings.max_num_batched_tokens,
            enable_prefix_caching=settings.prefix_caching, enforce_eager=self.base.config.enforce_eager,
        )
        engine = LLMEngine.sharing_weights(self.base, config)  # validates the rest (block size, ...)
        policy = CapturePolicy(
            attention=capture.attention, attention_requests=tuple(range(capture.traced_requests)),
            top_k=capture.top_k, logit_lens=capture.logit_lens, memory_budget=int(self.limits.trace_budget_mb * 2**20),
        )
        session.pause_requested = True  # a run in progress stops at its next step
        session.debug = DebugSession(engine, policy)
        session.opened, session.opened_name = None, ""
        session.cursor = session.debug.cursor
        session.settings, session.capture = settings, capture
        session.selection = Selection()

    def add_prompts(self, session: UISession, prompts: list[str], params: SamplingParams, chat: bool) -> list[int]:
        """Queue every prompt, or none: each is checked first (InvalidRequestError names the
        bad one). Returns the new sequence ids."""
        limits = self.limits
        if not prompts:
            raise InvalidRequestError("no prompt: write one prompt per line")
        if len(prompts) > limits.max_prompts:
            raise LimitReached(f"{len(prompts)} prompts at once; the limit is {limits.max_prompts}")
        if params.max_tokens > limits.max_new_tokens:
            raise LimitReached(f"max tokens {params.max_tokens} is over this server's limit of {limits.max_new_tokens}")
        for i, prompt in enumerate(prompts):
            if len(prompt) > limits.max_prompt_chars:
                raise LimitReached(f"prompt {i + 1} has {len(prompt)} characters; the limit is {limits.max_prompt_chars}")
        if session.debug is None or not session.live:
            self.reset(session, session.settings, session.capture)
        engine = session.debug.engine
        for i, prompt in enumerate(prompts):
            try:
                engine.check_request(prompt, params, chat)
            except InvalidRequestError as error:
                raise InvalidRequestError(f"prompt {i + 1}: {error}" if len(prompts) > 1 else str(error)) from None
        return [session.debug.add(prompt, params, chat) for prompt in prompts]

    def step(self, session: UISession) -> bool:
        """One engine step (waiting for other sessions' steps); False when nothing is left to
        run. Raises LimitReached at the per-session step limit."""
        if not session.live:
            return False
        if len(session.debug.trace.steps) >= self.limits.max_steps:
            raise LimitReached(
                f"this session has recorded {self.limits.max_steps} steps, its limit: save the trace, then Reset"
            )
        with self.model_lock:
            record = session.debug.step()
        session.last_used = time.monotonic()
        return record is not None

    def open_trace(self, session: UISession, trace: Trace, name: str) -> None:
        """Show a trace from a file, read-only; Reset goes back to a live engine."""
        session.pause_requested = True
        session.opened, session.opened_name = trace, name
        session.cursor = Cursor(trace)
        if trace.steps:
            session.cursor.seek(0)
        session.selection = Selection()
