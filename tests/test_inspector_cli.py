"""python -m inspector: record, show, export-chrome, on the embedded model."""

from __future__ import annotations

import json

import pytest

from inspector import load
from inspector.__main__ import main
from inspector.trace.export_text import format_overview, format_step

pytestmark = pytest.mark.slow

PROMPTS = ["--prompt", "What is the capital of France?", "--prompt", "Write a haiku about autumn."]


def test_record_show_and_export(embedded_dir, tmp_path, capsys):
    path = tmp_path / "run.mltrace"
    args = ["record", "--model", str(embedded_dir), "--chat", *PROMPTS, "--kv-blocks", "12", "--block-size", "8",
            "--max-tokens", "8", "--attention-seqs", "1", "--logits-top-k", "3", "-o", str(path)]
    assert main(args) == 0
    assert "all requests finished" in capsys.readouterr().out
    trace = load(path)
    first, second = trace.sequences
    assert trace.engine.num_blocks == 12 and list(trace.attention) == [second]
    assert all(len(t.logits.top_ids) == 3 for s in trace.steps for t in s.tokens)
    assert trace.sequences[first].chat and trace.sequences[first].text.startswith("The capital of France")

    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct" in out and f"attention traced for [{second}]" in out

    assert main(["show", str(path), "--step", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"step 2 of {len(trace.steps)}") and "top:" in out and "KV cache:" in out

    chrome = tmp_path / "timings.json"
    assert main(["export-chrome", str(path), "-o", str(chrome)]) == 0
    assert len(json.loads(chrome.read_text())["traceEvents"]) > len(trace.steps)

    # A trace's strings come from a file: a control character never reaches the terminal raw.
    trace.model.name = "\x1b]0;owned\x07\x1b[2J"
    trace.events[0].message = "\x1b[31mred"
    for text in (format_overview(trace), format_step(trace, 0)):
        assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07" in format_overview(trace)


def test_record_without_attention_and_with_a_tiny_budget(embedded_dir, tmp_path, capsys):
    path = tmp_path / "run.mltrace"
    args = ["record", "--model", str(embedded_dir), *PROMPTS, "--max-tokens", "4", "--no-attention",
            "--budget-mb", "0.0001", "-o", str(path)]
    assert main(args) == 0
    trace = load(path)
    assert trace.attention == {} and trace.dropped_from("logits") == 0
    assert "logits no longer recorded from step 0" in capsys.readouterr().out


def test_a_recording_past_a_trace_files_limit_stops_there_and_says_so(embedded_dir, tmp_path, capsys, monkeypatch):
    """A run a trace file could not hold was refused by save() only once it had finished. It now
    stops at a check (about once a second: here at every step) past the limit, writes nothing,
    and says which limit and by which step, in one line (exit status 2)."""
    import inspector.__main__ as cli

    monkeypatch.setattr(cli, "FILE_CHECK_EVERY_S", 0.0)
    monkeypatch.setattr("inspector.trace.validate.MAX_TIMELINE_CELLS", 2 * 5)  # 2 prompts x 5 steps
    path = tmp_path / "run.mltrace"
    args = ["record", "--model", str(embedded_dir), *PROMPTS, "--max-tokens", "40", "--ignore-eos", "--no-attention",
            "-o", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped at step 5, nothing written" in err and "timeline cells" in err, err
    assert "--max-steps below 5" in err and not path.exists()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    """One line each (tests/test_cli_errors.py has the full table)."""
    assert main(["show", str(tmp_path / "missing.mltrace")]) == 2
    assert capsys.readouterr().err.endswith("does not exist\n")
    bad = tmp_path / "bad.mltrace"
    bad.write_text("not a trace")
    assert main(["export-chrome", str(bad), "-o", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert "not a .mltrace file" in err and err.count("\n") == 1


def test_a_step_of_a_trace_with_none_is_refused_in_words(tmp_path, capsys):
    """A trace saved before any step: "--step 0: the trace has steps 0 to -1" read as a bug."""
    from conftest import make_hf_model

    from inspector import DebugSession, save
    from minillama import EngineConfig, LLMEngine

    engine = LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"), EngineConfig(device="cpu", num_kv_blocks=4))
    path = tmp_path / "empty.mltrace"
    save(DebugSession(engine).trace, path)
    assert main(["show", str(path), "--step", "0"]) == 2
    assert capsys.readouterr().err.endswith("--step 0: the trace has no step\n")
