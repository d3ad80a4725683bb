"""What of a model's generation settings the engine honours: the ids it stops at; and what it
refuses: the logits processors and stop strings transformers' generate applies to every request.

transformers' generate reads its settings from generation_config.json when the model directory
has one, else from config.json (GenerationConfig.from_model_config: a legacy config.json may
carry them). Two kinds of settings live there:

- how to decode (do_sample, temperature, top_p, top_k, num_beams, max_new_tokens...): defaults
  a caller of generate overrides. Here each request says them (SamplingParams), so the file's
  defaults are not read.
- logits processors and stopping rules (APPLIED_TO_EVERY_REQUEST below): generate builds them
  from the settings alone and applies them whatever the caller asks, greedy or sampled,
  changing the tokens it picks or where it stops (a repetition penalty, banned or forced
  tokens, stop strings). The engine implements none of them, so a model whose settings turn one
  on is refused, naming the field and its value: it would otherwise answer other tokens than
  generate, without a word.
"""

from __future__ import annotations

from typing import Any

from minillama.errors import ModelLoadError

# field -> (its values that turn nothing on: transformers' GenerationConfig defaults and their
# equivalents; what generate then does to every request).
APPLIED_TO_EVERY_REQUEST: dict[str, tuple[tuple[Any, ...], str]] = {
    "repetition_penalty": ((1.0,), "divides the logits of tokens already in the sequence"),
    "no_repeat_ngram_size": ((0,), "bans tokens that would repeat an n-gram"),
    "bad_words_ids": (([],), "bans token sequences"),
    "suppress_tokens": (([],), "bans tokens"),
    "begin_suppress_tokens": (([],), "bans tokens at the first generated position"),
    "sequence_bias": (([], {}), "adds a bias to the logits of token sequences"),
    "forced_bos_token_id": ((), "forces the first token after a one-token prompt"),
    "forced_eos_token_id": ((), "forces an end token at the maximum length"),
    "min_length": ((0,), "bans the end token until the sequence is that long"),
    "min_new_tokens": ((0,), "bans the end token until that many tokens are generated"),
    "exponential_decay_length_penalty": ((), "raises the end token's logit past a length"),
    "guidance_scale": ((1.0,), "classifier-free guidance"),
    "watermarking_config": ((), "biases the logits to watermark the text"),
    "stop_strings": (([], ""), "ends a sequence at these strings"),
    "token_healing": ((False,), "generates the prompt's last token again"),
}


def check_generation_settings(raw: dict[str, Any], where: str) -> None:
    """Raise ModelLoadError naming the first field of `raw` (generation_config.json's object, or
    config.json's where that file is absent; `where` names it) that turns on a logits processor
    or stopping rule generate would apply to every request. null, and each field's neutral
    values, pass."""
    for field, (neutral, effect) in APPLIED_TO_EVERY_REQUEST.items():
        value = raw.get(field)
        if value is None or _is_one_of(value, neutral):
            continue
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ModelLoadError(
            f"{where} sets {field}={shown}: transformers' generate applies it to every request ({effect}), "
            f"which minillama does not implement; remove it from {where} to run the model without it"
        )


def _is_one_of(value: Any, neutral: tuple[Any, ...]) -> bool:
    """value equals one of `neutral`, a boolean only a boolean (in Python True == 1.0, False == 0)."""
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral)
