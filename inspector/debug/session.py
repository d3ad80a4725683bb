"""DebugSession: drive the engine one step at a time, record everything, travel back and forth.

    session = DebugSession(LLMEngine.from_pretrained())
    session.add("What is the capital of France?", SamplingParams(temperature=0), chat=True)
    result = session.run(until=[Preemption(), TextMatches("Paris")], max_steps=200)
    print(result.reason)             # which breakpoint stopped the run, and why
    session.prev()                   # time travel: the step before, as recorded
    session.trace.attention_row(seq_id, layer=3, head=0, query_pos=12)

add_batch() queues several prompts, all or none; fork() continues a sequence from any of its tokens
with others ("what if?"), sharing its KV blocks. Stepping runs the engine forward and records;
moving the cursor (seek, next, prev) only reads the trace. run_iter() is run() one step at a
time, for a caller that wants to do something between steps (draw the newest one, take a lock
per step, stop on a button). reset() aborts every request and starts an empty trace on the
same engine.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass

from inspector.debug.breakpoints import Breakpoint, Hit, checked_hits
from inspector.debug.cursor import Cursor
from inspector.record.recorder import CapturePolicy, Recorder
from inspector.trace.arguments import ArgumentError, flag, instance, items, optional_whole, shown, whole
from inspector.trace.model import StepRecord, Trace
from minillama import InvalidRequestError, LLMEngine, MinillamaError, ObserverError, SamplingParams


class RecordingStopped(MinillamaError, RuntimeError):
    """The session's recorder failed inside a step: the engine detached it (ObserverError) and
    finished the step, so the trace ends before that step. The session steps no further, since
    steps it could not record would be lost to the debugger; reset() starts a new trace."""


@dataclass
class RunResult:
    """How a run ended. When breakpoints stop it, every one that fires at that step is named,
    in the order given: a run goes on from the next step, so a breakpoint left unsaid there
    (a preemption in the step a sequence finished) would never be said at all."""

    steps: int  # engine steps run
    breakpoint: Breakpoint | None  # the first that stopped the run, if any
    reason: str | None  # what they all said, "; "-joined; or that a reset() ended the run (breakpoint None)
    finished: bool  # no request left to run
    seq_ids: tuple[int, ...] = ()  # the sequences their hits name, each once (a debugger shows the first)
    fired: tuple[Breakpoint, ...] = ()  # every breakpoint that fired at the last step, `breakpoint` first


class DebugSession:
    def __init__(self, engine: LLMEngine, policy: CapturePolicy | None = None):
        self.engine = engine
        self.recorder = Recorder(engine, policy)  # checks both arguments before it attaches
        engine.add_observer(self.recorder)
        self.cursor = Cursor(self.recorder.trace)
        self.stopped: str | None = None  # why stepping stopped, once the recorder failed (RecordingStopped)
        self.interrupted = False  # a Ctrl-C landed in a step or its record (_interrupted)
        # reset() bumps it: a run_iter started before sees it changed and ends, stepping none of
        # the new requests and leaving the new trace and cursor alone (see _run_steps).
        self._epoch = 0

    @property
    def trace(self) -> Trace:
        return self.recorder.trace

    # -- requests ------------------------------------------------------------------------------

    def add(self, prompt: str | list[int], params: SamplingParams | None = None, chat: bool = False) -> int:
        """Queue a request (raises InvalidRequestError for bad input); returns its sequence id."""
        return self.add_batch([prompt], params, chat)[0]

    def add_batch(self, prompts: Sequence[str | list[int]], params: SamplingParams | None = None,
                  chat: bool = False) -> list[int]:
        """Queue every prompt, or none: each is checked (and tokenized, once) before any is
        queued, and InvalidRequestError names the first bad one ("prompt 2: ..."). Returns the
        new sequence ids, in the order of `prompts`: a list, tuple or other iterable (read
        once). Refused (ArgumentError): one str, which would be read as one prompt per
        character (add() takes one prompt); a dict, read as its keys; a set, which has no order
        for the ids to follow."""
        prompts = items(prompts, "prompts", "prompts (each a str or a list of token ids)")
        flag(chat, "chat")
        params = SamplingParams() if params is None else params
        token_ids = []
        for i, prompt in enumerate(prompts):
            try:
                token_ids.append(self.engine.check_request(prompt, params, chat))
            except InvalidRequestError as error:
                raise InvalidRequestError(f"prompt {i + 1}: {error}" if len(prompts) > 1 else str(error)) from None
        seq_ids = []
        for prompt, ids in zip(prompts, token_ids):
            seq_id = self.engine.add_request(ids, params)  # token ids: checked again, not tokenized again
            text = prompt if isinstance(prompt, str) else None  # the recorder keeps the prompt as typed
            self.recorder.register(seq_id, chat=chat, prompt_text=text)
            seq_ids.append(seq_id)
        return seq_ids

    def fork(self, seq_id: int, num_tokens: int, forced_token_ids: list[int],
             params: SamplingParams | None = None) -> int:
        """Continue sequence `seq_id` from its first `num_tokens` tokens with `forced_token_ids`
        ("what if it had picked the other token?"; LLMEngine.fork). Returns the fork's id; the
        trace records the fork (its shared blocks and copy on write) and the new sequence.
        Raises InvalidRequestError, changing nothing, for a bad request."""
        return self.engine.fork(seq_id, num_tokens, forced_token_ids, params)

    def abort(self, seq_id: int) -> None:
        """Stop request `seq_id` (one that has finished, or that the engine has forgotten: nothing
        to do), and with a beam its whole search; ArgumentError for an id that is no integer >= 0."""
        whole(seq_id, "seq_id")
        record = self.trace.sequences.get(seq_id)
        beams = self._live_beams(record.group_id, seq_id) if record is not None and record.group_id is not None else []
        self.engine.abort(seq_id)
        stopped = [beam for beam in beams  # stopped with it (and forgotten, by the search's request id)
                   if (seq := self.engine.sequences.get(beam)) is None or seq.finish_reason == "abort"]
        # A beam already pruned or finished, still kept by its running search, stops the search
        # too: its abort is recorded all the same (it stays "pruned"), else the trace named the
        # search's request as the one aborted, and a replay, aborting that id, made the engine
        # forget every beam the run had kept (a later fork of one was refused).
        self.recorder.note_abort(seq_id, stops_search=bool(stopped))
        for beam in stopped:
            self.recorder.note_abort(beam)

    def _live_beams(self, group: int, seq_id: int) -> list[int]:
        """The other running beams of search `group` (none for a set of samples): any beam's id
        stops the whole search (LLMEngine.abort), and each of them ends "abort" too; the trace
        left them running forever (finish_reason None), though the run had finished."""
        live = []
        for other, record in self.trace.sequences.items():
            seq = self.engine.sequences.get(other)
            if (record.group_id == group and other != seq_id and record.finish_reason is None and seq is not None
                    and seq.beam_of is not None and not seq.is_finished):
                live.append(other)
        return live

    def reset(self) -> None:
        """Abort every request, forget every finished one, and start an empty trace. A
        run_iter still open ends at its next next(), running no step (its RunResult says so)."""
        self._epoch += 1
        for seq_id in list(self.engine.sequences):
            self.engine.abort(seq_id)
        self.recorder.clear()
        if self.recorder not in self.engine.observers:  # detached when it failed (RecordingStopped)
            self.engine.add_observer(self.recorder)
        self.stopped, self.interrupted = None, False
        self.cursor = Cursor(self.recorder.trace)

    # -- running -------------------------------------------------------------------------------

    def step(self) -> StepRecord | None:
        """Run one engine iteration and record it; the cursor moves to it. None when no
        request is left to run."""
        if not self._advance():
            return None
        return self.seek(-1)

    def run(self, until: Iterable[Breakpoint] | Breakpoint = (), max_steps: int | None = None) -> RunResult:
        """Step until a breakpoint fires (all are checked after each step; the result names
        every one that fired there, in the order given), no request is left, or max_steps
        steps have run (None: no limit); the cursor moves to the last step. `until`:
        breakpoint instances, in a list or any iterable, or a single one.
        ArgumentError, before any step, for anything else there or a max_steps that is not
        an integer >= 1."""
        steps = self.run_iter(until, max_steps)
        while True:
            try:
                next(steps)
            except StopIteration as end:
                return end.value

    def run_iter(self, until: Iterable[Breakpoint] | Breakpoint = (), max_steps: int | None = None
                 ) -> Generator[int, None, RunResult]:
        """run(), one step per next(): yields the index of each step that ran, and returns
        (StopIteration.value) the RunResult. The step at which a breakpoint fires is not
        yielded: the run ends right there. A caller may stop taking steps at any yield:
        closing the generator (or dropping it) ends the run, and the cursor moves to the last
        step, as it does when the run ends by itself. A reset() ends it too: its next next()
        runs no step and returns the RunResult of the steps it ran, with a reason saying so.

        Between yields the cursor stays where it was, and a step's record may still be
        completing: seek(index) completes it and moves there (a live view does so at each
        yield; a batch run does not, and keeps the recorder's overlap, see _advance). The
        arguments are checked as run() says, at this call, not at the first next()."""
        return self._run_steps(breakpoint_list(until), optional_whole(max_steps, "max_steps", minimum=1), self._epoch)

    def _run_steps(self, breakpoints: list[Breakpoint], max_steps: int | None,
                   epoch: int) -> Generator[int, None, RunResult]:
        """The run of run_iter, for the session as it was at `epoch`: once reset() has cleared
        it, the requests queued since are no part of this run, the trace it stepped is gone,
        and seeking the new, empty one would fail (NoSuchStep, printed as "Exception ignored"
        when a dropped generator is collected)."""
        steps = 0
        try:
            while (max_steps is None or steps < max_steps) and self._epoch == epoch and self._advance():
                steps += 1
                if breakpoints:  # they read the step's record: complete it now (self.trace does)
                    record = self.trace.steps[-1]
                    fired = [(bp, hits) for bp in breakpoints if (hits := checked_hits(bp, self.trace, record))]
                    if fired:
                        return self._stopped(steps, fired)
                yield self.recorder.num_steps - 1
            reason = None if self._epoch == epoch else f"the session was reset after {steps} step(s) of this run"
            return RunResult(steps, None, reason, not self.engine.has_unfinished())
        finally:
            # Not after a reset (the steps are gone), nor when a record was left half made (not
            # to be completed again).
            if steps and self._epoch == epoch and not self.interrupted:
                self.seek(-1)

    def _stopped(self, steps: int, fired: list[tuple[Breakpoint, list[Hit]]]) -> RunResult:
        """The result of a run that breakpoints stopped: `fired` holds each one that fired at
        its last step, with its hits, in the order the run was given them."""
        hits = [hit for _, bp_hits in fired for hit in bp_hits]
        seq_ids = tuple(dict.fromkeys(h.seq_id for h in hits if h.seq_id is not None))
        return RunResult(steps, fired[0][0], "; ".join(h.reason for h in hits), not self.engine.has_unfinished(),
                         seq_ids, tuple(bp for bp, _ in fired))

    def _advance(self) -> bool:
        """One engine iteration; False when nothing ran (no request left, or none could be
        scheduled). Without a breakpoint to check, a step's record is completed during the
        next step's forward, off the engine's critical path (see inspector/record/recorder.py)."""
        if self.stopped is not None:
            raise RecordingStopped(self.stopped)
        if not self.engine.has_unfinished():
            return False
        before = self.recorder.num_steps
        try:
            self.engine.step()
        except ObserverError as error:
            if self.recorder in self.engine.observers:  # another observer of the caller's: theirs to handle
                if self.recorder.num_steps > before:  # the step ran whole and was recorded: show it
                    self.seek(-1)  # as step() would have, not leave the cursor before it
                raise
            self.stopped = (f"the recorder failed during a step ({error.__cause__!r}) and stopped recording after "
                            f"{before} step(s); Reset starts a new trace")
            raise RecordingStopped(self.stopped) from error
        except BaseException as error:
            self._interrupted(error)
            raise
        return self.recorder.num_steps > before

    def _flush(self) -> None:
        """Complete the record of the step that has just ended (see seek)."""
        try:
            self.recorder.flush()
        except BaseException as error:
            self._interrupted(error)
            raise

    def _interrupted(self, error: BaseException) -> None:
        """A Ctrl-C (KeyboardInterrupt, or another exception that is no Exception) landing in a
        step or in its record's completion leaves that record half made: the next steps would
        be recorded after a damaged one, and the file saved from it would not load. Recording
        stops there, as when the recorder fails; an Exception goes on as it is."""
        if not isinstance(error, Exception) and self.stopped is None:
            self.interrupted = True
            self.stopped = (f"the run was interrupted ({type(error).__name__}) with {self.recorder.num_steps} step(s) "
                            "recorded, the last of which may be incomplete; recording stopped there. Reset starts a "
                            "new trace")

    # -- time travel ---------------------------------------------------------------------------

    def seek(self, index: int) -> StepRecord:
        """Go to step `index` (negative counts from the end). Like next(), it first completes
        the record of a step that has just ended, so the newest step can be reached."""
        self._flush()
        return self.cursor.seek(index)

    def next(self) -> StepRecord | None:
        self._flush()
        return self.cursor.next()

    def prev(self) -> StepRecord | None:
        return self.cursor.prev()


def breakpoint_list(until: object) -> list[Breakpoint]:
    """run()'s `until` as a list, read once: one Breakpoint, or an iterable of them. Anything
    else in it (a class given for an instance: Preemption, not Preemption()) would fail only at
    the first check, after a step: refused here, naming it."""
    if isinstance(until, Breakpoint):
        return [until]
    if isinstance(until, (str, bytes, bytearray)) or not isinstance(until, Iterable):
        raise ArgumentError(f"until must be a Breakpoint or a list of them, got {shown(until)}")
    breakpoints = list(until)
    for i, bp in enumerate(breakpoints):
        instance(bp, Breakpoint, f"until[{i}]")
    return breakpoints
