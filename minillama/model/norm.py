"""RMSNorm: scale each hidden vector to unit root-mean-square, then by a learned weight."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden], x / sqrt(mean(x^2) + eps) * weight.

        Normalised in fp32 and cast back before the weight multiplies, as Hugging Face does, so
        bf16 results match theirs bit for bit."""
        normed = F.rms_norm(x.float(), self.weight.shape, eps=self.eps)
        return self.weight * normed.to(x.dtype)
