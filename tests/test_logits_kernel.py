"""The logits summary kernel (inspector/record/logits_kernel.py) against its readable definition
(inspector/record/logits_summary.summary_columns), on the CPU through Triton's interpreter, on
small shapes. (test_cuda_recorder.py runs it on a GPU, on real vocabulary sizes.)"""

from __future__ import annotations

import pytest
import torch
from triton_support import requires_interpreter

from inspector.record.logits_summary import summary_columns

K = 5


@requires_interpreter
@pytest.mark.parametrize("vocab", [100, 4096, 4097, 9000])
def test_interpreter_the_kernel_equals_the_readable_summary(vocab: int):
    """Less than one chunk of 4096 logits, exactly one, a chunk and one logit, several chunks;
    one row confident (entropy near 0), the others spread; rows that are a view with a wider
    stride than the vocabulary, as a slice of a larger tensor is."""
    from inspector.record.logits_kernel import summary_columns_triton

    logits = (4 * torch.randn(3, vocab + 7))[:, :vocab]
    logits[0] *= 20
    fast, readable = summary_columns_triton(logits, K), summary_columns(logits, K)
    assert fast.shape == readable.shape == (3, 2 * K + 2)
    assert torch.equal(fast[:, :K], readable[:, :K])  # the same ids, in the same order
    torch.testing.assert_close(fast[:, K:], readable[:, K:], rtol=1e-5, atol=1e-6)


@requires_interpreter
def test_interpreter_the_top_k_spans_chunks():
    """The row's best logits sit in different chunks (the last one partial): the merge must pick
    them from every chunk's candidates, in order."""
    from inspector.record.logits_kernel import summary_columns_triton

    logits = torch.randn(2, 3 * 4096 + 10)
    best = [4096 * 2 + 9, 17, 4096 + 5, 3 * 4096 + 3, 4095]  # most likely first
    for rank, token in enumerate(best):
        logits[:, token] = 30.0 - rank
    ids = summary_columns_triton(logits, K)[:, :K]
    assert ids.tolist() == [[float(t) for t in best]] * 2
