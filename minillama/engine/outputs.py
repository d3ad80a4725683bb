"""What a step returns: per-request outputs, and the step record that observers receive."""

from __future__ import annotations

from dataclasses import dataclass, field

from minillama.engine.scheduler import SchedulerOutput


@dataclass
class RequestOutput:
    """One request's progress in one step: the token it produced and the text that completes."""

    request_id: int
    token_id: int
    text_delta: str
    finished: bool
    finish_reason: str | None = None


@dataclass
class StepTimings:
    """Milliseconds spent in each phase of a step."""

    schedule_ms: float = 0.0
    prepare_ms: float = 0.0
    forward_ms: float = 0.0
    sample_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.schedule_ms + self.prepare_ms + self.forward_ms + self.sample_ms


@dataclass
class StepResult:
    step: int  # 0-based index of the step since the engine started
    batch: SchedulerOutput
    outputs: list[RequestOutput]
    timings: StepTimings
    num_free_blocks: int
    finished: list[int] = field(default_factory=list)  # request ids that finished this step


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
