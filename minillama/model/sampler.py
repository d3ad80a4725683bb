"""Sampler: turn each sequence's logits into its next token.

Greedy rows (temperature 0, or under GREEDY_BELOW: sampling_params.py) take the most likely
token. The others divide the logits by the temperature, keep the top_k most likely tokens and
the smallest set whose probability reaches top_p, renormalise, and draw one token. Drawing uses the exponential race: argmax(p / E) with E
~ Exponential(1) picks token i with probability p_i, and needs only one random number per token,
drawn from the row's own generator, so a seeded request gets the same tokens in any batch.
"""

from __future__ import annotations

import importlib.util

import torch

from minillama.ops.reference import argmax as reference_argmax
from minillama.sampling_params import SamplingParams
from minillama.transfer import to_device


def filtered_logits(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Apply temperature, top-k and top-p to logits [B, V] (fp32); removed tokens get -inf.

    Greedy rows are left as they are. The inspector uses this too, to show the distribution a
    token was actually drawn from."""
    device = logits.device
    # float(): an int temperature of 10**30 is valid, and torch.tensor would read it as an int64.
    temperature = to_device(torch.tensor([1.0 if p.greedy else float(p.temperature) for p in params]), device)
    logits = logits / temperature[:, None]
    if all(p.top_k == 0 and p.top_p >= 1.0 for p in params):
        return logits
    vocab = logits.shape[-1]
    top_k = to_device(torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params]), device)
    top_p = to_device(torch.tensor([float(p.top_p) for p in params]), device)
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V], most likely first
    rank = torch.arange(vocab, device=device)[None, :]
    probs = sorted_logits.softmax(dim=-1)
    # Probability of all tokens ranked above each one; a token is kept while that is < top_p.
    # The most likely token is always kept: a top_p of 1e-46 is 0 in fp32, and would drop it too.
    mass_before = probs.cumsum(dim=-1) - probs
    drop = (rank >= top_k[:, None]) | ((mass_before >= top_p[:, None]) & (rank > 0))
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


class Sampler:
    def __init__(self, device: torch.device, seed: int):
        self.device = device
        self.shared_generator = torch.Generator(device=device).manual_seed(seed)
        # The greedy choice: on CUDA a Triton argmax (ops/triton/argmax.py says why), else PyTorch.
        self.argmax_rows = reference_argmax.argmax_rows
        if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
            from minillama.ops.triton.argmax import argmax_rows  # imports triton

            self.argmax_rows = argmax_rows

    def new_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def __call__(
        self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """logits: [B, V], fp32 (or 16-bit: the rows drawn at random are widened to fp32, the
        greedy ones need not be); generators[i]: row i's own generator, or None for the shared
        one. -> token ids [B] (int64), in `out` when given."""
        random_rows = [i for i, p in enumerate(params) if not p.greedy]
        all_random = bool(random_rows) and len(random_rows) == len(params)  # no greedy row: no argmax
        if not all_random:  # the greedy choice: the first index of each row's maximum
            tokens = self.argmax_rows(logits, out)
            if not random_rows:
                return tokens
        rows = None if all_random else to_device(torch.tensor(random_rows), logits.device)
        drawn_from = (logits if all_random else logits[rows]).float()
        probs = filtered_logits(drawn_from, [params[i] for i in random_rows]).softmax(dim=-1)
        noise = torch.empty_like(probs)
        unseeded = [j for j, i in enumerate(random_rows) if generators[i] is None]
        if len(unseeded) == len(random_rows):  # one draw for all (the noise of each row as before)
            noise.exponential_(generator=self.shared_generator)
        elif unseeded:
            index = to_device(torch.tensor(unseeded), logits.device)
            noise[index] = torch.empty_like(probs[index]).exponential_(generator=self.shared_generator)
        for j, i in enumerate(random_rows):
            if generators[i] is not None:
                noise[j].exponential_(generator=generators[i])
        drawn = (probs / noise).argmax(dim=-1)
        if all_random:
            return drawn if out is None else out.copy_(drawn)
        tokens[rows] = drawn
        return tokens
