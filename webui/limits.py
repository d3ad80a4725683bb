"""What one server lets its users do: the numbers that keep a shared LAN demo serving.

Each limit, when reached, gives the user a message that names it and what to do; nothing
else changes. The defaults suit the embedded 135M model on a laptop CPU."""

from __future__ import annotations

from dataclasses import dataclass, fields

from minillama import as_int, as_number


class LimitReached(Exception):
    """A server limit stops the action; the message says which and what to do."""


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 8  # browser sessions with their own engine and KV pool (or an uploaded trace) at once
    max_sessions_per_client: int = 4  # of those, held from one client address (one script cannot take them all)
    idle_minutes: float = 20.0  # a session unused this long is reclaimed (its trace is lost)
    max_prompts: int = 8  # prompts added in one go
    max_prompt_chars: int = 4000
    max_samples: int = 8  # samples (n) or beams (beam width) of one prompt
    max_new_tokens: int = 512  # per request
    max_sequences: int = 256  # sequences one session may ask for until Reset: prompts x samples (or beams), and forks
    max_kv_blocks: int = 1024  # per session's pool
    # Memory of a session's KV pool, whatever its block count and size: one client's four tabs
    # of 1,024 blocks of 32 tokens each took ~6 GB with the embedded model (46 KB a token in fp32).
    max_kv_mb: float = 512.0
    max_steps: int = 2000  # recorded steps per session (a trace this long is about 300 steps of work)
    trace_budget_mb: float = 128.0  # the recorder's memory budget per session
    upload_mb: int = 64  # largest trace file accepted for upload

    def __post_init__(self) -> None:
        """ValueError naming the first limit that is no positive number of its kind: a count a
        whole number (True, 2.5 or "8" is none), an amount finite (NaN passed `value <= 0`, and
        then every comparison with it: a NaN --max-kv-mb let any pool through)."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.type == "int":
                as_int(value, f"limit {spec.name}", ValueError)
            else:
                as_number(value, f"limit {spec.name}", ValueError)
