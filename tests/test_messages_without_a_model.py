"""A server that loaded no model (app.py --trace) offers no Reset.

Every way a session shows a trace from a file (the server's own, one uploaded, a shared link)
said "Reset starts a live engine" or "(Reset starts one)" where Reset can only answer "no model
is loaded": in the status, the idle message, the Next token tab's caption and a refused fork.
With a model, each still offers it. A tiny random model records the trace.
"""

from __future__ import annotations

import json

import pytest
from test_inspector_support import record_tiny_run

from inspector.views import Selection, fork_choices_html
from webui import Limits, SessionManager, forking
from webui.handlers import _idle_message
from webui.render import status_html
from webui.sessions import LimitReached, UISession


@pytest.fixture(scope="module")
def run():
    return record_tiny_run()


def shown(manager: SessionManager, how: str, trace) -> UISession:
    """A session of `manager` showing `trace` the way `how` says."""
    session = manager.open_tab("10.0.0.1")
    if how == "uploaded":
        manager.open_trace(session, trace, "up.mltrace")
    elif how == "shared":
        assert manager.open_shared(session, manager.shares.share(trace, "shared", "10.0.0.2"))
    return session


def what_it_says(manager: SessionManager, session: UISession, seq_id: int, step: int) -> list[str]:
    """Every message that may offer Reset: the status, the idle message, the fork caption and
    the two refusals of a fork (the page's check, and the manager's)."""
    said = [status_html(session), _idle_message(session),
            fork_choices_html(session.trace, step, Selection(seq_id=seq_id), session.live, session.can_start_engine)]
    click = json.dumps({"seq": seq_id, "step": step, "token": 1})
    for refused in (lambda: forking.from_click(session, click), lambda: manager.fork(session, seq_id, 1, [1], None)):
        with pytest.raises((ValueError, LimitReached)) as caught:
            refused()
        said.append(str(caught.value))
    return said


@pytest.mark.parametrize("how", ["startup", "uploaded", "shared"])
def test_without_a_model_no_message_offers_reset(run, how):
    trace = run.session.trace
    manager = SessionManager(None, Limits(), trace, "run.mltrace")
    session = shown(manager, how, trace)
    seq_id = run.ids[0]
    step = trace.sequences[seq_id].token_steps[0]
    for message in what_it_says(manager, session, seq_id, step):
        assert "Reset" not in message, message
    assert "runs no model" in what_it_says(manager, session, seq_id, step)[-1]


@pytest.mark.parametrize("how", ["uploaded", "shared"])
def test_with_a_model_a_trace_from_a_file_offers_reset(run, how):
    trace = run.session.trace
    manager = SessionManager(run.engine, Limits())
    session = shown(manager, how, trace)
    seq_id = run.ids[0]
    said = what_it_says(manager, session, seq_id, trace.sequences[seq_id].token_steps[0])
    assert all("Reset" in message for message in said), said
