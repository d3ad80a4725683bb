"""BucketGraphs: a tensor function of a [rows, width] batch, replayed from CUDA graphs on a side
stream, so that the engine neither launches its kernels nor waits for them.

Why: the logits summary is a dozen kernels (topk alone launches about twenty), each costing
host time to launch, next to a decode step that is short on a GPU (docs/perf-notes.md has the
figures). A CUDA graph launches them all at once, including the copy of the results to the
host. And on a stream of its own the summary's GPU time overlaps what the engine does next
(sampling, the host's bookkeeping) instead of delaying it.

A graph replays fixed addresses and shapes, so there is one graph per bucket of rows (the next
power of two at or above the batch's row count) over one static input buffer: a batch is copied
into the buffer's first rows; the padding rows hold whatever an earlier batch left there, and
their results are never read. The outputs are static too: valid until the next launch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Outputs = tuple[torch.Tensor, ...]


@dataclass
class _Graph:
    graph: torch.CUDAGraph
    outputs: Outputs  # on the device
    host: Outputs  # pinned copies of the first host_outputs outputs, filled by the graph itself


class BucketGraphs:
    def __init__(self, fn: Callable[[torch.Tensor], Outputs], device: torch.device, host_outputs: int = 0):
        """fn: [rows, width] -> tensors whose first dimension is rows; it must be capturable
        (no host synchronisation, no shapes that depend on values). The first host_outputs of
        them are also copied to pinned host memory by the graph."""
        self.fn = fn
        self.host_outputs = host_outputs
        self.device = device
        self.stream = torch.cuda.Stream(device)
        # The engine's stream, asked for once: asking costs host time every call.
        self.engine_stream = torch.cuda.current_stream(device)
        self.inputs: torch.Tensor | None = None  # [capacity, width], the graphs' input
        self.graphs: dict[int, _Graph] = {}
        self.pool = None  # memory shared by the graphs, which never run at the same time

    @torch.inference_mode()
    def launch(self, x: torch.Tensor) -> tuple[Outputs, Outputs]:
        """Queue fn(x) on the side stream (self.stream), after the work already queued for x on
        the engine's stream. -> (fn's outputs, their host copies), cut to x's rows. Queue more
        work that reads them on the side stream too; self.stream.synchronize() before reading
        the host copies. Both hold until the next launch."""
        rows = x.shape[0]
        bucket = 1 << max(rows - 1, 0).bit_length()
        self._make_room(bucket, x)
        self.stream.wait_stream(self.engine_stream)
        # set_stream rather than `with torch.cuda.stream()`: a third of the host time.
        torch.cuda.set_stream(self.stream)
        try:
            if bucket not in self.graphs:
                self.graphs[bucket] = self._capture(bucket)
            captured = self.graphs[bucket]
            self.inputs[:rows].copy_(x)
            captured.graph.replay()
        finally:
            torch.cuda.set_stream(self.engine_stream)
        # x was made on the engine's stream; the caching allocator must not hand its memory
        # out again before the side stream's copy has read it.
        x.record_stream(self.stream)
        return tuple(out[:rows] for out in captured.outputs), tuple(out[:rows] for out in captured.host)

    def _make_room(self, bucket: int, x: torch.Tensor) -> None:
        """Grow the input buffer to the bucket (graphs captured over the old one are dropped)."""
        inputs = self.inputs
        if inputs is not None and inputs.shape[0] >= bucket and inputs.shape[1:] == x.shape[1:] and inputs.dtype == x.dtype:
            return
        self.stream.synchronize()  # the old graphs may still be reading the old buffer
        self.graphs, self.pool = {}, None
        self.inputs = torch.zeros(bucket, *x.shape[1:], dtype=x.dtype, device=self.device)

    def _capture(self, bucket: int) -> _Graph:
        x = self.inputs[:bucket]
        warm = self.fn(x)  # outside the graph: lazily initialised kernels and workspaces
        # Allocated before the capture, which may not allocate pinned memory.
        host = tuple(torch.empty(out.shape, dtype=out.dtype, pin_memory=True) for out in warm[: self.host_outputs])
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            outputs = self.fn(x)
            for pinned, out in zip(host, outputs):
                pinned.copy_(out, non_blocking=True)
        self.pool = graph.pool()
        return _Graph(graph, outputs, host)
