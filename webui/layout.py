"""The page, laid out as debuggers are: the settings in a narrow column on the left (each in a
collapsible section), and on the right the debugger bar (buttons, cursor slider, status) and the
scheduler timeline on top, then the generated text beside a stack of tabs (KV cache with the
step's details and block tables, attention, next token with its "what if?" fork buttons, logit
lens, branch: a fork beside its parent, compare: the run beside a replay of it). At 1280x800 all of it is on the screen at once; the
text and the tabs scroll inside their own panes.

Every event's outputs are the same list of panels (render.OUTPUT_NAMES), so whatever a user
does, every panel shows the step under the cursor; a comparison (Compare tab) is not about a
step, and fills only its panel and the status banner (the other events clear that panel once
the run it compared has changed: render.compare_panel). Buttons and panels carry elem_ids that
static/app.js (keyboard shortcuts, drawing) and the browser tests use.
"""

from __future__ import annotations

import gradio as gr

from inspector.views import escape
from webui import comparing, defaults
from webui.breakpoint_form import EVENT_BREAKPOINTS
from webui.call_values import refuse_malformed_values
from webui.handlers import MAX_STEP_PRESSES, Handlers
from webui.render import OUTPUT_NAMES
from webui.sessions import CaptureSettings, SessionManager

# Runs in the page before a fork click goes out: the inputs [tab key, click], the click read off
# the hidden button where static/app.js left it.
FORK_CLICK_JS = "(key, click) => [key, document.getElementById('ml-fork-click-go')?.dataset.click || '']"
# Runs in the page before a Step goes out: the presses of Step (or the s key) since the last
# Step went out, which static/app.js counts. Gradio drops a click on a button whose call is in
# flight ("once") or keeps only the last ("always_last"): five quick presses stepped once.
STEP_PRESSES_JS = "(key, presses) => [key, window.mlTakeStepPresses?.() ?? 1]"
# Gradio's file cache: every 5 minutes, the files older than 15 minutes are deleted.
CACHE_SWEEP_SECONDS, CACHE_MAX_AGE_SECONDS = 300, 900


