"""The trace: what the recorder kept about a run, as plain data.

A trace is the run's sequences, its steps (one per engine iteration: what the scheduler decided,
the tokens and logits, the KV cache at the step's end, timings), a few events (requests added
or aborted, capture dropped by the memory budget), and, for the traced sequences, attention
stores: each layer's post-RoPE queries and keys by position, from which any attention row is
computed on demand.

Every field is a JSON value, a nested dataclass, or a torch tensor. inspector/trace/tracefile.py
writes the tensors to safetensors and the rest to JSON, so a saved trace opens, and its
attention rows compute, with no model loaded.

The type hints are the schema a loaded trace is checked against (inspector/trace/codec.py): an enum
is a Literal, a bounded number carries its Range (inspector/trace/bounds.py), and there is no Any.

Shapes: L traced layers, T positions, H query heads, Hkv key/value heads, D head dim,
NB physical KV blocks, M KV blocks recorded in a step.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Annotated, Literal, TypedDict, TypeVar

import torch

from inspector.trace.attention_rows import attention_probs
from inspector.trace.bounds import (
    MAX_BLOCK_SIZE,
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_NUM_BLOCKS,
    MAX_VOCAB,
    Count,
    Entropy,
    Instant,
    LineText,
    Millis,
    Positive,
    Probability,
    Range,
    SeqId,
    TokenText,
)

# The version of this schema, written into every trace file. Bump it when the meaning or
# layout of a field changes; load() refuses files newer than this or older than
# OLDEST_READABLE_VERSION.
# 2: sparse KV snapshots (block_ids and the arrays aligned to it, instead of one entry per block).
# 3: forks, parallel samples and beams: fork and prune events (with the copy on write), a
#    sequence's parent, group and beam fields, each scheduled sequence's reason. Every field it
#    added has a default, so a file of schema 2 reads as a run without forks.
# 4: what a replay needs (inspector/debug/replay.py): the model's other sizes and its weights
#    fingerprint, the engine's CUDA-graph, fused-ops and seed settings. Each has a default (None:
#    not recorded), so a file of schema 2 or 3 still opens; replaying it says what it lacks.
# 5: why (minillama/engine/causes.py): each step's wait, preemption, chunk, prefix-cache and
#    eviction causes. Each list defaults to empty, so a file of schema 2 to 4 reads as a run that
#    said nothing of why.
# 6: tensor parallelism: the model's tensor_parallel_size (which rank computed each head) and
#    each step's collective_ms (the time rank 0 spent joining the ranks). Defaults 1 and 0, so a
#    file of schema 2 to 5 reads as a run in one process.
SCHEMA_VERSION = 6
OLDEST_READABLE_VERSION = 2

# The enumerations. A loaded trace holds one of these values in each such field, or is refused.
Phase = Literal["prefill", "decode"]
TokenFinish = Literal["stop", "length"]  # why a sampled token was its sequence's last
SequenceFinish = Literal["stop", "length", "abort", "pruned"]  # "pruned": a beam its search dropped
EventKind = Literal["add", "abort", "drop", "fork", "prune"]
ForkCause = Literal["user", "sample", "beam"]  # who chose a fork's forced tokens (minillama ForkEvent)
ForkPrefix = Literal["shared", "queued"]  # shared the parent's blocks, or queued to recompute them
# Why a sequence is in a step (minillama.engine.scheduler.Reason).
ScheduleReason = Literal["admitted", "resumed", "prefill-continues", "decode", "forked"]
DropKind = Literal["attention", "lens", "logits"]  # the data the memory budget stops keeping
DType = Literal["float32", "bfloat16", "float16"]
Backend = Literal["reference", "sdpa", "cpu", "flash-attn", "triton"]  # minillama.ops.attention
# The causes' kinds (minillama.engine.causes: WaitKind, VictimRule, MissKind).
WaitKind = Literal["blocks", "tokens", "seats", "behind"]
VictimRule = Literal["latest-arrival", "whole-search", "search-forks"]
MissKind = Literal["", "off", "no-full-block", "not-cached", "evicted"]


class TraceError(ValueError):
    """A trace file that cannot be read: not a trace, damaged, too large, or too new; or that
    cannot be written: its path a folder, a device or in no folder, a trace holding a NaN."""


class TraceTooLarge(TraceError):
    """A trace over one of the limits a trace file is held to (its JSON's bytes, elements and
    depth, its tensors' count and bytes, the sizes the views allocate by): load() refuses such a
    file, and save() refuses to write one, checking the limit by the same code."""


class NotRecorded(LookupError):
    """The trace does not hold what was asked: a sequence not traced, a layer not captured,
    capture dropped by the memory budget, or a query that came from the prefix cache."""


@dataclass
class ModelInfo:
    name: LineText
    num_layers: Annotated[int, Range(1, MAX_LAYERS)]
    num_heads: Annotated[int, Range(1, MAX_HEADS)]  # H
    num_kv_heads: Annotated[int, Range(1, MAX_HEADS)]  # Hkv; query head h reads kv head h // (H / Hkv)
    head_dim: Annotated[int, Range(1, MAX_HEAD_DIM)]  # D
    vocab_size: Annotated[int, Range(1, MAX_VOCAB)]
    dtype: DType  # of the KV cache, which the Q/K stores share
    # Schema 4 (None in older files): the rest of the shape, and the weights fingerprint
    # (inspector/record/fingerprint.py: 16 hex digits; what it proves, and what not, is there).
    hidden_size: Positive | None = None
    intermediate_size: Positive | None = None
    weights_fingerprint: str | None = None
    # Schema 6: the processes the run's layers were split over; rank r computed heads
    # [r * H / N, (r + 1) * H / N) (rank_of_head).
    tensor_parallel_size: Annotated[int, Range(1, MAX_HEADS)] = 1

    def rank_of_head(self, head: int) -> int:
        """The tensor-parallel rank that computed query head `head` (0 in one process);
        ArgumentError for a head the model does not have (None or "1" failed in the division,
        -1 or 99 answered with a rank no process had)."""
        from inspector.trace.arguments import whole  # it imports this module

        whole(head, "head", maximum=self.num_heads - 1)
        return head // max(1, self.num_heads // self.tensor_parallel_size)

    @property
    def softmax_scale(self) -> float:
        return self.head_dim**-0.5


@dataclass
class EngineInfo:
    device: LineText
    attention: Backend  # the attention backend that ran
    block_size: Annotated[int, Range(1, MAX_BLOCK_SIZE)]
    num_blocks: Annotated[int, Range(1, MAX_NUM_BLOCKS)]  # NB
    max_num_seqs: Positive
    max_num_batched_tokens: Positive
    max_model_len: Positive
    prefix_caching: bool
    # Schema 4 (None in older files): the rest of the EngineConfig that changes a run.
    enforce_eager: bool | None = None  # True: no CUDA graphs
    fused_ops: bool | None = None
    seed: Count | None = None  # of the shared sampling generator (requests without a seed)


class _SamplingRequired(TypedDict):

    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int | None
    ignore_eos: bool
    stop_token_ids: list[Count]


class SamplingRecord(_SamplingRequired, total=False):
    """A request's SamplingParams (minillama/sampling_params.py) as plain values. Loading a
    trace checks them with SamplingParams.validate, the engine's own rules. Keys added after the
    first schema are optional, so older traces still open: n (samples per prompt, default 1),
    beam_width (1), length_penalty (1.0) and early_stopping (False; True, False or "never")."""

    n: int
    beam_width: int
    length_penalty: float
    early_stopping: bool | Literal["never"]


@dataclass
class SequenceRecord:
    """One request: its prompt, and an index of what it generated (the steps hold the detail)."""

    seq_id: SeqId
    prompt_ids: list[Count]
    prompt_text: str
    chat: bool | None  # None: the recorder saw the request without being told
    params: SamplingRecord
    traced: bool  # are its queries and keys (and, with the logit lens on, each layer's guess) recorded?
    added_step: Count  # index of the first step after it arrived
    # The text each prompt token completes, decoded in context as output text is (a token ending
    # inside a UTF-8 character has "", the one completing it the whole character; traces from
    # before show each piece as U+FFFD): the UI's token chips and attention axes, no tokenizer needed.
    prompt_tokens: list[TokenText] = field(default_factory=list)
    output_ids: list[Count] = field(default_factory=list)
    token_steps: list[Count] = field(default_factory=list)  # the step that sampled each output token
    text: str = ""
    finish_reason: SequenceFinish | None = None
    num_preemptions: Count = 0
    # A fork (of any cause): the sequence it continues, and how many of that sequence's tokens
    # it kept (prompt_ids holds those, then, for a "user" fork, the forced tokens; a sample's or
    # a beam's forced token is its first output token).
    parent_id: SeqId | None = None
    fork_position: Count | None = None
    fork_cause: ForkCause | None = None
    # A request with n > 1 samples or a beam search: the request id of the whole set (the id
    # add_request returned; on the leader itself too), and this one's sample index.
    group_id: SeqId | None = None
    sample_index: Count = 0
    pruned_step: Count | None = None  # the step whose beam search dropped it
    beam_score: float | None = None  # a finished beam's score (log-probability, length-penalised)


@dataclass
class ScheduledRecord:
    """One sequence's share of a step: compute tokens [start, start + num_tokens)."""

    seq_id: SeqId
    start: Count
    num_tokens: Positive
    num_cached_tokens: Count  # prefix-cache hits served when admitted in this step
    samples: bool  # does this step produce its next token?
    block_table: list[Count]  # logical block i -> physical block, as the model ran it
    reason: ScheduleReason | None = None  # None in files of schema 2


@dataclass
class WaitRecord:
    """Why a waiting sequence waits (minillama.engine.causes.WaitCause)."""

    seq_id: SeqId
    kind: WaitKind
    needs: Count = 0  # "blocks" / "seats": how many it needs
    free: Count = 0  # "blocks" / "seats": how many were free
    by: list[SeqId] = field(default_factory=list)  # "tokens": the sequences that used the budget
    head: SeqId | None = None  # "behind": the head of the queue


@dataclass
class PreemptRecord:
    """Why a sequence was preempted: `needer` needed a block for its token at `position`."""

    seq_id: SeqId
    needer: SeqId
    position: Count
    rule: VictimRule


@dataclass
class ChunkRecord:
    """A prefill cut short: the step's token budget had `budget_left` of its `remaining` tokens."""

    seq_id: SeqId
    budget_left: Count
    remaining: Positive


@dataclass
class PrefixRecord:
    """An admission's prefix-cache lookup: the blocks hit, and why it stopped (miss "": it did not)."""

    seq_id: SeqId
    hit_blocks: list[Count]
    miss: MissKind
    miss_block: Count | None = None  # the first logical block not served
    differs_at: Count | None = None  # "not-cached": where the prompt leaves the nearest cached prefix
    evicted_step: Count | None = None  # "evicted": the engine step that reused the block
    evicted_for: SeqId | None = None  # "evicted": for whom (None: a sequence before the trace)


@dataclass
class EvictionRecord:
    """A cached block reused for another sequence: its prefix is cached no more."""

    block_id: Count
    engine_step: Count
    for_seq: SeqId


_Cause = TypeVar("_Cause", WaitRecord, PreemptRecord, ChunkRecord, PrefixRecord)


@dataclass
class ScheduleRecord:
    """The scheduler's decision, and its queues right after making it."""

    phase: Phase
    scheduled: list[ScheduledRecord]
    preempted: list[SeqId]  # sequence ids evicted to make room (recomputed later)
    waiting: list[SeqId]  # in arrival order
    running: list[SeqId]  # in arrival order
    # Why (schema 5; empty in older files): from the scheduler and block manager, as decided.
    waits: list[WaitRecord] = field(default_factory=list)  # a sequence preempted here has a preemption instead
    preemptions: list[PreemptRecord] = field(default_factory=list)
    chunks: list[ChunkRecord] = field(default_factory=list)
    prefix: list[PrefixRecord] = field(default_factory=list)
    evictions: list[EvictionRecord] = field(default_factory=list)

    def wait_of(self, seq_id: int) -> WaitRecord | None:
        return self._by_seq(self.waits).get(seq_id)

    def preemption_of(self, seq_id: int) -> PreemptRecord | None:
        return self._by_seq(self.preemptions).get(seq_id)

    def chunk_of(self, seq_id: int) -> ChunkRecord | None:
        return self._by_seq(self.chunks).get(seq_id)

    def prefix_of(self, seq_id: int) -> PrefixRecord | None:
        return self._by_seq(self.prefix).get(seq_id)

    def _by_seq(self, records: list[_Cause]) -> dict[int, _Cause]:
        """One of the cause lists by sequence id, the first record of each, built on the first
        call and again when the list has changed (as StepRecord.token_of). The step details and
        `show --step` ask for each sequence's causes: a scan per sequence made a step of 20,000
        waiting sequences cost 20,000 x 20,000 comparisons, 10 s a redraw. (Not a field.)"""
        cache: dict[int, tuple[list, int, dict]] = self.__dict__.setdefault("_causes_by_seq", {})
        found = cache.get(id(records))
        if found is None or found[0] is not records or found[1] != len(records):
            index: dict[int, _Cause] = {}
            for record in records:
                index.setdefault(record.seq_id, record)
            found = cache[id(records)] = (records, len(records), index)
        return found[2]


@dataclass
class LogitsSummary:
    """One sampling sequence's next-token distribution, reduced to its top k."""

    top_ids: list[Count]  # the k most likely tokens under the model, most likely first
    top_texts: list[TokenText]
    top_probs: list[Probability]  # their probability under the model: softmax(logits)
    # Their probability under the distribution the token was drawn from (temperature, top-k
    # and top-p applied); a greedy request takes the most likely token, probability 1.
    top_sampling_probs: list[Probability]
    entropy: Entropy  # of the model's distribution, in nats: 0 = certain
    sampled_prob: Probability  # the model's probability of the token that was drawn
    sampled_rank: Count  # its rank under the model: 0 = the most likely


@dataclass
class LogitLens:
    """What the model would have predicted had it stopped after each layer: the residual
    stream at the sampling position, through the final norm and the LM head, top k per layer
    (the last layer's is the real prediction). Lists by layer, most likely token first."""

    top_ids: list[list[Count]]  # [L][k]
    top_texts: list[list[TokenText]]
    top_probs: list[list[Probability]]


@dataclass
class TokenRecord:
    seq_id: SeqId
    token_id: Count
    text_delta: TokenText  # text this token completed (may be "" mid-character)
    finish_reason: TokenFinish | None
    logits: LogitsSummary | None  # None once the memory budget dropped logits
    lens: LogitLens | None = None  # traced sequences, with CapturePolicy.logit_lens


@dataclass
class KVBlockEntry:
    """One recorded block of a KVSnapshot, as plain values."""

    block_id: int
    ref_count: int  # sequences sharing it
    fill: int  # tokens whose K/V it holds
    cached: bool  # a later prompt can hit it
    hit: bool  # served a prefix-cache hit in this step
    owners: list[int]  # the sequences whose block table holds it, in arrival order


@dataclass
class KVSnapshot:
    """The paged KV cache at the end of a step, sparse: the pool holds num_blocks blocks (about
    131,000 on an 80 GB GPU) but a step involves few, so only these M blocks are recorded, and
    a snapshot's size follows the blocks in use, not the pool:
    - every block in a running sequence's block table (a block with ref_count > 0 is always one);
    - the blocks that served a prefix-cache hit in this step (held, unless their sequence
      finished in the step);
    - the free blocks that still hold a cached full block a later prompt can hit, as long as
      there are at most minillama.engine.block_pool.MAX_LISTED_CACHED_FREE of them
      (cached_free_listed); past that only their number, num_cached_free, is recorded.
    A block not recorded is free and holds nothing a prompt can hit (or is one of the unlisted
    cached ones). The per-block arrays are aligned to block_ids; the block tables of the
    sequences holding blocks are concatenated, with offsets."""

    num_blocks: Positive  # NB: blocks in the pool
    num_free: Count  # blocks on the free list
    num_cached_free: Count  # free blocks holding a cached full block, listed or not
    cached_free_listed: bool  # are all of those among the recorded blocks?
    block_ids: torch.Tensor  # [M] int32, sorted: the recorded blocks
    ref_count: torch.Tensor  # [M] int32: sequences sharing the block
    fill: torch.Tensor  # [M] int32: tokens whose K/V the block holds
    cached: torch.Tensor  # [M] bool: holds a full block that a later prompt can hit (in the prefix-cache index)
    hit: torch.Tensor  # [M] bool: served a prefix-cache hit in this step
    table_seq_ids: torch.Tensor  # [S] int64: the sequences holding blocks, in arrival order
    table_offsets: torch.Tensor  # [S + 1] int64: sequence i's table is blocks[offsets[i]:offsets[i+1]]
    table_blocks: torch.Tensor  # [sum of table lengths] int32

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def usage(self) -> float:
        """Fraction of the blocks in use (not on the free list)."""
        return self.num_used / self.num_blocks

    def block_tables(self) -> dict[int, list[int]]:
        offsets, blocks = self.table_offsets.tolist(), self.table_blocks.tolist()
        return {s: blocks[offsets[i] : offsets[i + 1]] for i, s in enumerate(self.table_seq_ids.tolist())}

    def owners(self) -> dict[int, list[int]]:
        """Block id -> the sequences whose table holds it, for the held blocks only."""
        result: dict[int, list[int]] = {}
        for seq_id, table in self.block_tables().items():
            for block in table:
                result.setdefault(block, []).append(seq_id)
        return result

    def entries(self) -> list[KVBlockEntry]:
        """Every recorded block, in block id order."""
        owners = self.owners()
        columns = (self.block_ids.tolist(), self.ref_count.tolist(), self.fill.tolist(), self.cached.tolist(),
                   self.hit.tolist())
        return [KVBlockEntry(b, ref, fill, cached, hit, owners.get(b, [])) for b, ref, fill, cached, hit in zip(*columns)]

    def entry(self, block_id: int) -> KVBlockEntry | None:
        """Block `block_id`'s entry, or None when it is not recorded (see the class docstring)."""
        i = int(torch.searchsorted(self.block_ids, block_id))
        if i == self.block_ids.numel() or self.block_ids[i] != block_id:
            return None
        owners = self.owners().get(block_id, [])
        return KVBlockEntry(block_id, int(self.ref_count[i]), int(self.fill[i]), bool(self.cached[i]),
                            bool(self.hit[i]), owners)


@dataclass
class Timings:
    """Milliseconds. The engine's own four phases, and the step's wall time around them."""

    start_ms: Instant  # when the step began, since the trace started (a hair below 0 for the first)
    schedule_ms: Millis
    prepare_ms: Millis
    forward_ms: Millis  # includes on_attention hooks
    sample_ms: Millis  # includes on_logits hooks
    wall_ms: Millis  # the whole step, every observer included
    record_ms: Millis  # of which this recorder's hooks (completing the step before included)
    # Schema 6, tensor parallelism: of forward_ms and sample_ms, rank 0's time in the collectives
    # and messages that join the ranks (0 in one process).
    collective_ms: Millis = 0.0


@dataclass
class StepRecord:
    index: Count  # position in the trace
    engine_step: Count  # the engine's step counter (differs from index after a reset)
    schedule: ScheduleRecord
    tokens: list[TokenRecord]  # one per sampling sequence, in batch order
    kv: KVSnapshot
    timings: Timings
    attention_seqs: list[SeqId]  # traced sequences whose Q/K this step recorded
    # Did the step call Python hooks at every layer (attention capture in a prefill, the logit
    # lens)? Then on CUDA it ran eagerly, without a CUDA graph. A decode step's queries are
    # copied out inside the graph and need no hook.
    layer_hooks: bool = False

    def token_of(self, seq_id: int) -> TokenRecord | None:
        """The token `seq_id` drew in this step, or None. Found in a dict by sequence id, built on
        the first call and again when `tokens` has grown: the loader and the views ask for every
        token of a sequence, and a scan of the step's tokens made a step of 20,000 sequences
        cost 20,000 x 20,000 comparisons. (Not a field: the trace file does not hold it.)"""
        index: dict[int, TokenRecord] | None = self.__dict__.get("_tokens_by_seq")
        if index is None or self.__dict__.get("_tokens_indexed") != len(self.tokens):
            index = {}
            for token in self.tokens:
                index.setdefault(token.seq_id, token)  # the first, as the scan found it
            self.__dict__["_tokens_by_seq"], self.__dict__["_tokens_indexed"] = index, len(self.tokens)
        return index.get(seq_id)


@dataclass
class CopyRecord:
    """A copy on write: slots [0, num_slots) of src_block copied into dst_block (every layer, K
    and V), the block where a fork's shared prefix ends."""

    src_block: Count
    dst_block: Count
    num_slots: Positive


@dataclass
class ForkRecord:
    """A fork (minillama ForkEvent): child continues parent's first `position` tokens with forced_ids."""

    child_id: SeqId
    parent_id: SeqId
    position: Positive
    forced_ids: list[Count]
    forced_texts: list[TokenText]
    cause: ForkCause
    prefix: ForkPrefix
    shared_blocks: list[Count]  # the parent's blocks the child holds by reference, logical order
    copy: CopyRecord | None = None


@dataclass
class Event:
    # Index of the step it happened before ("add", "abort", a "user" fork) or during ("drop", a
    # sample's or a beam's fork, "prune"). Events are in order: their steps never decrease.
    step: Count
    kind: EventKind
    message: LineText
    seq_id: SeqId | None = None  # "add", "abort", "prune": the request; "fork": the child
    what: DropKind | None = None  # "drop": the kind of data no longer kept
    fork: ForkRecord | None = None  # "fork"


@dataclass
class AttentionStore:
    """A traced sequence's post-RoPE queries and keys, by position, in the KV cache's dtype."""

    seq_id: SeqId
    layers: list[Count]  # the model layer of each slot
    q: torch.Tensor  # [L, T, H, D]
    k: torch.Tensor  # [L, T, Hkv, D]
    # [T] int32: the step that last computed the query at each position; -1 when it was never
    # computed for this sequence (its K/V came from the prefix cache).
    q_step: torch.Tensor

    @property
    def length(self) -> int:
        return self.k.shape[1]

    def slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise NotRecorded(f"layer {layer} was not captured for sequence {self.seq_id} (captured: {self.layers})")
        return self.layers.index(layer)


@dataclass
class Trace:
    model: ModelInfo
    engine: EngineInfo
    sequences: dict[int, SequenceRecord] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    attention: dict[int, AttentionStore] = field(default_factory=dict)

    def forks(self) -> list[ForkRecord]:
        """Every fork, in the order they happened."""
        return [e.fork for e in self.events if e.fork is not None]

    def events_at(self, index: int) -> list[Event]:
        """The events before or during step `index`: a binary search, as their steps never
        decrease (validate checks it), so a view or a breakpoint at every step stays cheap.
        ArgumentError for an index that is no integer >= 0: the search compares it with ints,
        so True was read as 1 and 1.5 or NaN found no event instead of being refused. An index
        past the last step is allowed: events made after it (an add, a fork) carry the next one's."""
        _whole_arguments(index=index)
        step_of = _event_step
        return self.events[bisect.bisect_left(self.events, index, key=step_of):
                           bisect.bisect_right(self.events, index, key=step_of)]

    def forks_at(self, index: int) -> list[ForkRecord]:
        """The forks made before or during step `index`."""
        return [e.fork for e in self.events_at(index) if e.fork is not None]

    def copies_at(self, index: int) -> list[tuple[ForkRecord, CopyRecord]]:
        """The copies on write made before or during step `index`, with the fork that made each."""
        return [(f, f.copy) for f in self.forks_at(index) if f.copy is not None]

    def children(self, seq_id: int) -> list[int]:
        """The sequences forked from `seq_id`, in the order they were made."""
        return [s.seq_id for s in self.sequences.values() if s.parent_id == seq_id]

    def dropped_from(self, what: DropKind) -> int | None:
        """The first step without `what` ("attention", "lens" or "logits"), or None if always kept."""
        return next((e.step for e in self.events if e.kind == "drop" and e.what == what), None)

    def text_until(self, seq_id: int, index: int) -> str:
        """The text sequence `seq_id` had generated by the end of step `index`. ArgumentError for
        an id or index that is no integer >= 0, or a sequence the trace does not hold."""
        _whole_arguments(seq_id=seq_id, index=index)
        if seq_id not in self.sequences:
            from inspector.trace.arguments import ArgumentError  # it imports this module

            raise ArgumentError(f"the trace holds no sequence {seq_id}")
        seq = self.sequences[seq_id]
        done = seq.token_steps[: bisect.bisect_right(seq.token_steps, index)]
        return "".join(self.steps[s].token_of(seq_id).text_delta for s in done)

    def attention_row(self, seq_id: int, layer: int, head: int, query_pos: int) -> torch.Tensor:
        """Where query head `head` at `query_pos` looked, in `layer`: probs [query_pos + 1] fp32.
        ArgumentError for an argument that is no integer >= 0 (True, 1.5 or "0" reached torch's
        indexing, or were read as 1); NotRecorded for what the trace does not hold."""
        _whole_arguments(seq_id=seq_id, layer=layer, head=head, query_pos=query_pos)
        store = self._store(seq_id)
        if not 0 <= head < self.model.num_heads:
            raise NotRecorded(f"head {head} is out of range (the model has {self.model.num_heads})")
        if not 0 <= query_pos < store.length or store.q_step[query_pos] < 0:
            dropped = self.dropped_from("attention")
            raise NotRecorded(
                f"no query at position {query_pos} of sequence {seq_id}: positions 0..{store.length - 1} are "
                "recorded, and those served by the prefix cache have keys but no query"
                + (f"; the memory budget stopped attention capture at step {dropped}" if dropped is not None else "")
            )
        slot = store.slot(layer)
        kv_head = head // (self.model.num_heads // self.model.num_kv_heads)
        q = store.q[slot, query_pos, head]  # [D]
        keys = store.k[slot, : query_pos + 1, kv_head]  # [query_pos + 1, D]
        return attention_probs(q, keys, self.model.softmax_scale)

    def _store(self, seq_id: int) -> AttentionStore:
        if seq_id not in self.attention:
            traced = sorted(self.attention)
            raise NotRecorded(f"sequence {seq_id} has no recorded queries and keys (recorded: {traced})")
        return self.attention[seq_id]


def _whole_arguments(**values: object) -> None:
    """ArgumentError naming the first of `values` that is no integer >= 0."""
    from inspector.trace.arguments import whole  # it imports this module

    for name, value in values.items():
        whole(value, name)


def _event_step(event: Event) -> int:
    return event.step
