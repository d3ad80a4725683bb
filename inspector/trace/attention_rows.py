"""Attention rows computed on demand from stored queries and keys.

Fast attention kernels never build the score matrix, so the recorder keeps the inputs instead:
each traced position's post-RoPE query and key. One row of the attention pattern is then

    probs = softmax(q_t . K[0..t] * scale)

which is exactly what the kernel computed before multiplying by V: the test suite holds
probs @ V to the engine's own attention output.
"""

from __future__ import annotations

import torch


def attention_probs(q: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """q: [D], one query head; keys: [t + 1, D], the keys it may see (its own position last).
    -> probs [t + 1] fp32, summing to 1: how much of the output each position contributes."""
    # In float64: a trace's queries and keys may be as large as their dtype holds (bf16: 3e38),
    # and a product of two such overflows fp32 to inf, whose softmax is NaN.
    scores = keys.double() @ q.double() * scale  # [t + 1]
    return scores.softmax(dim=0).float()


def mass_per_block(probs: torch.Tensor, block_table: list[int], block_size: int) -> dict[int, float]:
    """Sum an attention row over KV blocks. probs: [t + 1]; position p lives in logical block
    p // block_size, which is physical block block_table[p // block_size].
    -> {physical block: mass}, in logical block order."""
    num_logical = (probs.numel() + block_size - 1) // block_size
    padded = torch.zeros(num_logical * block_size, dtype=probs.dtype, device=probs.device)
    padded[: probs.numel()] = probs
    sums = padded.view(num_logical, block_size).sum(dim=1).tolist()  # [num_logical]
    return {block_table[i]: mass for i, mass in enumerate(sums)}
