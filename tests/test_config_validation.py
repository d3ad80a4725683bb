"""Every field of the model config (config.json) and of EngineConfig is checked up front: a bad
value raises ModelLoadError / ConfigError naming the field and the value, never a torch or
huggingface_hub traceback from deep inside the model's construction.

The bad values are generated for every field from its kind (a size, a positive number, a flag),
so a field added later without a check is caught by adding it to the tables.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from tiny_model import TINY, write_tiny_model

from minillama import EngineConfig, LLMEngine, ModelConfig, ModelLoadError, SamplingParams
from minillama.errors import ConfigError

VALID = dict(TINY, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 32.0, "beta_slow": 1.0,
        "attention_factor": 1.1, "mscale": 1.0, "mscale_all_dim": 1.0}
SIZES = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "head_dim", "max_position_embeddings"]
OPTIONAL = {"num_key_value_heads", "head_dim", "max_position_embeddings"}  # null: the default
POSITIVE = ["rms_norm_eps", "rope_theta"]


def bad_sizes(valid: int) -> dict[str, object]:
    """Every way a size can be wrong, made from a valid one."""
    return {"zero": 0, "minus-one": -1, "negative": -valid, "negative-1280": -1280, "true": True, "false": False,
            "fraction": valid + 0.5, "string": str(valid), "list": [valid], "object": {"value": valid},
            "nan": math.nan, "inf": math.inf}


def bad_positives(valid: float) -> dict[str, object]:
    return {"zero": 0, "negative": -valid, "nan": math.nan, "inf": math.inf, "minus-inf": -math.inf,
            "true": True, "string": str(valid), "list": [valid]}


def cases(fields: list[str], make, source: dict) -> list:
    return [pytest.param(f, v, id=f"{f}-{kind}") for f in fields for kind, v in make(source[f]).items()]


def refused(raw: dict, field: str, value: object) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(field)) as info:
        ModelConfig.from_dict(raw)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize("field, value", cases(SIZES, bad_sizes, VALID))
def test_a_bad_size_is_refused_naming_field_and_value(field, value):
    refused({**VALID, field: value}, field, value)


@pytest.mark.parametrize("field, value", cases(["sliding_window", "attention_chunk_size"], bad_sizes,
                                               {"sliding_window": 64, "attention_chunk_size": 64}))
def test_a_bad_attention_window_is_refused(field, value):
    refused({**VALID, field: value}, field, value)


@pytest.mark.parametrize("field, value", cases(POSITIVE, bad_positives, VALID))
def test_a_bad_positive_number_is_refused(field, value):
    refused({**VALID, field: value}, field, value)


@pytest.mark.parametrize("field, value", cases(["original_max_position_embeddings"], bad_sizes, LLAMA3)
                         + cases(["factor", "low_freq_factor", "high_freq_factor"], bad_positives, LLAMA3))
def test_a_bad_rope_scaling_field_is_refused(field, value):
    refused({**VALID, "rope_scaling": {**LLAMA3, field: value}}, field, value)


@pytest.mark.parametrize("field, value", cases(["original_max_position_embeddings"], bad_sizes, YARN)
                         + cases(["factor", "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim"],
                                 bad_positives, YARN))
def test_a_bad_yarn_field_is_refused(field, value):
    scaling = {**YARN, field: value}
    if field in ("mscale", "mscale_all_dim"):  # read only where no attention_factor is given
        del scaling["attention_factor"]
        if value == 0:  # transformers reads a 0 here as not set, and so does the loader
            assert ModelConfig.from_dict({**VALID, "rope_scaling": scaling}).rope_scaling.attention_factor > 1
            return
    refused({**VALID, "rope_scaling": scaling}, field, value)


def test_yarn_refuses_a_missing_factor_reversed_betas_and_a_truncate_that_is_not_a_flag():
    for changes, message in [({"factor": None}, "has no factor"),
                             ({"beta_fast": 1.0, "beta_slow": 2.0}, r"beta_fast \(1.0\) must not be below beta_slow \(2.0\)"),
                             ({"truncate": "false"}, "truncate must be true or false, got 'false'")]:
        with pytest.raises(ModelLoadError, match=message):
            ModelConfig.from_dict({**VALID, "rope_scaling": {**YARN, **changes}})


@pytest.mark.parametrize("kind", ["linear", "dynamic"])
@pytest.mark.parametrize("factor", [0, -2.0, "4", None, float("nan")])
def test_a_bad_linear_or_dynamic_factor_is_refused(kind, factor):
    scaling = {"rope_type": kind} if factor is None else {"rope_type": kind, "factor": factor}
    with pytest.raises(ModelLoadError, match="factor"):
        ModelConfig.from_dict({**VALID, "rope_scaling": scaling})


BIAS_FLAGS = ("attention_bias", "mlp_bias")


@pytest.mark.parametrize("flag", BIAS_FLAGS)
@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (None, False)])
def test_a_bias_flag_gives_the_projections_a_bias(flag, value, expected):
    """attention_bias and mlp_bias, each alone, as transformers' LlamaConfig reads them (null and
    absent: false); the other flag stays off."""
    config = ModelConfig.from_dict({**VALID, flag: value})
    assert (config.attention_bias, config.mlp_bias) == ((expected, False) if flag == "attention_bias" else (False, expected))


@pytest.mark.parametrize("flag", BIAS_FLAGS)
@pytest.mark.parametrize("value", ["true", "false", 1, 0, 1.0, [True], {"on": True}])
def test_a_bias_flag_that_is_no_boolean_is_refused_by_name(flag, value):
    with pytest.raises(ModelLoadError, match=f"config.json: {flag} must be true or false, got {re.escape(repr(value))}"):
        ModelConfig.from_dict({**VALID, flag: value})


@pytest.mark.parametrize("flag", BIAS_FLAGS)
@pytest.mark.parametrize("value", [True, "true", 1])
def test_mistral_does_not_read_the_bias_flags(flag, value):
    """MistralForCausalLM builds every projection with bias=False, whatever its config says."""
    config = ModelConfig.from_dict({**VALID, "model_type": "mistral", "architectures": ["MistralForCausalLM"],
                                    flag: value})
    assert (config.attention_bias, config.mlp_bias) == (False, False)


@pytest.mark.parametrize("flags", [dict(attention_bias=True), dict(mlp_bias=True), dict(attention_bias=True, mlp_bias=True)])
def test_the_parameter_count_holds_the_biases(flags):
    """num_parameters (the memory check before any tensor is made) counts what the model holds."""
    from minillama.loader import build_model
    from minillama.ops.select import select_ops

    config = ModelConfig.from_dict({**VALID, **flags})
    ops = select_ops(torch.device("cpu"), torch.float32, config, fused_ops=False, attention="reference")
    model = build_model(config, 16, ops, torch.device("cpu"), torch.float32)
    assert config.num_parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("field", sorted(set(SIZES) - OPTIONAL))
def test_a_missing_size_is_named(field):
    raw = {k: v for k, v in VALID.items() if k != field}
    for config in (raw, {**raw, field: None}):
        with pytest.raises(ModelLoadError, match=f"config.json has no {field}"):
            ModelConfig.from_dict(config)


@pytest.mark.parametrize("field", ["factor", "low_freq_factor", "high_freq_factor"])
def test_a_missing_rope_scaling_field_is_named(field):
    scaling = {k: v for k, v in LLAMA3.items() if k != field}
    with pytest.raises(ModelLoadError, match=f"rope scaling has no {field}"):
        ModelConfig.from_dict({**VALID, "rope_scaling": scaling})


@pytest.mark.parametrize("changes, message", [
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"),
    ({"hidden_size": 30, "head_dim": None}, r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"),
    ({"head_dim": 7}, "head_dim must be even"),
    ({"hidden_size": 36, "head_dim": None}, "head_dim must be even"),  # 36 / 4 = 9
    ({"rope_scaling": {**LLAMA3, "high_freq_factor": 1.0}}, r"high_freq_factor \(1.0\) must be above low_freq_factor"),
    ({"rope_scaling": "llama3"}, "rope_scaling must be an object"),
    ({"rope_scaling": {**LLAMA3, "rope_type": "longrope"}}, "unsupported rope scaling 'longrope'"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false, got 'false'"),
    ({"eos_token_id": [1, "2"]}, "eos_token_id must be a token id"),
    ({"layer_types": "full_attention"}, "layer_types must be a list of names, got 'full_attention'"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, r"quantization_config \('gptq'\): minillama runs "
                                                                     "unquantized checkpoints"),
    ({"quantization_config": {"quant_method": "fp8"}}, r"quantization_config \('fp8'\)"),
    ({"quantization_config": "bnb"}, "has a quantization_config: minillama runs unquantized"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, r"unsupported architecture \['Qwen2ForCausalLM'\]"),
    ({"model_type": "llama", "architectures": ["MistralForCausalLM"]}, "unsupported architecture"),
    ({"architectures": [["LlamaForCausalLM"]]}, "unsupported architecture"),
    ({"model_type": ["llama"]}, "unsupported architecture"),
    ({"layer_types": [1, 2]}, r"layer_types must be a list of names, got \[1, 2\]"),
], ids=["kv-heads", "hidden-vs-heads", "odd-head-dim", "odd-default-head-dim", "rope-high-low", "rope-not-object",
        "rope-type", "tie-string", "eos-string", "layer-types-string", "layer-types-numbers", "gptq", "fp8", "quantization-a-string",
        "qwen2", "mistral-class-in-llama", "architecture-a-list", "model-type-a-list"])
def test_inconsistent_configs_are_refused(changes, message):
    with pytest.raises(ModelLoadError, match=message):
        ModelConfig.from_dict({**VALID, **changes})


@pytest.mark.parametrize("types, fields, message", [
    (["sliding_attention", "full_attention"], {}, "layer_types names sliding_attention layers but sets no sliding_window"),
    (["full_attention", "chunked_attention"], {"sliding_window": 8},
     "layer_types names chunked_attention layers but sets no attention_chunk_size"),
    (["full_attention", "banana"], {"sliding_window": 8}, "layer_types names 'banana' layers; transformers' Llama knows"),
    (["sliding_attention", "full_attention"], {"sliding_window": None}, "sets no sliding_window"),
])
def test_a_windowed_layer_without_its_window_is_refused_by_name(types, fields, message):
    """transformers' forward and generate both fail on such a config (an unknown kind it refuses
    to load); the engine ran it with full attention."""
    with pytest.raises(ModelLoadError, match=message):
        ModelConfig.from_dict({**VALID, "layer_types": types, **fields})


@pytest.mark.parametrize("types, fields, window", [
    (["sliding_attention", "full_attention"], {"sliding_window": 8}, 8),
    (["chunked_attention", "full_attention"], {"attention_chunk_size": 6, "sliding_window": 8}, 6),
    (["full_attention", "full_attention"], {"sliding_window": 8}, None),
])
def test_windowed_layers_with_their_window_load(types, fields, window):
    assert ModelConfig.from_dict({**VALID, "layer_types": types, **fields}).attention_window == window


def test_whole_floats_nulls_and_an_explicit_head_dim_are_accepted():
    config = ModelConfig.from_dict({**VALID, "hidden_size": 32.0, "num_key_value_heads": None, "head_dim": None,
                                    "max_position_embeddings": None, "rms_norm_eps": 1})
    assert (config.hidden_size, config.num_key_value_heads, config.head_dim) == (32, 4, 8)
    assert config.max_position_embeddings == 2048 and config.rms_norm_eps == 1.0
    # Llama-architecture models may set head_dim so that heads * head_dim != hidden_size: the
    # q/o projections map between the two, and the model runs.
    odd = ModelConfig.from_dict({**VALID, "hidden_size": 30, "head_dim": 12})
    engine = LLMEngine.from_config(odd, EngineConfig(device="cpu", num_kv_blocks=8, block_size=4))
    engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=2))
    while engine.has_unfinished():
        engine.step()


# -- through a model directory: nothing escapes the loader as another type -----------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def copy_with_config(tiny_dir, tmp_path, **changes):
    import shutil

    path = tmp_path / "model"
    shutil.copytree(tiny_dir, path)
    raw = json.loads((path / "config.json").read_text())
    raw.update(changes)
    (path / "config.json").write_text(json.dumps(raw))
    return path


def load(path) -> LLMEngine:
    return LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=8, block_size=4))


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": True}, "hidden_size must be an integer >= 1, got True"),
    ({"num_attention_heads": 6, "head_dim": None}, r"hidden_size \(32\) must be a multiple of num_attention_heads \(6\)"),
    ({"num_hidden_layers": -1}, "num_hidden_layers must be an integer >= 1, got -1"),
    ({"intermediate_size": -1280}, "intermediate_size must be an integer >= 1, got -1280"),
], ids=["bool-hidden", "heads-not-dividing", "negative-layers", "negative-intermediate"])
def test_a_directory_with_a_bad_config_is_a_model_load_error(tiny_dir, tmp_path, changes, message):
    with pytest.raises(ModelLoadError, match=message):
        load(copy_with_config(tiny_dir, tmp_path, **changes))


def test_whatever_the_tokenizer_loader_raises_is_a_model_load_error(tiny_dir, tmp_path):
    # A head_dim this engine accepts, which transformers' own config validation refuses while
    # it reads config.json for the tokenizer (a huggingface_hub error type of its own).
    path = copy_with_config(tiny_dir, tmp_path, hidden_size=30, head_dim=8)
    with pytest.raises(ModelLoadError, match="(?s)cannot load the tokenizer from .* not a multiple of the number of attention"):
        load(path)
    (path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer from"):
        load(copy_with_config(path, tmp_path / "again", hidden_size=32))


def test_a_malformed_generation_config_is_a_model_load_error(tiny_dir, tmp_path):
    path = copy_with_config(tiny_dir, tmp_path)
    for text, message in [("[1]", "does not hold a JSON object"), ('{"eos_token_id": "</s>"}', "eos_token_id must be")]:
        (path / "generation_config.json").write_text(text)
        with pytest.raises(ModelLoadError, match=message):
            load(path)


# -- EngineConfig ------------------------------------------------------------------------------

ENGINE_INTS = ["block_size", "max_num_seqs", "max_num_batched_tokens", "num_kv_blocks", "max_model_len"]
ENGINE_BAD_INTS = {"zero": 0, "negative": -1, "true": True, "fraction": 2.5, "whole-float": 16.0, "string": "16",
                   "nan": math.nan}
ENGINE_NUMBERS = {"kv_cache_memory_gb": [0, -1.0, math.nan, math.inf, True, "1"],
                  "gpu_memory_utilization": [0, -0.1, 1.01, math.nan, True, "0.9"]}
ENGINE_CHOICES = {"device": ["banana", "mps", "cpu:0", "cuda:x", "", None, 0],
                  "dtype": ["fp8", "float64", None, torch.float32], "attention": ["flash", "", None],
                  "async_scheduling": ["yes", True, None, "", ["on"]]}
ENGINE_FLAGS = ["enable_prefix_caching", "enforce_eager", "fused_ops"]


def engine_cases() -> list:
    out = [pytest.param(f, v, id=f"{f}-{k}") for f in ENGINE_INTS for k, v in ENGINE_BAD_INTS.items()]
    out += [pytest.param(f, v, id=f"{f}-{v!r}") for f, values in {**ENGINE_NUMBERS, **ENGINE_CHOICES}.items()
            for v in values]
    out += [pytest.param(f, v, id=f"{f}-{v!r}") for f in ENGINE_FLAGS for v in ("yes", 1, None)]
    out += [pytest.param("seed", v, id=f"seed-{v!r}") for v in (-1, 2**63, 1.5, True, "0")]
    return out


@pytest.mark.parametrize("field, value", engine_cases())
def test_every_engine_setting_is_checked_where_the_config_is_made(field, value):
    with pytest.raises(ConfigError, match=re.escape(field)) as info:
        EngineConfig(**{field: value})
    assert isinstance(info.value, ValueError)  # callers catching ValueError still do


@pytest.mark.parametrize("field, value", engine_cases())
def test_a_setting_changed_after_the_config_was_made_is_checked_when_an_engine_uses_it(field, value):
    config = EngineConfig(device="cpu")
    setattr(config, field, value)  # a dataclass's fields stay writable after __post_init__
    with pytest.raises(ConfigError, match=re.escape(field)):
        config.validate()


def test_a_gpu_is_asked_of_the_machine_only_when_an_engine_is_built():
    """A config for another machine can be written here: "cuda:7" is spelled right anywhere."""
    config = EngineConfig(device="cuda:7")
    if torch.cuda.device_count() < 8:
        with pytest.raises(ConfigError, match="cuda:7"):
            config.validate()


def test_engine_config_errors_name_the_command_line_flag_and_the_choices():
    with pytest.raises(ConfigError, match=r"device \(--device\) 'mps'; choose auto, cpu, cuda or cuda:N"):
        EngineConfig(device="mps")
    with pytest.raises(ConfigError, match=r"kv_cache_memory_gb \(--kv-cache-gb\) must be a finite number in \(0, 1e\+06\]"):
        EngineConfig(kv_cache_memory_gb=math.nan)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_cuda_without_a_gpu_says_so():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"--device {device} was asked for, but torch sees no CUDA GPU"):
            EngineConfig(device=device).validate()


def test_every_constructor_refuses_a_bad_device_before_building_anything():
    config = ModelConfig.from_dict(VALID)
    changed = EngineConfig(device="cpu")
    changed.device = "mps"  # past __post_init__'s check: the engine checks again
    with pytest.raises(ConfigError, match="'mps'"):
        LLMEngine.from_config(config, changed)
    with pytest.raises(ConfigError, match="exceeds the model's context"):
        LLMEngine.from_config(config, EngineConfig(device="cpu", max_model_len=4096))
    with pytest.raises(ConfigError, match="flash-attn needs a CUDA device|computes in float16/bfloat16 only"):
        LLMEngine.from_config(config, EngineConfig(device="cpu", attention="flash-attn"))


def test_a_gpu_kernel_refuses_a_head_dim_it_has_no_kernel_for():
    from minillama.ops.attention import select_attention

    for name, head_dim in [("triton", 8), ("triton", 48), ("flash-attn", 12), ("flash-attn", 512)]:
        with pytest.raises(ConfigError, match=f"--attention {name} has no kernel for this model's head_dim {head_dim}"):
            select_attention(name, torch.device("cuda"), torch.bfloat16, head_dim)  # no GPU needed to refuse
    # On a CPU the device is what is wrong first: no head_dim or dtype would make the kernel run.
    for name in ("triton", "flash-attn"):
        for dtype, head_dim in [(torch.bfloat16, 8), (torch.float32, 64)]:
            with pytest.raises(ConfigError, match=f"--attention {name} needs a CUDA device"):
                select_attention(name, torch.device("cpu"), dtype, head_dim)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_head_dim_the_kernels_do_not_take_runs_on_pytorch_ops():
    config = ModelConfig.from_dict(VALID)  # head_dim 8: below Triton's tiles
    engine = LLMEngine.from_config(config, EngineConfig(device="cuda", num_kv_blocks=16))
    assert engine.runner.model.ops.attention.name == "sdpa"
    engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=3))
    while engine.has_unfinished():
        engine.step()
    with pytest.raises(ConfigError, match="has no kernel for this model's head_dim 8"):
        LLMEngine.from_config(config, EngineConfig(device="cuda", attention="triton"))
    wide = ModelConfig.from_dict({**VALID, "hidden_size": 64, "head_dim": 16})
    with pytest.raises(ConfigError, match=r"needs a block size that is a power of two \(got 48\)"):
        LLMEngine.from_config(wide, EngineConfig(device="cuda", attention="triton", block_size=48))


@pytest.mark.parametrize("where", ["section", "top-level"])
@pytest.mark.parametrize("value", ["0.5", math.nan, 0, -1.0, [0.5], True])
def test_a_partial_rotary_factor_that_is_no_number_is_refused_by_name(where, value):
    """With a scaled RoPE (where transformers reads it), partial_rotary_factor is checked as the
    other numbers of the section are."""
    scaling = {"rope_type": "linear", "factor": 2.0}
    raw = ({**VALID, "rope_scaling": {**scaling, "partial_rotary_factor": value}} if where == "section"
           else {**VALID, "rope_scaling": scaling, "partial_rotary_factor": value})
    with pytest.raises(ModelLoadError, match="partial_rotary_factor must be a finite number > 0"):
        ModelConfig.from_dict(raw)


def test_a_partial_rotary_factor_of_one_changes_nothing():
    scaling = {"rope_type": "linear", "factor": 2.0}
    whole = ModelConfig.from_dict({**VALID, "rope_scaling": scaling})
    assert ModelConfig.from_dict({**VALID, "rope_scaling": {**scaling, "partial_rotary_factor": 1.0}}) == whole
    assert ModelConfig.from_dict({**VALID, "rope_scaling": scaling, "partial_rotary_factor": 1}) == whole


@pytest.mark.parametrize("model_type, architecture", [("llama", "LlamaForCausalLM"), ("mistral", "MistralForCausalLM")])
@pytest.mark.parametrize("kind", ["linear", "dynamic", "llama3"])
def test_a_partial_rotation_with_scaled_rope_is_refused_for_either_model_type(model_type, architecture, kind):
    """Mistral's RoPE is built by the same transformers functions as Llama's: the same refusal."""
    scaling = {**LLAMA3, "rope_type": kind, "partial_rotary_factor": 0.5}
    with pytest.raises(ModelLoadError, match=f"partial_rotary_factor 0.5 with {kind} RoPE rotates a part of each head"):
        ModelConfig.from_dict({**VALID, "model_type": model_type, "architectures": [architecture],
                               "rope_scaling": scaling})
