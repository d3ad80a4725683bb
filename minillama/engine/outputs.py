"""What a step returns: per-request outputs, and the step record that observers receive.

The values observers receive are immutable: a frozen dataclass for what is made once per step,
a NamedTuple for what is made once per sequence per step (a tuple is built far faster than a
frozen dataclass, which sets each field through object.__setattr__)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from minillama.engine.scheduler import SchedulerOutput


class RequestOutput(NamedTuple):
    """One request's progress in one step: the token it produced and the text that completes."""

    request_id: int
    token_id: int
    text_delta: str
    finished: bool
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StepTimings:
    """Milliseconds spent in each phase of a step. On CUDA with observers attached, forward_ms
    and sample_ms are GPU times (CUDA events); otherwise all are host wall times, and on CUDA
    without observers forward_ms is only the time to launch the forward."""

    schedule_ms: float = 0.0
    prepare_ms: float = 0.0
    forward_ms: float = 0.0  # with observers attached, on_attention hooks are inside it
    sample_ms: float = 0.0
    observe_ms: float = 0.0  # on_schedule and on_logits hooks (0 with no observer)


@dataclass
class EngineStats:
    """Running totals since the engine started, split by step phase."""

    prefill_steps: int = 0
    prefill_tokens: int = 0  # prompt tokens computed (prefix-cache hits not included)
    prefill_seconds: float = 0.0
    decode_steps: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    preemptions: int = 0

    def record(self, phase: str, num_tokens: int, seconds: float, preemptions: int) -> None:
        if phase == "prefill":
            self.prefill_steps += 1
            self.prefill_tokens += num_tokens
            self.prefill_seconds += seconds
        else:
            self.decode_steps += 1
            self.decode_tokens += num_tokens
            self.decode_seconds += seconds
        self.preemptions += preemptions

    def summary(self) -> str:
        prefill = self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else 0.0
        decode = self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0
        return (
            f"prefill: {self.prefill_tokens} tokens in {self.prefill_steps} steps, {prefill:.1f} tok/s | "
            f"decode: {self.decode_tokens} tokens in {self.decode_steps} steps, {decode:.1f} tok/s | "
            f"preemptions: {self.preemptions}"
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step, as on_step_end observers receive it."""

    step: int  # 0-based index of the step since the engine started
    batch: SchedulerOutput
    outputs: tuple[RequestOutput, ...]  # in the order of batch.sampling
    timings: StepTimings
    num_free_blocks: int  # at the step's end
    finished: tuple[int, ...] = ()  # request ids that finished this step


@dataclass
class Completion:
    """A finished request, as LLM.generate returns it."""

    request_id: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    sample_index: int = 0  # which of its prompt's n samples (SamplingParams.n); 0 when n is 1
