"""Tensor parallelism's scaling on GPUs: the throughput workload on one GPU, then split over N.

    python -m benchmarks.engine --gpu --config 8b --tensor-parallel-size 2 --hf-requests 64

First the all-reduce between the N GPUs, timed alone (benchmarks/all_reduce.py). Then the same
requests (prompts of 100-1024 tokens, --output-len new tokens each) through an engine split over
N GPUs (random bf16 weights; each rank draws its own slices), then through one on one GPU, in
one process, one after the other: each one's tok/s, and the split's speed-up over one GPU
divided by N (its scaling efficiency). The split engine's decode step reads 1/N of the weights
on each GPU, and adds two all-reduces a layer. The peer (when --peers names static, as by
default; HF continuous batching is not run here) is HF generate over the same N GPUs as
`device_map="auto"` places a model on them (whole layers on each GPU, one after the other), on
the first --hf-requests requests, labelled so."""

from __future__ import annotations

import argparse
import dataclasses
import gc

import torch

from benchmarks import all_reduce
from benchmarks.engine import Row, load_hf_model, print_table, time_engine, time_hf_generate
from benchmarks.workloads import config_path, throughput_prompts, warm_up_prompts
from minillama import EngineConfig, LLMEngine, ModelConfig


def scaling_workload(args: argparse.Namespace) -> None:
    model_config = ModelConfig.from_file(config_path(args.config))
    prompts = throughput_prompts(args.num_requests, model_config.vocab_size, seed=0)
    sizes = (args.tensor_parallel_size, 1)  # the split engine first: the table's ratios are against it
    print_all_reduce(sizes[0])
    rows = [run_split(model_config, size, prompts, args) for size in sizes]
    if "static" in args.peers:
        rows.append(time_hf_over_gpus(args, prompts, sizes[0]))
    print_table(f"{args.config} shape, {args.num_requests} requests, {args.output_len} new tokens each", rows)
    speedup = rows[0].tok_per_s / rows[1].tok_per_s
    print(f"{sizes[0]} GPUs: {speedup:.2f}x one GPU's throughput, scaling efficiency {speedup / sizes[0]:.0%}")


def print_all_reduce(size: int) -> None:
    """The all-reduce's time and bus bandwidth between `size` GPUs, at a decode's and a prefill's sizes."""
    times = all_reduce.measure(size)
    parts = [f"{nbytes / 2**10:,.0f} KiB {seconds * 1e6:,.0f} us ({all_reduce.bus_bandwidth(nbytes, seconds, size) / 1e9:.0f} GB/s)"
             for nbytes, seconds in times.items()]
    print(f"all-reduce (bf16) between {size} GPUs, time and bus bandwidth: " + "; ".join(parts), flush=True)


def run_split(model_config: ModelConfig, size: int, prompts: list[list[int]], args: argparse.Namespace) -> Row:
    """The workload through an engine split over `size` GPUs (1: no split), then closed."""
    config = EngineConfig(device="cuda", tensor_parallel_size=size, max_num_seqs=args.max_num_seqs,
                          max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.eager,
                          async_scheduling=args.async_scheduling)
    engine = LLMEngine.from_config(model_config, config)
    try:
        time_engine(engine, warm_up_prompts(model_config.vocab_size), 8)
        before = dataclasses.replace(engine.stats)
        row = time_engine(engine, prompts, args.output_len)
        print(f"\n{size} GPU(s): KV cache {engine.num_kv_blocks} blocks of {engine.config.block_size}; CUDA graphs "
              f"{sorted(engine.runner.graphs)}; async scheduling {'on' if engine.async_scheduling else 'off'}")
        print(f"warm-up: {before.summary()}\ntimed: {engine.stats.since(before).summary()}")
    finally:
        engine.close()
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    row = Row(f"minillama, {size} GPU{'s' if size > 1 else ''}", row.tokens, row.seconds)
    print(f"{row.name}: {row.tokens} tokens in {row.seconds:.2f} s, {row.tok_per_s:.0f} tok/s", flush=True)
    return row


def time_hf_over_gpus(args: argparse.Namespace, prompts: list[list[int]], size: int) -> Row:
    """HF generate (static batches of 64) with the model's layers spread over `size` GPUs as
    from_pretrained(device_map="auto") spreads them (accelerate's balanced map), on the first
    --hf-requests prompts (all by default)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    hf = load_hf_model(args, torch.device("cuda", 0), torch.bfloat16)
    keep = ["LlamaDecoderLayer"]
    budget = get_balanced_memory(hf, max_memory={i: torch.cuda.mem_get_info(i)[0] for i in range(size)},
                                 no_split_module_classes=keep)
    hf = dispatch_model(hf, device_map=infer_auto_device_map(hf, max_memory=budget, no_split_module_classes=keep))
    some = prompts[: args.hf_requests or len(prompts)]
    time_hf_generate(hf, some[:2], 4, 2, 0)  # warm-up
    row = time_hf_generate(hf, some, args.output_len, 64, 0)
    fraction = f", on {len(some)} of {len(prompts)} requests" if len(some) < len(prompts) else ""
    del hf
    gc.collect()
    torch.cuda.empty_cache()
    return Row(f"{row.name}, device_map=auto over {size} GPU{'s' if size > 1 else ''}{fraction}", row.tokens, row.seconds)


if __name__ == "__main__":
    import sys

    from benchmarks import not_a_command

    sys.exit(not_a_command("benchmarks.tensor_parallel"))
