"""Write a file whole or not at all: into a file of its own beside the target, then one rename.

A trace or an export written in place and cut short (a full disk, a file-size limit, Ctrl-C)
would leave half a file, and destroy the good one it was overwriting. Written beside it and
renamed (os.replace: atomic within a folder), the target is either the old file or the new one.
The file beside it has a name of its own (a random part), so it is never a file of the user's
("run.mltrace.partial" was overwritten, then deleted), nor another writer's.

What the user named stays what it was: a symbolic link is followed, and the file it points to
is the one replaced (replacing the link itself turned it into a file of its own, and the file
it pointed to kept the old contents), and a file that was there keeps its permission bits
(a trace kept private, 0600, was readable by all, 0644, after the next save).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inspector.trace.model import TraceError


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a path beside `path` that no file has yet; write the whole file there (opening it
    with mode "x"). When the block ends, it replaces `path`; if the block raises, it is removed
    and `path` is left as it was. An OSError while writing becomes a TraceError naming `path`."""
    target = Path(os.path.realpath(path))  # the file a link names; `path` itself otherwise
    if target.exists() and not target.is_file():  # a folder, a device: replaced, /dev/null was lost
        raise TraceError(f"{path} is not a regular file; not written")
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    try:
        yield partial
        if target.exists():
            os.chmod(partial, stat.S_IMODE(target.stat().st_mode))
        os.replace(partial, target)
    except OSError as exc:
        raise TraceError(f"{path}: could not be written ({exc.strerror or exc}); the file there is unchanged") from exc
    finally:
        partial.unlink(missing_ok=True)
