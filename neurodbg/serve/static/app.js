// neurodbg web app: a thin view over the HTTP API. Every piece of model or corpus
// text reaches the page through textContent (never innerHTML), so tokens such as
// <script> are shown, not run.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x) ? "n/a" : Number(x).toFixed(digits));
const pct = (p) => (p === null || p === undefined ? "n/a" : (100 * p).toFixed(1) + "%");
const quoted = (t) => JSON.stringify(t);

// -- state -------------------------------------------------------------------------------------
const state = {
  info: null,
  messages: [],        // chat turns so far (chat-template mode)
  ids: [], tokens: [], template: [],
  positions: [],       // token view: per position, the top next tokens
  chosenFrom: {},      // index -> top-k the streamed token was chosen from
  start: null,         // first generated index of the last reply
  selected: null,      // clicked token index
  steerSaved: null,    // resolved spec JSON (from preview or apply), for Save
  steerLoaded: null,   // a loaded spec (interventions JSON), replayed by Apply
  steerSpecs: [],      // specs kept with "Add to run": they run together with the form's
  generating: null,    // AbortController of the running chat stream
  attention: null,
  analysisSeq: 0,
};

// -- plumbing ----------------------------------------------------------------------------------
function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

const progress = {
  started: 0, timer: null,
  show(label, fraction) {
    const box = $("#progress");
    box.hidden = false;
    box.classList.toggle("indeterminate", fraction === null);
    box.querySelector(".fill").style.width = fraction === null ? "30%" : `${Math.round(100 * fraction)}%`;
    if (!this.timer) {
      this.started = performance.now();
      this.timer = setInterval(() => this.tick(), 200);
    }
    this.label = label;
    this.tick();
  },
  tick() {
    const secs = ((performance.now() - this.started) / 1000).toFixed(1);
    $("#progress .label").textContent = `${this.label} · ${secs} s`;
  },
  hide() {
    clearInterval(this.timer);
    this.timer = null;
    $("#progress").hidden = true;
  },
};

async function api(path, body, label) {
  progress.show(label || "working", null);
  try {
    const response = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
    return data;
  } finally {
    progress.hide();
  }
}

// POST, then read newline-delimited JSON events as they arrive.
async function stream(path, body, onEvent, signal) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    throw new Error(data.detail || `HTTP ${response.status}`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 1);
      if (!line.trim()) continue;
      const event = JSON.parse(line);
      if (event.type === "error") throw new Error(event.detail);
      onEvent(event);
    }
  }
}

function showTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== `tab-${name}`;
  if (name === "lens" && state.ids.length) runLens();
  if (name === "attention" && state.ids.length) runAttention();
  if (name === "experts" && state.ids.length) runRoutes();
}

function neuronLink(id) {
  return el("a", { class: "nid", onclick: () => openNeuron(id) }, id);
}

// -- conversation ------------------------------------------------------------------------------
function renderConversation() {
  const box = $("#conversation");
  box.replaceChildren();
  state.tokens.forEach((token, i) => box.append(tokenSpan(token, i)));
  box.scrollTop = box.scrollHeight;
}

function tokenSpan(token, i) {
  const classes = ["tok"];
  if (state.template[i]) classes.push("template");
  if (state.start !== null && i >= state.start) classes.push("generated");
  if (i === state.selected) classes.push("selected");
  if (token.includes("\n")) classes.push("nl");
  return el("span", { class: classes.join(" "), dataset: { i: String(i) } }, token);
}

function conversationInput(upTo) {
  const end = upTo === undefined ? state.ids.length : upTo;
  return { ids: state.ids.slice(0, end), template: state.template.slice(0, end) };
}

async function send(event) {
  event.preventDefault();
  if (state.generating) { state.generating.abort(); return; }
  const text = $("#chat-input").value;
  if (!text.trim()) return;
  const chatMode = $("#chat-mode").checked;
  const input = chatMode
    ? { messages: [...state.messages, { role: "user", content: text }] }
    : { text };
  const maxNew = Number($("#max-new").value) || 40;
  const controller = new AbortController();
  state.generating = controller;
  $("#send").textContent = "Stop";
  const generated = [];
  let reply = null;       // the decoded reply (the next turn sends it back as the assistant's message)
  progress.show("generating 0 tokens", 0);
  try {
    const sampling = $("#sample-on").checked ? samplingSettings() : null;
    await stream("/api/chat", { input, max_new_tokens: maxNew, ...(sampling ? { sampling } : {}) }, (ev) => {
      if (ev.type === "prompt") {
        Object.assign(state, { ids: ev.ids, tokens: ev.tokens, template: ev.template, positions: [],
                               chosenFrom: {}, start: ev.ids.length, selected: null });
        renderConversation();
      } else if (ev.type === "token") {
        state.ids.push(ev.id); state.tokens.push(ev.token); state.template.push(false);
        state.chosenFrom[ev.index] = ev.top;
        generated.push(ev.token);
        $("#conversation").append(tokenSpan(ev.token, ev.index));
        $("#conversation").scrollTop = $("#conversation").scrollHeight;
        progress.show(`generating ${generated.length} tokens`, generated.length / maxNew);
      } else if (ev.type === "done") {
        Object.assign(state, { ids: ev.ids, template: ev.template, positions: ev.positions, start: ev.start });
        reply = ev.reply;
        state.tokens = ev.positions.map((p) => p.token);
        renderConversation();
      }
    }, controller.signal);
    if (chatMode && reply !== null) state.messages = [...input.messages, { role: "assistant", content: reply }];
    $("#chat-input").value = "";
  } catch (err) {
    if (err.name !== "AbortError") showError(err.message);
  } finally {
    state.generating = null;
    $("#send").textContent = "Send";
    progress.hide();
    updateSteerContext();
  }
}

function resetConversation() {
  Object.assign(state, { messages: [], ids: [], tokens: [], template: [], positions: [], chosenFrom: {},
                         start: null, selected: null });
  renderConversation();
  updateSteerContext();
}

function topTable(entries, highlightId) {
  return el("table", {}, entries.map((e) => el("tr", {},
    el("td", {}, quoted(e.token)), el("td", {}, pct(e.prob)), el("td", {}, e.id === highlightId ? "◀" : ""))));
}

function showTooltip(span, x, y) {
  const i = Number(span.dataset.i);
  const tip = $("#tooltip");
  const parts = [el("div", {}, `#${i} ${quoted(state.tokens[i])} (id ${state.ids[i]})`)];
  const before = state.chosenFrom[i] || (state.positions[i - 1] && state.positions[i - 1].top);
  if (i > 0 && state.positions[i - 1] && state.positions[i - 1].actual_next_prob !== null) {
    parts.push(el("div", { class: "head" }, `this token had p = ${pct(state.positions[i - 1].actual_next_prob)}`));
  }
  if (before) parts.push(el("div", { class: "head" }, "chosen among"), topTable(before, state.ids[i]));
  if (state.positions[i]) parts.push(el("div", { class: "head" }, "next token"), topTable(state.positions[i].top));
  else if (!before) parts.push(el("div", { class: "head" }, "(probabilities arrive when generation ends)"));
  tip.replaceChildren(...parts);
  tip.hidden = false;
  tip.style.left = `${Math.min(x + 12, window.innerWidth - 330)}px`;
  tip.style.top = `${Math.min(y + 12, window.innerHeight - tip.offsetHeight - 8)}px`;
}

