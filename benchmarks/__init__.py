"""Benchmarks, each printing its figures beside a peer's run in the same process.

    python -m benchmarks.engine     the engine against Hugging Face transformers (--gpu: the H100/H200 workload)
    python -m benchmarks.recording  the engine with the recorder attached against without
    python -m benchmarks.webui      the web UI's slider latency with several tabs open

workloads.py holds what they share (prompts, model shapes in configs/).
"""
