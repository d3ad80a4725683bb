"""Configuration: what the model is (ModelConfig) and how the engine runs it (EngineConfig)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minillama.errors import ModelLoadError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling ("rope_type": "llama3"); a model without it has none."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


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
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "float32"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Build from config.json's dict; raise ModelLoadError for what this engine cannot run."""
        archs = raw.get("architectures") or ["LlamaForCausalLM"]
        if raw.get("model_type", "llama") != "llama" or "LlamaForCausalLM" not in archs:
            raise ModelLoadError(
                f"unsupported architecture {archs} (model_type={raw.get('model_type')!r}); "
                "minillama runs Llama-architecture models (LlamaForCausalLM) only"
            )
        for flag in ("attention_bias", "mlp_bias"):
            if raw.get(flag):
                raise ModelLoadError(f"config.json sets {flag}=true, which Llama-3 models never do")
        if raw.get("hidden_act", "silu") != "silu":
            raise ModelLoadError(f"unsupported hidden_act {raw.get('hidden_act')!r} (expected silu)")
        try:
            heads = int(raw["num_attention_heads"])
            hidden = int(raw["hidden_size"])
            rope = _rope_settings(raw)
            eos = raw.get("eos_token_id")
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=rope[0],
                rope_scaling=rope[1],
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                bos_token_id=raw.get("bos_token_id"),
                eos_token_ids=tuple(eos if isinstance(eos, list) else [] if eos is None else [eos]),
                torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "float32"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"config.json is missing or has a bad value: {exc}") from exc
        if config.num_attention_heads % config.num_key_value_heads:
            raise ModelLoadError("num_attention_heads must be a multiple of num_key_value_heads")
        return config

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{path} is missing: a model directory needs config.json") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path} does not hold a JSON object")
        return cls.from_dict(raw)


def _rope_settings(raw: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """Read rope_theta and scaling from either the transformers 4 or 5 spelling of config.json."""
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or params
    theta = float(raw.get("rope_theta") or params.get("rope_theta") or 10000.0)
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ModelLoadError(f"unsupported rope scaling {kind!r} (supported: default, llama3)")
    return theta, RopeScaling(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )


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
    max_num_seqs: int = 64  # most sequences running at once (decode batch size)
    max_num_batched_tokens: int = 4096  # most tokens in one prefill step (chunked beyond)
    max_model_len: int | None = None  # None: min(model's max_position_embeddings, 8192)
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # True disables CUDA graphs
    fused_ops: bool = True  # CUDA with Triton: fused RMSNorm, RoPE + KV write, SwiGLU; CPU fp32: the C kernels
    seed: int = 0  # seeds the shared sampling generator (requests without their own seed)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
        return device

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {sorted(DTYPES)}")
        return DTYPES[self.dtype]

    def validate(self) -> None:
        checks = {
            "block_size": self.block_size >= 1,
            "max_num_seqs": self.max_num_seqs >= 1,
            "max_num_batched_tokens": self.max_num_batched_tokens >= 1,
            "num_kv_blocks": self.num_kv_blocks is None or self.num_kv_blocks >= 1,
            "gpu_memory_utilization": 0 < self.gpu_memory_utilization <= 1,
            "kv_cache_memory_gb": self.kv_cache_memory_gb > 0,
            "max_model_len": self.max_model_len is None or self.max_model_len >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"bad engine setting(s): {', '.join(bad)} (got {self})")
