"""What the observation API's tensor reads take (LLMEngine.read_keys, LLMEngine.readout),
checked before a kernel touches memory.

Both hand their tensors straight to indexing and kernels, which checked nothing of their own:
- read_keys indexes the paged cache: a negative index read from its end (layer -1 is the last
  layer, block -1 the scratch block) in silence, blocks and offsets of different lengths were
  broadcast into pairs nobody asked for, an index past the cache raised IndexError on a CPU
  (and stops every later kernel on a GPU, a device-side assert);
- readout runs the final norm, whose CPU kernel reads and writes `size` floats of every row by
  raw pointer: a float16 stream made it read and write past both buffers, an int64 one was
  read as floats, a row longer than the norm's weight read past the weight.
Each raises InvalidRequestError naming the argument. What is checked costs no wait for the GPU:
the ranges of indices on a GPU are not read back (the recorder reads keys between a decode's
forward and its sampler, and two scalars read there would make every recorded step wait for its
forward); there they stay the caller's, as torch's own indexing leaves them.
"""

from __future__ import annotations

import torch

from minillama.errors import InvalidRequestError

INTEGERS = (torch.int64, torch.int32)


def check_key_indices(layers: object, blocks: object, offsets: object, device: torch.device,
                      cache_shape: torch.Size) -> None:
    """layers [L], blocks [n], offsets [n]: integer tensors on `device`, each in range of the
    paged cache, cache_shape [num_layers, 2, num_blocks + 1, block_size, Hkv, D]."""
    bounds = {"layers": cache_shape[0], "blocks": cache_shape[2], "offsets": cache_shape[3]}
    for name, value in (("layers", layers), ("blocks", blocks), ("offsets", offsets)):
        _check_index_tensor(name, value, device, bounds[name])
    if blocks.shape != offsets.shape:  # type: ignore[union-attr]
        raise InvalidRequestError(f"blocks and offsets must be of one length (a (block, offset) pair each), "
                                  f"got {blocks.shape[0]} and {offsets.shape[0]}")  # type: ignore[union-attr]


def _check_index_tensor(name: str, value: object, device: torch.device, bound: int) -> None:
    if not isinstance(value, torch.Tensor) or value.dtype not in INTEGERS or value.dim() != 1:
        raise InvalidRequestError(f"{name} must be a 1-D integer tensor (int64), got {_described(value)}")
    if value.device != device:
        raise InvalidRequestError(f"{name} must be on the engine's device {device}, not {value.device}")
    if value.numel() and value.device.type == "cpu":  # on a GPU, reading them back would wait (see the top)
        low, high = (int(v) for v in torch.aminmax(value))
        if low < 0 or high >= bound:
            raise InvalidRequestError(f"{name} must be in [0, {bound}), got {low if low < 0 else high}")


def check_streams(hidden: object, device: torch.device, dtype: torch.dtype, hidden_size: int) -> None:
    """hidden [N, hidden_size], in the model's dtype, on `device`."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or hidden.shape[1] != hidden_size:
        raise InvalidRequestError(f"hidden must be a tensor [N, {hidden_size}] (residual streams), got {_described(hidden)}")
    if hidden.dtype != dtype or hidden.device != device:
        raise InvalidRequestError(f"hidden must be {dtype} on {device}, as the model computes, "
                                  f"not {hidden.dtype} on {hidden.device}")


def _described(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r:.40}"
