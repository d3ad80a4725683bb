"""Logits -> LogitsSummary: the top-k of the next-token distribution, before and after the
sampling filters, its entropy, and where the drawn token ranked.

The drawn token is known only at the step's end, after on_logits. So summarise() runs in
on_logits, on the logits' device, and starts one copy of everything the summary needs to the
host without waiting for it; finish() then works on the host alone, once the tokens are known.
On a GPU that is a few kernels and no wait in on_logits, and no kernel in finish, unless a
drawn token lies outside the top k (then its rank needs its whole row: one small look at the
device). Nothing the size of the vocabulary outlives the step.

Everything comes from the log-probabilities, log_softmax(logits): the top k are theirs, and
entropy = -sum p log p, with p = exp(log p).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from inspector.trace import LogitsSummary
from minillama.model.sampler import filtered_logits
from minillama.sampling_params import SamplingParams


@dataclass
class PendingLogits:
    """on_logits' results for the S sampling sequences, waiting for their tokens."""

    logprobs: torch.Tensor  # [S, V] fp32: read again only for a token drawn from outside the top k
    # On the host (pinned, filled by a copy that may still be running on a GPU), [S, 2k + 1]
    # or, when some row was sampled, [S, 3k + 1]: top ids, their log-probabilities, sum p log p,
    # then their probabilities under the distribution each token was drawn from.
    host: torch.Tensor
    copied: torch.cuda.Event | None  # marks the copy's end on a GPU
    k: int
    greedy: list[bool]  # per row: was its token the most likely one, for sure?


class HostBuffer:
    """Pinned host memory that summarise() copies into, reused step after step: allocating
    pinned memory costs more than the whole summary (hundreds of microseconds a step)."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0)

    def take(self, shape: torch.Size) -> torch.Tensor:
        if self.buffer.numel() < shape.numel():
            self.buffer = torch.empty(2 * shape.numel(), pin_memory=True)
        return self.buffer[: shape.numel()].view(shape)


def summarise(logits: torch.Tensor, params: list[SamplingParams], k: int, staging: HostBuffer) -> PendingLogits:
    """logits: [S, V] fp32, one row per sampling sequence; params: their SamplingParams;
    staging: where a GPU's results land on the host (the caller's, used by one step at a time)."""
    k = min(k, logits.shape[-1])
    logprobs = logits.log_softmax(dim=-1)  # [S, V]
    top_logprobs, top_ids = logprobs.topk(k, dim=-1)  # [S, k], most likely first
    # sum p log p; the model's logits are finite, so no p = 0 meets a log p = -inf. (Its
    # negation, the entropy, is taken on the host: one kernel less.)
    neg_entropy = torch.linalg.vecdot(logprobs.exp(), logprobs)  # [S]
    columns = [top_ids.float(), top_logprobs, neg_entropy[:, None]]
    # Greedy rows take the most likely token, probability 1: finish() writes that on the host.
    # Sampled rows: temperature only rescales and top-k/top-p only cut the tail, so the model's
    # top tokens keep their order in the filtered distribution: the same k ids serve both.
    drawn = [i for i, p in enumerate(params) if not p.greedy]
    if drawn:
        filtered = filtered_logits(logits, params).softmax(dim=-1)  # [S, V]: greedy rows unfiltered
        columns.append(filtered.gather(-1, top_ids))
    # Token ids are below 2**24, so float32 holds them exactly: one tensor, one copy.
    packed = torch.cat(columns, dim=1)  # [S, 2k + 1 (+ k)]
    if logits.device.type != "cuda":
        return PendingLogits(logprobs, packed, None, k, [p.greedy for p in params])
    host = staging.take(packed.shape)
    host.copy_(packed, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return PendingLogits(logprobs, host, copied, k, [p.greedy for p in params])


def finish(pending: PendingLogits, tokens: list[int], token_text: Callable[[int], str]) -> list[LogitsSummary]:
    """tokens: the S tokens drawn, in the same order. -> one LogitsSummary per row."""
    if pending.copied is not None:
        pending.copied.synchronize()  # long done: the sampler has waited for the GPU since
    k = pending.k
    summaries = []
    for row, (values, token) in enumerate(zip(pending.host.tolist(), tokens)):
        ids = [int(i) for i in values[:k]]
        logprobs, entropy = values[k : 2 * k], -values[2 * k]
        greedy = [1.0] + [0.0] * (k - 1)  # the most likely token, for sure
        sampling = greedy if pending.greedy[row] else values[2 * k + 1 :]
        if token in ids:
            chosen = logprobs[ids.index(token)]
            # Rank = how many tokens are strictly more likely than the drawn one; all of those
            # are in the top k, since the top k are the k largest.
            rank = sum(lp > chosen for lp in logprobs)
        else:  # drawn from outside the top k (sampling): its row decides
            row_logprobs = pending.logprobs[row]
            rank = int((row_logprobs > row_logprobs[token]).sum())
            chosen = float(row_logprobs[token])
        summaries.append(LogitsSummary(ids, [token_text(i) for i in ids], [math.exp(lp) for lp in logprobs], sampling,
                                       entropy, math.exp(chosen), rank))
    return summaries


def summary_bytes(num_rows: int, k: int) -> int:
    """Payload of num_rows summaries: k ids and 2 x k probabilities, 4 bytes each, + 3 scalars."""
    return num_rows * (12 * k + 12)
