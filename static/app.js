// mini-llama inspector: the plots, keyboard shortcuts and the token hover card.
// Loaded once in the page's <head>; Gradio renders the page later, so everything here is
// delegated from `document` and looks elements up when it needs them.
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
  const isRunning = () => document.querySelector("#ml-status-inner")?.dataset.running === "1";
  const typingIn = (el) =>
    el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

  // Left / right move the cursor one step; space runs, or pauses a run.
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || typingIn(document.activeElement)) return;
    if (event.key === "ArrowLeft") press("ml-prev");
    else if (event.key === "ArrowRight") press("ml-next");
    else if (event.key === " ") press(isRunning() ? "ml-pause" : "ml-run");
    else return;
    event.preventDefault();
  });

  // The plots. Every handler returns all the figures as JSON in the carrier #ml-figures;
  // each is drawn with Plotly.react into its div #ml-plot-<name>, which stays on the page, so
  // an update only redraws what changed (webui/render.py says why not gr.Plot).
  let drawn = null; // the payload last drawn
  const last = {}; // name -> {data: its JSON, layout: key -> JSON} as last drawn
  const PLOT_CONFIG = { responsive: true, displaylogo: false };
  // Layout keys a cursor move changes in figures whose data stays (the timeline's cursor
  // column, the history's cursor and dots): Plotly.relayout redraws just those, about 2 ms,
  // where Plotly.react redraws the whole figure, about 11 ms even with the same data.
  const LIGHT_KEYS = new Set(["shapes", "title", "annotations"]);
  const drawFigure = (div, name, figure) => {
    const data = JSON.stringify(figure.data);
    const layout = Object.fromEntries(Object.entries(figure.layout).map(([k, v]) => [k, JSON.stringify(v)]));
    const before = last[name];
    last[name] = { data, layout };
    if (before && before.data === data) {
      const keys = new Set([...Object.keys(layout), ...Object.keys(before.layout)]);
      const changed = [...keys].filter((k) => layout[k] !== before.layout[k]);
      if (changed.every((k) => LIGHT_KEYS.has(k))) {
        if (changed.length) window.Plotly.relayout(div, Object.fromEntries(changed.map((k) => [k, figure.layout[k] ?? null])));
        return;
      }
    }
    window.Plotly.react(div, figure.data, figure.layout, PLOT_CONFIG);
  };
  const drawFigures = () => {
    const carrier = document.querySelector("#ml-figures .ml-figure-data");
    // Gradio may keep the element and change only its attribute: compare the payload itself.
    if (!carrier || carrier.dataset.figures === drawn || !window.Plotly) return;
    drawn = carrier.dataset.figures;
    for (const [name, figure] of Object.entries(JSON.parse(drawn))) {
      const div = document.getElementById(`ml-plot-${name}`);
      if (div) drawFigure(div, name, figure);
    }
  };
  // Save trace: the server writes the file and puts it in the hidden #ml-saved; a new link
  // there is downloaded at once, so one click on Save gives the trace as it is at that moment.
  let downloaded = null;
  const downloadSaved = () => {
    const link = document.querySelector("#ml-saved a[href]");
    if (!link || link.href === downloaded) return;
    downloaded = link.href;
    link.click();
  };
  new MutationObserver(() => {
    drawFigures();
    downloadSaved();
  }).observe(document.documentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-figures", "href"],
  });

  // Clicking an output token moves the cursor to the step that sampled it: the slider moves
  // as if dragged there (its input event is what the server listens to).
  document.addEventListener("click", (event) => {
    const chip = event.target.closest?.(".tok[data-step]");
    const range = document.querySelector("#ml-slider input[type=range]");
    if (!chip || !range || range.disabled || range.value === chip.dataset.step) return;
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(range, chip.dataset.step);
    range.dispatchEvent(new Event("input", { bubbles: true }));
  });

  // Hovering an output token shows how likely it was: probability, rank and entropy.
  const card = document.createElement("div");
  card.id = "ml-token-card";
  card.hidden = true;
  // Gradio inserts this script after the document has loaded (DOMContentLoaded has fired).
  if (document.body) document.body.appendChild(card);
  else document.addEventListener("DOMContentLoaded", () => document.body.appendChild(card));
  document.addEventListener("mouseover", (event) => {
    const chip = event.target.closest?.(".tok[data-prob]");
    if (!chip) {
      card.hidden = true;
      return;
    }
    const p = Number(chip.dataset.prob);
    card.textContent =
      `p = ${p.toFixed(3)} · rank ${chip.dataset.rank} · entropy ${Number(chip.dataset.entropy).toFixed(2)} nats`;
    const box = chip.getBoundingClientRect();
    card.style.left = `${box.left + window.scrollX}px`;
    card.style.top = `${box.bottom + window.scrollY + 4}px`;
    card.hidden = false;
  });
})();
