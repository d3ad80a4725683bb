"""Shared views: a link that opens a snapshot of someone's trace, read-only, at a step.

A live session is private (only its tab key reaches it), so a link cannot point into it.
"Share link" instead freezes the trace as it is now into a snapshot, a copy made by writing and
reading back the .mltrace file (so the snapshot holds exactly what a saved file would, and the
live run may go on), keeps it under a random id, and gives out

    http://host:port/?view=<id>&step=<n>&seq=<m>

which opens, in any browser that can reach the server (and has logged in, on an --auth server),
that snapshot at step n with sequence m picked. The link carries no session key, and a snapshot
cannot be changed through it. Snapshots are bounded in number and in bytes, the oldest going
first; and per client address, so one client sharing again and again (16 links) cannot push
everyone else's links out: its own oldest go first.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from inspector import Trace, TraceError, load, save


def link_host(asked_as: str, shared_as: str | None) -> str:
    """The host:port a share link names. The page's own (the request's Host header), except on
    a server shared on the LAN (shared_as: the address app.py prints for it) that the page
    reached as localhost: a link to "localhost" opens nothing on another machine, and a
    first-time user sharing the demo from the machine that serves it gave out just that."""
    try:
        parts = urlsplit(f"//{asked_as}")
        name, port = parts.hostname or "", parts.port
    except ValueError:  # not a host[:port] (the header is the client's to write)
        return asked_as
    if shared_as is None or not _is_loopback(name):
        return asked_as
    return f"{shared_as}:{port}" if port else shared_as


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


MAX_SHARES = 16
MAX_SHARED_BYTES = 512 * 2**20  # the snapshots' files together
CLIENTS_SHARING = 4  # each client address may hold this share of the snapshots (a quarter of each bound)
SHARE_ID = re.compile(r"[0-9a-f]{24}")


@dataclass(frozen=True)
class Snapshot:
    trace: Trace
    name: str
    size: int  # bytes of its .mltrace file
    client: str  # the address that shared it


class Shares:
    def __init__(self, max_shares: int = MAX_SHARES, max_bytes: int = MAX_SHARED_BYTES):
        self.max_shares, self.max_bytes = max_shares, max_bytes
        self.client_shares = max(max_shares // CLIENTS_SHARING, 1)
        self.client_bytes = max_bytes // CLIENTS_SHARING
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()  # id -> snapshot, oldest first
        self._lock = threading.Lock()

    def share(self, trace: Trace, name: str, client: str) -> str:
        """Freeze `trace`, shared from address `client`, and return its share id. Raises
        ValueError when it is too large to keep."""
        with tempfile.TemporaryDirectory(prefix="minillama-share-") as folder:
            path = Path(folder) / "snapshot.mltrace"
            try:
                save(trace, path)
            except TraceError as error:  # over a limit of the file a snapshot is (the message says which)
                raise ValueError(f"not shared: {error}") from None
            size = path.stat().st_size
            if size > self.client_bytes:
                raise ValueError(f"the trace is {size / 2**20:.0f} MiB, too large to share (the limit is "
                                 f"{self.client_bytes / 2**20:.0f} MiB): save it and send the file instead")
            snapshot = Snapshot(load(path, max_bytes=4 * self.max_bytes), name, size, client)
        share_id = secrets.token_hex(12)
        with self._lock:
            self._snapshots[share_id] = snapshot
            while self._count(client) > self.client_shares or self._bytes(client) > self.client_bytes:
                self._drop_oldest(client)
            while len(self._snapshots) > self.max_shares or self._bytes() > self.max_bytes:
                self._drop_oldest()
        return share_id

    def get(self, share_id: object) -> tuple[Trace, str] | None:
        """The snapshot and its name, or None (an unknown, expired or malformed id)."""
        if not isinstance(share_id, str) or not SHARE_ID.fullmatch(share_id):
            return None
        with self._lock:
            found = self._snapshots.get(share_id)
        return None if found is None else (found.trace, found.name)

    def _count(self, client: str) -> int:
        return sum(s.client == client for s in self._snapshots.values())

    def _bytes(self, client: str | None = None) -> int:
        """The snapshots' bytes: of `client`, or of everyone (None)."""
        return sum(s.size for s in self._snapshots.values() if client is None or s.client == client)

    def _drop_oldest(self, client: str | None = None) -> None:
        """Forget the oldest snapshot: of `client`, or of everyone (None)."""
        oldest = next(i for i, s in self._snapshots.items() if client is None or s.client == client)
        del self._snapshots[oldest]
