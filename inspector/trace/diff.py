"""diff_traces: where and how two runs of the same requests differ (python -m inspector diff).

Two traces of the same requests (a recording and its replay, inspector/debug/replay.py, or two
recordings) are compared request by request. Sequence ids differ between runs (a request run
alone gets another id), so a request is matched by its lineage instead (request_keys): the
k-th request added (no parent), then within it a user's fork by where it forked and its forced
tokens, a sample by its index, a beam by the order the search made it.

For each matched request: are its tokens equal; the first output position where they differ
(or where one side stopped), with each side's recorded top-k there; and for every position up
to that one, how far the two next-token distributions moved: the largest |delta log p| over the
tokens both sides' top-k hold (a summary keeps probabilities, not logits: log p is the logit
less a per-row constant, so its deltas are the logits' up to that shift), the change of entropy,
and the drawn token's probability on each side. After the first divergent token the two
sequences continue from different texts, and their distributions are no longer comparable.

The schedule of each request on each side (steps waited, prefill chunks, preemptions, prefix
cache hits, and why: the causes the scheduler recorded) and the runs' timings, side by side. Everything is plain data, for the command
line's text (diff_text.py) and a UI alike; no engine is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from inspector.trace.arguments import instance
from inspector.trace.model import LogitsSummary, ScheduledRecord, SequenceRecord, StepRecord, Trace
from inspector.trace.why_text import chunk_text, preempt_text, prefix_text, wait_text

# A request's lineage key: a number, the same in both traces for the same lineage (Lineages).
Key = int
# A label names the request, then at most this many of the last forks down to it: a chain of
# 2,000 forks (one small file) made labels 2,000 parts long, 44 MB of `diff` output.
LABEL_FORKS = 2


@dataclass
class TopToken:
    token_id: int
    text: str
    prob: float  # under the model


@dataclass
class Divergence:
    """The first output position whose tokens differ; a side that had stopped has None."""

    position: int  # index in the output (0: the first generated token)
    step_a: int | None
    step_b: int | None
    token_a: int | None
    token_b: int | None
    text_a: str | None
    text_b: str | None
    top_a: list[TopToken]  # empty when that side did not record the logits
    top_b: list[TopToken]


@dataclass
class TokenDelta:
    """One output position both sides generated, up to the first divergence (included)."""

    position: int
    step_a: int
    step_b: int
    max_abs_delta_logp: float | None  # over the tokens in both top-k; None: logits not recorded on a side
    delta_entropy: float | None  # b - a, nats
    sampled_prob_a: float | None
    sampled_prob_b: float | None


@dataclass
class Schedule:
    """How the scheduler treated a request in one run."""

    added_step: int
    first_step: int | None  # the first step that ran it (None: never ran)
    waiting_steps: int  # steps it spent in the waiting queue (before admission or after a preemption)
    prefill_chunks: int  # steps that computed part of its prompt (>1: chunked, or recomputed after a preemption)
    preemptions: int
    cached_tokens: int  # prompt tokens the prefix cache served
    last_step: int | None  # the step of its last token
    ran_steps: list[int]  # every step that computed any of its tokens (prefill chunks, decodes)
    token_steps: list[int]  # the step that sampled each output token
    latency_ms: float | None  # from the start of its first step to the end of its last token's
    # Why it was treated so, from the recorded causes (why_text.py): "step 13: preempted: ...",
    # in step order; a run of steps waiting for the same reason is one line ("steps 3-7: ...").
    causes: list[str] = field(default_factory=list)


@dataclass
class RequestDiff:
    key: Key
    label: str  # the key in words: "request 2", "request 0 / fork at token 5 [65] / sample 1"
    seq_a: int | None  # None: the request is missing from that run
    seq_b: int | None
    prompt_text: str
    same_prompt: bool  # False: not the same request (the two traces are of different runs)
    tokens_a: list[int]
    tokens_b: list[int]
    finish_a: str | None
    finish_b: str | None
    divergence: Divergence | None  # None when the tokens are equal
    deltas: list[TokenDelta]
    schedule_a: Schedule | None
    schedule_b: Schedule | None

    @property
    def equal(self) -> bool:
        return self.seq_a is not None and self.seq_b is not None and self.same_prompt and self.tokens_a == self.tokens_b

    @property
    def max_abs_delta_logp(self) -> float | None:
        values = [d.max_abs_delta_logp for d in self.deltas if d.max_abs_delta_logp is not None]
        return max(values) if values else None

    @property
    def schedule_differs(self) -> bool:
        """Did the scheduler treat the request differently: other counts, or the same counts at
        other steps (a request that only ran later, behind another's recomputed prefill, has
        equal counts: its steps are what changed)?"""
        a, b = self.schedule_a, self.schedule_b
        if a is None or b is None:
            return a is not b
        return (a.waiting_steps, a.prefill_chunks, a.preemptions, a.cached_tokens, a.ran_steps, a.token_steps) != (
            b.waiting_steps, b.prefill_chunks, b.preemptions, b.cached_tokens, b.ran_steps, b.token_steps)

    @property
    def first_moved_token(self) -> int | None:
        """The first output position both runs sampled, at different steps; None when every
        such token came at the same step (the runs may still differ in length)."""
        a, b = self.schedule_a, self.schedule_b
        if a is None or b is None:
            return None
        return next((i for i, (x, y) in enumerate(zip(a.token_steps, b.token_steps)) if x != y), None)


@dataclass
class RunTimings:
    steps: int
    prefill_steps: int
    preemptions: int
    wall_ms: float  # the steps' wall time, summed
    forward_ms: float
    mean_step_ms: float


@dataclass
class TraceDiff:
    requests: list[RequestDiff]
    settings: list[tuple[str, str, str]]  # (setting, a, b) for each that differs
    same_weights: bool | None  # by their fingerprints; None when a side has none
    timings_a: RunTimings
    timings_b: RunTimings
    notes: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """Every request is in both runs with the same tokens."""
        return all(r.equal for r in self.requests)


def diff_traces(a: Trace, b: Trace) -> TraceDiff:
    instance(a, Trace, "a")
    instance(b, Trace, "b")
    lineages = Lineages()
    keys_a, keys_b = request_keys(a, lineages), request_keys(b, lineages)
    by_key_b = {key: seq_id for seq_id, key in keys_b.items()}
    schedules = _Schedules(a), _Schedules(b)
    requests = []
    for seq_id, key in keys_a.items():
        requests.append(_request_diff(a, b, schedules, key, lineages.labels[key], seq_id, by_key_b.pop(key, None)))
    for key, seq_id in by_key_b.items():  # only in b
        requests.append(_request_diff(a, b, schedules, key, lineages.labels[key], None, seq_id))
    fa, fb = a.model.weights_fingerprint, b.model.weights_fingerprint
    notes = []
    if a.model.name != b.model.name:
        notes.append(f"the models' names differ: {a.model.name!r} and {b.model.name!r}")
    unseeded = [r for r in requests if _draws_unseeded(a, r.seq_a) or _draws_unseeded(b, r.seq_b)]
    if unseeded:
        notes.append(f"{len(unseeded)} request(s) sample without a seed ({unseeded[0].label} first): their draws "
                     "depend on everything drawn before them in their run, so they need not repeat; give them a seed")
    return TraceDiff(requests, _settings(a, b), None if fa is None or fb is None else fa == fb, _timings(a),
                     _timings(b), notes)


def _draws_unseeded(trace: Trace, seq_id: int | None) -> bool:
    """Does the request draw at random from its run's shared generator (no seed of its own)?"""
    if seq_id is None:
        return False
    params = trace.sequences[seq_id].params
    return params["temperature"] > 0 and params["seed"] is None and params.get("beam_width", 1) == 1


