"""The weights fingerprint: 16 hex digits that tell whether two engines run the same model.

A replay (inspector/debug/replay.py) refuses a model whose fingerprint differs from the one
the trace recorded: the comparison of two runs means something only on the same weights.

How it is made: xxh3-64 over every parameter, in the model's own order, of its name, its shape,
and a strided sample of its values (at most SAMPLES_PER_TENSOR, evenly spaced through the
flattened tensor), the sample taken in bfloat16 whatever dtype the engine runs in. A bfloat16
engine loads each weight rounded to nearest, and a float32 engine's value rounded the same
way gives the same bits, so a trace recorded on a GPU in bfloat16 replays under float32 on the
same checkpoint and still matches.

What it proves: the same parameter names and shapes, and the same values (to bfloat16) at the
sampled positions: another checkpoint, another fine-tune, random weights of the same shape, or
weights loaded into the wrong places are told apart, as every trained tensor differs almost
everywhere. What it does not prove: that the elements between the samples are equal (an edit
of a few weights can slip through), nor anything against someone who wants to fool it (a trace
file can claim any fingerprint: it is a check against mistakes, not a signature). A float16
engine rounds a float32 checkpoint twice (to float16, then to the sample's bfloat16), which can
differ from rounding once: such a comparison can fail on the same weights (replay's force
overrides it).

Computed once per model and cached: engines that share weights (LLMEngine.sharing_weights)
share it, and the recorder asks again after every clear().
"""

from __future__ import annotations

import weakref

import torch
import xxhash

from minillama import LLMEngine

SAMPLES_PER_TENSOR = 4096
_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def weights_fingerprint(engine: LLMEngine) -> str | None:
    """The fingerprint of the engine's model (see the top), computed on first use; None with
    tensor parallelism, where this process holds only its slices of each weight (such a trace
    replays only with force, as one from before fingerprints does)."""
    if engine.config.tensor_parallel_size > 1:
        return None
    model = engine.runner.model
    if model not in _CACHE:
        _CACHE[model] = _fingerprint(model)
    return _CACHE[model]


@torch.no_grad()
def _fingerprint(model: torch.nn.Module) -> str:
    digest = xxhash.xxh3_64()
    for name, param in model.named_parameters():  # tied weights once, under their first name
        flat = param.detach().reshape(-1)
        stride = max(1, flat.numel() // SAMPLES_PER_TENSOR)
        sample = flat[::stride][:SAMPLES_PER_TENSOR].to(torch.bfloat16).cpu()
        digest.update(f"{name}:{tuple(param.shape)};".encode())
        digest.update(sample.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()
