"""Rotary position embedding (RoPE), with the default, linear, Llama-3 and YaRN frequency schedules.

RoPE encodes a token's position by rotating pairs of query/key features by an angle that grows
with the position, at a different speed (frequency) for each pair. The dot product of a rotated
query and a rotated key then depends only on how far apart the two tokens are.

The pairing follows Hugging Face's Llama checkpoints: feature i is paired with feature
i + head_dim / 2 ("rotate_half"), not with its neighbour. This file computes the angles; the
rotation itself is apply_rotary in minillama/ops/reference/rotary_and_store.py, which the
attention layer reaches through its ops table.
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
    if scaling.kind == "linear":  # position p turns as p / factor did: positions interpolated
        return inv_freq / scaling.factor
    if scaling.kind == "yarn":
        return _yarn_frequencies(head_dim, theta, scaling)
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


def _yarn_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """YaRN ("Yet another RoPE extensioN"): like Llama 3's schedule, a pair that turns many
    times over the pretraining length (beta_fast times or more) keeps its frequency, one that
    turns less than beta_slow times is divided by `factor`, and a linear ramp blends between;
    here the two boundaries are found as pair indices. As transformers computes it, operation
    for operation, so both produce the same angles: [head_dim / 2]."""
    pos_freqs = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    kept, divided = 1.0 / pos_freqs, 1.0 / (scaling.factor * pos_freqs)

    def pair_turning(rotations: float) -> float:
        """The (fractional) pair index whose wavelength fits `rotations` times in the pretraining
        length: wavelength 2 pi theta^(2i/D) = length / rotations, solved for i."""
        length = scaling.original_max_position_embeddings
        return head_dim * math.log(length / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = pair_turning(scaling.beta_fast), pair_turning(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # a ramp of width zero would divide by zero
    ramp = torch.clamp((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1 for the fast pairs (index below low), 0 for the slow ones (above high)
    return divided * (1 - keep) + kept * keep


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: RopeScaling | None):
        super().__init__()
        self.head_dim, self.max_position, self.theta, self.scaling = head_dim, max_position, theta, scaling
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.compute_tables()

    def compute_tables(self, device: torch.device | None = None) -> None:
        """cos/sin of every (position, pair) angle, computed once: [max_position, head_dim / 2]
        each, in fp32. The loader calls this again after building the model on the meta device.
        YaRN scales both by its attention_factor (so each query-key product by its square, a
        sharper softmax over the stretched context); every other schedule by 1."""
        device = device or self.cos.device
        inv_freq = inverse_frequencies(self.head_dim, self.theta, self.scaling).to(device)
        angles = torch.outer(torch.arange(self.max_position, dtype=torch.float32, device=device), inv_freq)
        scale = self.scaling.attention_factor if self.scaling is not None else 1.0
        self.cos, self.sin = angles.cos() * scale, angles.sin() * scale

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The angles of `positions` [N], looked up once per forward pass and shared by every
        layer: cos, sin [N, 1, head_dim], each half repeated to line up with rotate_half."""
        cos, sin = self.cos[positions], self.sin[positions]  # [N, D/2]
        return torch.cat((cos, cos), -1).unsqueeze(1).to(dtype), torch.cat((sin, sin), -1).unsqueeze(1).to(dtype)

