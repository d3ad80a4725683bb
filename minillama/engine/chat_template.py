"""The model's chat template, run where it cannot stall the engine.

A chat template is a Jinja program shipped in the model folder (tokenizer_config.json or
chat_template.jinja). transformers runs it in Jinja's sandbox, which keeps it away from
Python's internals but not from looping for ever or building a gigabyte string:
`{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}` would hold
the engine's thread, and with it every request the engine serves, for hours.

So the template runs in a child process (chat_template_worker.py): one long-lived Python that
renders a conversation for each request and writes the text back. The parent waits at most
RENDER_TIMEOUT_S for the answer; past that it kills the child, refuses the request, and the
next render starts a fresh child. The child's memory and CPU time are capped (see the worker),
and an answer longer than MAX_ANSWER_BYTES is refused too. A well-behaved template renders in
about a millisecond; the first render of a process also waits for the child to import
transformers' template code (under a second).
"""

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from minillama.errors import InvalidRequestError

RENDER_TIMEOUT_S = 2.0  # a template's whole render; real ones take about a millisecond
STARTUP_TIMEOUT_S = 60.0  # the child's imports, on a loaded machine
MAX_ANSWER_BYTES = 32 << 20  # the rendered text as JSON; a long prompt is far below this
_WORKER = Path(__file__).with_name("chat_template_worker.py")


class _ChildFailed(Exception):
    """The child did not answer properly; the message says how (for the refusal's text)."""


def _checked_text(text: str) -> str:
    """The rendered text, which must be valid Unicode text as a prompt is (prompts.check_text):
    a template can write a lone surrogate ("{{ '\\udcff' }}"), and the tokenizer then failed
    with a TypeError, an internal error on every chat request."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f"this model's chat template rendered text that is not valid UTF-8 (character "
                                  f"{exc.start} is U+{ord(text[exc.start]):04X}, a lone surrogate); run without "
                                  "chat") from None
    return text


class ChatTemplateRunner:
    """Renders chat templates in one child process, one render at a time (thread-safe)."""

    def __init__(self, timeout_s: float = RENDER_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None

    def render(self, template: str, messages: list[dict], special_tokens: dict) -> str:
        """The template's text for `messages` with the generation prompt appended.
        Raises InvalidRequestError when the template fails, runs past the timeout, or renders
        too much; the engine is unchanged."""
        request = json.dumps({"template": template, "messages": messages, "special_tokens": special_tokens})
        with self._lock:
            try:
                child = self._started()
                self._send(child, request)
                answer = self._answer(child, self.timeout_s)
            except _ChildFailed as exc:
                self._stop()
                raise InvalidRequestError(f"this model's chat template {exc}; run without chat") from None
        if "error" in answer:
            raise InvalidRequestError(f"this model's chat template failed ({answer['error']}); run without chat")
        return _checked_text(answer["text"])

    def close(self) -> None:
        """End the child, if one runs (the next render starts another)."""
        with self._lock:
            self._stop()

    # -- the child --------------------------------------------------------------------------------

    def _started(self) -> subprocess.Popen:
        if self._child is not None and self._child.poll() is None:
            return self._child
        self._stop()
        try:
            child = subprocess.Popen([sys.executable, "-I", str(_WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        except OSError as exc:
            raise _ChildFailed(f"could not start its process ({exc})") from exc
        self._child = child
        if self._answer(child, STARTUP_TIMEOUT_S) != {"ready": True}:
            raise _ChildFailed("process started wrongly")
        return child

    def _stop(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            for pipe in (self._child.stdin, self._child.stdout):
                pipe.close()
            self._child = None

    @staticmethod
    def _send(child: subprocess.Popen, request: str) -> None:
        try:
            child.stdin.write(request.encode() + b"\n")
        except OSError as exc:  # BrokenPipeError: the child ended
            raise _ChildFailed(f"process ended ({exc})") from exc

    @staticmethod
    def _answer(child: subprocess.Popen, timeout_s: float) -> dict:
        """One JSON line from the child, read in chunks until the newline, `timeout_s` or the
        size limit, whichever comes first."""
        deadline = time.monotonic() + timeout_s
        line = bytearray()
        fd = child.stdout.fileno()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            # poll, not select: a server holding a thousand connections gives pipes descriptor
            # numbers past select's 1024.
            if remaining <= 0 or not _readable(fd, remaining):
                raise _ChildFailed(f"ran past {timeout_s:g} s (is it looping?)")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise _ChildFailed(f"process ended (exit status {child.wait()}: out of memory or CPU time?)")
            line += chunk
            if len(line) > MAX_ANSWER_BYTES:
                raise _ChildFailed(f"rendered more than {MAX_ANSWER_BYTES >> 20} MiB of text")
        return json.loads(line)


def _readable(fd: int, timeout_s: float) -> bool:
    """Whether `fd` has data (or its end) within `timeout_s`."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


_runner = ChatTemplateRunner()
atexit.register(_runner.close)


def render_chat_prompt(tokenizer, content: str) -> str:
    """`content` as the user's one message, wrapped in the tokenizer's chat template with the
    assistant's header after it: the text apply_chat_template(..., add_generation_prompt=True)
    gives, rendered by the child process."""
    if not tokenizer.chat_template:
        raise InvalidRequestError("this model's tokenizer has no chat template; run without chat")
    try:
        template = tokenizer.get_chat_template()
    except ValueError as exc:  # several named templates and none called "default"
        raise InvalidRequestError(f"this model's chat template cannot be chosen ({exc}); run without chat") from None
    return _runner.render(template, [{"role": "user", "content": content}], tokenizer.special_tokens_map)
