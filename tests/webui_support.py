"""Serve the UI in the test process on a free port, with the embedded model or a trace."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gradio_client import Client

from minillama import EngineConfig, LLMEngine
from webui.limits import Limits
from webui.server import serve
from webui.sessions import SessionManager

# Every panel that follows the cursor, by elem_id; each shows the text "step N" for step N.
PANEL_IDS = ("ml-text", "ml-timeline", "ml-kv", "ml-tables", "ml-attention", "ml-logits", "ml-history", "ml-lens", "ml-details")


def embedded_manager(model_dir) -> SessionManager:
    """The embedded model on the CPU (its own pool one block: each session makes its own), with
    room for the many tabs a test module opens."""
    base = LLMEngine.from_pretrained(model_dir, EngineConfig(device="cpu", num_kv_blocks=1, max_model_len=256))
    return SessionManager(base, Limits(max_sessions=32, max_sessions_per_client=32, max_new_tokens=64))


_PICK = random.Random()  # its own: a test's random.seed() must not make the servers' ports alike


def free_port() -> int:
    """A port nobody listens on, for a server the test starts later (seconds later, for a
    server process that loads its model first). Not one the kernel hands out itself (bind to
    port 0): that comes from the ephemeral range, where any outgoing connection made meanwhile
    could take it as its own end, the page's connections to it included (a connection to a
    port nobody listens on can connect to itself, a TCP "self-connect", when the kernel picks
    that same port for its end). Below the ephemeral range, no connection is given it."""
    low = _ephemeral_low()
    for _ in range(200):
        port = _PICK.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:  # no SO_REUSEADDR: a port an old connection still holds is not taken
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # someone holds it: another
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux's default starts at 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@contextmanager
def running_server(manager: SessionManager, auth: tuple[str, str] | None = None,
                   shared_as: str | None = None) -> Iterator[str]:
    """The UI served on 127.0.0.1 until the block ends; yields its URL. shared_as: the LAN
    address it says it is shared at (app.py's, for --host 0.0.0.0)."""
    port = free_port()
    app = serve(manager, "127.0.0.1", port, auth, block=False, shared_as=shared_as)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


class Tab:
    """What a browser tab does, through gradio_client: load the page (/state), keep the tab key
    it returns, and send that key first with every call. `loaded` is the page's first render."""

    def __init__(self, url: str, **client_args):
        self.client = Client(url, verbose=False, **client_args)
        *self.loaded, self.key = self.client.predict(api_name="/state")

    def predict(self, *inputs, api_name: str):
        return self.client.predict(self.key, *inputs, api_name=api_name)

    def submit(self, *inputs, api_name: str):
        return self.client.submit(self.key, *inputs, api_name=api_name)
