"""python -m minillama: run prompts as one continuous batch and print the answers.

    python -m minillama --chat --prompt "What is the capital of France?" --prompt "Write a haiku about autumn."
"""

from __future__ import annotations

import sys

from minillama import LLM, check_text
from minillama.cli import (
    ENGINE_UNREAD,
    SAMPLING_UNREAD,
    ArgumentParser,
    add_debug_flag,
    add_engine_args,
    add_sampling_args,
    check_encodes_text,
    engine_config_from_args,
    refuse_unread,
    run_cli,
    sampling_params_from_args,
)

PROG = "python -m minillama"


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 for bad input (one line on stderr); 1 for a bug (minillama/cli/errors.py)."""
    return run_cli(PROG, _main, argv)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    add_engine_args(parser)
    add_sampling_args(parser)
    add_debug_flag(parser)
    return parser


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Everything that needs no model is checked before the model loads: each value, then what
    # the values leave unread.
    config, params = engine_config_from_args(args), sampling_params_from_args(args)
    refuse_unread(parser, argv, args, ENGINE_UNREAD + SAMPLING_UNREAD)
    for prompt in args.prompt:
        check_text(prompt)
    llm = LLM(args.model, config)
    check_encodes_text(llm.engine.tokenizer, args.model)
    completions = llm.generate(args.prompt, params, chat=args.chat)
    # A prompt's n samples or beams come one after the other (beams best first), its first with
    # sample_index 0.
    prompt_index = -1
    for completion in completions:
        prompt_index += completion.sample_index == 0
        heading = args.prompt[prompt_index]
        if params.n > 1:
            heading += f"  (sample {completion.sample_index})"
        elif params.beam_width > 1:
            heading += f"  (beam {completion.sample_index}, score {completion.score:.3f})"
        print(f"### {heading}\n{completion.text}\n[{len(completion.token_ids)} tokens, {completion.finish_reason}]\n")
    print(llm.engine.stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
