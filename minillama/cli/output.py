"""stdout while a command line runs: a write that fails says that it was the output's.

`python -m inspector show run.mltrace >&-` (stdout closed) printed nothing and exited 0: with
file descriptor 1 closed, Python's sys.stdout is None and print() writes nothing, without a
word. `> /dev/full` failed with "[Errno 28] No space left on device", which named no file.
run_cli puts an Output in front of sys.stdout for the command's run: a write that fails raises
OSError with the same errno and a message naming the output, which run_cli prints as its one
line (status 2), and one to a closed stdout fails so too. A reader gone (BrokenPipeError) is
left as it is: run_cli ends quietly on it (`prog | head -1`, status 141).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


class Output:
    """`stream` (sys.stdout, or None when it is closed), whose failed writes name it."""

    def __init__(self, stream: TextIO | None):
        self.stream = stream

    def write(self, text: str) -> int:
        if self.stream is None:
            raise OSError(errno.EBADF, "cannot write the output (stdout): it is closed")
        return self._named(self.stream.write, text)

    def flush(self) -> None:
        if self.stream is not None:  # closed: nothing was written, so nothing is lost
            self._named(self.stream.flush)

    def require(self, why: str) -> None:
        """Fail now, as a write would, if the output is closed: for a command whose first write
        comes late (app.py starts a server; uvicorn's logging failed on the closed stream with
        "Unable to configure formatter 'default'")."""
        if self.stream is None:
            raise OSError(errno.EBADF, f"cannot write the output (stdout): it is closed; {why}")

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the stream has: encoding, fileno, isatty
        return getattr(self.stream, name)

    @staticmethod
    def _named(call: Callable[..., T], *args: object) -> T:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OSError(error.errno, f"cannot write the output (stdout): {error.strerror or error}") from error
