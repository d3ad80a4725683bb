"""Token texts for the trace: TokenTexts (token id -> the text of that token alone, decoded the
first time it is asked for: the top-k alternatives, a fork's forced tokens; "" for a byte piece), and prompt_texts
(the text each prompt token completes, in context, as the engine streams its output)."""

from __future__ import annotations

from typing import Any

from minillama import IncrementalDetokenizer


def prompt_texts(tokenizer: Any | None, prompt_ids: list[int]) -> list[str]:
    """The text each prompt token completes, found the way output text is: a token ending inside
    a character (an emoji's first bytes) gets "", and the token completing it the whole
    character; a token is decoded after its neighbours, so a SentencePiece word keeps its
    leading space. Decoded alone, each piece of the emoji would show as U+FFFD. Special tokens
    keep their text ("<|begin_of_text|>"). All "" without a tokenizer."""
    if tokenizer is None:
        return [""] * len(prompt_ids)
    stream = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=False)
    texts = [stream.push(token_id) for token_id in prompt_ids]
    if texts:
        texts[-1] += stream.finish()  # a prompt ending inside a character: the last token shows its bytes
    return texts


class TokenTexts(dict[int, str]):
    """A dict that fills itself: texts[token_id] decodes a token it has not met yet. Being a
    dict, texts.__getitem__ maps a list of ids in C (map(texts.__getitem__, ids)), which the
    recorder does for ten ids per token per step."""

    def __init__(self, tokenizer: Any | None):
        super().__init__()
        self.tokenizer = tokenizer  # None (random weights, no tokenizer): every text is ""

    def __missing__(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id]) if self.tokenizer is not None else ""
        # A byte piece of a character (an emoji's, a Hebrew letter's) decodes alone to U+FFFD:
        # it has no text of its own, so it gets "" and the views show its id. Shown as "�",
        # the Next token chart listed several different tokens under one and the same label.
        if "\ufffd" in text:
            text = ""
        self[token_id] = text
        return text
