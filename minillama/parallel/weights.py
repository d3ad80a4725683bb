"""Each rank reads only its slices of the checkpoint: safetensors' get_slice reads the bytes of
the rows or columns asked for, so no rank ever holds a whole matrix it does not need."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from minillama.errors import ModelLoadError
from minillama.parallel.shard import Shard

# Hugging Face tensor suffix -> the dimension split across ranks (minillama/parallel/shard.py):
# 0, rows (column-parallel projections, the vocabulary); 1, columns (row-parallel projections).
# A tensor matching none (the norms) is read whole by every rank.
SPLIT_DIM = {
    "self_attn.q_proj.weight": 0,
    "self_attn.k_proj.weight": 0,
    "self_attn.v_proj.weight": 0,
    "mlp.gate_proj.weight": 0,
    "mlp.up_proj.weight": 0,
    "self_attn.o_proj.weight": 1,
    "mlp.down_proj.weight": 1,
    "embed_tokens.weight": 0,
    "lm_head.weight": 0,
}


def split_dim(name: str) -> int | None:
    return next((dim for suffix, dim in SPLIT_DIM.items() if name.endswith(suffix)), None)


def read_safetensors_shard(files: Iterable[Path], shard: Shard) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, this rank's slice) for every tensor of the checkpoint files. Heads split with
    their rows: q_proj's rows are heads x head_dim, so rows [r * H/N * D, (r + 1) * H/N * D)
    are exactly heads [r * H/N, (r + 1) * H/N)."""
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    dim = split_dim(name)
                    if dim is None:
                        yield name, f.get_tensor(name)
                        continue
                    tensor = f.get_slice(name)
                    shape = tensor.get_shape()
                    if len(shape) != 2:
                        raise ModelLoadError(f"checkpoint tensor {name!r} has shape {tuple(shape)}, not a matrix")
                    start, end = shard.part(shape[dim])
                    yield name, tensor[start:end] if dim == 0 else tensor[:, start:end]
        except ModelLoadError:
            raise
        except Exception as exc:  # whatever a damaged file makes the parser raise
            raise ModelLoadError(f"cannot read weights from {file}: {exc}") from exc
