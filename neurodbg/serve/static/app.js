// neurodbg web app: a thin view over the HTTP API. Every piece of model or corpus
// text reaches the page through textContent (never innerHTML), so tokens such as
// <script> are shown, not run. Every UI string comes from /static/i18n.json through t();
// model and corpus text sits in elements marked translate="no".
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
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- languages ---------------------------------------------------------------------------------
// The dictionary holds both languages with the same keys; a key missing in the current language
// falls back to English and is recorded in window.__i18nMissing (the browser test reads it).
const LANGS = ["en", "zh"];
const LANG_KEY = "neurodbg.lang";
const i18n = { lang: "en", dict: { en: {}, zh: {} }, views: new Map() };
window.__i18nMissing = [];

function noteMissing(what) {
  if (!window.__i18nMissing.includes(what)) window.__i18nMissing.push(what);
}

function template(key) {
  const own = (i18n.dict[i18n.lang] || {})[key];
  if (typeof own === "string") return own;
  noteMissing(`${i18n.lang}:${key}`);
  const english = i18n.dict.en[key];
  return typeof english === "string" ? english : key;
}

// the string of `key` in the current language, {name} placeholders filled from `vars`
function t(key, vars) {
  return template(key).replace(/\{(\w+)\}/g, (whole, name) => {
    if (vars && name in vars) return String(vars[name]);
    noteMissing(`${key}:{${name}}`);
    return whole;
  });
}

// the same as a list of strings and nodes: a value may be a node (model text kept as data)
function tn(key, vars) {
  return template(key).split(/\{(\w+)\}/).map((part, j) => {
    if (j % 2 === 0) return part;
    if (vars && part in vars) return vars[part];
    noteMissing(`${key}:{${part}}`);
    return `{${part}}`;
  }).flat(Infinity).filter((part) => part !== "");
}

// model, corpus or server text: shown as it is, never translated
const data = (text) => el("span", { translate: "no" }, text);

const fmt = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x) ? t("common.na") : Number(x).toFixed(digits));
const pct = (p) => (p === null || p === undefined ? t("common.na") : (100 * p).toFixed(1) + "%");
const quoted = (text) => JSON.stringify(text);
const dq = (text) => data(quoted(text));

function queryLang() {
  const wanted = new URLSearchParams(location.search).get("lang");
  return LANGS.includes(wanted) ? wanted : null;
}

function storedLang() {
  try {
    const stored = localStorage.getItem(LANG_KEY);
    return LANGS.includes(stored) ? stored : null;
  } catch { return null; }
}

function browserLang() {
  const list = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of list) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

// ?lang= first, then the choice this browser remembers, then the server's --lang, then the browser's
function chosenLang(serverLang) {
  return queryLang() || storedLang() || (LANGS.includes(serverLang) ? serverLang : null) || browserLang();
}

function applyStatic() {
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
}

function setLanguage(lang) {
  i18n.lang = LANGS.includes(lang) ? lang : "en";
  document.documentElement.lang = i18n.lang === "zh" ? "zh-CN" : "en";
  $("#lang").value = i18n.lang;
  applyStatic();
  for (const render of i18n.views.values()) render();
}

// the user's choice: remembered by this browser; a ?lang= in the address gives way to it
function chooseLanguage(lang) {
  try { localStorage.setItem(LANG_KEY, lang); } catch { /* private mode: this page only */ }
  const url = new URL(location.href);
  if (url.searchParams.has("lang")) {
    url.searchParams.delete("lang");
    history.replaceState(history.state, "", url);
  }
  setLanguage(lang);
}

// a view that shows data: drawn now and again whenever the language changes
function view(name, render) {
  i18n.views.set(name, render);
  render();
}

function forget(name) { i18n.views.delete(name); }

async function loadDictionary() {
  const response = await fetch("/static/i18n.json");
  if (!response.ok) throw new Error(`/static/i18n.json: HTTP ${response.status}`);
  i18n.dict = await response.json();
}

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
// an error the page itself words (translated); any other error's message (the server's, the
// browser's) is shown as it is
function uiError(key, vars) {
  const err = new Error(t(key, vars));
  err.ui = true;
  return err;
}

function showError(err) {
  const box = $("#error");
  if (err instanceof Node) box.replaceChildren(err);
  else if (typeof err === "string" || err.ui) box.textContent = typeof err === "string" ? err : err.message;
  else box.replaceChildren(data(err.message));
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
    $("#progress .label").textContent = t("progress.elapsed", { label: this.label, secs });
  },
  hide() {
    clearInterval(this.timer);
    this.timer = null;
    $("#progress").hidden = true;
    $("#progress .label").textContent = "";
  },
};

async function api(path, body, label) {
  progress.show(label || t("progress.working"), null);
  try {
    const response = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(answer.detail || `HTTP ${response.status}`);
    return answer;
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
    const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    throw new Error(answer.detail || `HTTP ${response.status}`);
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
  return el("a", { class: "nid", translate: "no", onclick: () => openNeuron(id) }, id);
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
  return el("span", { class: classes.join(" "), translate: "no", dataset: { i: String(i) } }, token);
}

function conversationInput(upTo) {
  const end = upTo === undefined ? state.ids.length : upTo;
  return { ids: state.ids.slice(0, end), template: state.template.slice(0, end) };
}

function sendButton(key) {
  const button = $("#send");
  button.dataset.i18n = key;
  button.textContent = t(key);
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
  sendButton("chat.stop");
  const generated = [];
  let reply = null;       // the decoded reply (the next turn sends it back as the assistant's message)
  progress.show(t("progress.generating", { n: 0 }), 0);
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
        progress.show(t("progress.generating", { n: generated.length }), generated.length / maxNew);
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
    if (err.name !== "AbortError") showError(err);
  } finally {
    state.generating = null;
    sendButton("chat.send");
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
    el("td", { translate: "no" }, quoted(e.token)), el("td", {}, pct(e.prob)), el("td", {}, e.id === highlightId ? "◀" : ""))));
}

function showTooltip(span, x, y) {
  const i = Number(span.dataset.i);
  const tip = $("#tooltip");
  const parts = [el("div", {}, tn("tip.token", { i, token: dq(state.tokens[i]), id: state.ids[i] }))];
  const before = state.chosenFrom[i] || (state.positions[i - 1] && state.positions[i - 1].top);
  if (i > 0 && state.positions[i - 1] && state.positions[i - 1].actual_next_prob !== null) {
    parts.push(el("div", { class: "head" }, t("tip.had_p", { p: pct(state.positions[i - 1].actual_next_prob) })));
  }
  if (before) parts.push(el("div", { class: "head" }, t("tip.chosen_among")), topTable(before, state.ids[i]));
  if (state.positions[i]) parts.push(el("div", { class: "head" }, t("tip.next_token")), topTable(state.positions[i].top));
  else if (!before) parts.push(el("div", { class: "head" }, t("tip.later")));
  tip.replaceChildren(...parts);
  tip.hidden = false;
  tip.style.left = `${Math.min(x + 12, window.innerWidth - 330)}px`;
  tip.style.top = `${Math.min(y + 12, window.innerHeight - tip.offsetHeight - 8)}px`;
}

