"""Throughput of the engine against Hugging Face transformers, in one process, as ratios.

    python -m benchmarks.engine                  # CPU: embedded model, 1 prompt and 8 prompts
    python -m benchmarks.engine --config 1b      # the same on a Llama-3.2 shape, random weights
    python -m benchmarks.engine --gpu            # the GPU workload: 256 requests, 3 engines
    python -m benchmarks.engine --async-ab       # the GPU workload, async scheduling on / off in turns
    python -m benchmarks.engine --profile        # the GPU workload's kernels, prefill and decode (kernel_profile.py)
    python -m benchmarks.engine --gpu --tensor-parallel-size 2   # one GPU against 2 (benchmarks/tensor_parallel.py)

Every figure is output tokens per second of wall time. Both sides generate exactly the same
number of tokens (EOS ignored), greedily, from the same weights and prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from dataclasses import dataclass

import torch

from benchmarks.engine_modes import ASYNC_AB, DECODE, GPU, PROFILE, SMALL, SPLIT, refuse_unread_flags, run_mode
from benchmarks.floor import kv_bytes_per_token, measure_peaks, run_floor
from benchmarks.workloads import (
    CHAT_PROMPTS,
    MAX_REQUESTS,
    THROUGHPUT_PROMPT_TOKENS,
    config_path,
    random_prompts,
    throughput_prompts,
    warm_up_prompts,
)
from minillama import (
    ASYNC_SCHEDULING,
    BACKEND_NAMES,
    LLM,
    ConfigError,
    EngineConfig,
    LLMEngine,
    ModelConfig,
    Observer,
    SamplingParams,
    StepTimings,
    check_fits,
    embedded_model_dir,
)
from minillama.cli import ArgumentParser, add_debug_flag, given, int_at_least, run_cli, tune_gc

PROG = "python -m benchmarks.engine"
ENGINE = EngineConfig()  # the library's defaults: --device and --attention start from these


@dataclass
class Row:
    name: str
    tokens: int
    seconds: float
    host_waited: float | None = None  # seconds the host waited for the GPU in the run (EngineStats), if measured

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> Row:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    synchronize(engine.device)
    start = time.perf_counter()
    ids = [engine.add_request(p, params) for p in prompts]
    while engine.has_unfinished():
        engine.step()
    synchronize(engine.device)
    seconds = time.perf_counter() - start
    tokens = sum(len(engine.sequences[i].output_token_ids) for i in ids)
    for i in ids:
        engine.forget(i)
    return Row("minillama", tokens, seconds)


def time_hf_batches(hf, prompts: list[list[int]], batch_size: int, pad_id: int, name: str,
                    sequences_per_row: int = 1, **generate_args) -> Row:
    """HF `generate(**generate_args)` on static batches of `batch_size` left-padded prompts.
    Tokens: the new tokens of every sequence it returns, times sequences_per_row (a beam search
    returns one row per prompt but computes num_beams)."""
    device = hf.device
    synchronize(device)
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad_id, **generate_args)
        tokens += (out.shape[1] - width) * out.shape[0] * sequences_per_row
    synchronize(device)
    return Row(name, tokens, time.perf_counter() - start)


def time_hf_generate(hf, prompts: list[list[int]], max_tokens: int, batch_size: int, pad_id: int) -> Row:
    """HF `generate`, greedy, on static batches of `batch_size` left-padded prompts."""
    return time_hf_batches(hf, prompts, batch_size, pad_id, f"HF generate (batches of {batch_size})",
                           max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)


def time_hf_continuous(hf, prompts: list[list[int]], max_tokens: int) -> Row:
    """HF continuous batching (`generate_batch`, paged attention)."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    synchronize(hf.device)
    start = time.perf_counter()
    outputs = hf.generate_batch(inputs=prompts, generation_config=config)  # manages its own modes
    synchronize(hf.device)
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return Row("HF continuous batching", tokens, time.perf_counter() - start)


