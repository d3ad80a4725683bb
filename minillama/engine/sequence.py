"""Sequence: one request's tokens, its place in the KV cache, and its progress."""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from minillama.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued: new, or preempted and waiting to be recomputed
    RUNNING = "running"  # holds KV blocks and is scheduled every step
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request as an observer may see it: a copy, taken when asked (LLMEngine.request)."""

    seq_id: int
    prompt_token_ids: tuple[int, ...]
    output_token_ids: tuple[int, ...]  # generated so far
    params: SamplingParams
    status: str  # "waiting", "running" or "finished"
    finish_reason: str | None  # "stop", "length", "abort" or "pruned" (beam search) once finished
    num_cached_tokens: int  # tokens served by the prefix cache at the last admission
    num_preemptions: int
    # A fork (LLMEngine.fork): its parent, the parent's tokens it kept (its forced tokens start
    # at that position), and how it got the prefix's K/V: "shared" (the parent's blocks),
    # "prefix-cache" or "recomputed" (the parent's blocks were gone); None until it first runs.
    parent_id: int | None = None
    fork_position: int | None = None
    fork_prefix: str | None = None
    # Parallel sampling (SamplingParams.n > 1): sample i of its prompt. The leader (the id
    # add_request returned) is sample 0 with sample_of None, like an ordinary request; samples
    # 1..n-1 name their leader in sample_of (and, sharing its prompt blocks, are its forks too).
    sample_of: int | None = None
    sample_index: int = 0
    # Beam search (SamplingParams.beam_width > 1): every beam names its search's request id in
    # beam_of (the first beam too); a finished beam's score (its log-probability under the
    # length penalty) in beam_score. A beam the search dropped finishes with reason "pruned".
    beam_of: int | None = None
    beam_score: float | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


class Sequence:
    """A prompt plus the tokens generated so far.

    The tokens live in an `array("q")` (64-bit machine integers), not a list: a beam search
    forks hundreds of sequences a step, each with the hundreds of tokens of its parent, and an
    array copies them as one block of memory (~0.2 us for 1,000 tokens, a list ~2 us); the
    garbage collector, which visits every element of a list at each collection it takes part
    in, visits an array in one step, so a server's thousands of finished sequences cost it
    nothing. Building one from a list converts each element (~16 us for 1,000 tokens): once
    per request.

    The KV cache holds keys/values for the first `num_computed_tokens` tokens. A sequence in
    decode has exactly one token not yet computed: the one sampled last step, whose K/V the next
    forward pass writes. `block_table[i]` is the physical KV block that holds tokens
    [i * block_size, (i + 1) * block_size). The table is a tuple: every step's published plan
    carries it as it is, so it must never change under a reader; it grows by one block every
    block_size tokens, and only then is it copied.
    """

    def __init__(self, seq_id: int, token_ids: Iterable[int], params: SamplingParams):
        self.seq_id = seq_id  # the engine numbers its requests 0, 1, 2, ... in arrival order
        self.token_ids: array[int] = array("q", token_ids)  # a copy: the caller's list stays its own
        self.num_prompt_tokens: int = len(self.token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        self.block_table: tuple[int, ...] = ()
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # tokens served by the prefix cache at the last admission
        self.num_preemptions = 0
        self.finish_reason: str | None = None  # "stop" (EOS or stop token), "length", "abort" or "pruned"
        # Set on a fork only (RequestInfo says what they mean).
        self.parent_id: int | None = None
        self.fork_position: int | None = None
        self.fork_prefix: str | None = None
        self.copy_on_write: tuple[int, int, int] | None = None  # the CopyOnWrite its fork made
        self.sample_of: int | None = None  # set on samples 1..n-1 of a request with n > 1
        self.sample_index = 0
        self.beam_of: int | None = None
        self.beam_score: float | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    def finish(self, reason: str) -> None:
        """The sequence is done ("stop", "length", "abort" or "pruned"); the caller gives its
        blocks back. Its tokens never change again."""
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, status={self.status.value}, tokens={len(self)}, "
            f"computed={self.num_computed_tokens}, blocks={self.block_table})"
        )

    def info(self) -> RequestInfo:
        prompt, outputs = self.token_ids[: self.num_prompt_tokens], self.token_ids[self.num_prompt_tokens :]
        return RequestInfo(self.seq_id, tuple(prompt), tuple(outputs), self.params, self.status.value,
                           self.finish_reason, self.num_cached_tokens, self.num_preemptions,
                           self.parent_id, self.fork_position, self.fork_prefix,
                           self.sample_of, self.sample_index, self.beam_of, self.beam_score)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :].tolist()

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_lockstep_beam(self) -> bool:
        """A beam of a search past its first step: it computes and samples only together with
        its siblings (minillama/engine/beam_search.py). The first beam, alone until its first
        selection, has no output yet."""
        return self.beam_of is not None and self.num_tokens > self.num_prompt_tokens

    @property
    def prefill_end(self) -> int:
        """How far a prefill of this sequence runs: all its tokens (then it samples), but for a
        lockstep beam all but the last, which it computes in a decode step with its siblings."""
        return self.num_tokens - 1 if self.is_lockstep_beam else self.num_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def num_blocks_needed(self, block_size: int, num_tokens: int | None = None) -> int:
        """Blocks to hold `num_tokens` tokens (default: all of them), rounded up."""
        n = self.num_tokens if num_tokens is None else num_tokens
        return (n + block_size - 1) // block_size

    def block_tokens(self, index: int, block_size: int) -> list[int]:
        """The token ids that logical block `index` holds (fewer than block_size for the last)."""
        return self.token_ids[index * block_size : (index + 1) * block_size].tolist()