function selectToken(i) {
  if (state.generating) return;
  if (i === 0) { showError(uiError("error.first_token")); return; }
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
const MODES = { attribution: "mode.attribution", activation: "mode.activation" };
const REASONS = { low_scores: "cluster.reason.low_scores", not_above_random: "cluster.reason.not_above_random",
                  low_coherence: "cluster.reason.low_coherence" };
const modeName = (mode) => (MODES[mode] ? t(MODES[mode]) : mode);

async function runAnalysis() {
  const i = state.selected;
  if (i === null) return;
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const ticket = ++state.analysisSeq;      // only the latest request may draw (clicks can overtake)
  const body = { input: conversationInput(i), target_id: state.ids[i], mode, top: Number($("#top").value),
                 rank: $("#rank").value };
  const floor = $("#min-coherence").value.trim();
  if (floor !== "") body.min_coherence = Number(floor);
  try {
    const answer = await api("/api/analyze", body,
                             t("progress.analyze", { token: quoted(state.tokens[i]), mode: modeName(mode) }));
    if (ticket === state.analysisSeq) view("analysis", () => renderAnalysis(answer, body.min_coherence));
  } catch (err) { if (ticket === state.analysisSeq) showError(err); }
}

function neuronTable(rows) {
  return el("table", { class: "data" },
    el("tr", {}, el("th", {}, t("col.neuron")), el("th", {}, t("col.value")), el("th", {}, t("col.act")),
      el("th", {}, t("col.at")), el("th", {}, t("col.description")), el("th", {}, t("col.score"))),
    rows.map((n) => el("tr", {},
      el("td", {}, neuronLink(n.id)),
      el("td", { class: `num ${n.value >= 0 ? "pos" : "neg"}` }, fmt(n.value)),
      el("td", { class: "num" }, fmt(n.activation, 2)),
      el("td", { class: "num", translate: "no" }, quoted(state.tokens[n.position] ?? "")),
      el("td", { translate: "no" }, n.description ?? ""),
      el("td", { class: "num" }, n.score === null ? "" : fmt(n.score, 2)))));
}

function clusterSummary(c) {
  const parts = [c.label ? el("strong", { translate: "no" }, c.label) : el("strong", {}, t("cluster.unlabelled")),
    tn("cluster.size", { size: c.size, total: el("span", { class: c.total >= 0 ? "pos" : "neg" }, fmt(c.total)) })];
  if (c.coherence !== undefined && c.coherence !== null) {
    parts.push(c.baseline !== undefined && c.baseline !== null
      ? t("cluster.coherence_random", { coherence: fmt(c.coherence, 2), random: fmt(c.baseline, 2) })
      : t("cluster.coherence", { coherence: fmt(c.coherence, 2) }));
  }
  if (c.rating !== undefined && c.rating !== null) {
    parts.push(" · ", el("span", { class: "rating", title: t("cluster.rating_title") }, t("cluster.rating", { rating: c.rating })));
  }
  if (c.spurious) {
    const reasons = (c.reasons || []).map((r) => (REASONS[r] ? t(REASONS[r]) : r));
    parts.push(" ", el("span", { class: "badge spurious", title: reasons.join(t("common.list_sep")) }, t("cluster.spurious")));
  }
  return parts;
}

function renderAnalysis(answer, floor) {
  const box = $("#analysis");
  const p = Math.exp(answer.logprob);
  const parts = [
    el("p", {}, tn("analysis.why", { target: dq(answer.target_token), token: dq(answer.tokens[answer.position]),
                                     position: answer.position }),
      el("strong", {}, `p = ${pct(p)}`), ` · log p ${fmt(answer.logprob)} · ${modeName(answer.mode)}`),
  ];
  if (!answer.clusters.length) {
    parts.push(el("p", { class: "muted" }, state.info.atlas ? t("analysis.no_clusters") : t("analysis.no_atlas")));
  }
  for (const c of answer.clusters) {
    const members = c.members.map((m) => answer.neurons[m]);
    parts.push(el("details", { class: "cluster" },
      el("summary", {}, clusterSummary(c)),
      el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => steerWith(c.ids, 0) }, t("cluster.ablate")),
        el("button", { type: "button", onclick: () => steerWith(c.ids, 2) }, t("cluster.boost"))),
      neuronTable(members)));
  }
  if (answer.hidden_clusters) {
    const threshold = answer.min_coherence ?? floor;
    parts.push(el("p", { class: "muted hidden-clusters" }, threshold === undefined || threshold === null
      ? t("analysis.hidden_clusters_any", { n: answer.hidden_clusters })
      : t("analysis.hidden_clusters", { n: answer.hidden_clusters, threshold })));
  }
  parts.push(el("details", { class: "cluster" }, el("summary", {}, t("analysis.all", { n: answer.neurons.length })),
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => steerWith(answer.neurons.map((n) => n.id), 0) }, t("cluster.ablate_all"))),
    neuronTable(answer.neurons)));
  box.replaceChildren(...parts);
}

// -- neuron page -------------------------------------------------------------------------------
async function openNeuron(id, candidates = false) {
  showTab("neuron");
  $("#neuron-id").value = id;
  try {
    const page = await api(`/api/neuron?id=${encodeURIComponent(id)}&candidates=${candidates}`, undefined,
                           t("progress.loading", { what: id }));
    view("neuron", () => renderNeuron(page));
  } catch (err) { showError(err); }
}

function actColor(a, top, bottom) {
  if (a > 0 && top > 0) return `rgba(220, 60, 40, ${Math.min(1, a / top).toFixed(3)})`;
  if (a < 0 && bottom < 0) return `rgba(40, 100, 220, ${Math.min(1, a / bottom).toFixed(3)})`;
  return "transparent";
}

function exemplarRow(ex, top, bottom) {
  return el("div", { class: "exemplar", translate: "no" }, el("span", { class: "val" }, fmt(ex.value)),
    ex.tokens.map((tok, j) => {
      const span = el("span", { title: `${quoted(tok)}: ${fmt(ex.acts[j])}` }, tok);
      span.style.background = actColor(ex.acts[j], top, bottom);
      return span;
    }));
}

function histogram(hist) {
  const canvas = el("canvas", { class: "hist", width: "520", height: "110" });
  const ctx = canvas.getContext("2d");
  const counts = hist.counts;
  if (!counts.length) return el("p", { class: "muted" }, t("neuron.no_histogram"));
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
  return el("div", {}, canvas, el("div", { class: "muted" }, t("neuron.histogram")));
}

