"""The Text panel: every sequence's prompt and output as token chips, as of the cursor step.

One block per sequence, in id order: "#id", its status at the cursor (a coloured badge), then
one chip per token. Prompt chips are grey; output chips are tinted with the sequence's colour
and appear only once sampled, so moving the cursor back "un-generates" text. The chip of the
token sampled at the cursor step is outlined (class tok-current). Hovering a chip in the page
shows its position or step and its token id, and for an output chip how sure the model was:
the token's probability, its rank among all tokens, and the entropy of the distribution it was
drawn from. The chips carry these as data-* attributes (data-step, data-id, data-likely: the
probability, rank and entropy), for the page's hover card and for scripts; a prompt chip's
position is its place among its sequence's prompt chips.

Seeing the text as chips, not as a string, shows what the model actually sees: " Paris" is one
token with its leading space, a word may be several tokens, "\n" is a token of its own.

A fork the user made ("what if?") is listed right under its parent, indented, and labelled with
where it branched off ("#3 ← #1 at step 12, " the" → " a"", lineage.py); its tokens kept from
the parent are folded, the ones it forced dashed.

A request's samples (n > 1) or beams are listed together under it (groups.py), each labelled
"sample i" or "beam i"; a sample or beam forked from another shows the request's prompt folded
(it shares those blocks) and, for a beam forked later, the tokens it inherited with a dashed
outline. A finished beam shows its score; a pruned beam stays in the list, greyed, with the
step that pruned it.
"""

from __future__ import annotations

from inspector.trace.model import SequenceRecord, TokenRecord, Trace
from inspector.views.colors import sequence_color
from inspector.views.figure import step_problem
from inspector.views.groups import Group, pruned_at, text_order
from inspector.views.lineage import fork_labels, lineage_order
from inspector.views.markup import badge, empty_message, escape, panel_open, seq_background, step_of
from inspector.views.states import sequence_states, status_at
from inspector.views.text_parts import (
    GroupPart,
    SequencePart,
    TextParts,
    group_key,
    join_text,
    sequence_key,
)
from inspector.views.tokens import chip_text, output_pieces, prompt_piece

MIN_FOLD = 8  # a chat prompt's first turn is folded when at least this long
INDENT_PX, MAX_INDENT = 16, 4  # a fork's block is indented under its parent's, up to 4 levels


def text_html(trace: Trace, index: int) -> str:
    """The Text panel at step `index`."""
    return join_text(text_parts(trace, index))


def text_parts(trace: Trace, index: int) -> TextParts:
    """The Text panel at step `index` as keyed parts (text_parts.py), which join to text_html.
    A step with nothing to show (views.figure.step_problem): the message alone (message_parts)."""
    problem = step_problem(trace, index)
    if problem is not None:
        return message_parts(problem)
    states = sequence_states(trace)
    caption = (
        f'<div class="mlv-caption">{step_of(index, len(trace.steps))} · model {escape(trace.model.name)} · '
        "grey: prompt tokens, tinted: generated tokens (hover for probability), outlined: sampled at this step</div>"
    )
    labels, depths = fork_labels(trace), dict(lineage_order(trace))
    turns: dict[tuple[int, ...], int] = {}  # a system prompt's token ids -> the first block showing its chips
    items: list[SequencePart | GroupPart] = [
        _group_block(trace, item, index, states, turns) if isinstance(item, Group)
        else _sequence_block(trace, item, index, states, turns, label=labels[item], depth=depths[item])
        for item in _forks_under_parents(trace, text_order(trace, index))]
    return {"open": panel_open("mlv-text"), "caption": caption, "items": items}


def message_parts(message: str) -> TextParts:
    """A panel that only says why it has nothing to show: markup.empty_panel(message), as parts."""
    return {"open": panel_open(), "caption": empty_message(message), "items": []}


