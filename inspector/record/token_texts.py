"""TokenTexts: token id -> the text of that token alone, decoded the first time it is asked for."""

from __future__ import annotations

from typing import Any


class TokenTexts(dict[int, str]):
    """A dict that fills itself: texts[token_id] decodes a token it has not met yet. Being a
    dict, texts.__getitem__ maps a list of ids in C (map(texts.__getitem__, ids)), which the
    recorder does for ten ids per token per step."""

    def __init__(self, tokenizer: Any | None):
        super().__init__()
        self.tokenizer = tokenizer  # None (random weights, no tokenizer): every text is ""

    def __missing__(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id]) if self.tokenizer is not None else ""
        self[token_id] = text
        return text
