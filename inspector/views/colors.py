"""One palette for every panel, so a sequence has the same colour everywhere.

Sequence #2 is the same orange in the KV-cache grid, the block tables and the text panel's
chips: the eye links "these blocks" to "that request" without reading a legend. The scheduler
timeline colours by *state* instead (what each sequence was doing at each step), with its own
small set of colours, chosen so they do not read as sequence colours.
"""

from __future__ import annotations

# Tableau 10 without its grey, which the KV grid keeps for free blocks. Colours repeat after 9
# sequences; the "#id" labels tell those apart.
SEQUENCE_PALETTE = (
    "#4e79a7",  # blue
    "#f28e2b",  # orange
    "#59a14f",  # green
    "#b07aa1",  # purple
    "#edc948",  # yellow
    "#76b7b2",  # teal
    "#ff9da7",  # pink
    "#9c755f",  # brown
    "#e15759",  # red
)

# What a sequence is doing at a step (see states.py). Running states are blues and greens,
# waiting is amber, eviction is a loud red, the two "not there" states are pale.
STATE_COLORS = {
    "absent": "#f4f4f4",  # not added yet
    "waiting": "#f2c14e",  # queued: holds no KV blocks
    "prefill": "#3b6ea8",  # computing prompt tokens (or recomputing after a preemption)
    "decode": "#5aa469",  # computing the one token it sampled last step
    "idle": "#bfe0bf",  # running (holds its blocks) but not in this step's batch
    "preempted": "#d62728",  # evicted in this step: its blocks were freed
    "finished": "#a0a0a0",  # done: stopped, hit max_tokens, or aborted
}

# The text panel's status badges, one per coarse status.
STATUS_COLORS = {
    "absent": STATE_COLORS["absent"],
    "waiting": STATE_COLORS["waiting"],
    "running": STATE_COLORS["decode"],
    "preempted": STATE_COLORS["preempted"],
    "finished": STATE_COLORS["finished"],
    "pruned": "#d9d9d9",  # a beam its search dropped: paler than finished, the panel greys it
}

FREE_COLOR = "#e9e9e9"  # a free block holding nothing a prompt can hit
CACHED_FREE_COLOR = "#c3d3e6"  # a free block still holding a cached full block: a later prompt can hit it
CURRENT_COLOR = "#222222"  # cursor lines and the current token's outline
SAMPLED_COLOR = "#d62728"  # the sampled token's bar in the logits view


def sequence_color(seq_id: int) -> str:
    """The colour of sequence `seq_id` in every panel."""
    return SEQUENCE_PALETTE[seq_id % len(SEQUENCE_PALETTE)]


def sequence_text_color(seq_id: int) -> str:
    """The sequence's colour darkened until text in it reads on white (WCAG AA, contrast 4.5:1):
    its own orange, yellow or teal measured 2.0-2.4:1 as the "#1" of a table."""
    return _SEQUENCE_TEXT_PALETTE[seq_id % len(_SEQUENCE_TEXT_PALETTE)]


def _rgb(color: str) -> list[int]:
    """"#rrggbb" as [r, g, b], 0-255."""
    return [int(color[i : i + 2], 16) for i in (1, 3, 5)]


def _readable_on_white(color: str, contrast: float = 4.5) -> str:
    rgb = _rgb(color)
    while _contrast_with_white(rgb) < contrast:
        rgb = [int(c * 0.9) for c in rgb]  # 10% towards black: the hue stays, the text darkens
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _contrast_with_white(rgb: list[int]) -> float:
    """WCAG's contrast ratio of a colour against white: 1.05 / (its relative luminance + 0.05)."""
    def linear(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb)
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


_SEQUENCE_TEXT_PALETTE = tuple(_readable_on_white(color) for color in SEQUENCE_PALETTE)


def text_color_on(color: str) -> str:
    """Black or white, whichever reads better on `color` ("#rrggbb"): text drawn on a coloured
    cell (a badge, a mark in the KV grid, a logit-lens guess). One of the two always has a WCAG
    contrast of at least 4.58:1; a fixed dark grey measured 3.2-3.7:1 on mid blues and reds."""
    return max(("#000000", "#ffffff"), key=lambda ink: contrast(ink, color))


def contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two "#rrggbb" colours, 1 (the same) to 21 (black on white)."""
    low, high = sorted(1.05 / _contrast_with_white(_rgb(c)) for c in (a, b))  # each luminance + 0.05
    return high / low


def scale_color(scale: list[list[float | str]], value: float) -> str:
    """The colour a plotly colorscale of "#rrggbb" stops gives `value` (0..1): linear in RGB
    between the stops around it, as plotly draws it."""
    value = min(max(value, 0.0), 1.0)
    for (low, low_color), (high, high_color) in zip(scale, scale[1:]):
        if value <= float(high):
            share = (value - float(low)) / (float(high) - float(low)) if high != low else 0.0
            mixed = [round(a + (b - a) * share) for a, b in zip(_rgb(str(low_color)), _rgb(str(high_color)))]
            return "#" + "".join(f"{c:02x}" for c in mixed)
    return str(scale[-1][1])


def tint(color: str, alpha: float) -> str:
    """`color` ("#rrggbb") as rgba with opacity `alpha`: a light background for text."""
    r, g, b = _rgb(color)
    return f"rgba({r},{g},{b},{alpha})"

# Probabilities (attention weights, the logit lens), white (none) to dark blue (all of it).
# They are heavy-tailed: one key (often the first token, an "attention sink") can take most of
# the attention, leaving the rest near zero. The colour stops sit at squares (0, 1/16, 1/4, 9/16,
# 1), so colour follows sqrt(probability) and small weights stay visible; the colour bar still
# reads in probability.
PROBABILITY_SCALE = [[0.0, "#ffffff"], [0.0625, "#c6dbef"], [0.25, "#6baed6"], [0.5625, "#2171b5"], [1.0, "#08306b"]]
