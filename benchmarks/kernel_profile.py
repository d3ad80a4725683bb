"""Where the GPU workload's time goes, kernel by kernel: `python -m benchmarks.engine --profile`.

One timed run of the --gpu workload (the library's defaults, async scheduling on) under
torch.profiler. The GPU's timeline is split at the first decode-attention kernel: before it the
prefill steps, after it the decode steps. For each phase: its span, the time some kernel or copy
ran (busy) and the rest (idle: the GPU waiting for the host), then the kernels that took the most
time, by name. A run under the profiler is a few percent slower than one without.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.engine import load_hf_model, time_engine
from benchmarks.workloads import throughput_prompts, warm_up_prompts
from minillama import EngineConfig, LLMEngine
from minillama.cli import tune_gc

# The profiler's categories for what runs on the GPU.
_GPU_WORK = ("kernel", "gpu_memcpy", "gpu_memset")
# The Triton decode attention kernels (minillama/ops/triton/triton_paged.py), pointer loads or TMA
# copies: a decode step's mark.
_DECODE_KERNELS = ("_decode_kernel", "_decode_tma_kernel")


def gpu_events(trace: dict) -> list[dict]:
    """The GPU's kernels, copies and memsets of a Chrome trace, in order of start (ts, dur in us)."""
    events = [e for e in trace.get("traceEvents", []) if e.get("cat") in _GPU_WORK and e.get("ph") == "X"]
    return sorted(events, key=lambda e: e["ts"])


def phase_table(events: list[dict], label: str, top: int) -> list[str]:
    """Span, busy and idle time of `events` (one phase), then its `top` kernels by total time."""
    if not events:
        return [f"{label}: no GPU work"]
    span = events[-1]["ts"] + events[-1]["dur"] - events[0]["ts"]
    busy = sum(e["dur"] for e in events)
    lines = [f"{label}: span {span / 1e3:.1f} ms, GPU busy {busy / 1e3:.1f} ms, idle {(span - busy) / 1e3:.1f} ms "
             f"({(span - busy) / span:.0%})"]
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        by_name[e["name"]][0] += e["dur"]
        by_name[e["name"]][1] += 1
    for name, (total, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {total / 1e3:9.2f} ms {total / busy:6.1%} {count:7d}x  {name[:100]}")
    return lines


def split_phases(events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(prefill events, decode events): the timeline cut at the first decode-attention kernel."""
    first = next((i for i, e in enumerate(events) if e["name"].startswith(_DECODE_KERNELS)), len(events))
    return events[:first], events[first:]


def profile_workload(args: argparse.Namespace, engine: LLMEngine, top: int = 14) -> None:
    """Warm the engine up, then profile one run of the workload and print the phase tables."""
    vocab = engine.model_config.vocab_size
    tune_gc()
    time_engine(engine, warm_up_prompts(vocab), 8)
    prompts = throughput_prompts(args.num_requests, vocab, seed=0)
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        row = time_engine(engine, prompts, args.output_len)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(path))
        events = gpu_events(json.loads(path.read_text()))
    print(f"{args.config} shape, {args.num_requests} requests, {args.output_len} new tokens each, under the "
          f"profiler: {row.tok_per_s:,.0f} tok/s in {row.seconds:.2f} s; attention {engine.attention_backend}")
    prefill, decode = split_phases(events)
    if not decode:  # another attention backend: no kernel of ours marks the decode steps
        tables = phase_table(prefill, "the whole run (no decode kernel of ours to split it at)", top)
    else:
        tables = phase_table(prefill, "prefill", top) + phase_table(decode, "decode", top)
    print("\n".join(tables))


def run(args: argparse.Namespace) -> None:
    """--profile: build the workload's engine as --gpu does (random weights of --config)."""
    hf = load_hf_model(args, torch.device("cuda"), torch.bfloat16)
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cuda", attention=args.attention))
    del hf
    torch.cuda.empty_cache()
    profile_workload(args, engine)


if __name__ == "__main__":
    import sys

    from benchmarks import not_a_command

    sys.exit(not_a_command("benchmarks.kernel_profile"))
