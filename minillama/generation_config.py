"""What of a model's generation settings the engine honours: the ids it stops at; and what it
runs without, saying so: the logits processors and stop strings transformers' generate applies
to every request.

transformers' generate reads its settings from generation_config.json when the model directory
has one, else from config.json (GenerationConfig.from_model_config: a legacy config.json may
carry them). Two kinds of settings live there:

- how to decode (do_sample, temperature, top_p, top_k, num_beams, max_new_tokens...): defaults
  a caller of generate overrides. Here each request says them (SamplingParams), so the file's
  defaults are not read.
- logits processors and stopping rules (APPLIED_TO_EVERY_REQUEST below): generate builds them
  from the settings alone and applies them whatever the caller asks, greedy or sampled,
  changing the tokens it picks or where it stops (a repetition penalty, banned or forced
  tokens, stop strings). The engine implements none of them. A model whose settings turn one on
  still loads (its weights are what a debugger looks at, and a caller of generate may turn the
  setting off too), with one UnappliedSettingWarning naming each such field and its value: where
  the setting acts, the engine's tokens differ from generate's, and the user must know it.
"""

from __future__ import annotations

import warnings
from typing import Any

from minillama.errors import UnappliedSettingWarning

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


def warn_unapplied_settings(raw: dict[str, Any], where: str) -> None:
    """Warn once (UnappliedSettingWarning) naming every field of `raw` (generation_config.json's
    object, or config.json's where that file is absent; `where` names it) that turns on a logits
    processor or stop rule generate would apply to every request. null, and each field's neutral
    values, say nothing."""
    set_fields = [f"{field}={_shown(value)}" for field, (neutral, _) in APPLIED_TO_EVERY_REQUEST.items()
                  if (value := raw.get(field)) is not None and not _is_one_of(value, neutral)]
    if set_fields:
        effects = "; ".join(APPLIED_TO_EVERY_REQUEST[item.split("=")[0]][1] for item in set_fields)
        warnings.warn(
            f"{where} sets {', '.join(set_fields)}, which transformers' generate applies to every request "
            f"({effects}); minillama does not implement it and runs without it, so its tokens can differ "
            "from generate's where it acts",
            UnappliedSettingWarning, stacklevel=2,
        )


def _shown(value: Any) -> str:
    """A value as the message quotes it: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_one_of(value: Any, neutral: tuple[Any, ...]) -> bool:
    """value equals one of `neutral`, a boolean only a boolean (in Python True == 1.0, False == 0)."""
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral)
