"""Each rank reads only its slices of the checkpoint: safetensors' get_slice reads the bytes of
the rows or columns asked for, so no rank ever holds a whole matrix it does not need."""

from __future__ import annotations

import torch

from minillama.errors import ModelLoadError
from minillama.parallel.shard import Shard

# Hugging Face tensor suffix -> the dimension split across ranks (minillama/parallel/shard.py):
# 0, rows (column-parallel projections, the vocabulary); 1, columns (row-parallel projections).
# A column-parallel projection's bias [out] is split like its rows; a row-parallel one's
# (o_proj.bias, down_proj.bias) is whole on every rank, and only rank 0 adds it. A tensor
# matching none (the norms, those biases) is read whole by every rank.
SPLIT_DIM = {
    "self_attn.q_proj.weight": 0,
    "self_attn.k_proj.weight": 0,
    "self_attn.v_proj.weight": 0,
    "mlp.gate_proj.weight": 0,
    "mlp.up_proj.weight": 0,
    "self_attn.q_proj.bias": 0,
    "self_attn.k_proj.bias": 0,
    "self_attn.v_proj.bias": 0,
    "mlp.gate_proj.bias": 0,
    "mlp.up_proj.bias": 0,
    "self_attn.o_proj.weight": 1,
    "mlp.down_proj.weight": 1,
    "embed_tokens.weight": 0,
    "lm_head.weight": 0,
}


def split_dim(name: str) -> int | None:
    return next((dim for suffix, dim in SPLIT_DIM.items() if name.endswith(suffix)), None)


def _dims(name: str) -> int:
    """How many dimensions tensor `name` has in a well-formed checkpoint: a bias is a vector."""
    return 1 if name.endswith(".bias") else 2


def rank_shape(name: str, shape: tuple[int, ...], shard: Shard) -> tuple[int, ...]:
    """The shape rank_slice gives for tensor `name` of `shape`, known from the file's header
    before anything is read (a shape of the wrong rank is left whole: the loader refuses it)."""
    dim = split_dim(name)
    if dim is None or shard.world == 1 or len(shape) != _dims(name):
        return shape
    start, end = shard.part(shape[dim])
    return shape[:dim] + (end - start,) + shape[dim + 1 :]


def rank_slice(f, name: str, shard: Shard) -> torch.Tensor:
    """Rank `shard.rank`'s slice of tensor `name` in the open safetensors file `f` (a matrix or a
    bias split by SPLIT_DIM; any other tensor whole). Heads split with their rows: q_proj's rows
    are heads x head_dim, so rows [r * H/N * D, (r + 1) * H/N * D) are exactly heads
    [r * H/N, (r + 1) * H/N), and the entries of q_proj's bias likewise."""
    dim = split_dim(name)
    if dim is None:
        return f.get_tensor(name)
    tensor = f.get_slice(name)
    shape = tensor.get_shape()
    if len(shape) != _dims(name):
        raise ModelLoadError(f"checkpoint tensor {name!r} has shape {tuple(shape)}, not a "
                             f"{'vector' if _dims(name) == 1 else 'matrix'}")
    start, end = shard.part(shape[dim])
    return tensor[start:end] if dim == 0 else tensor[:, start:end]
