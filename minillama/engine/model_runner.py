"""ModelRunner: turns a scheduled batch into flat tensors, runs the model, returns logits.

It owns the KV cache: one tensor [num_layers, 2, num_blocks + 1, block_size, Hkv, D]. The extra
last block is scratch space that the padding rows of a CUDA graph write into, so they never
touch a real sequence's K/V. On CUDA, decode steps replay CUDA graphs captured once per batch
size bucket: a decode step is many small kernels, and a graph launches them all at once.
"""

from __future__ import annotations

import bisect
import importlib.util
import itertools
import weakref
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import torch

from minillama import memory
from minillama.config import EngineConfig, ModelConfig
from minillama.engine.decode_tables import DecodeBlockTables
from minillama.engine.scheduler import SchedulerOutput
from minillama.errors import ConfigError
from minillama.model.attention_metadata import AttentionMetadata
from minillama.model.llama import AttentionHook, LayerHook, LlamaForCausalLM
from minillama.ops.reference.unpack_decode import with_pending_tokens
from minillama.transfer import copy_to_device, to_device

# Copies on write, and a decode graph's inputs out of their packed block: one Triton launch each
# on a CUDA machine with Triton, PyTorch indexing elsewhere.
if torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
    from minillama.ops.triton.copy_kv_slots import copy_kv_slots as _copy_kv_slots
    from minillama.ops.triton.unpack_decode import unpack_decode as _unpack_decode
else:
    from minillama.ops.reference.copy_kv_slots import copy_kv_slots as _copy_kv_slots
    from minillama.ops.reference.unpack_decode import unpack_decode as _unpack_decode

_token_ids, _start = attrgetter("token_ids"), attrgetter("start")


