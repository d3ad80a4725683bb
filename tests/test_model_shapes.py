"""Model shapes beyond tests/conftest.py's TINY_CONFIGS, against transformers' LlamaForCausalLM
on the same weights, read from a saved directory (config.json as transformers writes it).

Each shape is one class of what differs between Llama checkpoints and could break an engine
while the usual shapes pass: a head_dim that is not a power of two (Llama-2 13B-like 40,
Falcon-like 80: kernels that tile by powers of two), GQA groups of 3 and 5 (SmolLM2's 9/3:
a group that is neither 1 nor a power of two), head_dim set in config.json apart from
hidden_size / heads (q/o projections that are not square), a vocabulary that is no multiple
of anything (GPT-2's 50257 is the real one; 257 stands in), hidden_act "swish" (SiLU's
other name), sizes no multiple of 8, Llama-3.2's RoPE settings, and bf16 and fp16
checkpoints. Each runs on every CPU attention backend with a block size that is not a power
of two and prompts split into chunks, so paged decode, prefill over cached blocks and the C
kernels all see the shape. Biases on the projections (attention_bias, mlp_bias) are shapes too:
tests/test_biases.py runs them through the rest of the engine.

Then the layouts of a tied checkpoint's LM head (what transformers does with each), the
recorder's attention on odd shapes, and an attention window in a Llama config.json."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import draw_biases
from safetensors.torch import load_file, save_file
from test_hf_parity import LogitsRecorder, relative_error, run_to_end
from test_inspector_support import Checker, assert_attention_is_the_engines

from inspector import CapturePolicy, DebugSession
from minillama import ConfigError, EngineConfig, LLMEngine, ModelLoadError, SamplingParams
from minillama.ops.cpu import cpu_paged

# name -> LlamaConfig fields over BASE (head_dim = hidden_size / heads unless given).
SHAPES = {
    "head-dim-48-mqa": dict(hidden_size=96, num_attention_heads=2, num_key_value_heads=1),
    "head-dim-80-gqa2": dict(hidden_size=320, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64),
    "gqa-3-smollm2-9-3": dict(hidden_size=144, num_attention_heads=9, num_key_value_heads=3),
    "gqa-5-15-3": dict(hidden_size=240, num_attention_heads=15, num_key_value_heads=3),
    "explicit-head-dim-24": dict(hidden_size=64, head_dim=24, num_attention_heads=4, num_key_value_heads=2),
    "explicit-head-dim-128": dict(hidden_size=64, head_dim=128, num_attention_heads=2, num_key_value_heads=1),
    "vocab-257-untied": dict(vocab_size=257, tie_word_embeddings=False),
    "hidden-act-swish": dict(hidden_act="swish"),
    # q/o map hidden_size to fewer features than it has (4 x 16 = 64 of 128), and to more (4 x 96).
    "explicit-head-dim-16-narrow": dict(hidden_size=128, head_dim=16, num_attention_heads=4, num_key_value_heads=4),
    "explicit-head-dim-96-gqa4": dict(hidden_size=64, head_dim=96, num_attention_heads=4, num_key_value_heads=1),
    # No size a multiple of 8 (vector widths of the C kernels): hidden 36, head_dim 12, MLP 50.
    "hidden-36-head-dim-12": dict(hidden_size=36, num_attention_heads=3, num_key_value_heads=1, intermediate_size=50),
    # Llama-3.2's settings on a small shape: llama3 RoPE stretched 32 times from 8,192 positions,
    # base 500,000, a context of 131,072 (the engine's tables stop at 8,192), eps 1e-5; saved
    # in bfloat16 as Meta ships it.
    "llama-3.2-settings-bf16": dict(
        hidden_size=128, head_dim=64, num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=131072,
        rope_theta=500000.0, rms_norm_eps=1e-5, save_dtype=torch.bfloat16, rope_scaling={
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}),
    "untied-fp16-checkpoint": dict(tie_word_embeddings=False, vocab_size=1000, save_dtype=torch.float16),
    # Biases (make_model draws them: transformers starts them at zero, where dropping them passes):
    # on q/k/v/o alone, on the MLP alone, and both on a GQA shape whose q/o are not square, in bf16.
    "attention-bias": dict(attention_bias=True),
    "mlp-bias-untied": dict(mlp_bias=True, tie_word_embeddings=False),
    "both-biases-explicit-head-dim-bf16": dict(attention_bias=True, mlp_bias=True, hidden_size=64, head_dim=24,
                                              num_attention_heads=8, num_key_value_heads=2, save_dtype=torch.bfloat16),
}
BASE = dict(
    vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=None,
    eos_token_id=None, pad_token_id=None, initializer_range=0.1,
)
BACKENDS = [
    "reference",
    "sdpa",
    pytest.param("cpu", marks=pytest.mark.skipif(not cpu_paged.available(), reason="no C compiler for the kernel")),
]


def make_model(seed: int = 0, **fields):
    """A random transformers LlamaForCausalLM of BASE's shape with `fields` over it; its biases,
    if it has any (attention_bias, mlp_bias), drawn too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**BASE, **fields})).eval()
    draw_biases(model)
    return model


