"""Incremental detokenization: stream a sequence's text one generated token at a time.

Decoding token by token (`decode([t])` for each new token) is wrong for two reasons:

* Byte-level BPE (GPT-2 style) tokens are *bytes*, not characters. A multi-byte UTF-8 character
  such as "你" (E4 BD A0) or "🦙" (F0 9F A6 99) is often split over two or three tokens, and each
  piece on its own decodes to the replacement character U+FFFD.
* Some tokenizers (SentencePiece) decode a token differently at the start of a string than after
  other tokens (the leading space of the first token is dropped).

Decoding the whole output after every token is right but costs O(length) per step. Instead we
follow vLLM and decode only a small window of recent tokens, twice:

    tokens:  [ ... | already emitted | not yet emitted ]
                     ^ prefix_offset   ^ read_offset

    prefix_text = decode(tokens[prefix_offset:read_offset])
    new_text    = decode(tokens[prefix_offset:])
    delta       = new_text[len(prefix_text):]

The already-emitted tokens give the new ones their left context, and the delta is only emitted
once it does not end in U+FFFD, i.e. once the last character is complete. Then the window slides
forward, so each step costs O(window), not O(length).
"""

from __future__ import annotations

import copy
from typing import Protocol

# U+FFFD: what a UTF-8 decoder produces for bytes that are not (yet) a whole character.
REPLACEMENT_CHAR = "\ufffd"

# How many prompt tokens to decode as left context for the first output token.
NUM_CONTEXT_PROMPT_TOKENS = 5


class Tokenizer(Protocol):
    """What the detokenizer needs from a (Hugging Face) tokenizer."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str: ...


class IncrementalDetokenizer:
    """Turns a sequence's generated token ids into text one token at a time."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_token_ids: list[int],
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # Seed the window with the end of the prompt so the first output token is decoded in
        # context. If the prompt ends in the middle of a character its last bytes would merge
        # with the output's first, and that character belongs to neither text: start clean.
        context = list(prompt_token_ids[-NUM_CONTEXT_PROMPT_TOKENS:])
        if self._decode(context).endswith(REPLACEMENT_CHAR):
            context = []
        # Only the window is ever decoded, so the prompt's earlier tokens are not kept.
        self._token_ids: list[int] = context
        self._prefix_offset = 0  # start of the window: context for the tokens being decoded
        self._read_offset = len(context)  # tokens before this have been emitted as text
        self._chunks: list[str] = []

    def _decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)

    def _pending_text(self) -> str:
        """The text of the tokens after read_offset, decoded in the context of the window."""
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._token_ids[self._prefix_offset :])
        return new_text[len(prefix_text) :]

    def _emit(self, delta: str) -> str:
        # Slide the window: the tokens just emitted become the next step's left context.
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        self._chunks.append(delta)
        return delta

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes ("" if none yet)."""
        self._token_ids.append(token_id)
        delta = self._pending_text()
        # Nothing new (e.g. a skipped special token), or the last character still lacks bytes
        # that later tokens will bring: hold the tokens back and decode them again next step.
        if not delta or delta.endswith(REPLACEMENT_CHAR):
            return ""
        return self._emit(delta)

    def finish(self) -> str:
        """Flush the held-back tokens at the end of generation and return their text.

        A character the model left unfinished is emitted as its decode (with U+FFFD), so the
        full text equals decoding all output tokens at once.
        """
        return self._emit(self._pending_text())

    def fork(self) -> IncrementalDetokenizer:
        """A copy that goes on on its own from here (a beam forked from this one's sequence)."""
        twin = copy.copy(self)
        twin._token_ids, twin._chunks = list(self._token_ids), list(self._chunks)
        return twin

    @property
    def text(self) -> str:
        """All output text emitted so far."""
        return "".join(self._chunks)
