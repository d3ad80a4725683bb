"""SamplingParams: how one request picks its next tokens and when it stops."""

from __future__ import annotations

from dataclasses import dataclass

from minillama.errors import InvalidRequestError
from minillama.values import MAX_COUNT, as_flag, is_finite_real, is_int

MAX_SAMPLES = 64  # the most samples one prompt may ask for (SamplingParams.n)
MAX_BEAMS = 64  # the widest beam search one prompt may ask for (SamplingParams.beam_width)
GREEDY_BELOW = 1e-5  # a temperature under this samples greedily (SamplingParams.greedy)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings.

    temperature 0 means greedy (always the most likely token), and so does any temperature below
    GREEDY_BELOW: the sampler divides fp32 logits by it, and 1e-300 would be 0 there (vLLM draws
    the same line). top_k 0 and top_p 1.0 switch those filters off. A request with a seed draws from its own random generator, so the same seed gives
    the same tokens whatever else is in the batch.

    n > 1 asks for n samples of the prompt (parallel sampling): one prefill, whose K/V blocks the
    samples share, then each draws its own tokens; sample i uses seed + i when a seed is given.

    beam_width k > 1 asks for a beam search (minillama/engine/beam_search.py): k beams that share
    their common prefix's blocks, scored by the model's log-probabilities, as Hugging Face's
    generate(num_beams=k, do_sample=False) does. It is deterministic: temperature, top_p, top_k
    and seed are ignored (a UI may pass them). A finished beam scores its summed log-probability
    over generated_len ** length_penalty (> 0 favours longer beams). early_stopping: True ends
    the search once k beams have finished; False (the default) once no running beam can beat
    the worst finished one, by a heuristic on the current length; "never", by the best length
    max_tokens could still reach. max_tokens, ignore_eos and stop_token_ids apply to each beam.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 64
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1
    beam_width: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never" (as Hugging Face's)

    def __post_init__(self) -> None:
        # Checked when made, where the mistake is (SamplingParams(top_p=2) was taken, and refused
        # only when a request used it); the engine checks again what it is given.
        self.validate()

    def validate(self) -> None:
        """Raise InvalidRequestError naming the first bad field."""
        # Counts are capped where the sampler and the scheduler turn them into int32/int64
        # tensors and arithmetic: past it they would fail inside a step, not here.
        if not is_int(self.max_tokens) or not 1 <= self.max_tokens <= MAX_COUNT:
            raise InvalidRequestError(f"max_tokens must be an integer in [1, {MAX_COUNT}], got {self.max_tokens!r}")
        if not is_finite_real(self.temperature) or self.temperature < 0:
            raise InvalidRequestError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not is_finite_real(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not is_int(self.top_k) or not 0 <= self.top_k <= MAX_COUNT:
            raise InvalidRequestError(f"top_k must be an integer in [0, {MAX_COUNT}] (0 = off), got {self.top_k!r}")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise InvalidRequestError(f"seed must be an integer in [0, 2**63) or None, got {self.seed!r}")
        if not is_int(self.n) or not 1 <= self.n <= MAX_SAMPLES:
            raise InvalidRequestError(f"n (samples per prompt) must be an integer in [1, {MAX_SAMPLES}], got {self.n!r}")
        if self.seed is not None and self.seed + self.n > 2**63:
            raise InvalidRequestError(f"seed + n must be at most 2**63 (sample i draws with seed + i), got {self.seed}")
        if not is_int(self.beam_width) or not 1 <= self.beam_width <= MAX_BEAMS:
            raise InvalidRequestError(f"beam_width must be an integer in [1, {MAX_BEAMS}], got {self.beam_width!r}")
        if self.beam_width > 1 and self.n > 1:
            raise InvalidRequestError("n > 1 and beam_width > 1 do not combine: a beam search returns its beam_width beams")
        if not is_finite_real(self.length_penalty):
            raise InvalidRequestError(f"length_penalty must be a finite number, got {self.length_penalty!r}")
        # The type first: `in` would compare a numpy array elementwise, and raise.
        if not isinstance(self.early_stopping, (bool, str)) or self.early_stopping not in (True, False, "never"):
            raise InvalidRequestError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if not isinstance(self.stop_token_ids, (tuple, list)) or not all(map(is_int, self.stop_token_ids)):
            raise InvalidRequestError(f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}")
        as_flag(self.ignore_eos, "ignore_eos", InvalidRequestError)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