@pytest.fixture(scope="module")
def shape_dir(tmp_path_factory):
    """name -> (directory, HF model) of SHAPES[name], saved once per module (in its save_dtype,
    float32 unless given; the HF model is then read back in float32, as the engine reads it)."""
    from transformers import LlamaForCausalLM

    made = {}

    def get(name: str):
        if name not in made:
            fields = dict(SHAPES[name])
            dtype = fields.pop("save_dtype", torch.float32)
            path = tmp_path_factory.mktemp(name)
            make_model(**fields).to(dtype).save_pretrained(path)
            made[name] = path, LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return made[name]

    return get


def assert_logits_match_hf(engine: LLMEngine, hf, lengths: tuple[int, ...], max_tokens: int) -> None:
    """Greedy requests of `lengths` random tokens: every step's logits, prefill and decode, are
    transformers' over the same tokens (the full sequence in one forward)."""
    recorder = LogitsRecorder()
    engine.add_observer(recorder)
    generator = torch.Generator().manual_seed(1)
    vocab = hf.config.vocab_size
    prompts = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]
    ids = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=max_tokens)) for p in prompts]
    run_to_end(engine)
    for request_id, prompt in zip(ids, prompts):
        with torch.no_grad():
            expected = hf(torch.tensor([engine.sequences[request_id].token_ids])).logits[0]
        rows = recorder.logits[request_id]
        assert len(rows) == max_tokens
        for i, row in enumerate(rows):  # row i predicts token len(prompt) + i
            assert relative_error(row, expected[len(prompt) - 1 + i]) < 1e-4


@pytest.mark.parametrize("attention", BACKENDS)
@pytest.mark.parametrize("name", list(SHAPES))
def test_shape_matches_hf(shape_dir, name, attention):
    path, hf = shape_dir(name)
    # Blocks of 3 and chunks of at most 8 tokens: the 13-token prompt is prefilled over its own
    # cached blocks, and decode reads a block table whose last block is partly filled.
    config = EngineConfig(device="cpu", dtype="float32", attention=attention, num_kv_blocks=64, block_size=3,
                          max_num_batched_tokens=8)
    assert_logits_match_hf(LLMEngine.from_pretrained(path, config), hf, lengths=(5, 13, 1), max_tokens=4)


# -- a tied checkpoint's LM head ----------------------------------------------------------------


def head_only(weights: dict[str, torch.Tensor]) -> None:
    weights["lm_head.weight"] = weights.pop("model.embed_tokens.weight")


def head_equal(weights: dict[str, torch.Tensor]) -> None:
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()


def head_differs(weights: dict[str, torch.Tensor]) -> None:
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"] + 0.01


@pytest.mark.parametrize("layout", [head_only, head_equal, head_differs], ids=lambda f: f.__name__)
def test_tied_checkpoint_head_layouts_load_as_transformers_reads_them(tmp_path, layout):
    """config.json ties the embeddings, and the file holds lm_head.weight: in place of the
    embedding (transformers ties the other way round: the same model), beside an equal one (the
    same model), or beside a different one (transformers unties them and its logits come from
    the head; the engine, whose head is the embedding matrix, refuses rather than answer
    otherwise)."""
    from transformers import LlamaForCausalLM

    make_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    layout(weights)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = EngineConfig(device="cpu", dtype="float32", num_kv_blocks=32, block_size=4)
    if layout is head_differs:
        with pytest.raises(ModelLoadError, match="holds an lm_head.weight that differs from model.embed_tokens"):
            LLMEngine.from_pretrained(tmp_path, config)
        return
    hf = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert_logits_match_hf(LLMEngine.from_pretrained(tmp_path, config), hf, lengths=(6,), max_tokens=3)


# -- which weight files a directory's weights are -------------------------------------------------


