"""How much memory a device can still give, checked before each large allocation (the weights,
the KV cache) so that asking for too much is an error saying what fits.

Without the check, asking for too much fails badly: on Linux the allocation succeeds (pages are
only promised), the engine then writes it page by page, and the kernel's OOM killer ends the
process, with no message, a minute later; a request beyond all address space makes torch's
allocator raise a traceback; CUDA raises OutOfMemoryError from deep inside a kernel launch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

# On the host, a fraction of what is available is kept back for what the engine allocates
# next (a step's activations, the logits) and for the rest of the machine: running out there
# is a silent kill. On a GPU, a tensor that takes every free byte fails to allocate (the CUDA
# context and the allocator's rounding need some): a fixed reserve is kept back there.
HOST_HEADROOM = 0.1
GPU_RESERVE = 512 * 2**20

# (limit, usage, statistics) files of a container's memory limit: cgroup v2, then v1.
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/memory.stat"),
)


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def usable_bytes(device: torch.device) -> int | None:
    """Bytes the engine may still allocate on `device`, or None where that cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Memory torch's caching allocator holds but no tensor uses is free to us as well.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return max(0, free + cached - GPU_RESERVE)
    available = host_available_bytes()
    return None if available is None else int(available * (1 - HOST_HEADROOM))


def host_available_bytes() -> int | None:
    """The host memory a new allocation can get without swapping or being killed: the kernel's
    MemAvailable estimate (free memory plus the page cache it can drop), or less when a
    container's memory limit leaves less. None off Linux."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    if "MemAvailable" not in fields:
        return None
    available = int(fields["MemAvailable"].split()[0]) * 1024  # the file says kB, meaning KiB
    room = _cgroup_room()
    return available if room is None else min(available, room)


def _cgroup_room() -> int | None:
    """What the container's memory limit still allows, or None when there is no limit. The
    usage the cgroup reports includes inactive page cache, which the kernel drops before it
    kills anyone, so that part counts as room."""
    for limit_file, usage_file, stat_file in CGROUP_FILES:
        try:
            limit = int(Path(limit_file).read_text())  # cgroup v2 writes "max" for no limit
            usage = int(Path(usage_file).read_text())
            stat = dict(line.split() for line in Path(stat_file).read_text().splitlines())
        except (OSError, ValueError):
            continue
        if limit >= 2**60:  # cgroup v1's "no limit" is a number near 2**63
            return None
        inactive = int(stat.get("inactive_file", stat.get("total_inactive_file", 0)))
        return max(0, limit - usage + inactive)
    return None


def check_fits(
    what: str, nbytes: int, device: torch.device, error: type[Exception], advice: Callable[[int], str] = lambda _: ""
) -> None:
    """Raise `error` when `nbytes` more would not fit on `device`: "<what> would take X GiB;
    Y GiB is available" and `advice(usable bytes)`, which may say what does fit."""
    usable = usable_bytes(device)
    if usable is not None and nbytes > usable:
        raise error(f"{what} would take {gib(nbytes)}; {gib(usable)} is available on {device}{advice(usable)}")
