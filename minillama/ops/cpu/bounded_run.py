"""Running a program that may misbehave (the C compiler $CC names): bounded in time and in what
it says.

Whatever $CC names runs: a wrapper that waits on a lock or a network share never returns (the
engine waited for ever, before loading the model), and one that prints without end filled the
memory of subprocess.run's captured output. Past its time the program, and every process it
started (cc runs cc1, as and ld in the same session), is killed, and of its messages only the
last KEEP_BYTES are kept, which is what a warning shows.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence

KEEP_BYTES = 64 * 1024


def run_bounded(command: Sequence[str], seconds: float, keep: int = KEEP_BYTES) -> str:
    """Run `command` to its end and return the last `keep` bytes of its stdout and stderr, as
    text. subprocess.CalledProcessError (its output's tail as `stderr`) when it exits non-zero;
    TimeoutError (an OSError) when it runs past `seconds`."""
    process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + seconds
    tail = bytearray()
    with process.stdout, selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue  # the deadline came: the loop's test ends it
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:  # every writer closed the pipe: the compiler is done
                break
            tail += chunk
            del tail[:-keep]  # only the last `keep` bytes: the end of a message says what failed
        try:
            status = process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            status = None
    if status is None:
        _kill_session(process)
        raise TimeoutError(f"{command[0]} ran past {seconds:g} s; killed")
    text = tail.decode("utf-8", errors="replace")
    if status != 0:
        raise subprocess.CalledProcessError(status, list(command), output=text, stderr=text)
    return text


def _kill_session(process: subprocess.Popen) -> None:
    """Kill the process and everything it started (its own session), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # gone already
        pass
    process.wait()
