"""A tiny random Llama directory with a byte-level tokenizer and a chat template, written in
about a second: the model for tests of bad input, where what matters is what the engine and
the command lines refuse, not what the model says."""

from __future__ import annotations

from pathlib import Path

import torch

# vocab_size 256: one token per byte, so the tokenizer below fits the embedding.
TINY = dict(
    vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
)
CHAT_TEMPLATE = "{% for m in messages %}[{{ m.content }}]{% endfor %}"


def write_tiny_model(path: Path, tokenizer: bool = True, seed: int = 0, **settings: int) -> Path:
    """config.json + model.safetensors (+ tokenizer files) under `path`, no EOS token; the
    weights drawn from `seed` (another seed: another model of the same shape); `settings`
    override TINY's (max_position_embeddings=2048: a longer context)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**TINY, **settings}, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    if tokenizer:
        write_byte_tokenizer(path)
    return path


def write_byte_tokenizer(path: Path) -> None:
    """A byte-level BPE with no merges: every UTF-8 byte is a token, any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
