"""The trace: what the recorder kept about a run, as plain data.

A trace is the run's sequences, its steps (one per engine iteration: what the scheduler decided,
the tokens and logits, the KV cache at the step's end, timings), a few events (requests added
or aborted, capture dropped by the memory budget), and, for the traced sequences, attention
stores: each layer's post-RoPE queries and keys by position, from which any attention row is
computed on demand.

Every field is a JSON value, a nested dataclass, or a torch tensor. inspector/tracefile.py
writes the tensors to safetensors and the rest to JSON, so a saved trace opens, and its
attention rows compute, with no model loaded.

Shapes: L traced layers, T positions, H query heads, Hkv key/value heads, D head dim,
NB physical KV blocks, M KV blocks recorded in a step.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import torch

from inspector.attention import attention_probs, mass_per_block

# The version of this schema, written into every trace file. Bump it when the meaning or
# layout of a field changes; load() refuses files of any other version.
# 2: sparse KV snapshots (block_ids and the arrays aligned to it, instead of one entry per block).
SCHEMA_VERSION = 2


class TraceError(ValueError):
    """A trace file that cannot be read: not a trace, damaged, too large, or too new."""


class NotRecorded(LookupError):
    """The trace does not hold what was asked: a sequence not traced, a layer not captured,
    capture dropped by the memory budget, or a query that came from the prefix cache."""


@dataclass
class ModelInfo:
    name: str
    num_layers: int
    num_heads: int  # H
    num_kv_heads: int  # Hkv; query head h reads kv head h // (H / Hkv)
    head_dim: int  # D
    vocab_size: int
    dtype: str  # of the KV cache, which the Q/K stores share

    @property
    def softmax_scale(self) -> float:
        return self.head_dim**-0.5


@dataclass
class EngineInfo:
    device: str
    attention: str  # the attention backend that ran
    block_size: int
    num_blocks: int  # NB
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    prefix_caching: bool


@dataclass
class SequenceRecord:
    """One request: its prompt, and an index of what it generated (the steps hold the detail)."""

    seq_id: int
    prompt_ids: list[int]
    prompt_text: str
    chat: bool | None  # None: the recorder saw the request without being told
    params: dict[str, Any]  # its SamplingParams as a dict
    traced: bool  # are its queries and keys (and, with the logit lens on, each layer's guess) recorded?
    added_step: int  # index of the first step after it arrived
    # Each prompt token's text, decoded alone (a token that splits a UTF-8 character shows as
    # U+FFFD): the UI's token chips and attention axes, with no tokenizer at hand.
    prompt_tokens: list[str] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    token_steps: list[int] = field(default_factory=list)  # the step that sampled each output token
    text: str = ""
    finish_reason: str | None = None
    num_preemptions: int = 0


@dataclass
class ScheduledRecord:
    """One sequence's share of a step: compute tokens [start, start + num_tokens)."""

    seq_id: int
    start: int
    num_tokens: int
    num_cached_tokens: int  # prefix-cache hits served when admitted in this step
    samples: bool  # does this step produce its next token?
    block_table: list[int]  # logical block i -> physical block, as the model ran it


@dataclass
class ScheduleRecord:
    """The scheduler's decision, and its queues right after making it."""

    phase: str  # "prefill" or "decode"
    scheduled: list[ScheduledRecord]
    preempted: list[int]  # sequence ids evicted to make room (recomputed later)
    waiting: list[int]  # in arrival order
    running: list[int]  # in arrival order


@dataclass
class LogitsSummary:
    """One sampling sequence's next-token distribution, reduced to its top k."""

    top_ids: list[int]  # the k most likely tokens under the model, most likely first
    top_texts: list[str]
    top_probs: list[float]  # their probability under the model: softmax(logits)
    # Their probability under the distribution the token was drawn from (temperature, top-k
    # and top-p applied); a greedy request takes the most likely token, probability 1.
    top_sampling_probs: list[float]
    entropy: float  # of the model's distribution, in nats: 0 = certain
    sampled_prob: float  # the model's probability of the token that was drawn
    sampled_rank: int  # its rank under the model: 0 = the most likely


