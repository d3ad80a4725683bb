"""The Llama decoder: embeddings, N x (attention + MLP, each with RMSNorm and a residual), LM head.

Every tensor is flat over the batch: [N, ...] for the N new tokens of all sequences in the step.
Parameter names follow Hugging Face's, except that q/k/v_proj are stacked into qkv_proj and
gate/up_proj into gate_up_proj (one matmul each instead of three and two); the loader stacks them.

The layers say what is computed; the ops table they are built with (minillama/ops/table.py,
chosen once per engine) says by which code: readable PyTorch (minillama/ops/reference/, where
the formulas are) or kernels that compute the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from minillama.config import ModelConfig
from minillama.model.attention_metadata import AttentionMetadata
from minillama.model.linear import Linear
from minillama.model.mlp import LlamaMLP
from minillama.model.norm import RMSNorm
from minillama.model.rotary import RotaryEmbedding
from minillama.ops.table import Ops
from minillama.parallel.shard import WHOLE_MODEL, Shard
from minillama.parallel.vocab import VocabParallelEmbedding

# on_attention(layer, q, k, v, output, metadata): q [N, H, D] and k [N, Hkv, D] after RoPE,
# v [N, Hkv, D], output [N, H, D] (attention before o_proj).
AttentionHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata], None]
# on_layer(layer, stream, metadata): the residual stream [N, hidden] after the layer, i.e. the
# sum of the embeddings and every attention and MLP output so far (what a logit lens reads).
LayerHook = Callable[[int, torch.Tensor, AttentionMetadata], None]


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, ops: Ops, shard: Shard):
        super().__init__()
        self.layer_idx = layer_idx
        # This rank's heads and KV heads (all of them without tensor parallelism).
        self.num_heads = config.num_attention_heads // shard.world
        self.num_kv_heads = config.num_key_value_heads // shard.world
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        # With attention_bias each of q/k/v_proj has a bias, stacked like their weights:
        # [q_size + 2 * kv_size]. It is added before RoPE rotates q and k, as in transformers.
        self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, ops, bias=config.attention_bias)
        # Row-parallel: its output summed over ranks, its bias (if any) added by one of them.
        self.o_proj = Linear(q_size, config.hidden_size, ops, bias=config.attention_bias)
        self.ops = ops
        self.shard = shard
        # This layer's slice of the paged KV cache, [num_blocks, block_size, Hkv, D] each; the
        # model runner binds them once it has sized the cache.
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)
        # Set by the model runner when an observer records queries: [rows, H, D], into which
        # a decode step copies its post-RoPE queries. A copy is a kernel, so it runs inside a
        # CUDA graph too, where a Python hook could not.
        self.query_out: torch.Tensor | None = None

    def forward(
        self,
        rope: tuple[torch.Tensor, torch.Tensor],
        x: torch.Tensor,
        metadata: AttentionMetadata,
        on_attention: AttentionHook | None,
    ) -> torch.Tensor:
        """rope: cos, sin [N, 1, D] of each token's position; x: [N, hidden] -> [N, hidden]."""
        qkv = self.qkv_proj(x).view(-1, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        reads_fresh_kv = metadata.is_prefill and metadata.block_tables is None
        if on_attention is not None or reads_fresh_kv:
            # The hook, and attention over the fresh keys (no sequence has any cached), need k
            # and v as tensors, beside their copies in the cache.
            q, k, v = self.ops.rotary_store_and_keep_kv(qkv, *rope, self.k_cache, self.v_cache, metadata)
        else:
            # RoPE on q and k, k and v written into the cache; attention then reads them there.
            q = self.ops.rotary_and_store(qkv, *rope, self.k_cache, self.v_cache, metadata)
            k = v = None
        if self.query_out is not None and not metadata.is_prefill:
            self.query_out[: q.shape[0]].copy_(q)
        if not metadata.is_prefill:
            out = self.ops.attention.decode(
                q.unsqueeze(1), self.k_cache, self.v_cache, metadata.context_lens, metadata.block_tables,
                softmax_scale=self.scale, causal=True,
            ).squeeze(1)
        elif metadata.block_tables is None:  # no sequence has cached K/V: use the fresh K/V
            out = self.ops.attention.varlen(
                q, k, v, metadata.cu_seqlens_q, metadata.cu_seqlens_k, metadata.max_seqlen_q,
                metadata.max_seqlen_k, softmax_scale=self.scale, causal=True,
            )
        else:
            out = self.ops.attention.varlen(
                q, self.k_cache, self.v_cache, metadata.cu_seqlens_q, metadata.cu_seqlens_k,
                metadata.max_seqlen_q, metadata.max_seqlen_k, softmax_scale=self.scale, causal=True,
                block_table=metadata.block_tables,
            )
        if on_attention is not None:
            on_attention(self.layer_idx, q, k, v, out, metadata)
        return self.shard.all_reduce(self.o_proj(out.flatten(1), with_bias=self.shard.adds_row_parallel_bias))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, ops: Ops, shard: Shard):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.self_attn = LlamaAttention(config, layer_idx, ops, shard)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.mlp = LlamaMLP(config.hidden_size, config.intermediate_size, ops, shard, bias=config.mlp_bias)

    def forward(
        self,
        rope: tuple[torch.Tensor, torch.Tensor],
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        metadata: AttentionMetadata,
        on_attention: AttentionHook | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The textbook layer is h = h + attn(norm(h)); h = h + mlp(norm(h)). Here the residual
        stream h travels separately from each block's output, and each addition happens inside
        the next norm (add_and_norm), where a fused kernel does both in one pass.

        hidden: the previous layer's MLP output (the embeddings for layer 0); residual: the sum
        of everything before it (None for layer 0). Returns (this layer's MLP output, residual)."""
        if residual is None:
            residual, normed = hidden, self.input_layernorm(hidden)
        else:
            normed, residual = self.input_layernorm.add_and_norm(hidden, residual)
        attn = self.self_attn(rope, normed, metadata, on_attention)
        normed, residual = self.post_attention_layernorm.add_and_norm(attn, residual)
        return self.mlp(normed), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, max_position: int, ops: Ops, shard: Shard):
        super().__init__()
        self.embed_tokens = (
            nn.Embedding(config.vocab_size, config.hidden_size) if shard.world == 1
            else VocabParallelEmbedding(config.vocab_size, config.hidden_size, shard)
        )
        # One RoPE table shared by all layers.
        self.rotary = RotaryEmbedding(config.head_dim, max_position, config.rope_theta, config.rope_scaling)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i, ops, shard) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig, max_position: int, ops: Ops, shard: Shard = WHOLE_MODEL):
        """The whole model, or with a Shard of world N > 1 this rank's part of every layer
        (minillama/parallel/shard.py): `config` is the whole model's either way."""
        super().__init__()
        self.config = config
        self.ops = ops  # what every layer computes with, attention included
        self.shard = shard
        self.model = LlamaModel(config, max_position, ops, shard)
        # This rank's rows of the vocabulary (all of them without tensor parallelism).
        self.lm_head = Linear(config.hidden_size, config.vocab_size // shard.world, ops)
        self.tie_weights()

    def tie_weights(self) -> None:
        """With tied embeddings the output projection reuses the input embedding matrix."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        metadata: AttentionMetadata,
        on_attention: AttentionHook | None = None,
        on_layer: LayerHook | None = None,
    ) -> torch.Tensor:
        """input_ids, positions: [N] -> final hidden states [N, hidden]."""
        hidden = self.model.embed_tokens(input_ids)
        rope = self.model.rotary.cos_sin(positions, hidden.dtype)
        residual = None
        for i, layer in enumerate(self.model.layers):
            hidden, residual = layer(rope, hidden, residual, metadata, on_attention)
            if on_layer is not None:  # the stream is carried in two parts: their sum
                on_layer(i, hidden + residual, metadata)
        return self.model.norm.add_and_norm(hidden, residual)[0]

    def compute_logits(self, hidden: torch.Tensor, float32: bool = True) -> torch.Tensor:
        """hidden: [B, hidden] (the rows that sample) -> logits [B, vocab] in fp32, or in the
        model's dtype when not `float32` (the sampler widens only the rows it draws from: a
        greedy row's argmax is the same either way, the widening being exact)."""
        logits = self.shard.all_gather(self.lm_head(hidden), dim=-1)  # [B, vocab]: every rank's slice
        return logits.float() if float32 else logits
