"""Host data to the device without making the host wait.

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