function selectToken(i) {
  if (state.generating) return;
  if (i === 0) { showError("the first token has nothing before it to explain"); return; }
  state.selected = i;
  for (const span of document.querySelectorAll("#conversation .tok.selected")) span.classList.remove("selected");
  const span = document.querySelector(`#conversation .tok[data-i="${i}"]`);
  if (span) span.classList.add("selected");
  updateSteerContext();
  const active = document.querySelector(".tabs button.active").dataset.tab;
  if (active === "lens") runLens();
  else if (active === "attention") runAttention();
  else if (active === "experts") runRoutes();
  else { if (active !== "neurons") showTab("neurons"); runAnalysis(); }
}

// -- neurons behind a token --------------------------------------------------------------------
async function runAnalysis() {
  const i = state.selected;
  if (i === null) return;
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const ticket = ++state.analysisSeq;      // only the latest request may draw (clicks can overtake)
  try {
    const data = await api("/api/analyze", {
      input: conversationInput(i), target_id: state.ids[i], mode, top: Number($("#top").value), rank: $("#rank").value,
    }, `finding the neurons behind ${quoted(state.tokens[i])} (${mode})`);
    if (ticket === state.analysisSeq) renderAnalysis(data);
  } catch (err) { if (ticket === state.analysisSeq) showError(err.message); }
}

function neuronTable(rows) {
  return el("table", { class: "data" },
    el("tr", {}, el("th", {}, "neuron"), el("th", {}, "value"), el("th", {}, "act"), el("th", {}, "at"),
      el("th", {}, "description"), el("th", {}, "score")),
    rows.map((n) => el("tr", {},
      el("td", {}, neuronLink(n.id)),
      el("td", { class: `num ${n.value >= 0 ? "pos" : "neg"}` }, fmt(n.value)),
      el("td", { class: "num" }, fmt(n.activation, 2)),
      el("td", { class: "num" }, quoted(state.tokens[n.position] ?? "")),
      el("td", {}, n.description ?? ""),
      el("td", { class: "num" }, n.score === null ? "" : fmt(n.score, 2)))));
}

function renderAnalysis(data) {
  const box = $("#analysis");
  const p = Math.exp(data.logprob);
  const parts = [
    el("p", {}, `Why ${quoted(data.target_token)} after ${quoted(data.tokens[data.position])} (position ${data.position}): `,
      el("strong", {}, `p = ${pct(p)}`), ` · log p ${fmt(data.logprob)} · ${data.mode}`),
  ];
  if (!data.clusters.length) {
    parts.push(el("p", { class: "muted" }, state.info.atlas ? "No clusters (too few described neurons agree)."
      : "Start the server with --atlas to label and cluster neurons."));
  }
  for (const c of data.clusters) {
    const members = c.members.map((m) => data.neurons[m]);
    parts.push(el("details", { class: "cluster" },
      el("summary", {}, el("strong", {}, c.label || "(unlabelled)"),
        ` · ${c.size} neurons · total `, el("span", { class: c.total >= 0 ? "pos" : "neg" }, fmt(c.total)),
        ` · coherence ${fmt(c.coherence, 2)}`),
      el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => steerWith(c.ids, 0) }, "Steer: ablate (λ = 0)"),
        el("button", { type: "button", onclick: () => steerWith(c.ids, 2) }, "Steer: boost (λ = 2)")),
      neuronTable(members)));
  }
  parts.push(el("details", { class: "cluster" }, el("summary", {}, `All ${data.neurons.length} neurons`),
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => steerWith(data.neurons.map((n) => n.id), 0) }, "Steer: ablate all")),
    neuronTable(data.neurons)));
  box.replaceChildren(...parts);
}

// -- neuron page -------------------------------------------------------------------------------
async function openNeuron(id, candidates = false) {
  showTab("neuron");
  $("#neuron-id").value = id;
  try {
    const data = await api(`/api/neuron?id=${encodeURIComponent(id)}&candidates=${candidates}`, undefined,
                           `loading ${id}`);
    renderNeuron(data, candidates);
  } catch (err) { showError(err.message); }
}

function actColor(a, top, bottom) {
  if (a > 0 && top > 0) return `rgba(220, 60, 40, ${Math.min(1, a / top).toFixed(3)})`;
  if (a < 0 && bottom < 0) return `rgba(40, 100, 220, ${Math.min(1, a / bottom).toFixed(3)})`;
  return "transparent";
}

function exemplarRow(ex, top, bottom) {
  return el("div", { class: "exemplar" }, el("span", { class: "val" }, fmt(ex.value)),
    ex.tokens.map((t, j) => {
      const span = el("span", { title: `${quoted(t)}: ${fmt(ex.acts[j])}` }, t);
      span.style.background = actColor(ex.acts[j], top, bottom);
      return span;
    }));
}

function histogram(hist) {
  const canvas = el("canvas", { class: "hist", width: "520", height: "110" });
  const ctx = canvas.getContext("2d");
  const counts = hist.counts;
  if (!counts.length) return el("p", { class: "muted" }, "no histogram");
  const peak = Math.log1p(Math.max(...counts));
  const w = canvas.width / counts.length;
  ctx.fillStyle = "#36c";
  counts.forEach((c, j) => {
    const h = (Math.log1p(c) / peak) * 90;
    ctx.fillRect(j * w, 95 - h, Math.max(1, w - 1), h);
  });
  ctx.fillStyle = "#445";
  ctx.font = "10px sans-serif";
  ctx.fillText(fmt(hist.edges[0]), 0, 108);
  const label = fmt(hist.edges[hist.edges.length - 1]);
  ctx.fillText(label, canvas.width - ctx.measureText(label).width, 108);
  const zero = hist.edges.findIndex((e) => e >= 0);
  if (zero > 0) { ctx.fillText("0", zero * w, 108); }
  return el("div", {}, canvas, el("div", { class: "muted" }, "activation histogram (asinh-spaced bins, log counts)"));
}

function descriptionBlock(polarity, d, id) {
  const title = polarity === "+" ? "What drives it up" : "What drives it down";
  const parts = [el("h3", {}, title)];
  if (!d.best) parts.push(el("p", { class: "muted" }, "not described"));
  else {
    parts.push(el("p", { class: "desc" }, d.best.text, " ",
      el("span", { class: "score" }, `(score ${d.best.score === null ? "n/a" : fmt(d.best.score, 2)}, ${d.best.explainer})`)));
    if (d.candidates) {
      parts.push(el("ol", {}, d.candidates.map((c) => el("li", {}, c.text, " ",
        el("span", { class: "score" }, `(score ${c.score === null ? "n/a" : fmt(c.score, 2)}, ${c.explainer})`)))));
    } else if (d.count > 0) {
      parts.push(el("button", { type: "button", onclick: () => openNeuron(id, true) },
        `all scored candidates (${d.count})`));
    }
  }
  return parts;
}

