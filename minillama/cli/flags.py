"""The engine's and the sampler's command-line flags, shared by every entry point (the engine
CLI, the inspector, the UI).

Each flag but --model (which names the weights) fills one field of EngineConfig or
SamplingParams, and stores its value under the field's own name (`--kv-cache-gb` under
`kv_cache_memory_gb`). Its default is read from the
dataclass, and its help prints that default ("%(default)s"), so a default is written once, in
the dataclass, and the flags, their help and the library cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses

from minillama.config import ASYNC_SCHEDULING, BATCH_DEFAULTS, DTYPES, EngineConfig, flag_of
from minillama.ops.attention import BACKEND_NAMES
from minillama.sampling_params import SamplingParams

ENGINE = EngineConfig()  # the library's defaults: every engine flag starts from these
# The one place a command line starts differently from the library: it samples greedily
# (temperature 0, where SamplingParams has 1.0), so that the same command prints the same answer
# on every run, which is what a demo, a test and a bug report want; and it lets an answer run to
# 128 tokens (SamplingParams: 64), long enough for a paragraph.
SAMPLING = SamplingParams(temperature=0.0, max_tokens=128)


def add_model_args(group: argparse._ActionsContainer) -> None:
    """--model, --device, --dtype, --attention: which weights, and how they run."""
    group.add_argument("--model", default=None,
                       help="Hugging Face Llama directory (default: the embedded SmolLM2-135M-Instruct)")
    _engine_flag(group, "device", "auto (cuda when available, else cpu), cpu, cuda or cuda:N (default: %(default)s)")
    _engine_flag(group, "dtype", "auto: bfloat16 on CUDA, float32 on CPU (default: %(default)s)",
                 choices=["auto", *DTYPES])
    _engine_flag(group, "attention", "attention implementation (default: %(default)s)", choices=BACKEND_NAMES)


# The opposite of each switch below, for a command whose settings start from elsewhere than the
# library's defaults (a replay starts from the recording's): given, it sets the field back.
OPPOSITES = {
    "enable_prefix_caching": ("--prefix-caching", "turn prefix caching on"),
    "enforce_eager": ("--cuda-graphs", "CUDA graphs (not --eager)"),
    "fused_ops": ("--fused-ops", "the engine's kernels (not --no-fused-ops)"),
}
SWITCHES = {  # field -> (what giving its flag does, the flag's action)
    "enable_prefix_caching": ("turn prefix caching off", "store_false"),
    "enforce_eager": ("no CUDA graphs", "store_true"),
    "fused_ops": ("plain PyTorch, not the engine's kernels (CUDA: fused Triton ops; CPU: the C decode kernels)",
                  "store_false"),
}
KV_BLOCKS_ALIAS = "--kv-blocks"


def add_engine_args(parser: argparse.ArgumentParser, opposites: bool = False, kv_blocks_alias: bool = False) -> None:
    """The engine's flags; with `opposites`, each switch's opposite too (OPPOSITES), and with
    `kv_blocks_alias`, --kv-blocks beside --num-kv-blocks. A flag and its opposite, or a flag and
    its alias, are one mutually exclusive group: given both, argparse refuses the command line
    ("argument --cuda-graphs: not allowed with argument --eager"), where the last one given
    used to win without a word."""
    g = parser.add_argument_group("model and engine")
    add_model_args(g)
    _engine_flag(g, "block_size", "tokens per KV-cache block (default: %(default)s)", type=int)
    kv_blocks = g.add_mutually_exclusive_group() if kv_blocks_alias else g
    _engine_flag(kv_blocks, "num_kv_blocks", "KV-cache blocks (default: sized from memory)", type=int)
    if kv_blocks_alias:
        kv_blocks.add_argument(KV_BLOCKS_ALIAS, dest="num_kv_blocks", type=int, help="same as --num-kv-blocks")
    _engine_flag(g, "kv_cache_memory_gb", "CPU: memory for the KV cache, GiB (default: %(default)s)", type=float)
    _engine_flag(g, "gpu_memory_utilization", "CUDA: fraction of GPU memory to use (default: %(default)s)",
                 type=float)
    (cpu_seqs, cpu_tokens), (cuda_seqs, cuda_tokens) = BATCH_DEFAULTS["cpu"], BATCH_DEFAULTS["cuda"]
    _engine_flag(g, "max_num_seqs", f"most sequences running at once (default: {cpu_seqs} on CPU, {cuda_seqs} on "
                 "CUDA)", type=int)
    _engine_flag(g, "max_num_batched_tokens", f"most tokens in one prefill step (default: {cpu_tokens} on CPU, "
                 f"{cuda_tokens} on CUDA)", type=int)
    _engine_flag(g, "max_model_len", "longest sequence (default: min(model context, 8192))", type=int)
    _engine_flag(g, "async_scheduling", "plan the next step while the GPU runs this one; auto: on with CUDA, "
                 "off on a CPU, and every engine steps in order while an observer watches (default: %(default)s)",
                 choices=list(ASYNC_SCHEDULING))
    _engine_flag(g, "tensor_parallel_size", "split the model's layers across this many processes (CPU, gloo); "
                 "the web UI's live sessions need 1 (default: %(default)s)", type=int)
    # Three switches, each the opposite of its field's default: present, they flip it.
    for name, (text, action) in SWITCHES.items():
        pair = g.add_mutually_exclusive_group() if opposites else g
        _engine_flag(pair, name, text, action=action)
        if opposites:
            opposite, opposite_text = OPPOSITES[name]
            pair.add_argument(opposite, dest=name, default=getattr(ENGINE, name), help=opposite_text,
                              action="store_true" if action == "store_false" else "store_false")


def _engine_flag(group: argparse._ActionsContainer, name: str, text: str, **kwargs: object) -> None:
    """The flag that sets EngineConfig.<name>, with help `text`: spelled as config.flag_of says,
    stored under the field's name, starting from the field's default."""
    flag = flag_of(name)
    if "action" not in kwargs and "choices" not in kwargs:  # --help shows "--kv-cache-gb KV_CACHE_GB"
        kwargs["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
    group.add_argument(flag, dest=name, default=getattr(ENGINE, name), help=text, **kwargs)


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The flags' EngineConfig, validated (raises ConfigError naming the first bad flag).

    --seed is a sampling flag (add_sampling_args): given, it seeds the engine's shared generator
    too; absent, the engine keeps its default seed."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig) if f.name != "seed"}
    config = EngineConfig(**values, seed=ENGINE.seed if args.seed is None else args.seed)
    config.validate()
    return config


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=SAMPLING.max_tokens,
                   help="most tokens to generate per prompt (default: %(default)s)")
    g.add_argument("--temperature", type=float, default=SAMPLING.temperature,
                   help="0 = greedy (default: %(default)s)")
    g.add_argument("--top-p", type=float, default=SAMPLING.top_p,
                   help="nucleus sampling mass, in (0, 1] (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=SAMPLING.top_k,
                   help="keep the k most likely tokens, 0 = off (default: %(default)s)")
    g.add_argument("--seed", type=int, default=SAMPLING.seed, help="per-request seed: same seed, same tokens")
    g.add_argument("--ignore-eos", action="store_true", default=SAMPLING.ignore_eos,
                   help="keep generating past end-of-sequence")
    g.add_argument("--n", type=int, default=SAMPLING.n,
                   help="samples per prompt, sharing its prefill; sample i uses seed + i (default: %(default)s)")
    g.add_argument("--beam-width", type=int, default=SAMPLING.beam_width,
                   help="beam search of this width, 1 = off (default: %(default)s)")
    g.add_argument("--length-penalty", type=float, default=SAMPLING.length_penalty,
                   help="beam search: a finished beam scores log p / length ** this (default: %(default)s)")


def sampling_params_from_args(args: argparse.Namespace) -> SamplingParams:
    """The flags' SamplingParams, validated (raises InvalidRequestError naming a bad one)."""
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
        ignore_eos=args.ignore_eos,
        n=args.n,
        beam_width=args.beam_width,
        length_penalty=args.length_penalty,
    )
    params.validate()
    return params
