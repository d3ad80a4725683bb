"""Benchmarks. The engine's and the recorder's print their figures beside a peer's run in the
same process, so that a ratio taken in one run can be compared across machines.

    python -m benchmarks.engine     the engine against Hugging Face transformers (--gpu: the H100/H200 workload)
    python -m benchmarks.recording  the engine with the recorder attached against without
    python -m benchmarks.webui      the web UI's slider latency in Chromium, each of the page's tabs in turn

workloads.py holds what they share (prompts, model shapes in configs/).
"""

import sys

COMMANDS = ("benchmarks.engine", "benchmarks.recording", "benchmarks.sharing", "benchmarks.webui")


def not_a_command(module: str) -> int:
    """What `python -m <module>` does for a module the commands above are made of: one line that
    names the commands, status 2 (it ran nothing and printed nothing, with status 0)."""
    print(f"python -m {module}: error: this module is a part of the benchmarks, not a command; run "
          + ", ".join(f"python -m {command}" for command in COMMANDS), file=sys.stderr)
    return 2
