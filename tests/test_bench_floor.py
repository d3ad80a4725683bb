"""The bench's floor (benchmarks/floor.py): the weights a token meets and the floor's arithmetic,
checked against numbers worked out by hand. (The peaks themselves are measured on the GPU.)"""

from __future__ import annotations

import pytest

from benchmarks.floor import Peaks, layer_weights, run_floor
from benchmarks.workloads import config_path
from minillama import ModelConfig


def test_the_1b_shape_has_llama_3_2_1b_weights():
    """Llama-3.2-1B has 1,235,814,400 parameters: the layers' matrices, the tied embedding (the LM
    head) and 33 RMSNorm weight vectors of 2,048, which no matrix multiply reads."""
    config = ModelConfig.from_file(config_path("1b"))
    norms = (2 * config.num_hidden_layers + 1) * config.hidden_size
    assert layer_weights(config) + config.hidden_size * config.vocab_size + norms == 1_235_814_400


def test_the_floor_sums_compute_at_the_gemm_peak_and_reads_at_the_bandwidth():
    config = ModelConfig.from_file(config_path("1b"))
    peaks = Peaks(gemm_flops=1e15, copy_bytes=4e12)
    # Two requests: prompts of 3 and 5 tokens, 4 new tokens each, in 3 decode steps.
    floor = run_floor(config, peaks, [3, 5], 8, 3, 4)
    per_pair = 4 * 16 * 32 * 64  # layers x heads x head_dim, 4 FLOPs each
    lm_head = 2048 * 128256
    assert floor.prefill_flops == 2 * layer_weights(config) * 8 + per_pair * (6 + 15) + 2 * lm_head * 2
    kv_per_token = 2 * 16 * 8 * 64 * 2
    contexts = (3 + 1) + (3 + 2) + (3 + 3) + (5 + 1) + (5 + 2) + (5 + 3)  # decode tokens 1..3 of each
    assert floor.decode_bytes == 3 * (layer_weights(config) + lm_head) * 2 + contexts * kv_per_token
    assert floor.seconds == pytest.approx(floor.prefill_flops / 1e15 + floor.decode_bytes / 4e12)


def test_the_all_reduce_probe_times_each_size_over_two_processes():
    """benchmarks/all_reduce.py through gloo on the CPU (the GPU run uses NCCL the same way):
    one time per size, and the bus bandwidth nccl-tests would print for it."""
    from benchmarks.all_reduce import SIZES, bus_bandwidth, measure

    times = measure(2, "cpu", repeats=1)
    assert sorted(times) == sorted(SIZES) and all(t > 0 for t in times.values())
    assert bus_bandwidth(2**20, 1e-3, 2) == 2**20 / 1e-3  # 2 ranks: each link carries the tensor once
    assert bus_bandwidth(2**20, 1e-3, 4) == 2**20 * 1.5 / 1e-3
