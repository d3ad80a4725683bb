"""A recording that grows past what a trace file may hold says so at the step that passes the
limit (Recorder.file_limit, inspector/trace/file_meter.py), not first when it is saved; the run
goes on and keeps every step. The web UI shows it in the status line from that step on.

Counted, not timed: the meter's counts equal, at every step of real recordings of each kind,
those of the file save() writes; then each limit is set to the size a recording has at one of
its steps: at the limit nothing is said, one over the limit is named, and from the next step
that adds to the size on, every step says it while the recording goes on to its end.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_hf_model
from safetensors.torch import load as load_safetensors
from tiny_model import write_tiny_model

from inspector import CapturePolicy, DebugSession, Trace, save
from inspector.trace.file_meter import FileMeter
from inspector.trace.json_limits import scan
from inspector.trace.model import TraceTooLarge
from minillama import EngineConfig, LLMEngine, SamplingParams
from webui.limits import Limits
from webui.render import status_html
from webui.sessions import SessionManager

GREEDY = SamplingParams(temperature=0, max_tokens=10)


def engine(**config: int) -> LLMEngine:
    """The tiny random model in a 14-block pool of 4-token blocks: four prompts preempt."""
    settings = dict(device="cpu", dtype="float32", num_kv_blocks=14, block_size=4) | config
    return LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"), EngineConfig(**settings))


def prompts() -> list[list[int]]:
    """Four prompts sharing a 12-token prefix (prefix-cache hits)."""
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 256, (12,), generator=generator).tolist()
    return [prefix + torch.randint(0, 256, (n,), generator=generator).tolist() for n in (3, 5, 2, 4)]


def plain(session: DebugSession) -> Iterator[None]:
    """Four greedy requests, chunked and preempted, stepped one step at a time."""
    for prompt in prompts():
        session.add(prompt, GREEDY)
    while session.step() is not None:
        yield


def forks_samples_beams(session: DebugSession) -> Iterator[None]:
    """A request forked by the user, then samples (n = 2) and a beam search (width 3)."""
    parent = session.add(prompts()[0], GREEDY)
    for _ in range(3):
        session.step()
        yield
    session.fork(parent, session.engine.request(parent).num_prompt_tokens + 1, [7])
    session.add(prompts()[1][:6], SamplingParams(temperature=1.0, seed=3, max_tokens=5, n=2))
    session.add(prompts()[2][:5], SamplingParams(beam_width=3, max_tokens=6))
    while session.step() is not None:
        yield


RUNS = {
    "plain": (plain, CapturePolicy(attention_requests=(0, 2)), dict(max_num_batched_tokens=8)),
    "logit lens": (plain, CapturePolicy(attention_requests=None, logit_lens=True, top_k=3), {}),
    "forks, samples, beams": (forks_samples_beams, CapturePolicy(), dict(num_kv_blocks=32)),
}


def recorded(run: str) -> Iterator[DebugSession]:
    """A fresh recording of `run`, yielded after each of its steps (the same every time: greedy
    or seeded)."""
    steps, policy, config = RUNS[run]
    session = DebugSession(engine(**config), policy)
    for _ in steps(session):
        yield session


def written(trace: Trace, path: Path) -> dict[str, int]:
    """What the file save() writes holds: trace.json's elements and bytes, the tensors."""
    save(trace, path)
    with zipfile.ZipFile(path) as zf:
        raw_json, tensors = zf.read("trace.json"), load_safetensors(zf.read("tensors.safetensors"))
    return {"elements": scan(raw_json)[1], "json_bytes": len(raw_json), "tensors": len(tensors),
            "tensor_bytes": sum(t.nbytes for t in tensors.values())}


@pytest.mark.parametrize("run", RUNS)
def test_the_meter_counts_what_save_writes_at_every_step(run, tmp_path):
    meter, steps = FileMeter(), 0
    for session in recorded(run):
        size = meter.measure(session.trace)
        counted = {name: getattr(size, name) for name in ("elements", "json_bytes", "tensors", "tensor_bytes")}
        assert counted == written(session.trace, tmp_path / "run.mltrace"), f"step {len(session.trace.steps) - 1}"
        assert size.unpacked_bound >= sum(info.file_size for info in zipfile.ZipFile(tmp_path / "run.mltrace").infolist())
        steps += 1
    assert steps > 10


def _size(name: str) -> Callable[[Trace], int]:
    meter_counts = {"MAX_JSON_ELEMENTS": "elements", "MAX_JSON_BYTES": "json_bytes", "MAX_TENSORS": "tensors"}
    if name in meter_counts:
        return lambda trace: getattr(FileMeter().measure(trace), meter_counts[name])
    return {
        "MAX_TIMELINE_CELLS": lambda trace: len(trace.sequences) * len(trace.steps),
        "MAX_TOKENS": lambda trace: sum(len(s.prompt_ids) + len(s.output_ids) for s in trace.sequences.values()),
        "MAX_STORE_POSITIONS": lambda trace: max((s.length for s in trace.attention.values()), default=0),
    }[name]


# (the module holding the limit, its name, what the message says past it)
LIMITS = [
    ("inspector.trace.tracefile", "MAX_JSON_ELEMENTS", "trace.json holds [\\d,]+ elements, over the limit of"),
    ("inspector.trace.tracefile", "MAX_JSON_BYTES", "its trace.json would unpack to [\\d,]+ bytes, over the limit of"),
    ("inspector.trace.tensor_member", "MAX_TENSORS", "tensors.safetensors holds [\\d,]+ tensors, over the limit of"),
    ("inspector.trace.validate", "MAX_TIMELINE_CELLS", "timeline cells, over the limit of"),
    ("inspector.trace.validate", "MAX_TOKENS", "tokens, over the limit of"),
    ("inspector.trace.validate_arrays", "MAX_STORE_POSITIONS", "positions, over the limit of"),
]