class Lineages:
    """The lineage keys of two traces: the k-th request added (no parent), then within it a
    user's fork by where it forked and its forced tokens, a sample by its index, a beam by the
    order the search made it; a fork's part ends with how many twins (the same part under the
    same parent) came before it.

    Each key is a number, interned from (its parent's number, its part), so that the same
    lineage gets the same number in either trace, and a key costs the same however deep its
    fork lies (a key spelled out as the tuple of every part down to it made a chain of D forks
    cost D**2 to build, hash and label)."""

    def __init__(self) -> None:
        self._keys: dict[tuple, Key] = {}  # (parent key or None, part, twin) -> key
        self.labels: list[str] = []  # key -> the lineage in words
        self._tails: list[tuple[str, int, tuple[str, ...]]] = []  # key -> (its request's words, depth, last parts)

    def root(self, k: int) -> Key:
        return self._key((None, ("request", k), 0), (f"request {k}", 0, ()))

    def fork(self, parent: Key, part: tuple, twin: int) -> Key:
        request, depth, tail = self._tails[parent]
        return self._key((parent, part, twin), (request, depth + 1, (*tail, _part_words(part, twin))[-LABEL_FORKS:]))

    def _key(self, lineage: tuple, tail: tuple[str, int, tuple[str, ...]]) -> Key:
        key = self._keys.get(lineage)
        if key is None:
            key = self._keys[lineage] = len(self.labels)
            request, depth, parts = tail
            skipped = [f"... {depth - len(parts):,} fork(s) ..."] if depth > len(parts) else []
            self.labels.append(" / ".join([request, *skipped, *parts]))
            self._tails.append(tail)
        return key


