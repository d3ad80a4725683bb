"""python -m minillama: run prompts as one continuous batch and print the answers.

    python -m minillama --chat --prompt "What is the capital of France?" --prompt "Write a haiku about autumn."
"""

from __future__ import annotations

import argparse
import sys

from minillama.cli_args import add_engine_args, add_sampling_args, engine_config_from_args, sampling_params_from_args
from minillama.engine.llm import LLM
from minillama.errors import InvalidRequestError, ModelLoadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillama", description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    add_engine_args(parser)
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    try:
        llm = LLM(args.model, engine_config_from_args(args))
        completions = llm.generate(args.prompt, sampling_params_from_args(args), chat=args.chat)
    except (InvalidRequestError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for prompt, completion in zip(args.prompt, completions):
        print(f"### {prompt}\n{completion.text}\n[{len(completion.token_ids)} tokens, {completion.finish_reason}]\n")
    print(llm.engine.stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
