"""Logits -> LogitsSummary: the top-k of the next-token distribution, before and after the
sampling filters, its entropy, and where the drawn token ranked.

The drawn token is known only at the step's end, after on_logits. So summarise() runs in
on_logits, on the logits' device, and starts one copy of everything the summary needs to the
host without waiting for it; finish() then works on the host alone, once the tokens are known.
On a GPU that is one CUDA graph replay on a side stream and no wait in on_logits, and no kernel
in finish, unless a sampled token lies outside the top k (then its rank needs its whole row: one
small look at a copy of the logits, kept for steps that sample; a greedy token is the most
likely one, so its rank is 0 and its probability the top one, whatever the ties).

Everything comes from the log-probabilities, log p = logits - logsumexp(logits): the top k
are theirs, and entropy = -sum p log p.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from inspector.record.graphed import BucketGraphs
from inspector.trace.model import LogitsSummary
from minillama import SamplingParams, filtered_logits


@dataclass
class PendingLogits:
    """on_logits' results for the S sampling sequences, waiting for their tokens."""

    # [S, V] fp32, a copy kept only when some row samples: read again for a token drawn from
    # outside the top k. (A copy: the engine's logits buffer is overwritten by the next forward,
    # and finish() may run after it has been launched.)
    logits: torch.Tensor | None
    # On the host (pinned, filled by copies that may still be running on a GPU's side stream):
    # [S, 2k + 2]: top ids, their probabilities, sum p log p, log-sum-exp; and when some row
    # was sampled, [S, k]: their probabilities under the distribution each token was drawn from.
    host: torch.Tensor
    host_sampling: torch.Tensor | None
    side_stream: torch.cuda.Stream | None  # synchronise it before reading host (GPU)
    k: int
    greedy: list[bool]  # per row: was its token the most likely one, for sure?


class HostBuffer:
    """Pinned host memory that summaries are copied into, reused step after step: allocating
    pinned memory costs more than the whole summary (hundreds of microseconds a step)."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0)

    def take(self, shape: torch.Size) -> torch.Tensor:
        if self.buffer.numel() < shape.numel():
            self.buffer = torch.empty(2 * shape.numel(), pin_memory=True)
        return self.buffer[: shape.numel()].view(shape)


def summary_columns(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The summary's part that needs no sampling parameters, as tensors: logits [S, V] fp32 ->
    packed [S, 2k + 2]: top ids, their probabilities, sum p log p, log-sum-exp. (The readable
    definition; a GPU runs inspector/record/logits_kernel.py, which is tested against it.)"""
    logprobs = logits.log_softmax(dim=-1)  # [S, V]; more exact than logits - lse
    lse = logits.logsumexp(dim=-1)  # [S]
    top_logprobs, top_ids = logprobs.topk(k, dim=-1)  # [S, k], most likely first
    # sum p log p; the model's logits are finite, so no p = 0 meets a log p = -inf. (Its
    # negation, the entropy, is taken on the host: one kernel less.)
    neg_entropy = torch.linalg.vecdot(logprobs.exp(), logprobs)  # [S]
    # Token ids are below 2**24, so float32 holds them exactly: one tensor, one copy.
    return torch.cat([top_ids.float(), top_logprobs.exp(), neg_entropy[:, None], lse[:, None]], dim=1)


def sampling_columns(logits: torch.Tensor, params: list[SamplingParams], top_ids: torch.Tensor) -> torch.Tensor:
    """The top tokens' probabilities under the distribution each row's token is drawn from:
    logits [S, V], top_ids [S, k] -> [S, k]. Greedy rows come out unfiltered (finish() writes
    their probability 1 on the host). Temperature only rescales and top-k/top-p only cut the
    tail, so the model's top tokens keep their order: the same k ids serve both."""
    return filtered_logits(logits, params).softmax(dim=-1).gather(-1, top_ids.long())


# A beam search keeps the beam_width best continuations by summed log p: the tokens it keeps
# are drawn from the model's own distribution (its temperature, top-k and top-p are ignored,
# SamplingParams says), and only the first beam's is the most likely one. Summarised as greedy
# (a temperature-0 request), every beam's token read "rank 0, the top probability" and its
# "after sampling" column put 1 on the top token: a beam that kept the second choice said so
# nowhere. Summarised as drawn at temperature 1, unfiltered, each token has its own rank.
BEAM_DRAWS = SamplingParams(temperature=1.0)


