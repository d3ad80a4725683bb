"""Token texts by position, and how to show them in HTML chips and on plot axes.

A sequence's positions are its prompt tokens, then the tokens it generated: position p holds
prompt token p for p < len(prompt), else output token p - len(prompt). The attention views label
keys by position, and the text panel shows one chip per token. Where a token has no text of its
own (a model without a tokenizer, or a token that ends in the middle of a UTF-8 character and
so completes no text yet) it shows as its id, "[id]".

Token text is untrusted (a prompt can hold "<script>"): chips and labels go through
markup.escape, which keeps them literal in HTML and in plotly's labels and hovers alike.
"""

from __future__ import annotations

from inspector.trace.model import Trace
from inspector.views.markup import INVISIBLE_MARKS, escape

# Whitespace made visible: a token is often just " " or "\n", which would otherwise show as nothing.
NEWLINE_MARK = "↵"
TAB_MARK = "⇥"
SPACE_MARK = "·"  # on plot axes only: the HTML chips keep real spaces (white-space: pre)
_MADE_VISIBLE = str.maketrans({"\n": NEWLINE_MARK, "\t": TAB_MARK, **INVISIBLE_MARKS})


def visible(text: str) -> str:
    """`text` with newlines, tabs and bidirectional controls made visible (not escaped): for
    labels shown as plain text (a dropdown's choices), and chips before they are escaped."""
    return text.translate(_MADE_VISIBLE)


def prompt_piece(trace: Trace, seq_id: int, position: int) -> str:
    """Prompt token `position` of `seq_id` as text ("" when it has none)."""
    seq = trace.sequences[seq_id]
    return seq.prompt_tokens[position] if position < len(seq.prompt_tokens) else ""


def output_pieces(trace: Trace, seq_id: int, until: int | None = None) -> list[tuple[int, int, str]]:
    """(step, token id, text) of each output token of `seq_id` sampled at or before step `until`
    (all of them when None), in order."""
    seq = trace.sequences[seq_id]
    result = []
    for token_id, step in zip(seq.output_ids, seq.token_steps):
        if until is not None and step > until:
            break  # token_steps only grows
        token = trace.steps[step].token_of(seq_id)
        result.append((step, token_id, token.text_delta if token is not None else ""))
    return result


def position_pieces(trace: Trace, seq_id: int, length: int) -> list[str]:
    """The text of positions 0..length-1 of `seq_id`: its prompt tokens, then its output
    tokens; "[id]" where a token has no text of its own."""
    seq = trace.sequences[seq_id]
    num_prompt = len(seq.prompt_ids)
    texts = [prompt_piece(trace, seq_id, p) for p in range(min(length, num_prompt))]
    if length > num_prompt:
        texts += [text for _, _, text in output_pieces(trace, seq_id)][: length - num_prompt]
    ids = [*seq.prompt_ids, *seq.output_ids]
    return [text or f"[{ids[p]}]" for p, text in enumerate(texts)]


def chip_text(piece: str) -> str:
    """A token's text for an HTML chip: escaped, newlines, tabs and bidi controls made visible."""
    return escape(visible(piece))


def axis_label(piece: str, limit: int = 12) -> str:
    """A token's text for a plot label: whitespace made visible, clipped, escaped for plotly."""
    shown = visible(piece).replace(" ", SPACE_MARK)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return escape(shown)
