"""The breakpoints panel's values -> inspector breakpoints."""

from __future__ import annotations

import math

from inspector import (
    AtStep,
    Breakpoint,
    CopyOnWrite,
    EntropyAbove,
    KVUsageAbove,
    Preemption,
    PrefixCacheHit,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
)
from minillama import MAX_COUNT
from webui.form_numbers import typed_number

# Characters of a refused value quoted in a message (as webui/handlers.py quotes a field's): a
# field's 3,000 characters made a message of as many, in the status line and under the form.
QUOTED = 40
# The checkbox labels of the event breakpoints, and what each one is.
EVENT_BREAKPOINTS = {
    "a sequence finishes": SequenceFinished,
    "a preemption": Preemption,
    "a prefix-cache hit": PrefixCacheHit,
    "a copy-on-write": CopyOnWrite,
}


def breakpoints_from_form(
    events: list[str], at_step_text: str, pattern: str, entropy_text: str, prob_text: str, kv_text: str,
) -> list[Breakpoint]:
    """Every breakpoint the form sets (an empty field sets none). Raises ValueError naming a bad value."""
    at_step = _optional_number(at_step_text, "stop at step")
    entropy_above = _optional_number(entropy_text, "entropy above")
    prob_below = _optional_number(prob_text, "sampled probability below")
    kv_percent_above = _optional_number(kv_text, "KV usage above")
    unknown = [e for e in events if e not in EVENT_BREAKPOINTS]
    if unknown:
        raise ValueError(f"unknown breakpoint {str(unknown[0])[:QUOTED]!r}")
    # Each event once: the page sends each once, a script a thousand times (each then checked at
    # every step and listed in every message).
    breakpoints: list[Breakpoint] = [EVENT_BREAKPOINTS[e]() for e in dict.fromkeys(events)]
    if at_step is not None:
        if not math.isfinite(at_step) or at_step < 0 or at_step != int(at_step):
            raise ValueError(f"'stop at step' must be a whole number >= 0, got {at_step:g}")
        if at_step > MAX_COUNT:  # AtStep's own refusal would name the class, not the field
            raise ValueError(f"'stop at step' must be at most {MAX_COUNT:,}, got {at_step:g}")
        breakpoints.append(AtStep(int(at_step)))
    if pattern:
        breakpoints.append(TextMatches(pattern))  # RE2, length-bounded: a ValueError names a bad pattern
    if entropy_above is not None:
        if not math.isfinite(entropy_above) or entropy_above < 0:
            raise ValueError(f"'entropy above' must be a number >= 0 (nats), got {entropy_above}")
        breakpoints.append(EntropyAbove(entropy_above))
    if prob_below is not None:
        if not 0 < prob_below <= 1:
            raise ValueError(f"'sampled probability below' must be in (0, 1], got {prob_below}")
        breakpoints.append(SampledProbBelow(prob_below))
    if kv_percent_above is not None:
        if not 0 <= kv_percent_above < 100:
            raise ValueError(f"'KV usage above' must be a percentage in [0, 100), got {kv_percent_above}")
        breakpoints.append(KVUsageAbove(kv_percent_above))
    return breakpoints


def _optional_number(text: str | None, name: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    number = typed_number(text)
    if number is None:
        raise ValueError(f"'{name}' must be a number, got {text[:QUOTED]!r}")
    return number


def describe(breakpoint: Breakpoint) -> str:
    """A breakpoint in the form's words: what the armed list under the form shows."""
    events = {kind: label for label, kind in EVENT_BREAKPOINTS.items()}
    if type(breakpoint) in events:
        return events[type(breakpoint)]
    if isinstance(breakpoint, AtStep):
        return f"step {breakpoint.index} is reached"
    if isinstance(breakpoint, TextMatches):
        return f"the text matches /{breakpoint.pattern}/"
    if isinstance(breakpoint, EntropyAbove):
        return f"entropy is above {breakpoint.threshold:g} nats"
    if isinstance(breakpoint, SampledProbBelow):
        return f"a sampled token's probability is below {breakpoint.threshold:g}"
    if isinstance(breakpoint, KVUsageAbove):
        return f"KV usage is above {breakpoint.percent:g}%"
    return type(breakpoint).__name__
