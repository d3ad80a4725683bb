"""Sequence: one request's tokens, its place in the KV cache, and its progress."""

from __future__ import annotations

import enum

from minillama.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued: new, or preempted and waiting to be recomputed
    RUNNING = "running"  # holds KV blocks and is scheduled every step
    FINISHED = "finished"


class Sequence:
    """A prompt plus the tokens generated so far.

    The KV cache holds keys/values for the first `num_computed_tokens` tokens. A sequence in
    decode has exactly one token not yet computed: the one sampled last step, whose K/V the next
    forward pass writes. `block_table[i]` is the physical KV block that holds tokens
    [i * block_size, (i + 1) * block_size).
    """

    def __init__(self, seq_id: int, token_ids: list[int], params: SamplingParams, arrival: int | None = None):
        self.seq_id = seq_id  # the engine numbers its requests 0, 1, 2, ... in arrival order
        # Order of arrival; preemption evicts the latest arrival first so the oldest always progress.
        self.arrival: int = self.seq_id if arrival is None else arrival
        self.token_ids: list[int] = list(token_ids)
        self.num_prompt_tokens: int = len(token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # tokens served by the prefix cache at the last admission
        self.num_preemptions = 0
        self.finish_reason: str | None = None  # "stop" (EOS or stop token) or "length"

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, status={self.status.value}, tokens={len(self)}, "
            f"computed={self.num_computed_tokens}, blocks={self.block_table})"
        )

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def num_blocks_needed(self, block_size: int, num_tokens: int | None = None) -> int:
        """Blocks to hold `num_tokens` tokens (default: all of them), rounded up."""
        n = self.num_tokens if num_tokens is None else num_tokens
        return (n + block_size - 1) // block_size

    def block_tokens(self, index: int, block_size: int) -> list[int]:
        """The token ids that logical block `index` holds (fewer than block_size for the last)."""
        return self.token_ids[index * block_size : (index + 1) * block_size]

    def slot(self, position: int, block_size: int) -> int:
        """The flat KV-cache slot of token `position`: physical block * block_size + offset."""
        return self.block_table[position // block_size] * block_size + position % block_size
