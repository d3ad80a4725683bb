"""Recorder: an engine observer that writes every step into a Trace.

    recorder = Recorder(engine, CapturePolicy(top_k=5))
    engine.add_observer(recorder)
    ... engine.step() ...
    recorder.trace          # inspector.trace.model.Trace, growing one StepRecord per step

What each hook records (observer order within a step: minillama/observe.py):
- on_schedule: the memory budget plans the step; the traced sequences' attention capture is
  planned (a prefill that has any runs eagerly; decode steps keep their CUDA graphs).
- on_attention (prefill) / on_queries (decode): each layer's post-RoPE Q and K rows of the
  traced sequences.
- on_layer: with the logit lens on, the residual stream after each layer.
- on_logits: the top-k summary of each sampling row (started; it waits for the drawn token),
  the scheduler's decision and queues, the KV cache snapshot. On a GPU the forward is still
  running then, and the host would only wait: work done here costs the engine nothing.
- on_step_end: only what cannot wait: the KV snapshot brought up to the step's end (the next
  step changes the cache), the attention and lens buffers read (the next step overwrites them).

The step's record is completed later (tokens, logits summaries with the drawn token's rank,
timings, and the StepRecord appended to the trace): in the next step's on_logits, during that
step's forward, or as soon as anyone reads `recorder.trace`, whichever comes first. Between
on_step_end and the next step the host is on the engine's critical path (the GPU waits for the
next forward); during the forward it is not. Reading `trace` always gives every step that ended.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from inspector.record.attention_capture import AttentionCapture
from inspector.record.budget import MemoryBudget
from inspector.record.causes import cause_records
from inspector.record.fingerprint import weights_fingerprint
from inspector.record.kv_snapshot import commit_filled_blocks, kv_snapshot, kv_snapshot_bytes
from inspector.record.lens_capture import LogitLensCapture
from inspector.record.logits_summary import LogitsSummariser, PendingLogits, finish, summary_bytes
from inspector.record.token_texts import TokenTexts, prompt_texts
from inspector.trace.arguments import ArgumentError, flag, instance, whole, whole_tuple
from inspector.trace.file_meter import FileMeter
from inspector.trace.model import (
    CopyRecord,
    EngineInfo,
    Event,
    ForkRecord,
    KVSnapshot,
    LogitLens,
    ModelInfo,
    ScheduledRecord,
    ScheduleRecord,
    SequenceRecord,
    StepRecord,
    Timings,
    TokenRecord,
    Trace,
)
from minillama import (
    AttentionMetadata,
    ForkEvent,
    LLMEngine,
    Observer,
    PruneEvent,
    SamplingParams,
    SchedulerOutput,
    StepResult,
)

MAX_BUDGET = 2**63 - 1  # bytes (an int64): far past any memory, and 2**70, a slip, is refused


@dataclass
class CapturePolicy:
    """What the recorder keeps beyond the always-recorded scheduler, tokens and KV snapshots."""

    attention: bool = True  # record Q/K of the traced sequences
    # Sequence ids to trace; None: the requests at these places in arrival order (the first two;
    # None: every request, as long as the memory budget lasts).
    attention_seqs: tuple[int, ...] | None = None
    attention_requests: tuple[int, ...] | None = (0, 1)
    layers: tuple[int, ...] | None = None  # layers to capture; None: all
    top_k: int = 10  # most likely tokens kept per sampled token
    logit_lens: bool = False  # each layer's top-5 guess for the traced sequences (their steps go eager)
    memory_budget: int = 256 * 2**20  # bytes; past it, attention, the lens, then logits stop being kept

    def __post_init__(self) -> None:
        """Check every field now (ArgumentError naming it): a wrong one would otherwise fail in
        the middle of a step (top_k=True inside torch.topk), or be read otherwise than meant
        (layers=5, a tuple of one layer?). The lists may come as any iterable; kept as tuples."""
        flag(self.attention, "CapturePolicy.attention")
        flag(self.logit_lens, "CapturePolicy.logit_lens")
        for name in ("attention_seqs", "attention_requests", "layers"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, whole_tuple(value, f"CapturePolicy.{name}"))
        whole(self.top_k, "CapturePolicy.top_k", minimum=1)
        whole(self.memory_budget, "CapturePolicy.memory_budget", maximum=MAX_BUDGET)

    def validate(self, num_layers: int) -> None:
        """Check the policy against a model of `num_layers` layers (ArgumentError naming a layer
        it lacks): the recorder does so when it is made, before any step."""
        beyond = [layer for layer in self.layers or () if layer >= num_layers]
        if beyond:
            raise ArgumentError(f"CapturePolicy.layers holds layer {beyond[0]}: the model has {num_layers} layers, "
                                f"0 to {num_layers - 1}")


@dataclass
class _StepInProgress:
    """What the hooks of the current step have gathered so far."""

    index: int
    started: float  # perf_counter at on_schedule
    schedule: ScheduleRecord | None = None  # from on_logits on
    hit_blocks: set[int] = field(default_factory=set)  # blocks that served prefix-cache hits
    kv: KVSnapshot | None = None  # taken in on_logits, during the forward
    logits: PendingLogits | None = None
    record_s: float = 0.0  # time spent in this recorder's hooks
    # From on_step_end on, waiting for the step's record to be completed:
    result: StepResult | None = None
    attention_seqs: list[int] = field(default_factory=list)  # sequences whose attention was stored
    lenses: dict[int, LogitLens] = field(default_factory=dict)  # seq id -> logit lens
    layer_hooks: bool = False  # did the step run a hook per layer (eagerly)?
    blocks_changed: bool = False  # a fork or a prune inside the step shared or freed blocks
    ended: float = 0.0  # perf_counter at on_step_end


class Recorder(Observer):
    def __init__(self, engine: LLMEngine, policy: CapturePolicy | None = None):
        self.engine = instance(engine, LLMEngine, "engine")
        self.policy = instance(policy, CapturePolicy, "policy", optional=True) or CapturePolicy()
        self.policy.validate(engine.model_config.num_hidden_layers)
        self._token_text = TokenTexts(engine.tokenizer).__getitem__
        # Kept across clear(): on a GPU it holds captured CUDA graphs.
        self._summariser = LogitsSummariser(min(self.policy.top_k, engine.model_config.vocab_size), engine.device)
        self.clear()

    def clear(self) -> None:
        """Start a new, empty trace (the engine is left as it is)."""
        engine, policy = self.engine, self.policy
        self._trace = Trace(_model_info(engine), _engine_info(engine))
        self.budget = MemoryBudget(policy.memory_budget)
        layers = list(policy.layers) if policy.layers is not None else list(range(engine.model_config.num_hidden_layers))
        self.capture = AttentionCapture(engine, self._trace, layers)
        self.lens = LogitLensCapture(engine)
        self.traced: set[int] = set()
        self._params: dict[int, SamplingParams] = {}  # seq id -> its sampling parameters
        self._num_requests = 0
        self._step: _StepInProgress | None = None  # between on_schedule and on_step_end
        self._ended: _StepInProgress | None = None  # ended, its record not yet completed
        self._t0 = time.perf_counter()
        self._meter = FileMeter()

    @property
    def trace(self) -> Trace:
        """The trace, with every step that has ended."""
        self.flush()
        return self._trace

    @property
    def num_steps(self) -> int:
        """Steps that have ended, their records completed or not (reads no trace)."""
        return len(self._trace.steps) + (self._ended is not None)

    def file_limit(self) -> str | None:
        """The first limit of a trace file this recording has passed (the limit named, as save()
        would name it refusing the trace), or None while save() would write it. Recording goes
        on past a limit, keeping every step: this says, as soon as a step passes one, that the
        run can no longer be saved as it is. Counted as the trace grows (inspector/trace/
        file_meter.py): each step once, the sequences on each call after a new step."""
        return self._meter.over_limit(self.trace)

    def flush(self) -> None:
        """Complete the record of the step that ended last, if it is still waiting."""
        step, self._ended = self._ended, None
        if step is not None:
            self._complete(step)

    # -- requests ------------------------------------------------------------------------------

    def register(self, seq_id: int, chat: bool | None = None, prompt_text: str | None = None,
                 prompt_ids: list[int] | None = None) -> SequenceRecord:
        """Add a request of the engine to the trace, and decide whether to trace its attention.
        The hooks register requests they meet on their own; DebugSession registers them as they
        are added, to pass on the chat flag and the prompt as typed. prompt_ids: the tokens the
        trace counts as its prompt (on_fork's; default the engine's prompt)."""
        known = self._trace.sequences.get(seq_id)
        if known is not None:
            return known
        request = self.engine.request(seq_id)
        policy = self.policy
        if policy.attention_seqs is not None:
            traced = seq_id in policy.attention_seqs
        else:
            traced = policy.attention_requests is None or self._num_requests in policy.attention_requests
        traced = traced and (policy.attention or policy.logit_lens)
        if traced:
            self.traced.add(seq_id)
        self._num_requests += 1
        self._params[seq_id] = request.params
        prompt_ids = list(request.prompt_token_ids if prompt_ids is None else prompt_ids)
        tokenizer = self.engine.tokenizer
        if prompt_text is None:
            prompt_text = tokenizer.decode(prompt_ids) if tokenizer is not None else ""
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(request.params).items()}
        index = self.num_steps
        # A set of samples or a beam search: the request id of the set, on its first member too.
        group = request.sample_of if request.sample_of is not None else request.beam_of
        if group is None and request.params.n > 1:
            group = seq_id
        record = SequenceRecord(
            seq_id, prompt_ids, prompt_text, chat, params, traced, index,
            prompt_tokens=prompt_texts(self.engine.tokenizer, prompt_ids),
            parent_id=request.parent_id, fork_position=request.fork_position,
            group_id=group, sample_index=request.sample_index,
        )
        self._trace.sequences[seq_id] = record
        self._trace.events.append(Event(index, "add", f"request {seq_id} added", seq_id))
        return record

    def note_abort(self, seq_id: int, stops_search: bool = False) -> None:
        """Record the abort of `seq_id` if it was running; or, with `stops_search`, of a beam that
        had ended (pruned or finished) but whose abort stopped its search: an event only, at
        most one, its finish reason kept."""
        record = self._trace.sequences.get(seq_id)
        if record is not None and record.finish_reason is None:
            record.finish_reason = "abort"
            self._trace.events.append(Event(self.num_steps, "abort", f"request {seq_id} aborted", seq_id))
        elif record is not None and stops_search and record.finish_reason != "abort":
            message = f"request {seq_id} aborted (a beam that had ended: {record.finish_reason}); its search stopped"
            self._trace.events.append(Event(self.num_steps, "abort", message, seq_id))

    # -- forks and prunes: when they happen, between steps or inside one -----------------------

    def on_fork(self, event: ForkEvent) -> None:
        """Register the child, with what it inherited as its prompt, and record the fork. A
        "user" fork's forced tokens are prompt (its first step computes them); a sample's or a
        beam's forced token is its first output, which this step's outputs record."""
        started = time.perf_counter()
        parent = self.engine.request(event.parent_id)
        inherited = [*parent.prompt_token_ids, *parent.output_token_ids][: event.position]
        forced = list(event.forced_token_ids)
        record = self.register(event.child_id, prompt_ids=inherited + forced if event.cause == "user" else inherited)
        record.fork_cause = event.cause  # parent and position: register read them from the request
        copy = CopyRecord(*event.copy) if event.copy is not None else None
        fork = ForkRecord(event.child_id, event.parent_id, event.position, forced,
                          [self._token_text(t) for t in forced], event.cause, event.prefix,
                          list(event.shared_block_ids), copy)
        chose = {"user": "forced by the user", "sample": "drawn for a sample", "beam": "kept by the beam search"}
        # All of them are in the fork record. Tokens without text of their own (a byte of a
        # character) read '' here: they are named by id instead, as the views name them.
        joined = "".join(fork.forced_texts)
        texts = repr(_clipped(joined)) if joined else _clipped(" ".join(f"[{t}]" for t in forced))
        message = (f"#{event.child_id} <- #{event.parent_id} at token {event.position}: {texts} "
                   f"({chose[event.cause]}); " + _prefix_words(fork))
        self._trace.events.append(Event(self.num_steps, "fork", message, event.child_id, fork=fork))
        if self._step is not None:  # inside a step: its blocks changed after on_logits' snapshot
            self._step.blocks_changed = True
            self._step.record_s += time.perf_counter() - started

    def on_prune(self, event: PruneEvent) -> None:
        record = self._trace.sequences.get(event.seq_id)
        index = self.num_steps
        if record is not None:
            record.finish_reason, record.pruned_step = "pruned", index
        self._trace.events.append(Event(index, "prune", f"#{event.seq_id} pruned: {event.reason}", event.seq_id))
        if self._step is not None:
            self._step.blocks_changed = True

    # -- hooks ---------------------------------------------------------------------------------

    def on_schedule(self, batch: SchedulerOutput) -> None:
        started = time.perf_counter()
        # Requests added to the engine directly, not through DebugSession, are met here first.
        known = self._trace.sequences
        for seq_id in sorted(s for s in (*batch.running, *batch.waiting) if s not in known):
            self.register(seq_id)
        index = self.num_steps
        self._step = _StepInProgress(index, started)
        for seq_id in batch.preempted:
            known[seq_id].num_preemptions += 1
        # Plan the droppable data; the budget may stop keeping some from this step on.
        budget = self.budget
        needs = {"logits": summary_bytes(len(batch.sampling), self.policy.top_k)}
        if self.policy.attention:
            needs["attention"] = self.capture.bytes_needed(batch, self.traced) if budget.keeps("attention") else 0
        lens_rows = self.policy.logit_lens and budget.keeps("lens") and self.lens.begin_step(batch, self.traced)
        if self.policy.logit_lens:
            needs["lens"] = len(self.lens.rows) * self.lens.bytes_per_token() if lens_rows else 0
        for kind in budget.plan_step(index, needs):
            message = f"memory budget of {budget.limit:,} bytes reached: {kind} no longer recorded from step {index}"
            self._trace.events.append(Event(index, "drop", message, what=kind))
        capturing = self.policy.attention and budget.keeps("attention")
        # Only steps that run a traced sequence capture anything. A prefill is captured per
        # layer (a hook: eager, as prefills always are); a decode step from the queries the
        # forward copies out (its CUDA graph stays on).
        capture = capturing and self.capture.begin_step(batch, self.traced)
        self.wants_attention = capture and batch.phase == "prefill"
        self.wants_queries = capture and batch.phase == "decode"
        self.wants_layers = bool(lens_rows) and budget.keeps("lens")
        self._step.record_s += time.perf_counter() - started

    def on_attention(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        output: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> None:
        started = time.perf_counter()
        self.capture.write(layer, q, k, metadata)
        self._step.record_s += time.perf_counter() - started

    def on_queries(self, queries: torch.Tensor, metadata: AttentionMetadata) -> None:
        started = time.perf_counter()
        self.capture.write_queries(queries)
        self._step.record_s += time.perf_counter() - started

    def on_layer(self, layer: int, stream: torch.Tensor, metadata: AttentionMetadata) -> None:
        started = time.perf_counter()
        self.lens.write(stream)
        self._step.record_s += time.perf_counter() - started

    def on_logits(self, batch: SchedulerOutput, logits: torch.Tensor) -> None:
        """On a GPU the forward is still running: the step before is completed, and what can
        be recorded of this one before its tokens are drawn is recorded, while the host would
        otherwise wait for the GPU."""
        started = time.perf_counter()
        # First: its summaries' buffers are reused by this step's. (Its time counts as this
        # step's recording, during whose forward it runs.)
        self.flush()
        step = self._step
        if self.budget.keeps("logits") and logits.shape[0]:
            params = [self._params[item.seq_id] for item in batch.sampling]
            step.logits = self._summariser.summarise(logits, params)
        step.schedule = ScheduleRecord(
            batch.phase,
            [
                ScheduledRecord(i.seq_id, i.start, i.num_tokens, i.num_cached_tokens, i.samples, list(i.block_ids),
                                i.reason)
                for i in batch.scheduled
            ],
            list(batch.preempted),
            list(batch.waiting),
            list(batch.running),
            **cause_records(batch, self._trace.sequences),
        )
        step.hit_blocks = {b for i in batch.scheduled for b in i.hit_block_ids}
        computed = {item.seq_id: item.end for item in batch.scheduled}
        step.kv = kv_snapshot(self.engine.block_pool_snapshot(computed, include=step.hit_blocks), step.hit_blocks)
        step.record_s += time.perf_counter() - started

    def on_step_end(self, result: StepResult) -> None:
        """Only what the next step would change or overwrite; the rest waits (see the top)."""
        started = time.perf_counter()
        self.flush()  # normally done in on_logits already
        step = self._step
        if result.finished or step.blocks_changed:  # blocks went back or were shared: read the cache again
            step.kv = kv_snapshot(self.engine.block_pool_snapshot(include=step.hit_blocks), step.hit_blocks)
        else:
            step.kv = commit_filled_blocks(step.kv, self.engine, result.batch)
        for seq_id in result.finished:
            self._note_beam_score(seq_id)
        self.budget.charge(kv_snapshot_bytes(step.kv))
        if self.wants_layers:
            step.lenses = self.lens.end_step(self._token_text)
        if self.wants_attention or self.wants_queries:
            step.attention_seqs = self.capture.end_step(step.index)
        step.layer_hooks = self.wants_attention or self.wants_layers
        step.result = result
        step.ended = time.perf_counter()
        step.record_s += step.ended - started
        self._step, self._ended = None, step

    def _note_beam_score(self, seq_id: int) -> None:
        """A finished beam's score, as its search gave it (None for anything but a beam)."""
        record = self._trace.sequences.get(seq_id)
        if record is not None and record.group_id is not None:
            try:
                record.beam_score = self.engine.request(seq_id).beam_score
            except KeyError:  # collected already
                pass

    def _complete(self, step: _StepInProgress) -> None:
        """Append an ended step's record to the trace: its tokens, their logits summaries, its
        timings; and the sequences' text so far."""
        result, trace = step.result, self._trace
        outputs = result.outputs  # output i's token came from logits row rows[i]
        tokens = []
        for out in outputs:
            tokens.append(TokenRecord(out.request_id, out.token_id, out.text_delta, out.finish_reason, None,
                                      step.lenses.get(out.request_id)))
            seq = trace.sequences[out.request_id]
            seq.output_ids.append(out.token_id)
            seq.token_steps.append(step.index)
            seq.text += out.text_delta
            if seq.finish_reason != "pruned":  # a beam pruned in the step that gave its last token
                seq.finish_reason = out.finish_reason
        if step.logits is not None:
            rows = result.output_rows()
            for token, summary in zip(tokens, finish(step.logits, [o.token_id for o in outputs], self._token_text, rows)):
                token.logits = summary
        t = result.timings
        timings = Timings(
            start_ms=(step.started - self._t0) * 1e3 - t.schedule_ms,
            schedule_ms=t.schedule_ms, prepare_ms=t.prepare_ms, forward_ms=t.forward_ms, sample_ms=t.sample_ms,
            wall_ms=(step.ended - step.started) * 1e3 + t.schedule_ms, record_ms=step.record_s * 1e3,
            collective_ms=t.collective_ms,
        )
        trace.steps.append(
            StepRecord(step.index, result.step, step.schedule, tokens, step.kv, timings, step.attention_seqs,
                       layer_hooks=step.layer_hooks)
        )


