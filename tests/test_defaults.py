"""Each default is written once, in its dataclass: a command line given no flag builds the
library's own EngineConfig and CapturePolicy (its sampling differs on purpose, in one place:
minillama/cli/flags.py), and the web UI starts from the library's defaults except where
webui/defaults.py says otherwise."""

from __future__ import annotations

import dataclasses

from tiny_model import write_tiny_model

import inspector.__main__
import minillama.__main__
from inspector import CapturePolicy
from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.cli import engine_config_from_args, sampling_params_from_args
from webui import Limits, SessionManager, defaults
from webui.sessions import CaptureSettings, EngineSettings


def test_no_flag_gives_the_library_engine_and_greedy_sampling():
    args = minillama.__main__.build_parser().parse_args(["--prompt", "hi"])
    assert engine_config_from_args(args) == EngineConfig()
    assert sampling_params_from_args(args) == SamplingParams(temperature=0.0, max_tokens=128)


def test_every_engine_config_field_has_a_flag():
    dests = {action.dest for action in minillama.__main__.build_parser()._actions}
    assert {field.name for field in dataclasses.fields(EngineConfig)} <= dests


def test_no_capture_flag_gives_the_recorder_defaults():
    args = inspector.__main__.build_parser().parse_args(["record", "--prompt", "hi", "-o", "run.mltrace"])
    assert inspector.__main__.capture_policy_from_args(args) == CapturePolicy()
    given = inspector.__main__.build_parser().parse_args(
        ["record", "--prompt", "hi", "-o", "run.mltrace", "--no-attention", "--attention-seqs", "2", "--logits-top-k",
         "3", "--logit-lens", "--budget-mb", "0.5"])
    assert inspector.__main__.capture_policy_from_args(given) == CapturePolicy(
        attention=False, attention_requests=(2,), top_k=3, logit_lens=True, memory_budget=2**19)


def test_a_web_ui_session_starts_from_the_web_ui_defaults(tmp_path):
    base = LLMEngine.from_pretrained(write_tiny_model(tmp_path / "tiny"), EngineConfig(device="cpu", num_kv_blocks=1))
    limits = Limits()
    manager = SessionManager(base, limits)
    session = manager.open_tab("client")
    manager.reset(session, EngineSettings(), CaptureSettings())
    config = session.debug.engine.config
    ui = defaults.ENGINE
    assert (config.num_kv_blocks, config.block_size, config.max_num_seqs, config.max_num_batched_tokens,
            config.enable_prefix_caching) == (ui.num_kv_blocks, ui.block_size, ui.max_num_seqs,
                                              ui.max_num_batched_tokens, ui.enable_prefix_caching)
    # Traced requests are the web UI's own choice; the rest of the capture is the recorder's default.
    assert session.debug.recorder.policy == CapturePolicy(
        attention_requests=None, memory_budget=int(limits.trace_budget_mb * 2**20))


def test_the_batch_budgets_default_to_the_devices(tmp_path):
    """A GPU serves 256 sequences and 16,384-token prefill steps unless told otherwise (a decode
    step reads the weights once, whatever the batch); a CPU 64 and 4,096. Given values stay."""
    import torch

    from minillama.config import BATCH_DEFAULTS

    assert (EngineConfig().max_num_seqs, EngineConfig().max_num_batched_tokens) == (None, None)
    for device, budgets in (("cpu", (64, 4096)), ("cuda", (256, 16384))):
        resolved = EngineConfig().for_device(torch.device(device))
        assert (resolved.max_num_seqs, resolved.max_num_batched_tokens) == budgets == BATCH_DEFAULTS[device]
    given = EngineConfig(max_num_seqs=8, max_num_batched_tokens=512).for_device(torch.device("cuda"))
    assert (given.max_num_seqs, given.max_num_batched_tokens) == (8, 512)
    engine = LLMEngine.from_pretrained(write_tiny_model(tmp_path), EngineConfig(device="cpu", num_kv_blocks=16))
    assert (engine.config.max_num_seqs, engine.scheduler.max_num_seqs, engine.scheduler.max_num_batched_tokens) == (
        64, 64, 4096)
