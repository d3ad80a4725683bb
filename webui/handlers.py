"""What each button, slider and upload does. Every handler ends with render(), so all panels
follow the cursor together.

Bad input never escapes a handler: a rejected prompt, a bad setting, a limit, a bad trace file
gives a message in the status banner (and a toast), and the session is left as it was. An
unexpected error is logged with its traceback and reported the same way; other sessions never
see it, and the server keeps serving.

Every call names its session by the tab key the page received when it loaded (the first input
of every event; see webui/tab_keys.py), never by Gradio's client-chosen session hash.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from inspector import AtStep, Breakpoint, RecordingStopped, RunResult, SequenceFinished, Trace, TraceError, load, save
from inspector.views import Selection, escape, fork_label, resolve
from minillama import ConfigError, InvalidRequestError, ModelLoadError, SamplingParams
from minillama.cli import printable_line
from webui import comparing, forking
from webui.breakpoint_form import breakpoints_from_form, describe
from webui.form_numbers import typed_number
from webui.limits import Limits
from webui.render import AUTO, render, status_html
from webui.sessions import (
    CaptureSettings,
    EngineSettings,
    LimitReached,
    SessionBusy,
    SessionEnded,
    SessionManager,
    UISession,
)
from webui.shares import link_host

log = logging.getLogger("minillama.webui")
EXPECTED = (InvalidRequestError, LimitReached, RecordingStopped, SessionEnded, TraceError, ValueError)
# A replay may also refuse the trace's model or settings (ConfigError), or find no memory for
# the reference copy of the model (ModelLoadError).
COMPARE_EXPECTED = (*EXPECTED, ConfigError, ModelLoadError)
NO_PROGRESS = gr.Progress()  # Gradio replaces a handler's Progress default with the event's own
# While running, the panels are refreshed as fast as the browser draws them, and no faster: the
# page acknowledges each update once drawn (static/app.js -> front door -> SessionManager.drawn),
# and the run loop sends the next one only then, so a busy browser never has a backlog of
# updates to draw, and Pause is answered within one engine step and one frame. Steps run on
# in between; an update shows the latest.
# The most steps one Step call takes: quick presses add up (webui/layout.py), and a held-down
# s key repeats ~30 times a second; past this many the panels would lag the key by seconds.
MAX_STEP_PRESSES = 32
RUN_MIN_REFRESH_S = 0.1  # at most this often, even with a fast browser
RUN_MAX_WAIT_S = 2.0  # a client that never acknowledges (an API script) still gets this many


def toast(message: str) -> None:
    """A warning toast. Gradio renders a toast's text as (sanitised) HTML, so a message that
    quotes user input (a prompt, a pattern, a file name) would fetch images and show links:
    it goes out escaped, as text."""
    gr.Warning(escape(message))


def _client(request: gr.Request | None) -> str:
    """The client's address, by which slots are counted (X-Forwarded-For is not trusted: any
    client can write it)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def _reported(handler: Callable) -> Callable:
    """Wrap handler(self, session, *inputs) as the Gradio callback (self, key, *inputs, request):
    the tab's session is looked up by its key, and an exception becomes a message on the page
    with the session unchanged."""

    def wrapper(self: Handlers, key: str, *args: Any) -> list[Any]:
        *inputs, request = args
        session = None
        try:
            session = self.manager.get(key, _client(request))
            if session.notice:
                toast(session.notice)
                session.notice = ""
            return handler(self, session, *inputs)
        except EXPECTED as error:
            toast(str(error))
            return _render_safely(session, str(error))
        except Exception as error:  # noqa: BLE001 - one session's failure must not take the server down
            log.exception("handler %s failed", handler.__name__)
            message = f"internal error ({type(error).__name__}: {error}); the server keeps serving, details are in its log"
            return _render_safely(session, message)

    # Gradio reads the signature to know the inputs, and the annotation to pass the request.
    params = [inspect.Parameter("key", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [p for name, p in inspect.signature(handler).parameters.items() if name != "session"]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {"request": gr.Request}
    wrapper.__name__, wrapper.__doc__ = handler.__name__, handler.__doc__
    return wrapper


def _render_safely(session: UISession | None, message: str, error: bool = True) -> list[Any]:
    """The panels with `message` in the status; the empty panels and a message if the session's
    own fail to draw (the error may be in drawing them: the page must still get its message)."""
    try:
        return render(session, message, error=error)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("drawing the panels failed")
        return render(None, message or "internal error while drawing the panels; details are in the server's log",
                      error=True)


class Handlers:
    def __init__(self, manager: SessionManager, shared_as: str | None = None):
        """shared_as: the address a LAN-shared server gives out (share links name it), else None."""
        self.manager = manager
        self.shared_as = shared_as
        self.downloads = Path(tempfile.mkdtemp(prefix="minillama-traces-"))
        # Gone with the server (or these handlers): a server that ran for days, or a test run that
        # built a hundred pages, would otherwise leave every session's last saved trace behind.
        weakref.finalize(self, shutil.rmtree, self.downloads, ignore_errors=True)

    # -- page life ------------------------------------------------------------------------------

    def load(self, request: gr.Request) -> list[Any]:
        """A page loaded: a new tab key for it (the last output, into its hidden key field). A
        link's ?view=<share id>&step=<n>&seq=<m> opens a shared snapshot there; on a --trace
        server ?step and ?seq alone move to that step of the server's trace."""
        message = ""
        try:
            session = self.manager.open_tab(_client(request))
        except Exception:  # noqa: BLE001 - see _reported
            log.exception("load failed")
            return render(None, "internal error: reload the page", error=True) + [""]
        # The tab has its key from here on: whatever a link holds, the page still works.
        try:
            query = dict(getattr(request, "query_params", {}) or {})
            if "view" in query:
                if not self.manager.open_shared(session, query.get("view"), query.get("step"), query.get("seq")):
                    message = "this shared link has expired or is unknown: ask for a new one"
            elif session.shares_startup_trace:
                self.manager.show_linked(session, query.get("step"), query.get("seq"))
        except Exception:  # noqa: BLE001 - see _reported
            log.exception("opening the link failed")
            message = "internal error while opening this link; the page works without it"
        return _render_safely(session, message, error=bool(message)) + [session.key]

    # -- requests and the engine ------------------------------------------------------------------

    @_reported
    def add_prompts(self, session: UISession, text: str, chat: bool, max_tokens: float | None,
                    temperature: float | None, top_p: float | None, top_k: float | None,
                    seed: str | float | None, samples: float | None, beam_width: float | None) -> list[Any]:
        prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
        params = SamplingParams(
            max_tokens=_whole(max_tokens, "max tokens"), temperature=_number(temperature, "temperature"),
            top_p=_number(top_p, "top-p"), top_k=_whole(top_k, "top-k", minimum=0),
            seed=None if _blank(seed) else _whole(seed, "seed", minimum=0, maximum=2**63 - 1),
            **_search(samples, beam_width),
        )
        with session.hold():
            ids = self.manager.add_prompts(session, prompts, params, chat)
        return render(session, f"added {', '.join(f'#{i}' for i in ids)}: press Step or Run")

    @_reported
    def step(self, session: UISession, presses: float | None) -> list[Any]:
        """`presses` engine steps (quick presses of Step add up, see webui/layout.py), fewer if
        nothing is left to run; the panels then show the last."""
        count = 1 if presses is None else _whole(presses, "step presses", maximum=MAX_STEP_PRESSES)
        stepped = 0
        with session.hold():
            while stepped < count and self.manager.step(session):
                stepped += 1
        return render(session, "" if stepped else _idle_message(session))

    def run(self, key: str, request: gr.Request) -> Iterator[list[Any]]:
        """Run until no request is left (or Pause), refreshing the panels live."""
        yield from self._run(key, None, request)

    def run_to_breakpoint(self, key: str, events: list[str], at_step: str, pattern: str, entropy_above: str,
                          prob_below: str, kv_percent_above: str, request: gr.Request) -> Iterator[list[Any]]:
        """Run until one of the form's breakpoints fires (or nothing is left, or Pause)."""
        try:
            breakpoints = breakpoints_from_form(events or [], at_step, pattern, entropy_above, prob_below,
                                                kv_percent_above)
        except ValueError as error:
            toast(str(error))
            yield render(self._session_or_none(key, request), str(error), error=True)
            return
        session = self._session_or_none(key, request)
        problem = "no breakpoint is set: tick or fill one first" if not breakpoints else _never_reached(session, breakpoints,
                                                                                                     self.manager.limits)
        if problem is not None:
            toast(problem)
            yield render(session, problem, error=True)
            return
        yield from self._run(key, breakpoints, request)

    def _run(self, key: str, breakpoints: list[Breakpoint] | None, request: gr.Request) -> Iterator[list[Any]]:
        try:
            session = self.manager.get(key, _client(request))
        except SessionEnded as error:
            yield render(None, str(error), error=True)
            return
        yield from self._run_session(session, breakpoints)

    def _run_session(self, session: UISession, breakpoints: list[Breakpoint] | None,
                     stopped: Callable[[RunResult], str] | None = None, claimed: bool = False,
                     first: str | None = None) -> Iterator[list[Any]]:
        """Run `session` until a breakpoint, the end or Pause, refreshing the panels live.
        stopped: the message when a breakpoint ends the run (default: which one, and why).
        claimed: the caller already set session.running (under the session's lock); first: a
        message to show before the first step."""
        if not claimed:
            try:
                with session.hold():  # check and set at once: of parallel Runs, one runs
                    already = session.running
                    if not already:
                        session.running, session.pause_requested = True, False
            except SessionBusy as busy:
                yield render(session, str(busy), error=True)
                return
            if already:
                yield render(session, "already running: Pause first")
                return
        message, error = "", False
        try:
            if first is not None:
                yield render(session, first)
            message = yield from self._run_steps(session, breakpoints or [], stopped)
        except EXPECTED as caught:
            message, error = str(caught), True
        except Exception as caught:  # noqa: BLE001 - see _reported
            log.exception("run failed")
            message, error = f"internal error ({type(caught).__name__}: {caught}); the server keeps serving", True
        finally:
            session.running = False
        yield render(session, message, error)

    def _run_steps(self, session: UISession, breakpoints: list[Breakpoint],
                   stopped: Callable[[RunResult], str] | None = None) -> Generator[list[Any], None, str]:
        """Take the steps of the session's DebugSession.run_iter one at a time, each under the
        session's lock, until the run ends or Pause; yields the live updates (paced by the
        browser, see RUN_MIN_REFRESH_S) and returns the message to end on."""
        if not session.live:
            return _idle_message(session)
        run = session.debug.run_iter(breakpoints)
        last_yield = time.monotonic()
        try:
            while True:
                # The run's own steps wait as long as it takes (not hold()): a Run is one call
                # per session (session.running), so its waiting can never fill the shared slots.
                with session.lock:
                    if session.pause_requested:
                        return "paused"
                    result = self.manager.run_step(session, run)
                if result is not None:
                    break
                waited = time.monotonic() - last_yield
                drawn = session.updates_drawn >= session.updates_sent
                if waited >= RUN_MIN_REFRESH_S and (drawn or waited >= RUN_MAX_WAIT_S):
                    last_yield = time.monotonic()
                    yield render(session, "running…", cursor_only=True)
        finally:
            with session.lock:
                run.close()  # a run stopped midway (Pause, an error): its cursor on its last step
        if result.breakpoint is None:  # the run went to the end: say that none of its breakpoints fired
            watched = ", ".join(describe(b) for b in breakpoints)
            return (f"no breakpoint fired ({watched}); " if breakpoints else "") + _idle_message(session)
        if result.seq_ids:  # show what the breakpoint is about
            session.selection = replace(session.selection, seq_id=result.seq_ids[0])
        return stopped(result) if stopped is not None else f"breakpoint at step {session.index}: {result.reason}"

    # -- what if: forks ------------------------------------------------------------------------------

    def fork_token(self, key: str, click: str, request: gr.Request) -> Iterator[list[Any]]:
        """A click on another token in the Next token tab ({"seq", "step", "token"} as JSON):
        fork the sequence at that step with that token, and run until the fork finishes."""
        yield from self._fork(key, request, lambda session: forking.from_click(session, click))

    def fork_text(self, key: str, text: str, request: gr.Request) -> Iterator[list[Any]]:
        """The "Fork with text" box: fork the selected sequence at the cursor's step with the
        typed text instead of the token it drew there, and run until the fork finishes."""
        yield from self._fork(key, request, lambda session: forking.from_text(
            session, _selected_seq(session), text, self.manager.limits.max_prompt_chars))

    def _fork(self, key: str, request: gr.Request,
              planned: Callable[[UISession], forking.ForkPlan]) -> Iterator[list[Any]]:
        """Check and make the fork `planned` describes, select it, and run it (and whatever
        else is queued) until it finishes, live like Run; Pause stops it. A bad request gives a
        toast and changes nothing."""
        try:
            session = self.manager.get(key, _client(request))
        except SessionEnded as error:
            toast(str(error))
            yield render(None, str(error), error=True)
            return
        try:
            with session.hold():  # checked, made and marked running at once: of parallel forks, one is made
                if session.running:
                    raise ValueError("already running: Pause first, then fork")
                plan = planned(session)
                child = self.manager.fork(session, plan.seq_id, plan.num_tokens, plan.forced, plan.params)
                label = fork_label(session.trace, child)
                session.running, session.pause_requested = True, False
        except EXPECTED as error:
            toast(str(error))
            yield render(session, str(error), error=True)
            return
        except Exception as error:  # noqa: BLE001 - see _reported
            log.exception("fork failed")
            yield render(session, f"internal error ({type(error).__name__}: {error}); the server keeps serving", True)
            return
        session.selection = replace(session.selection, seq_id=child)
        yield from self._run_session(
            session, [SequenceFinished(child)],
            lambda result: f"{label} finished at step {session.index}: the Branch tab shows it beside #{plan.seq_id}",
            claimed=True, first=f"{label}: running it to {plan.params.max_tokens} new token(s)…",
        )

    def pause(self, key: str) -> Any:
        """Stop the session's run at its next step; the run's last update says "paused". With
        nothing running, the status line says so: the button did nothing, silently, and a
        user pressing it after a Step (which it does not stop) could not tell why."""
        session = self.manager.find(key)
        if session is None:
            return gr.skip()  # a stale or forged key: the page's next call is told, nothing here
        if session.running:
            session.pause_requested = True
            return gr.skip()
        return status_html(session, NOTHING_TO_PAUSE)

    @_reported
    def reset(self, session: UISession, kv_blocks: float | None, block_size: str | int, max_num_seqs: float | None,
              max_batched_tokens: float | None, prefix_caching: bool, attention: bool, traced: str | float | None,
              top_k: float | None, logit_lens: bool) -> list[Any]:
        settings = _engine_settings(kv_blocks, block_size, max_num_seqs, max_batched_tokens, prefix_caching)
        traced_requests = (None if _blank(traced) else
                           _whole(traced, "traced requests", minimum=0, maximum=MAX_TRACED_REQUESTS))
        capture = CaptureSettings(bool(attention), traced_requests, _whole(top_k, "top-k"), bool(logit_lens))
        with session.hold():
            self.manager.reset(session, settings, capture)
        return render(session, f"new engine: {settings.num_kv_blocks} KV blocks of {settings.block_size} tokens, "
                               f"batches of up to {settings.max_num_seqs}")

    # -- the cursor and the selection ---------------------------------------------------------------

    @_reported
    def seek(self, session: UISession, value: float | None) -> list[Any]:
        trace = session.trace
        if trace is not None and trace.steps and value is not None:
            session.cursor.seek(min(max(int(value), 0), len(trace.steps) - 1))
        return render(session, cursor_only=True, slider_moved=True)

    @_reported
    def prev(self, session: UISession) -> list[Any]:
        if session.cursor is not None:
            session.cursor.prev()
        return render(session, cursor_only=True)

    @_reported
    def next(self, session: UISession) -> list[Any]:
        if session.cursor is not None:
            session.cursor.next()
        return render(session, cursor_only=True)

    @_reported
    def select(self, session: UISession, seq_id: str | int | None, layer: float | None, head: str | None,
               full_matrix: bool) -> list[Any]:
        """The sequence ("auto": whichever the step under the cursor is about), layer and head
        the attention, logits and lens panels show. Values arrive from the client: checked."""
        session.selection = Selection(
            seq_id=None if seq_id in (None, "", AUTO) else _whole(seq_id, "sequence", minimum=0),
            layer=_whole(layer or 0, "layer", minimum=0),
            head=None if head in (None, "", "all") else _whole(head, "head", minimum=0), full_matrix=bool(full_matrix),
        )
        return render(session)

    def armed(self, events: list[str] | None, at_step: str, pattern: str, entropy_above: str, prob_below: str,
              kv_percent_above: str) -> str:
        """The breakpoints the form arms now, as a list under it (or what is wrong with a field)."""
        try:
            breakpoints = breakpoints_from_form(events or [], at_step, pattern, entropy_above, prob_below,
                                                kv_percent_above)
        except ValueError as error:
            return f"<div class='ml-armed ml-error'>{escape(str(error))}</div>"
        if not breakpoints:
            return "<div class='ml-armed ml-empty'>none armed</div>"
        never = _never_reached(None, breakpoints, self.manager.limits)  # no session here: the limit's check only
        if never is not None:
            return f"<div class='ml-armed ml-error'>{escape(never)}</div>"
        items = "".join(f"<li>{escape(describe(bp))}</li>" for bp in breakpoints)
        return f"<div class='ml-armed'>armed for Run to breakpoint:<ul>{items}</ul></div>"

    # -- compare: the session beside another run of its requests (webui/comparing.py) ---------------

    def compare_alone(self, key: str, request: gr.Request, progress: gr.Progress = NO_PROGRESS) -> list[Any]:
        """The batch-invariance check: replay every request of the session alone, and diff."""
        return self._compare(key, request, progress, "replaying each request alone",
                             lambda session, on_step: comparing.alone(self.manager, session, on_step))

    def compare_fidelity(self, key: str, request: gr.Request, progress: gr.Progress = NO_PROGRESS) -> list[Any]:
        """The fidelity check: replay the session in float32 with the reference kernels, and diff."""
        return self._compare(key, request, progress, "replaying in float32 with the reference kernels",
                             lambda session, on_step: comparing.fidelity(self.manager, session, on_step))

    def compare_settings(self, key: str, kv_blocks: float | None, block_size: str | int, max_num_seqs: float | None,
                         max_batched_tokens: float | None, prefix_caching: bool, request: gr.Request,
                         progress: gr.Progress = NO_PROGRESS) -> list[Any]:
        """Replay the session under the Engine panel's settings (not applied to the session), and diff."""
        def replayed(session: UISession, on_step: comparing.Progress) -> comparing.Comparison:
            settings = _engine_settings(kv_blocks, block_size, max_num_seqs, max_batched_tokens, prefix_caching)
            return comparing.with_settings(self.manager, session, settings, on_step)

        return self._compare(key, request, progress, "replaying with the Engine panel's settings", replayed)

    def compare_file(self, key: str, path: str | None, request: gr.Request,
                     progress: gr.Progress = NO_PROGRESS) -> list[Any]:
        """Diff the session against an uploaded trace file of the same requests."""
        def against(session: UISession, on_step: comparing.Progress) -> comparing.Comparison:
            other, name = self._load_upload(path)
            return comparing.against(session, other, name)

        return self._compare(key, request, progress, "comparing", against)

    def _compare(self, key: str, request: gr.Request, progress: gr.Progress, doing: str,
                 make: Callable[[UISession, comparing.Progress], comparing.Comparison]) -> list[Any]:
        """[the Compare panel, the status banner]. The session is only read, under its lock
        (a Step waits for the comparison); a refusal leaves the panel as it was."""
        session = None
        try:
            session = self.manager.get(key, _client(request))
            with session.hold():
                comparison = make(session, lambda done, total: progress((done, total), desc=doing, unit="steps"))
        except COMPARE_EXPECTED as error:
            toast(str(error))
            return [gr.skip(), status_html(session, str(error), error=True)]
        except Exception as error:  # noqa: BLE001 - see _reported
            log.exception("compare failed")
            message = f"internal error ({type(error).__name__}: {error}); the server keeps serving"
            return [gr.skip(), status_html(session, message, error=True)]
        session.compared = (session.trace, len(session.trace.steps)) if session.trace is not None else None
        return [comparing.panel(comparison), status_html(session, comparing.verdict(comparison))]

    # -- trace files ------------------------------------------------------------------------------

    def save_trace(self, key: str) -> str | None:
        """Write the session's trace, as it is now, to a fresh server-side file for the browser
        to download. The file is named after the model and the step count, never after the
        session; the previous download of the session is deleted."""
        session = self.manager.find(key)
        if session is None or session.trace is None or not session.trace.steps:
            toast("nothing to save yet: record a step first")
            return None
        trace = session.trace
        model = re.sub(r"[^A-Za-z0-9._-]", "_", trace.model.name)[:40] or "model"
        folder = self.downloads / secrets.token_hex(8)
        folder.mkdir()
        path = folder / f"minillama-{model}-{len(trace.steps)}steps-{time.strftime('%H%M%S')}.mltrace"
        # Saves of different sessions run side by side (each writes its own file); a lock
        # around every save made one tab's Save wait for another's 76 MB trace to be written.
        try:
            with session.hold():
                save(trace, path)
        except (SessionBusy, TraceError) as refused:  # busy, or too large for a file load() opens
            shutil.rmtree(folder, ignore_errors=True)
            toast(str(refused))
            return None
        session.forget_download()
        session.last_download = path
        size, upload_mb = path.stat().st_size, self.manager.limits.upload_mb
        if size > upload_mb * 2**20:  # saved whole, but this server's Open would refuse it
            toast(f"saved a {size / 2**20:.1f} MiB trace; this server opens uploads of at most {upload_mb} MiB "
                  "(--upload-mb): open it with python app.py --trace FILE, or python -m inspector show FILE")
        return str(path)

    def share_link(self, key: str, request: gr.Request) -> str:
        """A link to a read-only snapshot of the session's trace at the cursor's step (webui/shares.py)."""
        session = self.manager.find(key)
        if session is None or session.trace is None or not session.trace.steps:
            toast("nothing to share yet: record a step first")
            return ""
        try:
            with session.hold():
                # A live session's trace has no file name: the view says what it is instead.
                name = session.opened_name or f"a live session's trace ({len(session.trace.steps)} steps)"
                share_id = self.manager.shares.share(session.trace, name, _client(request))
        except (ValueError, LimitReached) as error:  # too large to keep; the tab busy (SessionBusy)
            toast(str(error))
            return ""
        seq = session.selection.seq_id
        query = f"?view={share_id}&step={session.index}" + (f"&seq={seq}" if seq is not None else "")
        host = link_host(request.headers.get("host", ""), self.shared_as) if request is not None else ""
        return f"http://{host}/{query}" if host else query

    @_reported
    def open_trace(self, session: UISession, path: str | None) -> list[Any]:
        if not path:
            return render(session)
        trace, name = self._load_upload(path)
        with session.hold():
            self.manager.open_trace(session, trace, name)
        return render(session, f"opened {name}: {len(trace.steps)} steps, {len(trace.sequences)} requests")

    def _load_upload(self, path: object) -> tuple[Trace, str]:
        """An uploaded trace file, read and validated whole (inspector.load), and its name.
        Raises LimitReached over the upload limit, TraceError naming what is wrong."""
        if not isinstance(path, str) or not path or not os.path.isfile(path):
            raise ValueError("no trace file came with the request: choose a .mltrace file")
        size = os.path.getsize(path)
        limit = self.manager.limits.upload_mb * 2**20
        if size > limit:
            raise LimitReached(f"the file is {size / 2**20:.1f} MiB; uploads are limited to {self.manager.limits.upload_mb} MiB")
        # The name as the uploader's browser sent it, shown in the status line and the Compare
        # verdict, and to everyone a share link reaches: a right-to-left override in it turned
        # the rest of the line around, a zero-width character hid one name in another. Such
        # characters are written as their escapes (U+202E as \u202e).
        name = printable_line(Path(path).name)
        try:
            trace = load(path, max_bytes=8 * limit)
        except TraceError as error:  # it says what is wrong; name the file, not where the server keeps it
            raise TraceError(str(error).replace(str(path), name)) from None
        return trace, name

    def _session_or_none(self, key: str, request: gr.Request) -> UISession | None:
        try:
            return self.manager.get(key, _client(request))
        except SessionEnded:
            return None


NOTHING_TO_PAUSE = "nothing is running: Pause stops a Run, a Run to breakpoint or a fork's run"


def _selected_seq(session: UISession) -> int | None:
    """The sequence the Next token tab shows: the one picked, else the one the cursor's step is about."""
    trace = session.trace
    return resolve(trace, session.selection, session.index).seq_id if trace is not None else None


def _never_reached(session: UISession | None, breakpoints: list[Breakpoint], limits: Limits) -> str | None:
    """Why a "stop at step" breakpoint could never fire, or None: its step is already recorded
    (the run would go to the end and stop there), or past the session's step limit."""
    recorded = len(session.trace.steps) if session is not None and session.trace is not None else 0
    for step in (bp.index for bp in breakpoints if isinstance(bp, AtStep)):
        if step < recorded:
            return f"'stop at step' {step} is already recorded (steps 0–{recorded - 1}): give a later step"
        if step >= limits.max_steps:
            return f"'stop at step' {step} is past this session's limit of {limits.max_steps} recorded steps (--max-steps)"
    return None


def _idle_message(session: UISession) -> str:
    if session.opened is not None:
        return "this is a trace from a file: move the slider to look around" + (
            ", or Reset to use the engine" if session.can_start_engine else "")
    if session.debug is None or not session.trace.sequences:
        return "add prompts first: write them on the left and press Add prompts"
    return "every request has finished: add prompts to continue"


def _engine_settings(kv_blocks: float | None, block_size: str | int, max_num_seqs: float | None,
                     max_batched_tokens: float | None, prefix_caching: bool) -> EngineSettings:
    """The Engine panel's fields as EngineSettings (ValueError naming a field that is not a number)."""
    return EngineSettings(
        num_kv_blocks=_whole(kv_blocks, "KV blocks"), block_size=_whole(block_size, "block size"),
        max_num_seqs=_whole(max_num_seqs, "max batch size"),
        max_num_batched_tokens=_whole(max_batched_tokens, "max batched tokens"), prefix_caching=bool(prefix_caching),
    )


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: float | str | None, name: str, kind: str = "a number") -> float:
    """A form field's value as a finite float; ValueError naming the field when it is not."""
    if _blank(value):
        raise ValueError(f"{name} is empty: give {kind}")
    try:
        # Typed text is read as it shows (webui/form_numbers.py); a number field's value as it is.
        number = typed_number(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None:
        raise ValueError(f"{name} needs {kind}, got {str(value)[:40]!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name} needs a finite number, got {value}")
    return number


def _search(samples: float | str | None, beam_width: float | str | None) -> dict[str, int]:
    """The form's "Samples (n)" and "Beam width" as SamplingParams fields: n samples of each
    prompt, or a beam search of that width (deterministic: it ignores temperature, top-p, top-k
    and seed), not both (a beam search's width is how many sequences it keeps). The server's
    limit on either is SessionManager.add_prompts'."""
    n, width = _whole(samples, "samples"), _whole(beam_width, "beam width")
    if n > 1 and width > 1:
        raise ValueError(f"samples ({n}) and beam width ({width}) cannot both be above 1: "
                         "a beam search keeps its width of sequences; set one of them to 1")
    return {"n": n, "beam_width": width}


# A form's whole numbers: at most this unless a field says otherwise (what the engine counts
# with int32; past it a value fails inside a step, or sizes a list, instead of here).
MAX_WHOLE = 2**31 - 1
# "Trace the first n requests" lists their ids: n is bounded by what a session could add.
MAX_TRACED_REQUESTS = 10_000
_DIGITS = re.compile(r"\s*[+-]?[0-9]{1,40}\s*")


def _whole(value: float | str | None, name: str, minimum: int = 1, maximum: int = MAX_WHOLE) -> int:
    """A form field's whole number in [minimum, maximum]; ValueError naming the field. Typed
    digits are read exactly: through a float, a seed past 2**53 would become its neighbour."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        real = _number(value, name, f"a whole number >= {minimum}")
        if real != int(real):
            raise ValueError(f"{name} must be a whole number >= {minimum}, got {value}")
        number = int(real)
    if number < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value}")
    if number > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {str(value)[:40]}")
    return number
