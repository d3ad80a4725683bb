"""DebugSession: drive the engine one step at a time, record everything, travel back and forth.

    session = DebugSession(LLMEngine.from_pretrained())
    session.add("What is the capital of France?", SamplingParams(temperature=0), chat=True)
    result = session.run(until=[Preemption(), TextMatches("Paris")], max_steps=200)
    print(result.reason)             # which breakpoint stopped the run, and why
    session.prev()                   # time travel: the step before, as recorded
    session.trace.attention_row(seq_id, layer=3, head=0, query_pos=12)

Stepping runs the engine forward and records; moving the cursor (seek, next, prev) only reads
the trace. reset() aborts every request and starts an empty trace on the same engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from inspector.breakpoints import Breakpoint
from inspector.cursor import Cursor
from inspector.recorder import CapturePolicy, Recorder
from inspector.trace import StepRecord, Trace
from minillama.engine.llm_engine import LLMEngine
from minillama.sampling_params import SamplingParams


@dataclass
class RunResult:
    steps: int  # engine steps run
    breakpoint: Breakpoint | None  # the one that stopped the run, if any
    reason: str | None  # what it said
    finished: bool  # no request left to run


class DebugSession:
    def __init__(self, engine: LLMEngine, policy: CapturePolicy | None = None):
        self.engine = engine
        self.recorder = Recorder(engine, policy)
        engine.add_observer(self.recorder)
        self.cursor = Cursor(self.recorder.trace)

    @property
    def trace(self) -> Trace:
        return self.recorder.trace

    # -- requests ------------------------------------------------------------------------------

    def add(self, prompt: str | list[int], params: SamplingParams | None = None, chat: bool = False) -> int:
        """Queue a request (raises InvalidRequestError for bad input); returns its sequence id."""
        seq_id = self.engine.add_request(prompt, params, chat=chat)
        text = prompt if isinstance(prompt, str) else None
        self.recorder.register(self.engine.sequences[seq_id], chat=chat, prompt_text=text)
        return seq_id

    def abort(self, seq_id: int) -> None:
        self.engine.abort(seq_id)
        self.recorder.note_abort(seq_id)

    def reset(self) -> None:
        """Abort every request, forget every finished one, and start an empty trace."""
        for seq_id in list(self.engine.sequences):
            self.engine.abort(seq_id)
        self.recorder.clear()
        self.cursor = Cursor(self.recorder.trace)

    # -- running -------------------------------------------------------------------------------

    def step(self) -> StepRecord | None:
        """Run one engine iteration and record it; the cursor moves to it. None when no
        request is left to run."""
        if not self.engine.has_unfinished():
            return None
        before = len(self.trace.steps)
        self.engine.step()
        if len(self.trace.steps) == before:  # the scheduler found nothing it could run
            return None
        return self.cursor.seek(-1)

    def run(self, until: Iterable[Breakpoint] = (), max_steps: int | None = None) -> RunResult:
        """Step until a breakpoint fires (checked in the order given, after each step), no
        request is left, or max_steps steps have run."""
        breakpoints = list(until)
        steps = 0
        while max_steps is None or steps < max_steps:
            record = self.step()
            if record is None:
                break
            steps += 1
            for bp in breakpoints:
                reason = bp.check(self.trace, record)
                if reason is not None:
                    return RunResult(steps, bp, reason, not self.engine.has_unfinished())
        return RunResult(steps, None, None, not self.engine.has_unfinished())

    # -- time travel ---------------------------------------------------------------------------

    def seek(self, index: int) -> StepRecord:
        return self.cursor.seek(index)

    def next(self) -> StepRecord | None:
        return self.cursor.next()

    def prev(self) -> StepRecord | None:
        return self.cursor.prev()
