"""The Text panel redrawn by the page a part at a time (static/app.js, the keyed parts of
inspector/views/text_parts.py), in a real browser: after any seek, in any order, the panel's DOM
is the DOM of views.text_html at that step; a one-step seek replaces only a few nodes, and an
opened fold stays open and the panel's scroll stays where it was. Skips where Chromium or
Playwright is missing.

The run: the embedded model, chat prompts (their system prompt folded, its chips sent once),
a request of 2 samples and a beam search of width 2, a user's fork, in a pool small enough to
preempt; served as a trace with no model, as `app.py --trace` does."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from webui_support import running_server

from inspector import CapturePolicy, DebugSession, Trace, load, save
from inspector.views import text_html
from minillama import EngineConfig, LLMEngine, SamplingParams
from webui.limits import Limits
from webui.sessions import SessionManager

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LINE_PX = 25  # a line of chips in the panel
QUESTIONS = ["What is the capital of France?", "Write a haiku about autumn.", "Name three primary colors."]

# Moves the slider to step n as a drag does (its input event), then waits for the panel's caption.
SEEK = """async (n) => {
    const range = document.querySelector('#ml-slider input[type=range]');
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(range, String(n));
    range.dispatchEvent(new Event('input', {bubbles: true}));
    const shows = new RegExp('step ' + n + ' ·');
    while (!shows.test(document.querySelector('#ml-text-view .mlv-caption')?.textContent ?? '')) {
        await new Promise(requestAnimationFrame);
    }
}"""
# The panel's DOM and the DOM of `html`, each serialized after a parse by a template element
# (one serializer for both: the same DOM gives the same string). Left out of the panel's: what
# the user added, a fold opened and the chips the page copied into it (app.js fillFold).
BOTH_DOMS = """(html) => {
    const parsed = (markup) => {
        const t = document.createElement('template');
        t.innerHTML = markup;
        return t;
    };
    const shown = parsed(document.getElementById('ml-text-view').innerHTML);
    for (const fold of shown.content.querySelectorAll('details')) {
        fold.removeAttribute('open');
        if (fold.dataset.copy) fold.replaceChildren(fold.querySelector('summary'));
    }
    return [shown.innerHTML, parsed(html).innerHTML];
}"""
# Counts the nodes each update of the panel adds or removes, the subtrees of those included.
COUNT_NODES = """() => {
    window.__touched = 0;
    const size = (node) => 1 + (node.querySelectorAll ? node.querySelectorAll('*').length : 0);
    new MutationObserver((records) => {
        for (const r of records) for (const n of [...r.addedNodes, ...r.removedNodes]) window.__touched += size(n);
    }).observe(document.getElementById('ml-text-view'), {childList: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def engine(embedded_dir) -> LLMEngine:
    return LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=14, block_size=8))


@pytest.fixture(scope="module")
def trace(engine) -> Trace:
    session = DebugSession(engine, CapturePolicy(attention=False))  # the panel needs no attention
    greedy = SamplingParams(temperature=0, max_tokens=8)
    first = session.add(QUESTIONS[0], greedy, chat=True)
    session.add(QUESTIONS[1], greedy, chat=True)
    session.add(QUESTIONS[2], SamplingParams(temperature=0.8, seed=1, max_tokens=6, n=2), chat=True)
    session.add(QUESTIONS[0], SamplingParams(max_tokens=4, beam_width=2), chat=True)
    for _ in range(4):
        session.step()
    session.fork(first, engine.request(first).num_prompt_tokens + 1, [11])  # " London" for its second token
    assert session.run().finished
    return session.trace


@pytest.fixture(scope="module")
def other_file(engine, tmp_path_factory) -> Path:
    """Another run, saved: two of the questions in the other order, greedy, 4 tokens each."""
    session = DebugSession(engine, CapturePolicy(attention=False))
    for question in QUESTIONS[1::-1]:
        session.add(question, SamplingParams(temperature=0, max_tokens=4), chat=True)
    assert session.run().finished
    path = tmp_path_factory.mktemp("text") / "other.mltrace"
    save(session.trace, path)
    return path


@pytest.fixture(scope="module")
def page(trace):
    with running_server(SessionManager(None, Limits(), trace, "variety.mltrace")) as url, \
            playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # A short window: the panel scrolls in its pane.
        page = browser.new_context(viewport={"width": 1280, "height": 700}).new_page()
        page.goto(url)
        page.wait_for_function("() => /step 0 ·/.test(document.querySelector('#ml-text-view .mlv-caption')?.textContent ?? '')")
        yield page
        browser.close()


def test_the_run_has_the_panels_variety(trace):
    page = text_html(trace, len(trace.steps) - 1)
    assert "data-copy=" in page and "sample(s) of one prompt" in page and "beam search" in page
    assert "← #0 at step" in page and "finished" in page
    assert any(", preempted" in text_html(trace, i) for i in range(len(trace.steps)))


def seeks(num_steps: int, seed: int = 41) -> list[int]:
    """The end, back and forth by one there, the start, then big jumps in a seeded random order,
    each followed by a step back or on."""
    last = num_steps - 1
    order = [last, last - 1, last, 0, 1, 0]
    rng = random.Random(seed)
    for target in rng.sample(range(num_steps), min(12, num_steps)):
        order += [target, min(max(target + rng.choice((-1, 1)), 0), last)]
    return [n for i, n in enumerate(order) if i == 0 or n != order[i - 1]]


def test_after_every_seek_the_panel_is_the_dom_of_the_panels_html(page, trace):
    for n in seeks(len(trace.steps)):
        page.evaluate(SEEK, n)
        shown, expected = page.evaluate(BOTH_DOMS, text_html(trace, n))
        assert shown == expected, (n, next(i for i, (a, b) in enumerate(zip(shown, expected + "\0")) if a != b))


def test_a_one_step_seek_replaces_a_few_nodes_and_keeps_an_open_fold_and_the_scroll(page, trace):
    middle = len(trace.steps) // 2
    page.evaluate(SEEK, middle)
    blocks = page.locator("#ml-text-view .mlv-seq, #ml-text-view .mlv-group").count()
    fold = page.locator("#ml-text-view details.mlv-fold[data-copy]").first
    fold.locator("summary").click()  # a system prompt sent once: the page copies its chips in
    chips = fold.locator(".tok").count()
    assert chips > 8
    scroll = "() => { const t = document.getElementById('ml-text'); t.scrollTop = (t.scrollHeight - t.clientHeight) / 2; " \
             "return t.scrollTop; }"
    top = page.evaluate(scroll)
    assert top > 0
    # A chip no seek changes (the first prompt chip after the first fold) is the same element after.
    page.evaluate("() => { window.__kept = document.querySelector('#ml-text-view .mlv-tokens > .tok-prompt'); }")
    page.evaluate(COUNT_NODES)
    for n in (middle + 1, middle, middle - 1):
        page.evaluate("() => { window.__touched = 0; }")
        page.evaluate(SEEK, n)
        touched = page.evaluate("() => window.__touched")
        # Per block: its heading, the chip outlined before and the one sampled now (each maybe
        # with a line break), out and in; and the caption.
        assert 0 < touched <= 10 * blocks + 2, (n, touched, blocks)
        assert fold.get_attribute("open") is not None and fold.locator(".tok").count() == chips
        # Where it was: the browser's scroll anchoring may move it by the height a block above
        # the view gained or lost (a chip's line), to keep what is shown in place.
        assert abs(page.evaluate("() => document.getElementById('ml-text').scrollTop") - top) < LINE_PX
        assert page.evaluate("() => window.__kept.isConnected")
    total = page.evaluate("() => document.querySelectorAll('#ml-text-view *').length")
    assert total > 20 * blocks  # what a redraw of the whole panel would have replaced


def test_a_click_on_an_output_chip_moves_the_cursor_there(page, trace):
    page.evaluate(SEEK, len(trace.steps) - 1)
    page.locator("#ml-text-view .tok[data-step='2']").first.click()
    page.wait_for_function("() => /step 2 ·/.test(document.querySelector('#ml-text-view .mlv-caption').textContent)")
    shown, expected = page.evaluate(BOTH_DOMS, text_html(trace, 2))
    assert shown == expected


# The chips of the request's prompt, as the group's first sequence shows them (its folds opened).
LEADER_PROMPT = """(seq) => [...document.querySelector(`#ml-text-view .mlv-seq[data-seq="${seq}"] > .mlv-tokens`).children]
    .flatMap((n) => n.matches('details') ? [...n.querySelectorAll('.tok')] : [n])
    .filter((n) => n.classList?.contains('tok-prompt')).map((n) => n.outerHTML)"""


def test_a_samples_shared_prompt_is_sent_once_and_copied_in_when_opened(page, trace):
    """Each sample's fold held the whole prompt again, on every cursor move; now it names its
    group's first sequence and the page copies that one's prompt chips when it is opened."""
    last = len(trace.steps) - 1
    page.evaluate(SEEK, last)
    fold = page.locator("#ml-text-view details.mlv-fold[data-prompt]").first
    leader, count = fold.get_attribute("data-copy"), int(fold.get_attribute("data-prompt"))
    assert fold.locator(".tok").count() == 0 and count > 8  # the page got none of its chips
    # A fold is filled on its "toggle" event, which the browser fires after the click returns:
    # each is read once it holds more than its summary.
    filled = "(f) => f.open && f.children.length > 1"
    leaders_fold = page.locator(f"#ml-text-view .mlv-seq[data-seq='{leader}'] details.mlv-fold").first
    leaders_fold.locator("summary").click()
    page.wait_for_function(filled, arg=leaders_fold.element_handle())
    expected = page.evaluate(LEADER_PROMPT, leader)[:count]
    fold.locator("summary").click()
    page.wait_for_function(filled, arg=fold.element_handle())
    copied = fold.evaluate("(f) => [...f.querySelectorAll('.tok')].map((n) => n.outerHTML)")
    assert copied == expected and len(copied) == count
    page.locator(f"#ml-text-view .mlv-seq[data-seq='{leader}'] details.mlv-fold summary").first.click()  # closed again


def test_a_trace_opened_in_the_page_replaces_the_whole_panel(page, other_file):
    """Another run's blocks have the same keys (#0, #1, ...) and other text: after Open, the
    panel is the other run's, at the step the page shows."""
    page.locator("#ml-open input[type=file]").set_input_files(other_file)
    page.wait_for_function("() => document.querySelector('#ml-status')?.textContent.includes('other.mltrace')")
    page.wait_for_function("() => document.querySelectorAll('#ml-text-view .mlv-seq').length === 2")  # of 7
    caption = page.locator("#ml-text-view .mlv-caption").inner_text()
    index = int(caption.split("step ")[1].split(" ")[0])
    shown, expected = page.evaluate(BOTH_DOMS, text_html(load(other_file), index))
    assert shown == expected
