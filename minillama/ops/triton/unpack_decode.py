"""A CUDA-graph decode step's inputs out of their packed block, in one launch.

What ops/reference/unpack_decode.py does with a dozen PyTorch launches (the layout is described
there), one program per row here: inside a graph each launch costs ~2-3 us of GPU time however
little it does, and a decode step at batch 1 is ~1.2 ms, which the project wants within 2x its
bandwidth floor. A row's block table is copied only as far as its context length reaches (the
attention kernels mask their block-table loads by it), not across the batch's width.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _unpack_kernel(block_ptr, pending_ptr, ids_ptr, positions_ptr, slots_ptr, context_lens_ptr, tables_ptr,
                   table_stride, BLOCK_SIZE: tl.constexpr, COLUMNS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    width = tl.load(block_ptr)  # the header: this step's table width
    src = block_ptr + 1 + row * (4 + width)  # this row: id, position, slot, context length, table
    token = tl.load(src)
    placeholder = token < 0  # -1 - i stands for pending[i]
    token = tl.where(placeholder, tl.load(pending_ptr + (-1 - token), mask=placeholder, other=0), token)
    tl.store(ids_ptr + row, token)
    tl.store(positions_ptr + row, tl.load(src + 1))
    tl.store(slots_ptr + row, tl.load(src + 2))
    context = tl.load(src + 3)
    tl.store(context_lens_ptr + row, context.to(tl.int32))
    num_blocks = (context + BLOCK_SIZE - 1) // BLOCK_SIZE
    for start in range(0, num_blocks, COLUMNS):
        column = start + tl.arange(0, COLUMNS)
        mask = column < num_blocks
        table = tl.load(src + 4 + column, mask=mask)
        tl.store(tables_ptr + row * table_stride + column, table.to(tl.int32), mask=mask)


def unpack_decode(block: torch.Tensor, pending: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor,
                  slot_mapping: torch.Tensor, context_lens: torch.Tensor, block_tables: torch.Tensor,
                  block_size: int) -> None:
    """block [1 + R * (4 + W) or more] int64 (the reference's layout), pending [P] int64 -> in
    place: input_ids, positions, slot_mapping [R] int64, context_lens [R] int32, block_tables
    [R, max W] int32 (each row's columns up to its context length's last block)."""
    assert block.is_contiguous() and block_tables.stride(1) == 1
    _unpack_kernel[(block_tables.shape[0],)](block, pending, input_ids, positions, slot_mapping, context_lens,
                                             block_tables, block_tables.stride(0), block_size, COLUMNS=128)