def as_drawn(params: SamplingParams) -> SamplingParams:
    """The sampling settings a row's tokens were really drawn under (a beam's: BEAM_DRAWS)."""
    return BEAM_DRAWS if params.beam_width > 1 else params


class LogitsSummariser:
    """summarise(): starts a step's summaries. On a GPU the tensor work and the copy to the host
    replay from CUDA graphs on a side stream (inspector/record/graphed.py); the engine's own stream
    never waits for them. On a CPU it simply runs."""

    def __init__(self, k: int, device: torch.device):
        """k: how many of the most likely tokens to keep, at most the vocabulary's size."""
        self.k = k
        self.staging = HostBuffer()  # the sampled rows' columns; used by one step at a time
        self.graphs: BucketGraphs | None = None
        if device.type == "cuda":
            columns = summary_columns
            if importlib.util.find_spec("triton") is not None:
                from inspector.record.logits_kernel import summary_columns_triton as columns
            self.graphs = BucketGraphs(lambda logits: (columns(logits, k),), device, host_outputs=1)

    def summarise(self, logits: torch.Tensor, params: list[SamplingParams]) -> PendingLogits:
        """logits: [S, V] fp32, one row per sampling sequence; params: their SamplingParams."""
        params = [as_drawn(p) for p in params]
        k, greedy = self.k, [p.greedy for p in params]
        drawn = not all(greedy)
        if self.graphs is None:
            packed = summary_columns(logits, k)
            sampling = sampling_columns(logits, params, packed[:, :k]) if drawn else None
            return PendingLogits(logits.clone() if drawn else None, packed, sampling, None, k, greedy)
        (packed,), (host,) = self.graphs.launch(logits)
        kept, host_sampling = None, None
        if drawn:  # rare enough to run eagerly, after the graph, beside the engine
            with torch.cuda.stream(self.graphs.stream):
                sampling = sampling_columns(logits, params, packed[:, :k])
                host_sampling = self.staging.take(sampling.shape)
                host_sampling.copy_(sampling, non_blocking=True)
                kept = logits.clone()
        return PendingLogits(kept, host, host_sampling, self.graphs.stream, k, greedy)


def finish(pending: PendingLogits, tokens: list[int], token_text: Callable[[int], str],
           rows: Sequence[int] | None = None) -> list[LogitsSummary]:
    """tokens: the tokens drawn; rows: the logits row each was drawn from (default: token i
    from row i; a row may give several tokens, as a leader's row gives its samples' first
    tokens). -> one LogitsSummary per token. It runs once a step for every sequence, so it maps
    in C where it can (map instead of a loop)."""
    if pending.side_stream is not None:
        pending.side_stream.synchronize()  # done by now, or nearly
    k = pending.k
    greedy = [1.0] + [0.0] * (k - 1)  # the most likely token, for sure
    samplings = pending.host_sampling.tolist() if pending.host_sampling is not None else [greedy] * len(tokens)
    summaries = []
    table = pending.host.tolist()
    pairs = enumerate(zip(table, tokens)) if rows is None else ((r, (table[r], t)) for r, t in zip(rows, tokens))
    for row, (values, token) in pairs:
        ids = list(map(int, values[:k]))
        probs, entropy = values[k : 2 * k], -values[2 * k]
        if pending.greedy[row]:  # the most likely token (or one tied with it)
            summaries.append(LogitsSummary(ids, list(map(token_text, ids)), probs, greedy, entropy, probs[0], 0))
            continue
        sampling = samplings[row]
        if token in ids:
            chosen = probs[ids.index(token)]
            # Rank = how many tokens are strictly more likely than the drawn one; all of those
            # are in the top k, since the top k are the k largest.
            rank = sum(map(chosen.__lt__, probs))
        else:  # drawn from outside the top k (sampling): its row decides
            row_logits = pending.logits[row]
            rank = int((row_logits > row_logits[token]).sum())
            chosen = math.exp(float(row_logits[token]) - values[2 * k + 1])  # p = exp(x - lse)
        summaries.append(LogitsSummary(ids, list(map(token_text, ids)), probs, sampling, entropy, chosen, rank))
    return summaries


def summary_bytes(num_rows: int, k: int) -> int:
    """Payload of num_rows summaries: k ids and 2 x k probabilities, 4 bytes each, + 3 scalars."""
    return num_rows * (12 * k + 12)
