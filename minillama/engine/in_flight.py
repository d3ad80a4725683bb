"""Overlap scheduling: the host plans step N+1 while the GPU runs step N.

A synchronous step runs in order: schedule, prepare the inputs, launch the forward and the
sampler, wait for the sampled tokens (.tolist()), append them, finish the done sequences. While
the host schedules and prepares, the GPU has nothing queued, and at batch 256 that host time is
a fifth of a decode step. With async scheduling (EngineConfig.async_scheduling; vLLM v1's async
scheduling and SGLang's overlap scheduler work the same way) a step launches its forward, then
reads the tokens of the step before, which the GPU finished meanwhile:

    host:  schedule N | launch N | read N-1, finish | schedule N+1 | launch N+1 | read N, ...
    GPU:         ... step N-1 ... |        step N         |         step N+1        |

The host does not know step N's tokens when it plans step N+1, so every sequence step N sampled
for holds a placeholder as its last token: -1 - row, its row in step N's tokens (an int64 tensor
that stays on the GPU). The scheduler plans with it as with any token (it only counts them); the
model runner replaces each negative input id with the sampled token on the GPU (inside a decode
graph, which reads them where the sampler wrote them; before an eager forward, a gather + where),
and when step N's tokens reach the host the placeholders become real tokens, before anything
hashes a block that holds one (the prefix cache hashes only computed blocks, and the placeholder's
position is computed by step N+1, which is committed after the tokens are read).

What a step learns one step late, and what it costs:

- A sequence whose token at step N is EOS (or a stop token) is still in step N+1's batch: that
  row is computed in vain and its token dropped, never emitted. Its blocks go back while step
  N+1 runs; whoever takes them next writes them in a later kernel on the same stream.
- A sequence that will reach max_tokens (or max_model_len) at step N is known to before step N+1
  is planned: the engine then waits for step N's tokens first (one step in order), so no row runs
  past a limit and the batches are exactly the synchronous engine's when requests stop by length.
- step() returns the outputs of the step before the one it launched; has_unfinished() stays true
  until the last launched step is read.

A beam search cannot have placeholders: which beams go on, and with which tokens, is what step
N's selection decides. Its selection's device stage (beam_search.launch_selection: log-softmax,
top-k) is queued behind step N's forward pass instead, its results copied to pinned memory, and
its beams sit out step N+1 (Scheduler.selecting); the read applies the selection (forks,
prunes), and the new beams run in step N+2. Other requests, and the other searches, fill step
N+1: an overlapped decode step takes at most half the running beams (Scheduler._sitting_out),
so the searches fall into two even halves whose steps alternate, and the host's forks and
prunes of one half overlap the GPU's forward pass of the other. A search is preempted whole, so
while its beams sit out no decode step may need to preempt: the engine steps in order whenever
fewer blocks are free than sequences run.

The engine steps synchronously (this module idle) while an observer watches or a request with
n > 1 waits for its first token: each reads or acts on a step's tokens before the next step may
be planned. Any read of the engine's state between steps (request(), fork(),
abort(), block_pool_snapshot(), add_observer()) first reads the step in flight, keeping its
outputs for the next step() call (an aborted request's are dropped).
"""

from __future__ import annotations

import torch

from minillama.engine.beam_search import SearchStep
from minillama.engine.sequence import Sequence
from minillama.transfer import record_event, to_host


def placeholder(row: int) -> int:
    """The token id a sequence holds until the host reads its row of the step's tokens."""
    return -1 - row


class InFlightStep:
    """A launched step whose sampled tokens the host has not read: the sequences of its rows, the
    tokens on the device, and their copy to the host, under way behind the step's kernels."""

    def __init__(self, seqs: list[Sequence], tokens: torch.Tensor, searches: SearchStep | None, phase: str,
                 num_tokens: int, num_preempted: int, launched_at: float):
        self.seqs = seqs  # row i of `tokens` is seqs[i]'s
        self.searches = searches  # the beam searches that gave rows: their selection, launched
        self.tokens = tokens  # [S] int64 on the device: what the next step's inputs gather from
        self.phase, self.num_tokens, self.num_preempted = phase, num_tokens, num_preempted  # for EngineStats
        self.launched_at = launched_at  # time.perf_counter() when its kernels were queued
        # Pinned host memory: the copy is queued on the stream and the host goes on at once.
        # Only beams sampled: nothing to copy, and the selection's copy, queued last, marks the end.
        if seqs or searches is None:
            self.host: torch.Tensor | None = to_host(tokens)
            self.copied = record_event(tokens.device)  # None on the CPU: the step has already run
        else:
            self.host, self.copied = None, searches.pending.copied

    def read(self) -> list[int]:
        """The sampled tokens, row by row; waits for the step (and the copy) to finish."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.host.tolist() if self.host is not None else []
