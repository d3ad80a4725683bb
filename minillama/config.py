"""Configuration: what the model is (ModelConfig) and how the engine runs it (EngineConfig)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minillama.errors import ConfigError, ModelLoadError
from minillama.model_files import read_json_object
from minillama.ops.attention import BACKEND_NAMES
from minillama.values import as_flag, as_int, as_number, is_int

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


# The most tokens a vocabulary may have: the sampler's beam search and the recorder's logits
# summary carry token ids in float32 tensors (one copy for ids and probabilities), exact up to
# 2**24; past it, ids round to their even neighbours. Llama 3 has 128,256.
MAX_VOCAB_SIZE = 2**24


# The MLP's activation as config.json may name it: transformers maps both names to SiLU,
# x * sigmoid(x) (swish is its older name), which is what SwiGLU computes here.
SILU_NAMES = ("silu", "swish")
# model_type -> the "architectures" config.json may name for it, and the defaults of the fields
# it may leave out where they differ from Llama's. Each names the causal LM and the decoder saved
# without its head (LlamaModel), which transformers loads into the causal LM (minillama/loader.py,
# _causal_lm_name): with tied embeddings its head is the embedding matrix, else it has none and
# the loader refuses it. Mistral is Llama's model with no biases (MistralForCausalLM builds its
# projections with bias=False, so its config's attention_bias or mlp_bias, if any, are not read)
# and a sliding window (_attention_window); its checkpoints name their tensors as Llama's do. Its
# defaults are transformers' MistralConfig's.
MODEL_TYPES: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {
    "llama": (("LlamaForCausalLM", "LlamaModel"), {}),
    "mistral": (("MistralForCausalLM", "MistralModel"),
                {"num_key_value_heads": 8, "max_position_embeddings": 4096 * 32, "sliding_window": 4096}),
}
# The model types whose config.json's attention_bias and mlp_bias give their projections a bias.
BIAS_FLAGS_READ = ("llama",)


@dataclass(frozen=True)
class RopeScaling:
    """How config.json stretches RoPE's frequencies ("rope_scaling"); a model without it has
    none. kind "linear": every frequency divided by `factor` (position interpolation);
    "llama3": the low frequencies divided, the high ones kept, a blend between, which uses
    low_freq_factor, high_freq_factor and original_max_position_embeddings; "yarn": the same
    idea with the blend placed by rotation counts (beta_fast, beta_slow, truncate) over the
    pretraining length, and cos/sin scaled by attention_factor (minillama/model/rotary.py)."""

    kind: str
    factor: float
    low_freq_factor: float = 0.0
    high_freq_factor: float = 0.0
    original_max_position_embeddings: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention_factor: float = 1.0  # every cos and sin is multiplied by it (1: unscaled)


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a Llama-architecture model, read from a Hugging Face config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_scaling: RopeScaling | None = None
    eos_token_ids: tuple[int, ...] = ()
    # sliding_window / attention_chunk_size: how many of the latest tokens a query sees in
    # transformers' generate (None: all of them); see _attention_window.
    attention_window: int | None = None
    # Whether q/k/v_proj and o_proj (attention_bias), and gate/up/down_proj (mlp_bias), add a bias
    # vector after their matmul: y = x @ W.T + b, as transformers' nn.Linear(bias=True).
    attention_bias: bool = False
    mlp_bias: bool = False

    @property
    def context_length(self) -> int:
        """The longest sequence this engine runs as transformers does: max_position_embeddings,
        or the attention window when that is shorter (full attention within it)."""
        return min(self.max_position_embeddings, self.attention_window or self.max_position_embeddings)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Build from config.json's dict; raise ModelLoadError, naming the field and its value,
        for anything this engine cannot run. Every size is checked here, before a tensor is
        made: a negative or boolean size would otherwise surface as a torch error deep inside
        the model's construction ("negative dimension -1280")."""
        if not isinstance(raw, dict):  # every field below is read with raw.get
            raise ModelLoadError(f"config.json must hold a JSON object (settings by name), got {type(raw).__name__}")
        model_type = raw.get("model_type", "llama")
        names, defaults = MODEL_TYPES.get(model_type, ((), {})) if isinstance(model_type, str) else ((), {})
        archs = raw.get("architectures") or list(names[:1])
        if not isinstance(archs, list):  # `in` would find the name inside a string, or fail on a number
            raise ModelLoadError(f"config.json: architectures must be a list of class names, got {archs!r}")
        if not any(arch in names for arch in archs):
            raise ModelLoadError(
                f"unsupported architecture {archs!r} (model_type={raw.get('model_type')!r}); minillama runs "
                "Llama-architecture models (LlamaForCausalLM, MistralForCausalLM) only"
            )
        raw = {**defaults, **raw}  # a field set to null stays null: MistralConfig reads it so too
        field = FieldReader(raw, "config.json")
        reads_biases = model_type in BIAS_FLAGS_READ
        quantization = raw.get("quantization_config")
        if quantization is not None:
            # GPTQ, AWQ, bitsandbytes, fp8...: the weights are stored as integers or 8-bit floats
            # with scales (qweight, weight_scale...), which transformers multiplies out through
            # a library of each method's own. Said here, before a tensor's name is found unknown.
            method = quantization.get("quant_method") if isinstance(quantization, dict) else None
            raise ModelLoadError(f"config.json has a quantization_config{f' ({_shown(method)})' if method else ''}: "
                                 "minillama runs unquantized checkpoints (float32, bfloat16, float16) only")
        if raw.get("hidden_act", "silu") not in SILU_NAMES:
            raise ModelLoadError(f"unsupported hidden_act {raw.get('hidden_act')!r} (expected silu)")
        for name in ("torch_dtype", "dtype"):
            field.torch_dtype(name)
        hidden, heads = field.size("hidden_size"), field.size("num_attention_heads")
        kv_heads = field.size("num_key_value_heads", default=heads)
        if heads % kv_heads:
            raise ModelLoadError(
                f"config.json: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads}): "
                "each key/value head serves a group of query heads"
            )
        max_position = field.size("max_position_embeddings", default=2048)
        theta, scaling = _rope_settings(raw, max_position)
        vocab_size = field.size("vocab_size")
        if vocab_size > MAX_VOCAB_SIZE:
            raise ModelLoadError(f"config.json: vocab_size must be an integer <= {MAX_VOCAB_SIZE:,}, got {vocab_size:,}: "
                                 "token ids travel as float32, exact up to 2**24")
        # Not used here, but transformers' tokenizer loader reads it and warns past the vocabulary.
        # pad_token_id is checked for its type only, as transformers does: some converted Llama
        # checkpoints set it to -1, and nothing here pads.
        field.token_ids("bos_token_id", vocab_size)
        if not (raw.get("pad_token_id") is None or is_int(raw["pad_token_id"])):
            raise ModelLoadError(f"config.json: pad_token_id must be a whole number or null, got "
                                 f"{_shown(raw['pad_token_id'])}")
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=field.size("intermediate_size"),
            num_hidden_layers=field.size("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=_head_dim(field, hidden, heads),
            rms_norm_eps=field.positive("rms_norm_eps", default=1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=max_position,
            tie_word_embeddings=field.flag("tie_word_embeddings", default=False),
            eos_token_ids=field.token_ids("eos_token_id", vocab_size),
            attention_window=_attention_window(field),
            attention_bias=reads_biases and field.flag("attention_bias", default=False),
            mlp_bias=reads_biases and field.flag("mlp_bias", default=False),
        )

    @property
    def num_parameters(self) -> int:
        """The weights' count: the embedding, each layer's projections (with their biases, if
        any) and two norms, the final norm, and the LM head unless it is the embedding (tied).
        Known before any tensor is made."""
        hidden, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        layer = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * self.intermediate_size + 2 * hidden
        layer += self.attention_bias * (q + 2 * kv + hidden) + self.mlp_bias * (2 * self.intermediate_size + hidden)
        embedding = self.vocab_size * hidden
        return embedding + self.num_hidden_layers * layer + hidden + (0 if self.tie_word_embeddings else embedding)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ModelConfig:
        path = Path(path)  # a str too, as every other path the library takes
        try:
            raw = read_json_object(path)
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{path} is missing: a model directory needs config.json") from exc
        return cls.from_dict(raw)


class FieldReader:
    """Reads the fields of a config dict, each checked, raising ModelLoadError that names the
    field, the rule and the value. A field set to null counts as absent."""

    def __init__(self, raw: dict[str, Any], where: str):
        self.raw, self.where = raw, where

    def _get(self, name: str, default: Any) -> Any:
        value = self.raw.get(name)
        if value is None:
            if default is None:
                raise ModelLoadError(f"{self.where} has no {name}")
            return default
        return value

    def size(self, name: str, default: int | None = None) -> int:
        return as_int(self._get(name, default), f"{self.where}: {name}", ModelLoadError, floats=True)

    def positive(self, name: str, default: float | None = None) -> float:
        return as_number(self._get(name, default), f"{self.where}: {name}", ModelLoadError)

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):  # bool("false") is True: a string must not pass
            raise ModelLoadError(f"{self.where}: {name} must be true or false, got {value!r}")
        return value

    def torch_dtype(self, name: str) -> None:
        """Check a dtype field (torch_dtype, dtype): the engine computes in its own dtype
        (EngineConfig.dtype), but transformers' tokenizer loader reads config.json too and does
        getattr(torch, value), which fails on a name torch does not have with a message that
        names neither the file nor the field."""
        value = self.raw.get(name)
        if value is None or value == "auto" or isinstance(value, torch.dtype):  # a transformers config's to_dict()
            return
        if not isinstance(value, str) or not isinstance(getattr(torch, value, None), torch.dtype):
            raise ModelLoadError(f"{self.where}: {name} must name a torch dtype (float32, bfloat16, ...), got {value!r}")

    def token_ids(self, name: str, vocab_size: int) -> tuple[int, ...]:
        """A token id or a list of them (eos_token_id may be either), each in [0, vocab_size);
        () when absent."""
        value = self.raw.get(name)
        ids = [] if value is None else value if isinstance(value, list) else [value]
        if not all(is_int(i) and 0 <= i < vocab_size for i in ids):
            raise ModelLoadError(f"{self.where}: {name} must be a token id in [0, {vocab_size}) (the vocabulary) "
                                 f"or a list of them, got {_shown(value)}")
        return tuple(ids)