# The forced text an event's message quotes, at most: a message is one line of a panel, held to
# MAX_LINE_TEXT by the trace file, and a fork may force thousands of tokens (4,000 characters of
# "Fork with text", repr-escaped, made a message the file refused).
QUOTED_TEXT = 60


def _clipped(text: str) -> str:
    return text if len(text) <= QUOTED_TEXT else text[: QUOTED_TEXT - 1] + "…"


def _prefix_words(fork: ForkRecord) -> str:
    """How a fork got its prefix's K/V, in words."""
    if fork.prefix == "queued":
        return "queued: its prefix is recomputed (or served by the prefix cache)"
    words = f"shares {len(fork.shared_blocks)} block(s) of #{fork.parent_id}"
    if fork.copy is not None:
        c = fork.copy
        words += f"; copy on write: block {c.src_block}'s {c.num_slots} slot(s) into block {c.dst_block}"
    return words


def _model_info(engine: LLMEngine) -> ModelInfo:
    m = engine.model_config
    name = engine.model_dir.name if engine.model_dir is not None else "random weights"
    dtype = str(engine.dtype).removeprefix("torch.")
    return ModelInfo(name, m.num_hidden_layers, m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.vocab_size,
                     dtype, m.hidden_size, m.intermediate_size, weights_fingerprint(engine),
                     engine.config.tensor_parallel_size)


def _engine_info(engine: LLMEngine) -> EngineInfo:
    c = engine.config
    return EngineInfo(
        str(engine.device), engine.attention_backend, c.block_size, engine.num_kv_blocks, c.max_num_seqs,
        c.max_num_batched_tokens, engine.max_model_len, c.enable_prefix_caching, c.enforce_eager, c.fused_ops, c.seed,
    )