function scoreNote(score, explainer) {
  return el("span", { class: "score" }, tn("neuron.score", { score: score === null ? t("common.na") : fmt(score, 2),
                                                            explainer: data(explainer) }));
}

// detection and fuzzing AUROC, each beside what another neuron's description gets (the shuffled baseline)
function otherScores(scores) {
  if (!scores || (!scores.detection && !scores.fuzzing)) return null;
  const shuffled = scores.shuffled || {};
  const figure = (value) => (value === null || value === undefined ? t("common.na") : fmt(value, 2));
  const vars = (method) => ({ auroc: figure(scores[method].auroc),
    shuffled: figure(shuffled[method] ? shuffled[method].auroc : null) });
  const items = [scores.detection ? t("neuron.detection", vars("detection")) : null,
    scores.fuzzing ? t("neuron.fuzzing", vars("fuzzing")) : null];
  return el("p", { class: "muted scores" }, items.filter(Boolean).join(" · "));
}

function descriptionBlock(polarity, d, id) {
  const parts = [el("h3", {}, t(polarity === "+" ? "neuron.drives_up" : "neuron.drives_down"))];
  if (!d.best) parts.push(el("p", { class: "muted" }, t("neuron.not_described")));
  else {
    parts.push(el("p", { class: "desc" }, data(d.best.text), " ", scoreNote(d.best.score, d.best.explainer)));
    const more = otherScores(d.best.scores);
    if (more) parts.push(more);
    if (d.candidates) {
      parts.push(el("ol", {}, d.candidates.map((c) => el("li", {}, data(c.text), " ", scoreNote(c.score, c.explainer)))));
    } else if (d.count > 0) {
      parts.push(el("button", { type: "button", onclick: () => openNeuron(id, true) },
        t("neuron.candidates", { n: d.count })));
    }
  }
  return parts;
}

function renderNeuron(d) {
  const top = d.max_value ?? 0;
  const bottom = d.min_value ?? 0;
  const section = (kind, title) => {
    const rows = (d.exemplars[kind] || []).slice(0, 10);
    return [el("h3", {}, t(title)), ...(rows.length ? rows.map((ex) => exemplarRow(ex, top, bottom))
      : [el("p", { class: "muted" }, t("common.none"))])];
  };
  const chips = (list) => list.map((x) => el("span", { class: "chip", title: fmt(x.value) }, x.token));
  const quantiles = Object.entries(d.quantiles).map(([k, v]) => `${k}: ${v === null ? t("common.na") : fmt(v)}`).join(", ");
  $("#neuron-page").replaceChildren(
    el("h3", { translate: "no" }, `${d.id} · ${d.site}`),
    el("p", {}, t("neuron.stats", { n: d.n_tokens.toLocaleString(), mean: fmt(d.mean, 4), std: fmt(d.std, 4),
                                    active: pct(d.frac_active), max: fmt(d.max_value), min: fmt(d.min_value) })),
    el("p", { class: "muted" }, t("neuron.quantiles", { list: quantiles })),
    ...descriptionBlock("+", d.descriptions["+"], d.id),
    ...descriptionBlock("-", d.descriptions["-"], d.id),
    histogram(d.histogram),
    el("h3", {}, t("neuron.promotes")), el("div", { translate: "no" }, chips(d.promoted)),
    el("h3", {}, t("neuron.suppresses")), el("div", { translate: "no" }, chips(d.suppressed)),
    ...section("+", "neuron.top_exemplars"),
    ...section("-", "neuron.bottom_exemplars"),
    ...section("r", "neuron.random"),
  );
}

// -- steering ----------------------------------------------------------------------------------
const TOKENS = { all: "tokens.all", prompt: "tokens.prompt", generated: "tokens.generated" };
const STAGES = { baseline: "stage.baseline", steered: "stage.steered" };
const stageName = (stage) => (STAGES[stage] ? t(STAGES[stage]) : stage);

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
    throw uiError("error.no_spec");
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
  } catch (err) { showError(err); return; }
  $("#steer-query").value = ""; $("#steer-neurons").value = "";
  renderSpecs();
}

function renderSpecs() {
  const box = $("#steer-specs");
  if (!state.steerSpecs.length) { box.replaceChildren(); return; }
  box.replaceChildren(el("h4", {}, t("steer.together")), el("ol", {}, state.steerSpecs.map((s, i) => el("li", {},
    tn("steer.spec", {
      what: s.query ? tn("steer.spec_query", { query: dq(s.query), k: s.k })
        : tn("steer.spec_neurons", { neurons: data(s.neurons.join(", ")) }),
      value: s.value, level: s.level, sides: t(s.sides === "both" ? "steer.both_sides" : "steer.selected_side"),
      tokens: TOKENS[s.tokens] ? t(TOKENS[s.tokens]) : s.tokens,
    }), " ",
    el("button", { type: "button", onclick: () => { state.steerSpecs.splice(i, 1); renderSpecs(); } }, t("steer.remove"))))));
}

function steerInput() {
  if (state.selected !== null) {
    return { input: conversationInput(state.selected), target_id: state.ids[state.selected] };
  }
  if (!state.ids.length) throw uiError("error.chat_first");
  return { input: conversationInput() };
}

function updateSteerContext() {
  const box = $("#steer-context");
  if (!state.ids.length) { box.textContent = t("steer.context_empty"); return; }
  const end = state.selected ?? state.ids.length;
  const tail = dq(state.tokens.slice(Math.max(0, end - 12), end).join(""));
  box.replaceChildren(...(state.selected !== null
    ? tn("steer.context_token", { tail, target: dq(state.tokens[state.selected]) })
    : tn("steer.context_all", { tail })));
}

function renderPreview(answer) {
  $("#steer-preview-list").replaceChildren(el("h3", {}, t("steer.n_neurons", { n: answer.neurons.length })),
    el("table", { class: "data" }, el("tr", {}, el("th", {}, t("col.spec")), el("th", {}, t("col.neuron")),
      el("th", {}, t("col.clamped_to")), el("th", {}, t("col.description")), el("th", {}, t("col.score"))),
    answer.neurons.map((n) => el("tr", {}, el("td", { class: "num" }, n.spec), el("td", {}, neuronLink(n.id)),
      el("td", { class: "num" }, fmt(n.value)),
      el("td", { translate: "no" }, n.description ?? ""), el("td", { class: "num" }, n.score === null ? "" : fmt(n.score, 2))))));
}

async function previewSteering() {
  try {
    const answer = await api("/api/steer/preview", { spec: specsToRun() }, t("progress.matching"));
    state.steerSaved = answer.saved;
    $("#steer-save").disabled = false;
    view("steer-preview", () => renderPreview(answer));
  } catch (err) { showError(err); }
}

