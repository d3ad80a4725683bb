"""The greedy choice, readable: the reference for ops/triton/argmax.py."""

from __future__ import annotations

import torch


def argmax_rows(logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] -> [B] int64: the first index of each row's maximum (a NaN counts as the
    maximum). Into `out` ([B] int64) when given. max(dim).indices is the same as argmax, and
    faster on a CPU (docs/perf-notes.md, "Figures moved from docstrings")."""
    tokens = logits.max(dim=-1).indices
    if out is None:
        return tokens
    return out.copy_(tokens)
