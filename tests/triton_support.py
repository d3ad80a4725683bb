"""When the Triton kernel tests can run.

CUDA tests need a GPU and Triton; interpreter tests run the same kernels on the CPU with
TRITON_INTERPRET=1 (on small shapes), which conftest.py sets on a machine without a CUDA GPU."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_TRITON) or INTERPRET,
    reason="needs a CUDA GPU and triton (and TRITON_INTERPRET unset)",
)
requires_interpreter = pytest.mark.skipif(
    not (INTERPRET and HAS_TRITON),
    reason="runs the kernels on the CPU only with TRITON_INTERPRET=1 set and triton installed",
)


def capture_graph(step):
    """Warm `step` up on a side stream (Triton compiles on first call), then capture it in a CUDA
    graph. -> (graph, what the captured call returned: tensors the replays overwrite)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step()
    return graph, outputs
