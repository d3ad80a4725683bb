"""python -m inspector: record a run to a .mltrace file, read one back, export its timings.

    python -m inspector record --chat --prompt "What is the capital of France?" \\
        --prompt "Write a haiku about autumn." --kv-blocks 24 -o run.mltrace
    python -m inspector show run.mltrace              # overview
    python -m inspector show run.mltrace --step 12    # one step in detail
    python -m inspector export-chrome run.mltrace -o timings.json   # open in ui.perfetto.dev
    python -m inspector replay run.mltrace --kv-blocks 6 -o small.mltrace   # the same requests, other settings
    python -m inspector replay run.mltrace --alone -o alone.mltrace         # each request by itself
    python -m inspector diff run.mltrace small.mltrace    # exit 0: same tokens; 1: they differ; 2: an error
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time

from inspector import (
    CapturePolicy,
    DebugSession,
    RunResult,
    TraceError,
    diff_traces,
    export_chrome_trace,
    format_diff,
    format_overview,
    format_step,
    load,
    replay,
    save,
)
from minillama import ConfigError, EngineConfig, LLMEngine, check_text
from minillama.cli import (
    ENGINE_UNREAD,
    SAMPLING_UNREAD,
    ArgumentParser,
    add_debug_flag,
    add_engine_args,
    add_sampling_args,
    check_encodes_text,
    check_output_path,
    engine_config_from_args,
    int_at_least,
    number_at_least,
    refuse_unread,
    run_cli,
    sampling_params_from_args,
    tune_gc,
)

PROG = "python -m inspector"
CAPTURE = CapturePolicy()  # the recorder's defaults: every capture flag starts from these
MIB = 2**20
FILE_CHECK_EVERY_S = 1.0  # how often a recording asks whether a trace file can still hold it


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 for bad input (one line on stderr); 1 for a bug (minillama/cli/errors.py).
    diff: 0 when the runs have the same tokens, 1 when they differ."""
    return run_cli(PROG, _main, argv, expected=(TraceError,))


