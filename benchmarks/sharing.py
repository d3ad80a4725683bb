"""What sharing KV blocks buys: n samples of one prompt, a beam search, and forks of running
requests, against the same number of separate requests, and samples and beams against Hugging
Face transformers, in one process.

    python -m benchmarks.sharing                 # CPU: the embedded model, 8 chat prompts
    python -m benchmarks.sharing --gpu           # GPU: Llama-3.2-1B shape, random bf16 weights

- samples: each prompt with SamplingParams(n=4) (one prefill; the samples share the prompt's
  blocks, copy on write) against 4 separate requests per prompt, and against HF
  `generate(num_return_sequences=4)`. Unseeded (the engine's shared generator): a seeded request
  draws from a generator of its own, one small kernel per row and step, on both sides alike.
  Prefix caching is off for this part: with it on, every run after the first would find its
  prompts in the cache, and 4 separate requests would not compute their prompt 4 times.
- beams: each prompt with SamplingParams(beam_width=4) (one prefill; each step keeps the 4
  best beams, forking and pruning on shared blocks) against 4 separate greedy requests per prompt
  (the same tokens to compute, with none of the search), and against HF `generate(num_beams=4)`.
  Tokens: every beam's token of every step, the work done (the search keeps 4 x max tokens).
- forks: each request, halfway through its output, forked 3 times with other tokens
  (LLMEngine.fork: the forks share its blocks) against 3 separate requests per request whose
  prompts are the same prefixes plus the same tokens (the prefix cache, on by default, serves
  their full blocks; the rest is computed again).

Every figure is output tokens per second of wall time, EOS ignored, so both sides make exactly
the same number of tokens. Each engine run goes once untimed first (kernels, graphs, caches).
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time

import torch

from benchmarks.engine import (
    Row,
    chat_prompt_ids,
    check_context,
    hf_tokenizer,
    load_hf_model,
    model_shape,
    print_table,
    synchronize,
    time_hf_batches,
)
from benchmarks.workloads import CHAT_PROMPTS, MAX_REQUESTS, random_prompts
from minillama import ConfigError, EngineConfig, LLMEngine, SamplingParams
from minillama.cli import ArgumentParser, add_debug_flag, int_at_least, run_cli, tune_gc

PROG = "python -m benchmarks.sharing"


def _sampling(max_tokens: int, n: int = 1) -> SamplingParams:
    return SamplingParams(temperature=1.0, n=n, max_tokens=max_tokens, ignore_eos=True)


def _run(engine: LLMEngine, ids: list[int]) -> int:
    """Step until every request is done; -> the output tokens of `ids` and of their samples."""
    while engine.has_unfinished():
        engine.step()
    synchronize(engine.device)
    everyone = [s for i in ids for s in engine.samples(i)]
    tokens = sum(len(engine.request(i).output_token_ids) for i in everyone)
    for i in everyone:
        engine.forget(i)
    return tokens


def time_samples(engine: LLMEngine, prompts: list[list[int]], n: int, max_tokens: int) -> Row:
    synchronize(engine.device)
    start = time.perf_counter()
    ids = [engine.add_request(p, _sampling(max_tokens, n=n)) for p in prompts]
    tokens = _run(engine, ids)
    return Row(f"minillama, n={n} samples", tokens, time.perf_counter() - start)


def time_separate_samples(engine: LLMEngine, prompts: list[list[int]], n: int, max_tokens: int) -> Row:
    synchronize(engine.device)
    start = time.perf_counter()
    ids = [engine.add_request(p, _sampling(max_tokens)) for p in prompts for _ in range(n)]
    tokens = _run(engine, ids)
    return Row(f"minillama, {n} separate requests", tokens, time.perf_counter() - start)


def _count_outputs(engine: LLMEngine) -> int:
    """Step until every request is done; -> the tokens the steps produced (every beam's)."""
    tokens = 0
    while engine.has_unfinished():
        tokens += len(engine.step())
    synchronize(engine.device)
    return tokens


def _time_all_outputs(engine: LLMEngine, name: str, requests: list[tuple[list[int], SamplingParams]]) -> Row:
    """Add the requests, step until every one is done; every output token counts (every beam's),
    and how long the host waited for the GPU meanwhile is kept."""
    synchronize(engine.device)
    start, waited = time.perf_counter(), engine.stats.wait_seconds
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    tokens = _count_outputs(engine)
    seconds = time.perf_counter() - start
    for i in ids:
        engine.forget(i)  # with a beam search, every beam the search made
    return Row(name, tokens, seconds, engine.stats.wait_seconds - waited)


def time_beams(engine: LLMEngine, prompts: list[list[int]], k: int, max_tokens: int) -> Row:
    params = SamplingParams(beam_width=k, max_tokens=max_tokens, ignore_eos=True)
    return _time_all_outputs(engine, f"minillama, beam_width={k}", [(p, params) for p in prompts])


def time_separate_greedy(engine: LLMEngine, prompts: list[list[int]], k: int, max_tokens: int) -> Row:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    return _time_all_outputs(engine, f"minillama, {k} separate greedy requests",
                             [(p, params) for p in prompts for _ in range(k)])


def print_host_waits(rows: list[Row]) -> None:
    """How long the host waited for the GPU in each measured run: a run that hardly waits is
    bound by the host's Python, and its speed moves with the host's (which differs between
    machines more than the GPU's does)."""
    waits = [f"{row.name}: {row.host_waited:.2f} of {row.seconds:.2f} s" for row in rows if row.host_waited is not None]
    if waits:
        print("host waited for the GPU: " + "; ".join(waits))


def time_hf_beams(hf, prompts: list[list[int]], k: int, max_tokens: int, batch_size: int, pad_id: int) -> Row:
    """HF `generate(num_beams=k)`; tokens: k beams x the new tokens, the work the search does."""
    return time_hf_batches(hf, prompts, batch_size, pad_id, f"HF generate, num_beams={k}", sequences_per_row=k,
                           max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, num_beams=k)


def time_hf_samples(hf, prompts: list[list[int]], n: int, max_tokens: int, batch_size: int, pad_id: int) -> Row:
    """HF `generate(do_sample=True, num_return_sequences=n)` on static batches of left-padded prompts."""
    return time_hf_batches(hf, prompts, batch_size, pad_id, f"HF generate, {n} return sequences",
                           max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=True,
                           num_return_sequences=n, top_k=0)


def _run_halfway(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> list[int]:
    """Greedy requests, stepped until each has made half its tokens (then they go on)."""
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in prompts]
    while min(len(engine.request(i).output_token_ids) for i in ids) < max_tokens // 2:
        engine.step()
    return ids


def _alternatives(engine: LLMEngine, seq_id: int, k: int) -> tuple[int, list[int], list[list[int]]]:
    """Where to fork request `seq_id` (its tokens so far) and k other tokens than its last."""
    info = engine.request(seq_id)
    tokens = [*info.prompt_token_ids, *info.output_token_ids]
    vocab = engine.model_config.vocab_size
    return len(tokens) - 1, tokens, [[(tokens[-1] + j) % vocab] for j in range(1, k + 1)]


def time_forks(engine: LLMEngine, prompts: list[list[int]], k: int, max_tokens: int, fork: bool) -> Row:
    """Requests run halfway; then each gets k continuations with other tokens in place of its
    last one, as forks (fork=True) or as separate requests. Timed from the forks to the end,
    counting the continuations' tokens."""
    parents = _run_halfway(engine, prompts, max_tokens)
    synchronize(engine.device)
    start = time.perf_counter()
    params = SamplingParams(temperature=0, max_tokens=max_tokens // 2, ignore_eos=True)
    children = []
    for parent in parents:
        position, tokens, forced = _alternatives(engine, parent, k)
        for tokens_forced in forced:
            if fork:
                children.append(engine.fork(parent, position, tokens_forced, params))
            else:
                children.append(engine.add_request(tokens[:position] + tokens_forced, params))
    while engine.has_unfinished():
        engine.step()
    synchronize(engine.device)
    seconds = time.perf_counter() - start
    tokens = sum(len(engine.request(i).output_token_ids) for i in children)
    for i in parents + children:
        engine.forget(i)
    name = f"minillama, {k} forks each" if fork else f"minillama, {k} separate requests each"
    return Row(name, tokens, seconds)


def _best(run, repeats: int = 2) -> Row:
    """The faster of `repeats` runs after an untimed one."""
    run()
    return min((run() for _ in range(repeats)), key=lambda row: row.seconds)


GPU_PROMPT_TOKENS = (256, 1024)  # the GPU workload's random prompts, shortest and longest
CPU_MAX_TOKENS, GPU_MAX_TOKENS = 32, 128  # --max-tokens unless given


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 for bad input (one line on stderr); 1 for a bug (minillama/cli/errors.py)."""
    return run_cli(PROG, _main, argv)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="Llama-3.2-1B shape, random weights, on a CUDA GPU")
    parser.add_argument("--n", type=int_at_least(2), default=4,
                        help="samples per prompt, the beam width, and forks per request + 1")
    parser.add_argument("--num-prompts", type=int_at_least(1, MAX_REQUESTS), default=None,
                        help=f"default: 8 (CPU, at most {len(CHAT_PROMPTS)}), 64 (GPU)")
    parser.add_argument("--max-tokens", type=int_at_least(2), default=None, help="default: 32 (CPU), 128 (GPU)")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face peer")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        raise ConfigError("--gpu needs a CUDA GPU, and torch sees none")
    SamplingParams(n=args.n).validate()
    if not args.gpu and (args.num_prompts or 0) > len(CHAT_PROMPTS):
        raise ConfigError(f"--num-prompts {args.num_prompts}: the CPU workload has {len(CHAT_PROMPTS)} chat prompts")
    max_tokens = args.max_tokens or (GPU_MAX_TOKENS if args.gpu else CPU_MAX_TOKENS)
    args.config = "1b" if args.gpu else None
    shape, tokenizer = model_shape(args.config), hf_tokenizer(args)
    if args.gpu:
        prompts = random_prompts(args.num_prompts or 64, *GPU_PROMPT_TOKENS, shape.vocab_size, seed=0)
    else:
        prompts = chat_prompt_ids(tokenizer)[: args.num_prompts or 8]
    check_context("--max-tokens", max_tokens, max(map(len, prompts)), max_tokens, shape)
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.bfloat16 if args.gpu else torch.float32
    hf = load_hf_model(args, device, dtype)
    config = EngineConfig(device="cuda", max_num_seqs=256, max_num_batched_tokens=16384) if args.gpu else EngineConfig(device="cpu")
    engine = LLMEngine.from_hf_model(hf, dataclasses.replace(config, enable_prefix_caching=False), tokenizer)
    tune_gc()  # both sides alike (minillama/cli/gc_heap.py)
    n = args.n
    print(f"device {device}, {'Llama-3.2-1B shape, random weights' if args.gpu else 'embedded model'}, "
          f"{len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"{max_tokens} new tokens per sequence")
    pad = 0 if tokenizer is None or tokenizer.pad_token_id is None else tokenizer.pad_token_id
    batch = max(1, 64 // n) if args.gpu else len(prompts)  # HF's prompts per generate call
    rows = [_best(lambda: time_samples(engine, prompts, n, max_tokens)),
            _best(lambda: time_separate_samples(engine, prompts, n, max_tokens))]
    if not args.no_hf:
        rows.append(_best(lambda: time_hf_samples(hf, prompts, n, max_tokens, batch, pad), repeats=1))
    print_table(f"{n} samples of each prompt (prefix caching off)", rows)
    rows = [_best(lambda: time_beams(engine, prompts, n, max_tokens)),
            _best(lambda: time_separate_greedy(engine, prompts, n, max_tokens))]
    if not args.no_hf:
        rows.append(_best(lambda: time_hf_beams(hf, prompts, n, max_tokens, batch, pad), repeats=1))
    print_table(f"beam search of width {n} (prefix caching off; tokens: every beam's)", rows)
    if args.gpu:  # on the CPU the host computes the forward itself: it never waits
        print_host_waits(rows)
    del engine
    gc.collect()
    if args.gpu:
        torch.cuda.empty_cache()
    engine = LLMEngine.from_hf_model(hf, config, tokenizer)
    rows = [_best(lambda: time_forks(engine, prompts, n - 1, max_tokens, fork=True)),
            _best(lambda: time_forks(engine, prompts, n - 1, max_tokens, fork=False))]
    print_table(f"{n - 1} continuations of each request from its middle (timed from the forks; prefix caching on)", rows)


if __name__ == "__main__":
    sys.exit(main())
