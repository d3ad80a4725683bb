"""Where the web UI starts differently from the library, and why: the one place the UI's own
starting settings are written. Every other setting on the page starts at the library's default,
read from its dataclass (EngineConfig, SamplingParams, CapturePolicy). What a user may not change
at all, the server's limits, is webui/limits.py.
"""

from __future__ import annotations

from minillama import EngineConfig, SamplingParams

ENGINE = EngineConfig(
    # Each session's KV pool. 64 blocks (1,024 tokens at the default block size) fill up with a
    # few prompts and their answers, so preemption, which the KV-cache panel is there to show,
    # happens in the first minute; the library sizes its pool from memory, where a demo never
    # runs out.
    num_kv_blocks=64,
    # The sessions' steps take turns on the one shared model, so each step is kept short: at most
    # 8 sequences a batch and 2,048 tokens a prefill step (the library: 64 and 4,096 on a CPU, 256 and
    # 16,384 on a GPU).
    max_num_seqs=8,
    max_num_batched_tokens=2048,
    # The shared model's context (app.py --max-model-len), which caps every session's, is the
    # library's: the model's, up to 8,192. A fixed number would refuse every model of a shorter
    # context (TinyLlama's 2,048) unless the flag came with it.
)
SAMPLING = SamplingParams(
    temperature=0.0,  # greedy: the same prompts give the same text after every Reset (the library: 1.0)
    max_tokens=48,  # short answers: a batch of prompts is a few dozen steps to walk through (the library: 64)
)
CHAT = True  # the embedded model is an instruct model: it answers well inside its chat template (the library: off)
# Trace the attention (and the logit lens) of every request, as long as the memory budget lasts,
# where the library traces the first two: a user adds prompts in turns and may look at any of them.
TRACED_REQUESTS: int | None = None
# The Prompts panel's text: three prompts whose answers are short, one a near-copy of another
# (its chat template and question come from the prefix cache).
EXAMPLE_PROMPTS = ("What is the capital of France?", "Write a haiku about autumn.",
                   "What is the capital of France? Answer in one word.")