def print_table(title: str, rows: list[Row], floor_seconds: float | None = None) -> None:
    ours = rows[0]
    floor_name = "floor (measured GEMM + bandwidth)"
    width = max(len(name) for name in [floor_name, *(row.name for row in rows)]) + 1
    print(f"\n{title}")
    print(f"{'engine':<{width}}{'tokens':>8}{'seconds':>10}{'tok/s':>10}{'minillama x':>13}")
    for row in rows:
        if not row.tokens:
            print(f"{row.name:<{width}}  produced no tokens")
            continue
        ratio = ours.tok_per_s / row.tok_per_s
        print(f"{row.name:<{width}}{row.tokens:>8}{row.seconds:>10.2f}{row.tok_per_s:>10.1f}{ratio:>12.2f}x")
    if floor_seconds:
        print(f"{floor_name:<{width}}{ours.tokens:>8}{floor_seconds:>10.2f}"
              f"{ours.tokens / floor_seconds:>10.1f}   minillama at {floor_seconds / ours.seconds:.0%} of the floor")


def chat_prompt_ids(tokenizer) -> list[list[int]]:
    """CHAT_PROMPTS' token ids as the model's chat template wraps them (what the engine's
    chat=True gives too), known before any model loads."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          return_dict=False) for p in CHAT_PROMPTS]


def model_shape(config: str | None) -> ModelConfig:
    """The benchmarked model's shape: the embedded model's, or --config's (1b, 3b, 8b or a path)."""
    if config is None:
        return ModelConfig.from_file(embedded_model_dir() / "config.json")
    shape = ModelConfig.from_file(config_path(config))  # a malformed file: a ModelLoadError that says what is wrong
    hf_config(config)  # and what only transformers reads, checked before any run
    return shape


def hf_config(config: str):  # -> transformers.LlamaConfig
    """--config's shape as transformers' LlamaConfig, never stopping early (random weights).
    transformers checks the types of fields ModelConfig does not read (`"use_cache": "x"`):
    they failed, an internal error, when the HF peer was built after the engine's whole run.
    ConfigError naming --config. Read after model_shape's ModelConfig.from_file has bounded the
    file's size and nesting."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import LlamaConfig

    raw = json.loads(config_path(config).read_text())
    raw["eos_token_id"] = None  # random weights: never stop early
    try:
        return LlamaConfig.from_dict(raw)
    except (StrictDataclassError, ValueError, TypeError) as exc:
        raise ConfigError(f"--config {config}: {exc}") from exc


def fitting_shape(config: str | None, device: torch.device, dtype: torch.dtype) -> ModelConfig:
    """model_shape(config), refused if its weights do not fit on `device`: checked before HF
    builds the model, since a config of 10**9 layers would take hours, a huge one all memory."""
    shape = model_shape(config)
    check_fits(f"{config or 'the embedded model'}'s weights in {str(dtype).removeprefix('torch.')}",
               shape.num_parameters * dtype.itemsize, device, ConfigError)
    return shape


def check_context(flag: str, value: int, longest_prompt: int, new_tokens: int, shape: ModelConfig) -> None:
    """Refuse a workload whose sequences would pass the model's context before anything runs:
    the engine would stop them at its end and HF would run on past its position table, so the
    two would not do the same work (and on a CPU a sequence of 100,000 tokens runs for hours)."""
    context = shape.max_position_embeddings
    if longest_prompt + new_tokens > context:
        raise ConfigError(f"{flag} {value}: prompts of up to {longest_prompt:,} tokens and {new_tokens:,} new ones "
                          f"would pass the model's context of {context:,} tokens")


def hf_tokenizer(args: argparse.Namespace):
    """The embedded model's tokenizer; None for a --config shape (random weights, token prompts)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir()) if args.config is None else None


