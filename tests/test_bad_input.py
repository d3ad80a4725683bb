"""The engine's refusals: bad requests raise InvalidRequestError and change nothing; bad model
directories raise ModelLoadError with a message that says what is wrong.

Requests run on a tiny random-weight engine (no tokenizer, no EOS, so every request runs to its
max_tokens). Model directories are tiny transformers Llama checkpoints saved with
save_pretrained, then broken one way per test.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from tiny_model import write_byte_tokenizer

from minillama import EngineConfig, InvalidRequestError, LLMEngine, ModelConfig, ModelLoadError, SamplingParams

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)
BLOCK_SIZE, NUM_BLOCKS, MAX_MODEL_LEN = 4, 8, 48  # a KV cache of 32 token slots


def make_engine() -> LLMEngine:
    return LLMEngine.from_config(
        ModelConfig.from_dict(TINY),
        EngineConfig(device="cpu", num_kv_blocks=NUM_BLOCKS, block_size=BLOCK_SIZE, max_model_len=MAX_MODEL_LEN),
    )


@pytest.fixture(scope="module")
def engine():
    return make_engine()


def assert_idle(engine: LLMEngine) -> None:
    """Nothing queued, running or remembered; every KV block free."""
    assert not engine.has_unfinished()
    assert engine.sequences == {}
    assert not engine.scheduler.waiting and not engine.scheduler.running
    bm = engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    assert all(b.ref_count == 0 for b in bm.blocks)


def run_to_completion(engine: LLMEngine, max_steps: int = 200) -> dict[int, list[int]]:
    """Step until idle; request id -> the tokens it produced."""
    tokens: dict[int, list[int]] = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return tokens
        for out in engine.step():
            tokens.setdefault(out.request_id, []).append(out.token_id)
    raise AssertionError("the engine did not finish")


def serve_good_request(engine: LLMEngine) -> None:
    """The engine still serves a normal request to completion, and is idle afterwards."""
    assert_idle(engine)
    rid = engine.add_request([5, 6, 7], SamplingParams(temperature=0, max_tokens=5))
    assert engine.has_unfinished()
    tokens = run_to_completion(engine)
    assert list(tokens) == [rid] and len(tokens[rid]) == 5
    seq = engine.sequences[rid]
    assert seq.finish_reason == "length" and seq.output_token_ids == tokens[rid]
    engine.forget(rid)
    assert_idle(engine)


# -- bad requests -----------------------------------------------------------------------------

BAD_REQUESTS = {
    # id: (prompt, SamplingParams kwargs, a phrase the message must contain)
    "empty-token-list": ([], {}, "prompt is empty"),
    "empty-string": ("", {}, "prompt is empty"),
    "text-without-tokenizer": ("hello there", {}, "no tokenizer"),
    "token-id-too-large": ([1, 2, 128], {}, r"token ids must be integers in \[0, 128\)"),
    "token-id-negative": ([-1, 2], {}, r"token ids must be integers in \[0, 128\)"),
    "token-id-float": ([1, 2.0], {}, "token ids must be integers"),
    "prompt-equals-max-model-len": ([1] * MAX_MODEL_LEN, {}, "max_model_len is 48"),
    "prompt-over-max-model-len": ([1] * (MAX_MODEL_LEN + 12), {}, "max_model_len is 48"),
    "max-tokens-0": ([1, 2], {"max_tokens": 0}, "max_tokens must be an integer in \\[1, 2147483647\\]"),
    "max-tokens-negative": ([1, 2], {"max_tokens": -1}, "max_tokens must be an integer in \\[1, 2147483647\\]"),
    "max-tokens-not-int": ([1, 2], {"max_tokens": 2.5}, "max_tokens must be an integer"),
    "temperature-negative": ([1, 2], {"temperature": -1.0}, "temperature must be a finite number >= 0"),
    "temperature-nan": ([1, 2], {"temperature": math.nan}, "temperature must be a finite number"),
    "temperature-inf": ([1, 2], {"temperature": math.inf}, "temperature must be a finite number"),
    "top-p-0": ([1, 2], {"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    "top-p-1.5": ([1, 2], {"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    "top-p-nan": ([1, 2], {"top_p": math.nan}, r"top_p must be in \(0, 1\]"),
    "top-k-negative": ([1, 2], {"top_k": -1}, "top_k must be an integer in \\[0, 2147483647\\]"),
    # Past int64 it failed inside every later step, the batch's other requests stuck with it.
    "top-k-huge": ([1, 2], {"top_k": 2**63}, "top_k must be an integer in \\[0, 2147483647\\]"),
    "max-tokens-huge": ([1, 2], {"max_tokens": 2**63}, "max_tokens must be an integer in \\[1, 2147483647\\]"),
    "seed-not-int": ([1, 2], {"seed": 1.5}, "seed must be an integer"),
    # 10 + 30 = 40 tokens need 10 blocks of 4; the cache has 8.
    "never-fits-kv-cache": (list(range(10)), {"max_tokens": 30}, "can never fit the KV cache"),
    # Not text a tokenizer can take: checked before the tokenizer (or its absence) is.
    "lone-surrogate": ("abc\ud800", {}, r"character 3 is U\+D800, a lone surrogate"),
    # What Python makes of the argv bytes b"\xff\xfe caf\xe9" (surrogateescape).
    "undecodable-bytes": ("\udcff\udcfe caf\udce9", {}, "character 0 is the byte 0xff, which is not UTF-8"),
    "bytes": (b"hello", {}, "not bytes .decode bytes into str first"),
    "none": (None, {}, "a prompt is a string or a list of token ids, not NoneType"),
    "int": (42, {}, "not int"),
    "token-id-string": ([1, "2"], {}, r"position 1 holds '2'"),
    "token-id-bool": ([1, True], {}, r"position 1 holds True"),
    "token-ids-nested": ([[1, 2]], {}, r"position 0 holds \[1, 2\]"),
    "temperature-bool": ([1, 2], {"temperature": True}, "temperature must be a finite number"),
    "ignore-eos-string": ([1, 2], {"ignore_eos": "no"}, "ignore_eos must be True or False"),
}


@pytest.mark.parametrize("prompt, kwargs, message", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_request_is_refused_and_engine_keeps_serving(engine, prompt, kwargs, message):
    assert_idle(engine)
    with pytest.raises(InvalidRequestError, match=message):
        engine.add_request(prompt, SamplingParams(**kwargs))
    assert_idle(engine)  # the refused request left nothing behind
    serve_good_request(engine)


@pytest.mark.parametrize("kwargs, message", [
    ({"top_p": 2}, r"top_p must be in \(0, 1\]"), ({"temperature": float("nan")}, "temperature must be a finite"),
    ({"n": 0}, "n \\(samples per prompt\\)"), ({"beam_width": 0}, "beam_width"), ({"top_k": -5}, "top_k"),
    ({"seed": -1}, "seed"), ({"max_tokens": True}, "max_tokens"), ({"n": 2, "beam_width": 2}, "do not combine"),
])
def test_sampling_params_are_checked_when_made(kwargs, message):
    """SamplingParams(top_p=2) was taken, and refused only when a request used it."""
    with pytest.raises(InvalidRequestError, match=message):
        SamplingParams(**kwargs)


def test_params_that_are_not_sampling_params_are_refused(engine):
    with pytest.raises(InvalidRequestError, match="params must be a SamplingParams or None, not dict"):
        engine.add_request([1, 2], {"max_tokens": 3})
    assert_idle(engine)


def test_out_of_range_seed_is_refused_clearly(engine):
    with pytest.raises(InvalidRequestError, match="seed"):
        engine.add_request([1, 2], SamplingParams(temperature=0.7, max_tokens=3, seed=2**64))
    assert_idle(engine)
    serve_good_request(engine)


def test_bad_stop_token_ids_are_refused_up_front():
    engine = make_engine()
    with pytest.raises(InvalidRequestError, match="stop_token_ids"):
        engine.add_request([1, 2], SamplingParams(max_tokens=3, stop_token_ids=None))
    assert_idle(engine)
    serve_good_request(engine)


def test_request_needing_exactly_the_whole_cache_is_accepted():
    engine = make_engine()
    # 31 prompt tokens + 2 new tokens: the model computes positions 0..31 (32 slots, 8 blocks);
    # the 2nd new token is sampled from position 31's output and never stored.
    rid = engine.add_request(list(range(31)), SamplingParams(temperature=0, max_tokens=2))
    tokens = run_to_completion(engine)
    assert len(tokens[rid]) == 2


def test_requests_at_the_limits_are_accepted(engine):
    """The boundaries of the checks above, from the accepted side."""
    # 31 + 1 = 32 tokens: exactly the 8 blocks of the cache.
    params = SamplingParams(temperature=0, max_tokens=1, top_p=1.0, top_k=0)
    rid = engine.add_request(list(range(31)), params)
    assert len(run_to_completion(engine)[rid]) == 1
    engine.forget(rid)
    # Extreme but valid sampling settings and token ids.
    extreme = SamplingParams(temperature=5.0, top_p=1e-6, top_k=1000, max_tokens=3, seed=0)
    rid = engine.add_request([0, TINY["vocab_size"] - 1], extreme)
    assert len(run_to_completion(engine)[rid]) == 3
    engine.forget(rid)
    assert_idle(engine)


def greedy_and_sampled_outputs(bad_calls: bool) -> list[list[int]]:
    """Run a greedy and a (shared-generator) sampled request on a fresh engine; with bad_calls,
    throw a volley of bad requests at it while both are mid-generation."""
    engine = make_engine()
    greedy = engine.add_request(list(range(9)), SamplingParams(temperature=0, max_tokens=10))
    sampled = engine.add_request(list(range(20, 26)), SamplingParams(temperature=1.0, max_tokens=10))
    tokens: dict[int, list[int]] = {greedy: [], sampled: []}
    for step in range(100):
        if not engine.has_unfinished():
            break
        if bad_calls and step == 3:
            waiting, running = list(engine.scheduler.waiting), list(engine.scheduler.running)
            free = engine.block_manager.num_free_blocks
            for prompt, kwargs, _ in BAD_REQUESTS.values():
                with pytest.raises(InvalidRequestError):
                    engine.add_request(prompt, SamplingParams(**kwargs))
            # Nothing about the running requests changed.
            assert list(engine.scheduler.waiting) == waiting and engine.scheduler.running == running
            assert engine.block_manager.num_free_blocks == free
            assert set(engine.sequences) == {greedy, sampled}
        for out in engine.step():
            tokens[out.request_id].append(out.token_id)
    assert not engine.has_unfinished()
    return [tokens[greedy], tokens[sampled]]


def test_bad_requests_mid_generation_do_not_disturb_running_ones():
    clean = greedy_and_sampled_outputs(bad_calls=False)
    disturbed = greedy_and_sampled_outputs(bad_calls=True)
    assert all(len(t) == 10 for t in clean)
    assert disturbed == clean


def test_text_whose_tokens_are_past_the_vocabulary_is_refused(tmp_path):
    """A tokenizer with more tokens than config.json's vocab_size (a mismatched download): a
    prompt that encodes past the embeddings is refused, with or without the chat template, and
    the requests already queued still finish."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**TINY, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    write_byte_tokenizer(tmp_path)  # 256 byte tokens, past TINY's 128
    engine = LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=16, block_size=4))
    good = engine.add_request("hello", SamplingParams(temperature=0, max_tokens=4))
    for chat in (False, True):
        with pytest.raises(InvalidRequestError, match="outside this model's vocabulary of 128: its tokenizer and config.json"):
            engine.add_request("caf\u00e9 \u00ff", SamplingParams(max_tokens=4), chat=chat)
    while engine.has_unfinished():
        engine.step()
    assert len(engine.sequences[good].output_token_ids) == 4