@dataclass
class ModelInputs:
    """The flat batch for one forward pass (N tokens of B sequences)."""

    input_ids: torch.Tensor  # [N] int64
    positions: torch.Tensor  # [N] int64
    metadata: AttentionMetadata
    logits_indices: torch.Tensor | None  # [S] int64: rows of the sequences that sample this step; None: all rows
    # A decode step's inputs side by side on the device, [R, 4 + width] int64 (ModelRunner.
    # _prepare_decode): for a batch a CUDA graph runs, a view into the graphs' input buffer,
    # which the graph unpacks. R >= N: the rows past N pad the batch to its graph's size. None
    # for a prefill.
    packed: torch.Tensor | None = None
    graph_size: int | None = None  # the decode graph whose input buffer holds `packed` (None: none does)
    # Async scheduling: the tokens [P] int64 (on the device) of the step before, which the host has
    # not read; an input id -1 - i is a placeholder for pending[i] (engine/in_flight.py). run()
    # puts them in place: a graph replay inside the graph, an eager step before its forward.
    pending: torch.Tensor | None = None


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype, num_kv_heads: int) -> int:
    """Bytes of K and V for one block across all layers, for `num_kv_heads` KV heads (a
    tensor-parallel rank caches only its own)."""
    element = torch.empty(0, dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * block_size * num_kv_heads * config.head_dim * element


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        model_config: ModelConfig,
        engine_config: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        max_model_len: int,
    ):
        self.model = model
        self.config = model_config
        self.num_kv_heads = model_config.num_key_value_heads // model.shard.world  # this rank's (all, in one process)
        self.block_size = engine_config.block_size
        self.device = device
        self.dtype = dtype
        self.max_blocks_per_seq = (max_model_len + self.block_size - 1) // self.block_size
        # Tensor-parallel ranks each measure what fits on their device and take the least: every
        # rank holds the same blocks (its own KV heads of them), so that one block table means
        # the same blocks everywhere.
        self.num_blocks = model.shard.least(engine_config.num_kv_blocks or self._blocks_that_fit(engine_config,
                                                                                                  max_model_len))
        self._check_kv_cache_fits()
        self.scratch_block = self.num_blocks
        self.kv_cache = torch.zeros(
            model_config.num_hidden_layers, 2, self.num_blocks + 1, self.block_size,
            self.num_kv_heads, model_config.head_dim, dtype=dtype, device=device,
        )
        self.max_num_seqs = engine_config.max_num_seqs
        # Two batches' rows of int64 block ids, in host memory: 2**31 sequences would ask for
        # hundreds of GiB, and numpy's MemoryError would name no setting.
        memory.check_fits("the decode block tables (2 x max_num_seqs x the blocks of max_model_len)",
                          2 * self.max_num_seqs * self.max_blocks_per_seq * 8, torch.device("cpu"), ConfigError,
                          lambda usable: ": lower --max-num-seqs or --max-model-len")
        self.decode_tables = DecodeBlockTables(2 * self.max_num_seqs, self.max_blocks_per_seq)  # two batches' rows
        # [L, max_num_seqs, H, D] once enable_query_capture() is called; last_queries is the
        # filled part after a decode step, [L, B, H, D] (None after a prefill).
        self.query_buffer: torch.Tensor | None = None
        self.last_queries: torch.Tensor | None = None
        self.bind_kv_cache()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_sizes: list[int] = []  # sorted(self.graphs)
        if device.type == "cuda" and not engine_config.enforce_eager and model.ops.attention.graph_safe:
            self._capture_decode_graphs(engine_config.max_num_seqs)

    def bind_kv_cache(self) -> None:
        """Point every attention layer of the model at this runner's KV cache (and query
        buffer, if any).

        Several engines may share one model (the web UI gives each browser session its own
        engine and KV pool over one copy of the weights): each binds its cache before it runs,
        and whoever shares a model runs one engine step at a time. A captured CUDA graph keeps
        the cache addresses it was captured with, so replays need no binding."""
        owner = getattr(self.model, "kv_cache_owner", None)
        if owner is not None and owner() is self:
            return
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = self.kv_cache[i]
            layer.self_attn.query_out = self.query_buffer[i] if self.query_buffer is not None else None
        # A weak reference: the model must not keep a finished session's runner alive.
        self.model.kv_cache_owner = weakref.ref(self)

    def enable_query_capture(self) -> None:
        """From now on, for the runner's life, every decode step copies each layer's post-RoPE
        queries into query_buffer (one small copy per layer), and run() exposes them as
        last_queries. The decode graphs are captured again with the copies in them: an
        observer of queries then costs no eager step. (Keys need no copy: they are in the
        paged cache.)"""
        if self.query_buffer is not None:
            return
        m = self.config
        heads = m.num_attention_heads // self.model.shard.world  # this process's
        self.query_buffer = torch.zeros(m.num_hidden_layers, self.max_num_seqs, heads, m.head_dim,
                                        dtype=self.dtype, device=self.device)
        self.model.kv_cache_owner = None  # bind again, with the buffer
        self.bind_kv_cache()
        if self.graphs:
            self.graphs, self.graph_sizes = {}, []
            self._capture_decode_graphs(self.max_num_seqs)

    # -- sizing the KV cache --------------------------------------------------------------------

    def _check_kv_cache_fits(self) -> None:
        """Refuse, saying how many blocks would fit, a KV cache (plus its scratch block) larger
        than the memory the device has free: minillama/memory.py says what happens otherwise."""
        block_bytes = kv_block_bytes(self.config, self.block_size, self.dtype, self.num_kv_heads)

        def what_fits(usable: int) -> str:
            fit = usable // block_bytes - 1
            if fit < 1:
                return f": not one block of {self.block_size} tokens ({memory.gib(block_bytes)}) fits"
            return f": at most {fit} blocks of {self.block_size} tokens fit (--num-kv-blocks, --kv-cache-gb)"

        memory.check_fits("the KV cache", (self.num_blocks + 1) * block_bytes, self.device, ConfigError, what_fits)

    def _blocks_that_fit(self, engine_config: EngineConfig, max_model_len: int) -> int:
        block_bytes = kv_block_bytes(self.config, self.block_size, self.dtype, self.num_kv_heads)
        # Never more than every running sequence at full length could use.
        useful = engine_config.max_num_seqs * self.max_blocks_per_seq
        if self.device.type != "cuda":
            # The pool is these blocks and the scratch block, all within --kv-cache-gb: a budget
            # of one block's bytes or less holds no block a sequence could use.
            budget = int(engine_config.kv_cache_memory_gb * 2**30)
            if budget < 2 * block_bytes:
                raise ConfigError(
                    f"--kv-cache-gb {engine_config.kv_cache_memory_gb:g} holds no KV block of this model: a block of "
                    f"{self.block_size} tokens takes {block_bytes:,} bytes, and the pool needs two (one is the "
                    f"scratch block); raise --kv-cache-gb or give --num-kv-blocks")
            return min(useful, budget // block_bytes - 1)
        # On CUDA: measure the activation peak of the largest prefill with a throwaway cache,
        # then give the KV cache what the utilisation fraction leaves.
        tokens = min(engine_config.max_num_batched_tokens, max_model_len)
        warmup_blocks = (tokens + self.block_size - 1) // self.block_size
        self.kv_cache = torch.zeros(
            self.config.num_hidden_layers, 2, warmup_blocks, self.block_size,
            self.num_kv_heads, self.config.head_dim, dtype=self.dtype, device=self.device,
        )
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = self.kv_cache[i]
        torch.cuda.reset_peak_memory_stats(self.device)
        ids = torch.zeros(tokens, dtype=torch.long, device=self.device)
        positions = torch.arange(tokens, device=self.device)
        cu = torch.tensor([0, tokens], dtype=torch.int32, device=self.device)
        metadata = AttentionMetadata(True, positions, None, cu, cu, tokens, tokens)
        with torch.inference_mode():
            self.model.compute_logits(self.model(ids, positions, metadata)[-1:])
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        del self.kv_cache
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        in_use_elsewhere = total - free - torch.cuda.memory_reserved(self.device)
        budget = total * engine_config.gpu_memory_utilization - in_use_elsewhere - peak
        budget = min(budget, memory.usable_bytes(self.device))  # utilisation 1.0 cannot have every byte
        if budget < 2 * block_bytes:  # a block a sequence can use, and the scratch block
            raise ConfigError(
                f"no GPU memory left for the KV cache (utilisation {engine_config.gpu_memory_utilization}, "
                f"{free / 2**30:.1f} GiB free); raise --gpu-memory-utilization or lower --max-num-batched-tokens"
            )
        return min(useful, int(budget // block_bytes) - 1)  # - 1: the scratch block

    # -- copy on write ---------------------------------------------------------------------------

    @torch.inference_mode()
    def copy_kv_slots(self, copies: list[tuple[int, int, int]]) -> None:
        """Forks' copies on write (BlockManager.fork): for each (src_block, dst_block, num_slots),
        kv_cache[:, :, dst, :num_slots] = kv_cache[:, :, src, :num_slots] in every layer, K and V
        ([L, 2, num_slots, Hkv, D] each). The slots past num_slots are the child's to fill.

        All of them at once: the [C, 3] table travels to the device in one copy; on CUDA one
        Triton launch (ops/triton/copy_kv_slots.py says why PyTorch's indexing would take dozens
        on a large cache), elsewhere one gather and one scatter (ops/reference/copy_kv_slots.py)."""
        flat = np.fromiter(itertools.chain.from_iterable(copies), dtype=np.int64, count=3 * len(copies))
        self.copy_kv_table(torch.from_numpy(flat).view(-1, 3))  # [C, 3]; torch.tensor(copies) is 4x slower

    def read_keys(self, layers: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Post-RoPE keys out of the paged cache: layers [L], and [n] (block, offset) pairs ->
        [L, n, Hkv, D] (this process's KV heads), in one gather over (layer, position) pairs
        (indexing the cache by layers first would copy every layer's whole cache)."""
        return self.kv_cache[layers[:, None], 0, blocks[None, :], offsets[None, :]]

    @torch.inference_mode()
    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final RMSNorm, then the LM head: hidden [M, hidden_size] -> logits [M, vocab] fp32."""
        return self.model.compute_logits(self.model.model.norm(hidden))

    def copy_kv_table(self, table: torch.Tensor) -> None:
        """copy_kv_slots with the copies as a [C, 3] int64 CPU tensor (src, dst, num_slots)."""
        _copy_kv_slots(self.kv_cache, to_device(table, self.device))

    # -- building the flat batch --------------------------------------------------------------

    def prepare(self, batch: SchedulerOutput, pending: torch.Tensor | None = None) -> ModelInputs:
        """The step's flat tensors. pending: the tokens [S] (on the device) of a step the host
        has not read yet (async scheduling, minillama/engine/in_flight.py); an input id -1 - i
        in the batch is a placeholder for pending[i], which run() puts in its place."""
        inputs = self._prepare_prefill(batch) if batch.phase == "prefill" else self._prepare_decode(batch)
        if pending is not None and pending.numel():
            inputs.pending = pending
        return inputs

    @staticmethod
    def resolve_placeholders(inputs: ModelInputs) -> None:
        """Put the pending tokens in their placeholders' places in inputs.input_ids, on the device,
        in place (a decode step's ids are a column of its packed block)."""
        if inputs.pending is None:
            return
        inputs.input_ids.copy_(with_pending_tokens(inputs.input_ids, inputs.pending))
        inputs.pending = None

    def _prepare_prefill(self, batch: SchedulerOutput) -> ModelInputs:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        cu_q, cu_k = [0], [0]
        logits_indices: list[int] = []
        for item in batch.scheduled:
            table = item.block_ids
            input_ids += item.token_ids
            positions += range(item.start, item.end)
            slots += [table[p // bs] * bs + p % bs for p in range(item.start, item.end)]  # block * bs + offset
            cu_q.append(cu_q[-1] + item.num_tokens)
            cu_k.append(cu_k[-1] + item.end)  # keys: the cached prefix and the new tokens
            if item.samples:
                logits_indices.append(cu_q[-1] - 1)  # the last token's output predicts the next
        # Block tables are needed only when some sequence attends to K/V computed earlier
        # (a prefix-cache hit or an earlier chunk); otherwise attention uses the fresh K/V.
        has_prefix = any(item.start > 0 for item in batch.scheduled)
        metadata = AttentionMetadata(
            is_prefill=True,
            slot_mapping=self._tensor(slots, torch.long),
            block_tables=self._block_tables(batch) if has_prefix else None,
            cu_seqlens_q=self._tensor(cu_q, torch.int32),
            cu_seqlens_k=self._tensor(cu_k, torch.int32),
            max_seqlen_q=max(item.num_tokens for item in batch.scheduled),
            max_seqlen_k=max(item.end for item in batch.scheduled),
        )
        return ModelInputs(
            self._tensor(input_ids, torch.long), self._tensor(positions, torch.long), metadata,
            self._tensor(logits_indices, torch.long),
        )

    def _prepare_decode(self, batch: SchedulerOutput) -> ModelInputs:
        """One token per sequence: its last one, at position num_tokens - 1.

        Decode runs every step for the whole batch, so its inputs are built with numpy and sent
        to the device in one copy: [B] ids, [B] positions, [B] slots, [B] context lengths and
        the [B, width] block tables, side by side in one int64 row block behind a header that
        holds the width (ops/reference/unpack_decode.py draws the layout), padded with rows that
        compute nothing up to the size of the CUDA graph that will run it. A batch a graph runs
        is copied straight into the graphs' input buffer, which the graph unpacks."""
        scheduled = batch.scheduled
        n, bs = len(scheduled), self.block_size
        tables = self.decode_tables.gather(scheduled)  # [B, width], kept from step to step
        graph_size = self._graph_size(n)
        rows, width = graph_size or n, tables.shape[1]
        flat = np.empty(1 + rows * (4 + width), dtype=np.int64)
        flat[0] = width
        host = flat[1:].reshape(rows, 4 + width)
        # Each record computes one token: the one sampled last step, at position `start`.
        host[:n, 0] = np.fromiter(itertools.chain.from_iterable(map(_token_ids, scheduled)), dtype=np.int64, count=n)
        host[:n, 1] = np.fromiter(map(_start, scheduled), dtype=np.int64, count=n)
        host[:n, 3] = host[:n, 1] + 1  # context length, the new token included
        host[:n, 4:] = tables
        blocks = tables[np.arange(n), host[:n, 1] // bs]
        host[:n, 2] = blocks * bs + host[:n, 1] % bs  # the slot the new token's K/V goes to
        if rows > n:  # padding: token 0 at position 0, attending over the scratch block, writing its K/V there
            host[n:, :4] = (0, 0, self.scratch_block * bs, 1)
            host[n:, 4:] = self.scratch_block
        if graph_size is None:
            block = to_device(torch.from_numpy(flat), self.device)
        else:  # queued behind the graph replayed last, which has read the buffer's last contents
            block = copy_to_device(self.static["inputs"][: flat.size], torch.from_numpy(flat))
        return self._decode_inputs(block[1:].view(rows, 4 + width), n, graph_size)

    def decode_inputs(self, packed: torch.Tensor, num_seqs: int) -> ModelInputs:
        """A decode step's inputs from a packed block [R, 4 + width] on this runner's device (a
        tensor-parallel rank receives rank 0's): put in the graphs' input buffer when R is the size
        of the graph that runs num_seqs sequences, as _prepare_decode does, else run as they are."""
        graph_size = self._graph_size(num_seqs)
        if graph_size != packed.shape[0]:
            return self._decode_inputs(packed, num_seqs, None)
        buffer = self.static["inputs"]
        buffer[0] = packed.shape[1] - 4  # the header: the tables' width
        block = buffer[1: 1 + packed.numel()]
        block.copy_(packed.view(-1))
        return self._decode_inputs(block.view(packed.shape), num_seqs, graph_size)

    @staticmethod
    def _decode_inputs(packed: torch.Tensor, n: int, graph_size: int | None) -> ModelInputs:
        """ModelInputs over a decode step's packed block [R, 4 + width] of n sequences (R >= n)."""
        # The block tables and context lengths as the attention kernels take them (int32) are
        # made by run(), and only when it runs the model eagerly: a graph replay unpacks them
        # inside the graph, and two conversions a step would cost the host two launches for nothing.
        metadata = AttentionMetadata(is_prefill=False, slot_mapping=packed[:n, 2])
        # Every row samples: no index to launch.
        return ModelInputs(packed[:n, 0], packed[:n, 1], metadata, None, packed, graph_size=graph_size)

    def _block_tables(self, batch: SchedulerOutput) -> torch.Tensor:
        """[B, max blocks in the batch] int32, padded with block 0 (masked by the lengths)."""
        tables = [item.block_ids for item in batch.scheduled]
        width = max(map(len, tables))
        return self._tensor([t + (0,) * (width - len(t)) for t in tables], torch.int32)

    def _tensor(self, data: list, dtype: torch.dtype) -> torch.Tensor:
        return to_device(torch.tensor(data, dtype=dtype), self.device)

    # -- running ----------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, inputs: ModelInputs, on_attention: AttentionHook | None = None,
            on_layer: LayerHook | None = None, float32: bool = True) -> torch.Tensor:
        """Forward pass -> logits [S, vocab] (fp32, or the model's dtype when not `float32`) for
        the sequences that sample. A per-layer hook makes the step run eagerly: a CUDA graph
        replays kernels, it calls no Python."""
        num_seqs = inputs.input_ids.shape[0]
        self.bind_kv_cache()
        hooked = on_attention is not None or on_layer is not None
        decode_queries = self.query_buffer is not None and not inputs.metadata.is_prefill
        self.last_queries = self.query_buffer[:, :num_seqs] if decode_queries else None
        if inputs.graph_size is not None and not hooked and self._in_graph_buffer(inputs):
            hidden = self._replay_decode_graph(inputs)
        else:
            self.resolve_placeholders(inputs)
            if inputs.packed is not None and inputs.metadata.block_tables is None:  # an eager decode step
                packed = inputs.packed
                inputs.metadata.block_tables = packed[:num_seqs, 4:].to(torch.int32)  # [B, width]
                inputs.metadata.context_lens = packed[:num_seqs, 3].to(torch.int32)  # [B]
            hidden = self.model(inputs.input_ids, inputs.positions, inputs.metadata, on_attention, on_layer)
        # The LM head runs after the graph, on the batch's rows only: in the graph it would save one
        # launch, and compute the padding rows' logits too (up to 15 rows more in a bucket of 16).
        sampling = hidden if inputs.logits_indices is None else hidden[inputs.logits_indices]
        return self.model.compute_logits(sampling, float32)

    # -- CUDA graphs ----------------------------------------------------------------------------

    def _graph_sizes(self, max_num_seqs: int) -> list[int]:
        sizes = [1, 2, 4, 8] + list(range(16, max_num_seqs + 1, 16))
        return sorted({s for s in sizes if s <= max_num_seqs} | {max_num_seqs})

    def _capture_decode_graphs(self, max_num_seqs: int) -> None:
        """Capture one decode graph per batch-size bucket, sharing static input buffers.

        A replay runs a batch of n sequences in the smallest bucket >= n; the padding rows
        attend over the scratch block and write their K/V there. Each graph starts by unpacking
        its inputs out of the input buffer (a header with the batch's table width, then a row per
        sequence, as _prepare_decode writes it) in one launch, placeholders resolved there
        (_unpack); its output is the final hidden states (the LM head runs after it: run()). A replay
        costs the host one copy into the input buffer (the sampler writes the tokens the next
        step's placeholders stand for into `pending`), where a copy per input, a fill per
        padding and the placeholders' gather cost it fourteen launches a step."""
        # Ordinary tensors, whatever mode the caller is in: the host writes the inputs, and the
        # sampler the tokens, outside inference mode, and an inference tensor takes in-place
        # writes only inside it.
        with torch.inference_mode(False):
            self._make_static_buffers(max_num_seqs)
        self._capture_graphs_over_static(max_num_seqs)

    def _make_static_buffers(self, n: int) -> None:
        """The graphs' inputs, unpacked inputs and pending tokens, for up to n sequences."""
        dev, scratch_slot = self.device, self.scratch_block * self.block_size
        # The input buffer as _prepare_decode writes it, width 1, every row a padding row; room
        # after it for the widest tables.
        rows = torch.tensor([0, 0, scratch_slot, 1, self.scratch_block]).repeat(n)
        room = torch.zeros(n * (self.max_blocks_per_seq - 1), dtype=torch.long)
        self.static = {
            "inputs": torch.cat([torch.ones(1, dtype=torch.long), rows, room]).to(dev),
            "pending": torch.zeros(n, dtype=torch.long, device=dev),  # the step before's tokens (async)
            "input_ids": torch.zeros(n, dtype=torch.long, device=dev),
            "positions": torch.zeros(n, dtype=torch.long, device=dev),
            "slot_mapping": torch.full((n,), scratch_slot, dtype=torch.long, device=dev),
            "context_lens": torch.ones(n, dtype=torch.int32, device=dev),
            "block_tables": torch.full((n, self.max_blocks_per_seq), self.scratch_block, dtype=torch.int32, device=dev),
        }

    @torch.inference_mode()
    def _capture_graphs_over_static(self, max_num_seqs: int) -> None:
        """A graph per bucket over self.static, each warmed up once before its capture."""
        # Each graph's final hidden states, [size, hidden]: its output, in the pool the graphs
        # share, read (by the LM head) before the next replay overwrites it.
        self.graph_hidden: dict[int, torch.Tensor] = {}
        dev = self.device
        pool = None
        for size in reversed(self._graph_sizes(max_num_seqs)):  # largest first: it sizes the pool
            s = {k: v[:size] for k, v in self.static.items()}
            s["inputs"] = self.static["inputs"]  # whole: its header says where its rows are
            s["pending"] = self.static["pending"]  # whole: a placeholder may name any row of the step before
            metadata = AttentionMetadata(
                False, s["slot_mapping"], s["block_tables"], context_lens=s["context_lens"]
            )
            self._unpack(s)
            self.model(s["input_ids"], s["positions"], metadata)  # warm up outside the graph
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._unpack(s)
                self.graph_hidden[size] = self.model(s["input_ids"], s["positions"], metadata)
            pool = graph.pool()
            self.graphs[size] = graph
        self.graph_sizes = sorted(self.graphs)
        torch.cuda.synchronize(dev)

    def _unpack(self, s: dict[str, torch.Tensor]) -> None:
        """The graph's inputs from its packed block (columns: id, position, slot, context
        length, then the block table), placeholders replaced from `pending`, converted where the
        kernels want int32: one launch (ops/triton/unpack_decode.py)."""
        _unpack_decode(s["inputs"], s["pending"], s["input_ids"], s["positions"], s["slot_mapping"],
                       s["context_lens"], s["block_tables"], self.block_size)

    def _in_graph_buffer(self, inputs: ModelInputs) -> bool:
        """Are the inputs in the graphs' input buffer still? Not if the graphs were captured
        again (enable_query_capture) since they were prepared: the new graphs read new buffers,
        and the step then runs eagerly from where its inputs are."""
        return inputs.packed.untyped_storage().data_ptr() == self.static["inputs"].untyped_storage().data_ptr()

    def sampled_tokens_buffer(self, num_tokens: int) -> torch.Tensor | None:
        """Where the sampler may write a step's tokens ([num_tokens] int64), or None for a tensor
        of its own. With decode graphs: the buffer the graphs read their placeholders' tokens
        from, so the step after needs no copy of them (a write after this step's graph has read
        the step before's, in stream order)."""
        if not self.graphs or num_tokens > self.max_num_seqs:
            return None
        return self.static["pending"][:num_tokens]

    def _graph_size(self, n: int) -> int | None:
        """The size of the graph a decode batch of n sequences replays in (None: none does)."""
        sizes = self.graph_sizes
        if not sizes or n > sizes[-1]:
            return None
        return sizes[bisect.bisect_left(sizes, n)]

    def _replay_decode_graph(self, inputs: ModelInputs) -> torch.Tensor:
        """Run a decode batch in its graph -> its final hidden states [n, hidden] (the graph's
        output buffer: read it before the next replay). Its packed inputs are in the
        graph's input buffer already (_prepare_decode). Block-table columns past the blocks a
        row's context length covers keep what earlier steps left there, which no kernel reads
        (a padding row reads only the scratch block)."""
        pending, buffer = inputs.pending, self.static["pending"]
        if pending is not None and pending.data_ptr() != buffer.data_ptr():  # not sampled into it
            buffer[: pending.shape[0]] = pending
        self.graphs[inputs.graph_size].replay()
        return self.graph_hidden[inputs.graph_size][: inputs.input_ids.shape[0]]