def _shown(value: object) -> str:
    """A config value for an error message, cut to 80 characters (a hostile file's may be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _head_dim(field: FieldReader, hidden: int, heads: int) -> int:
    """head_dim as config.json sets it, else hidden_size / num_attention_heads.

    Some Llama-architecture models set head_dim explicitly with heads * head_dim != hidden_size:
    the q/o projections map hidden_size to heads * head_dim and back, so only the default needs
    the division to be exact. RoPE rotates feature pairs, so head_dim must be even."""
    if field.raw.get("head_dim") is not None:
        head_dim = field.size("head_dim")
    elif hidden % heads:
        raise ModelLoadError(
            f"config.json: hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads}) "
            "when head_dim is not given"
        )
    else:
        head_dim = hidden // heads
    if head_dim % 2:
        raise ModelLoadError(f"config.json: head_dim must be even (RoPE rotates pairs of features), got {head_dim}")
    return head_dim


def _attention_window(field: FieldReader) -> int | None:
    """sliding_window or attention_chunk_size (Mistral's and Llama-4's fields): past that many
    tokens a query sees only the latest ones. MistralForCausalLM applies its window everywhere;
    LlamaForCausalLM, whose config.json may carry one too, ignores it in a forward over the whole
    sequence while generate's cache (DynamicCache) applies it, so the same model answers two ways
    there. Within the window every one of them is the full attention this engine computes, so
    its context stops at the window (ModelConfig.context_length). layer_types, when given, says
    which layers are windowed; all "full_attention" means none is."""
    types = field.raw.get("layer_types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise ModelLoadError(f"config.json: layer_types must be a list of names, got {_shown(types)}")
    if types is not None and all(t == "full_attention" for t in types):
        return None
    for kind in dict.fromkeys(types or ()):  # each kind once, in order
        # A windowed layer without its window's size: transformers' forward and generate both
        # fail on it (the config has no such attribute); an unknown kind it refuses to load.
        if kind not in WINDOW_OF_LAYER_TYPE:
            raise ModelLoadError(f"config.json: layer_types names {_shown(kind)} layers; transformers' Llama knows "
                                 f"{', '.join(WINDOW_OF_LAYER_TYPE)}")
        size = WINDOW_OF_LAYER_TYPE[kind]
        if size is not None and field.raw.get(size) is None:
            raise ModelLoadError(f"config.json: layer_types names {kind} layers but sets no {size}")
    sizes = [field.size(name) for name in ("sliding_window", "attention_chunk_size") if field.raw.get(name) is not None]
    return min(sizes, default=None)


# A kind of layer config.json's layer_types may name -> the field holding its window's size.
WINDOW_OF_LAYER_TYPE = {"full_attention": None, "sliding_attention": "sliding_window",
                        "chunked_attention": "attention_chunk_size"}


def _rope_settings(raw: dict[str, Any], max_position: int) -> tuple[float, RopeScaling | None]:
    """RoPE's base and scaling, read from config.json in the order transformers 5 reads them, so
    that a file which spells them twice gives the same angles here as in LlamaForCausalLM:

    - the section is "rope_scaling" (transformers 4's name) when it is set, else
      "rope_parameters" (5's name); the other one is then ignored, its rope_theta included;
    - rope_theta inside the section wins over a top-level one (4 kept it at the top level);
    - original_max_position_embeddings at the top level wins over the section's (Phi-3-style
      files keep the pretraining length there), and defaults to max_position_embeddings."""
    params = _section(raw, "rope_parameters")
    scaling = _section(raw, "rope_scaling") or params
    top_level, field = FieldReader(raw, "config.json"), FieldReader(scaling, "config.json's rope scaling")
    # A top-level rope_theta is checked even where the section's wins: a file holding a NaN
    # there is damaged, whichever value a reader takes.
    theta = field.positive("rope_theta", default=top_level.positive("rope_theta", default=10000.0))
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return theta, None
    _refuse_partial_rotation(kind, top_level, field)
    if kind == "dynamic":
        # Dynamic NTK scaling raises RoPE's base only for sequences longer than
        # max_position_embeddings (transformers' LlamaRotaryEmbedding), and the engine never
        # runs past it: within it, the angles are the default ones.
        field.positive("factor")
        return theta, None
    if kind == "linear":
        return theta, RopeScaling(kind="linear", factor=field.positive("factor"))
    if kind not in ("llama3", "yarn"):
        raise ModelLoadError(f"unsupported rope scaling {kind!r} (supported: default, linear, dynamic, llama3, yarn)")
    name = "original_max_position_embeddings"
    original = top_level.size(name) if raw.get(name) is not None else field.size(name, default=max_position)
    if kind == "yarn":
        return theta, _yarn_scaling(field, original)
    low, high = field.positive("low_freq_factor"), field.positive("high_freq_factor")
    if high <= low:  # the schedule blends between the two: it divides by their difference
        raise ModelLoadError(
            f"config.json's rope scaling: high_freq_factor ({high}) must be above low_freq_factor ({low})"
        )
    return theta, RopeScaling(
        kind="llama3",
        factor=field.positive("factor"),
        low_freq_factor=low,
        high_freq_factor=high,
        original_max_position_embeddings=original,
    )


def _yarn_scaling(field: FieldReader, original: int) -> RopeScaling:
    """YaRN's settings, with transformers' defaults: factor (required, as transformers requires
    it) is the stretch of the context over the pretraining length; beta_fast and beta_slow
    (32 and 1) are the rotation counts over the pretraining length above which a frequency is
    kept and below which it is divided; attention_factor, when absent, is 0.1 ln(factor) + 1,
    or the ratio of two such terms weighted by mscale and mscale_all_dim when both are set."""
    factor = field.positive("factor")
    beta_fast, beta_slow = field.positive("beta_fast", default=32.0), field.positive("beta_slow", default=1.0)
    if beta_fast < beta_slow:  # the ramp runs from the fast boundary's dimension to the slow one's
        raise ModelLoadError(f"config.json's rope scaling: beta_fast ({beta_fast}) must not be below beta_slow ({beta_slow})")

    def mscale(weight: float) -> float:
        return 1.0 if factor <= 1 else 0.1 * weight * math.log(factor) + 1.0

    if field.raw.get("attention_factor") is not None:
        attention_factor = field.positive("attention_factor")
    elif field.raw.get("mscale") and field.raw.get("mscale_all_dim"):
        attention_factor = mscale(field.positive("mscale")) / mscale(field.positive("mscale_all_dim"))
    else:
        attention_factor = mscale(1.0)
    return RopeScaling(kind="yarn", factor=factor, original_max_position_embeddings=original, beta_fast=beta_fast,
                       beta_slow=beta_slow, truncate=field.flag("truncate", default=True),
                       attention_factor=attention_factor)


def _refuse_partial_rotation(kind: str, top_level: FieldReader, section: FieldReader) -> None:
    """partial_rotary_factor (the section's, else the top level's, as transformers 5 moves it):
    the fraction of each head's features RoPE rotates. Llama's default RoPE ignores it, but
    transformers' linear, dynamic and llama3 RoPE make angles for that fraction only, which
    LlamaForCausalLM's attention (rotating whole heads) cannot apply: its forward fails on a
    shape mismatch. Rotating whole heads here would answer where transformers cannot."""
    name = "partial_rotary_factor"
    if section.raw.get(name) is None and top_level.raw.get(name) is None:
        return
    factor = section.positive(name) if section.raw.get(name) is not None else top_level.positive(name)
    if factor != 1.0:
        raise ModelLoadError(f"config.json: {name} {factor:g} with {kind} RoPE rotates a part of each head, which "
                             "transformers' Llama and Mistral cannot run (their attention rotates whole heads)")


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ModelLoadError(f"config.json: {name} must be an object, got {value!r}")
    return value


# The scheduler's budgets when EngineConfig leaves them to the device: (max_num_seqs,
# max_num_batched_tokens). A GPU decode step reads every weight once, whatever the batch, so 256
# sequences cost little more than 16, and a prefill step wants thousands of tokens to keep the
# tensor cores busy (vLLM's defaults: 256 sequences, 8-16k tokens); on the 1B shape on an H200,
# 64 sequences ran at half the throughput of 256. A CPU step grows with the batch, and the web
# UI and the tests want small steps.
BATCH_DEFAULTS: dict[str, tuple[int, int]] = {"cpu": (64, 4096), "cuda": (256, 16384)}
ASYNC_SCHEDULING = ("auto", "on", "off")
# The most KV-cache memory one may ask for (a petabyte): a number, not a size, beyond it (1e308
# gigabytes overflow an integer count of bytes).
MAX_KV_CACHE_GB = 1e6


@dataclass
class EngineConfig:
    """How the engine runs: device, precision, KV-cache size and scheduler budgets."""

    device: str = "auto"  # "auto" picks cuda when available, else cpu
    dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 on CPU
    attention: str = "auto"  # auto | reference | sdpa | flash-attn | triton
    block_size: int = 16  # tokens per KV-cache block
    num_kv_blocks: int | None = None  # None: sized from kv_cache_memory_gb / gpu_memory_utilization
    kv_cache_memory_gb: float = 1.0  # CPU: memory for the KV cache when num_kv_blocks is None
    gpu_memory_utilization: float = 0.9  # CUDA: fraction of GPU memory the engine may use
    max_num_seqs: int | None = None  # most sequences running at once (decode batch size); None: BATCH_DEFAULTS
    max_num_batched_tokens: int | None = None  # most tokens in one prefill step (chunked beyond); None: BATCH_DEFAULTS
    max_model_len: int | None = None  # None: min(model's max_position_embeddings, 8192)
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # True disables CUDA graphs
    # Overlap scheduling (minillama/engine/in_flight.py): the host plans step N+1 while the GPU
    # runs step N. "auto": on with CUDA, off on a CPU (whose forward runs on the host itself).
    async_scheduling: str = "auto"
    fused_ops: bool = True  # CUDA with Triton: fused RMSNorm, RoPE + KV write, SwiGLU; CPU fp32: the C kernels
    seed: int = 0  # seeds the shared sampling generator (requests without their own seed)
    # Processes the model's layers are split across (minillama/parallel/): 1, the whole model in
    # this process; N > 1, heads and features split over N ranks (CPU processes over gloo).
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        # Refuse a bad field where the config is made, not steps later where an engine is built;
        # whether the machine has the GPU asked for is left to validate(), since a config may be
        # written on one machine for another (the GPU tests make theirs on CPU machines too).
        self.check_fields()

    def resolved_device(self) -> torch.device:
        _check_device(self.device)
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]

    def resolved_async_scheduling(self, device: torch.device) -> bool:
        """Whether an engine on `device` overlaps its steps (async_scheduling "auto": on CUDA)."""
        return self.async_scheduling == "on" or (self.async_scheduling == "auto" and device.type == "cuda")

    def for_device(self, device: torch.device) -> EngineConfig:
        """This config with the budgets it leaves to the device (None) set from BATCH_DEFAULTS."""
        seqs, tokens = BATCH_DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
        return dataclasses.replace(
            self, max_num_seqs=seqs if self.max_num_seqs is None else self.max_num_seqs,
            max_num_batched_tokens=tokens if self.max_num_batched_tokens is None else self.max_num_batched_tokens,
        )

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting and its command-line flag, or a device
        this machine does not have. Engines call it when built: a dataclass's fields can still
        be changed after __post_init__ checked them."""
        self.check_fields()
        _check_device(self.device)

    def check_fields(self) -> None:
        """Raise ConfigError naming the first bad setting and its command-line flag, the machine
        aside (a "cuda:3" is spelled right on any machine).

        Every field is checked for its type too: the engine would otherwise fail much later,
        inside torch or the scheduler, with a message that names neither."""
        _check_device_name(self.device)
        _check_choice("dtype", self.dtype, ("auto", *DTYPES))
        _check_choice("attention", self.attention, BACKEND_NAMES)
        _check_choice("async_scheduling", self.async_scheduling, ASYNC_SCHEDULING)
        as_int(self.block_size, _label("block_size"), ConfigError)
        as_int(self.tensor_parallel_size, _label("tensor_parallel_size"), ConfigError)
        for name in ("num_kv_blocks", "max_model_len", "max_num_seqs", "max_num_batched_tokens"):  # None: automatic
            if getattr(self, name) is not None:
                as_int(getattr(self, name), _label(name), ConfigError)
        as_number(self.kv_cache_memory_gb, _label("kv_cache_memory_gb"), ConfigError, at_most=MAX_KV_CACHE_GB)
        as_number(self.gpu_memory_utilization, _label("gpu_memory_utilization"), ConfigError, at_most=1.0)
        for name in ("enable_prefix_caching", "enforce_eager", "fused_ops"):
            as_flag(getattr(self, name), name, ConfigError)
        if not is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"{_label('seed')} must be an integer in [0, 2**63), got {self.seed!r}")


