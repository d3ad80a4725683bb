"""Breakpoints: conditions on a recorded step that stop DebugSession.run.

Each is a small class with hits(trace, step) -> the reasons it fires at that step, each naming
the sequence it is about (none: it does not fire); check(trace, step) joins them into one
message, or None. Checks read only the trace, so they work the same on a live run and on a trace loaded from a
file (to find steps of interest without re-running). Most fire at every step where their
condition holds; SequenceFinished and TextMatches fire once, at the step where it happens.
Those that look at tokens take an optional seq_id to watch one sequence instead of all.

Each checks its fields when it is made (ArgumentError naming the field): a breakpoint that can
never fire (AtStep(-1), AtStep("1"), EntropyAbove(nan)) or that would fail only when first
checked, after the engine has stepped (EntropyAbove("x")), is refused at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import re2

from inspector.trace.arguments import ArgumentError, instance, number, optional_whole, shown, whole
from inspector.trace.model import StepRecord, TokenRecord, Trace

MAX_PATTERN_CHARS = 200  # TextMatches: a longer pattern is refused
MAX_PROGRAM_BYTES = 8 << 20  # TextMatches: RE2's memory for one compiled pattern


@dataclass(frozen=True)
class Hit:
    """One reason a breakpoint fires: a message, and the sequence it is about (None: the
    step as a whole, e.g. AtStep), so a debugger can show that sequence."""

    reason: str
    seq_id: int | None = None


class Breakpoint(ABC):
    def __post_init__(self) -> None:
        """Check the fields (the dataclasses below call this when made); here the one many
        share, seq_id: None (every sequence) or a sequence id."""
        if hasattr(self, "seq_id"):
            optional_whole(self.seq_id, f"{type(self).__name__}.seq_id")

    @abstractmethod
    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        """Why this breakpoint fires at `step`, one Hit per sequence concerned; [] when it does not."""

    def check(self, trace: Trace, step: StepRecord) -> str | None:
        """The reason this breakpoint fires at `step`, or None."""
        return "; ".join(hit.reason for hit in checked_hits(self, trace, step)) or None


def checked_hits(breakpoint: Breakpoint, trace: Trace, step: StepRecord) -> list[Hit]:
    """breakpoint.hits(trace, step), refused (ArgumentError) unless it is a list or tuple of
    Hit: a breakpoint of the caller's own that returns a str would fire on any non-empty one,
    and its reasons would fail to read (an AttributeError deep in the run)."""
    hits = breakpoint.hits(trace, step)
    if not isinstance(hits, (list, tuple)) or not all(isinstance(hit, Hit) for hit in hits):
        raise ArgumentError(f"{type(breakpoint).__name__}.hits() must return a list of Hit, got {shown(hits)}")
    return list(hits)


def _watched(step: StepRecord, seq_id: int | None) -> list[TokenRecord]:
    return [t for t in step.tokens if seq_id is None or t.seq_id == seq_id]


@dataclass
class AtStep(Breakpoint):
    index: int

    def __post_init__(self) -> None:
        whole(self.index, "AtStep.index")

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"reached step {self.index}")] if step.index == self.index else []


@dataclass
class SequenceFinished(Breakpoint):
    seq_id: int | None = None

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"#{t.seq_id} finished ({t.finish_reason})", t.seq_id)
                for t in _watched(step, self.seq_id) if t.finish_reason is not None]


@dataclass
class Preemption(Breakpoint):
    seq_id: int | None = None

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"#{s} was preempted to free KV blocks", s)
                for s in step.schedule.preempted if self.seq_id is None or s == self.seq_id]


@dataclass
class PrefixCacheHit(Breakpoint):
    seq_id: int | None = None

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"#{s.seq_id} reused {s.num_cached_tokens} cached tokens", s.seq_id)
                for s in step.schedule.scheduled
                if s.num_cached_tokens and (self.seq_id is None or s.seq_id == self.seq_id)]


@dataclass
class TextMatches(Breakpoint):
    """Fires at the step whose token makes a sequence's generated text match `pattern` (a
    regular expression, searched anywhere in the text) for the first time.

    The pattern may come from a browser, so it runs on RE2, whose matching time grows linearly
    with the text whatever the pattern: Python's `re` backtracks, and a pattern like
    `^([\\w\\s]+)+#` takes it seconds to minutes on a short line (catastrophic backtracking), with
    the GIL held, which would freeze every session of a shared server. RE2's syntax is Python's
    less backreferences and lookaround; its compiled program is capped at MAX_PROGRAM_BYTES.
    Raises ArgumentError (a ValueError) for a pattern that is no str, too long, invalid, or too large
    to compile."""

    pattern: str
    seq_id: int | None = None
    regex: re2._Regexp = field(init=False, repr=False, compare=False)
    # What the text of each sequence has been searched up to, in the last trace checked
    # (_first_match): a strong reference, so that its id is never another trace's.
    _scanned_trace: Trace | None = field(default=None, init=False, repr=False, compare=False)
    _scans: dict[int, _TextScan] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        instance(self.pattern, str, "TextMatches.pattern")
        if len(self.pattern) > MAX_PATTERN_CHARS:
            raise ArgumentError(f"the text pattern is {len(self.pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
        try:  # RE2 takes UTF-8: a lone surrogate (which a browser's JSON can carry) is not text
            self.pattern.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ArgumentError(f"the text pattern is not valid text: character {exc.start} is "
                                f"U+{ord(self.pattern[exc.start]):04X}, a lone surrogate") from None
        options = re2.Options()
        options.max_mem = MAX_PROGRAM_BYTES
        options.log_errors = False  # the error is raised, with its message, below
        try:
            self.regex = re2.compile(self.pattern, options)
        except re2.error as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
            raise ArgumentError(f"the text pattern {shown(self.pattern)} is not a regular expression RE2 accepts "
                                f"(no backreferences or lookaround): {reason}") from None

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        found = []
        for token in _watched(step, self.seq_id):
            if self._first_match(trace, token.seq_id, step.index) == step.index:
                match = self.regex.search(trace.text_until(token.seq_id, step.index))
                # Both quoted short: ".*" matches the whole text, thousands of characters in one line.
                found.append(Hit(f"#{token.seq_id}'s text matches {shown(self.pattern)}: {shown(match.group(0))}",
                                 token.seq_id))
        return found

    def _first_match(self, trace: Trace, seq_id: int, index: int) -> int | None:
        """The step whose token first made `seq_id`'s text match, if it is at or before step
        `index`; else None. Whether the text just before a token matched is not enough: a
        pattern anchored at the end ("Paris$") stops matching as the text grows and matches
        again later, and fired again there. The text is searched once per token, from the
        first, and only as far as a question needs (so steps may be checked in any order)."""
        if trace is not self._scanned_trace:
            self._scanned_trace, self._scans = trace, {}
        scan = self._scans.setdefault(seq_id, _TextScan())
        token_steps = trace.sequences[seq_id].token_steps
        while scan.first is None and scan.tokens < len(token_steps) and token_steps[scan.tokens] <= index:
            at = token_steps[scan.tokens]
            scan.text += trace.steps[at].token_of(seq_id).text_delta
            scan.tokens += 1
            if self.regex.search(scan.text):
                scan.first = at
        return scan.first if scan.first is not None and scan.first <= index else None


@dataclass
class _TextScan:
    """How far TextMatches has searched one sequence's text: its first `tokens` output tokens,
    whose text is `text`, and the step of the token that first made it match (None: none yet)."""

    tokens: int = 0
    text: str = ""
    first: int | None = None


@dataclass
class EntropyAbove(Breakpoint):
    """The model's next-token distribution is uncertain: entropy (nats) above `threshold`.
    Needs logits in the trace (not dropped by the memory budget)."""

    threshold: float
    seq_id: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        number(self.threshold, "EntropyAbove.threshold", 0.0)

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"#{t.seq_id}: entropy {t.logits.entropy:.3f} nats > {self.threshold}", t.seq_id)
                for t in _watched(step, self.seq_id)
                if t.logits is not None and t.logits.entropy > self.threshold]


@dataclass
class SampledProbBelow(Breakpoint):
    """A token the model found unlikely was drawn: its probability under the model is below
    `threshold`. Needs logits in the trace."""

    threshold: float
    seq_id: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        number(self.threshold, "SampledProbBelow.threshold", 0.0, 1.0, open_low=True)  # 0: never fires

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"#{t.seq_id} drew token {t.token_id} with probability {t.logits.sampled_prob:.4f} "
                    f"< {self.threshold}", t.seq_id)
                for t in _watched(step, self.seq_id)
                if t.logits is not None and t.logits.sampled_prob < self.threshold]


@dataclass
class KVUsageAbove(Breakpoint):
    """More than `percent` % of the KV blocks are in use at the step's end."""

    percent: float

    def __post_init__(self) -> None:
        number(self.percent, "KVUsageAbove.percent", 0.0, 100.0, open_high=True)  # 100: never fires

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        used = 100.0 * step.kv.usage
        return [Hit(f"KV cache {used:.1f}% in use > {self.percent}%")] if used > self.percent else []


@dataclass
class CopyOnWrite(Breakpoint):
    """A fork copied the block where its shared prefix ends (the vLLM paper's copy-on-write):
    fires at the step before or during which the copy was made, once per copy."""

    seq_id: int | None = None  # watch the forks of this sequence (as parent or as child)

    def hits(self, trace: Trace, step: StepRecord) -> list[Hit]:
        return [Hit(f"#{fork.child_id} <- #{fork.parent_id}: copy on write of block {copy.src_block}'s "
                    f"{copy.num_slots} slot(s) into block {copy.dst_block}", fork.child_id)
                for fork, copy in trace.copies_at(step.index)
                if self.seq_id is None or self.seq_id in (fork.child_id, fork.parent_id)]
