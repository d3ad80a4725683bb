"""The Text panel as keyed parts, so a page can redraw only what a cursor move changed.

A one-step cursor move changes little of the panel: per sequence, its heading (badge, counts),
one output chip more or less, and which chip is outlined. Sent as one HTML string, the page
had to parse all of it again (thousands of chips in a long run) and compare it node by node
with what it showed. Sent as parts, the page (static/app.js) keeps every node whose part is
the same string as the one it last drew, and parses only the rest.

The parts of one panel, as JSON (every string is escaped HTML made by text_panel.py):

    {"open": "<div class=\\"mlv mlv-text\\">",      the panel's card (or a problem's card)
     "caption": "<div class=\\"mlv-caption\\">step 12 · ...</div>",   or the problem's message
     "items": [                                       in the panel's order
       {"key": "s0", "open": "<div class=\\"mlv-seq\\" data-seq=\\"0\\" ...>", "head": "<div ...>",
        "prompt": "<span class='tok tok-prompt' ...>...",   the prompt's chips, folds included
        "out": ["<span class='tok tok-out' ...>", ...]},     one string per output chip
       {"key": "g4", "open": "<div class=\\"mlv-group\\" data-group=\\"4\\">", "head": "<div ...>",
        "items": [{"key": "s4", ...}, {"key": "s5", ...}]}  a request's samples or beams
     ]}

join_text() makes them the one HTML string of the panel (views.text_html), and the page joins
them the same way: what it shows after any sequence of updates is that string's DOM.
"""

from __future__ import annotations

from typing import TypedDict

PANEL_CLOSE = "</div>"
TOKENS_OPEN, SEQUENCE_CLOSE = '<div class="mlv-tokens">', "</div></div>"  # a sequence's chips, its block's end
GROUP_CLOSE = "</div>"


class SequencePart(TypedDict):
    key: str  # "s<id>": unique in the panel
    open: str  # the block's opening tag (its colour, indent, pruned or not)
    head: str
    prompt: str
    out: list[str]


class GroupPart(TypedDict):
    key: str  # "g<request id>"
    open: str
    head: str
    items: list[SequencePart]


class TextParts(TypedDict):
    open: str
    caption: str
    items: list[SequencePart | GroupPart]


def sequence_key(seq_id: int) -> str:
    return f"s{seq_id}"


def group_key(group_id: int) -> str:
    return f"g{group_id}"


def join_text(parts: TextParts) -> str:
    """The panel's HTML from its parts (static/app.js joins them alike)."""
    return parts["open"] + parts["caption"] + "".join(_join_item(item) for item in parts["items"]) + PANEL_CLOSE


def _join_item(item: SequencePart | GroupPart) -> str:
    if "items" in item:  # a group
        return item["open"] + item["head"] + "".join(_join_item(member) for member in item["items"]) + GROUP_CLOSE
    return item["open"] + item["head"] + TOKENS_OPEN + item["prompt"] + "".join(item["out"]) + SEQUENCE_CLOSE
