"""Shared HTML for the panels: the one escaping helper, one stylesheet, badges.

Everything a trace holds is untrusted: a trace file may come from anyone, and a prompt can be
"<script>...". escape() is the only way a view puts text from a trace into HTML, and into a
plotly title, label or hover (plotly renders a subset of HTML in those: <b>, <br>, <a href>).
Views interpolate nothing else but numbers they format and constants of their own.

A panel is a <div class="mlv ..."> with no stylesheet of its own: the views' CSS (this file's
and each panel's own rules, gathered in stylesheet.py as views.STYLESHEET) goes in a page once.
Each panel carried it, six copies of 4 KB in every update a cursor move sent (webui/server.py
puts it in the page's head; a panel saved to a file needs <style>{STYLESHEET}</style> before
it). Every class is prefixed "mlv-" (mini-llama views) except the token chips'
"tok", "tok-current", which the app's scripts may rely on. Colours that depend on data (a
sequence's colour) are inline styles.
"""

from __future__ import annotations

import html

from inspector.views.colors import (
    CURRENT_COLOR,
    STATUS_COLORS,
    sequence_color,
    sequence_text_color,
    text_color_on,
    tint,
)

VIEWS_CSS = """
/* The panels are light cards in either colour scheme (as the plots are): their chips and cells
   are pale colours under dark text. Gradio colours every element of an HTML block with its
   theme's --body-text-color, near white in dark mode, where the prompt chips read at 1.05:1:
   the panel sets that variable for everything in it. */
.mlv { font-family: system-ui, sans-serif; font-size: 13px; line-height: 1.5; color: #222; --body-text-color: #222;
  background: #fff; }
.mlv-caption { color: #555; margin-bottom: 6px; }
.mlv-empty { color: #666; padding: 24px; text-align: center; }
/* content-visibility: a sequence scrolled out of view is not laid out or painted when the panel
   updates (a long run's panel holds thousands of chips): 15-25% off a cursor move's time. */
.mlv-seq { border-left: 4px solid #999; padding: 4px 8px; margin-bottom: 10px; content-visibility: auto;
  contain-intrinsic-size: auto 120px; }
.mlv-seq-head { margin-bottom: 3px; }
.mlv-badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px; }
.mlv-muted { color: #666; }
.mlv-tokens { line-height: 1.9; }
.mlv .tok { display: inline-block; white-space: pre; font-family: ui-monospace, monospace; font-size: 12px;
  padding: 1px 1px; margin: 0 1px 0 0; border-radius: 3px; border: 1px solid transparent; }
.mlv details.mlv-fold { display: inline; }
.mlv details.mlv-fold > summary { display: inline-block; cursor: pointer; color: #555; font-size: 12px;
  background: #f4f4f4; border: 1px dashed #bbb; border-radius: 3px; padding: 0 6px; margin: 0 2px 2px 0; }
.mlv details.mlv-fold[open] > summary { margin-bottom: 2px; }
.mlv .tok-prompt { background: #efefef; }
.mlv .tok-out { background: var(--mlv-tint, #e8eefc); }
.mlv .tok-inherited { border: 1px dashed #999; }
.mlv-group { border-left: 2px solid #ccc; padding-left: 6px; margin-bottom: 10px; }
.mlv-group-head { margin-bottom: 4px; }
.mlv-role { font-size: 11px; color: #444; background: #f0f0f0; border-radius: 8px; padding: 0 6px; }
/* A pruned beam: grey and dashed, its text still dark (faded to half opacity it read at 2.3-3.7:1). */
.mlv-seq.mlv-pruned { filter: grayscale(1); border-left-style: dashed; }
.mlv .tok-id { color: #555; font-style: italic; }
.mlv .tok-current { border: 2px solid CURRENT; font-weight: 600; }
.mlv .tok-forced { border: 1px dashed #222; }
.mlv table { border-collapse: collapse; margin: 4px 0 8px; font-size: inherit; }
.mlv th, .mlv td { padding: 2px 6px; text-align: left; vertical-align: top; }
.mlv-kv td.mlv-block { font-family: ui-monospace, monospace; font-size: 11px; border: 1px solid #fff;
  color: #111; white-space: nowrap; }
.mlv-kv td.mlv-shared { border: 2px dashed #222; }
.mlv-kv td.mlv-hit { box-shadow: inset 0 0 0 2px #222; }
.mlv-kv td.mlv-copied { border: 2px double #222; font-weight: 600; }
.mlv-details th { color: #555; font-weight: 500; }
.mlv-details td, .mlv-details th { border-bottom: 1px solid #eee; }
.mlv-details h4 { margin: 10px 0 2px; font-size: 13px; }
""".replace("CURRENT", CURRENT_COLOR)


