"""The workloads every benchmark shares: chat prompts, random token prompts, model shapes."""

from __future__ import annotations

import glob
import random
from pathlib import Path

from minillama import ConfigError

CONFIGS = Path(__file__).parent / "configs"
CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn.",
    "Explain what a KV cache is in one paragraph.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a short recipe for pancakes.",
    "What does a compiler do?",
    "Translate 'good morning' into German and Spanish.",
]


def config_path(name: str) -> Path:
    """A shape by its short name (1b, 3b: Llama-3.2; 8b: Llama-3.1), else `name` as a path.
    ConfigError, naming --config and the names it takes, when it is neither: every benchmark
    reads its --config here, and "7b" would otherwise be reported as a file that is missing."""
    found = sorted(CONFIGS.glob(f"llama-3.*-{glob.escape(name)}.json")) if name else []  # "*" is no name
    if found:
        return found[-1]
    path = Path(name)
    try:
        is_file, exists = bool(name) and path.is_file(), bool(name) and path.exists()
    except OSError:  # a name too long for a path
        is_file = exists = False
    if not is_file:
        # A folder, a pipe or a device is there, but is no file: "no such file" sent the user
        # looking for a typo.
        what = "is not a regular file (a folder, a pipe or a device)" if exists else "no such file"
        raise ConfigError(f"--config {name}: {what}; give 1b, 3b, 8b or the path of a config.json")
    return path


# The throughput workload's prompt lengths, in tokens (shortest, longest).
THROUGHPUT_PROMPT_TOKENS = (100, 1024)
MAX_REQUESTS = 16_384  # the --num-requests a workload may ask for: 256 is the measured one


def random_prompts(n: int, low: int, high: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(low, high))] for _ in range(n)]


def throughput_prompts(n: int, vocab: int, seed: int) -> list[list[int]]:
    """The throughput workload's prompts: n of random tokens, each THROUGHPUT_PROMPT_TOKENS long."""
    return random_prompts(n, *THROUGHPUT_PROMPT_TOKENS, vocab, seed)


def warm_up_prompts(vocab: int) -> list[list[int]]:
    """What an engine runs (8 tokens each) before it is timed: enough prompts for a full prefill
    step and a decode batch of 32, so the kernels the timed run needs are compiled (a fresh
    machine has no kernel cache); other prompts than any timed run's (seed 1), so the prefix
    cache serves a timed run nothing."""
    return throughput_prompts(32, vocab, seed=1)


if __name__ == "__main__":
    import sys

    from benchmarks import not_a_command

    sys.exit(not_a_command("benchmarks.workloads"))
