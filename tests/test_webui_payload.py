"""What one update sends: a cursor move sends every panel anew (webui/render.py), so what is the
same in every update (the panels' stylesheet, the figures' template) is in the page once, and a
token chip carries only what the page cannot work out. Counted in bytes and attributes, never timed."""

from __future__ import annotations

import copy
import html
import json
import re
from html.parser import HTMLParser

import pytest
from test_inspector_support import record_tiny_run

from inspector import views
from inspector.views import join_text
from inspector.views.markup import VIEWS_CSS
from webui.limits import Limits
from webui.render import FIGURE_NAMES, OUTPUT_NAMES, figure_template_html, render
from webui.server import page_head
from webui.sessions import SessionManager

# The first rule of every stylesheet the views have: none may come back in an update.
CSS_RULES = [rule.strip().split("{")[0] for rule in views.STYLESHEET.split("}") if "{" in rule]
CHIP_ATTRIBUTES = {"class", "data-id", "data-step", "data-likely", "title"}


@pytest.fixture(scope="module")
def trace():
    """The tiny run (four requests, a preemption), each token given a text, as in test_views."""
    trace = copy.deepcopy(record_tiny_run().session.trace)
    for step in trace.steps:
        for token in step.tokens:
            token.text_delta = f"<{token.token_id}>"
    return trace


@pytest.fixture
def session(trace):
    """A tab showing the trace (a --trace server's session: every panel, no engine)."""
    manager = SessionManager(None, Limits(), startup_trace=trace, startup_name="tiny.mltrace")
    return manager.open_tab("127.0.0.1")


def updates(session) -> list[tuple[str, list]]:
    """Every kind of update at the first, a middle and the last step: a cursor move, a full
    render (a step, a reset, a load), an error message, and the page with no session."""
    made = [("no session", render(None, "no session"))]
    steps = len(session.trace.steps)
    for index in (0, steps // 2, steps - 1):
        session.cursor.seek(index)
        made += [(f"seek {index}", render(session, cursor_only=True, slider_moved=True)),
                 (f"full {index}", render(session)), (f"error {index}", render(session, "bad input", error=True))]
    return made


def test_no_update_carries_the_stylesheet_or_the_figure_template(session):
    for what, outputs in updates(session):
        named = dict(zip(OUTPUT_NAMES, outputs))
        for name, value in named.items():
            text = value if isinstance(value, str) else ""
            assert "<style" not in text and not [r for r in CSS_RULES if r in text], (what, name)
        figures = json.loads(html.unescape(re.search(r'data-figures="([^"]*)"', named["figures"]).group(1)))
        assert sorted(figures) == sorted(FIGURE_NAMES), what
        for name, figure in figures.items():
            assert "template" not in figure["layout"], (what, name)


def test_every_figure_has_the_template_the_page_holds(trace):
    """The page puts the one template back in each figure (static/app.js): every figure the views
    make must have that template, or the page would draw it with another look."""
    template = json.loads(html.unescape(re.search(r'content="([^"]*)"', figure_template_html()).group(1)))
    assert template["layout"]["plot_bgcolor"] == "white"
    selection = views.Selection()
    for index in range(len(trace.steps)):
        for figure in (views.timeline_figure(trace, index), views.kv_cache_figure(trace, index, selection),
                       views.attention_figure(trace, index, selection), views.logits_figure(trace, index, selection),
                       views.logits_history_figure(trace, index, selection),
                       views.logit_lens_figure(trace, index, selection), views.empty_figure("nothing")):
            assert json.loads(figure.to_json())["layout"]["template"] == template


def test_the_page_holds_the_stylesheet_and_the_template_once():
    head = page_head()
    assert head.count(VIEWS_CSS) == 1 and head.count(views.STYLESHEET) == 1
    assert head.count(figure_template_html()) == 1


class ChipTags(HTMLParser):
    """The attributes of every token chip (a span of class tok) of a panel."""

    def __init__(self, page: str):
        super().__init__()
        self.chips: list[dict[str, str | None]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        if tag == "span" and "tok" in (named.get("class") or "").split():
            self.chips.append(named)


def test_a_chip_carries_only_what_the_page_cannot_work_out(trace):
    """Its token id, an output chip's step and likelihood; not its position (the page counts
    it), not a title repeating the data, not a style of its own (the tint is the sequence's),
    and nothing that JSON must escape."""
    for index in range(len(trace.steps)):
        page = views.text_html(trace, index)
        chips = ChipTags(page).chips
        assert chips
        # The page receives the panel as a JSON string: a chip's tag costs no escaping there
        # (double quotes did, a backslash each, 8 bytes a chip).
        tags = re.findall(r"<span class=.tok[^>]*>", page)
        assert len(tags) == len(chips)
        for tag in tags:
            assert len(json.dumps(tag, ensure_ascii=False)) == len(tag) + 2, tag
        for chip in chips:
            assert set(chip) <= CHIP_ATTRIBUTES, chip
            if "data-step" in chip:
                prob, rank, entropy = chip["data-likely"].split(",")  # three numbers, one attribute
                assert 0 <= float(prob) <= 1 and int(rank) >= 0 and float(entropy) >= 0


def as_sent_before(page: str) -> str:
    """The panel as one string, as an update carried it before its parts (a chip's numbers in
    quotes then: data-step='5')."""
    return re.sub(r"(data-(?:step|id|likely))=([^ '>]+)", r"\1='\2'", page)


def test_the_text_panel_travels_as_its_parts_at_a_cost_per_block_not_per_chip(session):
    """The Text panel's update is its parts as JSON (webui/render.py text_carrier), which join
    to the panel's HTML. Gradio sends it as a JSON string, the parts' JSON in it: each sequence
    block costs its key and its parts' names (about 60 bytes), each output chip the quotes and
    comma of its string in a list (5 bytes), and a chip saves the quotes its numbers no longer
    need (2 bytes each). A long run's panel is smaller than the one string it was (stop 41 in
    docs/perf-notes.md: 181.3 KB against 182.8 KB at the last step of 8 chat prompts x 220
    tokens)."""
    for what, outputs in updates(session):
        text = dict(zip(OUTPUT_NAMES, outputs))["text"]
        parts = json.loads(text)
        if what == "no session":
            assert "No step yet" in join_text(parts) and not parts["items"]
            continue
        index = int(what.split()[-1])
        page = views.text_html(session.trace, index)
        assert join_text(parts) == page, what
        blocks = page.count("<div class=\"mlv-seq") + page.count("<div class=\"mlv-group")
        sent, before = (len(json.dumps(s, ensure_ascii=False).encode()) for s in (text, as_sent_before(page)))
        assert sent <= before + 64 * blocks, (what, sent, before, blocks)
