"""How fast the GPUs of this machine sum a tensor across themselves: the all-reduce a split
model runs twice a layer (minillama/parallel/shard.py), timed alone, one process a device,
through torch.distributed as the engine's ranks do (NCCL; gloo on CPUs, for the tests).

The figure is nccl-tests' "bus bandwidth": bytes x 2 (N - 1) / N / seconds, what each link
carries, comparable across N. A prefill step of 16,384 tokens at hidden size 4,096 all-reduces
128 MiB twice a layer; a batch-1 decode step, 8 KiB."""

from __future__ import annotations

import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.engine import synchronize

SIZES = (8 * 2**10, 2 * 2**20, 128 * 2**20)  # bytes: a batch-1 decode, a batch-256 decode, a prefill step


def measure(world: int, device: str = "cuda", repeats: int = 20) -> dict[int, float]:
    """{bytes: seconds per all-reduce of a bf16 tensor of that many bytes} over `world` processes."""
    with socket.socket() as s:  # a free port for the group's rendezvous (minillama's own is not on its face)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_rank, args=(world, device, port, repeats, results), nprocs=world, start_method="spawn")
    return results.get()


def bus_bandwidth(nbytes: int, seconds: float, world: int) -> float:
    """Bytes a second each link carries (nccl-tests' busbw)."""
    return nbytes * 2 * (world - 1) / world / seconds


def _rank(rank: int, world: int, device: str, port: int, repeats: int, results) -> None:
    on_gpu = device == "cuda"
    here = torch.device("cuda", rank) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if on_gpu else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    times = {}
    for nbytes in SIZES:
        x = torch.ones(nbytes // 2, dtype=torch.bfloat16, device=here)
        for _ in range(3):  # warm-up: the first call sets up the communicator's channels
            dist.all_reduce(x)
        synchronize(here)
        start = time.perf_counter()
        for _ in range(repeats):
            dist.all_reduce(x)
        synchronize(here)
        times[nbytes] = (time.perf_counter() - start) / repeats
    if rank == 0:
        results.put(times)
    dist.destroy_process_group()


if __name__ == "__main__":
    import sys

    from benchmarks import not_a_command

    sys.exit(not_a_command("benchmarks.all_reduce"))
