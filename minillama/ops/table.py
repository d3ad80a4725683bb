"""The ops table: the functions the model calls for its compute, chosen once per engine.

The model (minillama/model/) says what is computed; the table says by which code. Every entry
has the signature and the results of its readable PyTorch definition in ops/reference/, and a
fast implementation takes its place only where select.py's rule lets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionOps:
    """Attention behind flash-attn's two signatures (ops/reference/reference_attention.py
    defines them)."""

    name: str
    varlen: Callable[..., torch.Tensor]  # flash_attn_varlen_func: prefill over a ragged batch
    decode: Callable[..., torch.Tensor]  # flash_attn_with_kvcache: one token over the paged cache
    graph_safe: bool  # decode can be captured in a CUDA graph
    min_block_size: int = 1  # the KV block size must be a multiple of this
    power_of_two_blocks: bool = False  # ... and a power of two


@dataclass(frozen=True)
class Ops:
    """name: whose kernels serve the entries: "reference" (PyTorch), "cpu" (the C kernels,
    which hand the calls they do not take to the reference) or "triton" (CUDA).

    Shapes: N tokens, H query heads, Hkv key/value heads, D head dim, I the MLP's width."""

    name: str
    # (x [N, hidden], weight, eps) -> weight * x / sqrt(mean(x^2) + eps)
    rms_norm: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    # (x, residual, weight, eps) -> (rms_norm(x + residual), x + residual)
    add_rms_norm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
    # (qkv [N, H + 2 Hkv, D], cos, sin [N, 1, D], k_cache, v_cache, metadata) -> q [N, H, D] after
    # RoPE; the rotated keys and the values are written into the paged cache.
    rotary_and_store: Callable[..., torch.Tensor]
    # The same, also returning the rotated keys and the values as tensors: -> q [N, H, D], k, v
    # [N, Hkv, D]. A prefill step whose keys are all fresh attends over them there, and the
    # observers' attention hook reads them.
    rotary_store_and_keep_kv: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    # (gate_up [N, 2 I]) -> silu(gate) * up [N, I]
    silu_and_mul: Callable[[torch.Tensor], torch.Tensor]
    # (x [N, in], weight [out, in], bias) -> x @ weight.T + bias [N, out]
    linear: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    attention: AttentionOps
