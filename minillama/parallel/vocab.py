"""The embedding split by vocabulary rows across tensor-parallel ranks."""

from __future__ import annotations

import torch
from torch import nn

from minillama.parallel.shard import Shard


class VocabParallelEmbedding(nn.Module):
    """Rows [start, end) of the [vocab, hidden] embedding matrix (shard.part(vocab)). Each rank
    looks up the ids it holds and gives zeros for the others; the all-reduce then sums, for
    every token, the one rank's row that is not zero. `weight` is named as nn.Embedding's, so
    the LM head can tie to it (its rows are the same slice of the vocabulary)."""

    def __init__(self, vocab_size: int, hidden_size: int, shard: Shard):
        super().__init__()
        self.start, self.end = shard.part(vocab_size)
        self.weight = nn.Parameter(torch.empty(self.end - self.start, hidden_size))
        self.shard = shard

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [N] -> [N, hidden]."""
        held = (ids >= self.start) & (ids < self.end)  # [N]
        local = torch.where(held, ids - self.start, 0)  # row 0 stands in for ids held elsewhere
        rows = nn.functional.embedding(local, self.weight) * held.unsqueeze(1).to(self.weight.dtype)
        return self.shard.all_reduce(rows)
