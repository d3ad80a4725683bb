"""Shared fixtures: tiny random-weight Llama models saved as Hugging Face directories, and the
embedded model (converted once per test session into a temporary cache)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

# Without a CUDA GPU the Triton kernels run on the CPU, through Triton's interpreter, in the
# tests marked requires_interpreter (tests/triton_support.py). triton.jit reads this when a
# kernel module is imported, so it is set here, before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tiny shapes that still cover what differs between Llama variants.
TINY_CONFIGS = {
    "gqa-tied-llama3": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope="llama3"),
    "mqa-untied-default": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False, rope="default"),
    "mha-untied-llama3": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rope="llama3"),
    "gqa-tied-default-hd32": dict(num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, rope="default", head_dim=32),
    "gqa-untied-linear": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, rope="linear"),
    "gqa-tied-dynamic": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope="dynamic"),
    # Biases on q/k/v/o and on gate/up/down (make_hf_model draws them: transformers starts them at 0).
    "gqa-untied-biases": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, rope="linear",
                              attention_bias=True, mlp_bias=True),
}
# config.json's rope_scaling for each kind (the default has none).
ROPE_SCALING = {
    "default": None,
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
}


def cuda_fp32_engine(hf_model, attention: str = "sdpa"):
    """An fp32 engine on CUDA over `hf_model`'s weights (64 blocks of 16) with the given attention
    backend, for tests that compare with transformers or with fresh requests exactly. It decodes
    eagerly: the one graph-safe backend, Triton, computes in 16 bits only (cuda_bf16_engine)."""
    from minillama import EngineConfig, LLMEngine

    return LLMEngine.from_hf_model(hf_model, EngineConfig(device="cuda", dtype="float32", attention=attention,
                                                          num_kv_blocks=64, block_size=16))


def cuda_bf16_engine(hf_model, eager: bool, async_scheduling: str = "auto"):
    """A bf16 engine on CUDA with Triton attention over `hf_model`'s weights (64 blocks of 16, at
    most 8 sequences): its decode steps replay CUDA graphs unless `eager`. Tests run one scenario
    on both and require the same tokens: a replayed graph must compute what eager code does."""
    from minillama import EngineConfig, LLMEngine

    engine = LLMEngine.from_hf_model(hf_model, EngineConfig(device="cuda", dtype="bfloat16", attention="triton",
                                                            enforce_eager=eager, num_kv_blocks=64, block_size=16,
                                                            max_num_seqs=8, async_scheduling=async_scheduling))
    assert bool(engine.runner.graphs) == (not eager), "decode should run through CUDA graphs"
    return engine


def make_hf_model(name: str, seed: int = 0, vocab_size: int = 256, init_std: float = 0.1):
    """A random transformers.LlamaForCausalLM of the named tiny shape (no EOS, so generation
    runs to max_tokens), its biases (if any) drawn too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = dict(TINY_CONFIGS[name])
    rope = spec.pop("rope")
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        max_position_embeddings=512, rope_theta=500000.0 if rope == "llama3" else 10000.0,
        rope_scaling=ROPE_SCALING[rope], bos_token_id=None, eos_token_id=None, pad_token_id=None,
        initializer_range=init_std, **spec,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    draw_biases(model)
    model.generation_config.eos_token_id = None
    return model


def draw_biases(model: torch.nn.Module, std: float = 0.5) -> None:
    """Every bias of `model` (attention_bias, mlp_bias) drawn from N(0, std): transformers starts
    them at zero, where an engine that dropped them would match. Draws nothing from a model
    without biases, so such a model's weights are what its seed made before."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, std)


def pytest_addoption(parser):
    parser.addoption("--async-scheduling", default="auto", choices=["auto", "off"],
                     help="off: every engine whose config says auto steps in order (run the CUDA tests both ways)")


@pytest.fixture(autouse=True)
def _async_scheduling_option(request, monkeypatch):
    """With --async-scheduling off, "auto" means in order on CUDA too, for every engine a test makes."""
    if request.config.getoption("--async-scheduling") == "off":
        from minillama.config import EngineConfig

        monkeypatch.setattr(EngineConfig, "resolved_async_scheduling", lambda self, device: self.async_scheduling == "on")


@pytest.fixture(autouse=True)
def _collector_as_found():
    """A command called in-process (`python -m inspector`'s main) tunes the garbage collector,
    as its own process would (minillama/cli/gc_heap.py): each test starts with it as found."""
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """name -> (directory, HF model) for each tiny config, saved once per session."""
    made: dict[str, tuple[Path, object]] = {}

    def get(name: str):
        if name not in made:
            model = make_hf_model(name)
            path = tmp_path_factory.mktemp(name)
            model.save_pretrained(path)
            made[name] = (path, model)
        return made[name]

    return get


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded model as a Hugging Face directory (converted on first use, then cached)."""
    from minillama.loader import embedded_model_dir

    return embedded_model_dir()