@dataclass
class LogitLens:
    """What the model would have predicted had it stopped after each layer: the residual
    stream at the sampling position, through the final norm and the LM head, top k per layer
    (the last layer's is the real prediction). Lists by layer, most likely token first."""

    top_ids: list[list[int]]  # [L][k]
    top_texts: list[list[str]]
    top_probs: list[list[float]]


@dataclass
class TokenRecord:
    seq_id: int
    token_id: int
    text_delta: str  # text this token completed (may be "" mid-character)
    finish_reason: str | None  # "stop", "length" or None
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
      there are at most inspector.kv_snapshot.MAX_LISTED_CACHED_FREE of them
      (cached_free_listed); past that only their number, num_cached_free, is recorded.
    A block not recorded is free and holds nothing a prompt can hit (or is one of the unlisted
    cached ones). The per-block arrays are aligned to block_ids; the block tables of the
    sequences holding blocks are concatenated, with offsets."""

    num_blocks: int  # NB: blocks in the pool
    num_free: int  # blocks on the free list
    num_cached_free: int  # free blocks holding a cached full block, listed or not
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

    start_ms: float  # when the step began, since the trace started
    schedule_ms: float
    prepare_ms: float
    forward_ms: float  # includes on_attention hooks
    sample_ms: float  # includes on_logits hooks
    wall_ms: float  # the whole step, every observer included
    record_ms: float  # of which this recorder's hooks (completing the step before included)


@dataclass
class StepRecord:
    index: int  # position in the trace
    engine_step: int  # the engine's step counter (differs from index after a reset)
    schedule: ScheduleRecord
    tokens: list[TokenRecord]  # one per sampling sequence, in batch order
    kv: KVSnapshot
    timings: Timings
    attention_seqs: list[int]  # traced sequences whose Q/K this step recorded
    # Did the step call Python hooks at every layer (attention capture in a prefill, the logit
    # lens)? Then on CUDA it ran eagerly, without a CUDA graph. A decode step's queries are
    # copied out inside the graph and need no hook.
    layer_hooks: bool = False

    def token_of(self, seq_id: int) -> TokenRecord | None:
        return next((t for t in self.tokens if t.seq_id == seq_id), None)


@dataclass
class Event:
    step: int  # index of the step it happened before (or during, for "drop")
    kind: str  # "add", "abort" or "drop"
    message: str
    seq_id: int | None = None
    what: str | None = None  # "drop": the kind of data no longer kept ("attention", "lens", "logits")


@dataclass
class AttentionStore:
    """A traced sequence's post-RoPE queries and keys, by position, in the KV cache's dtype."""

    seq_id: int
    layers: list[int]  # the model layer of each slot
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

    def dropped_from(self, what: str) -> int | None:
        """The first step without `what` ("attention", "lens" or "logits"), or None if always kept."""
        return next((e.step for e in self.events if e.kind == "drop" and e.what == what), None)

    def text_until(self, seq_id: int, index: int) -> str:
        """The text sequence `seq_id` had generated by the end of step `index`."""
        seq = self.sequences[seq_id]
        done = seq.token_steps[: bisect.bisect_right(seq.token_steps, index)]
        return "".join(self.steps[s].token_of(seq_id).text_delta for s in done)

    def attention_row(self, seq_id: int, layer: int, head: int, query_pos: int) -> torch.Tensor:
        """Where query head `head` at `query_pos` looked, in `layer`: probs [query_pos + 1] fp32."""
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

    def block_mass(self, seq_id: int, layer: int, head: int, query_pos: int) -> dict[int, float]:
        """The attention row's mass per physical KV block, through the block table the query was
        computed with: {physical block: mass}, in logical block order."""
        probs = self.attention_row(seq_id, layer, head, query_pos)
        step = self.steps[int(self._store(seq_id).q_step[query_pos])]
        table = next(s.block_table for s in step.schedule.scheduled if s.seq_id == seq_id)
        return mass_per_block(probs, table, self.engine.block_size)

    def _store(self, seq_id: int) -> AttentionStore:
        if seq_id not in self.attention:
            traced = sorted(self.attention)
            raise NotRecorded(f"sequence {seq_id} has no recorded queries and keys (recorded: {traced})")
        return self.attention[seq_id]