function renderNeuron(d) {
  const top = d.max_value ?? 0;
  const bottom = d.min_value ?? 0;
  const section = (kind, title) => {
    const rows = (d.exemplars[kind] || []).slice(0, 10);
    return [el("h3", {}, title), ...(rows.length ? rows.map((ex) => exemplarRow(ex, top, bottom))
      : [el("p", { class: "muted" }, "none")])];
  };
  const chips = (list) => list.map((t) => el("span", { class: "chip", title: fmt(t.value) }, t.token));
  $("#neuron-page").replaceChildren(
    el("h3", {}, `${d.id} · ${d.site}`),
    el("p", {}, `over ${d.n_tokens.toLocaleString()} tokens: mean ${fmt(d.mean, 4)}, std ${fmt(d.std, 4)}, `
      + `active ${pct(d.frac_active)}, max ${fmt(d.max_value)}, min ${fmt(d.min_value)}`),
    el("p", { class: "muted" }, "tail quantiles: " + Object.entries(d.quantiles)
      .map(([k, v]) => `${k}: ${v === null ? "n/a" : fmt(v)}`).join(", ")),
    ...descriptionBlock("+", d.descriptions["+"], d.id),
    ...descriptionBlock("-", d.descriptions["-"], d.id),
    histogram(d.histogram),
    el("h3", {}, "Promotes"), el("div", {}, chips(d.promoted)),
    el("h3", {}, "Suppresses"), el("div", {}, chips(d.suppressed)),
    ...section("+", "Top exemplars (max activation)"),
    ...section("-", "Bottom exemplars (min activation)"),
    ...section("r", "Random sequences"),
  );
}

// -- steering ----------------------------------------------------------------------------------
function steerWith(ids, value) {
  $("#steer-neurons").value = ids.join(", ");
  $("#steer-query").value = "";
  $("#steer-value").value = String(value);
  clearLoaded();
  showTab("steer");
}

function specFromForm(optional = false) {
  const query = $("#steer-query").value.trim();
  const neurons = $("#steer-neurons").value.split(/[\s,]+/).filter(Boolean);
  if (!query && !neurons.length) {
    if (optional) return null;
    throw new Error("give a concept query or neuron ids");
  }
  const spec = {
    k: Number($("#steer-k").value) || 50, value: Number($("#steer-value").value),
    level: Number($("#steer-level").value), sides: $("#steer-sides").value,
    polarity: $("#steer-polarity").value || null, tokens: $("#steer-tokens").value,
  };
  if (query) spec.query = query; else spec.neurons = neurons;
  return spec;
}

// the kept specs and the form's (when it names neurons): one spec, or a list run together
function specsToRun() {
  const specs = [...state.steerSpecs];
  const form = specFromForm(specs.length > 0);
  if (form) specs.push(form);
  return specs.length === 1 ? specs[0] : specs;
}

function applyRecipe() {
  const recipe = $("#steer-recipe").value;
  if (!recipe) return;
  $("#steer-value").value = recipe === "boost" ? "0.5" : "0";
  $("#steer-level").value = "0.00001";
  $("#steer-tokens").value = "prompt";
  $("#steer-sides").value = "selected";
}

function addSpec() {
  try {
    state.steerSpecs.push(specFromForm());
  } catch (err) { showError(err.message); return; }
  $("#steer-query").value = ""; $("#steer-neurons").value = "";
  renderSpecs();
}

function renderSpecs() {
  const box = $("#steer-specs");
  if (!state.steerSpecs.length) { box.replaceChildren(); return; }
  box.replaceChildren(el("h4", {}, "Run together"), el("ol", {}, state.steerSpecs.map((s, i) => el("li", {},
    `${s.query ? `query ${quoted(s.query)} (k ${s.k})` : `neurons ${s.neurons.join(", ")}`}: λ ${s.value} × the ` +
    `${s.level} quantile, ${s.sides === "both" ? "both sides" : "selected side"}, ${s.tokens} tokens `,
    el("button", { type: "button", onclick: () => { state.steerSpecs.splice(i, 1); renderSpecs(); } }, "remove")))));
}

function steerInput() {
  if (state.selected !== null) {
    return { input: conversationInput(state.selected), target_id: state.ids[state.selected] };
  }
  if (!state.ids.length) throw new Error("chat first: steering regenerates from the conversation");
  return { input: conversationInput() };
}

function updateSteerContext() {
  const box = $("#steer-context");
  if (!state.ids.length) { box.textContent = "Chat first: steering regenerates from the conversation."; return; }
  const end = state.selected ?? state.ids.length;
  const tail = state.tokens.slice(Math.max(0, end - 12), end).join("");
  box.textContent = state.selected !== null
    ? `Regenerates after …${quoted(tail)}; target ${quoted(state.tokens[state.selected])} (the clicked token).`
    : `Regenerates after the whole conversation (…${quoted(tail)}). Click a token to steer from there.`;
}

async function previewSteering() {
  try {
    const data = await api("/api/steer/preview", { spec: specsToRun() }, "matching neurons");
    state.steerSaved = data.saved;
    $("#steer-save").disabled = false;
    $("#steer-preview-list").replaceChildren(el("h3", {}, `${data.neurons.length} neurons`),
      el("table", { class: "data" }, el("tr", {}, el("th", {}, "spec"), el("th", {}, "neuron"), el("th", {}, "clamped to"),
        el("th", {}, "description"), el("th", {}, "score")),
      data.neurons.map((n) => el("tr", {}, el("td", { class: "num" }, n.spec), el("td", {}, neuronLink(n.id)),
        el("td", { class: "num" }, fmt(n.value)),
        el("td", {}, n.description ?? ""), el("td", { class: "num" }, n.score === null ? "" : fmt(n.score, 2))))));
  } catch (err) { showError(err.message); }
}

async function applySteering(event) {
  event.preventDefault();
  let body;
  try {
    body = { ...steerInput(), max_new_tokens: Number($("#steer-max").value) || 20 };
    const target = $("#steer-target").value;
    if (target) { body.target = target; delete body.target_id; }
    if (state.steerLoaded) body.interventions = state.steerLoaded; else body.spec = specsToRun();
  } catch (err) { showError(err.message); return; }
  progress.show("steering: baseline", 0);
  try {
    let result = null;
    await stream("/api/steer", body, (ev) => {
      if (ev.type === "progress") {
        const half = ev.stage === "baseline" ? 0 : 0.5;
        progress.show(`steering: ${ev.stage} ${ev.done}/${ev.total} tokens`, half + 0.5 * ev.done / ev.total);
      } else if (ev.type === "result") result = ev;
    });
    if (result) renderSteering(result);
  } catch (err) { showError(err.message); } finally { progress.hide(); }
}

function renderSteering(r) {
  state.steerSaved = r.saved;
  $("#steer-save").disabled = false;
  const share = r.share === null ? "" : `, ${(100 * r.share).toFixed(3)}% of all`;
  $("#steer-result").replaceChildren(...comparison(r, `After (${r.neurons} neurons steered${share})`));
}

function comparison(r, afterTitle) {
  const parts = [el("div", { class: "compare" },
    el("div", {}, el("h4", {}, "Before"), r.baseline),
    el("div", {}, el("h4", {}, afterTitle), r.steered))];
  if (r.delta_logprob !== null) {
    const before = Math.exp(r.baseline_logprob);
    const after = Math.exp(r.steered_logprob);
    const token = r.target !== null && state.selected !== null && state.ids[state.selected] === r.target
      ? quoted(state.tokens[state.selected]) : `token ${r.target}`;
    parts.push(el("p", { class: "delta" }, `p(${token}): ${pct(before)} → ${pct(after)} `,
      el("strong", { class: r.delta_logprob >= 0 ? "pos" : "neg" }, `Δ ${(100 * (after - before)).toFixed(1)} points`),
      ` · Δ log p ${r.delta_logprob >= 0 ? "+" : ""}${fmt(r.delta_logprob)}`));
  }
  return parts;
}

