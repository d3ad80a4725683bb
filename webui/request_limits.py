"""What one request, and a session's requests in all, may ask of this server: one owner of the checks.

Two doors let requests into an engine of the server: Add prompts (SessionManager.add_prompts,
typed in the page) and a Compare replay (webui/comparing.py, whose requests come from a trace,
perhaps a hostile file's). Both make sequences that are kept and drawn like a session's, so
both are held to the same limits, by check_requests below, with the same messages:

- a request's new tokens (--max-new-tokens), its samples (n) and its beam width (each at most
  Limits.max_samples), its prompt's characters where it was typed (Limits.max_prompt_chars);
- the sequences made in all (--max-sequences): each request makes max(n, beam width) of them
  before its first step, and each fork a user made one more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from webui.limits import LimitReached, Limits


@dataclass(frozen=True)
class Ask:
    """One request, as the limits see it."""

    label: str  # how a message names it: "prompt 2", "request #0 of the trace"
    max_tokens: int
    n: int = 1
    beam_width: int = 1
    prompt_chars: int | None = None  # None: a prompt of token ids (a trace's), not typed text

    @property
    def sequences(self) -> int:
        """The sequences it makes: its samples, or its beams (never both above 1)."""
        return max(self.n, self.beam_width)


def check_requests(limits: Limits, asks: Iterable[Ask], made_before: int = 0, forks: int = 0, advice: str = "") -> int:
    """The sequences `asks` and `forks` make, with `made_before` already made, checked against
    `limits` (LimitReached naming the request, what it asks for and the limit's flag; `advice`,
    what to do, follows the message of too many sequences in all). The caller checks before it
    makes anything, so a refusal changes nothing."""
    total = made_before + forks
    for ask in asks:
        if ask.prompt_chars is not None and ask.prompt_chars > limits.max_prompt_chars:
            raise LimitReached(f"{ask.label} has {ask.prompt_chars} characters; the limit is {limits.max_prompt_chars}")
        if ask.max_tokens > limits.max_new_tokens:
            raise LimitReached(f"{ask.label} asks for {ask.max_tokens} new tokens; this server allows "
                               f"{limits.max_new_tokens} (--max-new-tokens)")
        for name, value in (("samples", ask.n), ("beams", ask.beam_width)):
            if value > limits.max_samples:
                raise LimitReached(f"{ask.label} asks for {value} {name}; this server allows {limits.max_samples}")
        total += ask.sequences
    if total > limits.max_sequences:
        raise LimitReached(f"this would make {total} sequences; a session may make {limits.max_sequences} "
                           f"(--max-sequences){advice}")
    return total - made_before
