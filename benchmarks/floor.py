"""The floor of a run: the time no engine could beat on this GPU, measured in the same process.

A step is bound by compute or by memory traffic, whichever is slower:
- a prefill computes 2 FLOPs per weight per prompt token (a matrix multiply-add), plus the
  attention's scores and weighted sum (4 x layers x heads x head_dim FLOPs per pair of query
  and earlier key); its floor is those FLOPs at the GPU's measured bf16 GEMM throughput;
- a decode step reads every weight once, whatever its batch, and each sequence's K/V once; its
  floor is those bytes at the GPU's measured copy bandwidth.

Both peaks are measured here, not taken from a datasheet: a large bf16 matmul (the best any
kernel does) and a large device-to-device copy (bytes read plus bytes written). The floor of a
run sums its actual steps: the prompt tokens the engine computed (prefix-cache hits cost
nothing), and its decode steps with each decoded token's context. So the engine's share of the
floor says how close it came to the hardware on this very workload.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minillama import ModelConfig


@dataclass(frozen=True)
class Peaks:
    gemm_flops: float  # FLOP/s of a large bf16 matmul
    copy_bytes: float  # bytes/s of a large copy (read + write)


def measure_peaks(device: torch.device, size: int = 8192, copy_gib: float = 2.0) -> Peaks:
    """The GPU's bf16 GEMM throughput ([size, size] @ [size, size]) and copy bandwidth."""
    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    out = torch.empty_like(a)
    gemm = _timed(lambda: torch.mm(a, b, out=out), repeats=20)
    src = torch.empty(int(copy_gib * 2**30), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy = _timed(lambda: dst.copy_(src), repeats=10)
    return Peaks(gemm_flops=2 * size**3 / gemm, copy_bytes=2 * src.numel() / copy)


def _timed(work, repeats: int) -> float:
    """Seconds one call of `work` takes on the GPU, after a warm-up."""
    for _ in range(3):
        work()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats


def layer_weights(config: ModelConfig) -> int:
    """Weights a token meets in the decoder layers (the matrices: q, k, v, o, gate, up, down)."""
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    q = config.num_attention_heads * config.head_dim
    return config.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size)


def kv_bytes_per_token(config: ModelConfig, dtype_bytes: int = 2) -> int:
    """The K and V of one token across all layers: what a decode step reads per token of context."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * dtype_bytes


@dataclass(frozen=True)
class Floor:
    prefill_flops: float
    prefill_seconds: float  # at the GEMM peak
    decode_bytes: float
    decode_seconds: float  # at the copy bandwidth

    @property
    def seconds(self) -> float:
        return self.prefill_seconds + self.decode_seconds


def run_floor(config: ModelConfig, peaks: Peaks, prompt_lens: list[int], computed_prompt_tokens: int,
              decode_steps: int, output_len: int, dtype_bytes: int = 2) -> Floor:
    """The floor of a run of len(prompt_lens) requests of `output_len` new tokens each, whose
    prefills computed `computed_prompt_tokens` tokens (hits excluded) and which took
    `decode_steps` decode steps. The attention FLOPs count each prompt as computed whole, a
    slight overestimate where the prefix cache served part of one."""
    attention_per_pair = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim
    lm_head = config.hidden_size * config.vocab_size
    flops = 2 * layer_weights(config) * computed_prompt_tokens
    flops += sum(attention_per_pair * n * (n + 1) / 2 for n in prompt_lens)
    flops += 2 * lm_head * len(prompt_lens)  # the logits of each prompt's last token
    weights = (layer_weights(config) + lm_head) * dtype_bytes
    kv_per_token = kv_bytes_per_token(config, dtype_bytes)
    # Decode token t (1 .. output_len - 1) of a request with a prompt of n tokens reads n + t K/V.
    contexts = sum(n * (output_len - 1) + output_len * (output_len - 1) // 2 for n in prompt_lens)
    decode_bytes = decode_steps * weights + contexts * kv_per_token
    return Floor(flops, flops / peaks.gemm_flops, decode_bytes, decode_bytes / peaks.copy_bytes)


if __name__ == "__main__":
    import sys

    from benchmarks import not_a_command

    sys.exit(not_a_command("benchmarks.floor"))