def stale_shards(path) -> None:
    """An index and shards of another model's weights, left by an earlier save."""
    make_model(seed=1).save_pretrained(path / "old", max_shard_size="50KB")
    for file in (path / "old").iterdir():
        if file.name.startswith("model"):
            file.rename(path / file.name)


def consolidated(path) -> None:
    """Meta's original layout beside the converted one (Mistral's folders ship both)."""
    weights = load_file(path / "model.safetensors")
    save_file({name.replace("model.", "").replace("self_attn.q_proj", "attention.wq"): tensor
               for name, tensor in weights.items()}, path / "consolidated.safetensors")


@pytest.mark.parametrize("beside", [stale_shards, consolidated], ids=lambda f: f.__name__)
def test_weights_beside_model_safetensors_are_not_read(tmp_path, beside):
    """transformers reads model.safetensors when a folder has it, and no other weight file:
    the engine does too, and answers with the same logits."""
    from transformers import LlamaForCausalLM

    make_model().save_pretrained(tmp_path)
    beside(tmp_path)
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    engine = LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16))
    assert_logits_match_hf(engine, hf, lengths=(7,), max_tokens=2)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_a_decoder_saved_without_its_head_loads_as_transformers_loads_it(tmp_path, tied):
    """LlamaModel.save_pretrained: tensors named without "model.", no lm_head.weight, and
    architectures ["LlamaModel"]. transformers' AutoModelForCausalLM adds the prefix; tied, the
    head is the embedding and the model is whole (the same logits here); untied, it would draw a
    random head, which the engine refuses by name."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    LlamaModel(LlamaConfig(**{**BASE, "tie_word_embeddings": tied})).save_pretrained(tmp_path)
    config = EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16)
    if not tied:
        with pytest.raises(ModelLoadError, match=r"lacks 1 tensor\(s\), e.g. \['lm_head.weight'\]"):
            LLMEngine.from_pretrained(tmp_path, config)
        return
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert_logits_match_hf(LLMEngine.from_pretrained(tmp_path, config), hf, lengths=(7,), max_tokens=2)


# -- RoPE settings spelled in more than one place ------------------------------------------------

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
# name -> the config.json fields over what save_pretrained wrote (None: the field removed). Each
# is a file transformers 5 reads one way and a naive reader another: which section wins, where
# rope_theta is taken from, where the pretraining length is, and what a missing one means.
ROPE_SPELLINGS = {
    "theta-at-top-and-in-rope-parameters": dict(rope_theta=50000.0,
                                                rope_parameters={"rope_type": "default", "rope_theta": 1000.0}),
    "theta-inside-rope-scaling": dict(rope_theta=10000.0, rope_parameters=None,
                                      rope_scaling={"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0}),
    "rope-scaling-beside-rope-parameters": dict(rope_scaling={"rope_type": "linear", "factor": 2.0},
                                                rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    "llama3-pretraining-length-at-top-level": dict(original_max_position_embeddings=64, rope_parameters={
        **LLAMA3, "rope_theta": 10000.0, "original_max_position_embeddings": 16}),
    "llama3-without-pretraining-length": dict(rope_parameters={**LLAMA3, "rope_theta": 10000.0}),
    "transformers-4-spelling": dict(rope_theta=20000.0, rope_parameters=None,
                                    rope_scaling={**LLAMA3, "original_max_position_embeddings": 16}),
    # Llama's default RoPE rotates whole heads whatever partial_rotary_factor says.
    "partial-rotary-factor-in-default-rope": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                   "partial_rotary_factor": 0.5}),
    "partial-rotary-factor-at-top-level": dict(partial_rotary_factor=0.25),
    # YaRN stretched from a 16-position pretraining length, so its blend of kept and divided
    # frequencies falls inside a 40-token prompt, with each way of setting its attention factor.
    "yarn": dict(rope_parameters={**YARN, "rope_theta": 10000.0}),
    "yarn-attention-factor-given": dict(rope_parameters={**YARN, "rope_theta": 10000.0, "attention_factor": 0.8}),
    "yarn-mscale-weights": dict(rope_parameters={**YARN, "rope_theta": 10000.0, "mscale": 0.707,
                                                 "mscale_all_dim": 1.0}),
    "yarn-untruncated-betas": dict(rope_parameters={**YARN, "rope_theta": 500.0, "beta_fast": 8, "beta_slow": 0.5,
                                                    "truncate": False}),
    "yarn-transformers-4-spelling": dict(rope_theta=20000.0, rope_parameters=None, rope_scaling=YARN),
}


@pytest.mark.parametrize("name", list(ROPE_SPELLINGS))
def test_rope_settings_are_read_as_transformers_reads_them(tmp_path, name):
    """The same config.json gives the same angles here as in transformers' LlamaForCausalLM,
    however it spells RoPE's settings: a wrong base or pretraining length changes every logit
    past the first few positions and nothing else, so a 40-token prompt shows it."""
    from transformers import LlamaForCausalLM

    make_model().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    raw = json.loads(config_file.read_text())
    for field, value in ROPE_SPELLINGS[name].items():
        raw.pop(field, None) if value is None else raw.__setitem__(field, value)
    config_file.write_text(json.dumps(raw))
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    engine = LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16))
    assert_logits_match_hf(engine, hf, lengths=(40,), max_tokens=2)


# name -> config.json fields (as ROPE_SPELLINGS) that ask linear, dynamic, llama3 or yarn RoPE to rotate a
# part of each head: transformers makes angles for that part, and LlamaForCausalLM's forward fails.
PARTIAL_ROTATIONS = {
    "linear-half": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4,
                                         "partial_rotary_factor": 0.5}),
    "dynamic-half": dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4,
                                          "partial_rotary_factor": 0.5}),
    "llama3-half": dict(rope_parameters={**LLAMA3, "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
    "yarn-half": dict(rope_parameters={**YARN, "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
    "linear-one-and-a-half": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4,
                                                   "partial_rotary_factor": 1.5}),
    "top-level-with-linear": dict(partial_rotary_factor=0.5, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                              "rope_theta": 1e4}),
    "in-rope-scaling": dict(rope_parameters=None, rope_scaling={"rope_type": "linear", "factor": 2.0,
                                                                "partial_rotary_factor": 0.5}),
}


@pytest.mark.parametrize("name", list(PARTIAL_ROTATIONS))
def test_a_partial_rotation_transformers_cannot_run_is_refused_by_name(tmp_path, name):
    """Each spelling: transformers loads the folder and its forward fails; the engine refuses
    the folder, naming the field and its value (it ran whole-head RoPE before, silently)."""
    from transformers import LlamaForCausalLM

    make_model().save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for field, value in PARTIAL_ROTATIONS[name].items():
        raw.pop(field, None) if value is None else raw.__setitem__(field, value)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with pytest.raises(RuntimeError, match="must match the size"), torch.no_grad():
        hf(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ModelLoadError, match=r"config.json: partial_rotary_factor (0.5|1.5) with (linear|dynamic|llama3|yarn) "
                                             "RoPE rotates a part of each head"):
        LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=8))


# -- the recorder -------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    dict(hidden_size=256, num_attention_heads=1, num_key_value_heads=1, num_hidden_layers=1),  # head_dim 256
    dict(hidden_size=240, head_dim=48, num_attention_heads=15, num_key_value_heads=3),  # GQA 5, head_dim 48
    dict(hidden_size=64, head_dim=96, num_attention_heads=4, num_key_value_heads=1),  # 4 x 96 features of 64
    # q and k carry a bias before RoPE: the recorder's Q/K must be the biased ones.
    dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, attention_bias=True, mlp_bias=True),
], ids=["one-head-256", "gqa5-head-dim-48", "mqa-explicit-head-dim-96", "gqa3-biases"])
def test_recorded_attention_reproduces_the_engines_output(fields):
    """softmax(q . K * scale) @ V from the recorder's Q/K is each layer's attention output, for
    every head of two traced sequences (one reading its prefix from the cache), under preemption."""
    engine = LLMEngine.from_hf_model(make_model(**fields), EngineConfig(device="cpu", dtype="float32",
                                                                        num_kv_blocks=12, block_size=4))
    session = DebugSession(engine, CapturePolicy(attention_requests=(0, 2)))
    checker = Checker(engine, session.recorder.traced)
    engine.add_observer(checker)
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 256, (12,), generator=generator).tolist()
    prompts = [prefix + torch.randint(0, 256, (n,), generator=generator).tolist() for n in (3, 5, 2, 4)]
    params = SamplingParams(temperature=0, max_tokens=8)
    session.add(prompts[0], params)
    session.step()  # the prefix is cached before the others arrive
    for prompt in prompts[1:]:
        session.add(prompt, params)
    assert session.run().finished
    assert engine.stats.preemptions > 0
    assert assert_attention_is_the_engines(session, checker) > 30


# -- an attention window in a Llama config.json --------------------------------------------------

WINDOW = 9
# name -> config.json fields over BASE, and whether transformers' generate windows attention.
WINDOWS = {
    "sliding-window": (dict(sliding_window=WINDOW), True),
    "attention-chunk-size": (dict(attention_chunk_size=WINDOW), True),
    "sliding-window-on-some-layers": (dict(sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"]),
                                      True),
    "sliding-window-on-no-layer": (dict(sliding_window=WINDOW, layer_types=["full_attention"] * 2), False),
}


@pytest.mark.parametrize("name", list(WINDOWS))
def test_an_attention_window_caps_the_context_where_generate_and_forward_part(tmp_path, name):
    """sliding_window or attention_chunk_size in a model_type "llama" config.json: transformers'
    forward ignores it, its generate's cache keeps only the window's tokens, so the two answer
    differently past it. Within it both are full attention: the engine runs sequences up to the
    window, each token generate's, and refuses a longer context by name."""
    from transformers import LlamaForCausalLM

    fields, windowed = WINDOWS[name]
    make_model().save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **fields}))
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    prompt, max_tokens = [5, 17, 99, 42, 7], 12
    expected = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    config = EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16, block_size=4)
    engine = LLMEngine.from_pretrained(tmp_path, config)
    request = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=max_tokens))
    run_to_end(engine)
    output = list(engine.request(request).output_token_ids)
    assert output == expected[: WINDOW - len(prompt) if windowed else max_tokens]
    if windowed:
        with pytest.raises(ConfigError, match=f"max_model_len 10 exceeds the model's context \\({WINDOW} positions, its "
                                              "attention window"):
            LLMEngine.from_pretrained(tmp_path, dataclasses.replace(config, max_model_len=WINDOW + 1))


