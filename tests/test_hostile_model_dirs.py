"""A model directory is untrusted input: every way its files can be malformed or hostile fails
with one ModelLoadError naming the file (and the field or tensor), in bounded time and memory,
and `python -m minillama --model DIR` prints it as one line with exit status 2; a directory that
is merely unusual (fp16 or float64 weights, shards, a padded vocabulary, no tokenizer) loads and
runs.

Each case is a copy of the tiny model (tests/tiny_model.py) with one edit, made once per module.
Decisions the table records: weights holding NaN or infinities are refused (every logit made
from them would be NaN: the model would answer garbage with no error); weights stored as
integers, booleans or fp8 are refused (quantized checkpoints need scales this engine does not
apply); float64 weights load, converted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_model import TINY, write_byte_tokenizer, write_tiny_model

import minillama.__main__
from minillama import EngineConfig, InvalidRequestError, LLMEngine, ModelLoadError, SamplingParams

Edit = Callable[[Path], object]
EMBEDDING = "model.embed_tokens.weight"
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}


# -- edits ---------------------------------------------------------------------------------------


def config_literal(field: str, literal: str) -> Edit:
    """config.json with `field` set to a JSON literal as written (NaN, Infinity, 1e400 and
    10**400 parse in Python's json; json.dumps could not write all of them)."""
    def edit(path: Path) -> None:
        raw = json.loads((path / "config.json").read_text())
        raw[field] = "@@"
        (path / "config.json").write_text(json.dumps(raw).replace('"@@"', literal))
    return edit


def edit_json(name: str, **changes: object) -> Edit:
    def edit(path: Path) -> None:
        raw = json.loads((path / name).read_text())
        (path / name).write_text(json.dumps({**raw, **changes}))
    return edit


def config(**changes: object) -> Edit:
    return edit_json("config.json", **changes)


def write(name: str, data: str | bytes) -> Edit:
    def edit(path: Path) -> None:
        (path / name).unlink(missing_ok=True)
        (path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return edit


def tensors(change: Callable[[dict[str, torch.Tensor]], object]) -> Edit:
    """model.safetensors rewritten after `change` edits its tensors in place."""
    def edit(path: Path) -> None:
        weights = load_file(path / "model.safetensors")
        change(weights)
        save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return edit


def replace(name: str, value: torch.Tensor) -> Edit:
    return tensors(lambda weights: weights.update({name: value}))


def file_bytes(change: Callable[[bytes, int], bytes]) -> Edit:
    """model.safetensors' bytes replaced by change(bytes, header length)."""
    def edit(path: Path) -> None:
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(change(data, struct.unpack("<Q", data[:8])[0]))
    return edit


def sharded(change: Callable[[dict, dict, dict], object] = lambda a, b, index: None) -> Edit:
    """The weights split over two shards with an index; change(shard 1, shard 2, index) edits them."""
    def edit(path: Path) -> None:
        weights = load_file(path / "model.safetensors")
        (path / "model.safetensors").unlink()
        names = sorted(weights)
        first, second = {n: weights[n] for n in names[::2]}, {n: weights[n] for n in names[1::2]}
        index = {"metadata": {}, "weight_map": {**{n: "model-1.safetensors" for n in first},
                                                **{n: "model-2.safetensors" for n in second}}}
        change(first, second, index)
        save_file(first, path / "model-1.safetensors")
        save_file(second, path / "model-2.safetensors")
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return edit


def link(name: str, target: str) -> Edit:
    def edit(path: Path) -> None:
        (path / name).unlink(missing_ok=True)
        (path / name).symlink_to(target)
    return edit


def sparse_huge_embedding(path: Path) -> None:
    """The embedding claimed as 2**26 x 32 float32 (8 GiB) in a sparse file, which costs no
    disk: a loader that read a tensor before checking its shape would try to allocate it."""
    weights = load_file(path / "model.safetensors")
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(weights):
        shape = [2**26, 32] if name == EMBEDDING else list(weights[name].shape)
        size = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        blobs.append((offset, b"" if name == EMBEDDING else weights[name].numpy().tobytes()))
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path / "model.safetensors", "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        for start, blob in blobs:
            file.seek(8 + len(text) + start)
            file.write(blob)
        file.truncate(8 + len(text) + offset)


def drop_chat_template(then: Edit) -> Edit:
    """Without chat_template.jinja, which transformers prefers to tokenizer_config.json's."""
    def edit(path: Path) -> None:
        (path / "chat_template.jinja").unlink()
        then(path)
    return edit


def remove(*names: str) -> Edit:
    return lambda path: [(path / name).unlink() for name in names]


def bomb(count: int) -> str:
    return "[" + ",".join(["{}"] * count) + "]"


# -- the table: name -> (edit, a fragment of the error; None: it loads and runs) --------------

SIZES = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "head_dim", "max_position_embeddings"]
# Every JSON spelling of a bad size, and the end of the message that refuses it.
BAD_SIZES = {"zero": ("0", ">= 1, got 0"), "negative": ("-1", ">= 1, got -1"), "nan": ("NaN", ">= 1, got nan"),
             "infinity": ("Infinity", ">= 1, got inf"), "bool": ("true", ">= 1, got True"),
             "string": ('"32"', ">= 1, got '32'"), "fraction": ("32.5", ">= 1, got 32.5"),
             "1e12": (str(10**12), "<= 2,147,483,647, got 1000000000000"),
             "10**400": (str(10**400), "<= 2,147,483,647, got 1000000000"), "1e400": ("1e400", ">= 1, got inf")}
BAD_POSITIVES = {"zero": "0", "negative": "-1", "nan": "NaN", "infinity": "Infinity", "minus-infinity": "-Infinity",
                 "bool": "true", "string": '"1e-5"', "10**400": str(10**400)}
BAD_TOKEN_IDS = {"negative": "-1", "nan": "NaN", "bool": "true", "float": "2.0", "10**400": str(10**400),
                 "string": '"</s>"', "nested": "[[1]]", "object": '{"a": 1}', "outside": "256"}

CASES: dict[str, tuple[Edit, str | None]] = {
    **{f"{field}-{kind}": (config_literal(field, literal), f"config.json: {field} must be an integer {rule}")
       for field in SIZES for kind, (literal, rule) in BAD_SIZES.items()},
    **{f"{field}-{kind}": (config_literal(field, literal), f"config.json: {field} must be a finite number > 0")
       for field in ("rms_norm_eps", "rope_theta") for kind, literal in BAD_POSITIVES.items()},
    **{f"{field}-{kind}": (config_literal(field, literal), f"config.json: {field} must be a token id in [0, 256)")
       for field in ("bos_token_id", "eos_token_id") for kind, literal in BAD_TOKEN_IDS.items()},
    "generation-eos-nested": (edit_json("generation_config.json", eos_token_id=[[1]]),
                              "generation_config.json: eos_token_id must be a token id"),
    "generation-eos-object": (edit_json("generation_config.json", eos_token_id={"a": 1}), "eos_token_id must be"),
    "generation-eos-10**400": (edit_json("generation_config.json", eos_token_id=10**400), "eos_token_id must be"),
    "generation-eos-bool": (edit_json("generation_config.json", eos_token_id=True), "eos_token_id must be"),
    "generation-eos-empty-list": (edit_json("generation_config.json", eos_token_id=[]), None),
    "generation-eos-list": (edit_json("generation_config.json", eos_token_id=[5, 7]), None),
    "generation-fields-unused": (edit_json("generation_config.json", max_length=math.nan, temperature="hot"), None),
    "generation-not-json": (write("generation_config.json", "{"), "generation_config.json is not valid JSON"),
    "generation-a-list": (write("generation_config.json", "[]"), "generation_config.json does not hold a JSON object"),
    # RoPE
    "rope-llama3": (config(rope_scaling=LLAMA3), None),
    "rope-unknown-type": (config(rope_scaling={"rope_type": "longrope", "factor": 4.0}), "unsupported rope scaling 'longrope'"),
    "rope-type-a-list": (config(rope_scaling={"rope_type": ["llama3"]}), "unsupported rope scaling ['llama3']"),
    "rope-factor-zero": (config(rope_scaling={**LLAMA3, "factor": 0}), "rope scaling: factor must be a finite number > 0"),
    "rope-factor-negative": (config(rope_scaling={"rope_type": "linear", "factor": -2}), "factor must be"),
    "rope-factor-nan": (config(rope_scaling={"rope_type": "linear", "factor": math.nan}), "got nan"),
    "rope-factor-1e400": (config_literal("rope_scaling", '{"rope_type": "linear", "factor": 1e400}'), "got inf"),
    "rope-factor-tiny": (config(rope_scaling={"rope_type": "linear", "factor": 1e-310}),
                         "linear scaling by 1e-310 makes RoPE's angles overflow float32"),
    "rope-theta-tiny": (config(rope_theta=1e-320, rope_parameters={"rope_type": "default", "rope_theta": 1e-320}),
                        "makes RoPE's angles overflow float32"),
    "rope-theta-huge": (config(rope_theta=1e300), None),
    "rope-llama3-missing-keys": (config(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
                                 "rope scaling has no low_freq_factor"),
    "rope-llama3-low-equals-high": (config(rope_scaling={**LLAMA3, "high_freq_factor": 1.0}),
                                    r"high_freq_factor (1.0) must be above low_freq_factor (1.0)"),
    "rope-original-max-zero": (config(rope_scaling={**LLAMA3, "original_max_position_embeddings": 0}),
                               "original_max_position_embeddings must be an integer >= 1, got 0"),
    "rope-scaling-a-list": (config(rope_scaling=[1, 2]), "rope_scaling must be an object"),
    "rope-theta-nan-in-parameters": (config(rope_parameters={"rope_type": "default", "rope_theta": math.nan}),
                                     "rope_theta must be a finite number > 0, got nan"),
    # shapes and switches
    "max-position-1e12": (config(max_position_embeddings=10**12), "max_position_embeddings must be an integer <= "),
    # Valid, and the engine's context defaults to min(it, 8192): no RoPE table of 2**31 rows.
    "max-position-2**31-1": (config(max_position_embeddings=2**31 - 1), None),
    # Past 2**24, token ids carried in float32 (beam search, the recorder) round to other tokens.
    "vocab-past-2**24": (config(vocab_size=2**24 + 1), "vocab_size must be an integer <= 16,777,216, got 16,777,217"),
    "heads-not-divisible": (config(num_key_value_heads=3), "must be a multiple of num_key_value_heads (3)"),
    "head-dim-odd": (config(head_dim=7), "head_dim must be even"),
    "head-dim-zero": (config(head_dim=0), "head_dim must be an integer >= 1, got 0"),
    "hidden-act-gelu": (config(hidden_act="gelu"), "unsupported hidden_act 'gelu'"),
    "tie-a-string": (config(tie_word_embeddings="false"), "tie_word_embeddings must be true or false, got 'false'"),
    "tie-an-int": (config(tie_word_embeddings=1), "tie_word_embeddings must be true or false, got 1"),
    "attention-bias-a-string": (config(attention_bias="false"), "attention_bias must be true or false"),
    "torch-dtype-unknown": (config(torch_dtype="float7", dtype="float7"), "torch_dtype must name a torch dtype"),
    "torch-dtype-a-list": (config(dtype=[1]), "dtype must name a torch dtype (float32, bfloat16, ...), got [1]"),
    "torch-dtype-float64": (config(torch_dtype="float64", dtype="float64"), None),  # the engine's dtype is its own
    "architectures-a-string": (config(architectures="LlamaForCausalLM"), "architectures must be a list"),
    "architectures-a-number": (config(architectures=5), "architectures must be a list of class names, got 5"),
    "pad-negative": (config(pad_token_id=-1), None),  # some converted Llama checkpoints set it so
    # Fields only transformers reads, type-checked by it as it loads the tokenizer: named by file.
    "use-cache-a-string": (config(use_cache="x"), "config.json: Validation error for field 'use_cache'"),
    "initializer-range-a-string": (config(initializer_range="abc"), "config.json: Validation error for field"),
    "pad-past-the-vocabulary": (config(pad_token_id=10**6), None),  # nothing pads: only its type matters
    **{f"pad_token_id-{kind}": (config_literal("pad_token_id", literal), "config.json: pad_token_id must be a whole "
                                "number or null, got")
       for kind, literal in BAD_TOKEN_IDS.items() if kind in ("nan", "bool", "float", "string", "nested", "object")},
    # config.json as a file
    "config-a-list": (write("config.json", "[1, 2]"), "config.json does not hold a JSON object"),
    "config-not-json": (write("config.json", "{not json"), "config.json is not valid JSON"),
    "config-latin-1": (write("config.json", b'{"x": "caf\xe9"}'), "config.json is not valid JSON"),
    "config-depth-bomb": (write("config.json", "[" * 100000 + "]" * 100000), "config.json is not valid JSON"),
    "config-deep-field": (config_literal("extra", "[" * 900 + "]" * 900), "config.json nests deeper than 32 levels"),
    "config-over-1-MiB": (config_literal("extra", bomb(2**20 // 3 + 10)), "bytes, over the 1,048,576 a model's config.json"),
    "config-a-folder": (lambda path: ((path / "config.json").unlink(), (path / "config.json").mkdir()), "is a folder"),
    "config-to-dev-zero": (link("config.json", "/dev/zero"), "config.json is not a regular file"),
    # weights
    "weights-missing-tensor": (tensors(lambda w: w.pop("model.norm.weight")), "lacks 1 tensor(s), e.g. ['model.norm.weight']"),
    "weights-extra-tensor": (replace("model.foo", torch.zeros(3)), "'model.foo' in {dir}/model.safetensors matches no parameter"),
    "weights-extra-layer": (replace("model.layers.2.input_layernorm.weight", torch.ones(32)), "matches no parameter"),
    "weights-stored-rope-table": (replace("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(4)), None),
    "weights-wrong-shape": (replace("model.norm.weight", torch.ones(33)), "has shape (33,), config.json implies (32,)"),
    "weights-wrong-stacked-shape": (replace("model.layers.0.self_attn.k_proj.weight", torch.ones(32, 32)),
                                    "has shape (32, 32), config.json implies (16, 32)"),
    "weights-int8": (replace("model.norm.weight", torch.ones(32, dtype=torch.int8)), "'model.norm.weight' in {dir}/model.safetensors is I8"),
    "weights-bool": (replace("model.norm.weight", torch.ones(32, dtype=torch.bool)), "is BOOL; minillama reads weights stored as"),
    "weights-int64": (replace("model.norm.weight", torch.ones(32, dtype=torch.int64)), "is I64"),
    "weights-fp8": (replace("model.norm.weight", torch.ones(32).to(torch.float8_e4m3fn)), "is F8_E4M3"),
    "weights-float64": (replace("model.norm.weight", torch.ones(32, dtype=torch.float64)), None),
    "weights-float16": (tensors(lambda w: w.update({n: t.half() for n, t in w.items()})), None),
    "weights-bfloat16": (tensors(lambda w: w.update({n: t.bfloat16() for n, t in w.items()})), None),
    "weights-nan": (tensors(lambda w: w["model.layers.0.mlp.up_proj.weight"].__setitem__((0, 0), math.nan)),
                    "'model.layers.0.mlp.up_proj.weight' in {dir}/model.safetensors holds NaN or infinite values"),
    "weights-infinity": (tensors(lambda w: w["model.norm.weight"].__setitem__(0, -math.inf)), "holds NaN or infinite"),
    "weights-float64-past-float32": (replace("model.norm.weight", torch.full((32,), 1e300, dtype=torch.float64)),
                                     "holds NaN or infinite values (in float32)"),
    "weights-header-claims-more": (file_bytes(lambda data, n: data[:-100]), "cannot read weights from {dir}/model.safetensors"),
    "weights-truncated": (file_bytes(lambda data, n: data[: len(data) // 2]), "cannot read weights from"),
    "weights-truncated-in-header": (file_bytes(lambda data, n: data[:100]), "cannot read weights from"),
    "weights-header-length-2**63": (file_bytes(lambda data, n: struct.pack("<Q", 2**63) + data[8:]), "header too large"),
    "weights-header-not-json": (file_bytes(lambda data, n: data[:8] + b"x" * n + data[8 + n:]), "invalid JSON in header"),
    "weights-empty-file": (write("model.safetensors", b""), "cannot read weights from"),
    "weights-sparse-huge-tensor": (sparse_huge_embedding, "has shape (67108864, 32), config.json implies (256, 32)"),
    "weights-to-dev-zero": (link("model.safetensors", "/dev/zero"), "model.safetensors is not a regular file"),
    "weights-dangling-link": (link("model.safetensors", "/nonexistent"), "model.safetensors is not a regular file but a "
                              "link that leads to none"),
    # A file that stats as regular and fails to read: the one line was "[Errno 5] Input/output error".
    **{f"{name}-unreadable": (link(name, "/proc/self/mem"), f"cannot read {{dir}}/{name}: Input/output error")
       for name in ("config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json")},
    # A link to itself was "not a regular file (a device, a pipe or a socket)".
    **{f"{name}-link-loop": (link(name, name), f"{name} is not a regular file but a link that leads to none")
       for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja")},
    "weights-pickled-only": (lambda path: (path / "model.safetensors").rename(path / "pytorch_model.bin"),
                             "has only pickled weights (pytorch_model.bin)"),
    "shards": (sharded(), None),
    "shards-same-tensor-twice": (sharded(lambda a, b, index: b.update({EMBEDDING: a[EMBEDDING] + 1})),
                                 "'model.embed_tokens.weight' is in both {dir}/model-1.safetensors and {dir}/model-2"),
    "shards-index-names-a-missing-one": (sharded(lambda a, b, index: index["weight_map"].update(x="model-3.safetensors")),
                                         "is missing weight shard(s) named in its index: model-3.safetensors"),
    "shards-outside-the-folder": (sharded(lambda a, b, index: index["weight_map"].update(x="../model-1.safetensors")),
                                  "shard '../model-1.safetensors' is not a file name in"),
    "shards-absolute-path": (sharded(lambda a, b, index: index["weight_map"].update(x="/etc/passwd")), "is not a file name"),
    "shards-weight-map-a-list": (sharded(lambda a, b, index: index.update(weight_map=["model-1.safetensors"])),
                                 "its weight_map must map tensor names to file names"),
    "shards-no-weight-map": (sharded(lambda a, b, index: index.pop("weight_map")), "its weight_map must map"),
    "shards-empty-weight-map": (sharded(lambda a, b, index: index.update(weight_map={})), "the checkpoint lacks 20 tensor(s)"),
    "shards-index-a-list": (lambda path: (sharded()(path), write("model.safetensors.index.json", "[]")(path)),
                            "model.safetensors.index.json does not hold a JSON object"),
    # transformers reads model.safetensors first: an index or other weight files beside it
    # (a stale save's, Mistral's consolidated.safetensors) are not read.
    "index-beside-model-safetensors": (write("model.safetensors.index.json",
                                             '{"weight_map": {"x": "model-9.safetensors"}}'), None),
    "other-weights-beside-model-safetensors": (write("consolidated.safetensors", b"not safetensors"), None),
    # tokenizer files
    "tokenizer-not-json": (write("tokenizer.json", "{not json"),
                           "cannot load the tokenizer from {dir}: tokenizer.json is not a tokenizer file the tokenizers"),
    "tokenizer-model-a-number": (write("tokenizer.json", '{"model": 5}'), "tokenizer.json is not a tokenizer file"),
    "tokenizer-no-added-tokens": (write("tokenizer.json", '{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, '
                                                          '"merges": []}}'), "tokenizer.json has no 'added_tokens' field"),
    "tokenizer-truncated": (lambda path: (path / "tokenizer.json").write_text((path / "tokenizer.json").read_text()[:500]),
                            "cannot load the tokenizer from"),
    "tokenizer-depth-bomb": (write("tokenizer.json", "[" * 100000 + "]" * 100000), "cannot load the tokenizer from"),
    "tokenizer-over-64-MiB": (write("tokenizer.json", '"' + "x" * (64 * 2**20) + '"'), "over the 67,108,864 a model's tokenizer.json"),
    "tokenizer-container-bomb": (write("tokenizer.json", bomb(2**21 + 1)), "tokenizer.json holds over 2,097,152 JSON objects"),
    "tokenizer-config-bomb": (write("tokenizer_config.json", bomb(2**21 + 1)), "tokenizer_config.json holds over 2,097,152"),
    "tokenizer-a-pipe": (lambda path: ((path / "tokenizer.json").unlink(), os.mkfifo(path / "tokenizer.json")),
                         "tokenizer.json is not a regular file"),
    "tokenizer-max-length-huge": (edit_json("tokenizer_config.json", model_max_length=10**400), None),
    "tokenizer-max-length-a-string": (edit_json("tokenizer_config.json", model_max_length="big"),
                                      "tokenizer_config.json: model_max_length must be a number, got 'big'"),
    "tokenizer-eos-not-a-string": (edit_json("tokenizer_config.json", eos_token=5),
                                   "Special token eos_token has to be either str or AddedToken"),
    "tokenizer-bos-unknown": (edit_json("tokenizer_config.json", bos_token="<never-seen>"), None),
    "tokenizer-remote-code": (edit_json("tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.Tok", None]}), None),
    "tokenizer-config-a-list": (write("tokenizer_config.json", "[]"), "cannot load the tokenizer from"),
    "special-tokens-map-bad": (write("special_tokens_map.json", '{"eos_token": [1, 2]}'), "Special token eos_token"),
    # A chat template transformers cannot choose refuses chat requests only (InvalidRequestError,
    # tests/test_chat_template.py); the model loads and runs on token ids and plain text.
    "chat-templates-with-no-default": (drop_chat_template(edit_json("tokenizer_config.json", chat_template=[
        {"name": "tool_use", "template": "x"}])), None),
    "chat-template-a-number": (drop_chat_template(edit_json("tokenizer_config.json", chat_template=5)), None),
    "no-tokenizer": (remove("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"), None),
    "tokenizer-config-only": (remove("tokenizer.json"), "cannot load the tokenizer from"),
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """name -> the tiny model with the case's edit, made once."""
    root = tmp_path_factory.mktemp("hostile")
    tiny = write_tiny_model(root / "tiny")
    made = {}
    for name, (edit, _) in CASES.items():
        made[name] = root / name
        shutil.copytree(tiny, made[name])
        edit(made[name])
    return made


REFUSED = {name: fragment for name, (_, fragment) in CASES.items() if fragment is not None}
LOADS = [name for name, (_, fragment) in CASES.items() if fragment is None]


@pytest.mark.parametrize("name", REFUSED, ids=REFUSED)
def test_a_hostile_directory_is_one_line_and_status_2(dirs, capsys, name):
    started = time.monotonic()
    code = minillama.__main__.main(["--prompt", "hi", "--model", str(dirs[name]), "--device", "cpu",
                                    "--num-kv-blocks", "8", "--block-size", "4", "--max-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("python -m minillama: error: "), err
    assert REFUSED[name].format(dir=dirs[name]) in err
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("name", LOADS)
def test_an_unusual_but_valid_directory_loads_and_runs(dirs, name):
    engine = LLMEngine.from_pretrained(dirs[name], EngineConfig(device="cpu", num_kv_blocks=8, block_size=4))
    run(engine, [[1, 2, 3]] + (["hi"] if engine.tokenizer is not None else []))


def run(engine: LLMEngine, prompts: list) -> None:
    """Each prompt to the end, greedily: each generates a token at least."""
    ids = [engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=3)) for prompt in prompts]
    while engine.has_unfinished():
        engine.step()
    assert all(engine.request(i).output_token_ids for i in ids)


def test_from_pretrained_raises_the_same_model_load_error(dirs):
    with pytest.raises(ModelLoadError, match="holds NaN or infinite values"):
        LLMEngine.from_pretrained(dirs["weights-nan"], EngineConfig(device="cpu", num_kv_blocks=8, block_size=4))


def test_the_rope_tables_are_sized_before_they_are_made(dirs):
    """max_position_embeddings 2**31 - 1 is valid, and a context that long is refused from the
    arithmetic (64 GiB of RoPE tables), not allocated."""
    config = EngineConfig(device="cpu", num_kv_blocks=8, block_size=4, max_model_len=2**31 - 1)
    with pytest.raises(ModelLoadError, match="RoPE tables for 2,147,483,647 positions would take 64.0 GiB"):
        LLMEngine.from_pretrained(dirs["max-position-2**31-1"], config)


@pytest.mark.parametrize("vocab_size", [300, 100], ids=["padded-vocabulary", "tokenizer-past-the-vocabulary"])
def test_a_vocabulary_the_tokenizer_disagrees_with(tmp_path, vocab_size):
    """More embeddings than tokens (a padded vocabulary) is common and runs; fewer is refused per
    request whose text encodes past them, while token ids within it still run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(**{**TINY, "vocab_size": vocab_size}, tie_word_embeddings=True, bos_token_id=None,
                                 eos_token_id=None, pad_token_id=None)).save_pretrained(tmp_path)
    write_byte_tokenizer(tmp_path)
    engine = LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=8, block_size=4))
    if vocab_size > 256:
        run(engine, [[1, 2, 299], "hi"])
    else:
        with pytest.raises(InvalidRequestError, match="outside this model's vocabulary of 100"):
            engine.add_request("a b", SamplingParams(max_tokens=3))  # " " is token 220
        run(engine, [[1, 2, 99]])