def _main(argv: list[str]) -> int:
    parser = build_parser()
    # A flag before the subcommand that the command line does not know is named as such: argparse
    # would first say the subcommand is missing ("required: command"), hiding the typo.
    before_command = next((token for token in argv if not token.startswith("-")), None)
    for token in argv[: argv.index(before_command) if before_command is not None else len(argv)]:
        if token.split("=", 1)[0] not in parser._option_string_actions:
            parser.error(f"unrecognized arguments: {token}")
    args = parser.parse_args(argv)
    if args.command in ("record", "replay"):  # the engine's flags: one may leave another unread
        # The subcommand's own parser (argparse keeps no public list of a parser's actions).
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        # Only --debug (no value) can come before the subcommand's name: its first occurrence is it.
        rules = ENGINE_UNREAD + (SAMPLING_UNREAD if args.command == "record" else ())
        refuse_unread(commands.choices[args.command], argv[argv.index(args.command) + 1:], args, rules)
    # Reading a trace makes millions of small objects that all live on: with CPython's default
    # collector a third of a large file's load went to collections that found nothing
    # (minillama/cli/gc_heap.py). A command is a process of its own, so it tunes its collector.
    tune_gc()
    if args.command == "record":
        return _record(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "diff":
        diff = diff_traces(load(args.a), load(args.b))
        print(format_diff(diff, tokens=args.tokens))
        return 0 if diff.equal else 1
    output = check_output_path(args.output, "-o", reads=[args.trace]) if args.command == "export-chrome" else None
    trace = load(args.trace)
    if output is not None:
        export_chrome_trace(trace, output)
        print(f"wrote {output}: {len(trace.steps)} steps (open it in https://ui.perfetto.dev)")
    elif args.step is None:
        print(format_overview(trace))
    elif not 0 <= args.step < len(trace.steps):
        held = f"steps 0 to {len(trace.steps) - 1}" if trace.steps else "no step"
        raise ConfigError(f"--step {args.step}: the trace has {held}")
    else:
        print(format_step(trace, args.step))
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_debug_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record", help="run prompts as one batch and record every step")
    record.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    record.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    record.add_argument("-o", "--output", required=True, help="the .mltrace file to write")
    record.add_argument("--max-steps", type=int_at_least(1), default=None, help="stop recording after this many steps")
    add_engine_args(record, kv_blocks_alias=True)
    add_sampling_args(record)
    capture = record.add_argument_group("capture")
    traced = CAPTURE.attention_requests  # None: every prompt
    capture.add_argument("--attention-seqs", type=int_at_least(0), nargs="*", default=traced, metavar="I",
                         help="prompts (0-based, in the order given) whose attention is recorded (default: "
                              f"{'every prompt' if traced is None else ' '.join(map(str, traced))})")
    capture.add_argument("--no-attention", dest="capture_attention", action="store_false", default=CAPTURE.attention,
                         help="record no attention")
    # --top-k is taken by sampling (the top-k filter); this one is how many tokens to record.
    capture.add_argument("--logits-top-k", type=int_at_least(1), default=CAPTURE.top_k,
                         help="most likely tokens recorded per sampled token (default: %(default)s)")
    capture.add_argument("--logit-lens", action="store_true", default=CAPTURE.logit_lens,
                         help="record each layer's top-5 next-token guess for the --attention-seqs prompts")
    capture.add_argument("--budget-mb", type=number_at_least(0), default=CAPTURE.memory_budget / MIB,
                         help="memory for recorded data, MiB (default: %(default)g)")
    add_debug_flag(record)

    show = commands.add_parser("show", help="print a trace's overview, or one step in detail")
    show.add_argument("trace", help="a .mltrace file")
    show.add_argument("--step", type=int, default=None, help="the step to print (default: the overview)")
    add_debug_flag(show)

    chrome = commands.add_parser("export-chrome", help="write step timings as Chrome trace JSON (Perfetto)")
    chrome.add_argument("trace", help="a .mltrace file")
    chrome.add_argument("-o", "--output", required=True, help="the .json file to write")
    add_debug_flag(chrome)

    again = commands.add_parser("replay", help="run a trace's requests again, under other engine settings or each alone",
                                description="Run a trace's requests (prompts, sampling params and seeds, arrival "
                                            "steps, forks) again on the same model. Every engine flag starts from "
                                            "the recorded setting; give one to change it.")
    again.add_argument("trace", help="the .mltrace file to replay")
    again.add_argument("-o", "--output", required=True, help="the .mltrace file to write")
    again.add_argument("--alone", action="store_true", help="run each request by itself, one after another")
    again.add_argument("--force", action="store_true",
                       help="replay even without a weights fingerprint to check, or with a different one")
    # The switches' opposites, for a recording that had them given: each sets its field back.
    add_engine_args(again, opposites=True, kv_blocks_alias=True)
    again.add_argument("--seed", type=int, help="seed of the shared sampling generator (requests without a seed)")
    settings = {f.name for f in dataclasses.fields(EngineConfig)}
    again.set_defaults(**dict.fromkeys(settings))  # None: as recorded
    sizing = {"kv_cache_memory_gb", "gpu_memory_utilization"}  # not recorded: given, they size the pool anew
    for action in again._actions:  # argparse keeps no public list of a parser's flags
        if action.dest in settings and action.help:
            said = "given, the pool is sized from memory" if action.dest in sizing else "default: as recorded"
            action.help = re.sub(r" \(default: .*\)$", "", action.help) + f" ({said})"
    add_debug_flag(again)

    diff = commands.add_parser("diff", help="compare two traces of the same requests (exit 0: same tokens, 1: not)")
    diff.add_argument("a", help="a .mltrace file")
    diff.add_argument("b", help="another .mltrace file, of the same requests")
    diff.add_argument("--tokens", action="store_true", help="the per-token comparison of every request, not only "
                                                            "of those that differ")
    add_debug_flag(diff)
    return parser


def _record(args: argparse.Namespace) -> int:
    # Everything that needs no model is checked before the model loads and the run is recorded.
    output = check_output_path(args.output, "-o")
    config, params = engine_config_from_args(args), sampling_params_from_args(args)
    for prompt in args.prompt:
        check_text(prompt)
    if isinstance(args.attention_seqs, list):  # given on the command line (a default may name more prompts)
        beyond = [i for i in args.attention_seqs if i >= len(args.prompt)]
        if beyond:
            raise ConfigError(f"--attention-seqs {beyond[0]}: there are {len(args.prompt)} prompt(s), numbered 0 to "
                              f"{len(args.prompt) - 1}")
        repeated = [i for n, i in enumerate(args.attention_seqs) if i in args.attention_seqs[:n]]
        if repeated:  # CapturePolicy's own refusal names its field, not the flag
            raise ConfigError(f"--attention-seqs {repeated[0]} is given more than once")
        if not args.capture_attention and not args.logit_lens:  # they pick whose attention or lens is recorded
            raise ConfigError("--attention-seqs picks prompts whose attention (or --logit-lens) is recorded, and "
                              "--no-attention records none: give one of them")
    engine = LLMEngine.from_pretrained(args.model, config)
    check_encodes_text(engine.tokenizer, args.model)
    session = DebugSession(engine, capture_policy_from_args(args))
    for prompt in args.prompt:
        session.add(prompt, params, chat=args.chat)
    result = _run_while_it_fits(session, args.max_steps)
    save(session.trace, output)
    print(format_overview(session.trace))
    state = "all requests finished" if result.finished else f"stopped after {result.steps} steps"
    print(f"\n{state}; wrote {output}")
    return 0


def _run_while_it_fits(session: DebugSession, max_steps: int | None) -> RunResult:
    """Run the batch, asking about once every FILE_CHECK_EVERY_S whether the recording still fits
    in a trace file: a run past a limit would be refused by save() only once it had finished.
    It stops there instead, writing nothing, and says which limit and by which step. (Asked at
    every step, the meter would wait for each step's record, which the recorder otherwise
    completes while the GPU runs the next step.)"""
    steps = session.run_iter(max_steps=max_steps)
    asked = time.monotonic()
    while True:
        try:
            index = next(steps)
        except StopIteration as end:
            return end.value
        if time.monotonic() - asked < FILE_CHECK_EVERY_S:
            continue
        limit = session.recorder.file_limit()
        if limit is not None:
            steps.close()
            raise TraceError(f"stopped at step {index}, nothing written: the recording is past what a trace file may "
                             f"hold ({limit}); record fewer steps (--max-steps below {index}), fewer prompts, "
                             "a smaller --logits-top-k, attention for fewer prompts, or no --logit-lens")
        asked = time.monotonic()


def _replay(args: argparse.Namespace) -> int:
    output = check_output_path(args.output, "-o", reads=[args.trace])
    source = load(args.trace)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig) if getattr(args, f.name) is not None}
    result = replay(source, args.model, alone=args.alone, force=args.force, on_note=lambda m: print(f"note: {m}"),
                    **overrides)
    save(result, output)
    diff = diff_traces(source, result)
    equal = sum(r.equal for r in diff.requests)
    print(format_overview(result))
    print(f"\n{equal} of {len(diff.requests)} requests gave the same tokens as {args.trace}; wrote {output} "
          f"(compare: {PROG} diff {args.trace} {output})")
    return 0


def capture_policy_from_args(args: argparse.Namespace) -> CapturePolicy:
    """The capture flags' CapturePolicy (each flag's type has checked its value)."""
    return CapturePolicy(
        attention=args.capture_attention,
        attention_requests=None if args.attention_seqs is None else tuple(args.attention_seqs),
        top_k=args.logits_top_k,
        logit_lens=args.logit_lens,
        memory_budget=int(args.budget_mb * MIB),
    )


if __name__ == "__main__":
    sys.exit(main())