def build_app(manager: SessionManager, shared_as: str | None = None) -> gr.Blocks:
    """The page; shared_as: the address a LAN-shared server gives out (webui/shares.py link_host)."""
    handlers = Handlers(manager, shared_as)
    live = manager.base is not None
    engine, capture, starting = manager.starting_settings, CaptureSettings(), manager.starting
    # Gradio keeps a copy of every file it serves or receives (a saved trace, an uploaded one)
    # in its cache: swept, so a server that runs for days, or a client that uploads again and
    # again, cannot fill the disk. Both reach Gradio within seconds of being made.
    with gr.Blocks(title="mini-llama inspector", fill_width=True,
                   delete_cache=(CACHE_SWEEP_SECONDS, CACHE_MAX_AGE_SECONDS)) as app:
        gr.HTML(_header(manager), elem_id="ml-header")
        with gr.Row(equal_height=False, elem_id="ml-shell"):
            with gr.Column(scale=0, min_width=290, elem_id="ml-controls"):
                with gr.Accordion("Prompts", open=live):
                    prompts = gr.Textbox("\n".join(defaults.EXAMPLE_PROMPTS[:starting.num_prompts]), lines=4, max_lines=12, label="Prompts, one per line",
                                         elem_id="ml-prompts", interactive=live)
                    # On where the model has a template to wrap prompts in: a base model's tokenizer
                    # has none, and every prompt would be refused until the box was unticked.
                    chat = gr.Checkbox(defaults.CHAT and live and bool(manager.base.tokenizer is not None
                                                                       and manager.base.tokenizer.chat_template),
                                       label="Chat template", elem_id="ml-chat")
                    with gr.Row():
                        max_tokens = gr.Number(starting.max_tokens, label="Max tokens", precision=0, elem_id="ml-max-tokens",
                                               min_width=100)
                        temperature = gr.Number(0.0, label="Temperature", step=0.1, elem_id="ml-temperature",
                                                min_width=100)
                    with gr.Row():
                        # n samples of each prompt share its prompt's KV blocks; a beam search keeps
                        # the beam width best continuations (the KV cache tab shows the sharing).
                        samples = gr.Number(1, label="Samples (n)", precision=0, elem_id="ml-samples", min_width=100)
                        beam_width = gr.Number(1, label="Beam width", precision=0, elem_id="ml-beam-width",
                                               min_width=100)
                    with gr.Row():
                        top_p = gr.Number(1.0, label="Top-p", step=0.05)
                        top_k = gr.Number(0, label="Top-k (0 off)", precision=0)
                        # A text box: empty means no seed (a Number field would show and send 0).
                        seed = gr.Textbox("", label="Seed", placeholder="none", max_lines=1, elem_id="ml-seed")
                    add = gr.Button("Add prompts", variant="primary", elem_id="ml-add", interactive=live)
                with gr.Accordion("Engine (applies at Reset)", open=False):
                    kv_blocks = gr.Number(engine.num_kv_blocks, label="KV blocks (a small pool shows preemption)",
                                          precision=0, elem_id="ml-kv-blocks")
                    block_size = gr.Dropdown(["4", "8", "16", "32"], value=str(engine.block_size), label="Block size (tokens)",
                                             elem_id="ml-block-size")
                    max_num_seqs = gr.Number(engine.max_num_seqs, label="Max batch size", precision=0)
                    max_batched = gr.Number(engine.max_num_batched_tokens, precision=0,
                                            label="Max batched tokens (smaller: chunked prefill)")
                    prefix_caching = gr.Checkbox(engine.prefix_caching, label="Prefix caching")
                with gr.Accordion("Capture (applies at Reset)", open=False):
                    attention = gr.Checkbox(capture.attention, label="Record attention (prefill steps run eagerly)")
                    traced = gr.Textbox("", label="Trace the first n requests", placeholder="all (within the budget)",
                                        max_lines=1, elem_id="ml-traced")
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
                    armed = gr.HTML(handlers.armed([], "", "", "", "", ""), elem_id="ml-bp-armed")
                with gr.Accordion("Trace file", open=not live):
                    save = gr.Button("Save trace", elem_id="ml-save")
                    # The saved file lands here; static/app.js clicks its link, so one click on
                    # Save downloads the trace as it is at that moment.
                    saved = gr.File(visible="hidden", elem_id="ml-saved", interactive=False)
                    upload = gr.File(label="Open a trace (.mltrace)", file_types=[".mltrace"], elem_id="ml-open")
                    share = gr.Button("Share link", elem_id="ml-share")
                    share_url = gr.Textbox(label="A read-only view of this trace at this step, for anyone on the server",
                                           interactive=False, buttons=["copy"], elem_id="ml-share-url", max_lines=1)
            with gr.Column(scale=1, elem_id="ml-main"):
                with gr.Group(elem_classes="ml-debugger-bar"):
                    with gr.Row(elem_id="ml-bar-row"):
                        step = gr.Button("Step", elem_id="ml-step", interactive=live, size="sm", scale=0, min_width=64)
                        run = gr.Button("Run", elem_id="ml-run", interactive=live, size="sm", variant="primary",
                                        scale=0, min_width=64)
                        run_bp = gr.Button("Run to breakpoint", elem_id="ml-run-bp", interactive=live, size="sm",
                                           scale=0, min_width=140)
                        pause = gr.Button("Pause", elem_id="ml-pause", interactive=live, size="sm", variant="stop",
                                          scale=0, min_width=64)
                        reset = gr.Button("Reset", elem_id="ml-reset", interactive=live, size="sm", scale=0,
                                          min_width=64)
                        prev = gr.Button("◀", elem_id="ml-prev", size="sm", scale=0, min_width=40)
                        slider = gr.Slider(0, 1, value=0, step=1, label="Step", elem_id="ml-slider", scale=1,
                                           min_width=200)
                        nxt = gr.Button("▶", elem_id="ml-next", size="sm", scale=0, min_width=40)
                    status = gr.HTML(elem_id="ml-status")
                _plot_panel("timeline")
                with gr.Row(equal_height=False, elem_id="ml-work"):
                    with gr.Column(scale=5, min_width=320, elem_id="ml-text-pane"):
                        # The panel the user sees is the page's own: static/app.js draws the
                        # parts the hidden field "text" carries into it (webui/render.py text_carrier).
                        gr.HTML("<div id='ml-text-view'></div>", elem_id="ml-text", label="Text")
                    with gr.Column(scale=6, min_width=380, elem_id="ml-inspect-pane"):
                        with gr.Row(elem_id="ml-selection", equal_height=True):
                            # The sequence's label names a fork's origin ("↳ #2 ← #0 at step 3"): room for it.
                            seq = gr.Dropdown([], label="Sequence", elem_id="ml-seq", scale=3, min_width=150,
                                              container=False)
                            # Hidden for a one-layer model, as every render hides it (webui/render.py).
                            layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="ml-layer", scale=2,
                                              min_width=140, container=False, visible=not live or
                                              manager.base.model_config.num_hidden_layers > 1)
                            head = gr.Dropdown([("head 0", "0")], value="0", label="Head", elem_id="ml-head", scale=2,
                                               min_width=100, container=False)
                            full = gr.Checkbox(False, label="Every query", elem_id="ml-full", scale=1, min_width=80,
                                               container=False)
                        with gr.Tabs(elem_id="ml-tabs"):
                            with gr.Tab("KV cache", elem_id="ml-tab-kv", render_children=True):
                                _plot_panel("kv")
                                details = gr.HTML(elem_id="ml-details", label="Step details")
                                tables = gr.HTML(elem_id="ml-tables", label="Block tables")
                            with gr.Tab("Attention", elem_id="ml-tab-attention", render_children=True):
                                _plot_panel("attention")
                            with gr.Tab("Next token", elem_id="ml-tab-logits", render_children=True):
                                _plot_panel("logits")
                                # What if? The alternatives as buttons (a click forks there; static/app.js).
                                forks = gr.HTML(elem_id="ml-forks")
                                with gr.Row(elem_id="ml-fork-text-row", equal_height=True):
                                    # The label is the field's accessible name (not shown: the placeholder says it).
                                    fork_text = gr.Textbox("", placeholder="or type text to force here instead",
                                                           label="Text to force at this step", show_label=False, max_lines=1, elem_id="ml-fork-text",
                                                           scale=4, container=False, interactive=live)
                                    fork_text_go = gr.Button("Fork with text", elem_id="ml-fork-text-go", size="sm",
                                                             scale=1, min_width=110, interactive=live)
                                _plot_panel("history")
                            with gr.Tab("Logit lens", elem_id="ml-tab-lens", render_children=True):
                                _plot_panel("lens")
                            with gr.Tab("Branch", elem_id="ml-tab-branch", render_children=True):
                                branch = gr.HTML(elem_id="ml-branch")
                            with gr.Tab("Compare", elem_id="ml-tab-compare", render_children=True):
                                # The session beside a replay of it, or beside a trace file (webui/comparing.py).
                                with gr.Row(elem_id="ml-compare-bar", equal_height=True):
                                    compare_alone = gr.Button("Each request alone", elem_id="ml-compare-alone",
                                                              size="sm", scale=0, min_width=130, interactive=live)
                                    compare_fidelity = gr.Button("Float32 reference", size="sm", scale=0,
                                                                 elem_id="ml-compare-fidelity", min_width=130,
                                                                 interactive=live)
                                    compare_settings = gr.Button("Engine settings (left)", size="sm", scale=0,
                                                                 elem_id="ml-compare-settings", min_width=150,
                                                                 interactive=live)
                                    compare_file = gr.UploadButton("Trace file…", file_types=[".mltrace"], size="sm",
                                                                   elem_id="ml-compare-file", scale=0, min_width=100)
                                compare = gr.HTML(comparing.panel(None), elem_id="ml-compare")
                figures = gr.HTML(elem_id="ml-figures", elem_classes="ml-hidden")
                text = gr.Textbox(visible="hidden", elem_id="ml-text-data", lines=1, max_lines=1)
                # The tab key (webui/tab_keys.py): filled in when the page loads, sent with every call.
                key = gr.Textbox(visible="hidden", elem_id="ml-tab-key")
                # A click on a fork button: static/app.js puts the button's {"seq", "step", "token"}
                # on the hidden button (data-click) and clicks it; FORK_CLICK_JS hands it over as the
                # field's value, so no value can race the click.
                fork_click = gr.Textbox(visible="hidden", elem_id="ml-fork-click")
                fork_click_go = gr.Button(visible="hidden", elem_id="ml-fork-click-go")
                # How many steps one Step call takes (STEP_PRESSES_JS fills it in the page).
                step_presses = gr.Number(1, visible="hidden", minimum=1, maximum=MAX_STEP_PRESSES,
                                         elem_id="ml-step-presses")
                # The server's prev / next, for API clients (the page's ◀ / ▶ move the slider itself).
                prev_api = gr.Button(visible="hidden", elem_id="ml-prev-api")
                next_api = gr.Button(visible="hidden", elem_id="ml-next-api")

        panels = dict(status=status, slider=slider, text=text, figures=figures, tables=tables, details=details,
                      forks=forks, branch=branch, compare=compare, seq=seq, layer=layer, head=head, step=step, run=run,
                      run_bp=run_bp, fork_text_go=fork_text_go)
        outputs = [panels[name] for name in OUTPUT_NAMES]
        # Moving the cursor only reads the trace: no queue (a direct request), no progress overlay.
        quiet = dict(outputs=outputs, show_progress="hidden", queue=False)
        breakpoint_form = [bp_events, bp_step, bp_text, bp_entropy, bp_prob, bp_kv]

        app.load(handlers.load, None, outputs + [key], api_name="state")
        add.click(handlers.add_prompts, [key, prompts, chat, max_tokens, temperature, top_p, top_k, seed, samples,
                                         beam_width], outputs, api_name="add_prompts")
        step.click(handlers.step, [key, step_presses], outputs, js=STEP_PRESSES_JS, trigger_mode="always_last",
                   api_name="step", show_progress="hidden")
        run.click(handlers.run, [key], outputs, api_name="run", show_progress="hidden")
        run_bp.click(handlers.run_to_breakpoint, [key, *breakpoint_form], outputs, api_name="run_to_breakpoint",
                     show_progress="hidden")
        # Pause is a flag the run loop reads between steps (no cancellation mid-step); it needs
        # no queue slot of its own, so it acts at once even on a busy server.
        pause.click(handlers.pause, [key], status, api_name="pause", queue=False, show_progress="hidden")
        fork_click_go.click(handlers.fork_token, [key, fork_click], outputs, js=FORK_CLICK_JS, api_name="fork_token",
                            show_progress="hidden")
        gr.on([fork_text_go.click, fork_text.submit], handlers.fork_text, [key, fork_text], outputs, api_name="fork_text",
              show_progress="hidden")
        reset.click(handlers.reset, [key, kv_blocks, block_size, max_num_seqs, max_batched, prefix_caching,
                                     attention, traced, logits_k, lens], outputs, api_name="reset")
        slider.input(handlers.seek, [key, slider], trigger_mode="always_last", api_name="seek", **quiet)
        # ◀ / ▶ move the slider in the page, one step a click (static/app.js): a click on a
        # button whose call is in flight is dropped by Gradio, so a double click or quick
        # presses of an arrow key moved the cursor once. The slider's own event (always_last)
        # then sends where it ended. The server's prev/next stay for API clients.
        prev.click(None, js="() => window.mlMoveCursor?.(-1)")
        nxt.click(None, js="() => window.mlMoveCursor?.(1)")
        prev_api.click(handlers.prev, [key], api_name="prev", **quiet)
        next_api.click(handlers.next, [key], api_name="next", **quiet)
        for control in (seq, head, full):
            control.input(handlers.select, [key, seq, layer, head, full], trigger_mode="always_last", **quiet)
        layer.release(handlers.select, [key, seq, layer, head, full], api_name="select", **quiet)
        for field in breakpoint_form:
            field.change(handlers.armed, breakpoint_form, armed, queue=False, show_progress="hidden",
                         api_visibility="private")
        save.click(handlers.save_trace, [key], saved, api_name="save_trace")
        share.click(handlers.share_link, [key], share_url, api_name="share_link")
        # The box is emptied once the file is read: a file refused ("not a .mltrace file") stayed
        # in it, named with its size, as if it were the trace open; the status line says which is.
        upload.upload(handlers.open_trace, [key, upload], outputs, api_name="open_trace").then(
            lambda: None, None, upload, queue=False, show_progress="hidden", api_visibility="private")
        # A comparison fills the Compare tab and the status banner, and leaves the other panels.
        compared = [compare, status]
        compare_alone.click(handlers.compare_alone, [key], compared, api_name="compare_alone")
        compare_fidelity.click(handlers.compare_fidelity, [key], compared, api_name="compare_fidelity")
        compare_settings.click(handlers.compare_settings, [key, kv_blocks, block_size, max_num_seqs, max_batched,
                                                           prefix_caching], compared, api_name="compare_settings")
        compare_file.upload(handlers.compare_file, [key, compare_file], compared, api_name="compare_file")
    refuse_malformed_values(app)
    return app


def _plot_panel(name: str) -> gr.HTML:
    """A plot that stays on the page: static/app.js draws figure `name` into it with
    Plotly.react whenever the figures' carrier changes (see webui/render.py for why)."""
    return gr.HTML(f"<div id='ml-plot-{name}' class='ml-plot'></div>", elem_id=f"ml-{name}")


def _header(manager: SessionManager) -> str:
    if manager.base is None:
        what = f"viewing {escape(manager.startup_name)} (no model loaded: read-only)"
    else:
        engine = manager.base
        name = engine.model_dir.name if engine.model_dir is not None else "random weights"
        backend, dtype = engine.attention_backend, str(engine.dtype).removeprefix("torch.")
        what = f"{escape(name)} · {engine.device} · {dtype} · attention {escape(backend)}"
    keys = "← → move the cursor · space runs / pauses · ? all shortcuts"
    return f"<div class='ml-title'><b>mini-llama inspector</b> <span>{what}</span><span class='ml-keys'>{keys}</span></div>"
