"""Launch the page: queue, the front door (login gate, scripts), auth, upload limit. app.py and the tests use it."""

from __future__ import annotations

import resource
import signal
import sys
from functools import cache
from pathlib import Path

import gradio as gr
import plotly
import xxhash
from starlette.middleware import Middleware

from inspector import views
from webui.front_door import STATIC_PREFIX, FrontDoor
from webui.layout import build_app
from webui.render import figure_template_html
from webui.sessions import SessionManager

STATIC = Path(__file__).resolve().parent.parent / "static"
# plotly.js as the plotly package ships it: the page draws its figures with it, offline.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@cache
def plotly_name() -> str:
    """plotly.js's name under /ml-static/: "plotly.<digest of its bytes>.min.js". A name that
    changes with the file lets the browser keep it for good (the front door serves it
    immutable), so a reload neither downloads its 4.6 MB nor compiles it again: Chromium keeps
    the compiled code of a script it takes from its HTTP cache."""
    return f"plotly.{xxhash.xxh64_hexdigest(PLOTLY_JS.read_bytes())}.min.js"


def serve(manager: SessionManager, host: str = "127.0.0.1", port: int = 7860,
          auth: tuple[str, str] | None = None, block: bool = True, shared_as: str | None = None) -> gr.Blocks:
    """Build the page and serve it; with block=False return once the server is up (tests).
    shared_as: the address a server shared on the LAN gives out, which share links name."""
    if block:
        _exit_on_sigterm()
    raise_open_file_limit()
    head = page_head()
    door = Middleware(FrontDoor, static_files={plotly_name(): PLOTLY_JS}, on_drawn=manager.drawn,
                      on_closed=manager.tab_closed, on_alive=manager.tab_alive,
                      largest_upload=manager.limits.upload_mb * 2**20)
    app = build_app(manager, shared_as)
    # A queue slot per session: one user's long Run never waits behind another's.
    app.queue(default_concurrency_limit=manager.limits.max_sessions)
    app.launch(
        server_name=host, server_port=port, auth=auth, max_file_size=manager.limits.upload_mb * 2**20,
        css_paths=[STATIC / "app.css"], head=head,
        footer_links=["api"], show_error=False, prevent_thread_lock=not block, quiet=not block,
        run_history=False,  # the browser would keep every update it received: slower with each one
        app_kwargs={"middleware": [door]},
    )
    return app


def page_head() -> str:
    """What the page's head holds: app.js inline, where to find plotly.js (the front door's
    address, no server path), and, once, what every update would otherwise repeat: the panels'
    stylesheet and the figures' template (webui/render.py). app.js loads plotly.js when it
    first draws a figure, once Gradio has drawn the page: run in the head, its 0.7 s of
    script held the page back by as much on two cores (docs/perf-notes.md)."""
    plotly_src = f"<meta name='ml-plotly' content='{STATIC_PREFIX.lstrip('/')}{plotly_name()}'>"
    return f"{plotly_src}<script>{(STATIC / 'app.js').read_text()}</script><style>{views.STYLESHEET}</style>{figure_template_html()}"


# The most open files the server asks for (when the hard limit is unlimited).
OPEN_FILES_WANTED = 1 << 20


def raise_open_file_limit() -> None:
    """Let the server hold as many connections as the system allows. Each browser connection
    is an open file, an idle one too: the HTTP server closes none that never finishes its
    request (a "slowloris" client opens thousands). Python starts with the soft limit, often
    1,024 files, and past it the server can accept no one; the hard limit is what the system
    lets a process raise it to (often 2**20). Measured here: 3,000 such connections open, the
    page still loads in 0.2 s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # a container may refuse what getrlimit reports: keep the soft limit
            pass


def _exit_on_sigterm() -> None:
    """`kill` (SIGTERM) ends the server as Ctrl-C does: Python's default would end it at once,
    without its exit handlers, which delete the folder of traces the server saved for
    downloads (webui/handlers.py)."""
    def exit_cleanly(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second kill must not cut the exit handlers short
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, exit_cleanly)