def _forks_under_parents(trace: Trace, items: list[int | Group]) -> list[int | Group]:
    """`items` with each user fork (a plain item with a parent) moved right after the item
    that holds its parent, its own forks after it in turn (lineage.lineage_order's order)."""
    forks = {i for i in items if isinstance(i, int) and i in trace.sequences and _has_parent(trace, i)}
    children: dict[int, list[int]] = {}
    for seq_id, _ in lineage_order(trace):
        if seq_id in forks:
            children.setdefault(trace.sequences[seq_id].parent_id, []).append(seq_id)
    placed: list[int | Group] = []
    for item in items:
        if isinstance(item, int) and item in forks:
            continue
        stack: list[int | Group] = [item]
        while stack:  # depth first, without recursion
            top = stack.pop()
            placed.append(top)
            ids = top.members if isinstance(top, Group) else [top]
            stack.extend(reversed([c for s in ids for c in children.get(s, [])]))
    return placed


def _has_parent(trace: Trace, seq_id: int) -> bool:
    parent = trace.sequences[seq_id].parent_id
    return parent is not None and parent in trace.sequences and parent < seq_id


def _group_block(trace: Trace, group: Group, index: int, states: dict[int, list[str]],
                 turns: dict[tuple[int, ...], int]) -> GroupPart:
    """A request's samples or beams, under one heading."""
    # Its forks appear from the step that made them; its first sequence is always listed.
    present = [s for s in group.members if s == group.group_id or trace.sequences[s].added_step <= index]
    if group.kind == "beams":
        pruned = sum(pruned_at(trace, s, index) is not None for s in present)
        what = f"beam search · {len(present)} beam(s)" + (f", {pruned} pruned" if pruned else "")
    else:
        what = f"{len(present)} sample(s) of one prompt"
    head = (f'<div class="mlv-group-head"><b>request #{group.group_id}</b> <span class="mlv-muted">{what}, '
            "sharing the prompt's KV blocks</span></div>")
    return {"key": group_key(group.group_id), "open": f'<div class="mlv-group" data-group="{group.group_id}">',
            "head": head, "items": [_sequence_block(trace, s, index, states, turns, _role(trace, s, group.kind))
                                    for s in present]}


def _role(trace: Trace, seq_id: int, kind: str) -> str:
    """A group member's label: "sample 2" (its index among the request's samples); "beam" for
    the search's first beam, "beam ← #5" for one forked from beam #5 (a beam search keeps the
    best continuations, so a beam may branch off any other, not only off the first)."""
    seq = trace.sequences[seq_id]
    if kind == "samples":
        return f"sample {seq.sample_index}"
    return "beam" + (f" ← #{seq.parent_id}" if seq.parent_id is not None else "")


def _sequence_block(trace: Trace, seq_id: int, index: int, states: dict[int, list[str]],
                    turns: dict[tuple[int, ...], int], role: str = "", label: str = "", depth: int = 0) -> SequencePart:
    """One sequence: its heading, then its prompt and output chips. `role`: "sample 2",
    "beam ← #1" for a member of a request's group; `label`: its heading ("#3 ← #1 at step 12,
    ..." for a user's fork), `depth`: how far a fork is indented under its parent. `turns`:
    the system prompts whose chips an earlier block of the panel holds (_system_prompt_fold)."""
    seq = trace.sequences[seq_id]
    status = status_at(trace, seq_id, index, states)
    reason = seq.finish_reason if status == "finished" else ""
    outputs = output_pieces(trace, seq_id, until=index)
    preemptions = states[seq_id][: index + 1].count("preempted")
    shared = _request_prompt_length(trace, seq_id) if role and seq.parent_id is not None else None
    # A user's fork: its first tokens are its parent's (shown there), the ones it forced follow.
    kept = (seq.fork_position or 0) if not role and _has_parent(trace, seq_id) else 0
    # Not made yet at this step (a user's fork is listed under its parent from the start): when
    # it will be, not counts of tokens it does not have yet.
    facts = (f"{'forked' if seq.parent_id is not None else 'added'} at step {seq.added_step}" if status == "absent"
             else _token_counts(seq, kept, shared, len(outputs)))
    if preemptions:
        facts += f", preempted {preemptions}×"
    if status == "finished" and seq.beam_score is not None:
        facts += f", score {seq.beam_score:.3f}"
    pruned = pruned_at(trace, seq_id, index)
    state = badge(status, words=f"pruned at step {pruned}") if pruned is not None else badge(status, reason or "")
    tag = f' <span class="mlv-role">{escape(role)}</span>' if role else ""
    head = (f'<div class="mlv-seq-head"><b>{escape(label or f"#{seq_id}")}</b>{tag} {state} '
            f'<span class="mlv-muted">{facts}</span></div>')
    prompt = [_prompt_chip(trace, seq_id, p, token_id, inherited=shared is not None and p >= shared,
                           forced=0 < kept <= p) for p, token_id in enumerate(seq.prompt_ids)]
    if kept:
        prompt = _fold(seq_id, prompt, kept, f"#{seq.parent_id}'s first {kept} tokens")
    elif shared is not None:
        prompt = _shared_prompt_fold(trace, seq, prompt, shared)
    elif seq.chat:
        prompt = _system_prompt_fold(seq, prompt, turns)
    output = [_output_chip(trace, seq_id, step, token_id, text, index) for step, token_id, text in outputs]
    classes = "mlv-seq" + (" mlv-pruned" if pruned is not None else "")
    indent = f"margin-left:{min(depth, MAX_INDENT) * INDENT_PX}px;" if depth else ""
    style = f"{indent}border-left-color:{sequence_color(seq_id)};--mlv-tint:{seq_background(seq_id, 0.22)}"
    return {"key": sequence_key(seq_id), "open": f'<div class="{classes}" data-seq="{seq_id}" style="{style}">',
            "head": head, "prompt": "".join(prompt), "out": output}


