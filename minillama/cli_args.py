"""Command-line flags shared by every entry point (the engine CLI, the inspector, the UI), and
the checks a command line makes before it loads a model: a mistake in a flag is reported in a
moment, not after the model has loaded or a whole run has been recorded."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from minillama.config import DTYPES, EngineConfig
from minillama.errors import ConfigError
from minillama.ops.attention import BACKEND_NAMES
from minillama.sampling_params import SamplingParams


def add_model_args(group: argparse._ActionsContainer) -> None:
    """--model, --device, --dtype, --attention: which weights, and how they run."""
    group.add_argument("--model", default=None,
                       help="Hugging Face Llama directory (default: the embedded SmolLM2-135M-Instruct)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    group.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                       help="default: bfloat16 on CUDA, float32 on CPU")
    group.add_argument("--attention", default="auto", choices=BACKEND_NAMES, help="attention implementation")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model and engine")
    add_model_args(g)
    g.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    g.add_argument("--num-kv-blocks", type=int, default=None, help="KV-cache blocks (default: sized from memory)")
    g.add_argument("--kv-cache-gb", type=float, default=1.0, help="CPU: memory for the KV cache, GiB")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="CUDA: fraction of GPU memory to use")
    g.add_argument("--max-num-seqs", type=int, default=64, help="most sequences running at once")
    g.add_argument("--max-num-batched-tokens", type=int, default=4096, help="most tokens in one prefill step")
    g.add_argument("--max-model-len", type=int, default=None, help="longest sequence (default: min(model context, 8192))")
    g.add_argument("--no-prefix-caching", action="store_true", help="turn prefix caching off")
    g.add_argument("--eager", action="store_true", help="no CUDA graphs")
    g.add_argument("--no-fused-ops", action="store_true",
                   help="plain PyTorch, not the engine's kernels (CUDA: fused Triton ops; CPU: the C decode kernels)")


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The flags' EngineConfig, validated (raises ConfigError naming the first bad flag)."""
    config = EngineConfig(
        device=args.device,
        dtype=args.dtype,
        attention=args.attention,
        block_size=args.block_size,
        num_kv_blocks=args.num_kv_blocks,
        kv_cache_memory_gb=args.kv_cache_gb,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len,
        enable_prefix_caching=not args.no_prefix_caching,
        enforce_eager=args.eager,
        fused_ops=not args.no_fused_ops,
        seed=args.seed if args.seed is not None else 0,
    )
    config.validate()
    return config


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=128, help="most tokens to generate per prompt")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--seed", type=int, default=None, help="per-request seed: same seed, same tokens")
    g.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence")


def sampling_params_from_args(args: argparse.Namespace) -> SamplingParams:
    """The flags' SamplingParams, validated (raises InvalidRequestError naming a bad one)."""
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
        ignore_eos=args.ignore_eos,
    )
    params.validate()
    return params


def check_output_path(path: str, flag: str) -> Path:
    """`path` as a Path if a file can be written there; ConfigError otherwise. Checked before
    any work: a recording that runs to its end only to fail on saving loses the whole run."""
    target = Path(path).expanduser()
    folder = target.parent  # Path("run.mltrace").parent is Path(".")
    if target.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name in it")
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"{flag} {path}: no permission to write there")
    return target


# argparse types for flags that only a command line has (EngineConfig and SamplingParams check
# their own). argparse turns the ValueError into a usage error naming the flag and the type's
# __name__: "argument --max-steps: invalid integer >= 1 value: '0'".


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def number_at_least(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = f"finite number >= {minimum:g}"
    return parse