def load_hf_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """The embedded model, or a config's shape with random weights, as a transformers model."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    if args.config is None:
        return AutoModelForCausalLM.from_pretrained(embedded_model_dir(), dtype=dtype).to(device).eval()
    fitting_shape(args.config, device, dtype)
    torch.manual_seed(0)
    config = hf_config(args.config)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        return LlamaForCausalLM(config).to(dtype).eval()


def small_workload(args: argparse.Namespace) -> None:
    """1 prompt, then 8 prompts, of 64 new tokens each: engine vs HF generate."""
    device = EngineConfig(device=args.device).resolved_device()
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    shape, tokenizer = fitting_shape(args.config, device, dtype), hf_tokenizer(args)
    if tokenizer is not None:
        prompts = chat_prompt_ids(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    else:
        prompts, pad = random_prompts(8, 32, 96, shape.vocab_size, seed=0), 0
    check_context("--max-tokens", args.max_tokens, max(map(len, prompts)), args.max_tokens, shape)
    hf = load_hf_model(args, device, dtype)
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device=str(device), num_kv_blocks=args.kv_blocks), tokenizer)
    tune_gc()  # both sides alike (minillama/cli/gc_heap.py)
    print(f"device {device}, dtype {dtype}, torch threads {torch.get_num_threads()}, model "
          f"{args.config or 'embedded SmolLM2-135M-Instruct'}, {args.max_tokens} new tokens per prompt")
    for n in (1, 8):
        # Each side runs the exact workload once untimed first: a first call may compile or
        # allocate caches for that batch shape.
        rows = [min((time_engine(engine, prompts[:n], args.max_tokens) for _ in range(2)), key=lambda r: r.seconds),
                min((time_hf_generate(hf, prompts[:n], args.max_tokens, n, pad) for _ in range(2)), key=lambda r: r.seconds)]
        print_table(f"{n} prompt(s)", rows)


def gpu_workload(args: argparse.Namespace) -> None:
    """The throughput workload: 256 requests, prompts of 100-1024 tokens, 256 new tokens each.

    The engine runs first and is deleted before the peers run: each side may then take the GPU
    memory it wants for its KV cache."""
    device = torch.device("cuda")
    hf = load_hf_model(args, device, torch.bfloat16)
    prompts = throughput_prompts(args.num_requests, hf.config.vocab_size, seed=0)
    config = EngineConfig(device="cuda", attention=args.attention, max_num_seqs=args.max_num_seqs,
                          max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.eager,
                          async_scheduling=args.async_scheduling)
    engine = LLMEngine.from_hf_model(hf, config)
    tune_gc()  # both sides alike (minillama/cli/gc_heap.py)
    time_engine(engine, warm_up_prompts(hf.config.vocab_size), 8)
    before = dataclasses.replace(engine.stats)
    ours = time_engine(engine, prompts, args.output_len)
    stats, model_config = engine.stats.since(before), engine.model_config  # the timed run's alone
    print(f"KV cache: {engine.num_kv_blocks} blocks of {engine.config.block_size}; batches of up to "
          f"{engine.config.max_num_seqs} sequences and {engine.config.max_num_batched_tokens} tokens; attention "
          f"{engine.attention_backend}; CUDA graphs: {sorted(engine.runner.graphs)}; async scheduling "
          f"{'on' if engine.async_scheduling else 'off'}")
    print(stats.summary())
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    public = time_public_api(hf, prompts, args.output_len)
    peaks = measure_peaks(device)
    prefill_seconds = stats.prefill_seconds
    floor = run_floor(model_config, peaks, [len(p) for p in prompts], stats.prefill_tokens, stats.decode_steps,
                      args.output_len)
    print(f"measured on this GPU: bf16 GEMM {peaks.gemm_flops / 1e12:.0f} TFLOP/s, copy {peaks.copy_bytes / 1e12:.2f} TB/s")
    print(f"prefill: {floor.prefill_flops / prefill_seconds / 1e12:.0f} TFLOP/s in {prefill_seconds:.2f} s, "
          f"{floor.prefill_seconds / prefill_seconds:.0%} of the GEMM peak; floor {floor.prefill_seconds:.2f} s of "
          f"compute + {floor.decode_seconds:.2f} s of decode reads")
    rows = []
    # HF on the first --hf-requests prompts only, when given: a large shape's peers would not
    # finish within a lend's call otherwise. Their rows say so; tok/s is a rate, comparable.
    hf_prompts = prompts[: args.hf_requests or len(prompts)]
    fraction = f" (on {len(hf_prompts)} of {len(prompts)} requests)" if len(hf_prompts) < len(prompts) else ""
    if "static" in args.peers:
        time_hf_generate(hf, prompts[:2], 4, 2, 0)
        row = time_hf_generate(hf, hf_prompts, args.output_len, 64, 0)
        rows.append(dataclasses.replace(row, name=row.name + fraction))
    if "cb" in args.peers:
        try:
            row = time_hf_continuous(hf, hf_prompts, args.output_len)
            rows.append(dataclasses.replace(row, name=row.name + fraction))
        except Exception as exc:  # a peer failing must not hide our own numbers
            print(f"HF continuous batching failed: {type(exc).__name__}: {exc}")
    print_table(f"{args.config} shape, {args.num_requests} requests, {args.output_len} new tokens each",
                [ours, public, *rows], floor_seconds=floor.seconds)


def time_public_api(hf, prompts: list[list[int]], max_tokens: int) -> Row:
    """The same workload as a user runs it: LLM.generate with the library's defaults (an LLM over
    these weights: LLM(directory) would read them from disk first)."""
    llm = LLM.from_engine(LLMEngine.from_hf_model(hf, EngineConfig(device="cuda")))
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(warm_up_prompts(llm.engine.model_config.vocab_size), SamplingParams(temperature=0, max_tokens=8,
                                                                                     ignore_eos=True))
    synchronize(llm.engine.device)
    start = time.perf_counter()
    completions = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    del llm
    gc.collect()
    torch.cuda.empty_cache()
    return Row("LLM.generate, defaults", sum(len(c.token_ids) for c in completions), seconds)


def async_ab(args: argparse.Namespace) -> None:
    """The throughput workload on one engine with async scheduling on and off in turns, twice
    each, fresh prompts every run (so the prefix cache serves none): the overlap's gain, with
    the lend, the process and the engine the same."""
    device = torch.device("cuda")
    hf = load_hf_model(args, device, torch.bfloat16)
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cuda", attention=args.attention))
    del hf
    tune_gc()
    vocab = engine.model_config.vocab_size
    time_engine(engine, warm_up_prompts(vocab), 8)
    print(f"{args.config} shape, {args.num_requests} requests, {args.output_len} new tokens each, one engine")
    for run, overlap in enumerate((True, False, True, False)):
        engine.async_scheduling = overlap
        before = dataclasses.replace(engine.stats)
        row = time_engine(engine, throughput_prompts(args.num_requests, vocab, seed=10 + run), args.output_len)
        stats = engine.stats.since(before)
        print(f"async scheduling {'on ' if overlap else 'off'}: {row.tok_per_s:>9,.0f} tok/s in {row.seconds:.2f} s "
              f"(prefill {stats.prefill_seconds:.2f} s, decode {stats.decode_seconds:.2f} s over {stats.decode_steps} steps)")


# The decode table's steps after each batch's prefill: 5 to settle, 30 timed, 10 split by phase.
SETTLE_STEPS, TIMED_STEPS, SPLIT_STEPS = 5, 30, 10
DECODE_TABLE_STEPS = SETTLE_STEPS + TIMED_STEPS + SPLIT_STEPS + 1  # + the prefill's own token


class StepTimer(Observer):
    """Median of each phase of the steps it sees."""

    def __init__(self):
        self.timings: list[StepTimings] = []

    def on_step_end(self, result) -> None:
        self.timings.append(result.timings)

    def summary(self) -> str:
        def median(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        phases = ("schedule_ms", "prepare_ms", "forward_ms", "sample_ms")
        return " / ".join(f"{median([getattr(t, p) for t in self.timings]):.2f}" for p in phases)


def decode_step_table(args: argparse.Namespace) -> None:
    """Decode step time at batch sizes 1, 16, 64 against the memory-bandwidth floor: every step
    must read all weights once plus each sequence's K/V."""
    device = torch.device("cuda")
    hf = load_hf_model(args, device, torch.bfloat16)
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cuda", attention=args.attention, max_num_seqs=256,
                                                      async_scheduling=args.async_scheduling))
    tune_gc()  # both sides alike (minillama/cli/gc_heap.py)
    del hf
    torch.cuda.empty_cache()
    bandwidth = measure_peaks(device).copy_bytes
    model = engine.runner.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    mc = engine.model_config
    kv_per_token = kv_bytes_per_token(mc)
    print(f"\ndecode step vs floor ({args.config}, context {args.context} tokens, copy bandwidth "
          f"{bandwidth / 1e12:.2f} TB/s, weights {weight_bytes / 2**30:.2f} GiB)")
    print(f"{'batch':>6}{'step ms':>10}{'floor ms':>10}{'of floor':>10}{'waits ms':>10}   split (a timed step, in "
          "order): schedule / prepare / forward / sample ms")
    prompt = random_prompts(1, args.context, args.context, mc.vocab_size, seed=1)[0]
    for batch in (1, 16, 64, 256):
        params = SamplingParams(temperature=0, max_tokens=10_000, ignore_eos=True)
        ids = [engine.add_request(prompt[:-1] + [i], params) for i in range(batch)]
        while any(engine.sequences[i].num_computed_tokens < args.context for i in ids):
            engine.step()  # prefill (shared prefix: mostly cache hits)
        for _ in range(SETTLE_STEPS):
            engine.step()
        # TIMED_STEPS steps back to back, as a run makes them: with async scheduling a step's host work
        # runs while the step before computes, so one step timed alone would show only that.
        torch.cuda.synchronize(device)
        start, waited = time.perf_counter(), engine.stats.wait_seconds
        for _ in range(TIMED_STEPS):
            engine.step()
        torch.cuda.synchronize(device)
        step = (time.perf_counter() - start) / TIMED_STEPS
        # With async scheduling: how long the host waited for the GPU each step (0 in order).
        wait = (engine.stats.wait_seconds - waited) / TIMED_STEPS
        kv_bytes = batch * (args.context + 20) * kv_per_token
        floor = (weight_bytes + kv_bytes) / bandwidth
        split = StepTimer()
        engine.add_observer(split)  # an observer makes the engine synchronise after the forward
        for _ in range(SPLIT_STEPS):
            engine.step()
        engine.remove_observer(split)
        print(f"{batch:>6}{step * 1e3:>10.2f}{floor * 1e3:>10.2f}{floor / step:>10.0%}{wait * 1e3:>10.2f}   "
              f"{split.summary()}")
        for i in ids:
            engine.abort(i)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 for bad input (one line on stderr); 1 for a bug (minillama/cli/errors.py)."""
    return run_cli(PROG, _main, argv)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    # The mode flags: each picks one run (engine_modes.py), so two at once are refused.
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--gpu", action="store_true", help="the 256-request GPU workload")
    modes.add_argument("--decode-steps", action="store_true", help="GPU: decode step time vs the bandwidth floor")
    modes.add_argument("--async-ab", action="store_true", help="GPU: the workload with async scheduling on and off in turns")
    modes.add_argument("--profile", action="store_true", help="GPU: the workload's kernel time, prefill and decode apart")
    parser.add_argument("--config", default=None, help="1b, 3b, 8b or a config.json path (random weights); default: embedded model")
    parser.add_argument("--device", default=ENGINE.device, help="small workload: the device (the GPU runs use cuda)")
    parser.add_argument("--max-tokens", type=int_at_least(1), default=64, help="small workload: new tokens per prompt")
    parser.add_argument("--num-kv-blocks", "--kv-blocks", dest="kv_blocks", type=int, default=None,
                        help="small workload: the engine's KV blocks (default: the library's)")
    parser.add_argument("--num-requests", type=int_at_least(1, MAX_REQUESTS), default=256,
                        help="--gpu, --async-ab, --profile: requests in the workload")
    parser.add_argument("--output-len", type=int_at_least(1), default=256,
                        help="--gpu, --async-ab, --profile: new tokens per request")
    parser.add_argument("--peers", default="static,cb", help="--gpu: HF peers to run: static, cb, or none")
    parser.add_argument("--hf-requests", type=int_at_least(1, MAX_REQUESTS), default=None,
                        help="--gpu: the HF peers run the first this many requests only (default: all), labelled so")
    parser.add_argument("--attention", default=ENGINE.attention, choices=BACKEND_NAMES,
                        help="the GPU runs but --gpu --tensor-parallel-size: the attention backend")
    # The scheduler's budgets: the library's defaults for the device unless given (on a GPU, 256
    # sequences and 16,384 tokens a prefill step: the 256 requests decode in one batch).
    parser.add_argument("--max-num-seqs", type=int, default=None, help="--gpu; default: the library's for the device")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help="--gpu; default: the library's for the device")
    parser.add_argument("--eager", action="store_true", help="--gpu: no CUDA graphs")
    parser.add_argument("--async-scheduling", default=ENGINE.async_scheduling, choices=ASYNC_SCHEDULING,
                        help="--gpu, --decode-steps: plan the next step while the GPU runs this one (default: "
                             "%(default)s, on with CUDA)")
    parser.add_argument("--context", type=int_at_least(1), default=512, help="--decode-steps: tokens of context per sequence")
    parser.add_argument("--tensor-parallel-size", type=int_at_least(1), default=1,
                        help="--gpu: the workload on one GPU and split over this many (HF's peer: static only)")
    add_debug_flag(parser)
    return parser


def _main(argv: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_unread_flags(parser, argv, args)  # a flag the run would ignore: refused, naming the mode it needs
    unknown_peers = set(args.peers.split(",")) - {"static", "cb", "none"}
    if unknown_peers:
        raise ConfigError(f"--peers takes static, cb or both (comma-separated), or none, got {args.peers!r}")
    if args.tensor_parallel_size > 1 and "peers" in given(parser, argv, ["peers"]) and "cb" in args.peers.split(","):
        raise ConfigError("--peers cb: --tensor-parallel-size runs HF's static peer only (over the same GPUs)")
    # The engine's own flags are checked before any model loads.
    EngineConfig(device=args.device, attention=args.attention, num_kv_blocks=args.kv_blocks,
                 max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens).validate()
    mode = run_mode(args)
    if mode != SMALL:
        # The GPU runs' shape unless given (`or` took an empty --config for 1b, unsaid).
        args.config = "1b" if args.config is None else args.config
        shape = model_shape(args.config)
        if mode == DECODE:
            check_context("--context", args.context, args.context, DECODE_TABLE_STEPS, shape)
        else:
            check_context("--output-len", args.output_len, THROUGHPUT_PROMPT_TOKENS[1], args.output_len, shape)
        if args.hf_requests is not None and args.hf_requests > args.num_requests:
            raise ConfigError(f"--hf-requests {args.hf_requests} is more than --num-requests {args.num_requests}")
        if not torch.cuda.is_available():
            raise ConfigError("--gpu, --decode-steps, --async-ab and --profile need a CUDA GPU, and torch sees none")
    if mode == PROFILE:
        from benchmarks.kernel_profile import run

        run(args)
    elif mode == ASYNC_AB:
        async_ab(args)
    elif mode == DECODE:
        decode_step_table(args)
    elif mode == SPLIT:
        from benchmarks.tensor_parallel import scaling_workload

        scaling_workload(args)
    elif mode == GPU:
        gpu_workload(args)
    else:
        small_workload(args)


if __name__ == "__main__":
    sys.exit(main())
