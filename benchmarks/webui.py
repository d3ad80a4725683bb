"""Slider latency in a real browser: from moving the step slider to every panel showing the step.

    python -m benchmarks.webui                 # a 300-step trace of the embedded model, 60 moves
    python -m benchmarks.webui --trace run.mltrace --moves 100

It records a trace (or opens one), serves it with no model (as `app.py --trace` does), opens
the page in Chromium through Playwright, and moves the slider to random steps. Each move is
timed inside the page: from the slider's input event to the frame in which every panel that
follows the cursor says "step N". Prints the median and the 95th percentile; the goal is a
p95 under 200 ms.
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from inspector import DebugSession, Trace, TraceError, load, save
from minillama import ConfigError, EngineConfig, LLMEngine, SamplingParams
from minillama.cli import ArgumentParser, add_debug_flag, int_at_least, path_text, run_cli
from webui import Limits, SessionManager, serve

PROG = "python -m benchmarks.webui"
EXPECTED = (TraceError,)  # a --trace file that cannot be read
MIN_STEPS = 3
TABS = ("KV cache", "Attention", "Next token", "Logit lens")  # the page's tabs (webui/layout.py)
PANEL_IDS = ("ml-text", "ml-timeline", "ml-kv", "ml-tables", "ml-attention", "ml-logits", "ml-history", "ml-lens", "ml-details")
PROMPTS = ["Write a story about a lighthouse keeper.", "Explain how a bicycle works.",
           "List the planets of the solar system and describe each.", "Write a poem about the sea."]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Runs in the page: move the slider's range input to step n the way a drag does (an input
# event), then wait, frame by frame, until every panel on screen shows step n (a panel in a
# hidden tab is drawn only when its tab is shown). Returns milliseconds.
MOVE_AND_WAIT = """async ([n, ids]) => {
    const range = document.querySelector('#ml-slider input[type=range]');
    const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    const pattern = new RegExp('step ' + n + '(?![0-9])');
    const onScreen = (el) => el && el.offsetParent !== null;
    const shown = () => ids.every(id => {
        const el = document.getElementById(id);
        return !onScreen(el) || pattern.test(el.textContent);
    });
    const start = performance.now();
    setValue.call(range, String(n));
    range.dispatchEvent(new Event('input', {bubbles: true}));
    while (!shown()) {
        if (performance.now() - start > 10000) return -1;
        await new Promise(requestAnimationFrame);
    }
    return performance.now() - start;
}"""


MAX_STEPS = 5_000  # a recording of the embedded model on the CPU: about ten minutes
MAX_MOVES = 1_000  # each a page update timed in the browser, about a second


def record_trace(steps: int) -> Trace:
    """The embedded model on four long prompts in a small KV pool, `steps` steps recorded."""
    engine = LLMEngine.from_pretrained(None, EngineConfig(device="cpu", num_kv_blocks=48, block_size=16))
    session = DebugSession(engine)
    params = SamplingParams(temperature=0.8, max_tokens=steps, seed=0, ignore_eos=True)
    for prompt in PROMPTS:
        session.add(prompt, params, chat=True)
    for _ in tqdm(range(steps), desc="recording", unit="step"):
        if session.step() is None:
            break
    return session.trace


def measure(url: str, num_steps: int, moves: int, seed: int) -> dict[str, list[float]]:
    """Slider moves with each of the page's tabs shown in turn: {tab: milliseconds per move}."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("benchmarks.webui needs Chromium: apt-get install chromium")
    # Distinct steps, none of them the warm-up's last one (a move to where the slider already is
    # changes nothing, so no panel would update).
    targets = random.Random(seed).sample(range(1, num_steps - 1), min(moves, num_steps - 2))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.wait_for_function("() => /step 0(?![0-9])/.test(document.getElementById('ml-text')?.textContent ?? '')")
        times: dict[str, list[float]] = {}
        for tab in TABS:
            page.get_by_role("tab", name=tab).click()
            page.evaluate(MOVE_AND_WAIT, [num_steps - 1, list(PANEL_IDS)])  # warm up: the first draws are slower
            times[tab] = []
            for n in tqdm(targets, desc=f"slider moves, {tab} tab", unit="move"):
                elapsed = page.evaluate(MOVE_AND_WAIT, [n, list(PANEL_IDS)])
                if elapsed < 0:
                    raise TimeoutError(f"the panels did not show step {n} within 10 s")
                times[tab].append(elapsed)
        browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    """The command line: bad flags or a missing tool give one line and exit status 2."""
    return run_cli(PROG, _main, argv, expected=EXPECTED)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_debug_flag(parser)
    parser.add_argument("--trace", type=path_text, default=None, help="a .mltrace to serve (default: record 300 steps)")
    # A move goes to a step strictly inside the trace: at least 3 steps.
    parser.add_argument("--steps", type=int_at_least(MIN_STEPS, MAX_STEPS), default=300,
                        help="steps to record when no --trace is given")
    parser.add_argument("--moves", type=int_at_least(1, MAX_MOVES), default=60, help="slider moves to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.trace:
        trace, name = load(args.trace), Path(args.trace).name
        if len(trace.steps) < MIN_STEPS:
            raise ConfigError(f"--trace {args.trace} has {len(trace.steps)} step(s); the slider needs at least {MIN_STEPS}")
    else:
        trace, name = record_trace(args.steps), "bench.mltrace"
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / name
            save(trace, saved)  # what the browser sees is what a file holds
            trace = load(saved)
    manager = SessionManager(None, Limits(), trace, name)
    app = serve(manager, "127.0.0.1", 7899, block=False)
    try:
        by_tab = measure("http://127.0.0.1:7899/", len(trace.steps), args.moves, args.seed)
    finally:
        app.close()
    print(f"trace: {len(trace.steps)} steps, {len(trace.sequences)} sequences, attention for "
          f"{sorted(trace.attention)}")
    for tab, measured in by_tab.items():
        times = sorted(measured)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"slider move -> every panel on screen updated ({tab} tab), {len(times)} moves: median "
              f"{statistics.median(times):.0f} ms, p95 {p95:.0f} ms, max {times[-1]:.0f} ms "
              f"(goal: p95 < 200 ms: {'met' if p95 < 200 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
