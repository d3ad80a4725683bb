"""The page: controls on the left, the debugger bar and the panels on the right.

Every event's outputs are the same list of panels (render.OUTPUT_NAMES), so whatever a user
does, every panel shows the step under the cursor. Buttons and panels carry elem_ids that
static/app.js (keyboard shortcuts) and the browser tests use.
"""

from __future__ import annotations

import html

import gradio as gr

from webui.breakpoint_form import EVENT_BREAKPOINTS
from webui.handlers import Handlers
from webui.render import OUTPUT_NAMES
from webui.sessions import CaptureSettings, EngineSettings, SessionManager

EXAMPLE_PROMPTS = "What is the capital of France?\nWrite a haiku about autumn.\nWhat is the capital of France? Answer in one word."


def build_app(manager: SessionManager) -> gr.Blocks:
    handlers = Handlers(manager)
    live = manager.base is not None
    engine, capture = EngineSettings(), CaptureSettings()
    with gr.Blocks(title="mini-llama inspector", fill_width=True) as app:
        gr.HTML(_header(manager), elem_id="ml-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300, elem_id="ml-controls"):
                with gr.Accordion("Prompts", open=live):
                    prompts = gr.Textbox(EXAMPLE_PROMPTS, lines=4, max_lines=12, label="Prompts, one per line",
                                         elem_id="ml-prompts", interactive=live)
                    chat = gr.Checkbox(True, label="Chat template", elem_id="ml-chat")
                    with gr.Row():
                        max_tokens = gr.Number(48, label="Max tokens", precision=0, elem_id="ml-max-tokens")
                        temperature = gr.Number(0.0, label="Temperature", step=0.1)
                    with gr.Row():
                        top_p = gr.Number(1.0, label="Top-p", step=0.05)
                        top_k = gr.Number(0, label="Top-k (0 off)", precision=0)
                        seed = gr.Number(None, label="Seed", precision=0)
                    add = gr.Button("Add prompts", variant="primary", elem_id="ml-add", interactive=live)
                with gr.Accordion("Engine (applies at Reset)", open=False):
                    kv_blocks = gr.Number(engine.num_kv_blocks, label="KV blocks (a small pool shows preemption)",
                                          precision=0,
                                          elem_id="ml-kv-blocks")
                    block_size = gr.Dropdown([4, 8, 16, 32], value=engine.block_size, label="Block size (tokens)",
                                             elem_id="ml-block-size")
                    max_num_seqs = gr.Number(engine.max_num_seqs, label="Max batch size", precision=0)
                    max_batched = gr.Number(engine.max_num_batched_tokens, precision=0,
                                            label="Max batched tokens (smaller: chunked prefill)")
                    prefix_caching = gr.Checkbox(engine.prefix_caching, label="Prefix caching")
                with gr.Accordion("Capture (applies at Reset)", open=False):
                    attention = gr.Checkbox(capture.attention, label="Record attention (those steps run eagerly)")
                    traced = gr.Number(capture.traced_requests, precision=0,
                                       label="Trace attention of the first n requests")
                    logits_k = gr.Number(capture.top_k, precision=0, label="Logits top-k")
                    lens = gr.Checkbox(capture.logit_lens, label="Logit lens: each layer's top-5 guess (traced requests)",
                                       elem_id="ml-lens-on")
                with gr.Accordion("Breakpoints (Run to breakpoint)", open=False):
                    bp_events = gr.CheckboxGroup(list(EVENT_BREAKPOINTS), label="Stop when", elem_id="ml-bp-events")
                    # Text boxes, not numbers: an empty box means "no such breakpoint".
                    bp_step = gr.Textbox("", label="Stop at step", placeholder="off", max_lines=1)
                    bp_text = gr.Textbox("", label="Stop when the text matches (regex)", placeholder="off", max_lines=1)
                    with gr.Row():
                        bp_entropy = gr.Textbox("", label="Entropy above (nats)", placeholder="off", max_lines=1)
                        bp_prob = gr.Textbox("", label="Sampled prob. below", placeholder="off", max_lines=1)
                    bp_kv = gr.Textbox("", label="KV usage above (%)", placeholder="off", max_lines=1)
                with gr.Accordion("Trace file", open=not live):
                    save = gr.Button("Save trace", elem_id="ml-save")
                    # The saved file lands here; static/app.js clicks its link, so one click on
                    # Save downloads the trace as it is at that moment.
                    saved = gr.File(visible="hidden", elem_id="ml-saved", interactive=False)
                    upload = gr.File(label="Open a trace (.mltrace)", file_types=[".mltrace"], elem_id="ml-open")
            with gr.Column(scale=4, elem_id="ml-main"):
                with gr.Group(elem_id="ml-debugger-bar"):
                    with gr.Row():
                        step = gr.Button("Step", elem_id="ml-step", interactive=live, size="sm")
                        run = gr.Button("Run", elem_id="ml-run", interactive=live, size="sm", variant="primary")
                        run_bp = gr.Button("Run to breakpoint", elem_id="ml-run-bp", interactive=live, size="sm")
                        pause = gr.Button("Pause", elem_id="ml-pause", interactive=live, size="sm", variant="stop")
                        reset = gr.Button("Reset", elem_id="ml-reset", interactive=live, size="sm")
                    with gr.Row():
                        prev = gr.Button("◀ prev", elem_id="ml-prev", size="sm", scale=0, min_width=80)
                        slider = gr.Slider(0, 1, value=0, step=1, label="Step", elem_id="ml-slider", scale=8)
                        nxt = gr.Button("next ▶", elem_id="ml-next", size="sm", scale=0, min_width=80)
                    status = gr.HTML(elem_id="ml-status")
                text = gr.HTML(elem_id="ml-text", label="Text")
                with gr.Row(equal_height=False):
                    _plot_panel("timeline")
                    _plot_panel("kv")
                with gr.Row(equal_height=False):
                    tables = gr.HTML(elem_id="ml-tables", label="Block tables")
                    details = gr.HTML(elem_id="ml-details", label="Step details")
                with gr.Row():
                    seq = gr.Dropdown([], label="Sequence", elem_id="ml-seq", scale=1)
                    layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="ml-layer", scale=2)
                    head = gr.Dropdown([("head 0", "0")], value="0", label="Head", elem_id="ml-head", scale=1)
                    full = gr.Checkbox(False, label="Full matrix (every query)", elem_id="ml-full", scale=1)
                with gr.Row(equal_height=False):
                    _plot_panel("attention")
                    _plot_panel("logits")
                with gr.Row(equal_height=False):
                    _plot_panel("history")
                    _plot_panel("lens")
                figures = gr.HTML(elem_id="ml-figures", elem_classes="ml-hidden")

        # The tab key (webui/tab_keys.py): filled in when the page loads, sent with every call.
        key = gr.Textbox(visible="hidden", elem_id="ml-tab-key")
        panels = dict(status=status, slider=slider, text=text, figures=figures, tables=tables, details=details,
                      seq=seq, layer=layer, head=head)
        outputs = [panels[name] for name in OUTPUT_NAMES]
        # Moving the cursor only reads the trace: no queue (a direct request), no progress overlay.
        quiet = dict(outputs=outputs, show_progress="hidden", queue=False)

        app.load(handlers.load, None, outputs + [key], api_name="state")
        app.unload(handlers.unload)
        add.click(handlers.add_prompts, [key, prompts, chat, max_tokens, temperature, top_p, top_k, seed], outputs,
                  api_name="add_prompts")
        step.click(handlers.step, [key], outputs, api_name="step", show_progress="minimal")
        run.click(handlers.run, [key], outputs, api_name="run", show_progress="minimal")
        run_bp.click(handlers.run_to_breakpoint, [key, bp_events, bp_step, bp_text, bp_entropy, bp_prob, bp_kv],
                     outputs, api_name="run_to_breakpoint", show_progress="minimal")
        # Pause is a flag the run loop reads between steps (no cancellation mid-step); it needs
        # no queue slot of its own, so it acts at once even on a busy server.
        pause.click(handlers.pause, [key], None, api_name="pause", queue=False)
        reset.click(handlers.reset, [key, kv_blocks, block_size, max_num_seqs, max_batched, prefix_caching,
                                     attention, traced, logits_k, lens], outputs, api_name="reset")
        slider.input(handlers.seek, [key, slider], trigger_mode="always_last", api_name="seek", **quiet)
        prev.click(handlers.prev, [key], api_name="prev", **quiet)
        nxt.click(handlers.next, [key], api_name="next", **quiet)
        for control in (seq, head, full):
            control.input(handlers.select, [key, seq, layer, head, full], trigger_mode="always_last", **quiet)
        layer.release(handlers.select, [key, seq, layer, head, full], api_name="select", **quiet)
        save.click(handlers.save_trace, [key], saved, api_name="save_trace")
        upload.upload(handlers.open_trace, [key, upload], outputs, api_name="open_trace")
    return app


def _plot_panel(name: str) -> gr.HTML:
    """A plot that stays on the page: static/app.js draws figure `name` into it with
    Plotly.react whenever the figures' carrier changes (see webui/render.py for why)."""
    return gr.HTML(f"<div id='ml-plot-{name}' class='ml-plot'></div>", elem_id=f"ml-{name}")


def _header(manager: SessionManager) -> str:
    if manager.base is None:
        what = f"viewing {html.escape(manager.startup_name)} (no model loaded: read-only)"
    else:
        engine = manager.base
        name = engine.model_dir.name if engine.model_dir is not None else "random weights"
        backend = engine.runner.model.model.layers[0].self_attn.backend.name
        dtype = str(engine.dtype).removeprefix("torch.")
        what = f"{html.escape(name)} · {engine.device} · {dtype} · attention {backend}"
    keys = "← → move the cursor · space runs / pauses"
    return f"<div class='ml-title'><b>mini-llama inspector</b> <span>{what}</span><span class='ml-keys'>{keys}</span></div>"
