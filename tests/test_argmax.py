"""The greedy choice: the Triton argmax (minillama/ops/triton/argmax.py) against PyTorch's
(minillama/ops/reference/argmax.py), exactly, ties and NaN included.

On a CUDA GPU (pytest -m cuda), and on the CPU through Triton's interpreter (conftest.py turns it
on where there is no GPU)."""

from __future__ import annotations

import pytest
import torch
from triton_support import requires_cuda, requires_interpreter

from minillama.ops.reference.argmax import argmax_rows as reference_argmax


def hard_rows(rows: int, vocab: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Random logits whose rows test the rules: row 0's maximum is tied at three places in three
    chunks, row 1 has it at the last index, row 2 is all -inf, row 3 holds a NaN; the rest
    are random bf16-like values, full of ties."""
    logits = torch.randn(rows, vocab).round(decimals=1).to(dtype)
    if rows > 3:
        logits[0, [5000 % vocab, 9 % vocab, 130_000 % vocab]] = 50.0
        logits[1, -1] = 60.0
        logits[2] = float("-inf")
        logits[3, vocab // 2] = float("nan")
    return logits.to(device)


def assert_same(argmax_rows, logits: torch.Tensor) -> None:
    expected = reference_argmax(logits)
    assert torch.equal(argmax_rows(logits), expected)
    out = torch.full_like(expected, -1)
    assert argmax_rows(logits, out) is out and torch.equal(out, expected)


def test_reference_takes_the_first_maximum():
    logits = torch.tensor([[1.0, 3.0, 3.0], [float("-inf")] * 3, [0.0, float("nan"), 9.0]])
    assert reference_argmax(logits).tolist() == [1, 0, 1]


@requires_interpreter
@pytest.mark.parametrize("vocab", [1, 4096, 10_000])  # one chunk, exactly one, three with a ragged end
def test_kernel_matches_reference_interpreter(vocab: int):
    from minillama.ops.triton.argmax import argmax_rows

    assert_same(argmax_rows, hard_rows(5, vocab, torch.float32, "cpu"))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("rows, vocab", [(1, 128_256), (7, 49_152), (256, 128_256), (3, 100)])
def test_kernel_matches_reference_cuda(dtype: torch.dtype, rows: int, vocab: int):
    from minillama.ops.triton.argmax import argmax_rows

    assert_same(argmax_rows, hard_rows(rows, vocab, dtype, "cuda"))


@requires_cuda
@pytest.mark.cuda
def test_kernel_takes_a_view_of_rows():
    """The sampler passes a graph's logits buffer sliced to the batch ([:n]): rows of a larger block."""
    from minillama.ops.triton.argmax import argmax_rows

    block = hard_rows(16, 128_256, torch.bfloat16, "cuda")
    assert_same(argmax_rows, block[:5])
    assert_same(argmax_rows, block[3:9])
