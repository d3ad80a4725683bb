"""The Compare view (inspector/views/compare.py): the verdict, a divergent request marked with
both sides' top-k and the drawn tokens, schedules side by side with the differing cells
marked, the chart up to each divergence; everything from the traces escaped; bounded."""

from __future__ import annotations

import copy
import dataclasses
import re

import plotly.graph_objects as go
import pytest
from test_diff import planted
from test_diff import run as diff_run  # noqa: F401 - test_diff's fixture, used here as diff_run
from test_views import placement_problems

from inspector import diff_traces
from inspector.views import compare_figure, compare_html
from inspector.views.compare import MAX_CHARTED, MAX_ROWS

XSS = "<img src=x onerror=window.__xss=1>"


@pytest.fixture(scope="module")
def trace(diff_run):  # noqa: F811 - the fixture imported above
    """test_diff's tiny-model run: two greedy requests and a seeded one."""
    return diff_run[0]


def rows(html: str) -> list[str]:
    return re.findall(r'<tr class="(mlv-[a-z-]+)"', html)


def test_two_equal_runs_say_so_and_mark_nothing(trace):
    diff = diff_traces(trace, trace)
    html = compare_html(diff, "this session", "its replay")
    assert "The same tokens: all 3 request(s) agree" in html and "mlv-same" in html
    assert rows(html) == ["mlv-equal"] * 3 and "mlv-changed" not in html and "Settings: the same" in html
    figure = compare_figure(diff)
    go.Figure(figure.to_dict())  # plotly's full validation: no misspelt property
    lines = [t for t in figure.data if t.yaxis == "y"]
    assert len(lines) == 3 and all(set(t.y) == {0.0} for t in lines)  # nothing moved
    assert not [t for t in figure.data if t.mode == "markers"]  # no divergence to mark


def test_a_divergence_is_marked_with_both_top_k_and_charted_up_to_it(trace):
    seq = trace.sequences[1]
    other = (seq.output_ids[3] + 1) % trace.model.vocab_size
    diff = diff_traces(trace, planted(trace, 1, 3, other))
    html = compare_html(diff, "a", "b")
    assert "1 of 3 request(s) differ" in html and "mlv-differ" in html
    assert rows(html) == ["mlv-equal", "mlv-diverged", "mlv-diverged-tops", "mlv-equal"]
    marked = html.split('<tr class="mlv-diverged">')[1].split("</tr>")[0]
    step = seq.token_steps[3]
    assert f"differs from token 3</b> (step {step} / {step})" in marked and f"(id {other})" in marked
    tops = html.split('<tr class="mlv-diverged-tops">')[1].split("</tr></table></div></td>")[0]
    assert "top of a" in tops and "top of b" in tops
    assert tops.count("mlv-drawn") == 1 + (other in trace.steps[step].token_of(1).logits.top_ids[:5])
    figure = compare_figure(diff)
    go.Figure(figure.to_dict())
    assert placement_problems(figure) == []  # its legend lay past the figure's bottom edge
    marker = [t for t in figure.data if t.mode == "markers"]
    assert len(marker) == 1 and list(marker[0].x) == [3] and "request 1 diverges at token 3" in marker[0].hovertemplate
    assert list(figure.data[0].x) == [0, 1, 2, 3]  # the divergent request first, up to its divergence


def test_schedules_and_settings_that_differ_are_marked(trace):
    other = copy.deepcopy(trace)
    other.sequences[2].num_preemptions = 2
    other.engine = dataclasses.replace(other.engine, num_blocks=12)
    html = compare_html(diff_traces(trace, other), "a", "b")
    assert html.count("mlv-changed") == 1 and '<td class="mlv-num mlv-changed">0 / 2</td>' in html
    assert "<tr><td>num_blocks</td><td>32</td><td>12</td></tr>" in html
    why = html.split('<tr class="mlv-why">')[1].split("</tr>")[0]  # the causes, under the differing row only
    assert html.count('<tr class="mlv-why">') == 1 and "why in a" in why and "why in b" in why
    assert "prefix cache: " in why


def test_everything_from_the_traces_is_escaped(trace):
    hostile = copy.deepcopy(trace)
    hostile.sequences[0].prompt_text = XSS
    hostile.model = dataclasses.replace(hostile.model, name=XSS)
    seq = hostile.sequences[0]
    summary = hostile.steps[seq.token_steps[2]].token_of(0).logits
    summary.top_texts = [XSS] * len(summary.top_texts)
    target = planted(hostile, 0, 2, (seq.output_ids[2] + 1) % hostile.model.vocab_size)
    target.steps[seq.token_steps[2]].token_of(0).text_delta = XSS
    diff = diff_traces(hostile, target)
    html = compare_html(diff, XSS, XSS)
    assert "<img" not in html and "&lt;img src=x onerror=window.__xss=1&gt;" in html
    figure = compare_figure(diff)
    assert "<img" not in figure.to_json()


def test_a_long_list_is_bounded(trace):
    diff = diff_traces(trace, trace)
    diff.requests = [dataclasses.replace(diff.requests[0], label=f"request {i}") for i in range(MAX_ROWS + 50)]
    html = compare_html(diff, "a", "b")
    assert len(rows(html)) == MAX_ROWS and "and 50 more request(s), not listed" in html
    assert len({t.legendgroup for t in compare_figure(diff).data}) == MAX_CHARTED


def test_runs_without_recorded_logits_chart_a_placeholder(trace):
    bare = copy.deepcopy(trace)
    for step in bare.steps:
        for token in step.tokens:
            token.logits = None
    figure = compare_figure(diff_traces(bare, bare))
    assert "nothing to chart" in figure.layout.annotations[0].text
