"""CPU tensors on transparent huge pages (Linux): the engine's weights.

A CPU decode step streams every weight through the processor (540 MB for the embedded model).
With the usual 4 KiB pages that is some 130,000 pages a step, each needing its address
translation: the translation cache (TLB) misses all the way, which slows the matrix products
and, since they evict it, every small op after them. With 2 MiB pages it is about 270
(docs/perf-notes.md has what that saved a decode step).

Linux backs memory with huge pages where the memory asks for them (madvise MADV_HUGEPAGE) and
/sys/kernel/mm/transparent_hugepage/enabled says `always` or `madvise`. Elsewhere these are
ordinary tensors. The memory is an anonymous mapping: zero until written, resident once written.

(The KV cache stays on ordinary pages: on huge pages a decode step read it no faster, and each
first write into a fresh 2 MiB page, zeroing it, fell into the step.)
"""

from __future__ import annotations

import math
import mmap

import torch

HUGE_PAGE = 2 * 2**20  # bytes; x86-64 and arm64 (4 KiB base pages)


def zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zero-filled contiguous CPU tensor, on huge pages where the system gives them."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.zeros(shape, dtype=dtype)
    # Private: a shared anonymous mapping is backed by shmem, which takes no huge pages here.
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # + room to align
    region.madvise(mmap.MADV_HUGEPAGE)
    raw = torch.frombuffer(region, dtype=torch.uint8)  # shares the mapping and keeps it alive
    start = -raw.data_ptr() % HUGE_PAGE
    return raw[start : start + nbytes].view(dtype).view(shape)