# EngineConfig fields whose command-line flag is not the field's name with dashes. The three
# switches are named for what giving them does: each flips its field's default.
_FLAGS = {
    "kv_cache_memory_gb": "--kv-cache-gb",
    "enable_prefix_caching": "--no-prefix-caching",
    "enforce_eager": "--eager",
    "fused_ops": "--no-fused-ops",
}


def flag_of(name: str) -> str:
    """The command-line flag that sets EngineConfig field `name` (minillama/cli/flags.py makes
    the flags from this, and error messages name them by it)."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _label(name: str) -> str:
    """A field's name and its flag, so that API and command-line users both recognise it."""
    return f"{name} ({flag_of(name)})"


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:  # str first: `in` would compare an array elementwise
        raise ConfigError(f"unknown {_label(name)} {value!r}; choose one of {', '.join(choices)}")


def _check_device_name(device: object) -> str:
    """auto, cpu, cuda or cuda:N. (torch.device would take "mps" or "meta" and fail later, far
    from the flag; "banana" raises a RuntimeError listing device types this engine does not run on.)"""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"unknown {_label('device')} {device!r}; choose auto, cpu, cuda or cuda:N")
    return device


def _check_device(device: object) -> None:
    """A device name _check_device_name takes whose GPU, if it names one, this machine has."""
    device = _check_device_name(device)
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"--device {device} was asked for, but torch sees no CUDA GPU; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