async function applySteering(event) {
  event.preventDefault();
  let body;
  try {
    body = { ...steerInput(), max_new_tokens: Number($("#steer-max").value) || 20 };
    const target = $("#steer-target").value;
    if (target) { body.target = target; delete body.target_id; }
    if (state.steerLoaded) body.interventions = state.steerLoaded; else body.spec = specsToRun();
  } catch (err) { showError(err); return; }
  progress.show(t("progress.steering", { stage: stageName("baseline"), done: 0, total: body.max_new_tokens }), 0);
  try {
    let result = null;
    await stream("/api/steer", body, (ev) => {
      if (ev.type === "progress") {
        const half = ev.stage === "baseline" ? 0 : 0.5;
        progress.show(t("progress.steering", { stage: stageName(ev.stage), done: ev.done, total: ev.total }),
                      half + 0.5 * ev.done / ev.total);
      } else if (ev.type === "result") result = ev;
    });
    if (result) {
      state.steerSaved = result.saved;
      $("#steer-save").disabled = false;
      view("steer-result", () => renderSteering(result));
    }
  } catch (err) { showError(err); } finally { progress.hide(); }
}

function renderSteering(r) {
  const share = r.share === null ? "" : t("steer.share", { share: (100 * r.share).toFixed(3) });
  $("#steer-result").replaceChildren(...comparison(r, t("steer.after", { n: r.neurons, share })));
}

