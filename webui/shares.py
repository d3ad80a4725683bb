"""Shared views: a link that opens a snapshot of someone's trace, read-only, at a step.

A live session is private (only its tab key reaches it), so a link cannot point into it.
"Share link" instead freezes the trace as it is now into a snapshot, a copy made by writing and
reading back the .mltrace file (so the snapshot holds exactly what a saved file would, and the
live run may go on), keeps it under a random id, and gives out

    http://host:port/?view=<id>&step=<n>&seq=<m>

which opens, in any browser that can reach the server (and has logged in, on an --auth server),
that snapshot at step n with sequence m picked. The link carries no session key, and a snapshot
cannot be changed through it. Snapshots are bounded in number and in bytes: the oldest go first.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from inspector import Trace, load, save

MAX_SHARES = 16
MAX_SHARED_BYTES = 512 * 2**20  # the snapshots' files together
SHARE_ID = re.compile(r"[0-9a-f]{24}")


class Shares:
    def __init__(self, max_shares: int = MAX_SHARES, max_bytes: int = MAX_SHARED_BYTES):
        self.max_shares, self.max_bytes = max_shares, max_bytes
        self._snapshots: OrderedDict[str, tuple[Trace, str, int]] = OrderedDict()  # id -> (trace, name, bytes)
        self._lock = threading.Lock()

    def share(self, trace: Trace, name: str) -> str:
        """Freeze `trace` and return its share id. Raises ValueError when it is too large to keep."""
        with tempfile.TemporaryDirectory(prefix="minillama-share-") as folder:
            path = Path(folder) / "snapshot.mltrace"
            save(trace, path)
            size = path.stat().st_size
            if size > self.max_bytes:
                raise ValueError(f"the trace is {size / 2**20:.0f} MiB, too large to share (the limit is "
                                 f"{self.max_bytes / 2**20:.0f} MiB): save it and send the file instead")
            snapshot = load(path, max_bytes=4 * self.max_bytes)
        share_id = secrets.token_hex(12)
        with self._lock:
            self._snapshots[share_id] = (snapshot, name, size)
            while len(self._snapshots) > self.max_shares or self._total() > self.max_bytes:
                self._snapshots.popitem(last=False)
        return share_id

    def get(self, share_id: object) -> tuple[Trace, str] | None:
        """The snapshot and its name, or None (an unknown, expired or malformed id)."""
        if not isinstance(share_id, str) or not SHARE_ID.fullmatch(share_id):
            return None
        with self._lock:
            found = self._snapshots.get(share_id)
        return None if found is None else (found[0], found[1])

    def _total(self) -> int:
        return sum(size for _, _, size in self._snapshots.values())
