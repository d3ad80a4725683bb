"""Rotary position embedding (RoPE), with the default and the Llama-3 frequency schedules.

RoPE encodes a token's position by rotating pairs of query/key features by an angle that grows
with the position, at a different speed (frequency) for each pair. The dot product of a rotated
query and a rotated key then depends only on how far apart the two tokens are.

The pairing follows Hugging Face's Llama checkpoints: feature i is paired with feature
i + head_dim / 2 ("rotate_half"), not with its neighbour.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minillama.config import RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """The rotation speed of each feature pair: [head_dim / 2] radians per position.

    Computed in fp32 exactly as Hugging Face does, so both produce the same angles."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling is None:
        return inv_freq
    # Llama 3: slow down the low frequencies (long wavelengths) by `factor` so the model reaches
    # further than it was trained on, keep the high frequencies, and blend in between.
    low_freq_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    in_between = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(in_between, blended, scaled)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: RopeScaling | None):
        super().__init__()
        self.head_dim, self.max_position, self.theta, self.scaling = head_dim, max_position, theta, scaling
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.compute_tables()

    def compute_tables(self, device: torch.device | None = None) -> None:
        """cos/sin of every (position, pair) angle, computed once: [max_position, head_dim / 2]
        each, in fp32. The loader calls this again after building the model on the meta device."""
        device = device or self.cos.device
        inv_freq = inverse_frequencies(self.head_dim, self.theta, self.scaling).to(device)
        angles = torch.outer(torch.arange(self.max_position, dtype=torch.float32, device=device), inv_freq)
        self.cos, self.sin = angles.cos(), angles.sin()

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: [N]; q: [N, H, D]; k: [N, Hkv, D] -> rotated q, k of the same shapes."""
        cos = self.cos[positions].unsqueeze(1)  # [N, 1, D/2], broadcast over heads
        sin = self.sin[positions].unsqueeze(1)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x1[i], x2[i]) = (x[i], x[i + D/2]) by its angle, in fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.to(x.dtype)
