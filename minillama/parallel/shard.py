"""Shard: which part of each layer this process holds, and the collectives that join the parts.

Tensor parallelism (Megatron-LM's layout, as vLLM and nano-vllm use it) splits every layer of
the model across N processes, one per device, instead of giving each a copy:

- QKV and gate/up are split by output rows ("column-parallel"): rank r computes heads
  [r * H/N, (r + 1) * H/N) (and KV heads likewise), and intermediate features
  [r * I/N, (r + 1) * I/N). Attention needs nothing from the other ranks: a head's queries
  attend to its own KV head's keys, which this rank holds in its own share of the paged cache.
- o_proj and down_proj are split by input columns ("row-parallel"): each rank multiplies its
  part of the features by its part of the matrix, and the sum over ranks is the full product,
  so one all-reduce a projection joins them (two a layer).
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
    """Seconds this process has spent in the collectives that join the ranks (gloo's calls
    block until every rank has sent its part: the time is the wait and the transfer)."""

    seconds: float = 0.0


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    clock: CollectiveClock = field(default_factory=CollectiveClock, compare=False)

    def part(self, size: int) -> tuple[int, int]:
        """This rank's [start, end) of `size` items split evenly (the engine checked that N divides it)."""
        step = size // self.world
        return self.rank * step, (self.rank + 1) * step

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place (a row-parallel projection's partial products)."""
        if self.world > 1:
            started = time.perf_counter()
            dist.all_reduce(x)
            self.clock.seconds += time.perf_counter() - started
        return x

    def all_gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's x side by side along `dim`, rank r's part r-th: [.., C, ..] on each rank
        -> [.., N * C, ..]. The logits of each rank's slice of the vocabulary (dim -1), and the
        queries and keys of each rank's heads for an observer (the heads' global order is the
        ranks' order)."""
        if self.world == 1:
            return x
        started = time.perf_counter()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        self.clock.seconds += time.perf_counter() - started
        return torch.cat(parts, dim=dim)


WHOLE_MODEL = Shard()  # rank 0 of 1: no tensor parallelism


def check_splits(model_config: ModelConfig, world: int, device: torch.device) -> None:
    """Raise ConfigError unless the model splits evenly over `world` ranks on `device`."""
    if world == 1:
        return
    if device.type != "cpu":
        raise ConfigError(
            f"--tensor-parallel-size {world} runs on the CPU (gloo processes) in this version; on GPUs "
            "(NCCL, a CUDA graph per rank) it waits for a machine with several GPUs to be tested on"
        )
    sizes = {
        "num_attention_heads": model_config.num_attention_heads,
        "num_key_value_heads": model_config.num_key_value_heads,
        "intermediate_size": model_config.intermediate_size,
        "vocab_size": model_config.vocab_size,
    }
    for name, size in sizes.items():
        if size % world:
            raise ConfigError(f"--tensor-parallel-size {world} must divide the model's {name} ({size})")