function comparison(r, afterTitle) {
  const parts = [el("div", { class: "compare" },
    el("div", {}, el("h4", {}, t("compare.before")), data(r.baseline)),
    el("div", {}, el("h4", {}, afterTitle), data(r.steered)))];
  if (r.delta_logprob !== null) {
    const before = Math.exp(r.baseline_logprob);
    const after = Math.exp(r.steered_logprob);
    const token = r.target !== null && state.selected !== null && state.ids[state.selected] === r.target
      ? dq(state.tokens[state.selected]) : t("compare.token_id", { id: r.target });
    parts.push(el("p", { class: "delta" }, "p(", token, `): ${pct(before)} → ${pct(after)} `,
      el("strong", { class: r.delta_logprob >= 0 ? "pos" : "neg" },
        t("compare.points", { delta: (100 * (after - before)).toFixed(1) })),
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
    const loaded = JSON.parse(await file.text());
    const list = Array.isArray(loaded) ? loaded : loaded.interventions;
    if (!Array.isArray(list)) throw uiError("error.not_a_spec");
    state.steerLoaded = loaded;
    state.steerSaved = JSON.stringify(loaded, null, 2);
    $("#steer-save").disabled = false;
    view("steer-loaded", () => $("#steer-loaded").replaceChildren(
      ...tn("steer.loaded", { file: data(file.name), n: list.length }), " ",
      el("button", { type: "button", onclick: clearLoaded }, t("steer.clear"))));
  } catch (err) {
    const reason = err.ui ? err.message : data(err.message);
    showError(el("span", {}, tn("error.cannot_load", { file: data(file.name), reason })));
  }
}

function clearLoaded() {
  state.steerLoaded = null;
  forget("steer-loaded");
  $("#steer-loaded").replaceChildren();
}

// -- logit lens --------------------------------------------------------------------------------
async function runLens() {
  const i = state.selected;
  const body = i !== null ? { input: conversationInput(i), target_id: state.ids[i] } : { input: conversationInput() };
  body.tuned = $("#lens-tuned").checked;
  try {
    const answer = await api("/api/lens", body, t(body.tuned ? "lens.tuned" : "lens.logit"));
    view("lens", () => {
      $("#lens-kind").textContent = t(answer.lens === "tuned" ? "lens.tuned_kind" : "lens.logit_kind");
      renderLens(answer, i);
    });
  } catch (err) { showError(err); }
}

function renderLens(answer, selected) {
  const g = answer.grid;
  const show = 40;
  const from = Math.max(0, g.tokens.length - show);
  const rows = [];
  for (let layer = g.top_tokens.length - 1; layer >= 0; layer--) {
    rows.push(el("tr", {}, el("th", {}, `L${layer}`), g.top_tokens[layer].slice(from).map((tok, j) => {
      const p = g.top_probs[layer][from + j];
      const cell = el("td", { title: t("lens.cell", { layer, after: quoted(g.tokens[from + j]), top: quoted(tok), p: pct(p) }) }, tok);
      cell.style.background = `rgba(51, 102, 204, ${Math.min(1, p).toFixed(3)})`;
      if (p > 0.6) cell.style.color = "#fff";
      return cell;
    })));
  }
  const header = el("tr", {}, el("th", {}, ""), g.tokens.slice(from).map((tok) => el("th", {}, tok)));
  const target = selected !== null ? quoted(state.tokens[selected]) : null;
  const table = el("table", { class: "data" }, el("tr", {}, el("th", {}, t("col.layer")), el("th", {}, t("col.top_tokens")),
    target ? el("th", {}, tn("lens.target_rank", { target: data(target) })) : null),
    answer.layers.slice().reverse().map((l) => el("tr", {}, el("td", {}, `L${l.layer}`),
      el("td", { translate: "no" }, l.top.map((e) => `${quoted(e.token)} ${pct(e.prob)}`).join("  ")),
      target ? el("td", { class: "num" }, `${l.target_rank} · ${pct(l.target_prob)}`) : null)));
  $("#lens").replaceChildren(
    el("h3", {}, t("lens.grid_title", { last: from ? t("lens.last_positions", { n: show }) : "" })),
    el("div", { class: "lens-wrap" }, el("table", { class: "lens", translate: "no" }, header, rows)),
    el("h3", {}, tn("lens.guess_title", { token: dq(g.tokens[answer.position]), position: answer.position })), table);
}

// -- attention ---------------------------------------------------------------------------------
async function runAttention() {
  const layer = Number($("#att-layer").value || 0);
  const end = state.selected !== null ? state.selected + 1 : state.ids.length;
  try {
    state.attention = await api("/api/attention", { input: conversationInput(end), layer },
                                t("progress.attention", { layer }));
    const heads = $("#att-head");
    const keep = heads.value;
    heads.replaceChildren(el("option", { value: "mean", "data-i18n": "attention.mean" }, t("attention.mean")),
      ...Array.from({ length: state.attention.heads }, (_, h) => el("option", { value: String(h) }, String(h))));
    heads.value = keep && keep < state.attention.heads ? keep : "mean";
    view("attention", drawAttention);
  } catch (err) { showError(err); }
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
  a.tokens.forEach((tok, i) => {
    const label = JSON.stringify(tok).slice(0, 12);
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
    tip.replaceChildren(data(`${quoted(a.tokens[q])} → ${quoted(a.tokens[k])}: ${fmt(matrix[q][k])}`));
    tip.hidden = false;
    tip.style.left = `${ev.clientX + 12}px`;
    tip.style.top = `${ev.clientY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
  $("#attention").replaceChildren(el("p", { class: "muted" },
    t("attention.caption", { layer: a.layer, head: head === "mean" ? t("attention.mean") : head })), canvas);
}

// -- experts (mixtures of experts) ---------------------------------------------------------------
async function runRoutes() {
  const end = state.selected !== null ? state.selected + 1 : state.ids.length;
  try {
    const answer = await api("/api/moe/route", { input: conversationInput(end) }, t("progress.routing"));
    const selected = state.selected !== null ? state.selected : end - 1;
    view("experts", () => drawRoutes(answer, selected));
  } catch (err) { showError(err); }
}

function drawRoutes(answer, selected) {
  // the grid: a row per MoE layer, a column per token (the last 40), the first expert and its weight
  const tokens = answer.tokens.slice(-40);
  const layers = tokens.length ? tokens[0].layers.map((l) => l.layer) : [];
  const grid = el("table", { class: "data routes" },
    el("tr", {}, el("th", {}, t("col.layer")), tokens.map((tok) => el("th", { class: tok.position === selected ? "selected" : "",
      title: t("experts.position", { position: tok.position }) }, data(quoted(tok.token))))),
    layers.map((layer, li) => el("tr", {}, el("th", {}, String(layer)), tokens.map((tok) => {
      const route = tok.layers[li];
      return el("td", { class: "num", style: `background: rgba(196, 66, 34, ${(0.8 * route.weights[0]).toFixed(3)})`,
        title: route.experts.map((e, k) => t("experts.weight", { expert: e, weight: fmt(route.weights[k], 3) })).join("\n") },
      route.experts.join(" "));
    }))));
  const here = answer.tokens.find((tok) => tok.position === selected);
  const detail = here ? [el("h3", {}, tn("experts.token", { token: dq(here.token), position: here.position })),
    el("table", { class: "data" }, el("tr", {}, el("th", {}, t("col.layer")), el("th", {}, t("col.experts_weight"))),
      here.layers.map((l) => el("tr", {}, el("td", { class: "num" }, String(l.layer)),
        el("td", {}, l.experts.map((e, k) => `${e} (${fmt(l.weights[k], 3)})`).join(", ")))))] : [];
  $("#experts").replaceChildren(el("p", { class: "muted" }, t("experts.caption")), grid, ...detail);
}

async function applyRouting(event) {
  event.preventDefault();
  let body;
  try {
    const experts = $("#route-experts").value.split(/[\s,]+/).filter(Boolean).map(Number);
    if (!experts.length || experts.some((e) => !Number.isInteger(e) || e < 0)) throw uiError("error.expert_numbers");
    const layer = $("#route-layer").value;
    const op = { op: $("#route-op").value, site: layer === "all" ? "layers.*.router.logits" : `layers.${layer}.router.logits`,
      experts, tokens: $("#route-tokens").value };
    body = { ...steerInput(), max_new_tokens: Number($("#steer-max").value) || 20, interventions: { interventions: [op] } };
  } catch (err) { showError(err); return; }
  progress.show(t("progress.routing_stage", { stage: stageName("baseline"), done: 0, total: body.max_new_tokens }), 0);
  try {
    let result = null;
    await stream("/api/steer", body, (ev) => {
      if (ev.type === "progress") {
        progress.show(t("progress.routing_stage", { stage: stageName(ev.stage), done: ev.done, total: ev.total }), null);
      } else if (ev.type === "result") result = ev;
    });
    const op = body.interventions.interventions[0];
    if (result) {
      view("route-result", () => $("#route-result").replaceChildren(...comparison(result,
        t(op.op === "ban_experts" ? "experts.after_ban" : "experts.after_force", { experts: op.experts.join(", ") }))));
    }
  } catch (err) { showError(err); } finally { progress.hide(); }
}

// -- search ------------------------------------------------------------------------------------
async function runSearch(event) {
  event.preventDefault();
  const q = $("#search-input").value.trim();
  if (!q) return;
  showTab("search");
  try {
    const answer = await api(`/api/search?q=${encodeURIComponent(q)}&k=50`, undefined, t("progress.searching", { query: quoted(q) }));
    view("search", () => renderSearch(answer, q));
  } catch (err) { showError(err); }
}

function renderSearch(answer, q) {
  $("#search-results").replaceChildren(
    el("p", {}, tn("search.found", { n: answer.hits.length, query: dq(answer.query) }), " ",
      el("button", { type: "button", onclick: () => { $("#steer-query").value = q; $("#steer-neurons").value = "";
        clearLoaded(); showTab("steer"); } }, t("search.steer"))),
    el("table", { class: "data" }, el("tr", {}, el("th", {}, t("col.neuron")), el("th", {}, t("col.similarity")),
      el("th", {}, t("col.score")), el("th", {}, t("col.description"))),
    answer.hits.map((h) => el("tr", {}, el("td", {}, neuronLink(h.id)), el("td", { class: "num" }, fmt(h.similarity, 2)),
      el("td", { class: "num" }, h.score === null ? "" : fmt(h.score, 2)), el("td", { translate: "no" }, h.text)))));
}

// -- start -------------------------------------------------------------------------------------
function renderInfo() {
  const info = state.info;
  const a = info.atlas;
  $("#model-info").replaceChildren(...tn("info.model", {
    model: data(info.model), layers: info.layers,
    atlas: a ? tn("info.atlas", { corpus: data(a.corpus_name), tokens: Number(a.tokens).toLocaleString(),
                                  neurons: a.neurons, descriptions: a.descriptions })
      : t("info.no_atlas"),
  }));
  $("#lens-tuned").parentElement.title = t(info.tuned_lens ? "lens.tuned_title" : "lens.no_tuned_title");
  $("#cons-samples").title = t("consistency.samples_title", { n: info.limits.max_samples });
}

async function start() {
  try {
    await loadDictionary();
  } catch (err) { showError(err); }
  setLanguage(chosenLang(null));
  try {
    state.info = await api("/api/info", undefined, t("progress.connecting"));
  } catch (err) { showError(err); return; }
  if (!queryLang() && !storedLang() && LANGS.includes(state.info.lang) && state.info.lang !== i18n.lang) {
    setLanguage(state.info.lang);          // the server's --lang, where this browser has no choice of its own
  }
  const a = state.info.atlas;
  $("#att-layer").replaceChildren(...Array.from({ length: state.info.layers }, (_, l) => el("option", { value: String(l) }, String(l))));
  $("#max-new").max = String(state.info.limits.max_new_tokens);
  if (!state.info.chat_template) $("#chat-mode").checked = false;
  $("#training-tab").hidden = !state.info.runs;
  $("#vision-tab").hidden = !state.info.vision;
  $("#experts-tab").hidden = !state.info.moe;
  $("#lens-tuned").disabled = !state.info.tuned_lens;
  $("#route-layer").replaceChildren(el("option", { value: "all", "data-i18n": "common.all" }, t("common.all")),
    ...Array.from({ length: state.info.layers }, (_, l) => el("option", { value: String(l) }, String(l))));
  if (!a) {
    for (const id of ["#search-input", "#steer-apply", "#steer-preview", 'input[value="activation"]']) $(id).disabled = true;
  }
  view("info", renderInfo);
  view("steer-context", updateSteerContext);
  i18n.views.set("steer-specs", renderSpecs);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#lang").addEventListener("change", () => chooseLanguage($("#lang").value));
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
  $("#min-coherence").addEventListener("change", runAnalysis);
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
const STATUSES = { running: "run.status.running", finished: "run.status.finished", failed: "run.status.failed",
                   broken: "run.status.broken", unreadable: "run.status.unreadable" };
const statusName = (status) => (STATUSES[status] ? t(STATUSES[status]) : String(status ?? "?"));

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// series: [{label, points: [[step, value|null]], colour, data}]; options: {log, yMin, yMax}
function lineChart(series, options = {}) {
  const width = 560, height = 180, left = 46, bottom = 18, top = 8, right = 8;
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && (!options.log || p[1] > 0)));
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}` });
  if (!all.length) { chart.append(svg("text", { x: left, y: height / 2 }, t("chart.no_data"))); return chart; }
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
  chart.append(svg("text", { x: left, y: height - 4 }, t("chart.step", { step: x0 })),
    svg("text", { x: width - right - 60, y: height - 4 }, t("chart.step", { step: x1 })));
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
    const span = el("span", s.data ? { translate: "no" } : {}, `— ${s.label}`);
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
      const f = value > 0 ? (Math.log10(value) - lo) / (hi - lo) : null;
      ctx.fillStyle = f === null ? "#ddd" : `hsl(${Math.round(260 - 200 * f)}, 70%, ${Math.round(30 + 35 * f)}%)`;
      ctx.fillRect(col.get(step) * cell, row * 8, cell, 8);
    }
  });
  wrap.append(el("div", { class: "muted" }, tn("run.grad_heatmap", { first: data(shown[0]), last: data(shown[shown.length - 1]),
                                                                     lo: lo.toFixed(1), hi: hi.toFixed(1) })), canvas);
  return wrap;
}

