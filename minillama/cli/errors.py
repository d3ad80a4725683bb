"""How every command line of the project reports failure: one line on stderr, never a traceback.

    def main(argv: list[str] | None = None) -> int:
        return run_cli("python -m minillama", _main, argv)

- bad input (a MinillamaError, a flag argparse refuses, an OSError naming a file, or one of
  the `expected` types a command line adds): "prog: error: <message>", exit status 2;
- Ctrl-C: "prog: interrupted", exit status 130 (128 + SIGINT, what a shell reports);
- stdout's reader gone (`prog | head -1`): nothing more, exit status 141 (128 + SIGPIPE);
- stdout closed (`prog >&-`) or failing (`prog > /dev/full`): "prog: error: cannot write the
  output (stdout): <why>", exit status 2, never a silent success (output.py);
- anything else is a bug: "prog: internal error: <type>: <message>; run with --debug for the
  traceback", exit status 1.

A warning (a model setting the engine runs without, a CPU kernel that would not build) is one
line too, "prog: warning: <message>", and the command goes on.

With --debug among the arguments the exception propagates instead, traceback and all. A user
who mistyped a flag needs the one line; whoever debugs the engine needs the traceback.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch

from minillama.cli.output import Output
from minillama.errors import ConfigError, MinillamaError

DEBUG_FLAG = "--debug"

# Errors that come from the user's input or machine, not from a bug: a file that cannot be
# read or written, or a request for more memory than there is.
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError, torch.OutOfMemoryError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error raises ConfigError (which run_cli prints as
    one line) instead of printing the whole usage block and exiting on its own, and flags must
    be spelled out (no abbreviations: run_cli looks for --debug itself, and a prefix such as
    --deb would otherwise parse as it). Subparsers made with add_subparsers are of the same class."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's own signature
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # Every flag that takes a value is a _StoreOnce (argument groups share this registry).
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.stored: dict[argparse.Action, str] = {}

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's own signature
        self.stored = {}  # each parse starts with no flag given (given() parses the same argv again)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


class _StoreOnce(argparse._StoreAction):
    """argparse's "store", refusing a flag given twice: `--max-tokens 1 ... --max-tokens 50`
    ran with 50 and dropped the 1 unsaid, as a script that appends its own flags to a user's
    would. A flag meant to be repeated (--prompt) is an "append" action, not this one."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        stored = getattr(parser, "stored", None)
        if option_string is not None and stored is not None:
            if self in stored:
                raise argparse.ArgumentError(
                    self, f"given twice ({stored[self]} and {option_string} {_shown(values)}); give it once")
            stored[self] = f"{option_string} {_shown(values)}"
        super().__call__(parser, namespace, values, option_string)


def _shown(values: object) -> str:
    """A flag's parsed value as the message quotes it: a path or a prompt may be long or hold
    control characters, which printable_line escapes when the whole message is printed."""
    text = " ".join(map(str, values)) if isinstance(values, list) else str(values)
    return text if len(text) <= 40 else text[:39] + "…"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    # run_cli reads the flag from argv itself: even a usage error is then raised in full.
    parser.add_argument(DEBUG_FLAG, action="store_true", help="on an error, show the Python traceback")


def run_cli(
    prog: str,
    main: Callable[[list[str]], int | None],
    argv: Sequence[str] | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Run `main(argv)` and turn what it raises into one line and an exit status (see above)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv[: argv.index("--")] if "--" in argv else DEBUG_FLAG in argv
    stdout = sys.stdout
    _write_any_text(stdout)
    sys.stdout = Output(stdout)  # a failed write, or one to a closed stdout, names the output
    with warnings.catch_warnings():  # restores Python's own way of showing warnings on the way out
        warnings.showwarning = lambda message, *_, **__: _say(f"{prog}: warning: {printable_line(str(message))}")
        return _run(prog, main, argv, debug, stdout, expected)


def _run(
    prog: str, main: Callable[[list[str]], int | None], argv: list[str], debug: bool, stdout: object,
    expected: tuple[type[BaseException], ...],
) -> int:
    """run_cli's body: `main(argv)`'s status, or the line and status of what it raised."""
    try:
        status = main(argv) or 0
        # What stdout still buffers, written now: a failure is then reported as any other (at
        # exit, Python would print "Exception ignored" and exit 120).
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        if debug:
            raise
        _say(f"{prog}: interrupted")
        return 130
    except (MinillamaError, *ENVIRONMENT_ERRORS, *expected) as exc:
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            return SIGPIPE_STATUS  # stdout's reader left; any other pipe is bad input as below
        if debug:
            raise
        _say(f"{prog}: error: {one_line(exc)}")
        return 2
    except Exception as exc:
        if debug:
            raise
        _say(f"{prog}: internal error: {type(exc).__name__}: {one_line(exc)}; run with {DEBUG_FLAG} for the traceback")
        return 1
    finally:
        sys.stdout = stdout


# `prog | head -1`: head exits after its line, and the next write to stdout fails. A Unix tool is
# then stopped by SIGPIPE without a word (Python ignores the signal and raises BrokenPipeError
# instead); the status a shell reports for that is 128 + 13.
SIGPIPE_STATUS = 141


def _reader_gone() -> bool:
    """Is stdout a pipe whose reader has closed it? Then stdout is pointed at /dev/null, so that
    Python's own flush at exit does not print "Exception ignored ... BrokenPipeError"."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poll.poll(0))  # a pipe without readers
    except (AttributeError, OSError, ValueError):  # no stdout, or one with no file descriptor (a test's capture)
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return gone


def _write_any_text(stream: object) -> None:
    """Let `stream` take any text: a character its encoding lacks (an answer's "é" with
    PYTHONIOENCODING=ascii, or a Latin-1 locale) is written as an escape, \\xe9, instead of
    failing the command after its work is done."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="backslashreplace")
        except (OSError, ValueError):  # a closed or detached stream: print will say so
            pass


# The longest message a command prints: a message can quote its input, which may be huge.
MAX_MESSAGE_CHARS = 2000


def one_line(exc: BaseException) -> str:
    """The exception's message as one printable line (printable_line), or its type's name
    when it has no message."""
    return printable_line(str(exc)) or type(exc).__name__


def printable_line(text: str) -> str:
    """`text` as one printable line: line breaks folded into spaces, any other control
    character written as an escape (a message may quote a hostile file or request, and a raw
    ESC would drive the terminal), and at most MAX_MESSAGE_CHARS long."""
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
