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

from dataclasses import dataclass

import torch
import torch.distributed as dist

from minillama.config import ModelConfig
from minillama.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    def part(self, size: int) -> tuple[int, int]:
        """This rank's [start, end) of `size` items split evenly (the engine checked that N divides it)."""
        step = size // self.world
        return self.rank * step, (self.rank + 1) * step

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place (a row-parallel projection's partial products)."""
        if self.world > 1:
            dist.all_reduce(x)
        return x

    def all_gather_columns(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C] on each rank -> [B, N * C]: rank r's columns at [r * C, (r + 1) * C) (the
        logits of each rank's slice of the vocabulary, side by side)."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)


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