def request_keys(trace: Trace, lineages: Lineages) -> dict[int, Key]:
    """Each sequence id -> its lineage key (Lineages), in sequence id order."""
    keys: dict[int, Key] = {}
    twins: dict[tuple, int] = {}
    roots = 0
    for seq_id in sorted(trace.sequences):  # a child's id is above its parent's
        seq = trace.sequences[seq_id]
        if seq.parent_id is None or seq.parent_id not in keys:
            keys[seq_id] = lineages.root(roots)
            roots += 1
            continue
        base = (keys[seq.parent_id], _fork_part(seq))
        twins[base] = twins.get(base, -1) + 1
        keys[seq_id] = lineages.fork(*base, twins[base])
    return keys


def _part_words(part: tuple, twin: int) -> str:
    """A fork's part of a key in words: "fork at token 5 [65, 66]", "sample 1", "beam 2"."""
    kind, *rest = part
    if kind == "fork":
        return f"fork at token {rest[0]} {list(rest[1])}" + (f" #{twin + 1}" if twin else "")
    if kind == "sample":
        return f"sample {rest[0]}"
    return f"beam {twin}"


def _fork_part(seq: SequenceRecord) -> tuple:
    if seq.fork_cause == "sample":
        return ("sample", seq.sample_index)
    if seq.fork_cause == "beam":  # beams are told apart by their twin count: the order the search made them
        return ("beam",)
    return ("fork", seq.fork_position, tuple(seq.prompt_ids[seq.fork_position or 0:]))


def _request_diff(a: Trace, b: Trace, schedules: tuple[_Schedules, _Schedules], key: Key, label: str,
                  seq_a: int | None, seq_b: int | None) -> RequestDiff:
    sa = a.sequences[seq_a] if seq_a is not None else None
    sb = b.sequences[seq_b] if seq_b is not None else None
    tokens_a, tokens_b = (s.output_ids if s is not None else [] for s in (sa, sb))
    deltas, divergence = [], None
    if sa is not None and sb is not None:
        n = min(len(tokens_a), len(tokens_b))
        first = next((i for i in range(n) if tokens_a[i] != tokens_b[i]), n)
        for i in range(min(first + 1, n)):
            deltas.append(_token_delta(a, b, sa, sb, i))
        if tokens_a != tokens_b:
            divergence = _divergence(a, b, sa, sb, first)
    same_prompt = sa is None or sb is None or sa.prompt_ids == sb.prompt_ids
    return RequestDiff(key, label, seq_a, seq_b, (sa or sb).prompt_text, same_prompt, list(tokens_a), list(tokens_b),
                       sa.finish_reason if sa else None, sb.finish_reason if sb else None, divergence, deltas,
                       schedules[0].of(sa) if sa else None, schedules[1].of(sb) if sb else None)


def _summary(trace: Trace, seq: SequenceRecord, position: int) -> LogitsSummary | None:
    token = trace.steps[seq.token_steps[position]].token_of(seq.seq_id)
    return token.logits if token is not None else None


def _token_delta(a: Trace, b: Trace, sa: SequenceRecord, sb: SequenceRecord, i: int) -> TokenDelta:
    ga, gb = _summary(a, sa, i), _summary(b, sb, i)
    delta = TokenDelta(i, sa.token_steps[i], sb.token_steps[i], None, None,
                       ga.sampled_prob if ga else None, gb.sampled_prob if gb else None)
    if ga is not None and gb is not None:
        pb = dict(zip(gb.top_ids, gb.top_probs))
        both = [abs(math.log(p) - math.log(pb[t])) for t, p in zip(ga.top_ids, ga.top_probs)
                if t in pb and p > 0 and pb[t] > 0]
        delta.max_abs_delta_logp = max(both) if both else None
        delta.delta_entropy = gb.entropy - ga.entropy
    return delta


