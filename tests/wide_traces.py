"""Traces made in memory, wide and valid: many small sequences over few steps, the shape a
hostile file uses to make loading and rendering cost the most per byte (no tests here).

wide_trace(n, steps) builds, without a model or an engine, a trace of `n` requests of one
prompt token and one output token, spread evenly over `steps` steps: each step prefills its
share (one block each; they run) and samples their tokens, which finish them. It
passes validate_trace, so a test can then break one field of it, or save it and count what
loading does.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch

from inspector.trace.model import (
    EngineInfo,
    Event,
    ForkRecord,
    KVSnapshot,
    LogitsSummary,
    ModelInfo,
    ScheduledRecord,
    ScheduleRecord,
    SequenceRecord,
    StepRecord,
    Timings,
    TokenRecord,
    Trace,
    WaitRecord,
)

PARAMS = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 1, "seed": None, "ignore_eos": False,
          "stop_token_ids": []}


def wide_trace(num_sequences: int, num_steps: int, logits: bool = False, waits: bool = False) -> Trace:
    """`num_sequences` one-token requests, each prefilled and finished in one of `num_steps`
    steps (sequence i in step i * num_steps // num_sequences). logits: each token carries a
    top-1 logits summary. waits: the sequences of later steps wait in each step, each with a
    wait record (behind the queue's head), as a real run's queue does."""
    per_step = -(-num_sequences // num_steps)
    trace = Trace(
        model=ModelInfo(name="wide", num_layers=1, num_heads=1, num_kv_heads=1, head_dim=4, vocab_size=256,
                        dtype="float32"),
        engine=EngineInfo(device="cpu", attention="reference", block_size=1, num_blocks=per_step,
                          max_num_seqs=per_step, max_num_batched_tokens=per_step, max_model_len=2,
                          prefix_caching=False),
    )
    for seq_id in range(num_sequences):
        step = seq_id // per_step
        trace.sequences[seq_id] = SequenceRecord(
            seq_id=seq_id, prompt_ids=[seq_id % 256], prompt_text="a", chat=False, params=dict(PARAMS),
            traced=False, added_step=step, prompt_tokens=["a"], output_ids=[7], token_steps=[step], text="b",
            finish_reason="length")
        trace.events.append(Event(step=step, kind="add", message=f"request {seq_id} added", seq_id=seq_id))
    for index in range(num_steps):
        ids = list(range(index * per_step, min((index + 1) * per_step, num_sequences)))
        waiting = list(range(ids[-1] + 1, num_sequences)) if waits and ids else []
        causes = [WaitRecord(s, "behind", head=waiting[0]) for s in waiting]
        summary = LogitsSummary([7], ["b"], [1.0], [1.0], 0.0, 1.0, 0) if logits else None
        trace.steps.append(StepRecord(
            index=index, engine_step=index,
            schedule=ScheduleRecord("prefill", [ScheduledRecord(s, 0, 1, 0, True, [i]) for i, s in enumerate(ids)],
                                    [], waiting, ids, waits=causes),  # what it schedules runs
            tokens=[TokenRecord(s, 7, "b", "length", summary) for s in ids],
            kv=_empty_pool(per_step),
            timings=Timings(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), attention_seqs=[]))
    return trace


def _empty_pool(num_blocks: int) -> KVSnapshot:
    """The pool at a step's end: every sequence finished, so every block is free and none cached."""
    ints, longs = torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int64)
    return KVSnapshot(num_blocks=num_blocks, num_free=num_blocks, num_cached_free=0, cached_free_listed=True,
                      block_ids=ints, ref_count=ints.clone(), fill=ints.clone(), cached=torch.zeros(0, dtype=torch.bool),
                      hit=torch.zeros(0, dtype=torch.bool), table_seq_ids=longs,
                      table_offsets=torch.zeros(1, dtype=torch.int64), table_blocks=ints.clone())


def fork_chain(depth: int, cause: str = "sample") -> Trace:
    """A request whose first token was forked into a sample (cause "sample") or a beam ("beam"),
    that one's into another, and so on `depth` times, all in step 0: a lineage `depth` deep in
    one step (each fork's prompt is its parent's, so the tokens grow by one a fork, not by the
    depth)."""
    trace = wide_trace(1, 1)
    step = trace.steps[0]
    for child in range(1, depth + 1):
        fork = ForkRecord(child_id=child, parent_id=child - 1, position=1, forced_ids=[7], forced_texts=["b"],
                          cause=cause, prefix="shared", shared_blocks=[])
        trace.sequences[child] = dataclasses.replace(
            trace.sequences[0], seq_id=child, parent_id=child - 1, fork_position=1, fork_cause=cause,
            params=dict(PARAMS))
        trace.events += [Event(step=0, kind="add", message=f"request {child} added", seq_id=child),
                         Event(step=0, kind="fork", message=f"#{child} forked", seq_id=child, fork=fork)]
        step.tokens.append(TokenRecord(child, 7, "b", "length", None))
    return trace


def python_calls(work: Callable[[], object]) -> int:
    """How many Python and C function calls `work()` makes (sys.setprofile): a cost that can be
    compared across sizes, where a time on a shared machine cannot."""
    count = 0

    def profile(frame, event, arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        nonlocal count
        count += event in ("call", "c_call")

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count
