"""The Branch view: a fork and its parent side by side, aligned at the fork point.

A fork keeps its parent's first P tokens and goes on with tokens of its own, so position p
means the same place in both: the view shows the shared prefix once, then one row per position
from P on, the parent's token on the left and the fork's on the right. The first row where the
two tokens differ is marked: usually P itself, where the fork's forced token replaced the
parent's (a fork forced with the same token the parent had diverges later, or never, under
greedy decoding).

Each sampled token carries what the model thought of it when it was drawn (the recorded
LogitsSummary): p, its probability under the model, and the entropy H of that distribution in
nats. Reading the two columns down shows whether the model, once pushed onto the other token,
settled (high p, low H) or wandered. A forced token was not drawn: it shows the probability
the parent's distribution gave it, when it was in the recorded top k.

Like the text panel, the view shows the tokens sampled up to the cursor step, so stepping back
"un-generates" both sides; the tokens sampled at the cursor step are outlined.

Which pair: the selected sequence and its parent when it is a fork; else the selected sequence
and its latest fork. align() is the pure part (rows from a trace), branch_html the panel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inspector.trace.model import Trace
from inspector.views.colors import sequence_color
from inspector.views.figure import step_problem
from inspector.views.lineage import fork_label, quote
from inspector.views.markup import empty_panel, escape, panel, seq_background, seq_label, step_of
from inspector.views.selection import Selection, resolve
from inspector.views.tokens import chip_text, position_pieces, prompt_piece

PREFIX_SHOWN = 16  # tokens of the shared prefix shown before the rows (the rest fold away)
BAR_PX = 28  # width of a probability bar at p = 1

BRANCH_CSS = """
.mlv-branch th { color: #555; font-weight: 500; border-bottom: 1px solid #ddd; white-space: nowrap; }
.mlv.mlv-branch table th, .mlv.mlv-branch table td { padding: 1px 4px; font-size: 12px; }
.mlv-branch td { border-bottom: 1px solid #f0f0f0; white-space: nowrap; }
.mlv-branch td.mlv-num { text-align: right; font-variant-numeric: tabular-nums; color: #444; }
.mlv-branch td.mlv-mark { text-align: center; color: #b00020; }
.mlv-branch tr.mlv-diverge td { background: #fff4e5; border-top: 2px solid #b00020; }
.mlv-branch tr.mlv-diverge td.mlv-mark { font-weight: 700; }
.mlv-branch .mlv-pbar { display: inline-block; height: 8px; vertical-align: middle; margin-right: 3px;
  border-radius: 2px; }
.mlv-branch .mlv-prefix { margin: 4px 0 8px; line-height: 1.9; }
"""

SideKind = Literal["prompt", "forced", "sampled"]


@dataclass(frozen=True)
class Side:
    """One sequence's token at one position."""

    token_id: int
    text: str  # "" when it has none of its own (a special token, the middle of a character)
    kind: SideKind  # a prompt token, a token the fork forced, or one the model drew
    step: int | None = None  # the step that drew it ("sampled")
    prob: float | None = None  # "sampled": the model's p of it; "forced": the parent's p of it, when recorded
    entropy: float | None = None  # "sampled": of the distribution it was drawn from
    rank: int | None = None
    eos: bool = False  # the token that stopped its sequence, with no text of its own


@dataclass(frozen=True)
class BranchRow:
    position: int
    parent: Side | None  # None: the parent has no token here (yet, as of the cursor)
    fork: Side | None

    @property
    def differs(self) -> bool:
        return self.parent is not None and self.fork is not None and self.parent.token_id != self.fork.token_id


@dataclass(frozen=True)
class Branch:
    parent_id: int
    fork_id: int
    position: int  # where the fork's own tokens start: the shared prefix is positions 0..position-1
    prefix: list[str]  # the shared prefix's token texts ("[id]" for a token with none)
    rows: list[BranchRow]
    divergence: int | None  # index in rows of the first row whose two tokens differ


def pick_pair(trace: Trace, seq_id: int | None) -> tuple[int, int] | None:
    """(parent, fork) the view shows for selected sequence `seq_id`: it and its parent when it
    is a fork, else it and its latest fork; None when it is neither."""
    seq = trace.sequences.get(seq_id) if seq_id is not None else None
    if seq is None:
        return None
    if seq.parent_id is not None and seq.parent_id in trace.sequences and seq.fork_position is not None:
        return seq.parent_id, seq_id
    forks = [c for c in trace.children(seq_id) if trace.sequences[c].fork_position is not None and c != seq_id]
    return (seq_id, forks[-1]) if forks else None


def align(trace: Trace, parent_id: int, fork_id: int, until: int | None = None) -> Branch:
    """The rows of fork `fork_id` beside parent `parent_id`, from the fork point on, with the
    tokens sampled up to step `until` (all when None)."""
    fork = trace.sequences[fork_id]
    position = fork.fork_position or 0
    length = max(_length(trace, parent_id), _length(trace, fork_id))
    parent_logits = _parent_logits_at(trace, parent_id, position)
    rows = []
    for p in range(position, length):
        parent_side = _side(trace, parent_id, p, until)
        fork_side = _side(trace, fork_id, p, until, forced_from=position)
        if parent_side is None and fork_side is None:
            break  # both ran out (as of `until`): nothing further is shown
        if fork_side is not None and fork_side.kind == "forced" and parent_logits is not None:
            fork_side = _with_parent_prob(fork_side, parent_logits)
        rows.append(BranchRow(p, parent_side, fork_side))
    divergence = next((i for i, row in enumerate(rows) if row.differs), None)
    prefix = position_pieces(trace, fork_id, min(position, len(fork.prompt_ids) + len(fork.output_ids)))
    return Branch(parent_id, fork_id, position, prefix, rows, divergence)


def branch_html(trace: Trace, index: int, selection: Selection | None = None) -> str:
    """The Branch panel at step `index`, for the selected sequence."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_panel(problem)
    seq_id = resolve(trace, selection or Selection(), index).seq_id
    pair = pick_pair(trace, seq_id)
    if pair is None:
        who = f"#{seq_id} is not a fork and has none" if seq_id is not None else "No sequence"
        return empty_panel(f"Branch · step {index}: {who}. In the Next token tab, click another token to fork the "
                           "sequence there, then pick the fork or its parent in Sequence")
    branch = align(trace, *pair, until=index)
    return panel(_caption(trace, branch, index, seq_id) + _prefix_html(branch)
                 + _table(branch, index), "mlv-branch")


# -- the rows ------------------------------------------------------------------------------------


def _length(trace: Trace, seq_id: int) -> int:
    seq = trace.sequences[seq_id]
    return len(seq.prompt_ids) + len(seq.output_ids)


def _side(trace: Trace, seq_id: int, position: int, until: int | None, forced_from: int | None = None) -> Side | None:
    """`seq_id`'s token at `position`, or None when it has none there (as of step `until`).
    forced_from: for the fork, where its forced tokens start (they are prompt tokens to it)."""
    seq = trace.sequences[seq_id]
    num_prompt = len(seq.prompt_ids)
    if position < num_prompt:
        kind: SideKind = "forced" if forced_from is not None and position >= forced_from else "prompt"
        return Side(seq.prompt_ids[position], prompt_piece(trace, seq_id, position), kind)
    out = position - num_prompt
    if out >= len(seq.output_ids) or out >= len(seq.token_steps):
        return None
    step = seq.token_steps[out]
    if (until is not None and step > until) or step >= len(trace.steps):
        return None
    token = trace.steps[step].token_of(seq_id)
    g = token.logits if token is not None else None
    text = token.text_delta if token is not None else ""
    eos = not text and token is not None and token.finish_reason == "stop"
    if g is None:
        return Side(seq.output_ids[out], text, "sampled", step, eos=eos)
    return Side(seq.output_ids[out], text, "sampled", step, g.sampled_prob, g.entropy, g.sampled_rank, eos)


def _parent_logits_at(trace: Trace, parent_id: int, position: int) -> tuple[list[int], list[float]] | None:
    """The parent's recorded top k (ids, probabilities) for its token at `position`, when it
    sampled one there: the distribution the fork's forced token was chosen against."""
    parent = trace.sequences[parent_id]
    out = position - len(parent.prompt_ids)
    if not 0 <= out < len(parent.token_steps) or parent.token_steps[out] >= len(trace.steps):
        return None
    token = trace.steps[parent.token_steps[out]].token_of(parent_id)
    if token is None or token.logits is None:
        return None
    return token.logits.top_ids, token.logits.top_probs


def _with_parent_prob(side: Side, logits: tuple[list[int], list[float]]) -> Side:
    ids, probs = logits
    if side.token_id not in ids:
        return side
    rank = ids.index(side.token_id)
    return Side(side.token_id, side.text, side.kind, prob=probs[rank], rank=rank)


# -- the HTML ------------------------------------------------------------------------------------


def _caption(trace: Trace, branch: Branch, index: int, selected: int | None) -> str:
    other = branch.fork_id if selected == branch.parent_id else branch.parent_id
    more = [c for c in trace.children(branch.parent_id) if c != branch.fork_id]
    also = (f" · #{branch.parent_id} has other forks too: {', '.join(f'#{c}' for c in more)} (pick one in Sequence)"
            if more and selected == branch.parent_id else "")
    if branch.divergence is None:
        where = "no difference yet"
    else:
        row = branch.rows[branch.divergence]
        where = (f"first difference at position {row.position}: {quote(_text(row.parent))} (#{branch.parent_id}) vs "
                 f"{quote(_text(row.fork))} (#{branch.fork_id})")
    return (
        f'<div class="mlv-caption">Branch · {step_of(index, len(trace.steps))} · <b>{escape(fork_label(trace, branch.fork_id))}</b>'
        f" · {escape(where)} · showing #{selected} and #{other}{escape(also)}<br>"
        "p: the model's probability of the token when it was drawn (forced: the parent's probability of it) · "
        "H: the entropy of that distribution, in nats · outlined: sampled at this step</div>"
    )


def _prefix_html(branch: Branch) -> str:
    chips = [f'<span class="tok tok-prompt">{chip_text(text)}</span>' for text in branch.prefix]
    shown = chips[-PREFIX_SHOWN:]
    folded = chips[: len(chips) - len(shown)]
    head = f"shared prefix · {len(chips)} tokens"
    if folded:
        head = (f'<details class="mlv-fold"><summary>{head} (the first {len(folded)} folded: click to show)</summary>'
                f'{"".join(folded)}</details>')
    else:
        head = f'<span class="mlv-muted">{head}:</span> '
    return f'<div class="mlv-prefix">{head}{"".join(shown)}</div>'


def _table(branch: Branch, index: int) -> str:
    p, f = branch.parent_id, branch.fork_id
    header = (f"<tr><th>pos</th><th>{seq_label(p)} parent</th><th>p</th><th>H</th><th>step</th><th></th>"
              f"<th>{seq_label(f)} fork</th><th>p</th><th>H</th><th>step</th></tr>")
    rows = []
    for i, row in enumerate(branch.rows):
        classes = " ".join(c for c in ("mlv-differs" if row.differs else "", "mlv-diverge" if i == branch.divergence else "") if c)
        mark = '<span title="the first difference">first ≠</span>' if i == branch.divergence else (
            "≠" if row.differs else "")
        rows.append(
            f'<tr class="{classes}" data-position="{row.position}"><td class="mlv-num">{row.position}</td>'
            f'{_cells(row.parent, p, index)}<td class="mlv-mark">{mark}</td>{_cells(row.fork, f, index)}</tr>'
        )
    return f"<table>{header}{''.join(rows)}</table>"


def _text(side: Side | None) -> str:
    return (side.text or f"[{side.token_id}]") if side is not None else ""


def _cells(side: Side | None, seq_id: int, index: int) -> str:
    if side is None:
        return '<td class="mlv-muted">·</td><td></td><td></td><td></td>'
    classes = "tok" + (" tok-current" if side.step is not None and side.step == index else "")
    classes += " tok-forced" if side.kind == "forced" else (" tok-prompt" if side.kind == "prompt" else "")
    # A token with no text of its own shows its id, or ⟨eos⟩ when it is why its sequence stopped.
    text = chip_text(side.text) if side.text else ("⟨eos⟩" if side.eos else f"⟨{side.token_id}⟩")
    chip = f'<span class="{classes}" style="background:{seq_background(seq_id, 0.22)}" title="token id {side.token_id}">{text}</span>'
    if side.kind == "forced":
        chip += ' <span class="mlv-muted">forced</span>'
    prob = "" if side.prob is None else (
        f'<span class="mlv-pbar" style="width:{max(1, round(side.prob * BAR_PX))}px;background:{sequence_color(seq_id)}"></span>'
        f"{side.prob:.3f}")
    entropy = "" if side.entropy is None else f"{side.entropy:.2f}"
    step = "" if side.step is None else str(side.step)
    return f'<td>{chip}</td><td class="mlv-num">{prob}</td><td class="mlv-num">{entropy}</td><td class="mlv-num">{step}</td>'
