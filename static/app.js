// mini-llama inspector: the plots, keyboard shortcuts, the token hover card, downloads.
// Gradio inserts this script into the page after the document has loaded and renders the
// page later still, so everything here is delegated from `document` and looks elements up
// when it needs them.
(() => {
  // The Gradio button with this elem_id (the id sits on the <button> or on its wrapper).
  const button = (id) => {
    const el = document.getElementById(id);
    if (!el) return null;
    return el.tagName === "BUTTON" ? el : el.querySelector("button");
  };
  const press = (id) => {
    const b = button(id);
    if (b && !b.disabled) b.click();
  };
  const statusElement = () => document.querySelector("#ml-status-inner");
  // The tab's key (webui/tab_keys.py), once Gradio's load event has put it on the page.
  const tabKey = () => document.querySelector("#ml-tab-key textarea, #ml-tab-key input")?.value || null;
  const isRunning = () => statusElement()?.dataset.running === "1";
  // A focused control that takes the keys itself: a text field every key, a slider or a radio
  // group the arrows, Home and End. A checkbox or a button takes only space (below): after a
  // click on one, s, b, the arrows and 1-6 still reach the debugger.
  const KEYLESS_INPUTS = ["checkbox", "button", "submit", "reset", "file", "color"];
  const typingIn = (el) =>
    el && (el.isContentEditable || ["TEXTAREA", "SELECT"].includes(el.tagName) ||
      (el.tagName === "INPUT" && !KEYLESS_INPUTS.includes(el.type)));
  // A control that space acts on when it has the focus.
  const activates = (el) =>
    Boolean(el?.closest?.("button, a[href], summary, input[type=checkbox], [role=button], [role=tab], " +
      "[tabindex]:not([tabindex='-1'])"));

  // -- leaving the page ---------------------------------------------------------------------
  // Reloading or leaving the page while a run streams its updates: Gradio's client closes its
  // own event stream in its beforeunload listener, and logs the abort it caused as two console
  // errors ("BodyStreamBuffer was aborted", "Connection errored out") before any listener of
  // this script (added later) runs. Nothing failed. So those two messages wait for the next
  // task, by when every beforeunload listener has run: logged then unless the page is leaving
  // (a stream that breaks while the page stays is still reported); every other error at once.
  let leaving = false;
  window.addEventListener("beforeunload", () => { leaving = true; });
  window.addEventListener("pageshow", () => { leaving = false; }); // back from the bfcache, or a cancelled leave
  const SELF_ABORTED = /BodyStreamBuffer was aborted|Connection errored out/;
  const logError = console.error.bind(console);
  // A stream that breaks while the page stays (the server stopped, the network dropped) ends
  // the run's updates: the status line said "running…" until the page was reloaded, and space
  // pressed Pause for a run the page could no longer hear of. It says what happened instead.
  const STREAM_BROKE = "the connection to the server broke: this page gets no more of the run's updates " +
    "(reload it once the server answers)";
  const streamBroke = () => {
    const status = statusElement();
    if (status?.dataset.running !== "1") return;
    status.dataset.running = "0";
    status.querySelector(".ml-info, .ml-error")?.remove();
    const line = Object.assign(document.createElement("span"), { className: "ml-error", textContent: STREAM_BROKE });
    line.setAttribute("role", "alert");
    status.append(line);
  };
  console.error = (...args) => {
    if (!args.some((arg) => SELF_ABORTED.test(String(arg?.message ?? arg)))) logError(...args);
    else {
      setTimeout(() => {
        if (leaving) return;
        logError(...args);
        streamBroke();
        checkServer(); // the status line says whether the server itself is gone
      }, 0);
    }
  };

  // -- is the server there? -----------------------------------------------------------------
  // A server stopped while the page sat idle left the status line saying "live engine" for good:
  // the page hears of the server only through its calls, and a press then got a toast that
  // Gradio is "attempting reconnection". So the page asks every few seconds (while it is shown)
  // whether the server answers, with a small report of its own (POST ml-api/alive): a request
  // that ends at once, not a stream held open (webui/front_door.py says why the page holds
  // none); any answer, a refusal too, is the server answering. While no answer comes, the
  // status line says so instead of naming a live engine, and no run is said to be under way. An answer of the same server
  // puts the line back (its session is still there); a restarted server makes Gradio reload
  // the page, which then says where its steps went (noteReload, below).
  const CHECK_EVERY_MS = 5000;
  const CHECK_TIMEOUT_MS = 15000; // a server busy with a run still answers well within this
  const SERVER_GONE = "the server does not answer (it stopped, or the network is down): nothing on this page " +
    "can step, run or change until it does; reload the page then";
  let gone = null; // while the server does not answer: {source, shown}, the status line's source and what replaced it
  const serverGone = () => {
    const status = statusElement();
    if (!status || gone?.shown.isConnected) return;
    status.dataset.running = "0"; // no run's updates can come: space runs, no Pause for a run unheard of
    status.querySelector(".ml-info")?.remove(); // "running it…" and the like: stale now (an error stays)
    const shown = Object.assign(document.createElement("span"), { className: "ml-source ml-offline", textContent: "no connection to the server" });
    const source = status.querySelector(".ml-source");
    if (source) source.replaceWith(shown);
    else status.prepend(shown);
    const line = Object.assign(document.createElement("span"), { className: "ml-error ml-offline", textContent: SERVER_GONE });
    line.setAttribute("role", "alert");
    status.append(line);
    gone = { source, shown };
  };
  const serverBack = () => {
    if (!gone) return;
    const { source, shown } = gone;
    gone = null;
    if (!shown.isConnected) return; // a render since has drawn the line afresh
    if (source) shown.replaceWith(source);
    else shown.remove();
    statusElement()?.querySelectorAll(".ml-offline").forEach((line) => line.remove());
  };
  let checking = false;
  // The check also tells the server this tab is still open (POST ml-api/alive): a tab that goes
  // without its pagehide beacon (a killed browser) falls silent, and its session's slot can go
  // to a new tab (webui/sessions.py SILENT_SHOWN_S). A hidden tab only says it is alive, in a
  // beacon, as often as the browser runs its timers (once a minute at worst); it checks nothing.
  const checkServer = async () => {
    if (checking || leaving) return;
    if (document.hidden) {
      navigator.sendBeacon("ml-api/alive", JSON.stringify({ key: tabKey(), hidden: true }));
      return;
    }
    checking = true;
    let answered = true; // any HTTP answer, an error status too, is the server answering
    try {
      await fetch("ml-api/alive", {
        method: "POST", headers: { "content-type": "application/json" }, cache: "no-store",
        body: JSON.stringify({ key: tabKey(), hidden: false }), signal: AbortSignal.timeout(CHECK_TIMEOUT_MS),
      });
    } catch {
      answered = false;
    } finally {
      checking = false;
    }
    if (leaving) return; // the page's own leaving aborted the check
    if (answered) serverBack();
    else serverGone();
  };
  setInterval(checkServer, CHECK_EVERY_MS);
  document.addEventListener("visibilitychange", checkServer); // a tab shown again asks at once
  window.addEventListener("offline", checkServer);
  window.addEventListener("online", checkServer);

  // -- the plots ------------------------------------------------------------------------------
  // Every handler returns all the figures as JSON in the carrier #ml-figures; each is drawn
  // with Plotly.react into its div #ml-plot-<name>, which stays on the page, so an update only
  // redraws what changed (webui/render.py says why not gr.Plot). To keep the page responsive
  // on a busy machine, drawing is paced by the browser itself:
  // - one figure per animation frame (no long task of several plots), the newest payload only
  //   (updates that arrive while drawing replace the ones not yet drawn);
  // - only plots on screen: a plot in a hidden tab waits until its tab is shown;
  // - once an update is drawn, the page tells the server (POST ml-api/drawn), which sends a
  //   running engine's next update only then.
  const payloads = {}; // carrier id -> its text last parsed
  const figures = {}; // name -> figure, from those payloads
  const pending = new Set(); // names whose figure changed since they were last drawn
  const last = {}; // name -> {data: its JSON, layout: key -> JSON} as last drawn
  let frameRequested = false;
  const PLOT_CONFIG = { responsive: true, displaylogo: false };
  const TIMELINE_CONFIG = { ...PLOT_CONFIG, scrollZoom: true }; // zoom with the wheel, drag to pan
  // Layout keys a cursor move changes in figures whose data stays (the timeline's cursor
  // column, the history's cursor and dots): Plotly.relayout redraws just those, where
  // Plotly.react redraws the whole figure even with the same data (docs/perf-notes.md).
  const LIGHT_KEYS = new Set(["shapes", "title", "annotations"]);
  const onScreen = (div) => div.offsetParent !== null && div.clientWidth > 0;
  // Every figure's template (colours, fonts, grid): in the page's head once, not in each
  // figure of each update (webui/render.py figures_html). Parsed for each draw, so no plot
  // shares an object with another that plotly.js could change.
  const templateText = () => document.querySelector("meta[name=ml-figure-template]")?.content || "{}";
  const withTemplate = (layout) => ({ template: JSON.parse(templateText()), ...layout });

  // The timeline's legend of states (a colour bar beside its title, inspector/views/timeline.py)
  // turns its labels on their side in a plot narrower than this (a phone), where it reached over
  // the title: there it gets a row of its own under the title, and the plot the height it takes.
  const NARROW_TIMELINE = 560;
  const LEGEND_ROW = 64; // px: the bar and its labels on their side
  const legendRowOfItsOwn = (layout) => ({
    ...layout,
    height: layout.height + LEGEND_ROW,
    margin: { ...layout.margin, t: layout.margin.t + LEGEND_ROW },
    title: { ...layout.title, yref: "container", y: 1, yanchor: "top", pad: { t: 4 } },
  });

  // Plotly never wraps a title: inspector/views/figure.py wrap_title breaks a long one for the
  // plot of a laptop's pane (about 480 px), and in a narrower plot (a phone) a line still ran
  // past the plot's edge, cut off. There a line breaks again at its last " · " that fits, and
  // the plot grows by the lines added. A note line (<sup>) stays as it is.
  const TITLE_CHAR_PX = 7.6; // an average character of the titles' 14 px font
  const TITLE_LINE_PX = 18;
  const fitTitle = (layout, width) => {
    const text = layout.title?.text;
    if (!text || !layout.margin || !layout.height) return layout;
    const fits = Math.max(Math.floor((width - 24) / TITLE_CHAR_PX), 16);
    const shown = (line) => line.replace(/&[#\w]+;/g, "x").length; // an entity is one character
    const lines = [];
    for (let line of text.split("<br>")) {
      while (!line.startsWith("<sup>") && shown(line) > fits) {
        const cuts = [...line.matchAll(/ · /g)].map((m) => m.index).filter((i) => i > 0 && shown(line.slice(0, i)) <= fits);
        if (!cuts.length) break;
        const cut = cuts[cuts.length - 1];
        lines.push(line.slice(0, cut));
        line = line.slice(cut + 1); // the next line starts "· ": the words of the two stay apart in its text
      }
      lines.push(line);
    }
    const added = lines.length - text.split("<br>").length;
    if (!added) return layout;
    return {
      ...layout,
      title: { ...layout.title, text: lines.join("<br>") },
      height: layout.height + added * TITLE_LINE_PX,
      margin: { ...layout.margin, t: layout.margin.t + added * TITLE_LINE_PX },
    };
  };

  // The div each figure was last drawn into. Gradio takes a plot div off the page when it
  // replaces the panel around it (the Compare tab's, on each comparison and when the session
  // changes): plotly.js had put a window resize listener on it (responsive plots), which kept
  // the whole plot, detached, for as long as the page lived (350 nodes a comparison). A div
  // gone is purged: its listeners, and plotly.js's data on it, go with it.
  const drawnInto = new Map();
  const purgeGone = () => {
    for (const [name, div] of drawnInto) {
      if (div.isConnected) continue;
      drawnInto.delete(name);
      delete last[name]; // the next draw of this name is a whole one, into its new div
      window.Plotly?.purge(div);
    }
  };

  const drawFigure = (div, name, figure) => {
    purgeGone();
    drawnInto.set(name, div);
    figure = { ...figure, layout: fitTitle(figure.layout, div.clientWidth) };
    if (name === "timeline") {
      // Keep the user's zoom and pan across updates (uirevision), and drag to pan.
      figure.layout = { ...figure.layout, dragmode: "pan", uirevision: "timeline" };
      if (div.clientWidth < NARROW_TIMELINE) figure.layout = legendRowOfItsOwn(figure.layout);
    }
    // The div takes the figure's height: with responsive plots, Plotly sizes a plot to its div
    // when the window is resized, and a div sized by its content would collapse to nothing.
    if (figure.layout.height) div.style.height = `${figure.layout.height}px`;
    const data = JSON.stringify(figure.data);
    const layout = Object.fromEntries(Object.entries(figure.layout).map(([k, v]) => [k, JSON.stringify(v)]));
    const before = last[name];
    last[name] = { data, layout };
    if (before && before.data === data && div.data) {
      const keys = new Set([...Object.keys(layout), ...Object.keys(before.layout)]);
      const changed = [...keys].filter((k) => layout[k] !== before.layout[k]);
      if (changed.every((k) => LIGHT_KEYS.has(k))) {
        if (changed.length) window.Plotly.relayout(div, Object.fromEntries(changed.map((k) => [k, figure.layout[k] ?? null])));
        return;
      }
    }
    window.Plotly.react(div, figure.data, withTemplate(figure.layout), name === "timeline" ? TIMELINE_CONFIG : PLOT_CONFIG);
    if (name === "logits" && !div.dataset.forkClicks) {
      // A click on a bar of the Next token chart is a click on that rank's fork button (below it).
      div.dataset.forkClicks = "1";
      div.on("plotly_click", (event) => {
        const rank = event.points?.[0]?.y;
        if (!Number.isInteger(rank)) return;
        document.querySelector(`#ml-forks .mlv-fork-tok[data-rank="${rank}"]:not([disabled])`)?.click();
      });
    }
  };

  let acknowledged = 0;
  const acknowledge = () => {
    const update = Number(statusElement()?.dataset.update || 0);
    const key = tabKey();
    if (!key || update <= acknowledged) return;
    acknowledged = update;
    fetch("ml-api/drawn", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key, update }),
    }).catch(() => {});
  };

  // A tab going away says so (its Run pauses, its session's slot is the first to reclaim). A
  // beacon is sent even as the page unloads. The server hears it here rather than through
  // Gradio's unload event, which would hold a connection open per tab: a browser opens six to
  // one server, and the sixth tab never loaded (webui/front_door.py).
  window.addEventListener("pagehide", () => {
    const key = tabKey();
    if (key) navigator.sendBeacon("ml-api/closed", JSON.stringify({ key }));
  });

  // plotly.js (4.6 MB) is loaded when the first figure is to be drawn, not in the page's head:
  // there its 0.7 s of script on two cores ran while Gradio built the page, which showed that
  // much later (docs/perf-notes.md). Its address is in the head (webui/server.py page_head).
  // If it cannot be loaded (the server stopped meanwhile), each plot says so instead of staying
  // blank, and the page stops waiting for it.
  const PLOTLY_FAILED = "The plotting library (plotly.js) could not be loaded from the server: reload the page once it answers.";
  let plotlyFailed = false;
  const loadPlotly = () => {
    if (document.getElementById("ml-plotly-js")) return;
    const src = document.querySelector("meta[name=ml-plotly]")?.content;
    if (!src) return;
    const script = Object.assign(document.createElement("script"), { id: "ml-plotly-js", src });
    script.addEventListener("error", () => {
      plotlyFailed = true;
      for (const div of document.querySelectorAll(".ml-plot")) {
        div.replaceChildren(Object.assign(document.createElement("p"), { className: "ml-empty", textContent: PLOTLY_FAILED }));
      }
    });
    document.head.append(script);
  };
  const drawNext = () => {
    frameRequested = false;
    takeText(); // drawn before the update is acknowledged (the field may be set after the status line)
    if (!window.Plotly) { // plotly.js is still loading: try again next frame
      if (plotlyFailed) return;
      loadPlotly();
      requestDraw();
      return;
    }
    for (const name of pending) {
      const div = document.getElementById(`ml-plot-${name}`);
      if (!div || !onScreen(div)) continue; // stays pending until shown
      pending.delete(name);
      drawFigure(div, name, figures[name]);
      requestDraw(); // the next one in the next frame
      return;
    }
    acknowledge(); // everything on screen shows the newest update
  };
  const requestDraw = () => {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(drawNext);
  };
  // Two carriers: the step's figures (#ml-figures) and the Compare tab's chart (#ml-compare).
  const CARRIERS = ["ml-figures", "ml-compare"];
  const takePayload = () => {
    let changed = false;
    for (const id of CARRIERS) {
      const carrier = document.querySelector(`#${id} .ml-figure-data`);
      // A panel without its carrier (the Compare tab's note that the run changed) took its plot
      // div too: the next payload draws afresh, even one the same as the last.
      if (!carrier) delete payloads[id];
      // Gradio may keep the element and change only its attribute: compare the payload itself.
      if (!carrier || carrier.dataset.figures === payloads[id]) continue;
      payloads[id] = carrier.dataset.figures;
      const parsed = JSON.parse(payloads[id]);
      Object.assign(figures, parsed);
      for (const name of Object.keys(parsed)) pending.add(name);
      changed = true;
    }
    return changed;
  };

  // -- downloads ----------------------------------------------------------------------------
  // Save trace: the server writes the file and puts it in the hidden #ml-saved; a new link
  // there is downloaded at once, so one click on Save gives the trace as it is at that moment.
  let downloaded = null;
  const downloadSaved = () => {
    const link = document.querySelector("#ml-saved a[href]");
    if (!link || link.href === downloaded) return;
    downloaded = link.href;
    link.click();
  };

  // A folded system prompt the user opened stays open when the text panel is drawn again.
  // Every chat request has the same system prompt, so the panel sends its chips once: a fold
  // that names another (data-copy) gets a copy of that one's chips when it is opened
  // (inspector/views/text_panel.py).
  const openFolds = new Set();
  // A sample's or beam's fold of its request's prompt names (data-prompt) how many prompt chips
  // of its group's first sequence (data-copy) it holds: those are copied, folds flattened.
  const unfolded = (fold) => {
    fillFold(fold);
    return [...fold.children].filter((child) => child.tagName !== "SUMMARY");
  };
  const promptChips = (view, seqId, count) => {
    const tokens = view?.querySelector(`.mlv-seq[data-seq="${seqId}"] > .mlv-tokens`);
    const nodes = [];
    let chips = 0;
    for (const node of [...(tokens?.children ?? [])].flatMap((n) => (n.matches("details.mlv-fold") ? unfolded(n) : [n]))) {
      if (node.tagName === "BR") { // a newline chip's line break goes with its chip
        if (nodes.length && nodes.at(-1).tagName !== "BR") nodes.push(node);
        continue;
      }
      if (chips === count || !node.classList.contains("tok-prompt")) break;
      nodes.push(node);
      chips += 1;
    }
    return nodes;
  };
  const fillFold = (fold) => {
    if (!fold.dataset.copy || fold.children.length > 1) return; // only its summary so far
    const view = fold.closest("#ml-text");
    const chips = fold.dataset.prompt !== undefined
      ? promptChips(view, fold.dataset.copy, Number(fold.dataset.prompt))
      : [...(view?.querySelector(`details.mlv-fold[data-fold="${fold.dataset.copy}"]`)?.children ?? [])]
        .filter((child) => child.tagName !== "SUMMARY");
    fold.append(...chips.map((chip) => chip.cloneNode(true)));
  };
  document.addEventListener("toggle", (event) => {
    const fold = event.target;
    if (!fold.matches?.("details.mlv-fold")) return;
    if (fold.open) {
      fillFold(fold);
      openFolds.add(fold.dataset.fold);
    } else openFolds.delete(fold.dataset.fold);
  }, true);
  const reopenFolds = () => {
    if (!openFolds.size) return;
    for (const fold of document.querySelectorAll("#ml-text details.mlv-fold:not([open])")) {
      if (openFolds.has(fold.dataset.fold)) fold.open = true;
    }
  };

  // -- the Text panel -----------------------------------------------------------------------
  // The server sends the panel as keyed parts (inspector/views/text_parts.py: the caption, then
  // per sequence, or per request of samples or beams, its opening tag, heading, prompt and output
  // chips) as JSON in the hidden field #ml-text-data. The panel the user sees, #ml-text-view, is
  // the page's own: Gradio never re-renders it. An update keeps every node whose part is the
  // string it last drew and parses only the others, and of a sequence's output chips only those
  // after the ones it had. A one-step cursor move parses a few chips and headings; Gradio's HTML
  // component parsed the whole panel (180 KB, thousands of chips in a long run) and compared it
  // with the page node by node (docs/perf-notes.md, stop 41). What the panel shows after any
  // run of updates is the DOM of the panel's HTML (views.text_html), the parts joined.
  const TOKENS_OPEN = '<div class="mlv-tokens">'; // text_parts.py TOKENS_OPEN: a sequence's chips
  const textField = () => document.querySelector("#ml-text-data textarea, #ml-text-data input");
  // Markup is parsed by a template element: inert (no script runs, no image loads) until its
  // nodes are put in the page, and then only what the server's escaped HTML holds, as before.
  const parser = document.createElement("template");
  const parse = (html) => {
    parser.innerHTML = html;
    return [...parser.content.childNodes];
  };
  // The nodes `html` makes, put in `parent` before `before` (null: at its end).
  const insert = (parent, html, before) => {
    const nodes = parse(html);
    parent.insertBefore(parser.content, before);
    return nodes;
  };
  // A part drawn: {html, nodes}. Replaced only if its string changed.
  const redraw = (shown, html, parent, before) => {
    if (shown.html === html) return shown;
    const nodes = insert(parent, html, shown.nodes[0] ?? before);
    for (const node of shown.nodes) node.remove();
    return { html, nodes };
  };
  const element = (openTag) => parse(`${openTag}</div>`)[0];
  // Output chips, parsed at once: an empty comment between two chips says where one ends
  // (a chip is escaped markup, which holds no comment). -> the first node of each chip.
  const appendChips = (tokens, chips) => {
    if (!chips.length) return [];
    const firsts = [];
    let starts = true;
    for (const node of parse(chips.join("<!---->"))) {
      if (node.nodeType === Node.COMMENT_NODE) {
        node.remove();
        starts = true;
      } else if (starts) {
        firsts.push(node);
        starts = false;
      }
    }
    tokens.append(parser.content);
    return firsts;
  };
  const drawSequence = (part, shown) => {
    if (!shown) {
      const el = element(part.open);
      const tokens = element(TOKENS_OPEN);
      shown = { open: part.open, el, tokens, head: { html: null, nodes: [] }, prompt: { html: null, nodes: [] },
        out: [], firsts: [] };
      el.append(tokens);
    }
    shown.head = redraw(shown.head, part.head, shown.el, shown.tokens);
    shown.prompt = redraw(shown.prompt, part.prompt, shown.tokens, shown.firsts[0] ?? null);
    // The chips both have, from the first, stay; from the first that differs on, the page's go
    // (each to the end of the sequence's chips) and the new ones are appended.
    let common = 0;
    while (common < shown.out.length && common < part.out.length && shown.out[common] === part.out[common]) common += 1;
    for (let node = shown.firsts[common]; node;) {
      const next = node.nextSibling;
      node.remove();
      node = next;
    }
    shown.firsts = [...shown.firsts.slice(0, common), ...appendChips(shown.tokens, part.out.slice(common))];
    shown.out = part.out;
    return shown;
  };
  const drawGroup = (part, shown) => {
    if (!shown) shown = { open: part.open, el: element(part.open), head: { html: null, nodes: [] }, items: new Map() };
    shown.head = redraw(shown.head, part.head, shown.el, shown.el.firstChild);
    shown.items = drawItems(shown.el, shown.head.nodes.at(-1), shown.items, part.items);
    return shown;
  };
  // The items of a panel or group, in the parts' order, after the node `after`: an item drawn
  // before under the same key and opening tag is kept (moved if the order changed), and
  // updated; any other is drawn afresh; the page's items no longer listed go.
  const drawItems = (parent, after, shownItems, parts) => {
    const kept = new Map();
    let previous = after;
    for (const part of parts) {
      const group = Array.isArray(part.items);
      let shown = shownItems.get(part.key);
      if (!shown || shown.open !== part.open || Boolean(shown.items) !== group) shown = null;
      shown = group ? drawGroup(part, shown) : drawSequence(part, shown);
      const next = previous ? previous.nextSibling : parent.firstChild;
      if (next !== shown.el) parent.insertBefore(shown.el, next);
      previous = shown.el;
      kept.set(part.key, shown);
    }
    for (const [key, shown] of shownItems) if (kept.get(key) !== shown) shown.el.remove();
    return kept;
  };
  let textShown = null; // {open, root, caption, items} as drawn
  let textTaken = ""; // the field's value last drawn
  const drawText = (view, parts) => {
    // A new panel card (a problem's message after the text, or back), or a view Gradio made
    // afresh: everything is drawn anew.
    if (!textShown || textShown.open !== parts.open || textShown.root.parentNode !== view) {
      const root = element(parts.open);
      view.replaceChildren(root);
      textShown = { open: parts.open, root, caption: { html: null, nodes: [] }, items: new Map() };
    }
    const { root } = textShown;
    textShown.caption = redraw(textShown.caption, parts.caption, root, root.firstChild);
    textShown.items = drawItems(root, textShown.caption.nodes.at(-1), textShown.items, parts.items);
  };
  // The field's newest parts, drawn if they changed (or the view was made afresh); then the
  // folds the user had opened are opened again (a fold whose part changed is drawn closed).
  const takeText = () => {
    const value = textField()?.value;
    const view = document.getElementById("ml-text-view");
    if (!value || !view || (value === textTaken && textShown?.root.parentNode === view)) return;
    drawText(view, JSON.parse(value));
    textTaken = value;
    reopenFolds();
  };

  // -- what screen readers hear ---------------------------------------------------------------
  // Each render replaces the status line whole, and a region inserted afresh is not announced
  // (nor would the step counter, ten times a second in a run, be welcome). So one live region
  // of the page's own, never re-rendered, says each new message ("paused", "breakpoint at step
  // 4: ...", an error) once; the render's role=alert on an error is announced by itself.
  let announced = "";
  const announce = () => {
    const message = statusElement()?.querySelector(".ml-info")?.textContent || "";
    if (message === announced) return;
    announced = message;
    let region = document.getElementById("ml-announce");
    if (!region) {
      region = Object.assign(document.createElement("div"), { id: "ml-announce", className: "ml-visually-hidden" });
      region.setAttribute("role", "status");
      region.setAttribute("aria-live", "polite");
      document.body.append(region);
    }
    region.textContent = message;
  };

  // -- names for assistive technology ------------------------------------------------------
  // A control's accessible name is what a screen reader says and what voice control matches.
  // ◀ / ▶ were named by their symbol alone ("black left-pointing triangle"). A Gradio text field
  // with a copy button (the share link) wraps the button and the field in one <label>, whose
  // control is then the button (the first labelable element in it): the field had no name at
  // all. Every control gets a name once it is on the page: the icon buttons their words, and a
  // field no label names its block's label.
  const ICON_BUTTON_NAMES = { "ml-prev": "Previous step (←)", "ml-next": "Next step (→)" };
  const nameControls = () => {
    for (const [id, name] of Object.entries(ICON_BUTTON_NAMES)) {
      const b = button(id);
      if (b && b.getAttribute("aria-label") !== name) {
        b.setAttribute("aria-label", name);
        b.title = name;
      }
    }
    for (const field of document.querySelectorAll("#ml-shell input:not([aria-label]), #ml-shell textarea:not([aria-label])")) {
      if (field.type === "hidden" || field.labels?.length || field.hasAttribute("aria-labelledby")) continue;
      const label = field.closest(".block")?.querySelector("[data-testid=block-info]")?.textContent.trim();
      if (label) field.setAttribute("aria-label", label);
    }
  };

  // -- a reload starts afresh ---------------------------------------------------------------
  // Each page load is a new session (webui/tab_keys.py): a reload, or the one Gradio makes when
  // a restarted server answers again, showed an empty session where the run had been, without
  // a word. The tab remembers (sessionStorage: this tab only, no key) how many steps its page
  // showed, and the first render after a reload that shows none says where they went.
  const STEPS_SHOWN = "ml-steps-shown";
  const stepsBefore = Number(sessionStorage.getItem(STEPS_SHOWN) || 0);
  let firstRender = true;
  let stepsSaved = null;
  const noteReload = () => {
    const status = statusElement();
    if (!status) return;
    const steps = Number(status.dataset.steps || 0);
    if (steps !== stepsSaved) sessionStorage.setItem(STEPS_SHOWN, String(steps));
    stepsSaved = steps;
    const note = document.getElementById("ml-reload-note");
    if (steps > 0) note?.remove(); // the new session has a run of its own now
    if (!firstRender) return;
    firstRender = false;
    if (stepsBefore === 0 || steps > 0) return;
    const made = Object.assign(document.createElement("div"), { id: "ml-reload-note", className: "ml-info" });
    made.setAttribute("role", "alert");
    made.textContent = `This page was reloaded (by you, or after the server restarted): it started a new, empty ` +
      `session, and the ${stepsBefore} step(s) it showed before are gone. Save trace (Trace file) keeps a run ` +
      "across reloads. (Click to close.)";
    made.addEventListener("click", () => made.remove());
    document.getElementById("ml-status")?.after(made);
  };

  new MutationObserver(() => {
    purgeGone();
    nameControls();
    takeText();
    announce();
    noteReload();
    if (takePayload() || pending.size) requestDraw();
    else if (Number(statusElement()?.dataset.update || 0) > acknowledged) requestDraw(); // text-only updates
    downloadSaved();
  }).observe(document.documentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-figures", "data-update", "href"],
  });
  // A tab shown: its plots draw now (left pending while hidden; Gradio may also mount a tab's
  // content afresh, with empty plot divs).
  document.addEventListener("click", (event) => {
    if (!event.target.closest?.("[role=tab]")) return;
    for (const name of Object.keys(figures)) pending.add(name);
    setTimeout(requestDraw, 0);
  });

  // -- keyboard -------------------------------------------------------------------------------
  const SHORTCUTS = [
    ["← / →", "previous / next step"],
    ["Home / End", "first / last step"],
    ["space", "Run, or Pause a run (on a focused button, section or tab: presses it)"],
    ["s", "one Step"],
    ["b", "Run to breakpoint"],
    ["1 – 6", "KV cache / Attention / Next token / Logit lens / Branch / Compare tab"],
    ["?", "this help (Esc closes it)"],
  ];
  const help = document.createElement("div");
  help.id = "ml-help";
  help.hidden = true;
  help.setAttribute("role", "dialog");
  help.setAttribute("aria-label", "Keyboard shortcuts");
  help.setAttribute("aria-modal", "true");
  help.innerHTML = "<div class='ml-help-card' tabindex='-1'><b>Keyboard shortcuts</b><table></table><p>Click a generated token to " +
    "jump to the step that sampled it; click another token under the Next token chart to fork there. Wheel over " +
    "the timeline zooms, dragging pans; double-click resets.</p></div>";
  for (const [keys, what] of SHORTCUTS) {
    const row = help.querySelector("table").insertRow();
    row.insertCell().textContent = keys;
    row.insertCell().textContent = what;
  }
  // A modal dialog: opened, it takes the focus (a screen reader reads it out, and Tab no longer
  // walks the page behind it); closed, it gives the focus back where it was. It opened with the
  // focus left behind it, and a keyboard user tabbed on through the page it covered.
  let focusBefore = null;
  const showHelp = (open) => {
    if (open === !help.hidden) return;
    help.hidden = !open;
    if (open) {
      focusBefore = document.activeElement;
      help.querySelector(".ml-help-card").focus();
    } else {
      focusBefore?.focus?.();
      focusBefore = null;
    }
  };
  help.addEventListener("click", () => showHelp(false));
  const seekTo = (value) => {
    const range = document.querySelector("#ml-slider input[type=range]");
    if (!range || range.disabled || range.value === String(value)) return;
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(range, String(value));
    range.dispatchEvent(new Event("input", { bubbles: true }));
  };
  // ◀ / ▶ and the arrow keys: the slider moves in the page at once, one step a press, and its
  // input event (trigger_mode always_last) sends where it is once the call in flight answers.
  // Each press reads the slider as the previous press left it, so quick presses add up; a
  // button calling the server per press would drop those made while its call is in flight.
  const moveCursor = (delta) => {
    const range = document.querySelector("#ml-slider input[type=range]");
    if (!range || range.disabled) return;
    const target = Math.min(Math.max(Number(range.value) + delta, Number(range.min)), Number(range.max));
    seekTo(target);
  };
  window.mlMoveCursor = moveCursor; // webui/layout.py: the ◀ / ▶ buttons' click

  // -- the sliders' number boxes --------------------------------------------------------------
  // A Gradio slider sends its number box's value as typed, on every keystroke (the step's input
  // event) or as the box loses the focus (the layer's release): 99999 or -5 was refused by the
  // server (a 400, an "Error" toast, a console error) while the range drew its thumb at the end,
  // 12.5 moved the range to 13 and the panels to 12, and an emptied box sent nothing but the
  // number 0 to the range. Each value is made one the slider can take before Gradio reads it:
  // on its step, no higher than its maximum. A box that is empty, unfinished ("-", "1e") or
  // below the minimum (the first digits of a larger number, in a slider that starts above 0)
  // sends nothing while typed, and gets the nearest value the slider can take on Enter or when
  // the focus leaves it (the slider's own value if it holds no number). The capture phase on the
  // document runs before the listeners on the box itself.
  const sliderBox = (el) =>
    el?.matches?.("input[type=number]") && el.closest(".block")?.querySelector("input[type=range]") ? el : null;
  const typedNumber = (box) => (box.value === "" ? NaN : Number(box.value));
  const onItsStep = (box, value) => {
    const [min, max, step] = [Number(box.min), Number(box.max), Number(box.step) || 1];
    const stepped = min + Math.round((value - min) / step) * step;
    return Math.min(Math.max(Number(stepped.toFixed(6)), min), max);
  };
  const setValue = (input, value) =>
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(input, String(value));
  document.addEventListener("input", (event) => {
    const box = sliderBox(event.target);
    if (!box) return;
    const typed = typedNumber(box);
    if (!Number.isFinite(typed) || typed < Number(box.min)) {
      event.stopImmediatePropagation();
      return;
    }
    const value = onItsStep(box, typed);
    if (box.value !== String(value)) setValue(box, value);
  }, true);
  const settle = (event) => {
    const box = sliderBox(event.target);
    if (!box || (event.type === "keydown" && event.key !== "Enter")) return;
    const typed = typedNumber(box);
    if (Number.isFinite(typed) && typed >= Number(box.min)) return; // sent as typed (above)
    const range = box.closest(".block").querySelector("input[type=range]");
    setValue(box, Number.isFinite(typed) ? onItsStep(box, typed) : range.value);
    box.dispatchEvent(new Event("input", { bubbles: true }));
  };
  document.addEventListener("blur", settle, true);
  document.addEventListener("keydown", settle, true); // Enter, the focus staying

  // Each press of Step counts (a click, or the s key, which clicks it); the Step event takes the
  // count when its call goes out (webui/layout.py STEP_PRESSES_JS). Gradio sends a press made
  // while a Step is in flight once that call ends, so the presses made meanwhile go out together:
  // five quick presses step five times. The capture phase counts a click before Gradio sees it.
  const MAX_STEP_PRESSES = 32; // webui/handlers.py
  let stepPresses = 0;
  document.addEventListener("click", (event) => {
    const step = button("ml-step");
    if (step && !step.disabled && step.contains(event.target)) stepPresses += 1;
  }, true);
  window.mlTakeStepPresses = () => {
    const presses = Math.min(Math.max(stepPresses, 1), MAX_STEP_PRESSES);
    stepPresses = 0;
    return presses;
  };
  // The tabs by key 1-6 (webui/layout.py's order and labels). In a window too narrow for every
  // tab, Gradio moves the last ones into a "more" menu, as buttons with no id or role=tab: those
  // are found by their label (indexing the role=tab buttons left keys 4-6 doing nothing).
  const TABS = [["kv", "KV cache"], ["attention", "Attention"], ["logits", "Next token"], ["lens", "Logit lens"],
    ["branch", "Branch"], ["compare", "Compare"]];
  const showTab = (n) => {
    if (!TABS[n]) return;
    const [id, label] = TABS[n];
    const tab = document.getElementById(`ml-tab-${id}-button`) ?? [...document.querySelectorAll("#ml-tabs button")]
      .find((b) => !b.closest(".visually-hidden") && b.textContent.trim() === label);
    tab?.click();
  };
  document.addEventListener("keydown", (event) => {
    if (!help.hidden && (event.key === "Escape" || event.key === "Tab")) {
      event.preventDefault();
      if (event.key === "Escape") showHelp(false); // Tab: the focus stays in the dialog
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey || typingIn(document.activeElement)) return;
    // A focused control keeps its space: it presses a focused button, opens a section, picks a
    // tab (it ran the engine instead: a keyboard user could not press Add prompts or Reset).
    if (event.key === " " && activates(document.activeElement)) return;
    const range = document.querySelector("#ml-slider input[type=range]");
    if (event.key === "ArrowLeft") moveCursor(-1);
    else if (event.key === "ArrowRight") moveCursor(1);
    else if (event.key === "Home" && range) seekTo(range.min);
    else if (event.key === "End" && range) seekTo(range.max);
    else if (event.key === " ") press(isRunning() ? "ml-pause" : "ml-run");
    else if (event.key === "s") press("ml-step");
    else if (event.key === "b") press("ml-run-bp");
    else if (["1", "2", "3", "4", "5", "6"].includes(event.key)) showTab(Number(event.key) - 1);
    else if (event.key === "?") showHelp(help.hidden);
    else return;
    event.preventDefault();
  });

  // Clicking an output token moves the cursor to the step that sampled it: the slider moves
  // as if dragged there (its input event is what the server listens to).
  document.addEventListener("click", (event) => {
    const chip = event.target.closest?.(".tok[data-step]");
    if (chip) seekTo(chip.dataset.step);
  });

  // What if? A click on a token's fork button (Next token tab) forks the sequence there with it:
  // its sequence, step and token go to the server on the hidden button, which the click event
  // reads them from (webui/layout.py FORK_CLICK_JS); the server checks them again.
  document.addEventListener("click", (event) => {
    const choice = event.target.closest?.(".mlv-fork-tok[data-token]");
    const go = document.getElementById("ml-fork-click-go");
    if (!choice || choice.disabled || !go) return;
    const { seq, step, token } = choice.dataset;
    go.dataset.click = JSON.stringify({ seq: Number(seq), step: Number(step), token: Number(token) });
    press("ml-fork-click-go");
  });

  // Hovering a token of the Text panel shows where it is and its id; an output token also how
  // likely it was (data-likely: "probability,rank,entropy"). The panel carries these as data-*
  // attributes (inspector/views/text_panel.py), not as titles: it is sent anew on every cursor
  // move. A prompt token's position is its place among its sequence's prompt chips.
  const card = document.createElement("div");
  card.id = "ml-token-card";
  card.hidden = true;
  const mount = () => document.body.append(card, help);
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
  document.addEventListener("mouseover", (event) => {
    const chip = event.target.closest?.(".tok[data-id]");
    if (!chip) {
      card.hidden = true;
      return;
    }
    const { likely, step, id } = chip.dataset;
    const position = () => [...(chip.closest(".mlv-seq")?.querySelectorAll(".tok-prompt") ?? [])].indexOf(chip);
    const where = step !== undefined ? `sampled at step ${step}` : `prompt position ${position()}`;
    const [prob, rank, entropy] = (likely ?? "").split(",");
    const odds = likely !== undefined
      ? `p = ${Number(prob).toFixed(3)} · rank ${rank} · entropy ${Number(entropy).toFixed(2)} nats · ` : "";
    card.textContent = `${odds}${where} · token id ${id}`;
    const box = chip.getBoundingClientRect();
    card.style.left = `${box.left + window.scrollX}px`;
    card.style.top = `${box.bottom + window.scrollY + 4}px`;
    card.hidden = false;
  });

  // A click with the mouse on a debugger-bar button gives the focus to the page, not to the
  // button, so space still runs or pauses after a click on Step or Run (a focused button takes
  // the space for itself, above). The keyboard still reaches and presses every button.
  document.addEventListener("mousedown", (event) => {
    if (event.button !== 0 || !event.target.closest?.("#ml-bar-row button")) return;
    event.preventDefault();
    document.activeElement?.blur?.();
  });
})();