@pytest.mark.parametrize(("module", "limit", "message"), LIMITS, ids=[limit[1] for limit in LIMITS])
def test_a_recording_says_it_passed_a_limit_at_the_step_one_over_and_goes_on(monkeypatch, tmp_path, module, limit,
                                                                            message):
    """Half way through a recording the limit is set to its size then (the bytes of two
    recordings differ: their timings are other numbers), and the recording goes on."""
    size_of, steps, at, said = _size(limit), 0, None, []
    for session in recorded("plain"):
        steps += 1
        if at is None and steps == 12:
            at = size_of(session.trace)
            monkeypatch.setattr(f"{module}.{limit}", at)  # exactly at the limit: nothing said
            assert session.recorder.file_limit() is None
            monkeypatch.setattr(f"{module}.{limit}", at - 1)  # one over (a meter counting anew)
            assert re.search(f"{message} {at - 1:,}", FileMeter().over_limit(session.trace) or "")
            monkeypatch.setattr(f"{module}.{limit}", at)
        elif at is not None:
            said.append((size_of(session.trace), session.recorder.file_limit()))
    assert at is not None and len(session.trace.steps) == steps  # the run went on to its end, every step kept
    for size, words in said:
        if size <= at:  # still at the limit (a step that added none of it): nothing to say
            assert words is None, f"{size} <= {at}, yet {words}"
        else:  # one over, or more: said from that step on, naming the limit
            assert words is not None and re.search(f"{message} {at:,}", words), words
    assert said[-1][1] is not None
    with pytest.raises(TraceTooLarge, match="over the limit of"):  # and save() refuses it, as said
        save(session.trace, tmp_path / "run.mltrace")


def test_the_status_line_says_a_live_run_passed_a_limit_and_the_run_goes_on(monkeypatch, tmp_path):
    """The web UI: from the step that passes a limit, every render's status line names it and
    what to do; Step still records, and a session under the limit says nothing."""
    base = LLMEngine.from_pretrained(write_tiny_model(tmp_path / "tiny"), EngineConfig(device="cpu"))  # with a tokenizer
    manager = SessionManager(base, Limits())
    session, other = manager.open_tab("client"), manager.open_tab("other")
    for tab in (session, other):
        manager.add_prompts(tab, ["hi"], GREEDY, chat=False)
    assert manager.step(session) and "trace file may hold" not in status_html(session)
    elements = FileMeter().measure(session.trace).elements
    monkeypatch.setattr("inspector.trace.tracefile.MAX_JSON_ELEMENTS", elements)
    assert "trace file may hold" not in status_html(session)  # exactly at the limit
    assert manager.step(session)  # one over
    shown = status_html(session)
    assert f"over the limit of {elements:,}" in shown and "Save trace and Share link will refuse it" in shown
    assert "Reset and record fewer steps or requests" in shown
    assert manager.step(session) and len(session.trace.steps) == 3  # it goes on, every step kept
    assert f"over the limit of {elements:,}" in status_html(session)
    assert manager.step(other) and "trace file may hold" not in status_html(other)  # its own trace: smaller


def test_a_count_encodes_each_step_once_and_no_token_id_by_itself(monkeypatch):
    """What a count costs grows with the run only through what changed: a step is encoded when
    the meter first sees it, never again (a sum over every step at every count made a 400-step
    run of 32 requests spend 13 s in the meter), and a list of token ids is copied whole, not
    encoded id by id: the rest of the trace (its sequences, whose token lists grow) costs the
    same encode() calls at every decode step."""
    import dataclasses

    from inspector.trace import codec, file_meter

    measured, calls = [], [0]
    real_measured, real_encode = file_meter._measured, codec.encode

    def counting_measured(value, path):
        measured.append(path)
        return real_measured(value, path)

    def counting_encode(value, tensors, path):
        calls[0] += 1
        return real_encode(value, tensors, path)

    monkeypatch.setattr(file_meter, "_measured", counting_measured)
    session = DebugSession(engine(num_kv_blocks=64), CapturePolicy(attention_requests=None))
    for prompt in prompts():
        session.add(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    rest_calls = []  # encode() calls for the trace less its steps and events, at each decode step
    while (step := session.step()) is not None:
        assert session.recorder.file_limit() is None
        if step.schedule.phase == "decode" and len(step.schedule.scheduled) == len(prompts()):
            monkeypatch.setattr(codec, "encode", counting_encode)  # encode() recurses through the module's name
            calls[0] = 0
            codec.encode(dataclasses.replace(session.trace, steps=[], events=[]), {}, "trace")
            monkeypatch.setattr(codec, "encode", real_encode)
            rest_calls.append(calls[0])
    trace = session.trace  # each step and each event once, in order
    assert [path for path in measured if path.startswith("trace.steps.")] == [
        f"trace.steps.{i}" for i in range(len(trace.steps))]
    assert [path for path in measured if path.startswith("trace.events.")] == [
        f"trace.events.{i}" for i in range(len(trace.events))]
    assert len(rest_calls) >= 8 and len(set(rest_calls)) == 1, rest_calls