def _divergence(a: Trace, b: Trace, sa: SequenceRecord, sb: SequenceRecord, i: int) -> Divergence:
    def side(trace: Trace, seq: SequenceRecord) -> tuple[int | None, int | None, str | None, list[TopToken]]:
        if i >= len(seq.output_ids):
            return None, None, None, []
        step = seq.token_steps[i]
        token = trace.steps[step].token_of(seq.seq_id)
        g = token.logits
        top = [TopToken(*t) for t in zip(g.top_ids, g.top_texts, g.top_probs)] if g is not None else []
        return step, token.token_id, token.text_delta, top

    step_a, token_a, text_a, top_a = side(a, sa)
    step_b, token_b, text_b, top_b = side(b, sb)
    return Divergence(i, step_a, step_b, token_a, token_b, text_a, text_b, top_a, top_b)


class _Schedules:
    """Each sequence's scheduled entries and waiting steps, gathered in one pass over a trace's
    steps (per request, a pass each would cost steps x requests)."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.ran: dict[int, list[tuple[StepRecord, ScheduledRecord]]] = {}
        self.waited: dict[int, int] = {}
        self.causes: dict[int, list[tuple[int, int, str]]] = {}  # seq id -> (first step, last step, cause)
        for step in trace.steps:
            schedule = step.schedule
            for x in schedule.scheduled:
                self.ran.setdefault(x.seq_id, []).append((step, x))
            for seq_id in schedule.waiting:
                self.waited[seq_id] = self.waited.get(seq_id, 0) + 1
            for records, say in ((schedule.preemptions, preempt_text), (schedule.waits, wait_text),
                                 (schedule.prefix, prefix_text), (schedule.chunks, chunk_text)):
                for record in records:
                    self._cause(record.seq_id, step.index, say(record))

    def _cause(self, seq_id: int, index: int, text: str) -> None:
        causes = self.causes.setdefault(seq_id, [])
        if causes and causes[-1][2] == text and causes[-1][1] == index - 1:  # the same wait, one more step
            causes[-1] = (causes[-1][0], index, text)
        else:
            causes.append((index, index, text))

    def of(self, seq: SequenceRecord) -> Schedule:
        trace = self.trace
        ran = self.ran.get(seq.seq_id, [])
        prompt = len(seq.prompt_ids)
        first = ran[0][0] if ran else None
        last = trace.steps[seq.token_steps[-1]] if seq.token_steps else None
        latency = None
        if first is not None and last is not None:
            latency = last.timings.start_ms + last.timings.wall_ms - first.timings.start_ms
        return Schedule(
            added_step=seq.added_step,
            first_step=first.index if first else None,
            waiting_steps=self.waited.get(seq.seq_id, 0),
            prefill_chunks=sum(x.start < prompt for _, x in ran),
            preemptions=seq.num_preemptions,
            cached_tokens=sum(x.num_cached_tokens for _, x in ran),
            last_step=last.index if last else None,
            ran_steps=[step.index for step, _ in ran],
            token_steps=list(seq.token_steps),
            latency_ms=latency,
            causes=[f"step {a}: {text}" if a == b else f"steps {a}-{b}: {text}"
                    for a, b, text in self.causes.get(seq.seq_id, [])],
        )


def _settings(a: Trace, b: Trace) -> list[tuple[str, str, str]]:
    changed = [("dtype", a.model.dtype, b.model.dtype)]
    changed += [(f.name, getattr(a.engine, f.name), getattr(b.engine, f.name)) for f in fields(a.engine)]
    return [(name, str(x), str(y)) for name, x, y in changed if x != y]


def _timings(trace: Trace) -> RunTimings:
    steps = trace.steps
    wall = sum(s.timings.wall_ms for s in steps)
    return RunTimings(
        steps=len(steps),
        prefill_steps=sum(s.schedule.phase == "prefill" for s in steps),
        preemptions=sum(len(s.schedule.preempted) for s in steps),
        wall_ms=wall,
        forward_ms=sum(s.timings.forward_ms for s in steps),
        mean_step_ms=wall / len(steps) if steps else 0.0,
    )
