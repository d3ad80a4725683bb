"""Beam search: keep the k most likely continuations of a prompt, one token at a time.

Greedy decoding takes the single most likely token at every step, and can walk into a dead end
that a slightly less likely first token would have avoided. A beam search keeps k hypotheses
("beams") instead, and scores each by the log-probability the model gives its whole output:

    score(beam) = log p(t1) + log p(t2 | t1) + ... = the sum of its tokens' log-probabilities

Each step, every beam proposes every token of the vocabulary: k x V continuations, each scored
by its beam's score plus the token's log-probability. The rules below are Hugging Face's
generate(num_beams=k, do_sample=False) (transformers 5, GenerationMixin._beam_search), step by step:

1. Candidates: the 2k best continuations over all beams ((1 + number of stop tokens) x k when
   there are several stop tokens), best first. At least k of them do not end, so k beams go on.
2. The next beams: the k best candidates that do not end (a stop token, or the length limit).
   A beam that none of them continues is pruned; one continued by c candidates lives on as c
   beams, which share its K/V blocks (the engine forks it).
3. Finished hypotheses: a candidate of rank < k that ends becomes a finished hypothesis, scored
   sum_logprobs / generated_len ** length_penalty (generated_len counts the stop token). The
   search keeps the k best finished hypotheses; a better one pushes the worst out.
4. The end: once k hypotheses have finished, the search stops if early_stopping is True; with
   False (or "never") it stops when the best running beam, length-penalised at the current
   length (at the longest reachable one, for "never" with a positive penalty), cannot beat the
   worst finished hypothesis. It always stops when every candidate ends (the length limit).
   The result is the finished hypotheses, best first; the beams still running are dropped.

Scores are float32 tensors and use exactly Hugging Face's operations, so near ties break alike.

How it lives in a paged, continuously batched engine (LLMEngine, Scheduler):

- A search's beams advance together: all of its live beams compute their last token and give
  their logits rows in the same step, and the search selects once per step from all of them.
  The scheduler guarantees it. A decode step runs every running sequence, so beams in decode
  run together; a beam that must recompute its tokens (after a preemption) stops its prefill
  one token short (Sequence.prefill_end), so it never samples alone in a prefill step.
- Preemption takes a whole search: when the victim is a beam, all its siblings go back to the
  waiting queue with it, and they are admitted again together, only when blocks and seats for
  all of them are free. So a search's beams are all running or all waiting. (A request is
  checked at add time to fit the cache with beam_width beams side by side, so it always can.)
- Seats: the first beam (the prompt) holds beam_width seats from its admission (the scheduler
  reserves them) until its first selection makes the other beams; from then on each selection
  prunes a beam, or finishes one, for every beam it forks, so the search's seat count holds.
- Blocks: a fork needs one fresh block (the copy of its parent's partial block, or a block for
  its token on a block boundary), and every pruned or finished beam gives back at least one (its
  last block is always its own). Only the first selection, which prunes nothing, may find too
  few free blocks; the search is then preempted whole and its beams recompute their tokens
  (the prefix cache serves the shared prompt) when admitted together.
- A chunked prefill only concerns the first beam, which is alone: its first row is the
  selection's only row. abort(request_id) aborts every live beam of the search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from minillama.engine.sequence import Sequence
from minillama.transfer import record_event, to_device, to_host


class Candidate(NamedTuple):
    """One continuation: beam `parent` (an index into the group's live beams) followed by `token`."""

    rank: int  # 0 = the best candidate of the step
    parent: int
    token: int
    logprob: float  # the beam's summed log-probability with this token (float32)
    score: float  # logprob / generated_len ** length_penalty: its score if it finishes here
    ends: bool  # a stop token, or the length limit


@dataclass
class Hypothesis:
    """A finished beam: a candidate that ended among the k best, with its final score. seq_id is
    the sequence the engine made for it (None until then)."""

    score: float
    candidate: Candidate
    seq_id: int | None = None


class Selection(NamedTuple):
    """What one step of a search decided; the engine turns it into sequences and blocks."""

    keep: list[Candidate]  # the next live beams, best first
    finished: list[Hypothesis]  # candidates that finished this step and are among the k best
    displaced: list[Hypothesis]  # earlier finished hypotheses pushed out of the k best
    done: bool  # the search is over: its live beams are dropped


def launch_selection(groups: list[BeamGroup], logits: torch.Tensor, rows: list[list[int]]) -> PendingSelection:
    """One step of every search in `groups`: group g's live beams, in order, gave logits rows
    rows[g] ([B, V] logits of the whole batch, fp32 or the model's dtype). Step 1 runs in two
    stages:

    - on the device, queued behind the forward pass that computes the logits: each beam's C
      best tokens (C: the most candidates a search takes), from one log-softmax and one top-k
      over every beam's row ([R, V] -> [R, C], R the beams of every search), copied to the host
      in one transfer. A search's C best continuations are among its beams' C best each, since
      a beam adds the same score to all its tokens, so nothing past this point touches a
      [R, V] tensor again;
    - on the host, in PendingSelection.finish() once the copy is there: each beam's score added
      ([R, C], float32 as Hugging Face adds it over [R, V]: the same values), one top-k per
      shape of search (as many live beams and candidates), then the rules (BeamGroup.select).

    The second stage works on a few thousand numbers: on the host it costs a few small CPU
    operations, where on the device it cost a handful of kernel launches and transfers per
    shape of search, each several microseconds of the host's time (the host, not the GPU, is
    what a step of hundreds of beams waits for). Nothing here waits for the GPU (host data goes
    through pinned memory), so with async scheduling the host plans the next step while these
    kernels run."""
    vocab = logits.shape[1]
    assert vocab <= 2**24, "token ids travel as float32, exact below 2**24"
    stage_width = min(max(group.num_candidates for group in groups), vocab)
    shapes: dict[tuple[int, int], list[int]] = {}  # (live beams, candidates) -> the searches of that shape
    for g, group in enumerate(groups):
        shapes.setdefault((len(rows[g]), min(group.num_candidates, len(rows[g]) * stage_width)), []).append(g)
    # The beams' rows, search by search, the searches of one shape side by side: each shape's
    # rows are then one slice of the host's [R, ...] tensors, a view, not a copy.
    order = [g for members in shapes.values() for g in members]
    beam_rows = [row for g in order for row in rows[g]]
    first, last = min(beam_rows), max(beam_rows)
    if last - first < 2 * len(beam_rows):  # usually all the rows: a slice, nothing to send
        picked, host_rows = logits[first:last + 1], [row - first for row in beam_rows]
    else:  # the row index through pinned memory: a pageable one would wait for the forward pass
        picked, host_rows = logits.index_select(0, to_device(torch.tensor(beam_rows), logits.device)), None
    # fp32 as Hugging Face computes them: the kernel widens the model's bf16 logits (exactly) as
    # it reads them, where .float() first would launch a kernel and write a [P, V] fp32 copy.
    logprobs = torch.log_softmax(picked, dim=-1, dtype=torch.float32)  # [P, V]
    best_logprobs, best_tokens = torch.topk(logprobs, stage_width, dim=-1)  # [P, C] each
    found = to_host(torch.stack([best_logprobs, best_tokens.float()]))  # [2, P, C]
    return PendingSelection(groups, vocab, stage_width, shapes, found, host_rows, record_event(logits.device))


class SearchStep(NamedTuple):
    """The searches whose beams gave logits rows in one step, and their selection, launched."""

    groups: list[BeamGroup]
    rows: list[list[int]]  # rows[g]: the logits rows of groups[g]'s live beams, in order
    pending: PendingSelection


class PendingSelection:
    """launch_selection's device stage on its way to the host: each beam's C best tokens and
    their log-probabilities ([2, P, C] float32: log-probs, token ids), for the rows in shape
    order, or for a slice of the batch that holds them (then host_rows[i] is the slice's row of
    the i-th beam in shape order)."""

    def __init__(self, groups: list[BeamGroup], vocab: int, stage_width: int, shapes: dict[tuple[int, int], list[int]],
                 found: torch.Tensor, host_rows: list[int] | None, copied: torch.cuda.Event | None):
        self.groups, self.vocab, self.stage_width, self.shapes = groups, vocab, stage_width, shapes
        self.found, self.host_rows = found, host_rows
        self.copied = copied  # passed once the copy has run (None on the CPU)

    def finish(self) -> list[Selection]:
        """Wait for the copy, then each search's step on the host: its candidates (the second
        stage of launch_selection, in numpy: a few thousand float32 numbers, where each torch
        operation would cost more to call than to run), then BeamGroup.select."""
        if self.copied is not None:
            self.copied.synchronize()
        groups, vocab, stage_width = self.groups, self.vocab, self.stage_width
        found = self.found.numpy()
        if self.host_rows is not None:
            found = found[:, self.host_rows]  # [2, R, C], in shape order
        best_logprobs, best_tokens = found[0], found[1].astype(np.int64)
        order = [g for members in self.shapes.values() for g in members]
        # Every beam's summed log-probability so far: float32 values, held exactly by Python floats.
        scores = np.array([score for g in order for score in groups[g].scores], dtype=np.float32)
        totals = best_logprobs + scores[:, None]  # [R, C] float32: those continuations' summed log-probs
        selections: list[Selection | None] = [None] * len(groups)
        start = 0
        for (num_beams, num_candidates), members in self.shapes.items():
            end = start + len(members) * num_beams
            side_by_side = totals[start:end].reshape(len(members), num_beams * stage_width)  # a search's candidates
            # The best first; of equal ones, the earlier beam's (then its more likely token's).
            where = np.argsort(-side_by_side, axis=1, kind="stable")[:, :num_candidates]  # [G, K]
            values = np.take_along_axis(side_by_side, where, axis=1)
            tokens = np.take_along_axis(best_tokens[start:end].reshape(len(members), -1), where, axis=1)
            start = end
            # Each candidate's score if it ends here: float32 division, as Hugging Face divides.
            # An extreme length_penalty makes a divisor 0 or past float32's range (infinite): the
            # quotients (-inf, -0.0) still rank the candidates, so numpy need not warn of them.
            with np.errstate(divide="ignore", over="ignore"):
                lengths = np.array([groups[g].length_divisor() for g in members], dtype=np.float32)
                penalised = values / lengths[:, None]
            # Beam i's token t is continuation i * V + t of the search's flattened [beams * V].
            indices = (where // stage_width) * vocab + tokens  # [G, K]
            for g, row_values, row_indices, row_penalised in zip(
                    members, values.tolist(), indices.tolist(), penalised.tolist()):
                selections[g] = groups[g].select(row_values, row_indices, row_penalised, vocab)
        return selections


class BeamGroup:
    """The state of one beam search: its live beams, their scores and its finished hypotheses."""

    def __init__(self, first: Sequence, stop_ids: frozenset[int], max_new_tokens: int):
        params = first.params
        self.request_id = first.seq_id
        self.width = params.beam_width
        self.length_penalty = params.length_penalty
        self.early_stopping = params.early_stopping
        self.stop_ids = stop_ids  # the tokens that end a hypothesis (EOS unless ignored, stop tokens)
        self.max_new_tokens = max_new_tokens  # the most tokens a beam can generate
        self.num_candidates = max(2, 1 + len(stop_ids)) * self.width
        self.beams: list[Sequence] = [first]  # the live beams, best first
        self.scores = [0.0]  # each live beam's summed log-prob (float32 values)
        self.generated = 0  # tokens each live beam has generated
        self.finished: list[Hypothesis] = []  # best first, at most width
        self.improvable = True  # can a running beam still beat the worst finished hypothesis?
        self.done = False
        self.members: list[int] = [first.seq_id]  # every sequence the search made, pruned ones too

    def end_reason(self, token: int) -> str:
        """Why a hypothesis ending with `token` finished: a stop token, else the length limit
        (the only two ways a candidate ends, in select)."""
        return "stop" if token in self.stop_ids else "length"

    def length_divisor(self) -> float:
        """generated_len ** length_penalty for this step's candidates (their new token counted):
        a candidate that ends here scores its summed log-prob divided by it."""
        return length_power(self.generated + 1, self.length_penalty)

    def select(self, values: list[float], indices: list[int], penalised: list[float], vocab: int) -> Selection:
        """One step, on the host. launch_selection finds the best continuations over every beam, best
        first: their summed log-probabilities (values), where each is in the flattened
        [len(beams) * V] (beam i followed by token t at i * V + t), and their values divided by
        length_divisor() (penalised). Updates the scores and the finished hypotheses; the caller
        sets `beams` to the kept ones."""
        k = self.width
        generated = self.generated + 1  # each candidate's generated length, its new token included
        at_length = generated >= self.max_new_tokens
        # 1. The candidates, best first, as far as steps 2 and 3 look: 2. the next beams are the
        # k best candidates that go on (keep); 3. those of rank < k that end (ending) join the
        # finished hypotheses, while that can still matter (early_stopping True freezes a full
        # set; step 4 may have closed it).
        keep: list[Candidate] = []
        ending: list[Candidate] = []
        for rank, (index, value, score) in enumerate(zip(indices, values, penalised)):
            if len(keep) == k and rank >= k:
                break  # the rest can be neither
            token = index % vocab
            if at_length or token in self.stop_ids:
                if rank < k:
                    ending.append(Candidate(rank, index // vocab, token, value, score, True))
            elif len(keep) < k:
                keep.append(Candidate(rank, index // vocab, token, value, score, False))
        new = []
        if self.improvable and not (len(self.finished) == k and self.early_stopping is True):
            new = [Hypothesis(c.score, c) for c in ending]
        merged = sorted([*self.finished, *new], key=lambda h: h.score, reverse=True)
        self.finished = merged[:k]
        displaced = [h for h in merged[k:] if h.seq_id is not None]
        finished = [h for h in new if any(h is f for f in self.finished)]
        # 4. Next step's scores; then: can the best running beam still beat the worst finished one?
        self.scores = [c.logprob for c in keep]
        self.generated = generated
        if len(self.finished) == k and keep:
            length = self.max_new_tokens if self.early_stopping == "never" and self.length_penalty > 0 else generated
            best = (torch.tensor(self.scores[0], dtype=torch.float32) / length_power(length, self.length_penalty)).item()
            self.improvable = self.improvable and best > self.finished[-1].score
        full = len(self.finished) == k and self.early_stopping is True
        self.done = not self.improvable or full or not keep
        return Selection([] if self.done else keep, finished, displaced, self.done)

    def results(self) -> tuple[int, ...]:
        """The finished hypotheses' sequence ids, best first."""
        return tuple(h.seq_id for h in self.finished if h.seq_id is not None)


def length_power(length: int, length_penalty: float) -> float:
    """length ** length_penalty, infinite where a penalty is so large that it leaves float's
    range (Python raises OverflowError there): dividing by it still ranks, as -0.0 or -inf."""
    try:
        return length**length_penalty
    except OverflowError:
        return math.inf
