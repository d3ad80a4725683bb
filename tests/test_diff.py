"""inspector.diff_traces and `python -m inspector diff`: a planted divergence found at its token
and step, with both sides' top-k; requests matched across runs; exit status 0, 1 and 2."""

from __future__ import annotations

import copy

import pytest
from tiny_model import write_tiny_model

from inspector import DebugSession, diff_traces, format_diff, save
from inspector.__main__ import main
from minillama import EngineConfig, LLMEngine, SamplingParams


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny-model run of two greedy requests and a seeded one, and its file."""
    tiny = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    session = DebugSession(LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", num_kv_blocks=32, block_size=4)))
    session.add_batch(["hello there", "abc"], SamplingParams(temperature=0.0, max_tokens=8))
    session.add("seeded", SamplingParams(temperature=0.9, seed=3, max_tokens=8))
    session.run()
    path = tmp_path_factory.mktemp("run") / "a.mltrace"
    save(session.trace, path)
    return session.trace, path


def planted(trace, seq_id: int, position: int, token_id: int):
    """A copy of `trace` in which sequence `seq_id` drew `token_id` at output `position`."""
    other = copy.deepcopy(trace)
    seq = other.sequences[seq_id]
    seq.output_ids[position] = token_id
    other.steps[seq.token_steps[position]].token_of(seq_id).token_id = token_id
    return other


def test_the_same_run_is_equal_everywhere(run):
    trace, _ = run
    diff = diff_traces(trace, trace)
    assert diff.equal and diff.same_weights and diff.settings == []
    assert [r.label for r in diff.requests] == ["request 0", "request 1", "request 2"]
    for r in diff.requests:
        assert r.divergence is None and not r.schedule_differs and len(r.deltas) == len(r.tokens_a)
        assert all(d.max_abs_delta_logp == 0 and d.delta_entropy == 0 for d in r.deltas)
    text = format_diff(diff)
    assert "requests: 3 equal, 0 different" in text and "schedules: the same for every request" in text


def test_a_planted_divergence_is_found_at_its_token_and_step(run):
    trace, _ = run
    seq = trace.sequences[1]
    step = seq.token_steps[3]
    other_token = (seq.output_ids[3] + 1) % trace.model.vocab_size
    diff = diff_traces(trace, planted(trace, 1, 3, other_token))
    assert not diff.equal
    r = diff.requests[1]
    assert (r.equal, r.divergence.position, r.divergence.step_a, r.divergence.step_b) == (False, 3, step, step)
    assert (r.divergence.token_a, r.divergence.token_b) == (seq.output_ids[3], other_token)
    summary = trace.steps[step].token_of(1).logits
    assert [t.token_id for t in r.divergence.top_a] == summary.top_ids == [t.token_id for t in r.divergence.top_b]
    assert [d.position for d in r.deltas] == [0, 1, 2, 3]  # compared up to the divergence, not past it
    assert all(other.equal for other in diff.requests if other is not r)
    text = format_diff(diff)
    assert f"request 1 (#1 / #1): DIFFERENT from token 3 (step {step} / step {step})" in text
    assert "top a: " in text and "requests: 2 equal, 1 different" in text


def test_a_request_missing_from_one_run_differs(run):
    trace, _ = run
    fewer = copy.deepcopy(trace)
    del fewer.sequences[2]
    diff = diff_traces(trace, fewer)
    missing = diff.requests[2]
    assert not diff.equal and (missing.seq_a, missing.seq_b, missing.schedule_b) == (2, None, None)
    assert "request 2 (#2 / #-): only in a" in format_diff(diff)


def test_other_requests_in_the_same_places_are_not_compared(run):
    trace, _ = run
    other = copy.deepcopy(trace)
    other.sequences[0].prompt_ids[0] += 1
    diff = diff_traces(trace, other)
    assert not diff.requests[0].same_prompt and not diff.requests[0].equal and diff.requests[1].equal
    assert "request 0 (#0 / #0): NOT THE SAME REQUEST: the prompts differ ('hello there' in a)" in format_diff(diff)


def test_exit_status_0_when_equal_1_when_not_2_on_an_error(run, tmp_path, capsys):
    trace, path = run
    assert main(["diff", str(path), str(path)]) == 0
    assert "requests: 3 equal" in capsys.readouterr().out
    other = tmp_path / "b.mltrace"
    save(planted(trace, 0, 5, (trace.sequences[0].output_ids[5] + 7) % trace.model.vocab_size), other)
    assert main(["diff", str(path), str(other), "--tokens"]) == 1
    out = capsys.readouterr().out
    assert "request 0 (#0 / #0): DIFFERENT from token 5" in out and out.count("max|dlogp|") == 3  # --tokens: all three
    assert main(["diff", str(path), str(tmp_path / "missing.mltrace")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
