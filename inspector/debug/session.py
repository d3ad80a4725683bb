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

from inspector.debug.breakpoints import Breakpoint, Hit
from inspector.debug.cursor import Cursor
from inspector.record.recorder import CapturePolicy, Recorder
from inspector.trace.model import StepRecord, Trace
from minillama.engine.llm_engine import LLMEngine
from minillama.sampling_params import SamplingParams


@dataclass
class RunResult:
    steps: int  # engine steps run
    breakpoint: Breakpoint | None  # the one that stopped the run, if any
    reason: str | None  # what it said
    finished: bool  # no request left to run
    seq_ids: tuple[int, ...] = ()  # the sequences its hits name (a debugger shows the first)


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
        self.recorder.register(seq_id, chat=chat, prompt_text=text)
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
        if not self._advance():
            return None
        self.recorder.flush()
        return self.cursor.seek(-1)

    def run(self, until: Iterable[Breakpoint] = (), max_steps: int | None = None) -> RunResult:
        """Step until a breakpoint fires (checked in the order given, after each step), no
        request is left, or max_steps steps have run; the cursor moves to the last step."""
        breakpoints = list(until)
        steps = 0
        stop: tuple[Breakpoint, list[Hit]] | None = None
        while (max_steps is None or steps < max_steps) and stop is None and self._advance():
            steps += 1
            if breakpoints:  # they read the step's record: complete it now (self.trace does)
                record = self.trace.steps[-1]
                stop = next(((bp, hits) for bp in breakpoints if (hits := bp.hits(self.trace, record))), None)
        if steps:
            self.recorder.flush()
            self.cursor.seek(-1)
        if stop is None:
            return RunResult(steps, None, None, not self.engine.has_unfinished())
        fired, hits = stop
        seq_ids = tuple(dict.fromkeys(h.seq_id for h in hits if h.seq_id is not None))
        return RunResult(steps, fired, "; ".join(h.reason for h in hits), not self.engine.has_unfinished(), seq_ids)

    def _advance(self) -> bool:
        """One engine iteration; False when nothing ran (no request left, or none could be
        scheduled). Without a breakpoint to check, a step's record is completed during the
        next step's forward, off the engine's critical path (see inspector/record/recorder.py)."""
        if not self.engine.has_unfinished():
            return False
        before = self.recorder.num_steps
        self.engine.step()
        return self.recorder.num_steps > before

    # -- time travel ---------------------------------------------------------------------------

    def seek(self, index: int) -> StepRecord:
        return self.cursor.seek(index)

    def next(self) -> StepRecord | None:
        return self.cursor.next()

    def prev(self) -> StepRecord | None:
        return self.cursor.prev()
