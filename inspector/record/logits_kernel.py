"""summary_columns_triton: the logits summary in one pass over the logits, for a GPU.

The readable definition is inspector.record.logits_summary.summary_columns (log_softmax, topk, a dot
product); this computes the same columns and is tested against it. Why a kernel: with a
128,256-token vocabulary and a handful of rows, those PyTorch ops leave most of the GPU idle
(a softmax runs one block per row) and topk alone is a radix select of many kernels, which the
recorder then waits for at every step's end (docs/perf-notes.md has the figures). Here each row is cut
into chunks of BLOCK logits and one program per (row, chunk) reads its chunk once and writes:

- its maximum m, z = sum(exp(x - m)) and t = sum(exp(x - m) * (x - m));
- its own top K (K rounds of "take the largest, mask it out", in registers).

Then a few small tensor ops merge the chunks, with M the row's maximum and
scale = exp(m - M) per chunk (the same rescaling FlashAttention uses):

    Z = sum(z * scale)                      = sum over the row of exp(x - M)
    T = sum((t + (m - M) * z) * scale)      = sum over the row of exp(x - M) * (x - M)
    lse = M + log Z                         (log-sum-exp: log p = x - lse)
    sum p log p = T / Z - log Z             (p = exp(x - M) / Z)

and the row's top K is the top K of the chunks' candidates (each of the K largest of a row is
among the K largest of its own chunk).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096  # logits per program


@triton.jit
def _chunk_kernel(logits_ptr, row_stride, vocab, num_chunks, max_ptr, sum_ptr, dot_ptr, top_ptr, top_ids_ptr,
                  BLOCK: tl.constexpr, K: tl.constexpr):
    row, chunk = tl.program_id(0), tl.program_id(1)
    local = tl.arange(0, BLOCK)
    inside = chunk * BLOCK + local < vocab
    x = tl.load(logits_ptr + row * row_stride + chunk * BLOCK + local, mask=inside, other=float("-inf"))
    x = x.to(tl.float32)
    m = tl.max(x, axis=0)
    shifted = tl.where(inside, x - m, 0.0)  # 0, not -inf, past the vocabulary: 0 * -inf is NaN
    e = tl.where(inside, tl.exp(shifted), 0.0)
    out = row * num_chunks + chunk
    tl.store(max_ptr + out, m)
    tl.store(sum_ptr + out, tl.sum(e, axis=0))
    tl.store(dot_ptr + out, tl.sum(e * shifted, axis=0))
    for i in tl.static_range(K):
        best, where = tl.max(x, axis=0, return_indices=True)
        tl.store(top_ptr + out * K + i, best)
        tl.store(top_ids_ptr + out * K + i, chunk * BLOCK + where)
        x = tl.where(local == where, float("-inf"), x)


def summary_columns_triton(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits [S, V] (fp32, last dimension contiguous) -> packed [S, 2k + 2]: top ids, their
    probabilities, sum p log p, log-sum-exp; the columns of logits_stats.summary_columns."""
    rows, vocab = logits.shape
    chunks = triton.cdiv(vocab, BLOCK)
    stats = torch.empty(3, rows, chunks, dtype=torch.float32, device=logits.device)  # m, z, t
    top = torch.empty(rows, chunks, k, dtype=torch.float32, device=logits.device)
    top_ids = torch.empty(rows, chunks, k, dtype=torch.int32, device=logits.device)
    _chunk_kernel[(rows, chunks)](logits, logits.stride(0), vocab, chunks, stats[0], stats[1], stats[2], top, top_ids,
                                  BLOCK=BLOCK, K=k, num_warps=8)
    m, z, t = stats  # [S, C] each
    row_max = m.amax(dim=-1, keepdim=True)  # [S, 1]
    scale = (m - row_max).exp()
    total = (z * scale).sum(dim=-1)  # Z [S]
    dot = ((t + (m - row_max) * z) * scale).sum(dim=-1)  # T [S]
    log_total = total.log()
    lse = row_max[:, 0] + log_total
    neg_entropy = dot / total - log_total
    best, picked = top.view(rows, chunks * k).topk(k, dim=-1)  # [S, k]
    ids = top_ids.view(rows, chunks * k).gather(-1, picked)
    probs = ((best - row_max) - log_total[:, None]).exp()  # exp(x - lse), exact for the largest
    return torch.cat([ids.float(), probs, neg_entropy[:, None], lse[:, None]], dim=1)
