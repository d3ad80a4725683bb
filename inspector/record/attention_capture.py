"""AttentionCapture: copies the traced sequences' post-RoPE queries and keys out of every layer.

Per traced sequence it keeps two buffers on the engine's device, in the KV cache's dtype,
indexed by position: q [L, capacity, H, D] and k [L, capacity, Hkv, D] (L = captured layers).
They grow by doubling; the trace's AttentionStore shows the filled part, [:, :length].

Where the rows come from, in a step that runs a traced sequence:
- prefill (write, called per layer from on_attention, so the step runs eagerly): its new
  tokens' q and k are rows cu_seqlens_q[i] .. cu_seqlens_q[i + 1] of the layer's flat batch
  tensors (i = its place in the batch);
- decode (write_queries, called once from on_queries; CUDA graphs stay on): its query is row i
  of every layer's queries, which the forward copied out; its new key is read back from the
  paged cache, where the step wrote it.
- keys it did not compute in this run (a prefix-cache hit): read from the engine's paged cache
  through its block table (engine.read_keys, after the forward: with tensor parallelism every
  rank reads its KV heads). Their queries were never computed for this sequence, so those
  positions have keys but no query (q_step -1).
A sequence preempted and recomputed overwrites its rows with the recomputed ones (equal up to
float rounding); q_step then names the recomputing step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inspector.trace.model import AttentionStore, Trace
from minillama import AttentionMetadata, LLMEngine, SchedulerOutput


@dataclass
class _Buffers:
    q: torch.Tensor  # [L, capacity, H, D]
    k: torch.Tensor  # [L, capacity, Hkv, D]
    q_step: torch.Tensor  # [capacity] int32 (CPU): step that computed each query, -1 if none
    length: int  # positions with a key recorded
    max_len: int  # the most positions this sequence can ever have

    @property
    def capacity(self) -> int:
        return self.k.shape[1]


@dataclass
class _Write:
    """What one step writes for one traced sequence."""

    seq_id: int
    batch_index: int  # its place in batch.scheduled, which is its place in the flat batch
    start: int  # computes positions [start, end)
    end: int
    # Positions [length, start) hold K/V this run never computed (prefix-cache hits): read
    # them from the cache at these physical blocks and offsets, [n] each, on the device.
    cache_blocks: torch.Tensor
    cache_offsets: torch.Tensor
    # Decode: where positions [start, end) went in the cache, [end - start] each, on the device.
    new_blocks: torch.Tensor | None = None
    new_offsets: torch.Tensor | None = None


class AttentionCapture:
    def __init__(self, engine: LLMEngine, trace: Trace, layers: list[int]):
        self.engine = engine
        self.trace = trace
        self.layers = layers
        self.slot_of_layer = {layer: i for i, layer in enumerate(layers)}
        m = engine.model_config
        element = torch.empty(0, dtype=engine.dtype).element_size()
        # Q and K of one position across the captured layers, plus its q_step entry.
        self.bytes_per_position = len(layers) * (m.num_attention_heads + m.num_key_value_heads) * m.head_dim * element + 4
        self.buffers: dict[int, _Buffers] = {}
        self.writes: list[_Write] = []
        self.rows: list[tuple[int, int]] | None = None  # flat-batch rows per batch index, this step

    def bytes_needed(self, batch: SchedulerOutput, traced: set[int]) -> int:
        """How much the buffers must grow to hold this step's positions."""
        total = 0
        for item in batch.scheduled:
            if item.seq_id in traced:
                capacity = self._buffers(item.seq_id).capacity
                total += (self._new_capacity(item.seq_id, item.end) - capacity) * self.bytes_per_position
        return total

    def begin_step(self, batch: SchedulerOutput, traced: set[int]) -> bool:
        """Plan the step's writes (growing buffers as needed). -> whether there is any."""
        bs = self.engine.config.block_size
        self.writes, self.rows = [], None
        for i, item in enumerate(batch.scheduled):
            if item.seq_id not in traced:
                continue
            buffers = self._buffers(item.seq_id)
            self._grow(buffers, self._new_capacity(item.seq_id, item.end))
            # Positions before `start` whose keys are not recorded yet: read from the cache.
            missing = torch.arange(min(buffers.length, item.start), item.start)
            table = torch.tensor(item.block_ids, dtype=torch.long)
            device = self.engine.device
            write = _Write(item.seq_id, i, item.start, item.end,
                           table[missing // bs].to(device), (missing % bs).to(device))
            if batch.phase == "decode":
                new = torch.arange(item.start, item.end)
                write.new_blocks, write.new_offsets = table[new // bs].to(device), (new % bs).to(device)
            self.writes.append(write)
        return bool(self.writes)

    def write(self, layer: int, q: torch.Tensor, k: torch.Tensor, metadata: AttentionMetadata) -> None:
        """on_attention: q [N, H, D], k [N, Hkv, D], the layer's new tokens after RoPE."""
        slot = self.slot_of_layer.get(layer)
        if slot is None:
            return
        if self.rows is None:  # the same for every layer of the step: read it once
            if metadata.is_prefill:
                cu = metadata.cu_seqlens_q.tolist()  # [B + 1]
                self.rows = list(zip(cu, cu[1:]))
            else:
                self.rows = [(i, i + 1) for i in range(q.shape[0])]
        for w in self.writes:
            buffers = self.buffers[w.seq_id]
            first, last = self.rows[w.batch_index]
            buffers.q[slot, w.start : w.end] = q[first:last]
            buffers.k[slot, w.start : w.end] = k[first:last]

    def write_queries(self, queries: torch.Tensor) -> None:
        """on_queries (decode): queries [L_all, B, H, D], every layer's post-RoPE queries of
        the batch. Keys come from the paged cache [L_all, 2, NB + 1, bs, Hkv, D]: the new
        token's, which the step wrote, and any before it not recorded yet (prefix-cache hits)."""
        layers = torch.tensor(self.layers, device=queries.device)  # [L]
        for w in self.writes:
            buffers = self.buffers[w.seq_id]
            buffers.q[:, w.start : w.end] = queries[layers, w.batch_index].unsqueeze(1)  # [L, 1, H, D]
            blocks = torch.cat([w.cache_blocks, w.new_blocks])  # [n]
            offsets = torch.cat([w.cache_offsets, w.new_offsets])
            buffers.k[:, w.end - blocks.numel() : w.end] = self.engine.read_keys(layers, blocks, offsets)  # [L, n, Hkv, D]

    def end_step(self, index: int) -> list[int]:
        """Read the keys of positions this run never computed (prefix-cache hits of a prefill:
        after the forward, from the cache, every captured layer at once), mark the step's
        positions recorded and refresh the trace's views. -> the sequences written."""
        layers = None
        for w in self.writes:
            buffers = self.buffers[w.seq_id]
            if w.new_blocks is None and w.cache_blocks.numel():  # a prefill (write_queries read a decode's)
                if layers is None:
                    layers = torch.tensor(self.layers, device=self.engine.device)  # [L]
                keys = self.engine.read_keys(layers, w.cache_blocks, w.cache_offsets)  # [L, n, Hkv, D]
                buffers.k[:, w.start - w.cache_blocks.numel() : w.start] = keys
            buffers.q_step[w.start : w.end] = index
            buffers.length = max(buffers.length, w.end)
            n = buffers.length
            self.trace.attention[w.seq_id] = AttentionStore(
                w.seq_id, self.layers, buffers.q[:, :n], buffers.k[:, :n], buffers.q_step[:n]
            )
        written = [w.seq_id for w in self.writes]
        self.writes = []
        return written

    # -- buffers -------------------------------------------------------------------------------

    def _buffers(self, seq_id: int) -> _Buffers:
        if seq_id not in self.buffers:
            request = self.engine.request(seq_id)
            max_len = min(request.num_prompt_tokens + request.params.max_tokens, self.engine.max_model_len)
            self.buffers[seq_id] = _Buffers(self._zeros(0, "q"), self._zeros(0, "k"), self._no_steps(0), 0, max_len)
        return self.buffers[seq_id]

    def _new_capacity(self, seq_id: int, end: int) -> int:
        """Room for positions [0, end): doubling keeps the copies few; never past what the
        sequence can use."""
        buffers = self._buffers(seq_id)
        if end <= buffers.capacity:
            return buffers.capacity
        return max(end, min(2 * buffers.capacity, buffers.max_len))

    def _grow(self, buffers: _Buffers, capacity: int) -> None:
        if capacity <= buffers.capacity:
            return
        old = buffers.capacity
        q, k, steps = self._zeros(capacity, "q"), self._zeros(capacity, "k"), self._no_steps(capacity)
        q[:, :old], k[:, :old], steps[:old] = buffers.q, buffers.k, buffers.q_step
        buffers.q, buffers.k, buffers.q_step = q, k, steps

    def _zeros(self, capacity: int, which: str) -> torch.Tensor:
        """An empty q [L, capacity, H, D] or k [L, capacity, Hkv, D] buffer."""
        m = self.engine.model_config
        heads = m.num_attention_heads if which == "q" else m.num_key_value_heads
        return torch.zeros(
            len(self.layers), capacity, heads, m.head_dim, dtype=self.engine.dtype, device=self.engine.device
        )

    @staticmethod
    def _no_steps(capacity: int) -> torch.Tensor:
        return torch.full((capacity,), -1, dtype=torch.int32)
