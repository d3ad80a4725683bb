"""Logits -> LogitsSummary: the top-k of the next-token distribution, before and after the
sampling filters, its entropy, and where the drawn token ranked.

The drawn token is known only at the step's end, after on_logits. So summarise() runs in
on_logits and keeps, besides the top-k, the one thing the rest needs: the log-probabilities
[S, vocab] of the step's rows, dropped again by finish() once the tokens are known. Nothing the
size of the vocabulary outlives the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from inspector.trace import LogitsSummary
from minillama.model.sampler import filtered_logits
from minillama.sampling_params import SamplingParams


@dataclass
class PendingLogits:
    """on_logits' results for the S sampling sequences, waiting for their tokens."""

    logprobs: torch.Tensor  # [S, V] fp32: log softmax of the model's logits
    top_ids: torch.Tensor  # [S, k] int64, most likely first
    top_logprobs: torch.Tensor  # [S, k] fp32, under the model
    top_sampling_probs: torch.Tensor  # [S, k] fp32, under the distribution drawn from
    entropy: torch.Tensor  # [S] fp32, nats


def summarise(logits: torch.Tensor, params: list[SamplingParams], k: int) -> PendingLogits:
    """logits: [S, V] fp32, one row per sampling sequence; params: their SamplingParams."""
    logprobs = logits.log_softmax(dim=-1)  # [S, V]
    top_logprobs, top_ids = logprobs.topk(min(k, logits.shape[-1]), dim=-1)  # [S, k]
    # Sum of -p log p. The model's logits are finite, so no p = 0 meets a log p = -inf.
    # (In place: one [S, V] temporary instead of two, which on CPU is ten times faster.)
    entropy = -logprobs.exp().mul_(logprobs).sum(dim=-1)  # [S]
    # Greedy rows take the most likely token: probability 1 for it, 0 for the others.
    sampling_probs = torch.zeros_like(top_logprobs)
    sampling_probs[:, 0] = 1.0
    drawn = [i for i, p in enumerate(params) if not p.greedy]
    if drawn:
        rows = torch.tensor(drawn, device=logits.device)
        # Temperature only rescales and top-k/top-p only cut the tail, so the model's top
        # tokens keep their order in the filtered distribution: the same k ids serve both.
        filtered = filtered_logits(logits[rows], [params[i] for i in drawn]).softmax(dim=-1)  # [R, V]
        sampling_probs[rows] = filtered.gather(-1, top_ids[rows])
    return PendingLogits(logprobs, top_ids, top_logprobs, sampling_probs, entropy)


def finish(pending: PendingLogits, tokens: list[int], token_text: Callable[[int], str]) -> list[LogitsSummary]:
    """tokens: the S tokens drawn, in the same order. -> one LogitsSummary per row."""
    k = pending.top_ids.shape[1]
    chosen = torch.tensor(tokens, device=pending.logprobs.device)[:, None]  # [S, 1]
    chosen_logprob = pending.logprobs.gather(-1, chosen)  # [S, 1]
    # Rank = how many tokens are strictly more likely than the drawn one. When the drawn token
    # is in the top k, every token more likely than it is too (the top k are the k largest),
    # so counting within the top k is exact; only a token from outside needs its whole row.
    rank = (pending.top_logprobs > chosen_logprob).sum(dim=-1, keepdim=True)  # [S, 1]
    # To the host in two copies: on a GPU each copy waits for the device, so one per field
    # would cost several round trips a step.
    ids_and_rank = torch.cat([pending.top_ids, rank], dim=1).tolist()  # [S, k + 1]
    probs = torch.cat(  # [S, 2k + 2]: top probs, top sampling probs, entropy, the drawn token's prob
        [pending.top_logprobs.exp(), pending.top_sampling_probs, pending.entropy[:, None], chosen_logprob.exp()], dim=1
    ).tolist()
    ranks = [row[k] for row in ids_and_rank]
    outside = [i for i, (row, token) in enumerate(zip(ids_and_rank, tokens)) if token not in row[:k]]
    if outside:
        rows = torch.tensor(outside, device=chosen.device)
        full = (pending.logprobs[rows] > chosen_logprob[rows]).sum(dim=-1).tolist()
        for i, r in zip(outside, full):
            ranks[i] = r
    summaries = []
    for row, p, r in zip(ids_and_rank, probs, ranks):
        ids = row[:k]
        summaries.append(LogitsSummary(ids, [token_text(i) for i in ids], p[:k], p[k : 2 * k], p[2 * k], p[2 * k + 1], r))
    return summaries


def summary_bytes(num_rows: int, k: int) -> int:
    """Payload of num_rows summaries: k ids and 2 x k probabilities, 4 bytes each, + 3 scalars."""
    return num_rows * (12 * k + 12)
