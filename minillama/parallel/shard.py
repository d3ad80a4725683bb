"""Shard: which part of each layer this process holds, and the collectives that join the parts.

Tensor parallelism (Megatron-LM's layout, as vLLM and nano-vllm use it) splits every layer of
the model across N processes, one per device, instead of giving each a copy:

- QKV and gate/up are split by output rows ("column-parallel"): rank r computes heads
  [r * H/N, (r + 1) * H/N) (and KV heads likewise), and intermediate features
  [r * I/N, (r + 1) * I/N), their biases (if any) split like the rows. Attention needs
  nothing from the other ranks: a head's queries attend to its own KV head's keys, which this
  rank holds in its own share of the paged cache.
- o_proj and down_proj are split by input columns ("row-parallel"): each rank multiplies its
  part of the features by its part of the matrix, and the sum over ranks is the full product,
  so one all-reduce a projection joins them (two a layer). A bias of such a projection is added
  by rank 0 alone: added on every rank, the sum would hold it N times.
- The vocabulary is split by rows: the embedding looks up the ids its rows hold (zeros for
  the others, then an all-reduce sums the one rank's row), and the LM head computes its slice
  of the logits, which an all-gather puts side by side.

Every rank runs the same steps on the same inputs; the driver (rank 0) schedules them and
sends each step's inputs (minillama/parallel/wire.py). A Shard with world 1 is the whole model,
and every collective is then skipped: the single-process engine runs exactly as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from minillama.config import ModelConfig
from minillama.errors import ConfigError


@dataclass
class CollectiveClock:
    """Time this process has spent in the collectives that join the ranks.

    On CPUs (gloo) a collective blocks until every rank has sent its part: the host's time is
    the wait and the transfer. On GPUs (NCCL) a collective is a kernel queued on the stream, so
    the host's time is only its launch; while `time_gpu` is set (the engine sets it while
    observers read each step's timings), each collective run outside a CUDA graph is timed on the
    GPU between two events, read when `seconds` is. A collective inside a graph replay is one of
    the graph's kernels: nothing can time it apart."""

    host_seconds: float = 0.0
    time_gpu: bool = False
    # (start, end) events of GPU collectives not read yet; at most MAX_PENDING (the rest untimed).
    pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)

    MAX_PENDING = 4096

    @property
    def seconds(self) -> float:
        """Every collective's time so far (waits for the GPU collectives timed and not read yet)."""
        if self.pending:
            self.pending[-1][1].synchronize()
            self.host_seconds += sum(start.elapsed_time(end) for start, end in self.pending) / 1e3
            self.pending.clear()
        return self.host_seconds

    def timed(self, call, x: torch.Tensor, *args) -> None:
        """call(*args), timed: with events on the GPU (see above), else on the host."""
        if x.is_cuda:
            if self.time_gpu and len(self.pending) < self.MAX_PENDING and not torch.cuda.is_current_stream_capturing():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call(*args)
                end.record()
                self.pending.append((start, end))
            else:
                call(*args)
            return
        started = time.perf_counter()
        call(*args)
        self.host_seconds += time.perf_counter() - started


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    clock: CollectiveClock = field(default_factory=CollectiveClock, compare=False)

    def part(self, size: int) -> tuple[int, int]:
        """This rank's [start, end) of `size` items split evenly (the engine checked that N divides it)."""
        step = size // self.world
        return self.rank * step, (self.rank + 1) * step

    @property
    def adds_row_parallel_bias(self) -> bool:
        """Whether this rank adds a row-parallel projection's bias (o_proj, down_proj): rank 0
        only, so that the all-reduce's sum holds it once."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place (a row-parallel projection's partial products)."""
        if self.world > 1:
            self.clock.timed(dist.all_reduce, x, x)
        return x

    def all_gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's x side by side along `dim`, rank r's part r-th: [.., C, ..] on each rank
        -> [.., N * C, ..]. The logits of each rank's slice of the vocabulary (dim -1), and the
        queries and keys of each rank's heads for an observer (the heads' global order is the
        ranks' order)."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        self.clock.timed(dist.all_gather, x, parts, x.contiguous())
        return torch.cat(parts, dim=dim)

    def least(self, value: int) -> int:
        """The smallest of every rank's `value` (each rank's KV blocks that fit its device)."""
        if self.world == 1:
            return value
        x = torch.tensor([value], dtype=torch.int64)  # a CPU tensor: through gloo on GPUs too
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
        return int(x.item())


WHOLE_MODEL = Shard()  # rank 0 of 1: no tensor parallelism


def check_splits(model_config: ModelConfig, world: int, device: torch.device) -> None:
    """Raise ConfigError unless the model splits evenly over `world` ranks on `device`."""
    if world == 1:
        return
    if device.type == "cuda":
        if device.index not in (None, 0):
            raise ConfigError(f"--tensor-parallel-size {world} runs rank r on cuda:r, not on --device {device}; "
                              "choose the GPUs with CUDA_VISIBLE_DEVICES")
        count = torch.cuda.device_count()
        if world > count:
            raise ConfigError(f"--tensor-parallel-size {world} needs {world} GPUs, one a rank; this machine has {count}")
    sizes = {
        "num_attention_heads": model_config.num_attention_heads,
        "num_key_value_heads": model_config.num_key_value_heads,
        "intermediate_size": model_config.intermediate_size,
        "vocab_size": model_config.vocab_size,
    }
    for name, size in sizes.items():
        if size % world:
            raise ConfigError(f"--tensor-parallel-size {world} must divide the model's {name} ({size})")