const PALETTE = ["#36c", "#c42", "#1a7f37", "#a3c", "#c80", "#099", "#555", "#e6a"];

function renderRun(run) {
  const runView = $("#run-view");
  runView.replaceChildren();
  $("#run-status").replaceChildren(...tn("run.status_line", { status: statusName(run.status),
    steps: Number(run.steps).toLocaleString(), model: data(run.model), parameters: Number(run.parameters).toLocaleString() }));
  if (!run.findings.length) runView.append(el("div", { class: "healthy" }, t("run.healthy")));
  for (const f of run.findings) {
    runView.append(el("div", { class: "finding" },
      el("div", {}, el("span", { class: "kind", translate: "no" }, f.kind),
        tn("run.finding_where", { step: f.step, where: data(f.where.join(", ")) })),
      el("div", { translate: "no" }, f.message),
      el("div", { class: "advice" }, tn("run.advice", { advice: data(f.advice) }))));
  }
  for (const hit of run.breaks) {
    runView.append(el("div", { class: "finding" }, tn("run.breakpoint", { step: hit.step, detail: data(hit.detail),
                                                                        where: hit.module ? data(hit.module) : t("run.loss_site") })));
  }
  const c = run.curves;
  const losses = [{ label: t("run.training_loss"), points: c.loss || [], colour: "#36c" },
                  { label: t("run.validation_loss"), points: c.val_loss || [], colour: "#c42" }];
  runView.append(el("h3", {}, t("run.loss")), legend(losses), lineChart(losses, { log: true }));
  if (c.val_acc) {
    const acc = [{ label: t("run.validation_accuracy"), points: c.val_acc, colour: "#1a7f37" }];
    runView.append(el("h3", {}, t("run.accuracy")), lineChart(acc, { yMin: 0, yMax: 1 }));
  }
  if (c.grad_norm) {
    runView.append(el("h3", {}, t("run.grad_norm")),
      lineChart([{ label: t("run.global"), points: c.grad_norm, colour: "#a3c" }], { log: true }));
  }
  runView.append(gradHeatmap(run.grad_norms));
  const dead = Object.entries(run.dead).map(([name, points], i) => ({ label: name, points, colour: PALETTE[i % PALETTE.length],
                                                                      data: true }));
  if (dead.length) runView.append(el("h3", {}, t("run.dead")), legend(dead), lineChart(dead, { yMin: 0, yMax: 1 }));
}

async function showRun(name) {
  training.name = name;
  clearTimeout(training.timer);
  try {
    const run = await fetchJson(`/api/runs/${encodeURIComponent(name)}`);
    if (training.name !== name) return;
    view("run", () => renderRun(run));
    if (run.status === "running" && $("#run-follow").checked && !$("#tab-training").hidden) {
      training.timer = setTimeout(() => showRun(name), 2000);
    }
  } catch (err) { showError(err); }
}

async function fetchJson(path) {
  const response = await fetch(path);
  const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(answer.detail || `HTTP ${response.status}`);
  return answer;
}

function runOptions(runs) {
  const select = $("#run-select");
  const current = select.value;
  select.replaceChildren(...runs.map((r) => el("option", { value: r.name },
    t("run.option", { name: r.name, status: statusName(r.status), findings: r.findings ?? "?" }))));
  select.value = current;
}