def _token_counts(seq: SequenceRecord, kept: int, shared: int | None, generated: int) -> str:
    """The heading's count of a sequence's tokens by where they came from. The engine counts a
    fork's inherited tokens as its prompt (prompt_ids): "41 prompt" for a fork of #0's first
    40 tokens and one forced, "39 prompt" for a beam of a 35-token prompt 4 tokens in."""
    if kept:  # a user's fork: its parent's first tokens, then the ones it forced
        return (f"{kept} tokens of #{seq.parent_id} + {len(seq.prompt_ids) - kept} forced + "
                f"{generated} generated")
    inherited = len(seq.prompt_ids) - shared if shared is not None else 0
    if inherited > 0:  # a sample or beam forked from another after the prompt
        return f"{shared} prompt + {inherited} of #{seq.parent_id}'s + {generated} generated tokens"
    return f"{len(seq.prompt_ids)} prompt + {generated} generated tokens"


def _fold(seq_id: int, chips: list[str], count: int, what: str) -> list[str]:
    """The first `count` chips folded under a summary saying `what` they are (none when count is 0)."""
    if not count:
        return chips
    return [f'<details class="mlv-fold" data-fold="{seq_id}"><summary>{what} (click to show)</summary>'
            f'{"".join(chips[:count])}</details>', *chips[count:]]


def _shared_prompt_fold(trace: Trace, seq: SequenceRecord, chips: list[str], shared: int) -> list[str]:
    """A sample's or beam's prompt with its request's prompt, which it shares, folded: the
    group's first sequence shows it open, so the fold names that sequence and how many of its
    prompt chips to copy (data-copy, data-prompt) for the page to copy when it is opened
    (static/app.js), as a system prompt's fold does. Each sample sent the whole prompt again,
    on every cursor move: 8 requests of 8 samples were 470 KB of the Text panel's 550 KB."""
    what = f"the prompt of #{seq.group_id} · {shared} tokens, shared"
    leader = seq.group_id
    # Copied only where the chips would be the same (the same pieces at the same positions).
    if leader is None or leader == seq.seq_id or leader not in trace.sequences or any(
            chips[p] != _prompt_chip(trace, leader, p, token_id) for p, token_id in enumerate(seq.prompt_ids[:shared])):
        return _fold(seq.seq_id, chips, shared, what)
    return [f'<details class="mlv-fold" data-fold="{seq.seq_id}" data-copy="{leader}" data-prompt="{shared}">'
            f"<summary>{what} (click to show)</summary></details>", *chips[shared:]]


