"""Host data to the device, and device results to the host, without making the host wait.

torch.tensor(values, device="cuda"), or .to("cuda") of an ordinary CPU tensor, copies from
pageable memory, and that copy waits for the stream to drain: with async scheduling
(minillama/engine/in_flight.py), for the whole forward pass in flight. A copy from pinned
(page-locked) memory is queued behind the kernels already launched instead, and the host goes
on at once. PyTorch's pinned-memory cache keeps the host buffer until the copy has run.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`: on CUDA through pinned memory, queued; elsewhere as it is."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def copy_to_device(destination: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """Copy a CPU tensor into `destination` (contiguous, its shape) on the device, as to_device
    does: through pinned memory, queued. -> destination."""
    if destination.device.type == "cuda":
        return destination.copy_(tensor.pin_memory(), non_blocking=True)
    return destination.copy_(tensor)


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A device tensor's copy in pinned host memory, queued behind the kernels that compute it
    (record_event, then synchronize it, before reading the copy); a CPU tensor as it is."""
    if tensor.device.type == "cuda":
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)
    return tensor


def record_event(device: torch.device) -> torch.cuda.Event | None:
    """An event at this point of the current stream (None on the CPU): what was queued before it
    has run once event.synchronize() returns."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event
