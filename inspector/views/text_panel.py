"""The Text panel: every sequence's prompt and output as token chips, as of the cursor step.

One block per sequence, in id order with each fork right under its parent, indented and
labelled with where it branched off ("#3 ← #1 at step 12, " the" → " a"", lineage.py): "#id",
its status at the cursor (a coloured badge), then one chip per token (a fork's tokens kept from
its parent folded, the ones it forced dashed). Prompt chips are grey; output chips are tinted with the sequence's colour
and appear only once sampled, so moving the cursor back "un-generates" text. The chip of the
token sampled at the cursor step is outlined (class tok-current). Hovering an output chip shows
how sure the model was: the token's probability, its rank among all tokens, and the entropy of
the distribution it was drawn from (data-prob, data-rank, data-entropy carry the same numbers
for scripts).

Seeing the text as chips, not as a string, shows what the model actually sees: " Paris" is one
token with its leading space, a word may be several tokens, "\n" is a token of its own.
"""

from __future__ import annotations

from inspector.trace.model import TokenRecord, Trace
from inspector.views.colors import sequence_color
from inspector.views.figure import step_problem
from inspector.views.lineage import fork_labels, lineage_order
from inspector.views.markup import badge, empty_panel, escape, panel, seq_background, step_of
from inspector.views.states import sequence_states, status_at
from inspector.views.tokens import chip_text, output_pieces, prompt_piece

MIN_FOLD = 8  # a chat prompt's first turn is folded when at least this long
INDENT_PX, MAX_INDENT = 16, 4  # a fork's block is indented under its parent's, up to 4 levels


def text_html(trace: Trace, index: int) -> str:
    """The Text panel at step `index`."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_panel(problem)
    states = sequence_states(trace)
    caption = (
        f'<div class="mlv-caption">{step_of(index, len(trace.steps))} · model {escape(trace.model.name)} · '
        "grey: prompt tokens, tinted: generated tokens (hover for probability), outlined: sampled at this step</div>"
    )
    labels = fork_labels(trace)
    blocks = [_sequence_block(trace, seq_id, index, states, depth, labels[seq_id])
              for seq_id, depth in lineage_order(trace)]
    return panel(caption + "".join(blocks), "mlv-text")


def _sequence_block(trace: Trace, seq_id: int, index: int, states: dict[int, list[str]], depth: int,
                    label: str) -> str:
    seq = trace.sequences[seq_id]
    status = status_at(trace, seq_id, index, states)
    reason = seq.finish_reason if status == "finished" else ""
    outputs = output_pieces(trace, seq_id, until=index)
    preemptions = states[seq_id][: index + 1].count("preempted")
    facts = f"{len(seq.prompt_ids)} prompt + {len(outputs)} generated tokens"
    if preemptions:
        facts += f", preempted {preemptions}×"
    head = (
        f'<div class="mlv-seq-head"><b>{escape(label)}</b> {badge(status, reason or "")} '
        f'<span class="mlv-muted">{facts}</span></div>'
    )
    # A fork's first tokens are its parent's (shown there): folded; the tokens it forced, dashed.
    kept = (seq.fork_position or 0) if seq.parent_id in trace.sequences else 0
    prompt = [_prompt_chip(trace, seq_id, p, token_id, forced=0 < kept <= p)
              for p, token_id in enumerate(seq.prompt_ids)]
    folded = first_turn_length(seq.prompt_ids) if seq.chat else 0
    if kept:
        summary = f"#{seq.parent_id}'s first {kept} tokens (click to show)"
        prompt[:kept] = [f'<details class="mlv-fold" data-fold="{seq_id}"><summary>{summary}</summary>'
                         f'{"".join(prompt[:kept])}</details>']
    elif folded:
        # The chat template's first turn (the system prompt), the same in every request: folded.
        summary = f"system prompt · {folded} tokens (click to show)"
        prompt[:folded] = [f'<details class="mlv-fold" data-fold="{seq_id}"><summary>{summary}</summary>'
                           f'{"".join(prompt[:folded])}</details>']
    output = [_output_chip(trace, seq_id, step, token_id, text, index) for step, token_id, text in outputs]
    body = "".join(prompt) + "".join(output)
    # A fork sits under its parent, indented one step per generation (lineage.py).
    indent = f"margin-left:{min(depth, MAX_INDENT) * INDENT_PX}px;" if depth else ""
    return (f'<div class="mlv-seq" data-seq="{seq_id}" style="{indent}border-left-color:{sequence_color(seq_id)}">{head}'
            f'<div class="mlv-tokens">{body}</div></div>')


def first_turn_length(prompt_ids: list[int]) -> int:
    """Tokens in a chat prompt's first turn (0: none worth folding). Chat templates open every
    turn with the same marker token: ChatML's <|im_start|> first, Llama 3's <|start_header_id|>
    right after <|begin_of_text|>. The first turn ends where that marker comes again, so it is
    found without knowing the template; a turn shorter than MIN_FOLD tokens is left open."""
    for marker in prompt_ids[:2]:
        start = prompt_ids.index(marker)
        end = next((i for i in range(start + 1, len(prompt_ids)) if prompt_ids[i] == marker), 0)
        if end:
            return end if end >= MIN_FOLD else 0
    return 0


def _prompt_chip(trace: Trace, seq_id: int, position: int, token_id: int, forced: bool = False) -> str:
    piece = prompt_piece(trace, seq_id, position)
    title = f"{'forced by the fork' if forced else 'prompt'} position {position} · token id {token_id}"
    return _chip(piece, token_id, "tok tok-prompt" + (" tok-forced" if forced else ""), f'title="{title}"')


def _output_chip(trace: Trace, seq_id: int, step: int, token_id: int, text: str, index: int) -> str:
    token = trace.steps[step].token_of(seq_id)
    classes = "tok tok-out" + (" tok-current" if step == index else "")
    style = f'style="background:{seq_background(seq_id, 0.22)}"'
    # data-step: the step that sampled it (static/app.js moves the cursor there on a click).
    attributes = f'{style} data-step="{step}" {_hover(token, token_id, step)}'
    if not text and token is not None and token.finish_reason == "stop":
        # The end-of-sequence token: no text of its own, it is why the sequence stopped.
        return f'<span class="{classes} tok-id" {attributes}>⟨eos⟩</span>'
    return _chip(text, token_id, classes, attributes)


def _hover(token: TokenRecord | None, token_id: int, step: int) -> str:
    """The chip's data-* attributes and title: how likely the model found this token."""
    where = f"sampled at step {step} · token id {token_id}"
    if token is None or token.logits is None:
        return f'title="{where} · logits not recorded"'
    g = token.logits
    stats = f"p={g.sampled_prob:.3f} rank {g.sampled_rank} entropy {g.entropy:.2f}"
    return (
        f'data-prob="{g.sampled_prob:.4f}" data-rank="{g.sampled_rank}" data-entropy="{g.entropy:.3f}" '
        f'title="{stats} · {where}"'
    )


def _chip(piece: str, token_id: int, classes: str, attributes: str) -> str:
    """One token chip. A token with no text of its own (a special token) shows its id, ⟨id⟩; a
    newline token also breaks the line, so the chips read like the text."""
    if not piece:
        return f'<span class="{classes} tok-id" {attributes}>⟨{token_id}⟩</span>'
    chip = f'<span class="{classes}" {attributes}>{chip_text(piece)}</span>'
    return chip + "<br>" if "\n" in piece else chip