async function loadRuns() {
  try {
    const answer = await fetchJson("/api/runs");
    const select = $("#run-select");
    const current = select.value;
    view("runs", () => runOptions(answer.runs));
    if (!answer.runs.length) {
      forget("run");
      $("#run-view").replaceChildren(el("p", { class: "muted", "data-i18n": "run.none" }, t("run.none")));
      return;
    }
    select.value = answer.runs.some((r) => r.name === current) ? current : answer.runs[0].name;
    showRun(select.value);
  } catch (err) { showError(err); }
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
  const f = hi > lo ? (value - lo) / (hi - lo) : 0;
  return `hsl(${Math.round(260 - 200 * f)}, 70%, ${Math.round(15 + 55 * f)}%)`;
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

function renderVisionStatus() {
  const atlas = vision.info.atlas;
  $("#vision-status").replaceChildren(data(`${vision.info.model} · ${vision.info.source}`),
    ...(atlas ? tn("vision.atlas_of", { images: atlas.images, corpus: data(atlas.corpus) }) : []));
}

async function loadVision() {
  if (vision.info) return;
  try {
    vision.info = await fetchJson("/api/vision");
    const blocks = vision.info.sites.filter((s) => s.startsWith("stages.") || s.endsWith("mlp.act"));
    $("#vision-site").replaceChildren(...vision.info.sites.map((s) => el("option", { value: s }, s)));
    $("#vision-site").value = blocks.length ? blocks[blocks.length - 1] : vision.info.sites[vision.info.sites.length - 1];
    view("vision-status", renderVisionStatus);
    $("#vision-search-form").hidden = !vision.info.atlas;
  } catch (err) { showError(err); }
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

const channelLabel = (site, channel, polarity = "") => tn("vision.site_channel", { site: data(site), channel: `${channel}${polarity}` });

async function searchChannels(event) {
  event.preventDefault();
  const q = $("#vision-query").value.trim();
  if (!q) return;
  try {
    const answer = await fetchJson(`/api/vision/search?q=${encodeURIComponent(q)}&k=20`);
    view("vision-results", () => renderChannelSearch(answer));
  } catch (err) { showError(err); }
}

function renderChannelSearch(answer) {
  const rows = answer.hits.map((h) => el("tr", {},
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => openChannel(h.channel, h.site) },
      channelLabel(h.site, h.channel, h.polarity))),
    el("td", { class: "num" }, fmt(h.similarity, 3)), el("td", { class: "num" }, h.score === null ? t("common.na") : fmt(h.score, 2)),
    el("td", { translate: "no" }, h.text)));
  $("#vision-results").replaceChildren(rows.length
    ? el("table", { class: "data" }, el("tr", {}, el("th", {}, t("col.channel")), el("th", {}, t("col.similarity")),
      el("th", {}, t("col.score")), el("th", {}, t("col.description"))), rows)
    : el("p", { class: "muted" }, t("vision.no_match")));
}

function atlasSection(page) {
  const parts = [el("p", {}, tn("vision.atlas_stats", { id: data(page.id), n: page.n_tokens.toLocaleString(), mean: fmt(page.mean),
                                                       max: fmt(page.max_value), active: pct(page.frac_active) }))];
  for (const [polarity, d] of Object.entries(page.descriptions)) {
    if (d) {
      parts.push(el("p", {}, data(`${polarity} ${d.text}`), " ", el("span", { class: "muted" },
        t("vision.score", { score: d.score === null ? t("common.na") : fmt(d.score, 2) }))));
    }
  }
  const shown = page.min_value !== null && page.min_value < 0 ? ["+", "-"] : ["+"];
  for (const kind of shown) {
    const cells = (page.exemplars[kind] || []).map((e) => el("figure", {}, exemplarCanvas(e, 72),
      el("figcaption", { translate: "no" }, `${e.label ?? e.predicted ?? ""} · ${fmt(e.value, 3)}`)));
    parts.push(el("h4", {}, t(kind === "+" ? "vision.top_images" : "vision.bottom_images")),
      el("div", { class: "exemplar-grid" }, cells));
  }
  return el("div", { class: "atlas-section" }, parts);
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(uiError("error.read_file"));
    reader.readAsDataURL(file);
  });
}

async function traceImage() {
  const file = $("#vision-file").files[0];
  if (!file) return;
  if (vision.info && file.size > vision.info.max_image_bytes) {
    showError(uiError("error.image_size", { size: file.size.toLocaleString(), max: vision.info.max_image_bytes.toLocaleString() }));
    return;
  }
  try {
    vision.image = await readBase64(file);
    if (vision.url) URL.revokeObjectURL(vision.url);
    vision.url = URL.createObjectURL(file);
    vision.trace = await api("/api/vision/trace", { image: vision.image, site: $("#vision-site").value, top: 16 },
                             t("progress.tracing"));
    const traced = vision.trace;
    view("vision-view", () => renderVision(traced));
    forget("vision-channel");
    $("#vision-channel").replaceChildren();
  } catch (err) { showError(err); }
}

function renderVision(tr) {
  const picture = el("img", { src: vision.url, alt: t("vision.uploaded"), class: "vision-input" });
  const classes = tr.classes.length ? el("ol", { class: "classes" }, tr.classes.map((c) => el("li", {},
    data(`${c.label} `), el("span", { class: "muted" }, pct(c.prob))))) : null;
  const rows = tr.top.map((row) => el("tr", { class: row.channel === tr.brightest ? "brightest" : "" },
    el("td", {}, el("button", { type: "button", class: "link", dataset: { channel: String(row.channel) }, onclick: () => openChannel(row.channel) },
      t("vision.channel", { channel: row.channel }))),
    el("td", { class: "num" }, fmt(row.max)), el("td", { class: "num" }, fmt(row.mean)), el("td", {}, JSON.stringify(row.peak))));
  const table = el("table", { class: "data" }, el("tr", {}, el("th", {}, t("col.channel")), el("th", {}, t("col.max")),
    el("th", {}, t("col.mean")), el("th", {}, t("col.peak"))), rows);
  const maps = tr.top.filter((row) => row.map).map((row) => el("figure", { class: "fmap-cell" }, mapCanvas(row.map, 96),
    el("figcaption", {}, t("vision.map_caption", { channel: row.channel, max: fmt(row.max, 2) }))));
  $("#vision-view").replaceChildren(
    el("p", {}, tn("vision.summary", { site: data(tr.site), shape: JSON.stringify(tr.shape), channels: tr.channels,
                                       brightest: tr.brightest })),
    el("div", { class: "vision-top" }, picture, classes), table,
    maps.length ? el("div", { class: "fmap-grid" }, maps) : el("p", { class: "muted" }, t("vision.no_maps")));
}

// one channel: its map on the traced image, its atlas page, its maximisation picture (drawn as they arrive)
function renderChannel(site, channel, row, page, m) {
  const box = $("#vision-channel");
  box.replaceChildren(el("h3", {}, channelLabel(site, channel)), row && row.map
    ? el("div", {}, el("span", { class: "muted" }, t("vision.its_map")), " ", mapCanvas(row.map, 160)) : null);
  if (page) box.append(atlasSection(page));
  if (m) {
    const h = m.result.pixels.length, w = m.result.pixels[0].length;
    const canvas = el("canvas", { width: String(w), height: String(h), class: "maximized" });
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    m.result.pixels.forEach((line, r) => line.forEach((px, c) => { const i = 4 * (r * w + c); image.data.set([px[0], px[1], px[2], 255], i); }));
    ctx.putImageData(image, 0, 0);
    box.append(el("div", { class: "maximized-box" }, canvas,
      el("p", {}, t("vision.maximized", { steps: m.result.curve.length ? m.steps : 0, objective: fmt(m.result.objective),
                                          start: fmt(m.result.start_objective), grey: fmt(m.result.grey_objective) }))));
  }
}

