"""Benchmarks. The engine's and the recorder's print their figures beside a peer's run in the
same process, so that a ratio taken in one run can be compared across machines.

    python -m benchmarks.engine     the engine against Hugging Face transformers (--gpu: the H100/H200 workload)
    python -m benchmarks.recording  the engine with the recorder attached against without
    python -m benchmarks.webui      the web UI's slider latency in Chromium, each of the page's tabs in turn

workloads.py holds what they share (prompts, model shapes in configs/).
"""