def _system_prompt_fold(seq: SequenceRecord, chips: list[str], turns: dict[tuple[int, ...], int]) -> list[str]:
    """A chat prompt's chips with its first turn (the system prompt) folded. The chat template
    writes the same system prompt into every request: its chips go in the first block that
    has it, and a later block's fold names that block (data-copy) instead, for the page to copy
    the chips from when it is opened (static/app.js). A 32-prompt chat run sent 31 copies of
    24 chips, 37 KB of every cursor move."""
    folded = first_turn_length(seq.prompt_ids)
    if not folded:
        return chips
    what = f"system prompt · {folded} tokens"
    holder = turns.setdefault(tuple(seq.prompt_ids[:folded]), seq.seq_id)
    if holder == seq.seq_id:
        return _fold(seq.seq_id, chips, folded, what)
    return [f'<details class="mlv-fold" data-fold="{seq.seq_id}" data-copy="{holder}"><summary>{what} '
            "(click to show)</summary></details>", *chips[folded:]]


def _request_prompt_length(trace: Trace, seq_id: int) -> int:
    """How many of a sample's or beam's prompt tokens are its request's prompt; the rest (a beam
    forked after some steps) are tokens generated before its fork, which it inherited."""
    seq = trace.sequences[seq_id]
    leader = trace.sequences.get(seq.group_id) if seq.group_id is not None else None
    return min(len(leader.prompt_ids), len(seq.prompt_ids)) if leader is not None else 0


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


def _prompt_chip(trace: Trace, seq_id: int, position: int, token_id: int, inherited: bool = False,
                 forced: bool = False) -> str:
    piece = prompt_piece(trace, seq_id, position)
    if forced:  # put there by the user's fork, instead of what its parent had
        title = f"forced by the fork at position {position} · token id {token_id}"
        return _chip(piece, token_id, "tok tok-prompt tok-forced", f"title='{title}'")
    if inherited:  # generated by the sequence it was forked from, before the fork
        parent = trace.sequences[seq_id].parent_id
        title = f"position {position} · token id {token_id} · inherited from #{parent} at the fork"
        return _chip(piece, token_id, "tok tok-prompt tok-inherited", f"title='{title}'")
    # The page's hover card says "prompt position 12 · token id 791" (static/app.js): the id from
    # here, the position from the chip's place among its sequence's prompt chips (every
    # position has one, in order), which the page counts rather than receive a thousand times.
    return _chip(piece, token_id, "tok tok-prompt", f"data-id={token_id}")


def _output_chip(trace: Trace, seq_id: int, step: int, token_id: int, text: str, index: int) -> str:
    token = trace.steps[step].token_of(seq_id)
    classes = "tok tok-out" + (" tok-current" if step == index else "")
    # data-step: the step that sampled it (static/app.js moves the cursor there on a click). Its
    # tint is the sequence block's --mlv-tint: one style a sequence, not one a chip.
    attributes = f"data-step={step} data-id={token_id} {_hover(token)}"
    if not text and token is not None and token.finish_reason == "stop":
        # The end-of-sequence token: no text of its own, it is why the sequence stopped.
        return f"<span class='{classes} tok-id' {attributes}>⟨eos⟩</span>"
    return _chip(text, token_id, classes, attributes)


def _hover(token: TokenRecord | None) -> str:
    """The chip's data-likely: how likely the model found this token, "probability,rank,
    entropy" ("0.9711,0,0.216"), which the page's hover card shows with the step and the token
    id (static/app.js). A chip is sent on every cursor move, thousands of them in a long run:
    one attribute, not three, and not again in a title; with no space in it, it needs no quotes
    (nor do data-step and data-id), 6 bytes a chip."""
    if token is None or token.logits is None:
        return "title='logits not recorded'"
    g = token.logits
    return f"data-likely={g.sampled_prob:.4f},{g.sampled_rank},{g.entropy:.3f}"


def _chip(piece: str, token_id: int, classes: str, attributes: str) -> str:
    """One token chip. A token with no text of its own (a special token) shows its id, ⟨id⟩; a
    newline token also breaks the line, so the chips read like the text. Its attributes are
    unquoted where they are plain numbers, else in single quotes (escape() makes both quotes
    references, so either is safe): the page receives the panel as a JSON string, where each
    double quote costs a backslash, 8 bytes a chip."""
    if not piece:
        return f"<span class='{classes} tok-id' {attributes}>⟨{token_id}⟩</span>"
    chip = f"<span class='{classes}' {attributes}>{chip_text(piece)}</span>"
    return chip + "<br>" if "\n" in piece else chip