# Bidirectional controls: invisible, yet they reorder the text around them (after U+202E, what
# follows reads right to left), so one in a token or a name from a trace would scramble the
# line it is shown in. They are shown as what they are: "⟨U+202E⟩". (Right-to-left letters
# need no such mark: they order only themselves.)
BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
# Zero-width spaces: they show nothing and join nothing, so text holding one reads as text
# without it: a breakpoint pattern "Par<U+200B>is" read "Paris" and never matched, a fork's
# text or a prompt hid what the model was given. Shown as marks too. (The zero-width joiner
# and non-joiner, U+200D and U+200C, shape emoji and scripts such as Persian: they stay.)
ZERO_WIDTH_SPACES = (0x200B, 0x2060, 0xFEFF)
# Control characters (C0 but tab and newline, DEL, C1): a byte-level tokenizer has a token for
# each (GPT-2's and Llama 3's decode to "\x00", "\x1b", "\x7f"...), and a tiny vocabulary may be
# nothing else. Written raw they draw nothing, or a box: a chip, a top-k bar's label or a fork
# button read as empty. A browser drops NUL and folds a lone CR into a line break. Marks too.
# (Tab and newline are whitespace: escape keeps them, tokens.visible marks them where a token shows.)
CONTROL_CHARACTERS = (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))
INVISIBLE_MARKS = {chr(c): f"⟨U+{c:04X}⟩" for c in (*CONTROL_CHARACTERS, *BIDI_CONTROLS, *ZERO_WIDTH_SPACES)}
_INVISIBLE_SHOWN = str.maketrans(INVISIBLE_MARKS)


def escape(text: str) -> str:
    """`text` made literal, in HTML (text or a quoted attribute) and in plotly's texts alike,
    control characters, bidirectional controls and zero-width spaces shown as marks. Plotly decodes &lt; &gt; &amp; and numeric
    references, but not &quot; or &#x27; (it would show them as written), so quotes become
    numeric references, which both read back."""
    return html.escape(text.translate(_INVISIBLE_SHOWN), quote=False).replace('"', "&#34;").replace("'", "&#39;")


def panel(body: str, css_class: str = "") -> str:
    """A panel's body in its card (styled by views.STYLESHEET, which the page holds once)."""
    return f"{panel_open(css_class)}{body}</div>"


def panel_open(css_class: str = "") -> str:
    """A panel card's opening tag (the Text panel sends it apart from its body: text_parts.py)."""
    return f'<div class="mlv {css_class}">'


def empty_panel(message: str) -> str:
    return panel(empty_message(message))


def empty_message(message: str) -> str:
    """Why a panel has nothing to show, as its body."""
    return f'<div class="mlv-empty">{escape(message)}</div>'


def badge(status: str, extra: str = "", words: str = "") -> str:
    """A small coloured label: "running", "finished: stop"...; `words` replace the text
    ("pruned at step 7") and keep the status's colour."""
    color = STATUS_COLORS.get(status, "#ddd")
    text = escape(words or status + (f": {extra}" if extra else ""))
    return f'<span class="mlv-badge" style="background:{color};color:{text_color_on(color)}">{text}</span>'


def seq_label(seq_id: int) -> str:
    """"#3" in the sequence's colour."""
    return f'<b style="color:{sequence_text_color(seq_id)}">#{seq_id}</b>'


def step_of(index: int, num_steps: int) -> str:
    """Where the cursor is, worded the same in every panel and on the slider: "step 13 · steps
    0–13 recorded" (steps count from 0, so "step 13 of 14" would read as one short of the end)."""
    return f"step {index} · steps 0–{num_steps - 1} recorded"


def seq_background(seq_id: int, alpha: float = 0.55) -> str:
    return tint(sequence_color(seq_id), alpha)
