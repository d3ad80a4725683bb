"""Which code serves each entry of the ops table: the one rule, chosen once per engine.

By device, dtype, model shape and EngineConfig.fused_ops (--no-fused-ops turns it off):

- CUDA, with triton installed and a model shape its kernels take: the Triton kernels
  (triton/fused_ops.py) serve every call of the norms, RoPE + store and SwiGLU; the linear
  layers stay with torch (cuBLAS).
- CPU in fp32, when the C kernels build: the C kernels (cpu/) serve the calls they take, below,
  and hand every other call to the reference.
- anything else, and fused_ops off: the reference (reference/), readable PyTorch.

Attention is chosen beside it, by --attention (attention.py), whatever fused_ops says.

Which calls the C kernels take:
- the norms, SwiGLU and the linear layers: 1 to 8 rows (c_kernels_take), e.g. a decode step of
  a few sequences or a short prompt. There a chain of small PyTorch ops costs more than the work
  (cpu/c_kernels.py says why); more rows go to PyTorch, whose threads and BLAS do better.
- RoPE + the cache write: every decode step, whatever its batch (its rows are one token per
  sequence), and no prefill.
- none of them with autograd on: they have no backward.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch
import torch.nn.functional as F

from minillama.config import ModelConfig
from minillama.model.attention_metadata import AttentionMetadata
from minillama.ops.attention import select_attention
from minillama.ops.cpu import cpu_ops, skinny_linear
from minillama.ops.reference import rotary_and_store as reference_rotary
from minillama.ops.reference.rms_norm import add_rms_norm, rms_norm
from minillama.ops.reference.silu_and_mul import silu_and_mul
from minillama.ops.table import AttentionOps, Ops


def select_ops(
    device: torch.device, dtype: torch.dtype, model_config: ModelConfig, fused_ops: bool, attention: str
) -> Ops:
    """The ops table of an engine whose model runs on `device` in `dtype`; `attention` is an
    --attention name (ops/attention.py). Raises ConfigError for an attention name that cannot
    run here."""
    attention_ops = select_attention(attention, device, dtype, model_config.head_dim)
    if fused_ops and device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        from minillama.ops.triton import fused_ops as triton_ops  # imports triton

        if triton_ops.takes(model_config):  # a shape they do not take: the reference
            return _triton_ops(triton_ops, attention_ops)
    cpu_fp32 = device.type == "cpu" and dtype == torch.float32
    if fused_ops and cpu_fp32 and skinny_linear.available() and cpu_ops.available():
        return Ops("cpu", cpu_rms_norm, cpu_add_rms_norm, cpu_rotary_and_store,
                   reference_rotary.rotary_store_and_keep_kv, cpu_silu_and_mul, cpu_linear, attention_ops)
    return _reference_ops(attention_ops)


def _reference_ops(attention: AttentionOps) -> Ops:
    """PyTorch for every call."""
    return Ops("reference", rms_norm, add_rms_norm, reference_rotary.rotary_and_store,
               reference_rotary.rotary_store_and_keep_kv, silu_and_mul, F.linear, attention)


def _triton_ops(triton_ops: ModuleType, attention: AttentionOps) -> Ops:
    """The Triton kernels (triton_ops: ops/triton/fused_ops.py) for every call."""

    def rotary_and_store(
        qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        num_kv_heads, head_dim = k_cache.shape[2:]
        return triton_ops.rotary_and_store(
            qkv, cos, sin, k_cache, v_cache, metadata.slot_mapping, qkv.shape[1] - 2 * num_kv_heads, num_kv_heads,
            head_dim,
        )[0]

    def rotary_store_and_keep_kv(
        qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_kv_heads, head_dim = k_cache.shape[2:]
        num_heads = qkv.shape[1] - 2 * num_kv_heads
        q, k = triton_ops.rotary_and_store(
            qkv, cos, sin, k_cache, v_cache, metadata.slot_mapping, num_heads, num_kv_heads, head_dim, keep_k=True,
        )
        return q, k, qkv[:, num_heads + num_kv_heads :]  # v is not rotated: a view of the projection

    return Ops("triton", triton_ops.rms_norm, triton_ops.fused_add_rms_norm, rotary_and_store,
               rotary_store_and_keep_kv, triton_ops.silu_and_mul, F.linear, attention)


# -- the CPU family: each entry sends the calls the C kernel takes to it, the others to the reference --


def c_kernels_take(rows: int) -> bool:
    """Whether the row-wise C kernels take a call of `rows` rows (the module docstring says why):
    1 to 8, the linear kernel's limit, with autograd off."""
    return 0 < rows <= skinny_linear.MAX_ROWS and not torch.is_grad_enabled()


def cpu_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if c_kernels_take(x.shape[0]):
        return cpu_ops.add_rms_norm(None, x, weight, eps)[0]
    return rms_norm(x, weight, eps)


def cpu_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if c_kernels_take(x.shape[0]):
        return cpu_ops.add_rms_norm(x, residual, weight, eps)
    return add_rms_norm(x, residual, weight, eps)


def cpu_rotary_and_store(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    metadata: AttentionMetadata,
) -> torch.Tensor:
    if metadata.is_prefill or torch.is_grad_enabled():
        return reference_rotary.rotary_and_store(qkv, cos, sin, k_cache, v_cache, metadata)
    num_kv_heads, head_dim = k_cache.shape[2:]
    return cpu_ops.rotary_and_store(
        qkv, cos, sin, k_cache, v_cache, metadata.slot_mapping, qkv.shape[1] - 2 * num_kv_heads, num_kv_heads,
        head_dim,
    )


def cpu_silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    if c_kernels_take(gate_up.shape[0]):
        return cpu_ops.silu_and_mul(gate_up)
    return silu_and_mul(gate_up)


def cpu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] @ weight [N, K].T (+ bias [N]) -> [M, N]."""
    if x.dim() == 2 and c_kernels_take(x.shape[0]) and weight.is_contiguous():
        # skinny_linear reads the weight row by row where it lies; the bias, one vector added to
        # each of the few rows, is added after it, in place.
        out = skinny_linear.skinny_linear(x, weight)
        return out if bias is None else out.add_(bias)
    return F.linear(x, weight, bias)
