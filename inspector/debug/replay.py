"""replay: run a recorded trace's requests again, under changed engine settings or each alone.

    from inspector import load, replay
    a = load("run.mltrace")
    b = replay(a, num_kv_blocks=12)           # the same requests with a smaller KV pool
    c = replay(a, alone=True)                 # each request in a run of its own, one after another
    d = replay(a, engine=engine, enable_prefix_caching=False)   # on weights already loaded

What is replayed, from the trace: each request's prompt (its token ids) and sampling params,
seed included, added before the same step as in the recording; each fork a user made, before
the same step, with the same forced tokens, as soon as its parent (replayed) has the tokens it
forks from; each abort, before the same step. Samples (n > 1) and beams are not replayed one by
one: the engine makes them again from their request, and an abort or a user's fork that names
one is pointed at the replay's own (the sample of the same index, the beam forked from the same
parent at the same token). The engine starts from the recorded settings (inspector/trace/model.py's
EngineInfo: KV blocks, block size, batch limits, prefix caching, attention backend, dtype,
CUDA graphs, fused ops, seed, device), and `overrides` change any of them (EngineConfig's field
names).

`alone`: each request (with the forks of its lineage) runs by itself, one after another, in
one engine and one trace: the batch-invariance question ("does it say the same alone?"). The
engine is the same, so the prefix cache may serve a later request what an earlier one left.
A request without a seed draws from the engine's shared generator, whose draws depend on
everything drawn before: only greedy and seeded requests can be expected to repeat.

The model must be the one recorded: its shape and its weights fingerprint
(inspector/record/fingerprint.py) are compared before any step runs, and a different model
is refused with ConfigError. A trace older than schema 4 has no fingerprint: it is refused
unless `force` (which also overrides a fingerprint mismatch, never a shape mismatch); the
settings it lacks take EngineConfig's defaults, and `on_note` is told which.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path

from tqdm import tqdm

from inspector.debug.session import DebugSession
from inspector.record.recorder import CapturePolicy
from inspector.trace.arguments import ArgumentError, file_path, flag, instance, optional_whole, shown
from inspector.trace.model import Event, ForkRecord, ModelInfo, SequenceRecord, Trace
from minillama import ConfigError, EngineConfig, InvalidRequestError, LLMEngine, SamplingParams

# The model's sizes compared before a replay (None in a trace older than schema 4: not compared).
_SHAPE = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "hidden_size", "intermediate_size")


def replay(
    trace: Trace,
    model: str | Path | None = None,
    engine: LLMEngine | None = None,
    *,
    alone: bool = False,
    force: bool = False,
    policy: CapturePolicy | None = None,
    progress: bool = True,
    on_note: Callable[[str], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    step_lock: AbstractContextManager | None = None,
    max_steps: int | None = None,
    **overrides: object,
) -> Trace:
    """Replay `trace` (see the top) and return the new run's trace.

    model: the model directory to load (None: the embedded model), unless `engine` is given,
    whose weights are then shared (a new engine over them, with its own KV pool; the device,
    dtype, attention backend and fused ops are the given engine's, built into its model). overrides:
    EngineConfig fields to change. policy: what to record (default: no attention, the logits'
    top-k as recorded). progress: a progress bar on stderr, when it is a terminal.
    Raises ConfigError (a different model, a bad setting) and InvalidRequestError (a request
    the new settings cannot take) before any step runs.

    For a server that replays beside its users (the web UI's Compare): on_step(done, total) is
    called after each step (total: the recorded run's steps, a guide, not a bound); step_lock is
    held around each step and fork, since engines sharing one model must not step at the same
    time (its lock, taken and let go step by step, lets other users' steps in between); and
    max_steps bounds the replay (ConfigError when it would run longer).

    ArgumentError, before anything loads or runs, for an argument of the wrong type (an engine
    that is no LLMEngine, a max_steps that is not an integer >= 1, ...)."""
    _check_arguments(trace, model, engine, alone, force, policy, progress, on_note, on_step, step_lock, max_steps)
    note = on_note or (lambda message: None)
    config = replay_config(trace, overrides, note)
    built_here = engine is None
    if built_here:
        engine = LLMEngine.from_pretrained(model, config)
    else:
        built = _built_with(engine)
        clashes = [f"{name}={overrides[name]!r}" for name in built if name in overrides and overrides[name] not in built[name]]
        if clashes:
            raise ConfigError(f"{', '.join(clashes)}: the given engine's model was built otherwise; "
                              "replay without an engine to load the model with it")
        # sharing_weights keeps the model's device, dtype and attention; its fused ops too.
        engine = LLMEngine.sharing_weights(engine, dataclasses.replace(config, fused_ops=engine.config.fused_ops))
    # An engine built here is closed here, refused or done: its tensor-parallel workers, if any,
    # would otherwise live on until the garbage collector found it.
    with closing(engine) if built_here else nullcontext():
        session = DebugSession(engine, policy or CapturePolicy(attention=False, top_k=recorded_top_k(trace)))
        check_same_model(trace.model, session.trace.model, force)
        roots = [s for s in trace.sequences.values() if s.parent_id is None]
        for seq in roots:  # every request checked before any runs: a bad one is reported in a moment
            try:
                engine.check_request(list(seq.prompt_ids), _params(seq))
            except InvalidRequestError as error:
                raise InvalidRequestError(f"request #{seq.seq_id} of the trace: {error}") from None
        actions = _actions(trace)
        total = len(trace.steps)
        with tqdm(total=total, desc="replaying", unit="step", disable=None if progress else True) as bar:
            def stepped() -> None:
                bar.update()
                done = session.recorder.num_steps
                if max_steps is not None and done >= max_steps and engine.has_unfinished():
                    raise ConfigError(f"the replay has run {done} steps, its limit, with requests still unfinished")
                if on_step is not None:
                    on_step(done, total)

            driver = _Driver(session, trace, step_lock or nullcontext(), stepped, note)
            if not alone:
                driver.run(actions)
            else:
                lineage = lineage_roots(trace)
                for root in sorted(roots, key=lambda s: s.seq_id):  # in the order they were added
                    driver.run([(step - root.added_step, a) for step, a in actions if lineage[_seq_of(a)] == root.seq_id])
        return session.trace


def _check_arguments(trace: object, model: object, engine: object, alone: object, force: object, policy: object,
                     progress: object, on_note: object, on_step: object, step_lock: object, max_steps: object) -> None:
    """replay()'s arguments but the overrides (EngineConfig checks those, naming each)."""
    instance(trace, Trace, "trace")
    if model is not None:
        file_path(model, "model")
    instance(engine, LLMEngine, "engine", optional=True)
    for name, value in (("alone", alone), ("force", force), ("progress", progress)):
        flag(value, name)
    instance(policy, CapturePolicy, "policy", optional=True)
    for name, value in (("on_note", on_note), ("on_step", on_step)):
        if value is not None and not callable(value):
            raise ArgumentError(f"{name} must be a function or None, got {shown(value)}")
    instance(step_lock, AbstractContextManager, "step_lock", optional=True)
    optional_whole(max_steps, "max_steps", minimum=1)


def replay_config(trace: Trace, overrides: dict[str, object], note: Callable[[str], None]) -> EngineConfig:
    """The recorded settings with `overrides` applied, validated (ConfigError names a bad one)."""
    known = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown engine setting(s) {', '.join(unknown)}; EngineConfig has {', '.join(sorted(known))}")
    e, defaults = trace.engine, EngineConfig()
    lacking = [name for name in ("enforce_eager", "fused_ops", "seed") if getattr(e, name) is None and name not in overrides]
    if lacking:
        note(f"the trace does not record {', '.join(lacking)} (schema before 4): replayed with the defaults")
    recorded = dict(
        device=e.device, dtype=trace.model.dtype, attention=e.attention, block_size=e.block_size,
        num_kv_blocks=e.num_blocks, max_num_seqs=e.max_num_seqs, max_num_batched_tokens=e.max_num_batched_tokens,
        max_model_len=e.max_model_len, enable_prefix_caching=e.prefix_caching,
        enforce_eager=defaults.enforce_eager if e.enforce_eager is None else e.enforce_eager,
        fused_ops=defaults.fused_ops if e.fused_ops is None else e.fused_ops,
        seed=defaults.seed if e.seed is None else e.seed,
    )
    if ("kv_cache_memory_gb" in overrides or "gpu_memory_utilization" in overrides) and "num_kv_blocks" not in overrides:
        overrides = {**overrides, "num_kv_blocks": None}  # the pool sized from memory, as asked
    # One EngineConfig of the recorded settings and the overrides together: its check (when made)
    # sees the values the replay will run with, so an override can mend a recorded value.
    config = EngineConfig(**{**recorded, **overrides})
    config.validate()
    return config


def check_same_model(recorded: ModelInfo, mine: ModelInfo, force: bool) -> None:
    """Refuse (ConfigError) a model other than the recorded one: a different shape always, a
    different or unknown weights fingerprint unless `force`."""
    for name in _SHAPE:
        a, b = getattr(recorded, name), getattr(mine, name)
        if a is not None and a != b:
            raise ConfigError(f"a different model: the trace was recorded on {recorded.name}, this replay runs "
                              f"{mine.name} ({name} {a} against {b}); replay on the trace's model (--model DIR)")
    if force:
        return
    if recorded.weights_fingerprint is None:
        raise ConfigError(f"the trace records no weights fingerprint (a file of schema before 4), so the model "
                          f"({recorded.name}) cannot be checked; pass --force (force=True) to replay it anyway")
    if mine.weights_fingerprint is None:
        raise ConfigError("this replay's weights have no fingerprint (with tensor parallelism each process holds "
                          f"only slices of them), so they cannot be checked against the trace's ({recorded.name}); "
                          "pass --force (force=True) to replay anyway, or replay without tensor parallelism")
    if recorded.weights_fingerprint != mine.weights_fingerprint:
        raise ConfigError(f"different weights: the trace's model ({recorded.name}) has fingerprint "
                          f"{recorded.weights_fingerprint}, this one ({mine.name}) {mine.weights_fingerprint}; "
                          "replay on the model the trace was recorded with (--model), or pass --force")


Action = SequenceRecord | ForkRecord | Event  # a request to add, a user's fork to make, an abort


def _actions(trace: Trace) -> list[tuple[int, Action]]:
    """What the replay does before which step: the requests added (those without a parent),
    the forks users made and the requests they aborted, in the order the trace's events record."""
    actions: list[tuple[int, Action]] = []
    for e in trace.events:
        if e.kind == "add" and trace.sequences[e.seq_id].parent_id is None:
            actions.append((e.step, trace.sequences[e.seq_id]))
        elif e.fork is not None and e.fork.cause == "user":
            actions.append((e.step, e.fork))
        elif e.kind == "abort" and e.seq_id is not None:
            actions.append((e.step, e))
    return actions


def _seq_of(action: Action) -> int:
    return action.child_id if isinstance(action, ForkRecord) else action.seq_id


class _Driver:
    """Runs actions against the replay's session: each before its step, every step (and fork)
    under the step lock, `stepped` told after each step."""

    def __init__(self, session: DebugSession, trace: Trace, lock: AbstractContextManager,
                 stepped: Callable[[], None], note: Callable[[str], None]):
        self.session, self.trace, self.lock, self.stepped, self.note = session, trace, lock, stepped, note
        self.made = _MadeForks(session.trace)
        self.recorded_forks = {e.fork.child_id: e.fork for e in trace.events if e.fork is not None}
        self.unfound: dict[int, int] = {}  # a recorded id -> the replay's event count when last not found

    def run(self, actions: list[tuple[int, Action]]) -> None:
        """Run until every request has finished, each action taken before its step (counted from
        this call's first), in order. A fork whose parent does not have its tokens yet waits for
        them (and the forks after it with it; the requests after it do not wait)."""
        session = self.session
        engine, start = session.engine, session.recorder.num_steps
        queue: deque[tuple[int, Action]] = deque(actions)
        due: deque[ForkRecord] = deque()  # forks whose step has come, in order
        replayed: dict[int, int] = {}  # the trace's sequence id -> the replay's
        while True:
            now = session.recorder.num_steps - start
            if not engine.has_unfinished() and queue:  # idle until the next action: it happens now
                now = max(now, queue[0][0])
            self._make_forks(due, replayed)
            while queue and queue[0][0] <= now:
                action = queue.popleft()[1]
                if isinstance(action, SequenceRecord):
                    replayed[action.seq_id] = engine.add_request(list(action.prompt_ids), _params(action))
                    session.recorder.register(replayed[action.seq_id], chat=action.chat, prompt_text=action.prompt_text)
                elif isinstance(action, ForkRecord):
                    due.append(action)
                else:
                    self._abort(action, due, replayed)
                self._make_forks(due, replayed)
            if not engine.has_unfinished():
                if queue:
                    continue
                for fork in due:
                    why = ("its parent finished before it had that many tokens" if self._find(fork.parent_id, replayed)
                           is not None else "the replay made no such parent (a sample or a beam of another run)")
                    self.note(f"fork #{fork.child_id} of #{fork.parent_id} at token {fork.position} not replayed: {why}")
                return
            with self.lock:
                record = session.step()
            if record is None:
                raise ConfigError("the engine could not schedule any request under these settings")
            self.stepped()

    def _abort(self, event: Event, due: deque[ForkRecord], replayed: dict[int, int]) -> None:
        """Repeat an abort: of the replay's own sequence for the one the trace names (a request,
        a user's fork, or a sample or beam the engine made again); of a user's fork still waiting
        for its parent's tokens, by never making it. (Before, an abort naming a sample or a beam
        was taken for an unmade fork and dropped: the sample ran on to its end in the replay.)"""
        mine = self._find(event.seq_id, replayed)
        if mine is not None:
            # The trace records an abort for each beam a search's abort stopped, after the one
            # aborted: those the replay has stopped already, as the run did, without a call of
            # its own (engine.abort of a search's request id would forget every beam, which the
            # run kept: a user's fork of one, after, found no parent). The one aborted may have
            # ended already (a pruned beam its search kept): it is aborted again, as in the run.
            if self.session.trace.sequences[mine].finish_reason != "abort":
                self.session.abort(mine)
        elif (waiting := next((f for f in due if f.child_id == event.seq_id), None)) is not None:
            due.remove(waiting)
        else:
            self.note(f"abort of #{event.seq_id} not replayed: the replay made no such sequence")

    def _find(self, seq_id: int, replayed: dict[int, int]) -> int | None:
        """The replay's id of the trace's sequence `seq_id`, once the replay has it: a request or a
        user's fork as made; a sample or a beam as the engine made it again, found by what makes
        it that one (remembered in `replayed`). None while (or if ever) the replay has none."""
        if seq_id in replayed:
            return replayed[seq_id]
        # Not found, and the replay has made nothing since it was last looked for: not found
        # again, without walking the chain up (a fork waiting for it looks each step).
        if self.unfound.get(seq_id) == len(self.session.trace.events):
            return None
        wanted, chain = seq_id, []  # chain: the unfound, from seq_id up (a beam's parent may be a beam)
        while seq_id not in replayed:
            fork = self.recorded_forks.get(seq_id)
            if fork is None or fork.cause == "user" or fork.parent_id >= seq_id:  # a parent's id is below its child's
                self.unfound[wanted] = len(self.session.trace.events)
                return None
            chain.append((seq_id, fork))
            seq_id = fork.parent_id
        for child, fork in reversed(chain):  # down from the one found, in a loop: a chain may be thousands long
            key = _fork_key(fork, self.trace.sequences[child].sample_index, replayed[fork.parent_id])
            found = self.made.take(key)
            if found is None:
                self.unfound[wanted] = len(self.session.trace.events)
                return None
            replayed[child] = found
        return replayed[wanted]

    def _make_forks(self, due: deque[ForkRecord], replayed: dict[int, int]) -> None:
        """Make the due forks, in order, while the first one's parent has the tokens it forks from."""
        while due and self._can_fork(replayed, due[0]):
            fork = due.popleft()
            child = self.trace.sequences[fork.child_id]
            with self.lock:  # a fork copies K/V on the device the model shares
                replayed[fork.child_id] = self.session.fork(replayed[fork.parent_id], fork.position, fork.forced_ids,
                                                            _params(child))

    def _can_fork(self, replayed: dict[int, int], fork: ForkRecord) -> bool:
        """Has the fork's parent (found in the replay, a sample's or a beam's too) the tokens it forks from?"""
        if self._find(fork.parent_id, replayed) is None or replayed[fork.parent_id] not in self.session.engine.sequences:
            return False  # not made (yet), or forgotten (aborted) under other settings: noted at the end
        parent = self.session.engine.request(replayed[fork.parent_id])
        return len(parent.prompt_token_ids) + len(parent.output_token_ids) >= fork.position


# What makes a sample or a beam the one it is, in either run: a sample, its request and index;
# a beam, the beam it was forked from, where, and the token it was forced to take.
_ForkKey = tuple[str, int, int, tuple[int, ...]]


def _fork_key(fork: ForkRecord, sample_index: int, parent: int) -> _ForkKey:
    """`fork`'s key, its parent given as the run's own id (the replay's for a recorded fork)."""
    if fork.cause == "sample":
        return ("sample", parent, sample_index, ())
    return (fork.cause, parent, fork.position, tuple(fork.forced_ids))


class _MadeForks:
    """The samples and beams a run made, by key, read from its trace's events as they grow (each
    event read once, so a replay of many forks does not rescan them each time it looks one up)."""

    def __init__(self, trace: Trace):
        self.trace, self.read = trace, 0
        self.by_key: dict[_ForkKey, list[int]] = {}

    def take(self, key: _ForkKey) -> int | None:
        """The first fork made under `key` not taken yet (each is one recorded sequence's, found
        once and remembered: no set of the ids taken is built per look-up, which a fork waiting
        for its parent made once per step)."""
        events = self.trace.events
        for event in events[self.read:]:
            if event.fork is not None and event.fork.cause != "user":
                record = self.trace.sequences[event.fork.child_id]
                self.by_key.setdefault(_fork_key(event.fork, record.sample_index, event.fork.parent_id), []).append(
                    event.fork.child_id)
        self.read = len(events)
        made = self.by_key.get(key)
        return made.pop(0) if made else None


def _built_with(engine: LLMEngine) -> dict[str, set[object]]:
    """The settings built into an engine's model (its weights' device and dtype, its kernels),
    which an engine sharing the weights keeps: each as configured and as resolved ("auto", "cpu")."""
    c = engine.config
    return {"device": {c.device, str(engine.device)}, "dtype": {c.dtype, str(engine.dtype).removeprefix("torch.")},
            "attention": {c.attention, engine.attention_backend}, "fused_ops": {c.fused_ops},
            "tensor_parallel_size": {c.tensor_parallel_size}}  # the weights are sliced at load


def lineage_roots(trace: Trace) -> dict[int, int]:
    """Each sequence id -> the request (no parent) its lineage starts from."""
    roots: dict[int, int] = {}
    for seq_id in sorted(trace.sequences):  # a child's id is above its parent's
        parent = trace.sequences[seq_id].parent_id
        roots[seq_id] = seq_id if parent is None else roots.get(parent, parent)
    return roots


def _params(seq: SequenceRecord) -> SamplingParams:
    return SamplingParams(**{**seq.params, "stop_token_ids": tuple(seq.params["stop_token_ids"])})


def recorded_top_k(trace: Trace) -> int:
    """How many tokens each logits summary of the trace holds (the recorder's default if none)."""
    summary = next((t.logits for step in trace.steps for t in step.tokens if t.logits is not None), None)
    return len(summary.top_ids) if summary is not None else CapturePolicy().top_k