# -- Mistral: Llama's model with no biases and a sliding window ------------------------------------

# name -> MistralConfig fields over BASE's, and the config.json fields then removed or replaced.
MISTRAL = {
    "no-window-gqa-untied": (dict(sliding_window=None, tie_word_embeddings=False), {}),
    "window-9": (dict(sliding_window=WINDOW), {}),
    "bias-flags-mistral-does-not-read": (dict(sliding_window=None), dict(attention_bias=True, mlp_bias=True)),
    "llama3-rope-explicit-head-dim": (dict(sliding_window=None, head_dim=24, rope_parameters={
        **LLAMA3, "rope_theta": 10000.0, "original_max_position_embeddings": 16}), {}),
}


@pytest.mark.parametrize("name", list(MISTRAL))
def test_a_mistral_directory_runs_as_transformers_runs_it(tmp_path, name):
    """model_type "mistral": the same logits as MistralForCausalLM over prefill and decode, and
    greedy tokens equal to its generate's; a sliding window caps the context (both apply it,
    and within it attention is full)."""
    from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

    fields, edits = MISTRAL[name]
    torch.manual_seed(0)
    MistralForCausalLM(MistralConfig(**{**BASE, **fields})).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **edits}))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    config = EngineConfig(device="cpu", dtype="float32", num_kv_blocks=32, block_size=3, max_num_batched_tokens=8)
    window = fields["sliding_window"]
    if window is None:
        assert_logits_match_hf(LLMEngine.from_pretrained(tmp_path, config), hf, lengths=(5, 13, 1), max_tokens=4)
    prompt, max_tokens = [5, 17, 99, 42, 7], 12
    expected = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    engine = LLMEngine.from_pretrained(tmp_path, config)
    request = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=max_tokens))
    run_to_end(engine)
    assert list(engine.request(request).output_token_ids) == expected[: (window or 128) - len(prompt)]


def test_a_mistral_config_without_sliding_window_has_mistrals_default_window(tmp_path):
    """MistralConfig's sliding_window defaults to 4,096 (and num_key_value_heads to 8): a
    config.json that leaves them out means those, not Llama's defaults."""
    from transformers import MistralConfig, MistralForCausalLM

    MistralForCausalLM(MistralConfig(**{**BASE, "num_attention_heads": 8, "num_key_value_heads": 8,
                                        "max_position_embeddings": 8192})).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for field in ("sliding_window", "num_key_value_heads"):
        raw.pop(field)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    engine = LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=4))
    assert (engine.max_model_len, engine.model_config.num_key_value_heads) == (4096, 8)
