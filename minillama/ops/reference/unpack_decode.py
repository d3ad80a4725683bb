"""A CUDA-graph decode step's inputs out of its packed block, readable: the reference for
ops/triton/unpack_decode.py.

The host sends a decode step's inputs to the device as one flat int64 block (ModelRunner.
_prepare_decode), straight into the graphs' static input buffer:

    [W, then R rows of 4 + W: id, position, slot, context length, block table (W blocks)]

W, the batch's widest table, changes from step to step while a captured graph's kernels are
fixed, so the graph reads it from the block's header, on the device. The graph unpacks the block
into the tensors the model's kernels take. An id may be a placeholder, -1 - i, for the token
row i of the step before sampled, which the host has not read yet (async scheduling,
engine/in_flight.py): the graph reads it from its static `pending` buffer.

Everything here is a tensor op, with no read back to the host (a graph could not capture one):
the rows are gathered through an index built from the header's W.
"""

from __future__ import annotations

import torch


def with_pending_tokens(ids: torch.Tensor, pending: torch.Tensor) -> torch.Tensor:
    """ids [N] int64, some of them placeholders -1 - i -> [N]: each placeholder replaced by
    pending[i] ([P] int64), the other ids as they are."""
    rows = (-1 - ids).clamp(min=0, max=pending.shape[0] - 1)  # each placeholder's row (row 0 for the others)
    return torch.where(ids < 0, pending[rows], ids)


def unpack_decode(block: torch.Tensor, pending: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor,
                  slot_mapping: torch.Tensor, context_lens: torch.Tensor, block_tables: torch.Tensor,
                  block_size: int) -> None:
    """block [1 + R * (4 + W) or more] int64, pending [P] int64 -> in place: input_ids, positions,
    slot_mapping [R] int64, context_lens [R] int32, block_tables [R, max W] int32 (its first W
    columns; block_size is the fast kernel's, which copies only the columns a row's context
    covers)."""
    rows, max_width = block_tables.shape
    width = block[0]  # a 0-d tensor on the device
    row = torch.arange(rows, device=block.device)[:, None]  # [R, 1]
    column = torch.arange(4 + max_width, device=block.device)[None, :]  # [1, 4 + max W]
    index = (1 + row * (4 + width) + column).clamp_(max=block.shape[0] - 1)  # [R, 4 + max W]
    packed = block[index]  # [R, 4 + max W]: row r's values; past column 4 + W, garbage
    input_ids.copy_(with_pending_tokens(packed[:, 0], pending))
    positions.copy_(packed[:, 1])
    slot_mapping.copy_(packed[:, 2])
    context_lens.copy_(packed[:, 3])
    in_table = column[:, 4:] < 4 + width  # [1, max W]: the batch's columns
    block_tables.copy_(torch.where(in_table, packed[:, 4:], block_tables))
