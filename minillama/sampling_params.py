"""SamplingParams: how one request picks its next tokens and when it stops."""

from __future__ import annotations

import math
from dataclasses import dataclass

from minillama.errors import InvalidRequestError
from minillama.values import is_int, is_real

MAX_SAMPLES = 64  # the most samples one prompt may ask for (SamplingParams.n)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings.

    temperature 0 means greedy (always the most likely token). top_k 0 and top_p 1.0 switch those
    filters off. A request with a seed draws from its own random generator, so the same seed gives
    the same tokens whatever else is in the batch.

    n > 1 asks for n samples of the prompt (parallel sampling): one prefill, whose K/V blocks the
    samples share, then each draws its own tokens; sample i uses seed + i when a seed is given.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 64
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1

    def validate(self) -> None:
        """Raise InvalidRequestError naming the first bad field."""
        if not is_int(self.max_tokens) or self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not is_real(self.temperature) or math.isnan(self.temperature):
            raise InvalidRequestError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if self.temperature < 0 or math.isinf(self.temperature):
            raise InvalidRequestError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not is_int(self.top_k) or self.top_k < 0:
            raise InvalidRequestError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise InvalidRequestError(f"seed must be an integer in [0, 2**63) or None, got {self.seed!r}")
        if not is_int(self.n) or not 1 <= self.n <= MAX_SAMPLES:
            raise InvalidRequestError(f"n (samples per prompt) must be an integer in [1, {MAX_SAMPLES}], got {self.n!r}")
        if self.seed is not None and self.seed + self.n > 2**63:
            raise InvalidRequestError(f"seed + n must be at most 2**63 (sample i draws with seed + i), got {self.seed}")
        if not isinstance(self.stop_token_ids, (tuple, list)) or not all(map(is_int, self.stop_token_ids)):
            raise InvalidRequestError(f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}")
        if not isinstance(self.ignore_eos, bool):
            raise InvalidRequestError(f"ignore_eos must be True or False, got {self.ignore_eos!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
