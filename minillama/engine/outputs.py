"""What a step returns: per-request outputs, and the step record that observers receive.

The values observers receive are immutable: a frozen dataclass for what is made once per step,
a NamedTuple for what is made once per sequence per step (a tuple is built far faster than a
frozen dataclass, which sets each field through object.__setattr__)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, NamedTuple

from minillama.engine.scheduler import SchedulerOutput


class RequestOutput(NamedTuple):
    """One request's progress in one step: the token it produced and the text that completes."""

    request_id: int
    token_id: int
    text_delta: str
    finished: bool
    finish_reason: str | None = None


# Who chose a fork's forced tokens: "user" (LLMEngine.fork), "sample" (parallel sampling: the
# sampler drew sample i's first token), "beam" (beam search kept this continuation).
ForkCause = Literal["user", "sample", "beam"]


class CopyOnWrite(NamedTuple):
    """The copy a fork makes of the block where its shared prefix ends, when the prefix ends
    inside it: slots [0, num_slots) of src_block (the parent's) copied into dst_block (the
    child's own), in every layer, K and V. The child then writes its own tokens after them. The
    engine makes a step's copies (or a fork() call's) together, in one kernel, once its forks
    are all made: by the time fork() returns, or the step's on_step_end."""

    src_block: int
    dst_block: int
    num_slots: int


class ForkEvent(NamedTuple):
    """A new sequence that continues another from one of its tokens (LLMEngine.fork, a sample of
    a request with n > 1, a beam). Observers receive it through on_fork, when it happens."""

    child_id: int
    parent_id: int
    position: int  # the parent's tokens the child keeps; its forced tokens start here
    forced_token_ids: tuple[int, ...]
    cause: ForkCause
    # "shared": the child holds the parent's full blocks by reference (shared_block_ids) and a
    # copy of the partial one (copy); "queued": the parent's blocks were gone or none was free for
    # the copy, so the child queues like a new request (the prefix cache may serve its prefix).
    prefix: Literal["shared", "queued"]
    shared_block_ids: tuple[int, ...] = ()
    copy: CopyOnWrite | None = None


class PruneEvent(NamedTuple):
    """A beam search dropped a beam: its blocks went back to the pool (those still shared with
    its surviving siblings stay theirs). Observers receive it through on_prune."""

    seq_id: int
    group_id: int  # the beam search's request id (the one add_request returned)
    reason: str  # why, in words: "fell out of the 4 best beams"


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
    # Tensor parallelism: of forward_ms and observe_ms, the time rank 0 spent in the all-reduces,
    # all-gathers and messages that join the ranks (0 in one process).
    collective_ms: float = 0.0


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
    # Async scheduling (engine/in_flight.py): host time spent waiting for a launched step's
    # tokens. Near a step's whole time, the GPU sets the pace; near 0, the host does.
    wait_seconds: float = 0.0

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

    def since(self, earlier: EngineStats) -> EngineStats:
        """What happened after `earlier` (a copy of these totals taken then): a timed run's own
        figures, without its warm-up's (whose first steps include compiling the kernels)."""
        return EngineStats(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in dataclasses.fields(self)})

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
    outputs: tuple[RequestOutput, ...]  # in the order of batch.sampling, unless rows says otherwise
    timings: StepTimings
    num_free_blocks: int  # at the step's end
    finished: tuple[int, ...] = ()  # request ids that finished this step
    # The logits row (index into batch.sampling) each output's token was drawn from, aligned
    # with outputs; None: output i came from row i, as in every step without parallel sampling
    # or beam search. With them a row can give several outputs (a leader's row gives its
    # samples' first tokens; a beam's row gives each beam kept from it), and a pruned beam's
    # row none.
    rows: tuple[int, ...] | None = None

    def output_rows(self) -> tuple[int, ...]:
        """The logits row of each output (see rows)."""
        return self.rows if self.rows is not None else tuple(range(len(self.outputs)))


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
    # Which of its prompt's n samples (SamplingParams.n), or of its beam search's results, best
    # first (SamplingParams.beam_width); 0 otherwise.
    sample_index: int = 0
    score: float | None = None  # a beam's score: its log-probability over length ** length_penalty
