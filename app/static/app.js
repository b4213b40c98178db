// Intently playground: plain JavaScript over the documented HTTP API (docs/api.md).
// No framework, no build step; the page's Content-Security-Policy allows no inline code,
// so everything is built with DOM calls (never innerHTML with data from the server).
"use strict";

const TOKEN_KEY = "intently.adminToken";
const DEBOUNCE_MS = 250;
const POLL_MS = 500;

const $ = (id) => document.getElementById(id);
const state = { model: null, active: null, versions: [], lastJob: null };

// --- small helpers ------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("aria-") || key === "role" || key === "scope") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;
const num = (x) => (typeof x === "number" ? x.toFixed(4) : "–");

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

// One way to call the API: JSON in, JSON out, the admin token when we have one.
async function api(path, { method = "GET", body, auth = false, signal, form } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const t = token();
  if (auth && t) headers.Authorization = `Bearer ${t}`;
  // Relative to the page, so that the page works under a proxy's path prefix (--root-path).
  const response = await fetch(path.replace(/^\//, ""), {
    method,
    headers,
    body: form || (body === undefined ? undefined : JSON.stringify(body)),
    signal,
    cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function showError(node, error) {
  if (!error) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  const status = error.status ? ` (${error.status}${error.code ? " " + error.code : ""})` : "";
  node.textContent = `${error.message}${status}`;
  node.hidden = false;
}

// A labelled horizontal bar; the width is set through the CSSOM, which the CSP allows.
function bar(label, value, text, extraClass = "") {
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
  return el(
    "li",
    { class: `bar-row ${extraClass}`.trim() },
    el("span", { class: "bar-label", text: label }),
    el("span", { class: "bar-track", "aria-hidden": "true" }, fill),
    el("span", { class: "bar-value", text }),
  );
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [term, value] of pairs) {
    if (value === undefined || value === null) continue;
    dl.append(el("div", {}, el("dt", { text: term }), el("dd", { text: String(value) })));
  }
}

// --- classify as the user types ------------------------------------------------

let typingTimer = null;
let inflight = null;
let classifySeq = 0;

function onType() {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(classifyNow, DEBOUNCE_MS);
}

async function classifyNow() {
  const text = $("utterance").value;
  if (inflight) inflight.abort();
  if (!text.trim()) {
    $("result").hidden = true;
    showError($("classify-error"), null);
    return;
  }
  const seq = ++classifySeq;
  inflight = new AbortController();
  try {
    const answer = await api("/v1/classify", { method: "POST", body: { text, top_k: 5 }, signal: inflight.signal });
    if (seq !== classifySeq) return; // a newer request is on its way
    showError($("classify-error"), null);
    renderClassification(answer);
  } catch (error) {
    if (error.name === "AbortError" || seq !== classifySeq) return;
    $("result").hidden = true;
    showError($("classify-error"), error);
  }
}

function renderClassification(answer) {
  const verdict = $("verdict");
  verdict.replaceChildren();
  if (answer.out_of_scope) {
    verdict.className = "verdict oos";
    verdict.append(
      el("strong", { text: "Out of scope" }),
      ` — none of the intents fits (out-of-scope score ${answer.out_of_scope_score.toFixed(2)}, 0.5 is the boundary). Closest intents below, with their probabilities.`,
    );
  } else {
    verdict.className = "verdict in-scope";
    verdict.append(el("strong", { class: "intent-name", text: answer.intent }), ` — ${pct(answer.confidence)} confidence`);
  }
  verdict.dataset.outOfScope = String(answer.out_of_scope);
  const ranking = $("ranking");
  ranking.replaceChildren();
  answer.ranking.forEach((r, i) => {
    const first = i === 0 && !answer.out_of_scope ? "first" : "";
    ranking.append(bar(r.intent, r.confidence, pct(r.confidence), first));
  });
  renderEntities(answer);
  $("result").hidden = false;
}

// --- entities in the answer -------------------------------------------------------

// Whether the active model tags entities at all: a model without them shows no entity box.
function modelHasEntities() {
  return Boolean(state.model && state.model.entity_types && state.model.entity_types.length);
}

// A type keeps its colour from one answer to the next: chosen by its name, not its position.
function entityColour(type) {
  let h = 0;
  for (const c of type) h = (h * 31 + c.codePointAt(0)) % 6;
  return `c${h}`;
}

// The type with its role and group where the model was trained with them: "city (departure)".
function entityLabel(e) {
  const extra = [e.role, e.group !== undefined && e.group !== null ? `group ${e.group}` : null].filter(Boolean);
  return extra.length ? `${e.entity} (${extra.join(", ")})` : e.entity;
}

function entityTitle(e) {
  return `${entityLabel(e)}: ${e.value} (${pct(e.confidence)} confidence)`;
}

// The API's offsets count code points (Python strings), not UTF-16 units: slice an array of code points.
function markedText(text, entities) {
  const chars = Array.from(text);
  const parts = [];
  let at = 0;
  for (const e of [...entities].sort((a, b) => a.start - b.start)) {
    if (e.start < at || e.end <= e.start || e.end > chars.length) continue; // not a span of this text: listed only
    parts.push(chars.slice(at, e.start).join(""));
    const mark = el(
      "mark",
      { class: `entity ${entityColour(e.entity)}`, title: entityTitle(e) },
      el("span", { class: "entity-text", text: chars.slice(e.start, e.end).join("") }),
      el("span", { class: "entity-type", text: entityLabel(e), "aria-hidden": "true" }), // the table says it in words
    );
    mark.dataset.entity = e.entity;
    parts.push(mark);
    at = e.end;
  }
  parts.push(chars.slice(at).join(""));
  return parts;
}

function entityRow(chars, e) {
  const span = chars.slice(e.start, e.end).join("");
  return el(
    "tr",
    {},
    el("td", {}, el("span", { class: `entity-type ${entityColour(e.entity)}`, text: entityLabel(e) })),
    el("td", { text: e.value }),
    el("td", { text: `“${span}”` }),
    el("td", { class: "num", text: `${e.start}–${e.end}` }),
    el("td", { class: "num", text: pct(e.confidence) }),
  );
}

function renderEntities(answer) {
  const entities = answer.entities || [];
  const box = $("entities-box");
  box.hidden = !entities.length && !modelHasEntities();
  if (box.hidden) return;
  const chars = Array.from(answer.text); // the offsets are into the text as the server got it
  $("marked").replaceChildren(...markedText(answer.text, entities));
  $("marked").hidden = !entities.length;
  $("entities-none").hidden = Boolean(entities.length);
  const body = $("entities").querySelector("tbody");
  body.replaceChildren(...entities.map((e) => entityRow(chars, e)));
  $("entities").closest(".table-wrap").hidden = !entities.length;
}

// --- the active model and its intents -------------------------------------------

// The accuracy on the examples a version held out from its training (valid.jsonl).
const HELD_OUT = "Held-out accuracy";

async function loadModel() {
  try {
    const [model, intents] = await Promise.all([api("/v1/model"), api("/v1/intents")]);
    state.model = model;
    state.active = model.version;
    const m = model.metrics || {};
    $("model-line").textContent = `Active model ${model.version} · ${intents.intents.length} intents`;
    facts($("model-facts"), [
      ["Version", model.version],
      ["Created", model.created_at],
      ["Network", `${model.model.arch}${model.model.bidirectional ? " (bidirectional)" : ""}`],
      ["Training examples", model.data && model.data.examples],
      // One accuracy, named for what it is: the evaluation below shows the same figure.
      [HELD_OUT, m.accuracy !== undefined ? `${pct(m.accuracy)} of ${m.n} examples` : undefined],
      ["Entity types", model.entity_types && model.entity_types.length ? [...new Set(model.entity_types)].join(", ") : undefined],
      ["Out-of-scope threshold", model.threshold],
      ["Out-of-scope examples", intents.oos_examples],
    ]);
    renderIntents(intents);
    fillIntentNames(intents);
    refreshEvalVersions();
  } catch (error) {
    $("model-line").textContent = `The model is not available: ${error.message}`;
  }
}

function renderIntents(intents) {
  const list = $("intents");
  list.replaceChildren();
  intents.intents.forEach((item, i) => {
    const panel = el("div", { class: "examples", id: `examples-${i}` });
    panel.hidden = true;
    const button = el("button", {
      type: "button",
      class: "intent",
      "aria-expanded": "false",
      "aria-controls": panel.id,
    });
    button.append(el("span", { text: item.intent }), el("span", { class: "count", text: `${item.examples} examples` }));
    button.addEventListener("click", () => toggleExamples(button, panel, item.intent));
    list.append(el("li", {}, button, panel));
  });
}

async function toggleExamples(button, panel, intent) {
  const open = button.getAttribute("aria-expanded") === "true";
  button.setAttribute("aria-expanded", String(!open));
  panel.hidden = open;
  if (open) return;
  panel.replaceChildren(el("p", { class: "hint", text: "Loading…" }));
  try {
    const data = await api(`/v1/intents/${encodeURIComponent(intent)}/examples?limit=5`, { auth: true });
    const list = el("ul");
    for (const text of data.examples) list.append(el("li", { text }));
    panel.replaceChildren(list, el("p", { class: "hint", text: `${data.examples.length} of ${data.total}` }));
  } catch (error) {
    const text = error.status === 401 || error.status === 403 ? `Private: ${error.message}` : error.message;
    panel.replaceChildren(el("p", { class: "hint", text }));
  }
}

function fillIntentNames(intents) {
  const list = $("intent-names");
  list.replaceChildren();
  for (const item of intents.intents) list.append(el("option", { value: item.intent }));
}

// --- evaluation ----------------------------------------------------------------

function refreshEvalVersions() {
  const select = $("eval-version");
  const previous = select.value;
  const ids = state.versions.length ? state.versions.map((v) => v.version) : state.active ? [state.active] : [];
  select.replaceChildren();
  for (const id of [...ids].reverse()) {
    select.append(el("option", { value: id, text: id === state.active ? `${id} (active)` : id }));
  }
  const want = ids.includes(previous) ? previous : state.active;
  if (want) select.value = want;
  if (want && want !== previous) loadEvaluation(want);
}

async function loadEvaluation(version) {
  $("eval-status").textContent = `Loading the evaluation of ${version}…`;
  $("eval-body").hidden = true;
  try {
    const report = await api(`/v1/models/${encodeURIComponent(version)}/evaluation`, { auth: true });
    renderEvaluation(report);
    $("eval-status").textContent = `Version ${report.version}, measured on ${report.evaluated_on.examples} held-out examples.`;
  } catch (error) {
    $("eval-status").textContent = `No evaluation to show: ${error.message}`;
  }
}

function renderEvaluation(report) {
  const m = report.metrics;
  facts($("eval-metrics"), [
    [HELD_OUT, m.accuracy !== undefined ? `${pct(m.accuracy)} of ${m.n} examples` : undefined],
    ["Macro F1", num(m.macro_f1)],
    ["In-scope accuracy", m.in_scope_accuracy !== undefined ? pct(m.in_scope_accuracy) : undefined],
    ["Out-of-scope recall", m.oos_recall !== undefined ? pct(m.oos_recall) : undefined],
    ["Out-of-scope precision", m.oos_precision !== undefined ? pct(m.oos_precision) : undefined],
  ]);
  const f1 = $("eval-f1");
  f1.replaceChildren();
  const scores = [...report.per_intent].sort((a, b) => a.f1 - b.f1 || a.intent.localeCompare(b.intent));
  for (const s of scores) {
    const row = bar(s.intent, s.f1, `${s.f1.toFixed(2)} (${s.support})`, s.f1 < 0.8 ? "weak" : "");
    row.title = `precision ${s.precision.toFixed(3)}, recall ${s.recall.toFixed(3)}, support ${s.support}`;
    f1.append(row);
  }
  renderEntityScores(m);
  state.curve = report.version === state.active ? report.operating_curve : null;
  renderOperatingCurve(report.operating_curve);
  const img = $("confusion");
  img.src = report.confusion_png;
  $("confusion-link").href = report.confusion_png;
  img.alt = `Confusion matrix of version ${report.version} over ${report.labels.length} labels; ` +
    `the most confused pairs are listed in the table below.`;
  const body = $("eval-pairs").querySelector("tbody");
  body.replaceChildren();
  for (const p of report.confused_pairs) {
    const examples = el("td");
    if (p.examples) {
      const list = el("ul", { class: "plain" });
      for (const text of p.examples) list.append(el("li", { text: `“${text}”` }));
      examples.append(list);
    } else {
      examples.textContent = "—";
    }
    body.append(
      el("tr", {}, el("td", { text: p.true }), el("td", { text: p.predicted }), el("td", { text: String(p.count) }), examples),
    );
  }
  if (!report.confused_pairs.length) {
    body.append(el("tr", {}, el("td", { text: "No mistakes on the held-out examples.", colSpan: 4 })));
  }
  const note = $("pairs-note");
  note.hidden = report.examples_included;
  note.textContent = report.examples_included
    ? ""
    : "Example utterances are training data and private on this server: log in as admin to see them.";
  $("eval-body").hidden = false;
}

// --- the operating point: known requests turned away against unknown ones caught ---

// Drawn into the page's own <svg>, in its namespace.
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS($("operating-curve").namespaceURI, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const PLOT = { left: 46, top: 12, width: 270, height: 190 };
const plotX = (share) => PLOT.left + share * PLOT.width;
const plotY = (share) => PLOT.top + (1 - share) * PLOT.height;

function renderOperatingCurve(curve) {
  const box = $("eval-operating");
  box.hidden = !curve || !curve.known;
  if (box.hidden) return;
  const c = curve.current;
  const known = `turns away ${pct(c.known_turned_away)} of the requests of known intents (${curve.known} held-out examples)`;
  const picture = $("operating-curve");
  if (!curve.unknown) {
    $("operating-text").textContent = `At its setting the model ${known}; the held-out examples have no ` +
      "out-of-scope ones, so what it catches is not measured here.";
    picture.replaceChildren();
    picture.hidden = true;
    return;
  }
  $("operating-text").textContent = `At its setting the model ${known} and catches ` +
    `${pct(c.unknown_caught)} of unknown ones (${curve.unknown} held-out examples).`;
  picture.hidden = false;
  const axes = [
    svg("line", { x1: PLOT.left, y1: plotY(0), x2: plotX(1), y2: plotY(0), stroke: "#6b7280" }),
    svg("line", { x1: PLOT.left, y1: plotY(0), x2: PLOT.left, y2: plotY(1), stroke: "#6b7280" }),
    svg("text", { x: PLOT.left + PLOT.width / 2, y: 240, "text-anchor": "middle" }, "known intents turned away"),
    svg("text", { x: 12, y: PLOT.top + PLOT.height / 2, transform: `rotate(-90 12 ${PLOT.top + PLOT.height / 2})`, "text-anchor": "middle" }, "unknown caught"),
  ];
  for (const tick of [0, 0.5, 1]) {
    axes.push(svg("text", { x: plotX(tick), y: plotY(0) + 16, "text-anchor": "middle" }, `${tick * 100}%`));
    axes.push(svg("text", { x: PLOT.left - 6, y: plotY(tick) + 4, "text-anchor": "end" }, `${tick * 100}%`));
  }
  const line = curve.points
    .filter((p) => p.known_turned_away !== null && p.unknown_caught !== null)
    .map((p) => `${plotX(p.known_turned_away).toFixed(1)},${plotY(p.unknown_caught).toFixed(1)}`)
    .join(" ");
  const here = svg("circle", { cx: plotX(c.known_turned_away), cy: plotY(c.unknown_caught), r: 6, fill: "#1d4ed8", stroke: "#fff", "stroke-width": 2 });
  here.append(svg("title", {}, `as served: ${pct(c.known_turned_away)} known turned away, ${pct(c.unknown_caught)} unknown caught`));
  here.id = "operating-current";
  picture.replaceChildren(...axes, svg("polyline", { points: line, fill: "none", stroke: "#2563eb", "stroke-width": 2 }), here);
  drawLivePoint();
}

// The inbox's live estimate of the served version's point, on its curve (only for the active version).
function drawLivePoint() {
  const old = $("operating-live");
  if (old) old.remove();
  const live = state.livePoint;
  if (!state.curve || !state.curve.unknown || !live || !live.known || !live.unknown) return;
  const size = 10;
  const mark = svg("rect", {
    x: plotX(live.known_turned_away) - size / 2,
    y: plotY(live.unknown_caught) - size / 2,
    width: size,
    height: size,
    fill: "#b45309",
    stroke: "#fff",
    "stroke-width": 2,
  });
  mark.id = "operating-live";
  mark.append(svg("title", {}, `live: ${pct(live.known_turned_away)} known turned away, ${pct(live.unknown_caught)} unknown caught`));
  $("operating-curve").append(mark);
}

// Entity scores are in the report only when the held-out examples have entities.
function renderEntityScores(m) {
  const box = $("eval-entities");
  box.hidden = m.entity_f1 === undefined;
  if (box.hidden) return;
  facts($("eval-entity-metrics"), [
    ["Entity precision", num(m.entity_precision)],
    ["Entity recall", num(m.entity_recall)],
    ["Entity F1", num(m.entity_f1)],
  ]);
  const body = $("eval-entity-table").querySelector("tbody");
  body.replaceChildren();
  const types = Object.entries(m.entities || {}).sort(([a, x], [b, y]) => x.f1 - y.f1 || a.localeCompare(b));
  for (const [type, s] of types) {
    const row = el(
      "tr",
      { class: s.f1 < 0.8 ? "weak" : "" },
      el("th", { scope: "row" }, el("span", { class: `entity-type ${entityColour(type)}`, text: type })),
      el("td", { class: "num", text: s.precision.toFixed(3) }),
      el("td", { class: "num", text: s.recall.toFixed(3) }),
      el("td", { class: "num", text: s.f1.toFixed(3) }),
      el("td", { class: "num", text: String(s.support) }),
    );
    row.dataset.entity = type;
    body.append(row);
  }
}

// --- admin ----------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  sessionStorage.setItem(TOKEN_KEY, given);
  try {
    await loadVersions();
    $("token").value = "";
    showError($("login-error"), null);
    showAdmin(true);
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    error.message = `Login failed: ${error.message}`;
    showError($("login-error"), error);
    showAdmin(false);
  }
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.versions = [];
  showAdmin(false);
  refreshEvalVersions();
  $("token").focus();
}

function showAdmin(on) {
  $("admin-panel").hidden = !on;
  $("login-form").hidden = on;
  if (on) loadInbox();
  const select = $("eval-version");
  if (select.value) loadEvaluation(select.value); // examples of confused pairs depend on the token
}

async function loadVersions() {
  const list = await api("/v1/models", { auth: true });
  state.versions = list.versions;
  state.active = list.active;
  const body = $("versions").querySelector("tbody");
  body.replaceChildren();
  for (const v of [...list.versions].reverse()) {
    const actions = el("td", { class: "actions" });
    if (v.active) {
      actions.append(el("span", { class: "badge", text: "active" }));
    } else {
      const activate = el("button", { type: "button", text: "Activate", "aria-label": `Activate ${v.version}` });
      activate.addEventListener("click", () => activateVersion(v.version));
      actions.append(activate);
    }
    const show = el("button", { type: "button", class: "secondary", text: "Evaluation", "aria-label": `Evaluation of ${v.version}` });
    show.addEventListener("click", () => showEvaluation(v.version));
    actions.append(" ", show);
    const acc = v.metrics && typeof v.metrics.accuracy === "number" ? pct(v.metrics.accuracy) : "–";
    const row = el(
      "tr",
      { class: v.active ? "is-active" : "" },
      el("td", {}, el("code", { text: v.version })),
      el("td", { text: v.created_at }),
      el("td", { text: String(v.intents) }),
      el("td", { text: String(v.examples) }),
      el("td", { text: acc }),
      actions,
    );
    row.dataset.version = v.version;
    body.append(row);
  }
  refreshEvalVersions();
  return list;
}

function showEvaluation(version) {
  $("eval-version").value = version;
  loadEvaluation(version);
  $("evaluation").scrollIntoView({ behavior: "smooth" });
  $("eval-version").focus({ preventScroll: true });
}

async function afterActivation(message) {
  $("versions-status").textContent = message;
  await loadVersions();
  await loadModel();
  if ($("utterance").value.trim()) classifyNow();
}

async function activateVersion(version) {
  try {
    const r = await api(`/v1/models/${encodeURIComponent(version)}/activate`, { method: "POST", auth: true });
    await afterActivation(`Version ${r.active} is active.`);
    if (state.lastJob && state.lastJob.version === r.active) $("job-activate").hidden = true;
  } catch (error) {
    $("versions-status").textContent = `Not activated: ${error.message}`;
  }
}

async function rollback() {
  try {
    const r = await api("/v1/models/rollback", { method: "POST", auth: true });
    await afterActivation(`Rolled back: version ${r.active} is active.`);
  } catch (error) {
    $("versions-status").textContent = `No rollback: ${error.message}`;
  }
}

function onSourceChange() {
  const file = document.querySelector('input[name="source"]:checked').value === "file";
  $("file-fields").hidden = !file;
  $("examples-fields").hidden = file;
}

// The admin's training options (a JSON object, or nothing); null, with the error shown, if not JSON.
function trainingOptions(error) {
  const raw = $("train-options").value.trim();
  if (!raw) return {};
  try {
    return JSON.parse(raw);
  } catch (_) {
    showError(error, new Error("Training options: not valid JSON"));
    return null;
  }
}

async function startTraining(event) {
  event.preventDefault();
  const error = $("train-error");
  showError(error, null);
  const options = trainingOptions(error);
  if (options === null) return;
  const mode = $("train-mode").value;
  const activate = $("train-activate").value;
  let request;
  if (document.querySelector('input[name="source"]:checked').value === "file") {
    const file = $("train-file").files[0];
    if (!file) {
      showError(error, new Error("Choose a data file first"));
      return;
    }
    const form = new FormData();
    form.append("file", file);
    form.append("mode", mode);
    form.append("activate", activate);
    if ($("train-options").value.trim()) form.append("options", JSON.stringify(options));
    request = { method: "POST", form, auth: true };
  } else {
    const intent = $("train-intent").value.trim();
    const lines = $("train-examples").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (!intent || !lines.length) {
      showError(error, new Error("Give an intent and at least one example"));
      return;
    }
    const examples = lines.map((text) => ({ text, intent }));
    request = { method: "POST", body: { examples, mode, activate, options }, auth: true };
  }
  $("train-submit").disabled = true;
  try {
    const job = await api("/v1/training-jobs", request);
    watchJob(job);
  } catch (e) {
    showError(error, e);
    $("train-submit").disabled = false;
  }
}

function watchJob(job) {
  state.lastJob = job;
  $("job").hidden = false;
  $("job-id").textContent = job.id;
  $("job-result").hidden = true;
  renderJob(job);
  const tick = async () => {
    try {
      const current = await api(`/v1/training-jobs/${encodeURIComponent(job.id)}`, { auth: true });
      state.lastJob = current;
      renderJob(current);
      if (current.state === "succeeded" || current.state === "failed") {
        $("train-submit").disabled = false;
        await finishJob(current);
        return;
      }
    } catch (error) {
      $("job-state").textContent = `Could not read the job: ${error.message}`;
    }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function renderJob(job) {
  const { epoch, epochs } = job.progress;
  const progress = $("job-progress");
  progress.max = Math.max(1, epochs);
  progress.value = job.state === "succeeded" ? progress.max : epoch;
  const words = {
    queued: "Queued: waiting for its turn.",
    running: `Training: epoch ${epoch} of ${epochs}.`,
    succeeded: `Finished: version ${job.version}.`,
    failed: `Failed: ${job.error}`,
  };
  $("job-state").textContent = words[job.state] || job.state;
  $("job").dataset.state = job.state;
}

// The workers swap to a newly activated version within about a second: until then /v1/model
// still names the one before.
async function loadModelOf(version) {
  for (let i = 0; i < 20; i++) {
    await loadModel();
    if (state.model && state.model.version === version) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function finishJob(job) {
  loadInbox(); // a from_review job's items are trained on now
  if (job.state !== "succeeded") return;
  const list = await loadVersions();
  if (job.activated) await loadModelOf(job.version);
  const base = list.versions.find((v) => v.version === job.base_version);
  const fresh = (job.metrics && job.metrics.validation) || {};
  const old = (base && base.metrics) || {};
  $("job-base-h").textContent = job.base_version ? `Active before (${job.base_version})` : "Active before";
  $("job-new-h").textContent = `New (${job.version})`;
  const body = $("job-metrics").querySelector("tbody");
  body.replaceChildren();
  for (const key of ["accuracy", "macro_f1", "in_scope_accuracy", "oos_recall", "oos_precision", "n"]) {
    if (fresh[key] === undefined && old[key] === undefined) continue;
    const show = (x) => (key === "n" ? (x === undefined ? "–" : String(x)) : num(x));
    body.append(el("tr", {}, el("th", { scope: "row", text: key }), el("td", { text: show(fresh[key]) }), el("td", { text: show(old[key]) })));
  }
  const cmp = job.metrics && job.metrics.comparison;
  $("job-comparison").textContent = cmp
    ? `On the active version's ${cmp.examples} held-out examples: new ${num(cmp.new_accuracy)} ` +
      `against active ${num(cmp.active_accuracy)} (tolerance ${cmp.tolerance}).`
    : "";
  const reason = job.activation_reason || "";
  $("job-reason").textContent = /^not activated/i.test(reason)
    ? `Not activated${reason.slice("not activated".length)}.`
    : `${job.activated ? "Activated" : "Not activated"}: ${reason}.`;
  const isActive = list.active === job.version;
  $("job-activate").hidden = isActive;
  $("job-result").hidden = false;
}

// --- the review inbox ------------------------------------------------------------

const REASON_WORDS = {
  out_of_scope: "out of scope",
  low_confidence: "low confidence",
  ambiguous: "two intents close",
  sample: "random sample",
};
const inbox = { items: [], order: [], current: 0, lastLabel: null };

async function loadInbox() {
  try {
    const [page, stats] = await Promise.all([
      api("/v1/review?limit=500", { auth: true }),
      api("/v1/review/stats", { auth: true }),
    ]);
    $("inbox-off").hidden = true;
    $("inbox-box").hidden = false;
    const keep = inbox.order[inbox.current];
    inbox.items = page.items.filter((item) => !item.used_in); // trained on already: out of the way
    renderInbox(keep);
    renderInboxStats(stats);
  } catch (error) {
    if (error.code === "review_disabled") {
      $("inbox-off").textContent = error.message;
      $("inbox-off").hidden = false;
      $("inbox-box").hidden = true;
      return;
    }
    $("inbox-status").textContent = `Could not read the inbox: ${error.message}`;
  }
}

// Groups by the model's intent, largest first; the keyboard walks them in the order shown.
function renderInbox(keepId) {
  const groups = new Map();
  for (const item of inbox.items) {
    if (!groups.has(item.intent)) groups.set(item.intent, []);
    groups.get(item.intent).push(item);
  }
  const ordered = [...groups.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
  const list = $("inbox-list");
  list.replaceChildren();
  inbox.order = [];
  for (const [intent, items] of ordered) {
    const heading = el("h4", { id: `inbox-group-${inbox.order.length}`, text: `${intent} (${items.length})` });
    const group = el("div", { class: "inbox-group", role: "group", "aria-labelledby": heading.id }, heading);
    for (const item of items) {
      inbox.order.push(item.id);
      group.append(inboxRow(item));
    }
    list.append(group);
  }
  if (!inbox.items.length) list.append(el("p", { class: "hint", text: "Nothing to review." }));
  const at = inbox.order.indexOf(keepId);
  select(at >= 0 ? at : Math.min(inbox.current, inbox.order.length - 1));
  const labelled = inbox.items.filter((i) => i.label !== null && !i.discarded).length;
  $("inbox-train").disabled = !labelled;
  $("inbox-train").textContent = `Train with these (${labelled} labelled)`;
}

function labelTag(item) {
  if (item.discarded) return el("span", { class: "label-tag discarded", text: "discarded" });
  if (item.label === null) return el("span", { class: "label-tag none", text: "unlabelled" });
  return el("span", { class: "label-tag", text: `→ ${item.label}` });
}

function inboxRow(item) {
  const top = el("div", { class: "inbox-top" });
  item.ranking.slice(0, 3).forEach((r, i) => top.append(el("span", { text: `${i + 1} ${r.intent} ${pct(r.confidence)}` })));
  const times = item.count === 1 ? "seen once" : `seen ${item.count} times`;
  const verdict = item.out_of_scope ? "out of scope" : `${item.intent} ${pct(item.confidence)}`;
  const row = el(
    "div",
    { class: "inbox-item", role: "option", id: `review-${item.id}`, "aria-selected": "false" },
    el("div", { class: "inbox-text", text: item.text }),
    el("div", { class: "inbox-meta", text: `${verdict} · ${REASON_WORDS[item.reason] || item.reason} · ${times} · ` }, labelTag(item)),
    top,
  );
  row.dataset.id = item.id;
  row.addEventListener("click", () => {
    select(inbox.order.indexOf(item.id));
    $("inbox-list").focus({ preventScroll: true });
  });
  return row;
}

function select(index) {
  const list = $("inbox-list");
  for (const node of list.querySelectorAll('[aria-selected="true"]')) node.setAttribute("aria-selected", "false");
  if (index < 0 || !inbox.order.length) {
    inbox.current = 0;
    list.removeAttribute("aria-activedescendant");
    return;
  }
  inbox.current = index;
  const row = $(`review-${inbox.order[index]}`);
  row.setAttribute("aria-selected", "true");
  list.setAttribute("aria-activedescendant", row.id);
  row.scrollIntoView({ block: "nearest" });
}

function currentItem() {
  const id = inbox.order[inbox.current];
  return inbox.items.find((i) => i.id === id);
}

async function labelCurrent(change) {
  const item = currentItem();
  if (!item) return;
  try {
    const updated = await api(`/v1/review/${encodeURIComponent(item.id)}`, { method: "PUT", body: change, auth: true });
    Object.assign(item, updated);
    if (change.label) inbox.lastLabel = change.label;
    const words = change.discard ? "set aside" : `labelled ${change.label}`;
    $("inbox-status").textContent = `“${item.text}” ${words}.`;
    const next = nextUnlabelled(inbox.current);
    renderInbox(inbox.order[next]);
    refreshInboxStats();
  } catch (error) {
    $("inbox-status").textContent = `Not labelled: ${error.message}`;
  }
}

// The next item still to label after `from`, or the one after it when every item has a label.
function nextUnlabelled(from) {
  for (let i = 1; i <= inbox.order.length; i++) {
    const at = (from + i) % inbox.order.length;
    const item = inbox.items.find((x) => x.id === inbox.order[at]);
    if (item && item.label === null && !item.discarded) return at;
  }
  return Math.min(from + 1, inbox.order.length - 1);
}

function onInboxKey(event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const item = currentItem();
  const key = event.key;
  let handled = true;
  if (key === "j" || key === "ArrowDown") select(Math.min(inbox.current + 1, inbox.order.length - 1));
  else if (key === "k" || key === "ArrowUp") select(Math.max(inbox.current - 1, 0));
  else if (key === "r") loadInbox();
  else if (!item) handled = false;
  else if (["1", "2", "3"].includes(key) && item.ranking[Number(key) - 1]) labelCurrent({ label: item.ranking[Number(key) - 1].intent });
  else if (key === "o") labelCurrent({ label: "oos" });
  else if (key === "x") labelCurrent({ discard: true });
  else if (key === "." && inbox.lastLabel) labelCurrent({ label: inbox.lastLabel });
  else if (key === "n") $("inbox-label").focus();
  else handled = false;
  if (handled) event.preventDefault();
}

function applyTypedLabel() {
  const label = $("inbox-label").value.trim();
  if (!label) return;
  $("inbox-label").value = "";
  $("inbox-list").focus({ preventScroll: true });
  labelCurrent({ label });
}

async function refreshInboxStats() {
  try {
    renderInboxStats(await api("/v1/review/stats", { auth: true }));
  } catch (_) {
    /* the list itself says when the inbox cannot be read */
  }
}

// Live accuracy from the labelled random sample (the other items were chosen for the model's doubt).
function renderInboxStats(stats) {
  state.livePoint = stats.operating_point;
  drawLivePoint();
  const a = stats.accuracy;
  const s = stats.statuses;
  const counts = `${s.unlabelled} to label, ${s.labelled} labelled, ${s.used} trained on, ${s.discarded} discarded.`;
  const live = stats.operating_point;
  const point = live.known && live.unknown
    ? ` Live, as served: ${pct(live.known_turned_away)} of ${live.known} known requests turned away, ` +
      `${pct(live.unknown_caught)} of ${live.unknown} unknown ones caught.`
    : "";
  $("inbox-accuracy").textContent = a.labelled_sample
    ? `Estimated live accuracy ${pct(a.estimate)} (95% interval ${pct(a.low)}–${pct(a.high)}), from ` +
      `${a.labelled_sample} labelled random-sample items.${point} ${counts}`
    : `Label random-sample items to estimate live accuracy. ${counts}`;
}

async function trainFromInbox() {
  const error = $("train-error");
  showError(error, null);
  const options = trainingOptions(error);
  if (options === null) return;
  const body = { mode: "append", from_review: true, activate: $("train-activate").value, options };
  $("inbox-train").disabled = true;
  try {
    const job = await api("/v1/training-jobs", { method: "POST", body, auth: true });
    $("inbox-status").textContent = `Training job ${job.id} started with ${job.examples} labelled items; progress below.`;
    watchJob(job);
    $("job").scrollIntoView({ block: "nearest" });
  } catch (e) {
    $("inbox-status").textContent = `Not started: ${e.message}`;
    $("inbox-train").disabled = false;
  }
}

// --- start ----------------------------------------------------------------------

function init() {
  $("utterance").addEventListener("input", onType);
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("rollback").addEventListener("click", rollback);
  $("train-form").addEventListener("submit", startTraining);
  for (const radio of document.querySelectorAll('input[name="source"]')) radio.addEventListener("change", onSourceChange);
  $("eval-version").addEventListener("change", (e) => loadEvaluation(e.target.value));
  $("job-activate").addEventListener("click", () => state.lastJob && activateVersion(state.lastJob.version));
  $("job-evaluate").addEventListener("click", () => state.lastJob && showEvaluation(state.lastJob.version));
  $("inbox-list").addEventListener("keydown", onInboxKey);
  $("inbox-label").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      applyTypedLabel();
    } else if (e.key === "Escape") {
      $("inbox-list").focus();
    }
  });
  $("inbox-label-apply").addEventListener("click", applyTypedLabel);
  $("inbox-train").addEventListener("click", trainFromInbox);
  $("inbox-refresh").addEventListener("click", loadInbox);
  loadModel();
  if (token()) {
    loadVersions()
      .then(() => showAdmin(true))
      .catch(() => {
        sessionStorage.removeItem(TOKEN_KEY);
        showAdmin(false);
      });
  }
}

document.addEventListener("DOMContentLoaded", init);