async function openChannel(channel, site) {
  site = site || vision.trace.site;
  const traced = vision.trace && vision.trace.site === site;
  const row = traced && vision.trace.top.find((r) => r.channel === channel);
  let page = null;
  view("vision-channel", () => renderChannel(site, channel, row, page, null));
  try {
    if (vision.info.atlas && vision.info.atlas.sites.includes(site)) {
      page = await fetchJson(`/api/vision/neuron?site=${encodeURIComponent(site)}&channel=${channel}&exemplars=16`);
      view("vision-channel", () => renderChannel(site, channel, row, page, null));
    }
    const steps = Math.min(128, vision.info.max_maximize_steps);
    const result = await api("/api/vision/maximize", { site, channel, steps }, t("progress.maximizing", { channel }));
    view("vision-channel", () => renderChannel(site, channel, row, page, { result, steps }));
  } catch (err) { showError(err); }
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
  if (!text.trim()) { showError(uiError("error.no_question")); return; }
  const mode = $("#cons-extract").value;
  const body = {
    input: { text, chat: $("#chat-mode").checked }, samples: Number($("#cons-samples").value),
    extract: mode === "regex" ? `regex:${$("#cons-regex").value}` : mode, sampling: samplingSettings(),
    max_new_tokens: Number($("#cons-max").value),
  };
  if ($("#cons-triage").checked) body.triage = Number($("#cons-threshold").value);
  try {
    const answer = await api("/api/consistency", body, t("progress.sampling", { n: body.samples }));
    view("consistency", () => renderConsistency(answer));
  } catch (err) { showError(err); }
}

function renderConsistency(answer) {
  const parts = [];
  const verdict = answer.vote === null ? t("consistency.no_answer") : tn("consistency.vote", { vote: dq(answer.vote) });
  parts.push(el("h3", {}, verdict), el("p", { class: "summary" }, answer.mode === "direct"
    ? t("consistency.direct", { p: pct(answer.confidence) })
    : t("consistency.summary", { agreement: pct(answer.agreement), entropy: fmt(answer.entropy, 2), n: answer.answers.length }) +
      (answer.confidence !== null ? t("consistency.below_threshold", { p: pct(answer.confidence) }) : "")));
  parts.push(el("table", { class: "data votes" }, el("tr", {}, el("th", {}, t("col.answer")), el("th", {}, t("col.samples"))),
    Object.entries(answer.votes).map(([said, n]) => el("tr", {}, el("td", { translate: "no" }, said), el("td", { class: "num" }, n)))));
  const fork = answer.fork;
  if (fork) {
    parts.push(el("h3", {}, t("consistency.fork", { n: fork.generated })),
      el("p", { class: "muted" }, t("consistency.shared"), " ",
        fork.prefix ? el("code", { translate: "no" }, fork.prefix) : el("code", {}, t("consistency.nothing"))),
      el("table", { class: "data branches" }, el("tr", {}, el("th", {}, t("col.next_token")), el("th", {}, t("col.model_probability")),
        el("th", {}, t("col.samples"))),
      fork.branches.map((b) => el("tr", {}, el("td", { translate: "no" }, quoted(b.token)), el("td", { class: "num" }, pct(b.probability)),
        el("td", { class: "num" }, b.samples)))));
    if (fork.neurons.length) {
      parts.push(el("h4", {}, t("consistency.neurons")),
        el("p", { class: "neurons" }, fork.neurons.map((n) => [neuronLink(n.id), ` ${fmt(n.value, 3)}  `])));
    }
  }
  parts.push(el("details", {}, el("summary", {}, t("consistency.every_sample")),
    el("ol", { class: "samples" }, answer.texts.map((text, i) => el("li", {}, el("code", { translate: "no" }, text), " → ",
      answer.answers[i] === null || answer.answers[i] === undefined ? t("common.none") : data(answer.answers[i]))))));
  $("#consistency").replaceChildren(...parts);
}

async function runEmbeddings(event) {
  event.preventDefault();
  const items = $("#embed-items").value.split("\n").map((text) => text.trim()).filter((text) => text);
  const body = { items, kind: $("#embed-kind").value, method: $("#embed-method").value };
  if ($("#embed-layer").value !== "") body.layer = Number($("#embed-layer").value);
  try {
    const answer = await api("/api/embeddings", body, t("progress.embedding"));
    view("embeddings", () => renderEmbeddings(answer));
  } catch (err) { showError(err); }
}

function renderEmbeddings(answer) {
  const width = 560, height = 380, pad = 40;
  const xs = answer.items.map((it) => it.x), ys = answer.items.map((it) => it.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const X = (x) => pad + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (width - 2 * pad - 60);
  const Y = (y) => height - pad - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (height - 2 * pad);
  const chart = svg("svg", { class: "chart embed-map", width, height, viewBox: `0 0 ${width} ${height}`, translate: "no" });
  answer.items.forEach((it, i) => {
    const row = answer.similarity[i].map((v, j) => (j === i ? -Infinity : v));
    const j = row.indexOf(Math.max(...row));
    chart.append(svg("line", { x1: X(it.x), y1: Y(it.y), x2: X(answer.items[j].x), y2: Y(answer.items[j].y), stroke: "#ccd" }));
  });
  answer.items.forEach((it) => {
    const label = it.context ? `${it.word} (${it.context.slice(0, 24)})` : it.word;
    chart.append(svg("circle", { cx: X(it.x), cy: Y(it.y), r: 4, fill: it.context ? "#c44222" : "#2255aa" }),
      svg("text", { x: X(it.x) + 6, y: Y(it.y) - 4, class: "point-label" }, label));
  });
  const space = answer.kind === "token" ? t("embeddings.token_space") : t("embeddings.residual_space", { layer: answer.layer });
  const axes = answer.explained_variance.length
    ? t("embeddings.variance", { pc1: pct(answer.explained_variance[0]), pc2: pct(answer.explained_variance[1]) }) : "";
  const table = el("table", { class: "data neighbours" }, el("tr", {}, el("th", {}, t("col.item")), el("th", {}, t("col.tokens")),
    el("th", {}, t(answer.kind === "token" ? "col.nearest_tokens" : "col.nearest_items"))),
    answer.items.map((it) => el("tr", { translate: "no" }, el("td", {}, it.label), el("td", {}, it.tokens.map(quoted).join(" ")),
      el("td", {}, it.neighbours.map((n) => `${n.token !== undefined ? quoted(n.token) : n.label} ${fmt(n.cosine, 3)}`).join(", ")))));
  $("#embeddings").replaceChildren(el("h3", {}, tn("embeddings.title", { space, method: data(answer.method), axes })), chart,
    ...answer.notes.map((n) => el("p", { class: "muted", translate: "no" }, n)), table);
}