function saveSteering() {
  if (!state.steerSaved) return;
  const url = URL.createObjectURL(new Blob([state.steerSaved + "\n"], { type: "application/json" }));
  const link = el("a", { href: url, download: "steering.json" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function loadSteering(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  try {
    const data = JSON.parse(await file.text());
    const list = Array.isArray(data) ? data : data.interventions;
    if (!Array.isArray(list)) throw new Error("not a steering spec: expected {\"interventions\": [...]}");
    state.steerLoaded = data;
    state.steerSaved = JSON.stringify(data, null, 2);
    $("#steer-save").disabled = false;
    $("#steer-loaded").replaceChildren(`Loaded ${file.name}: ${list.length} interventions; Apply replays it. `,
      el("button", { type: "button", onclick: clearLoaded }, "clear"));
  } catch (err) { showError(`cannot load ${file.name}: ${err.message}`); }
}

function clearLoaded() {
  state.steerLoaded = null;
  $("#steer-loaded").replaceChildren();
}

// -- logit lens --------------------------------------------------------------------------------
async function runLens() {
  const i = state.selected;
  const body = i !== null ? { input: conversationInput(i), target_id: state.ids[i] } : { input: conversationInput() };
  body.tuned = $("#lens-tuned").checked;
  try {
    const data = await api("/api/lens", body, `${lensKind(body.tuned)} lens`);
    $("#lens-kind").textContent = data.lens === "tuned" ? "tuned lens: each layer through its trained translator"
      : "logit lens: each layer straight through the final norm and unembedding";
    renderLens(data, i);
  } catch (err) { showError(err.message); }
}

function renderLens(data, selected) {
  const g = data.grid;
  const show = 40;
  const from = Math.max(0, g.tokens.length - show);
  const rows = [];
  for (let layer = g.top_tokens.length - 1; layer >= 0; layer--) {
    rows.push(el("tr", {}, el("th", {}, `L${layer}`), g.top_tokens[layer].slice(from).map((t, j) => {
      const p = g.top_probs[layer][from + j];
      const cell = el("td", { title: `layer ${layer}, after ${quoted(g.tokens[from + j])}: ${quoted(t)} ${pct(p)}` }, t);
      cell.style.background = `rgba(51, 102, 204, ${Math.min(1, p).toFixed(3)})`;
      if (p > 0.6) cell.style.color = "#fff";
      return cell;
    })));
  }
  const header = el("tr", {}, el("th", {}, ""), g.tokens.slice(from).map((t) => el("th", {}, t)));
  const target = selected !== null ? quoted(state.tokens[selected]) : null;
  const table = el("table", { class: "data" }, el("tr", {}, el("th", {}, "layer"), el("th", {}, "top tokens"),
    target ? el("th", {}, `${target}: rank, p`) : null),
    data.layers.slice().reverse().map((l) => el("tr", {}, el("td", {}, `L${l.layer}`),
      el("td", {}, l.top.map((e) => `${quoted(e.token)} ${pct(e.prob)}`).join("  ")),
      target ? el("td", { class: "num" }, `${l.target_rank} · ${pct(l.target_prob)}`) : null)));
  $("#lens").replaceChildren(
    el("h3", {}, `Top token per layer and position${from ? ` (last ${show} positions)` : ""}`),
    el("div", { class: "lens-wrap" }, el("table", { class: "lens" }, header, rows)),
    el("h3", {}, `Each layer's guess after ${quoted(g.tokens[data.position])} (position ${data.position})`), table);
}

function lensKind(tuned) { return tuned ? "tuned" : "logit"; }

// -- attention ---------------------------------------------------------------------------------
async function runAttention() {
  const layer = Number($("#att-layer").value || 0);
  const end = state.selected !== null ? state.selected + 1 : state.ids.length;
  try {
    state.attention = await api("/api/attention", { input: conversationInput(end), layer }, `attention, layer ${layer}`);
    const heads = $("#att-head");
    const keep = heads.value;
    heads.replaceChildren(el("option", { value: "mean" }, "mean"),
      ...Array.from({ length: state.attention.heads }, (_, h) => el("option", { value: String(h) }, String(h))));
    heads.value = keep && keep < state.attention.heads ? keep : "mean";
    drawAttention();
  } catch (err) { showError(err.message); }
}

function drawAttention() {
  const a = state.attention;
  if (!a) return;
  const head = $("#att-head").value;
  const n = a.tokens.length;
  const matrix = head === "mean"
    ? a.weights[0].map((row, q) => row.map((_, k) => a.weights.reduce((s, h) => s + h[q][k], 0) / a.heads))
    : a.weights[Number(head)];
  const cell = Math.max(4, Math.min(16, Math.floor(560 / n)));
  const margin = 90;
  const canvas = el("canvas", { width: String(margin + n * cell), height: String(margin + n * cell) });
  const ctx = canvas.getContext("2d");
  ctx.font = `${Math.min(11, cell)}px monospace`;
  ctx.fillStyle = "#334";
  a.tokens.forEach((t, i) => {
    const label = JSON.stringify(t).slice(0, 12);
    ctx.fillText(label, 2, margin + i * cell + cell - 2);
    ctx.save();
    ctx.translate(margin + i * cell + cell - 2, margin - 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(label, 0, 0);
    ctx.restore();
  });
  matrix.forEach((row, q) => row.forEach((w, k) => {
    ctx.fillStyle = `rgba(196, 66, 34, ${Math.min(1, w).toFixed(3)})`;
    ctx.fillRect(margin + k * cell, margin + q * cell, cell - 1, cell - 1);
  }));
  canvas.addEventListener("mousemove", (ev) => {
    const rect = canvas.getBoundingClientRect();
    const scale = canvas.width / rect.width;
    const k = Math.floor(((ev.clientX - rect.left) * scale - margin) / cell);
    const q = Math.floor(((ev.clientY - rect.top) * scale - margin) / cell);
    const tip = $("#tooltip");
    if (q < 0 || k < 0 || q >= n || k >= n) { tip.hidden = true; return; }
    tip.replaceChildren(`${quoted(a.tokens[q])} → ${quoted(a.tokens[k])}: ${fmt(matrix[q][k])}`);
    tip.hidden = false;
    tip.style.left = `${ev.clientX + 12}px`;
    tip.style.top = `${ev.clientY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
  $("#attention").replaceChildren(el("p", { class: "muted" },
    `layer ${a.layer}, head ${head}: rows are queries, columns the keys they attend to`), canvas);
}

// -- experts (mixtures of experts) ---------------------------------------------------------------
async function runRoutes() {
  const end = state.selected !== null ? state.selected + 1 : state.ids.length;
  try {
    const data = await api("/api/moe/route", { input: conversationInput(end) }, "routing");
    drawRoutes(data, state.selected !== null ? state.selected : end - 1);
  } catch (err) { showError(err.message); }
}

function drawRoutes(data, selected) {
  // the grid: a row per MoE layer, a column per token (the last 40), the first expert and its weight
  const tokens = data.tokens.slice(-40);
  const layers = tokens.length ? tokens[0].layers.map((l) => l.layer) : [];
  const grid = el("table", { class: "data routes" },
    el("tr", {}, el("th", {}, "layer"), tokens.map((t) => el("th", { class: t.position === selected ? "selected" : "",
      title: `position ${t.position}` }, quoted(t.token)))),
    layers.map((layer, li) => el("tr", {}, el("th", {}, String(layer)), tokens.map((t) => {
      const route = t.layers[li];
      return el("td", { class: "num", style: `background: rgba(196, 66, 34, ${(0.8 * route.weights[0]).toFixed(3)})`,
        title: route.experts.map((e, k) => `expert ${e}: ${fmt(route.weights[k], 3)}`).join("\n") },
      route.experts.join(" "));
    }))));
  const here = data.tokens.find((t) => t.position === selected);
  const detail = here ? [el("h3", {}, `Token ${quoted(here.token)} (position ${here.position})`),
    el("table", { class: "data" }, el("tr", {}, el("th", {}, "layer"), el("th", {}, "experts (weight)")),
      here.layers.map((l) => el("tr", {}, el("td", { class: "num" }, String(l.layer)),
        el("td", {}, l.experts.map((e, k) => `${e} (${fmt(l.weights[k], 3)})`).join(", ")))))] : [];
  $("#experts").replaceChildren(el("p", { class: "muted" },
    "Each cell: the experts that handled the token at that layer, the first (strongest) shaded by its weight."),
  grid, ...detail);
}

async function applyRouting(event) {
  event.preventDefault();
  let body;
  try {
    const experts = $("#route-experts").value.split(/[\s,]+/).filter(Boolean).map(Number);
    if (!experts.length || experts.some((e) => !Number.isInteger(e) || e < 0)) throw new Error("give expert numbers, e.g. 3, 5");
    const layer = $("#route-layer").value;
    const op = { op: $("#route-op").value, site: layer === "all" ? "layers.*.router.logits" : `layers.${layer}.router.logits`,
      experts, tokens: $("#route-tokens").value };
    body = { ...steerInput(), max_new_tokens: Number($("#steer-max").value) || 20, interventions: { interventions: [op] } };
  } catch (err) { showError(err.message); return; }
  progress.show("routing: baseline", 0);
  try {
    let result = null;
    await stream("/api/steer", body, (ev) => {
      if (ev.type === "progress") progress.show(`routing: ${ev.stage} ${ev.done}/${ev.total} tokens`, null);
      else if (ev.type === "result") result = ev;
    });
    const op = body.interventions.interventions[0];
    if (result) $("#route-result").replaceChildren(...comparison(result,
      `After (${op.op === "ban_experts" ? "banning" : "forcing"} experts ${op.experts.join(", ")})`));
  } catch (err) { showError(err.message); } finally { progress.hide(); }
}

// -- search ------------------------------------------------------------------------------------
async function runSearch(event) {
  event.preventDefault();
  const q = $("#search-input").value.trim();
  if (!q) return;
  showTab("search");
  try {
    const data = await api(`/api/search?q=${encodeURIComponent(q)}&k=50`, undefined, `searching ${quoted(q)}`);
    $("#search-results").replaceChildren(
      el("p", {}, `${data.hits.length} neurons for ${quoted(data.query)} `,
        el("button", { type: "button", onclick: () => { $("#steer-query").value = q; $("#steer-neurons").value = "";
          clearLoaded(); showTab("steer"); } }, "Steer this concept")),
      el("table", { class: "data" }, el("tr", {}, el("th", {}, "neuron"), el("th", {}, "similarity"),
        el("th", {}, "score"), el("th", {}, "description")),
      data.hits.map((h) => el("tr", {}, el("td", {}, neuronLink(h.id)), el("td", { class: "num" }, fmt(h.similarity, 2)),
        el("td", { class: "num" }, h.score === null ? "" : fmt(h.score, 2)), el("td", {}, h.text)))));
  } catch (err) { showError(err.message); }
}

// -- start -------------------------------------------------------------------------------------
async function start() {
  try {
    state.info = await api("/api/info", undefined, "connecting");
  } catch (err) { showError(err.message); return; }
  const a = state.info.atlas;
  $("#model-info").textContent = `${state.info.model} · ${state.info.layers} layers · ` + (a
    ? `atlas: ${a.corpus_name}, ${Number(a.tokens).toLocaleString()} tokens, ${a.neurons} neurons, ${a.descriptions} descriptions`
    : "no atlas (start with --atlas DIR for neuron pages, search and steering)");
  $("#att-layer").replaceChildren(...Array.from({ length: state.info.layers }, (_, l) => el("option", { value: String(l) }, String(l))));
  $("#max-new").max = String(state.info.limits.max_new_tokens);
  if (!state.info.chat_template) $("#chat-mode").checked = false;
  $("#training-tab").hidden = !state.info.runs;
  $("#vision-tab").hidden = !state.info.vision;
  $("#experts-tab").hidden = !state.info.moe;
  $("#lens-tuned").disabled = !state.info.tuned_lens;
  $("#lens-tuned").parentElement.title = state.info.tuned_lens ? "each layer through its trained translator"
    : "no tuned lens on this server: train one with `neurodbg train-lens`, then restart";
  $("#cons-samples").title = `this server samples at most ${state.info.limits.max_samples}`;
  $("#route-layer").replaceChildren(el("option", { value: "all" }, "all"),
    ...Array.from({ length: state.info.layers }, (_, l) => el("option", { value: String(l) }, String(l))));
  if (!a) {
    for (const id of ["#search-input", "#steer-apply", "#steer-preview", 'input[value="activation"]']) $(id).disabled = true;
  }
  updateSteerContext();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#chat-form").addEventListener("submit", send);
  $("#chat-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(ev);
  });
  $("#reset").addEventListener("click", resetConversation);
  const conv = $("#conversation");
  conv.addEventListener("mouseover", (ev) => { if (ev.target.classList.contains("tok")) showTooltip(ev.target, ev.clientX, ev.clientY); });
  conv.addEventListener("mouseout", () => { $("#tooltip").hidden = true; });
  conv.addEventListener("click", (ev) => { if (ev.target.classList.contains("tok")) selectToken(Number(ev.target.dataset.i)); });
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", runAnalysis);
  $("#top").addEventListener("change", runAnalysis);
  $("#rank").addEventListener("change", runAnalysis);
  $("#neuron-form").addEventListener("submit", (ev) => { ev.preventDefault(); openNeuron($("#neuron-id").value.trim()); });
  $("#steer-form").addEventListener("submit", applySteering);
  $("#steer-preview").addEventListener("click", previewSteering);
  $("#steer-add").addEventListener("click", addSpec);
  $("#steer-recipe").addEventListener("change", applyRecipe);
  $("#steer-save").addEventListener("click", saveSteering);
  $("#steer-load").addEventListener("change", loadSteering);
  $("#route-form").addEventListener("submit", applyRouting);
  $("#att-layer").addEventListener("change", runAttention);
  $("#att-head").addEventListener("change", drawAttention);
  $("#search-form").addEventListener("submit", runSearch);
  $("#sample-on").addEventListener("change", () => { $("#sample-opts").hidden = !$("#sample-on").checked; });
  $("#lens-tuned").addEventListener("change", () => { if (state.ids.length) runLens(); });
  $("#consistency-form").addEventListener("submit", runConsistency);
  $("#embed-form").addEventListener("submit", runEmbeddings);
  start();
});

// -- training runs -------------------------------------------------------------------------------
// The Training view reads /api/runs and /api/runs/NAME; while a run is in progress and "follow
// live" is ticked it asks again every two seconds. Every text goes in through textContent.
const SVG = "http://www.w3.org/2000/svg";
const training = { name: null, timer: null };

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// series: [{label, points: [[step, value|null]], colour}]; options: {log, yMin, yMax}
function lineChart(series, options = {}) {
  const width = 560, height = 180, left = 46, bottom = 18, top = 8, right = 8;
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && (!options.log || p[1] > 0)));
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}` });
  if (!all.length) { chart.append(svg("text", { x: left, y: height / 2 }, "no data yet")); return chart; }
  const tf = (v) => (options.log ? Math.log10(v) : v);
  const xs = all.map((p) => p[0]), ys = all.map((p) => tf(p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = options.yMin ?? Math.min(...ys), y1 = Math.max(options.yMax ?? Math.max(...ys), y0 + 1e-9);
  const X = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const Y = (y) => top + (1 - (tf(y) - y0) / (y1 - y0)) * (height - top - bottom);
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, stroke: "#ccd" }));
  chart.append(svg("line", { x1: left, y1: top, x2: left, y2: height - bottom, stroke: "#ccd" }));
  const label = (v) => (options.log ? Number(10 ** v).toPrecision(2) : Number(v).toPrecision(3));
  chart.append(svg("text", { x: 2, y: top + 8 }, label(y1)), svg("text", { x: 2, y: height - bottom }, label(y0)));
  chart.append(svg("text", { x: left, y: height - 4 }, `step ${x0}`), svg("text", { x: width - right - 60, y: height - 4 }, `step ${x1}`));
  for (const s of series) {
    const pts = s.points.filter((p) => p[1] !== null && (!options.log || p[1] > 0));
    if (!pts.length) continue;
    chart.append(svg("polyline", { points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
      fill: "none", stroke: s.colour, "stroke-width": 1.5 }));
  }
  return chart;
}

function legend(series) {
  // colours through the CSSOM: the page's CSP refuses inline style attributes
  return el("div", { class: "legend" }, series.map((s) => {
    const span = el("span", {}, `— ${s.label}`);
    span.style.color = s.colour;
    return span;
  }));
}

// rows: parameter tensors, columns: recorded steps; colour by log10 of the gradient norm
function gradHeatmap(gradNorms) {
  const names = Object.keys(gradNorms);
  const wrap = el("div");
  if (!names.length) return wrap;
  const shown = names.length > 60 ? names.filter((_, i) => i % Math.ceil(names.length / 60) === 0) : names;
  const steps = [...new Set(shown.flatMap((n) => gradNorms[n].map((p) => p[0])))].sort((a, b) => a - b);
  const col = new Map(steps.map((s, i) => [s, i]));
  const values = shown.flatMap((n) => gradNorms[n].filter((p) => p[1] > 0).map((p) => Math.log10(p[1])));
  const lo = Math.min(...values), hi = Math.max(...values, lo + 1e-9);
  const cell = Math.max(1, Math.floor(520 / Math.max(steps.length, 1)));
  const canvas = el("canvas", { width: Math.max(steps.length * cell, 1), height: shown.length * 8, class: "heat" });
  const ctx = canvas.getContext("2d");
  shown.forEach((name, row) => {
    for (const [step, value] of gradNorms[name]) {
      const t = value > 0 ? (Math.log10(value) - lo) / (hi - lo) : null;
      ctx.fillStyle = t === null ? "#ddd" : `hsl(${Math.round(260 - 200 * t)}, 70%, ${Math.round(30 + 35 * t)}%)`;
      ctx.fillRect(col.get(step) * cell, row * 8, cell, 8);
    }
  });
  wrap.append(el("div", { class: "muted" }, `gradient norm per parameter tensor (rows, ${shown[0]} … ${shown[shown.length - 1]}) by recorded step; dark: 10^${lo.toFixed(1)}, light: 10^${hi.toFixed(1)}, grey: not finite`), canvas);
  return wrap;
}

const PALETTE = ["#36c", "#c42", "#1a7f37", "#a3c", "#c80", "#099", "#555", "#e6a"];

function renderRun(run) {
  const view = $("#run-view");
  view.replaceChildren();
  $("#run-status").textContent = `${run.status} · ${Number(run.steps).toLocaleString()} steps · ${run.model}, ${Number(run.parameters).toLocaleString()} parameters`;
  if (!run.findings.length) view.append(el("div", { class: "healthy" }, "No findings: nothing in the records says this run is unhealthy."));
  for (const f of run.findings) {
    view.append(el("div", { class: "finding" },
      el("div", {}, el("span", { class: "kind" }, f.kind), ` · step ${f.step} · ${f.where.join(", ")}`),
      el("div", {}, f.message),
      el("div", { class: "advice" }, `What usually helps: ${f.advice}`)));
  }
  for (const hit of run.breaks) view.append(el("div", { class: "finding" }, `breakpoint at step ${hit.step}: ${hit.detail} (${hit.module || "loss"})`));
  const c = run.curves;
  const losses = [{ label: "training loss", points: c.loss || [], colour: "#36c" }, { label: "validation loss", points: c.val_loss || [], colour: "#c42" }];
  view.append(el("h3", {}, "Loss"), legend(losses), lineChart(losses, { log: true }));
  if (c.val_acc) {
    const acc = [{ label: "validation accuracy", points: c.val_acc, colour: "#1a7f37" }];
    view.append(el("h3", {}, "Validation accuracy"), lineChart(acc, { yMin: 0, yMax: 1 }));
  }
  if (c.grad_norm) view.append(el("h3", {}, "Gradient norm"), lineChart([{ label: "global", points: c.grad_norm, colour: "#a3c" }], { log: true }));
  view.append(gradHeatmap(run.grad_norms));
  const dead = Object.entries(run.dead).map(([name, points], i) => ({ label: name, points, colour: PALETTE[i % PALETTE.length] }));
  if (dead.length) view.append(el("h3", {}, "Dead units (share never positive in a batch)"), legend(dead), lineChart(dead, { yMin: 0, yMax: 1 }));
}

async function showRun(name) {
  training.name = name;
  clearTimeout(training.timer);
  try {
    const run = await fetchJson(`/api/runs/${encodeURIComponent(name)}`);
    if (training.name !== name) return;
    renderRun(run);
    if (run.status === "running" && $("#run-follow").checked && !$("#tab-training").hidden) {
      training.timer = setTimeout(() => showRun(name), 2000);
    }
  } catch (err) { showError(err.message); }
}

async function fetchJson(path) {
  const response = await fetch(path);
  const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
  return data;
}

async function loadRuns() {
  try {
    const data = await fetchJson("/api/runs");
    const select = $("#run-select");
    const current = select.value;
    select.replaceChildren(...data.runs.map((r) => el("option", { value: r.name }, `${r.name} (${r.status}, ${r.findings ?? "?"} findings)`)));
    if (!data.runs.length) { $("#run-view").replaceChildren(el("p", { class: "muted" }, "No runs in this directory yet.")); return; }
    select.value = data.runs.some((r) => r.name === current) ? current : data.runs[0].name;
    showRun(select.value);
  } catch (err) { showError(err.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#run-select").addEventListener("change", () => showRun($("#run-select").value));
  $("#run-follow").addEventListener("change", () => { if (training.name) showRun(training.name); });
  $('.tabs button[data-tab="training"]').addEventListener("click", loadRuns);
});

// -- vision --------------------------------------------------------------------------------------
// The Vision view uploads an image's bytes (base64) to /api/vision/trace and draws what comes back:
// the classes, the channels by their largest activation, and their feature maps on canvases; a
// channel's maximisation picture comes from /api/vision/maximize. Text goes in through textContent.
const vision = { info: null, image: null, url: null, trace: null };

function heat(value, lo, hi) {
  const t = hi > lo ? (value - lo) / (hi - lo) : 0;
  return `hsl(${Math.round(260 - 200 * t)}, 70%, ${Math.round(15 + 55 * t)}%)`;
}

function mapCanvas(grid, size) {
  const rows = grid.length, cols = grid[0].length;
  const canvas = el("canvas", { width: String(size), height: String(Math.round(size * rows / cols)), class: "fmap" });
  const ctx = canvas.getContext("2d");
  const flat = grid.flat();
  const lo = Math.min(...flat), hi = Math.max(...flat);
  const cw = canvas.width / cols, ch = canvas.height / rows;
  grid.forEach((line, r) => line.forEach((v, c) => { ctx.fillStyle = heat(v, lo, hi); ctx.fillRect(c * cw, r * ch, cw + 0.5, ch + 0.5); }));
  return canvas;
}

async function loadVision() {
  if (vision.info) return;
  try {
    vision.info = await fetchJson("/api/vision");
    const blocks = vision.info.sites.filter((s) => s.startsWith("stages.") || s.endsWith("mlp.act"));
    $("#vision-site").replaceChildren(...vision.info.sites.map((s) => el("option", { value: s }, s)));
    $("#vision-site").value = blocks.length ? blocks[blocks.length - 1] : vision.info.sites[vision.info.sites.length - 1];
    const atlas = vision.info.atlas;
    $("#vision-status").textContent = `${vision.info.model} · ${vision.info.source}` +
      (atlas ? ` · atlas of ${atlas.images} ${atlas.corpus} images` : "");
    $("#vision-search-form").hidden = !atlas;
  } catch (err) { showError(err.message); }
}

// An atlas image on a canvas, scaled up, with the receptive field of the neuron's peak boxed.
function exemplarCanvas(entry, size) {
  const canvas = el("canvas", { width: String(size), height: String(size), class: "exemplar" });
  const image = new Image();
  image.onload = () => {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    canvas.height = Math.round(size * image.height / image.width);
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    const sx = canvas.width / image.width, sy = canvas.height / image.height;
    const [top, left, bottom, right] = entry.field;
    ctx.strokeStyle = "#00e5ff";
    ctx.lineWidth = 2;
    ctx.strokeRect(left * sx + 1, top * sy + 1, (right - left + 1) * sx - 2, (bottom - top + 1) * sy - 2);
  };
  if (typeof entry.picture === "string" && entry.picture.startsWith("data:image/")) image.src = entry.picture;
  return canvas;
}

async function searchChannels(event) {
  event.preventDefault();
  const q = $("#vision-query").value.trim();
  if (!q) return;
  try {
    const data = await fetchJson(`/api/vision/search?q=${encodeURIComponent(q)}&k=20`);
    const rows = data.hits.map((h) => el("tr", {},
      el("td", {}, el("button", { type: "button", class: "link", onclick: () => openChannel(h.channel, h.site) }, `${h.site} · channel ${h.channel}${h.polarity}`)),
      el("td", { class: "num" }, fmt(h.similarity, 3)), el("td", { class: "num" }, h.score === null ? "n/a" : fmt(h.score, 2)), el("td", {}, h.text)));
    $("#vision-results").replaceChildren(rows.length
      ? el("table", { class: "data" }, el("tr", {}, el("th", {}, "channel"), el("th", {}, "similarity"), el("th", {}, "score"), el("th", {}, "description")), rows)
      : el("p", { class: "muted" }, "No described channel matches."));
  } catch (err) { showError(err.message); }
}

async function atlasSection(site, channel) {
  const page = await fetchJson(`/api/vision/neuron?site=${encodeURIComponent(site)}&channel=${channel}&exemplars=16`);
  const parts = [el("p", {}, `${page.id} over ${page.n_tokens.toLocaleString()} positions of the atlas's images: mean ${fmt(page.mean)}, max ${fmt(page.max_value)}, active ${pct(page.frac_active)}`)];
  for (const [polarity, d] of Object.entries(page.descriptions)) {
    if (d) parts.push(el("p", {}, `${polarity} ${d.text} `, el("span", { class: "muted" }, `(score ${d.score === null ? "n/a" : fmt(d.score, 2)})`)));
  }
  const shown = page.min_value !== null && page.min_value < 0 ? ["+", "-"] : ["+"];
  for (const kind of shown) {
    const cells = (page.exemplars[kind] || []).map((e) => el("figure", {}, exemplarCanvas(e, 72),
      el("figcaption", {}, `${e.label ?? e.predicted ?? ""} · ${fmt(e.value, 3)}`)));
    parts.push(el("h4", {}, kind === "+" ? "top images (boxed: the receptive field of the peak)" : "bottom images"),
      el("div", { class: "exemplar-grid" }, cells));
  }
  return el("div", { class: "atlas-section" }, parts);
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error("cannot read the file"));
    reader.readAsDataURL(file);
  });
}

async function traceImage() {
  const file = $("#vision-file").files[0];
  if (!file) return;
  if (vision.info && file.size > vision.info.max_image_bytes) {
    showError(`the image is ${file.size.toLocaleString()} bytes; this server accepts at most ${vision.info.max_image_bytes.toLocaleString()}`);
    return;
  }
  try {
    vision.image = await readBase64(file);
    if (vision.url) URL.revokeObjectURL(vision.url);
    vision.url = URL.createObjectURL(file);
    vision.trace = await api("/api/vision/trace", { image: vision.image, site: $("#vision-site").value, top: 16 }, "tracing the image");
    renderVision(vision.trace);
  } catch (err) { showError(err.message); }
}

function renderVision(t) {
  const view = $("#vision-view");
  const picture = el("img", { src: vision.url, alt: "the uploaded image", class: "vision-input" });
  const classes = t.classes.length ? el("ol", { class: "classes" }, t.classes.map((c) => el("li", {}, `${c.label} `, el("span", { class: "muted" }, pct(c.prob))))) : null;
  const rows = t.top.map((row) => el("tr", { class: row.channel === t.brightest ? "brightest" : "" },
    el("td", {}, el("button", { type: "button", class: "link", dataset: { channel: String(row.channel) }, onclick: () => openChannel(row.channel) }, `channel ${row.channel}`)),
    el("td", { class: "num" }, fmt(row.max)), el("td", { class: "num" }, fmt(row.mean)), el("td", {}, JSON.stringify(row.peak))));
  const table = el("table", { class: "data" }, el("tr", {}, el("th", {}, "channel"), el("th", {}, "max"), el("th", {}, "mean"), el("th", {}, "peak")), rows);
  const maps = t.top.filter((row) => row.map).map((row) => el("figure", { class: "fmap-cell" }, mapCanvas(row.map, 96),
    el("figcaption", {}, `ch ${row.channel} · ${fmt(row.max, 2)}`)));
  view.replaceChildren(
    el("p", {}, `${t.site}: output ${JSON.stringify(t.shape)}, ${t.channels} channels; brightest: channel ${t.brightest}`),
    el("div", { class: "vision-top" }, picture, classes), table,
    maps.length ? el("div", { class: "fmap-grid" }, maps) : el("p", { class: "muted" }, "This site has no spatial maps."));
  $("#vision-channel").replaceChildren();
}

async function openChannel(channel, site) {
  const box = $("#vision-channel");
  site = site || vision.trace.site;
  const traced = vision.trace && vision.trace.site === site;
  const row = traced && vision.trace.top.find((r) => r.channel === channel);
  box.replaceChildren(el("h3", {}, `${site} · channel ${channel}`), row && row.map ? el("div", {}, el("span", { class: "muted" }, "its feature map on this image "), mapCanvas(row.map, 160)) : null);
  try {
    if (vision.info.atlas && vision.info.atlas.sites.includes(site)) box.append(await atlasSection(site, channel));
    const steps = Math.min(128, vision.info.max_maximize_steps);
    const m = await api("/api/vision/maximize", { site, channel, steps }, `maximising channel ${channel}`);
    const h = m.pixels.length, w = m.pixels[0].length;
    const canvas = el("canvas", { width: String(w), height: String(h), class: "maximized" });
    const ctx = canvas.getContext("2d");
    const data = ctx.createImageData(w, h);
    m.pixels.forEach((line, r) => line.forEach((px, c) => { const i = 4 * (r * w + c); data.data.set([px[0], px[1], px[2], 255], i); }));
    ctx.putImageData(data, 0, 0);
    box.append(el("div", { class: "maximized-box" }, canvas,
      el("p", {}, `its favourite picture (activation maximisation, ${m.curve.length ? steps : 0} steps): objective ${fmt(m.objective)} — on the starting noise ${fmt(m.start_objective)}, on mid-grey ${fmt(m.grey_objective)}`)));
  } catch (err) { showError(err.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  $('.tabs button[data-tab="vision"]').addEventListener("click", loadVision);
  $("#vision-file").addEventListener("change", traceImage);
  $("#vision-site").addEventListener("change", traceImage);
  $("#vision-search-form").addEventListener("submit", searchChannels);
});

// -- sampling, self-consistency and embedding maps ----------------------------------------------
function samplingSettings() {
  return { temperature: Number($("#sample-temperature").value), top_k: Number($("#sample-top-k").value),
           top_p: Number($("#sample-top-p").value), seed: Number($("#sample-seed").value) };
}

async function runConsistency(event) {
  event.preventDefault();
  const text = $("#cons-question").value;
  if (!text.trim()) { showError("write a question first"); return; }
  const mode = $("#cons-extract").value;
  const body = {
    input: { text, chat: $("#chat-mode").checked }, samples: Number($("#cons-samples").value),
    extract: mode === "regex" ? `regex:${$("#cons-regex").value}` : mode, sampling: samplingSettings(),
    max_new_tokens: Number($("#cons-max").value),
  };
  if ($("#cons-triage").checked) body.triage = Number($("#cons-threshold").value);
  try {
    renderConsistency(await api("/api/consistency", body, `sampling ${body.samples} answers`));
  } catch (err) { showError(err.message); }
}

function renderConsistency(data) {
  const parts = [];
  const verdict = data.vote === null ? "no answer could be extracted" : `vote: ${quoted(data.vote)}`;
  parts.push(el("h3", {}, verdict), el("p", { class: "summary" }, data.mode === "direct"
    ? `answered directly: the greedy answer's least likely token had probability ${pct(data.confidence)}`
    : `agreement ${pct(data.agreement)} · answer entropy ${fmt(data.entropy, 2)} bits · ${data.answers.length} samples` +
      (data.confidence !== null ? ` · greedy confidence ${pct(data.confidence)} (below the threshold)` : "")));
  parts.push(el("table", { class: "data votes" }, el("tr", {}, el("th", {}, "answer"), el("th", {}, "samples")),
    Object.entries(data.votes).map(([answer, n]) => el("tr", {}, el("td", {}, answer), el("td", { class: "num" }, n)))));
  const fork = data.fork;
  if (fork) {
    parts.push(el("h3", {}, `The samples part ways after ${fork.generated} shared tokens`),
      el("p", { class: "muted" }, "shared: ", el("code", {}, fork.prefix || "(nothing)")),
      el("table", { class: "data branches" }, el("tr", {}, el("th", {}, "next token"), el("th", {}, "model's probability"), el("th", {}, "samples")),
        fork.branches.map((b) => el("tr", {}, el("td", {}, quoted(b.token)), el("td", { class: "num" }, pct(b.probability)),
          el("td", { class: "num" }, b.samples)))));
    if (fork.neurons.length) {
      parts.push(el("h4", {}, "Neurons between the two largest branches (attribution, majority − minority)"),
        el("p", { class: "neurons" }, fork.neurons.map((n) => [neuronLink(n.id), ` ${fmt(n.value, 3)}  `])));
    }
  }
  parts.push(el("details", {}, el("summary", {}, "every sample"),
    el("ol", { class: "samples" }, data.texts.map((t, i) => el("li", {}, el("code", {}, t), ` → ${data.answers[i] ?? "none"}`)))));
  $("#consistency").replaceChildren(...parts);
}

async function runEmbeddings(event) {
  event.preventDefault();
  const items = $("#embed-items").value.split("\n").map((t) => t.trim()).filter((t) => t);
  const body = { items, kind: $("#embed-kind").value, method: $("#embed-method").value };
  if ($("#embed-layer").value !== "") body.layer = Number($("#embed-layer").value);
  try {
    renderEmbeddings(await api("/api/embeddings", body, "embedding map"));
  } catch (err) { showError(err.message); }
}

function renderEmbeddings(data) {
  const width = 560, height = 380, pad = 40;
  const xs = data.items.map((it) => it.x), ys = data.items.map((it) => it.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const X = (x) => pad + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (width - 2 * pad - 60);
  const Y = (y) => height - pad - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (height - 2 * pad);
  const chart = svg("svg", { class: "chart embed-map", width, height, viewBox: `0 0 ${width} ${height}` });
  data.items.forEach((it, i) => {
    const row = data.similarity[i].map((v, j) => (j === i ? -Infinity : v));
    const j = row.indexOf(Math.max(...row));
    chart.append(svg("line", { x1: X(it.x), y1: Y(it.y), x2: X(data.items[j].x), y2: Y(data.items[j].y), stroke: "#ccd" }));
  });
  data.items.forEach((it) => {
    const label = it.context ? `${it.word} (${it.context.slice(0, 24)})` : it.word;
    chart.append(svg("circle", { cx: X(it.x), cy: Y(it.y), r: 4, fill: it.context ? "#c44222" : "#2255aa" }),
      svg("text", { x: X(it.x) + 6, y: Y(it.y) - 4, class: "point-label" }, label));
  });
  const space = data.kind === "token" ? "token embeddings" : `residual stream after layer ${data.layer}`;
  const axes = data.explained_variance.length
    ? ` · PC1 ${pct(data.explained_variance[0])}, PC2 ${pct(data.explained_variance[1])} of variance` : "";
  const table = el("table", { class: "data neighbours" }, el("tr", {}, el("th", {}, "item"), el("th", {}, "tokens"),
    el("th", {}, data.kind === "token" ? "nearest vocabulary tokens (cosine)" : "nearest items (cosine)")),
    data.items.map((it) => el("tr", {}, el("td", {}, it.label), el("td", {}, it.tokens.map(quoted).join(" ")),
      el("td", {}, it.neighbours.map((n) => `${n.token !== undefined ? quoted(n.token) : n.label} ${fmt(n.cosine, 3)}`).join(", ")))));
  $("#embeddings").replaceChildren(el("h3", {}, `${space} (${data.method})${axes}`), chart,
    ...data.notes.map((n) => el("p", { class: "muted" }, n)), table);
}
