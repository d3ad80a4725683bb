"""Where minillama keeps what it builds once per machine: converted models, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path

from minillama.errors import CacheFolderError


def cache_root() -> Path:
    """$MINILLAMA_CACHE, else $XDG_CACHE_HOME/minillama (by default ~/.cache/minillama). An
    empty variable counts as unset: Path("") is the current folder, which would fill with the
    cache's files. CacheFolderError, naming the variable, for a folder that cannot be named:
    "~nobody/cache" (a user this machine does not know: Path.expanduser raised a bare
    RuntimeError, an internal error on a command line), or a name that is not UTF-8 text (the
    embedded model's 20 s conversion ran, then failed writing the name into its files)."""
    try:
        if os.environ.get("MINILLAMA_CACHE"):
            root = Path(os.environ["MINILLAMA_CACHE"]).expanduser()
        else:
            root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minillama"
    except RuntimeError as error:  # no home folder for ~ or ~user
        raise CacheFolderError(_unusable(f"cannot expand ~ ({error})")) from error
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError as error:  # undecodable bytes in the variable, kept as lone surrogates
        raise CacheFolderError(_unusable(f"the folder's name is not UTF-8 text ({error.reason} at "
                                         f"character {error.start})")) from error
    return root


def cache_folder(folder: Path) -> Path:
    """`folder` (cache_root() or a folder in it), made if missing, before something is written
    in it. CacheFolderError when it cannot take the cache, naming the variable that chose it:
    a file where the folder should be was "[Errno 17] File exists", which named neither
    MINILLAMA_CACHE nor the fix. Only a writer asks: a cache read-only to this user still
    serves what is in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheFolderError(_unusable(_why(folder, error))) from error
    if not os.access(folder, os.W_OK | os.X_OK):  # an existing folder passes mkdir whatever its rights
        raise CacheFolderError(_unusable(f"{folder} is not writable"))
    return folder


def _why(folder: Path, error: OSError) -> str:
    # os.path, not Path: it answers False for a name too long instead of raising.
    blocker = next((p for p in (folder, *folder.parents) if os.path.exists(p) and not os.path.isdir(p)), None)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    return f"{folder}: {error.strerror or error}"


def _unusable(why: str) -> str:
    """The message: the setting that chose the cache folder, as the user would change it, and why."""
    chosen = next((f"{v}={os.environ[v]!r}" for v in ("MINILLAMA_CACHE", "XDG_CACHE_HOME") if os.environ.get(v)),
                  "the default cache folder, ~/.cache/minillama,")
    return f"{chosen} cannot hold minillama's cache: {why}; set MINILLAMA_CACHE to a folder minillama can write to"
