"""webui: the Gradio visual debugger over inspector/ (sessions, handlers, page layout).

Dependency direction: app.py -> webui -> inspector -> minillama. The figures and HTML panels
themselves are pure functions in inspector/views; this package only wires them to a page.

    from webui import Limits, SessionManager, serve
    serve(SessionManager(engine, Limits()), "127.0.0.1", 7860)

The names are imported on first use (PEP 562): `serve` brings in Gradio, which a command line
that only parses its flags (webui/cli.py) or a test of the sessions does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"Limits": "webui.limits", "SessionManager": "webui.sessions", "serve": "webui.server"}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'webui' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
