"""A decode graph's inputs out of their packed block: the Triton kernel
(minillama/ops/triton/unpack_decode.py) against the readable reference
(minillama/ops/reference/unpack_decode.py), and the reference against hand-worked values.

The Triton tests run on a CUDA GPU (pytest -m cuda), and on the CPU through Triton's
interpreter (conftest.py turns it on where there is no GPU)."""

from __future__ import annotations

import pytest
import torch
from triton_support import capture_graph, requires_cuda, requires_interpreter

from minillama.ops.reference.unpack_decode import unpack_decode as reference_unpack

BLOCK_SIZE = 16
UNTOUCHED = -7  # what the block tables hold before an unpack: columns a row does not cover keep it


def outputs(rows: int, width: int, device: str) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.full((rows,), UNTOUCHED, dtype=torch.long, device=device),
        "positions": torch.full((rows,), UNTOUCHED, dtype=torch.long, device=device),
        "slot_mapping": torch.full((rows,), UNTOUCHED, dtype=torch.long, device=device),
        "context_lens": torch.full((rows,), UNTOUCHED, dtype=torch.int32, device=device),
        "block_tables": torch.full((rows, width), UNTOUCHED, dtype=torch.int32, device=device),
    }


def random_batch(rows: int, width: int, num_pending: int, device: str,
                 room: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat input block (header W = width, then the rows), with random contexts up to the
    table's capacity and about half the ids placeholders for any row of `pending`
    [num_pending]; `room` more elements after it, as in the graphs' larger buffer."""
    context = torch.randint(1, width * BLOCK_SIZE + 1, (rows,))
    ids = torch.randint(0, 128_000, (rows,))
    placeholder = torch.rand(rows) < 0.5
    ids[placeholder] = -1 - torch.randint(0, num_pending, (int(placeholder.sum()),))
    positions = context - 1
    tables = torch.randint(0, 10_000, (rows, width))
    slots = tables[torch.arange(rows), positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE
    packed = torch.cat([torch.stack([ids, positions, slots, context], dim=1), tables], dim=1)
    block = torch.cat([torch.tensor([width]), packed.flatten(), torch.randint(-5, 5, (room,))])
    pending = torch.randint(0, 128_000, (num_pending,))
    return block.to(device), pending.to(device)


def call(unpack, packed: torch.Tensor, pending: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    unpack(packed, pending, out["input_ids"], out["positions"], out["slot_mapping"], out["context_lens"],
           out["block_tables"], BLOCK_SIZE)


def test_reference_by_hand():
    # Width 3 in a buffer with room for 4 columns. Row 0: a real token; row 1: a placeholder for
    # pending[0]; row 2: for pending[3], a row past this batch's size (the step before ran more
    # sequences).
    block = torch.tensor([
        3,
        11, 0, 5 * 16, 1, 5, 0, 0,
        -1, 16, 7 * 16, 17, 6, 7, 0,
        -4, 40, 9 * 16 + 8, 41, 1, 2, 9,
        99, 99, 99,
    ])
    pending = torch.tensor([100, 101, 102, 103])
    out = outputs(3, 4, "cpu")
    call(reference_unpack, block, pending, out)
    assert out["input_ids"].tolist() == [11, 100, 103]
    assert out["positions"].tolist() == [0, 16, 40]
    assert out["slot_mapping"].tolist() == [80, 112, 152]
    assert out["context_lens"].tolist() == [1, 17, 41] and out["context_lens"].dtype == torch.int32
    assert out["block_tables"].tolist() == [[5, 0, 0, UNTOUCHED], [6, 7, 0, UNTOUCHED], [1, 2, 9, UNTOUCHED]]


def assert_matches_reference(unpack, rows: int, width: int, num_pending: int, device: str) -> None:
    """The buffer is wider than this batch's tables (the graphs' holds the widest possible)."""
    block, pending = random_batch(rows, width, num_pending, device, room=rows * 7)
    expected, got = outputs(rows, width + 7, device), outputs(rows, width + 7, device)
    call(reference_unpack, block, pending, expected)
    call(unpack, block, pending, got)
    for name in ("input_ids", "positions", "slot_mapping", "context_lens"):
        assert torch.equal(got[name], expected[name]), name
    # The kernel copies each row's table as far as its context reaches, and leaves the rest.
    context = expected["context_lens"][:, None]
    covered = torch.arange(width + 7, device=device)[None, :] < (context + BLOCK_SIZE - 1) // BLOCK_SIZE
    assert torch.equal(got["block_tables"][covered], expected["block_tables"][covered])
    assert (got["block_tables"][~covered] == UNTOUCHED).all()


@requires_interpreter
@pytest.mark.parametrize("rows, width", [(1, 3), (5, 200)])  # 200 columns: the column loop's second lap
def test_kernel_matches_reference_interpreter(rows: int, width: int):
    from minillama.ops.triton.unpack_decode import unpack_decode

    assert_matches_reference(unpack_decode, rows, width, num_pending=rows + 3, device="cpu")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("rows, width", [(1, 1), (7, 33), (256, 129), (256, 8192)])
def test_kernel_matches_reference_cuda(rows: int, width: int):
    from minillama.ops.triton.unpack_decode import unpack_decode

    assert_matches_reference(unpack_decode, rows, width, num_pending=256, device="cuda")


@requires_cuda
@pytest.mark.cuda
def test_kernel_in_a_graph_reads_each_replays_pending():
    """As the decode graphs use it: static buffers, new packed rows and pending tokens copied in
    before each replay."""
    from minillama.ops.triton.unpack_decode import unpack_decode

    rows, width = 16, 40
    static_block, static_pending = random_batch(rows, width, 64, "cuda", room=rows * 10)
    out = outputs(rows, width + 10, "cuda")
    graph, _ = capture_graph(lambda: call(unpack_decode, static_block, static_pending, out))
    for new_width in (3, 50, 40):  # the width changes from replay to replay: the header says it
        block, pending = random_batch(rows, new_width, 64, "cuda")
        static_block[: block.shape[0]] = block
        static_pending.copy_(pending)
        graph.replay()
        expected = outputs(rows, width + 10, "cuda")
        call(reference_unpack, block, pending, expected)
        for name in ("input_ids", "positions", "slot_mapping", "context_lens"):
            assert torch.equal(out[name], expected[name]), name
