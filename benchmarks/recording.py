"""What recording costs: engine throughput with no observer, with the Recorder without
attention, and with the Recorder tracing the attention of two sequences, in one process.

    python -m benchmarks.recording                      # embedded model, 8 chat prompts, 64 tokens each
    python -m benchmarks.recording --device cuda --repeats 3
    python -m benchmarks.recording --config 1b          # Llama-3.2-1B shape, random weights (GPU)

Every figure is output tokens per second of wall time, over the same greedy workload (EOS
ignored, so every run makes the same number of tokens). One untimed run goes first: it warms
up the engine and fills the prefix cache, so every timed run then gets the same prefix-cache
hits. Each setup keeps one recorder from run to run (cleared in between), as a debugger
session does, warmed up by an untimed run too. The three setups take turns, and each reports
its best of --repeats runs.

An observer makes the engine step in order (minillama/engine/in_flight.py), so on a GPU, where
the engine otherwise plans each step while the one before runs, the recorder is measured against
both: the engine stepping in order (what recording itself costs) and overlapping (what a
recorded run costs against an unrecorded one).
"""

from __future__ import annotations

import gc
import sys
import time

import torch

from benchmarks.workloads import CHAT_PROMPTS, config_path, random_prompts
from inspector import CapturePolicy, Recorder
from minillama import EngineConfig, LLMEngine, ModelConfig, SamplingParams
from minillama.cli import ArgumentParser, add_debug_flag, int_at_least, run_cli

PROG = "python -m benchmarks.recording"
IN_ORDER = "no observer, in order"
OVERLAPPED = "no observer, async scheduling"
SETUPS: dict[str, CapturePolicy | None] = {
    IN_ORDER: None,
    OVERLAPPED: None,
    "recorder, no attention": CapturePolicy(attention=False),
    "recorder, attention of 2 sequences": CapturePolicy(attention_requests=(0, 1)),
}


def timed_run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, recorder: Recorder | None,
              overlap: bool = False) -> tuple[float, int]:
    """One run of all prompts as a batch, recorded into a fresh trace by `recorder` (if any);
    `overlap`: with async scheduling (no observer only). -> (tokens per second, bytes the
    recorder kept)."""
    engine.async_scheduling = overlap
    if recorder is not None:
        recorder.clear()
        engine.add_observer(recorder)
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    start = time.perf_counter()
    ids = [engine.add_request(p, params) for p in prompts]
    while engine.has_unfinished():
        engine.step()
    if recorder is not None:
        recorder.flush()  # the last step's record, completed within the timing
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    seconds = time.perf_counter() - start
    tokens = sum(len(engine.sequences[i].output_token_ids) for i in ids)
    for i in ids:
        engine.forget(i)
    if recorder is None:
        return tokens / seconds, 0
    engine.remove_observer(recorder)
    return tokens / seconds, recorder.budget.used


def main(argv: list[str] | None = None) -> int:
    """The command line: bad flags give one line and exit status 2."""
    return run_cli(PROG, _main, argv)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_debug_flag(parser)
    parser.add_argument("--device", default=EngineConfig().device)
    parser.add_argument("--prompts", type=int_at_least(1, len(CHAT_PROMPTS)), default=8,
                        help=f"prompts in the batch (at most {len(CHAT_PROMPTS)})")
    parser.add_argument("--max-tokens", type=int_at_least(1, 4096), default=64)
    parser.add_argument("--repeats", type=int_at_least(1, 100), default=2)
    parser.add_argument("--config", default=None, help="1b, 3b or a config.json: that shape with random weights "
                        "(random prompts of 32-96 tokens); default: the embedded model")
    args = parser.parse_args(argv)
    if args.config is None:
        engine = LLMEngine.from_pretrained(None, EngineConfig(device=args.device))
        prompts = [engine.encode_prompt(p, chat=True) for p in CHAT_PROMPTS[: args.prompts]]
    else:
        config = ModelConfig.from_file(config_path(args.config))
        engine = LLMEngine.from_config(config, EngineConfig(device=args.device))
        prompts = random_prompts(args.prompts, 32, 96, config.vocab_size, seed=0)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    # One recorder per setup, as a debugger session keeps one: made, and warmed up by an
    # untimed run (its CUDA graphs captured, its kernels compiled), before any timed run.
    recorders = {name: Recorder(engine, policy) if policy is not None else None for name, policy in SETUPS.items()}
    if not engine.async_scheduling:  # its default off here (a CPU): the two runs without observer are one
        del recorders[OVERLAPPED]
    for name, recorder in recorders.items():
        timed_run(engine, prompts, params, recorder, name == OVERLAPPED)
    # What a long-lived process does once it has loaded: the objects made so far (torch, the
    # model) are left out of the garbage collector's full passes, which would otherwise walk
    # them all, every few hundred steps of a recording (what one costs: docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeats):
        for name, recorder in recorders.items():
            result = timed_run(engine, prompts, params, recorder, name == OVERLAPPED)
            best[name] = max(best.get(name, result), result)
    print(f"device {engine.device}, torch threads {torch.get_num_threads()}, {len(prompts)} prompts x "
          f"{args.max_tokens} tokens, best of {args.repeats}")
    overlapped = OVERLAPPED in best
    print(f"{'setup':<38}{'tok/s':>10}{'vs in order':>13}{'vs async':>10}{'kept MB':>10}" if overlapped
          else f"{'setup':<38}{'tok/s':>10}{'vs in order':>13}{'kept MB':>10}")
    baseline = best[IN_ORDER][0]
    for name, (rate, kept) in best.items():
        versus_async = f"{rate / best[OVERLAPPED][0]:>9.2f}x" if overlapped else ""
        print(f"{name:<38}{rate:>10.1f}{rate / baseline:>12.2f}x{versus_async}{kept / 2**20:>10.1f}")


if __name__ == "__main__":
    sys.exit(main())