# -- bad model directories --------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory):
    """A tiny random Llama checkpoint saved as Hugging Face does (config.json + model.safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    return path


@pytest.fixture
def model_dir(valid_dir, tmp_path):
    """A private copy of the valid checkpoint for one test to break."""
    path = tmp_path / "model"
    shutil.copytree(valid_dir, path)
    return path


def load(path) -> LLMEngine:
    return LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=16, block_size=4))


def edit_config(path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def rewrite_weights(path, edit) -> None:
    """Load model.safetensors, let `edit` change the state dict, save it back."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_valid_directory_loads_and_generates(model_dir):
    engine = load(model_dir)
    assert engine.model_config.vocab_size == 128 and engine.model_config.num_key_value_heads == 2
    assert engine.tokenizer is None  # none saved: token-id prompts only
    rid = engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=4))
    assert len(run_to_completion(engine)[rid]) == 4


def test_loaded_weights_are_the_checkpoints(model_dir):
    """Greedy tokens match transformers' own forward pass on the same checkpoint."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(model_dir).eval()
    engine = load(model_dir)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    rid = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=1))
    token = run_to_completion(engine)[rid][0]
    with torch.no_grad():
        expected = hf(torch.tensor([prompt])).logits[0, -1].argmax().item()
    assert token == expected


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "no-such-model")


def test_a_file_instead_of_a_directory(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file, not a model directory"):
        load(file)


def test_missing_config_json(model_dir):
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="needs config.json"):
        load(model_dir)


def test_corrupt_config_json(model_dir):
    (model_dir / "config.json").write_text('{"model_type": "llama", "hidden_size": 32,')
    with pytest.raises(ModelLoadError, match="config.json is not valid JSON"):
        load(model_dir)


def test_config_json_not_an_object(model_dir):
    (model_dir / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelLoadError, match="does not hold a JSON object"):
        load(model_dir)


def test_config_json_missing_a_field(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    del config["hidden_size"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="config.json has no hidden_size"):
        load(model_dir)


def test_unsupported_architecture(model_dir):
    edit_config(model_dir, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    with pytest.raises(ModelLoadError, match=r"unsupported architecture \['GPT2LMHeadModel'\]"):
        load(model_dir)


def test_only_pickled_weights(model_dir):
    from safetensors.torch import load_file

    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="only pickled weights") as info:
        load(model_dir)
    message = str(info.value)
    assert "pytorch_model.bin" in message and "safetensors only" in message and "arbitrary code" in message


def test_no_weights_at_all(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no \\*.safetensors weight files"):
        load(model_dir)


@pytest.mark.parametrize("keep", [4, 100, 0.5, -1], ids=["8-byte-header-cut", "in-header", "half", "last-byte"])
def test_truncated_safetensors(model_dir, keep):
    file = model_dir / "model.safetensors"
    data = file.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep if keep > 0 else len(data) + keep
    file.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="cannot read weights from .*model.safetensors"):
        load(model_dir)


def test_garbage_safetensors(model_dir):
    (model_dir / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        load(model_dir)


def shard(path) -> dict[str, str]:
    """Split model.safetensors into two shards with an index, as large checkpoints come."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in parts.items():
        save_file({n: tensors[n] for n in part}, path / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def test_sharded_checkpoint_loads(model_dir, valid_dir):
    shard(model_dir)
    sharded = load(model_dir)
    whole = load(valid_dir)
    for (name, a), (_, b) in zip(sharded.runner.model.named_parameters(), whole.runner.model.named_parameters()):
        assert torch.equal(a, b), name


def test_sharded_index_naming_a_missing_shard(model_dir):
    shard(model_dir)
    (model_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing weight shard.*model-00002-of-00002.safetensors"):
        load(model_dir)


def test_corrupt_sharded_index(model_dir):
    shard(model_dir)
    (model_dir / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(ModelLoadError, match="index.json is not valid JSON"):
        load(model_dir)


def test_checkpoint_missing_a_tensor(model_dir):
    rewrite_weights(model_dir, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(ModelLoadError, match=r"lacks 1 tensor\(s\).*model.layers.1.mlp.down_proj.weight"):
        load(model_dir)


@pytest.mark.parametrize("name", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj",
                                  "mlp.up_proj"])
def test_checkpoint_missing_one_part_of_a_stacked_matrix(model_dir, name):
    # Each is stacked with others into one matrix (qkv_proj, gate_up_proj); losing it alone must
    # still be noticed, and named as the checkpoint names it, not by the stacked matrix.
    rewrite_weights(model_dir, lambda t: t.pop(f"model.layers.0.{name}.weight"))
    with pytest.raises(ModelLoadError, match=rf"lacks 1 tensor\(s\), e.g. \['model.layers.0.{name}.weight'\]"):
        load(model_dir)


def test_checkpoint_tensor_of_the_wrong_shape(model_dir):
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(8, 32)  # 2 kv heads x 8 = 16 rows

    rewrite_weights(model_dir, edit)
    with pytest.raises(ModelLoadError, match=r"'model.layers.0.self_attn.k_proj.weight' in .*model.safetensors has shape \(8, 32\).*\(16, 32\)"):
        load(model_dir)


def test_config_disagreeing_with_the_weights(model_dir):
    edit_config(model_dir, intermediate_size=48)  # the checkpoint's MLP is 64 wide
    with pytest.raises(ModelLoadError, match="has shape .* config.json implies"):
        load(model_dir)


def test_checkpoint_with_an_unknown_tensor(model_dir):
    rewrite_weights(model_dir, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(8)}))
    with pytest.raises(ModelLoadError, match="'model.layers.0.self_attn.q_norm.weight' in .*model.safetensors matches no parameter"):
        load(model_dir)


@pytest.mark.parametrize("escape", ["../outside.safetensors", "/etc/outside.safetensors", "sub/x.safetensors", ".."])
def test_a_sharded_index_may_not_name_a_file_outside_the_folder(model_dir, escape):
    """A model directory is untrusted: its index must not make the loader read elsewhere."""
    weight_map = shard(model_dir)
    first = next(iter(weight_map))
    index = model_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {**weight_map, first: escape}}))
    with pytest.raises(ModelLoadError, match="is not a file name in"):
        load(model_dir)
