"""What the driver (rank 0) sends the other ranks each step, as tensors broadcast through the
process group: never pickled objects, so a rank only ever reads numbers it can check.

A message is a header, then its tensors. The header is HEADER_INTS int64 values:

    [command, flag, number of tensors, then per tensor: dtype code, on the GPU, rows, columns]

(a 1-D tensor has columns -1; an absent tensor has dtype code -1). The other ranks allocate
each tensor from its header entry, on their own device when rank 0's was on its GPU, and
receive it with a broadcast of their own. The header is a CPU tensor: on GPUs the process group
has two backends ("cpu:gloo,cuda:nccl"), so it travels through gloo, where the host reads it,
and a GPU tensor through NCCL, from device to device.
"""

from __future__ import annotations

from enum import IntEnum

import torch
import torch.distributed as dist

from minillama.engine.model_runner import ModelInputs, ModelRunner
from minillama.model.attention_metadata import AttentionMetadata


class Command(IntEnum):
    RUN = 1  # a forward pass: its ModelInputs; flag: the bits below
    COPY_KV = 2  # copies on write: one [C, 3] int64 tensor
    STOP = 3  # the engine is closing: leave the loop
    READOUT = 4  # final norm and LM head of some residual-stream rows: one [M, hidden] tensor
    READ_KEYS = 5  # keys out of the paged cache for an observer: layers [L], blocks [n], offsets [n]
    CAPTURE_QUERIES = 6  # enable_query_capture(): on GPUs every rank captures its decode graphs again


# RUN's flag bits.
FLOAT32 = 1  # the logits in fp32
GATHER_ATTENTION = 2  # an observer's attention hook runs: gather every layer's q, k, v, output
GATHER_QUERIES = 4  # an observer reads the decode queries: gather them after the step


DTYPES = (torch.int64, torch.int32, torch.float32, torch.bfloat16, torch.float16)
MAX_TENSORS = 10
ENTRY_INTS = 4
HEADER_INTS = 3 + ENTRY_INTS * MAX_TENSORS


def send(command: Command, tensors: list[torch.Tensor | None] = (), flag: int = 0) -> None:
    """Broadcast a message from rank 0 (every other rank is in receive())."""
    header = torch.full((HEADER_INTS,), -1, dtype=torch.int64)
    header[:3] = torch.tensor([int(command), flag, len(tensors)])
    assert len(tensors) <= MAX_TENSORS
    for i, tensor in enumerate(tensors):
        if tensor is not None:
            assert tensor.dim() in (1, 2), "messages carry 1-D and 2-D tensors"
            rows, columns = (tensor.shape[0], -1) if tensor.dim() == 1 else tensor.shape
            entry = [DTYPES.index(tensor.dtype), int(tensor.is_cuda), rows, columns]
            header[3 + ENTRY_INTS * i: 3 + ENTRY_INTS * (i + 1)] = torch.tensor(entry)
    dist.broadcast(header, src=0)
    for tensor in tensors:
        if tensor is not None:
            dist.broadcast(tensor.contiguous(), src=0)


def receive(device: torch.device) -> tuple[Command, int, list[torch.Tensor | None]]:
    """The next message from rank 0: (command, flag, tensors), a tensor rank 0 sent from its GPU
    on `device` (this rank's), any other on the CPU."""
    header = torch.empty(HEADER_INTS, dtype=torch.int64)
    dist.broadcast(header, src=0)
    command, flag, count = header[:3].tolist()
    if command not in {c.value for c in Command} or not 0 <= count <= MAX_TENSORS:
        raise RuntimeError(f"tensor-parallel message with a bad header: {header[:3].tolist()}")
    tensors: list[torch.Tensor | None] = []
    for i in range(count):
        code, on_gpu, rows, columns = header[3 + ENTRY_INTS * i: 3 + ENTRY_INTS * (i + 1)].tolist()
        if code < 0:
            tensors.append(None)
            continue
        if code >= len(DTYPES) or on_gpu not in (0, 1) or rows < 0 or columns < -1:
            raise RuntimeError(f"tensor-parallel message with a bad tensor entry: {[code, on_gpu, rows, columns]}")
        shape = (rows,) if columns < 0 else (rows, columns)
        tensor = torch.empty(shape, dtype=DTYPES[code], device=device if on_gpu else "cpu")
        dist.broadcast(tensor, src=0)
        tensors.append(tensor)
    return Command(command), flag, tensors


# ModelInputs as a list of tensors and back. Ints (whether it is a prefill, its longest query
# and key, the number of sequences) travel as a small int64 tensor of their own. A decode step
# is all in its packed block (ModelRunner._prepare_decode): that block is all it sends.

def inputs_to_tensors(inputs: ModelInputs) -> list[torch.Tensor | None]:
    m = inputs.metadata
    num_seqs = inputs.input_ids.shape[0]
    scalars = torch.tensor([int(m.is_prefill), m.max_seqlen_q, m.max_seqlen_k, num_seqs], dtype=torch.int64)
    if not m.is_prefill and inputs.packed is not None:
        return [scalars, inputs.packed]
    return [scalars, inputs.input_ids, inputs.positions, inputs.logits_indices, inputs.packed,
            m.slot_mapping, m.block_tables, m.cu_seqlens_q, m.cu_seqlens_k, m.context_lens]


def tensors_to_inputs(tensors: list[torch.Tensor | None], runner: ModelRunner) -> ModelInputs:
    """The inputs rank 0 sent, for `runner` (this rank's): a decode step's block goes into the
    runner's graph input buffer when a graph of its size can run it, as on rank 0."""
    scalars, *rest = tensors
    is_prefill, max_q, max_k, num_seqs = scalars.tolist()
    if not is_prefill and len(rest) == 1:
        return runner.decode_inputs(rest[0], num_seqs)
    input_ids, positions, logits_indices, packed, slots, tables, cu_q, cu_k, lens = rest
    metadata = AttentionMetadata(
        is_prefill=bool(is_prefill), slot_mapping=slots, block_tables=tables, cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k, context_lens=lens,
    )
    return ModelInputs(input_ids, positions, metadata, logits_indices, packed)
