"""The Compare view: two runs of the same requests side by side, from their TraceDiff.

diff_traces (inspector/trace/diff.py) matches the requests of two traces (a recording and its
replay alone, in float32 with the reference kernels, or any other trace of the same requests)
and finds, for each, the first output token where the runs differ. This view shows it:

- a verdict: every request the same, or how many differ;
- the weights (do the fingerprints match) and the settings that differ between the runs;
- one row per request: tokens and finish on both sides, the largest |delta log p| before the
  runs parted, and where they parted; a divergent row is marked (class mlv-diverged) and
  followed by both sides' top-k at that token, the drawn tokens outlined: was it a near tie
  (two tokens within a hair of each other, flipped by a rounding) or a real change?
- the schedules side by side (waits, prefill chunks, preemptions, prefix-cache hits, the
  steps each request ran, its latency), a differing cell marked, and where they differ, why:
  the causes the scheduler recorded on each side (who needed a block, the token budget...);
- the runs' timings.

compare_figure charts, token by token up to each request's divergence, the largest |delta log
p| over the tokens both top-k hold, the change of entropy, and the drawn token's probability
on both sides, the divergences marked. Everything from the traces is escaped (markup.escape).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from inspector.trace.diff import RequestDiff, RunTimings, Schedule, TopToken, TraceDiff
from inspector.views.colors import sequence_color
from inspector.views.figure import LEGEND_AT_BOTTOM, empty_figure, make_figure
from inspector.views.markup import escape, panel

MAX_ROWS = 200  # requests listed (a session holds at most a few dozen; a hostile file may hold more)
MAX_CHARTED = 8  # requests charted: the divergent ones first, then the ones whose logits moved most
PROMPT_CHARS = 48
MAX_CAUSES = 12  # causes listed per request and side

COMPARE_CSS = """
.mlv-compare .mlv-verdict { font-size: 14px; font-weight: 600; padding: 4px 8px; border-radius: 4px; margin: 2px 0 6px; }
.mlv-compare .mlv-same { background: #e8f5e9; color: #1b5e20; }
.mlv-compare .mlv-differ { background: #fff4e5; color: #b00020; }
.mlv-compare .mlv-note { color: #8a4b00; margin-bottom: 4px; }
.mlv.mlv-compare table th, .mlv.mlv-compare table td { padding: 1px 6px; font-size: 12px; border: none;
  border-bottom: 1px solid #eee; }
.mlv.mlv-compare table th { color: #555; font-weight: 500; border-bottom: 1px solid #ccc; white-space: nowrap; }
.mlv-compare td.mlv-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.mlv.mlv-compare table td:first-child { white-space: nowrap; }
.mlv-compare td.mlv-prompt { max-width: 11em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.mlv.mlv-compare tr.mlv-diverged td { background: #fff4e5; }
.mlv.mlv-compare tr.mlv-diverged td:first-child { border-left: 3px solid #b00020; }
.mlv.mlv-compare td.mlv-changed { background: #fff4e5; font-weight: 600; }
.mlv-compare .mlv-tops { display: flex; gap: 18px; flex-wrap: wrap; }
.mlv-compare .mlv-tops table { margin: 0; }
.mlv.mlv-compare td.mlv-drawn { outline: 2px solid #b00020; outline-offset: -2px; }
.mlv-compare h4 { margin: 10px 0 2px; font-size: 13px; }
.mlv-compare tr.mlv-why ul { margin: 0 0 4px 1.2em; padding: 0; font-size: 12px; }
"""


def compare_html(diff: TraceDiff, title_a: str, title_b: str, chart: str = "") -> str:
    """The panel: the verdict and what was compared, the requests, `chart` (the page's plot of
    compare_figure, if any), then the weights and settings, the schedules and the timings."""
    differing = [r for r in diff.requests if not r.equal]
    total = len(diff.requests)
    if not diff.requests:
        verdict = '<div class="mlv-verdict mlv-differ">Neither run has a request to compare</div>'
    elif differing:
        verdict = f'<div class="mlv-verdict mlv-differ">{len(differing)} of {total} request(s) differ</div>'
    else:
        verdict = f'<div class="mlv-verdict mlv-same">The same tokens: all {total} request(s) agree</div>'
    body = [
        verdict,
        f'<div class="mlv-caption"><b>a</b>: {escape(title_a)} &nbsp;·&nbsp; <b>b</b>: {escape(title_b)}</div>',
        *(f'<div class="mlv-note">Note: {escape(n)}</div>' for n in diff.notes),
        _requests(diff.requests),
        chart,
        "<h4>Weights and settings</h4>",
        _settings(diff),
        "<h4>Schedules, side by side (a / b)</h4>",
        _schedules(diff.requests),
        "<h4>Timings (a / b)</h4>",
        _timings(diff.timings_a, diff.timings_b),
    ]
    return panel("".join(body), "mlv-compare")


def compare_figure(diff: TraceDiff) -> go.Figure:
    """Token by token, up to each charted request's divergence: max |delta log p|, delta
    entropy (b - a) and the drawn token's probability on both sides; a divergence is an x."""
    charted = _charted(diff.requests)
    if not charted:
        return empty_figure("No request of both runs recorded its logits: nothing to chart")
    data: list[dict[str, Any]] = []
    for r in charted:
        color = sequence_color(r.seq_a if r.seq_a is not None else 0)
        name = escape(r.label)
        xs = [d.position for d in r.deltas]
        steps = [f"{name}<br>token {d.position} · step {d.step_a} / {d.step_b}" for d in r.deltas]
        common = dict(type="scatter", mode="lines+markers", x=xs, text=steps, legendgroup=name,
                      hovertemplate="%{text}<br>%{y:.3g}<extra></extra>", marker=dict(size=4))
        data.append({**common, "name": name, "y": [d.max_abs_delta_logp for d in r.deltas], "yaxis": "y",
                     "line": dict(color=color)})
        data.append({**common, "name": name, "showlegend": False, "y": [d.delta_entropy for d in r.deltas],
                     "yaxis": "y2", "line": dict(color=color)})
        data.append({**common, "name": f"{name} · a", "showlegend": False,
                     "y": [d.sampled_prob_a for d in r.deltas], "yaxis": "y3", "line": dict(color=color)})
        data.append({**common, "name": f"{name} · b", "showlegend": False,
                     "y": [d.sampled_prob_b for d in r.deltas], "yaxis": "y3", "line": dict(color=color, dash="dot")})
        if r.divergence is not None and r.deltas:
            last = r.deltas[-1]
            data.append(dict(type="scatter", mode="markers", x=[last.position], y=[last.max_abs_delta_logp or 0.0],
                             yaxis="y", legendgroup=name, showlegend=False, name=f"{name} diverges",
                             marker=dict(symbol="x", size=12, color="#b00020"),
                             hovertemplate=f"{name} diverges at token {last.position}<extra></extra>"))
    axis = dict(zeroline=True, zerolinecolor="#ccc")
    return make_figure(
        data, "How far b moved from a, token by token · up to each request's first different token", 380, "compare",
        xaxis=dict(title=dict(text="output token"), anchor="y3"),
        yaxis=dict(**axis, domain=[0.7, 1.0], title=dict(text="max |Δ log p|")),
        yaxis2=dict(**axis, domain=[0.37, 0.63], title=dict(text="Δ entropy")),
        yaxis3=dict(**axis, domain=[0.0, 0.3], range=[0, 1.05], title=dict(text="p(drawn) a —, b ··")),
        legend=LEGEND_AT_BOTTOM, hovermode="closest",
    )


def _charted(requests: list[RequestDiff]) -> list[RequestDiff]:
    with_logits = [r for r in requests if any(d.max_abs_delta_logp is not None for d in r.deltas)]
    with_logits.sort(key=lambda r: (r.divergence is None, -(r.max_abs_delta_logp or 0.0)))
    return with_logits[:MAX_CHARTED]


def _settings(diff: TraceDiff) -> str:
    weights = {True: "the same (their fingerprints match)", False: "<b>different</b> (their fingerprints differ)",
               None: "not compared (a trace records no fingerprint)"}[diff.same_weights]
    weights_line = f"<div>Weights: {weights}</div>"
    if not diff.settings:
        return weights_line + "<div>Settings: the same</div>"
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{escape(a)}</td><td>{escape(b)}</td></tr>"
                   for name, a, b in diff.settings)
    return weights_line + f"<table><tr><th>setting</th><th>a</th><th>b</th></tr>{rows}</table>"


def _requests(requests: list[RequestDiff]) -> str:
    head = ("<tr><th>request</th><th>prompt</th><th>tokens a / b</th><th>finish a / b</th>"
            "<th>max |Δ log p|</th><th>verdict</th></tr>")
    rows = []
    for r in requests[:MAX_ROWS]:
        diverged = not r.equal
        worst = r.max_abs_delta_logp
        rows.append(
            f'<tr class="{"mlv-diverged" if diverged else "mlv-equal"}"><td>{escape(r.label)}</td>'
            f'<td class="mlv-prompt" title="{escape(r.prompt_text[:500])}">{escape(_clip(r.prompt_text))}</td>'
            f'<td class="mlv-num">{len(r.tokens_a)} / {len(r.tokens_b)}</td>'
            f"<td class='mlv-num'>{escape(str(r.finish_a or '-'))} / {escape(str(r.finish_b or '-'))}</td>"
            f'<td class="mlv-num">{"-" if worst is None else f"{worst:.2e}"}</td><td>{_verdict(r)}</td></tr>'
        )
        if r.divergence is not None:
            rows.append(f'<tr class="mlv-diverged-tops"><td></td><td colspan="5">{_tops(r)}</td></tr>')
    more = len(requests) - MAX_ROWS
    note = f'<div class="mlv-muted">and {more} more request(s), not listed</div>' if more > 0 else ""
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _verdict(r: RequestDiff) -> str:
    if r.seq_a is None or r.seq_b is None:
        return f"<b>only in {'b' if r.seq_a is None else 'a'}</b>"
    if not r.same_prompt:
        return "<b>not the same request</b>: the prompts differ"
    d = r.divergence
    if d is None:
        return "equal"
    return (f"<b>differs from token {d.position}</b> (step {_or_dash(d.step_a)} / {_or_dash(d.step_b)}): "
            f"{_token(d.token_a, d.text_a)} / {_token(d.token_b, d.text_b)}")


def _tops(r: RequestDiff) -> str:
    """Both sides' top-k at the first different token, the drawn token outlined."""
    d = r.divergence
    assert d is not None
    return (f'<div class="mlv-tops">{_top_table("a", d.top_a, d.token_a)}'
            f'{_top_table("b", d.top_b, d.token_b)}</div>')


def _top_table(side: str, top: list[TopToken], drawn: int | None) -> str:
    if not top:
        return f'<div class="mlv-muted">{side}: logits not recorded</div>'
    marked = ' class="mlv-drawn"'
    rows = "".join(
        f'<tr><td{marked if t.token_id == drawn else ""}>{escape(repr(t.text) if t.text else f"[{t.token_id}]")}</td>'
        f'<td class="mlv-num">{t.prob:.3f}</td></tr>' for t in top[:5])
    return f"<table><tr><th>top of {side}</th><th>p</th></tr>{rows}</table>"


def _schedules(requests: list[RequestDiff]) -> str:
    head = ("<tr><th>request</th><th>waited (steps)</th><th>prefill chunks</th><th>preemptions</th>"
            "<th>prefix-cache tokens</th><th>ran at steps</th><th>latency (ms)</th></tr>")
    rows = []
    for r in requests[:MAX_ROWS]:
        a, b = r.schedule_a, r.schedule_b
        if a is None or b is None:
            rows.append(f"<tr><td>{escape(r.label)}</td><td colspan='6'>only in one run</td></tr>")
            continue
        cells = [
            _pair(a.waiting_steps, b.waiting_steps), _pair(a.prefill_chunks, b.prefill_chunks),
            _pair(a.preemptions, b.preemptions), _pair(a.cached_tokens, b.cached_tokens),
            _steps_pair(r),
            f'<td class="mlv-num">{_ms(a.latency_ms)} / {_ms(b.latency_ms)}</td>',
        ]
        rows.append(f"<tr><td>{escape(r.label)}</td>{''.join(cells)}</tr>")
        if r.schedule_differs:
            rows.append(f'<tr class="mlv-why"><td></td><td colspan="6"><div class="mlv-tops">{_causes("a", a.causes)}'
                        f"{_causes('b', b.causes)}</div></td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _causes(side: str, causes: list[str]) -> str:
    """Why the scheduler treated the request so in one run (the recorded causes), bounded."""
    items = "".join(f"<li>{escape(cause)}</li>" for cause in causes[:MAX_CAUSES])
    if len(causes) > MAX_CAUSES:
        items += f"<li>… and {len(causes) - MAX_CAUSES} more</li>"
    return f"<div><b>why in {side}</b><ul>{items or '<li>nothing recorded</li>'}</ul></div>"


def _timings(a: RunTimings, b: RunTimings) -> str:
    rows = [
        ("steps", a.steps, b.steps), ("prefill steps", a.prefill_steps, b.prefill_steps),
        ("preemptions", a.preemptions, b.preemptions),
        ("wall (ms)", f"{a.wall_ms:.1f}", f"{b.wall_ms:.1f}"), ("forward (ms)", f"{a.forward_ms:.1f}", f"{b.forward_ms:.1f}"),
        ("mean step (ms)", f"{a.mean_step_ms:.2f}", f"{b.mean_step_ms:.2f}"),
    ]
    body = "".join(f'<tr><td>{name}</td><td class="mlv-num">{x} / {y}</td></tr>' for name, x, y in rows)
    return f"<table><tr><th></th><th>a / b</th></tr>{body}</table>"


def _pair(a: int, b: int) -> str:
    """A schedule's count on both sides, marked where they differ."""
    changed = " mlv-changed" if a != b else ""
    return f'<td class="mlv-num{changed}">{a} / {b}</td>'


def _steps_pair(r: RequestDiff) -> str:
    """The steps the request ran at on both sides, marked where they differ (the same span can
    hide tokens that came at other steps: the hover names the first)."""
    a, b = r.schedule_a, r.schedule_b
    moved = r.first_moved_token
    changed = (a.ran_steps, a.token_steps) != (b.ran_steps, b.token_steps)
    title = (f" title='token {moved} came at step {a.token_steps[moved]} / {b.token_steps[moved]}'"
             if moved is not None else "")
    return f'<td class="mlv-num{" mlv-changed" if changed else ""}"{title}>{_span(a)} / {_span(b)}</td>'


def _span(s: Schedule) -> str:
    return f"{_or_dash(s.first_step)}–{_or_dash(s.last_step)}"


def _token(token_id: int | None, text: str | None) -> str:
    return "(ended)" if token_id is None else f"{escape(repr(text or ''))} (id {token_id})"


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _clip(text: str) -> str:
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "…"
