// duravoke ui. Every element is built with createElement + textContent: nothing the store
// holds (ids, step names, results, errors) is ever parsed as HTML.
"use strict";

const TOKEN = document.querySelector('meta[name="duravoke-token"]').content;
const PAGE = 50;
const REFRESH_MS = 2000;
const MAX_ROWS = 1000; // timeline rows drawn before "show all"

// --- small helpers --------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

// replaceChildren, skipping the nulls that optional parts leave.
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

// Control, format (bidi overrides such as U+202E) and line-separator characters are shown
// as escapes, as the CLI does, so an id cannot reorder or break the text around it.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const NAMED = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
function visible(text) {
  return String(text).replace(INVISIBLE, (ch) => {
    if (ch === "\u200d") return ch; // joins emoji sequences; harmless
    if (NAMED[ch]) return NAMED[ch];
    const code = ch.codePointAt(0).toString(16);
    return code.length <= 4 ? "\\u" + code.padStart(4, "0") : "\\u{" + code + "}";
  });
}

function shorten(text, max) {
  const chars = Array.from(text);
  if (chars.length <= max) return text;
  const tail = Math.floor(max / 3);
  return chars.slice(0, max - tail - 1).join("") + "\u2026" + chars.slice(chars.length - tail).join("");
}

function idNode(id, max) {
  const shown = visible(id);
  return el("bdi", { class: "wid", title: shown.length > (max || Infinity) ? shorten(shown, 2000) : null },
    max ? shorten(shown, max) : shown);
}

function statusClass(status) {
  const known = ["completed", "failed", "running", "interrupted", "corrupt", "pending", "sleeping", "waiting", "cancelled"];
  return "st-" + (known.includes(status) ? status : "other");
}

function badge(status) {
  return el("span", { class: "badge " + statusClass(status) }, visible(status));
}

function pad(n, width) { return String(n).padStart(width || 2, "0"); }

function when(iso) {
  if (!iso) return "\u2013";
  const d = new Date(iso);
  if (isNaN(d)) return visible(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function seconds(s) {
  if (s === null || s === undefined || isNaN(s)) return "\u2013";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " \u00b5s";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  // Round first, then split, so that 59.8 s never reads "0 min 60 s".
  const secs = Math.round(s);
  if (secs < 3600) return Math.floor(secs / 60) + " min " + (secs % 60) + " s";
  const mins = Math.round(s / 60);
  if (mins < 1440) return Math.floor(mins / 60) + " h " + (mins % 60) + " min";
  const hours = Math.round(s / 3600);
  return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
}

function plural(n, word) { return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`; }

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options || {}));
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: `HTTP ${response.status}` }; }
  if (!response.ok) {
    const error = new Error((data && data.error) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function setLive(text) { document.getElementById("live").textContent = text; }
function setStore(location) {
  const node = document.getElementById("store");
  put(node, el("bdi", {}, visible(location || "")));
}

// --- routing --------------------------------------------------------------------------

let timer = null;
let view = null; // the current view's state, to refresh it without rebuilding everything

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("w/")) return { name: "workflow", key: hash.slice(2).replace(/[^0-9a-f]/g, "") };
  const params = new URLSearchParams(hash.startsWith("?") ? hash.slice(1) : "");
  return {
    name: "list",
    status: params.get("status") || "",
    q: params.get("q") || "",
    page: Math.max(0, parseInt(params.get("page") || "0", 10) || 0),
  };
}

function listHash(state) {
  const params = new URLSearchParams();
  if (state.status) params.set("status", state.status);
  if (state.q) params.set("q", state.q);
  if (state.page) params.set("page", String(state.page));
  const text = params.toString();
  return "#/" + (text ? "?" + text : "");
}

function route() {
  clearTimeout(timer);
  const r = parseHash();
  const main = document.getElementById("main");
  if (r.name === "workflow") showWorkflow(main, r.key);
  else showList(main, r);
}

function schedule(fn) {
  clearTimeout(timer);
  timer = setTimeout(() => { if (document.hidden) schedule(fn); else fn(); }, REFRESH_MS);
}

// --- the list -------------------------------------------------------------------------

function showList(main, state) {
  document.title = "duravoke: workflows";
  const search = el("input", {
    type: "search", class: "search", placeholder: "Search ids", "aria-label": "Search workflow ids",
    value: state.q, autocomplete: "off", spellcheck: "false",
  });
  const chips = el("div", { class: "chips", role: "group", "aria-label": "Filter by status" });
  const results = el("div", { id: "results" }, el("p", { class: "note" }, "Reading the store\u2026"));
  put(main, 
    el("h1", {}, "Workflows"),
    el("div", { class: "filters" }, chips, search),
    results,
  );
  view = { name: "list", state, chips, results, last: "" };
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.q = search.value;
      state.page = 0;
      history.replaceState(null, "", listHash(state));
      loadList(view);
    }, 250);
  });
  loadList(view);
}

async function loadList(v) {
  const { state } = v;
  const params = new URLSearchParams({ offset: String(state.page * PAGE), limit: String(PAGE) });
  if (state.status) params.set("status", state.status);
  if (state.q) params.set("q", state.q);
  let data;
  try {
    data = await api("/api/workflows?" + params);
  } catch (error) {
    put(v.results, el("p", { class: "error", role: "alert" }, "Could not read the store: " + error.message));
    schedule(() => loadList(v));
    return;
  }
  if (view !== v) return; // the user went elsewhere meanwhile
  setStore(data.store);
  const text = JSON.stringify(data.rows) + JSON.stringify(data.counts) + data.total;
  if (text !== v.last) {
    v.last = text;
    renderChips(v, data);
    renderRows(v, data);
  }
  const live = Object.keys(data.counts).some((s) => data.live.includes(s));
  setLive(live ? "Live: refreshing every 2 s" : "Read at " + when(data.scanned));
  if (live) schedule(() => loadList(v));
}

function renderChips(v, data) {
  const { state } = v;
  const total = Object.values(data.counts).reduce((a, b) => a + b, 0);
  const chip = (status, label, count) => el("button", {
    type: "button", class: "chip", "aria-pressed": String(state.status === status),
    onclick: () => { state.status = status; state.page = 0; location.hash = listHash(state); },
  }, status ? el("span", { class: "dot " + statusClass(status), "aria-hidden": "true" }) : null, `${label} (${count.toLocaleString()})`);
  const chips = [chip("", "All", total)];
  for (const [status, count] of Object.entries(data.counts)) chips.push(chip(status, visible(status), count));
  if (state.status && !(state.status in data.counts)) chips.push(chip(state.status, visible(state.status), 0));
  // Keep keyboard focus on the chip it was on when the chips are rebuilt.
  const focused = document.activeElement && v.chips.contains(document.activeElement) ? [...v.chips.children].indexOf(document.activeElement) : -1;
  put(v.chips, ...chips);
  if (focused >= 0 && v.chips.children[focused]) v.chips.children[focused].focus();
}

function renderRows(v, data) {
  const { state } = v;
  if (!data.rows.length) {
    const none = data.total === 0 && !state.q && !state.status;
    put(v.results, el("p", { class: "empty" }, none ? "No workflows recorded in this store yet." : "No workflow matches."));
    return;
  }
  const rows = data.rows.map((w) => {
    const name = w.id === null
      ? el("span", {}, el("bdi", { class: "wid" }, visible(w.path || "?")))
      : el("a", { href: "#/w/" + w.key }, idNode(w.id, 160));
    const note = w.status === "corrupt" || w.status === "failed"
      ? el("div", { class: "note wrap" }, visible(shorten(w.error || "", 300)))
      : null;
    const steps = w.steps_done === undefined ? "\u2013"
      : w.steps_done.toLocaleString() + (w.steps_failed ? ` (${w.steps_failed} failed)` : "");
    return el("tr", {},
      el("td", { class: "id" }, name, note),
      el("td", { "data-label": "Status" }, badge(w.status)),
      el("td", { "data-label": "Steps" }, steps),
      el("td", { "data-label": "Runs" }, w.runs === undefined ? "\u2013" : String(w.runs)),
      el("td", { "data-label": "Started" }, when(w.started)),
      el("td", { "data-label": "Updated" }, when(w.updated)),
    );
  });
  const first = data.offset + 1;
  const last = data.offset + data.rows.length;
  const go = (page) => { state.page = page; location.hash = listHash(state); };
  put(v.results, 
    el("table", { class: "list" },
      el("caption", { class: "skip" }, "Workflows, most recently updated first"),
      el("colgroup", {}, el("col", {}), el("col", { class: "col-status" }), el("col", { class: "col-steps" }),
        el("col", { class: "col-runs" }), el("col", { class: "col-time" }), el("col", { class: "col-time" })),
      el("thead", {}, el("tr", {},
        ...["Workflow", "Status", "Steps", "Runs", "Started", "Updated"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)),
    el("nav", { class: "pager", "aria-label": "Pages" },
      el("button", { type: "button", disabled: state.page === 0, onclick: () => go(state.page - 1) }, "\u2190 Newer"),
      el("span", {}, `${first.toLocaleString()}\u2013${last.toLocaleString()} of ${data.total.toLocaleString()}`),
      el("button", { type: "button", disabled: last >= data.total, onclick: () => go(state.page + 1) }, "Older \u2192")),
  );
}

// --- one workflow ---------------------------------------------------------------------

function showWorkflow(main, key) {
  document.title = "duravoke: workflow";
  const body = el("div", {}, el("p", { class: "note" }, "Loading\u2026"));
  put(main, el("a", { class: "back", href: "#/" }, "\u2190 All workflows"), body);
  view = { name: "workflow", key, body, last: "", open: new Set(), showAll: false };
  loadWorkflow(view);
}

async function loadWorkflow(v) {
  let w;
  try {
    w = await api("/api/workflows/" + v.key);
  } catch (error) {
    if (view !== v) return;
    put(v.body, el("p", { class: "error", role: "alert" },
      error.status === 404 ? "No such workflow in this store (it may have been forgotten)." : "Could not read it: " + error.message));
    return;
  }
  if (view !== v) return;
  setStore(w.store);
  const text = JSON.stringify(w);
  if (text !== v.last) {
    v.last = text;
    renderWorkflow(v, w);
  }
  setLive(w.live ? "Live: refreshing every 2 s" : "");
  if (w.live) schedule(() => loadWorkflow(v));
}

function renderWorkflow(v, w) {
  document.title = "duravoke: " + shorten(visible(w.id || w.path || ""), 60);
  const facts = el("dl", { class: "facts" });
  const fact = (name, ...value) => facts.append(el("dt", {}, name), el("dd", {}, ...value));
  fact("Status", badge(w.status));
  if (w.error) fact(w.status === "corrupt" ? "Problem" : "Error", el("span", { class: "error mono" }, visible(w.error)));
  if (w.path) fact("File", el("bdi", { class: "mono" }, visible(w.path)));
  if (w.runs !== undefined) fact("Runs", String(w.runs));
  if (w.started !== undefined) fact("Started", when(w.started));
  if (w.updated !== undefined) fact("Updated", when(w.updated));
  if (w.steps_done !== undefined) fact("Steps", `${w.steps_done.toLocaleString()} completed` + (w.steps_failed ? `, ${w.steps_failed} failed` : ""));
  for (const [name, value] of Object.entries(w.extra || {})) {
    if (value === null) continue;
    fact(visible(name.replace(/_/g, " ")), el("span", { class: "mono wrap" }, visible(typeof value === "string" ? value : JSON.stringify(value))));
  }
  const idText = visible(w.id === null ? w.path || "" : w.id);
  const title = el("h1", { class: "wrap" }, el("bdi", { class: "wid" }, shorten(idText, 400)));
  const full = Array.from(idText).length > 400
    ? el("details", {}, el("summary", {}, `The whole id (${Array.from(w.id).length.toLocaleString()} characters)`),
      el("pre", { class: "wrap" }, idText))
    : null;
  const message = el("div", { class: "message", role: "status" });
  const actions = el("div", { class: "actions" },
    w.actions.map((a) => el("button", { type: "button", class: a.name === "forget" ? "danger" : "", onclick: () => act(v, w, a, message) }, a.label)));
  put(v.body, title, full, facts, actions, message, runsSection(w), timelineSection(v, w));
}

function runsSection(w) {
  if (!w.runs) return null;
  const byRun = new Map();
  for (const s of w.steps) {
    if (s.run === null || s.run === undefined) continue;
    const t0 = Date.parse(s.started);
    const r = byRun.get(s.run) || { n: 0, failed: 0, start: Infinity, end: -Infinity };
    r.n += 1;
    if (s.status === "failed") r.failed += 1;
    if (!isNaN(t0)) { r.start = Math.min(r.start, t0); r.end = Math.max(r.end, t0 + s.duration * 1000); }
    byRun.set(s.run, r);
  }
  const outcome = (run) => (run === w.runs ? visible(w.status) + (w.error ? ": " + visible(shorten(w.error, 200)) : "") : "ended (how is not recorded)");
  if (!byRun.size) {
    return el("section", {}, el("h2", {}, "Runs"),
      el("p", {}, `${plural(w.runs, "run")}; the last one: `, badge(w.status), w.error ? el("span", { class: "error" }, " " + visible(shorten(w.error, 300))) : null),
      el("p", { class: "note" }, "This store does not record which run executed each step."));
  }
  const rows = [];
  for (let run = 1; run <= w.runs; run++) {
    const r = byRun.get(run);
    const replayed = w.steps.filter((s) => s.run !== null && s.run < run && s.status === "completed").length;
    rows.push(el("tr", {},
      el("td", {}, String(run)),
      el("td", {}, r ? `${r.n.toLocaleString()}` + (r.failed ? ` (${r.failed} failed)` : "") : "0"),
      el("td", {}, replayed ? replayed.toLocaleString() : "0"),
      el("td", {}, r && isFinite(r.start) ? when(new Date(r.start).toISOString()) : "\u2013"),
      el("td", { class: "wrap" }, outcome(run))));
  }
  return el("section", {}, el("h2", {}, "Runs"),
    el("div", { class: "scroll" }, el("table", { class: "runs" },
      el("thead", {}, el("tr", {}, ...["Run", "Executed", "Could replay", "First step", "Outcome"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows))));
}

// Steps in tree order: children under their caller, a caller without a record (it was
// still running when its process stopped) as a placeholder line.
function stepTree(steps) {
  const bySid = new Map(steps.map((s) => [s.sid, s]));
  const children = new Map();
  for (const s of steps) {
    const parent = bySid.has(s.parent) ? s.parent : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const lines = [];
  const placeholders = new Set();
  const walk = (s, depth) => {
    if (s.parent !== null && !bySid.has(s.parent)) {
      if (!placeholders.has(s.parent)) {
        placeholders.add(s.parent);
        lines.push({ step: null, depth: Math.max(0, s.path.length - 1), name: s.path.length ? s.path[s.path.length - 1] : "?" });
      }
      depth = s.path.length;
    }
    lines.push({ step: s, depth });
    for (const c of children.get(s.sid) || []) walk(c, depth + 1);
  };
  for (const root of children.get(null) || []) walk(root, 0);
  return lines;
}

// A time axis that keeps every step's length but shrinks long idle gaps (a crash and a
// re-run an hour later) to a marked break, so both runs stay readable.
function makeAxis(steps) {
  const spans = steps.map((s) => {
    const start = Date.parse(s.started);
    return isNaN(start) ? null : [start, start + Math.max(0, s.duration * 1000)];
  }).filter(Boolean).sort((a, b) => a[0] - b[0]);
  if (!spans.length) return null;
  const merged = [];
  for (const [a, b] of spans) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  const busy = merged.reduce((sum, [a, b]) => sum + (b - a), 0);
  const limit = Math.max(1000, busy * 0.5); // gaps longer than this become breaks
  const segments = [];
  const breaks = [];
  let pos = 0;
  merged.forEach(([a, b], i) => {
    if (i > 0) {
      const gap = a - merged[i - 1][1];
      if (gap > limit) { breaks.push({ at: pos + limit / 4, gap }); pos += limit / 2; }
      else pos += gap;
    }
    segments.push({ a, b, at: pos });
    pos += b - a;
  });
  const total = Math.max(pos, 1);
  const x = (t) => {
    let seg = segments[0];
    for (const s of segments) { if (s.a <= t) seg = s; else break; }
    return (seg.at + Math.min(Math.max(0, t - seg.a), seg.b - seg.a)) / total * 100;
  };
  return { x, breaks: breaks.map((b) => ({ pct: b.at / total * 100, gap: b.gap })), start: merged[0][0], end: merged[merged.length - 1][1], busy };
}

function timelineSection(v, w) {
  if (!w.steps.length) {
    return el("section", {}, el("h2", {}, "Steps"), el("p", { class: "empty" },
      w.status === "corrupt" ? "Its state cannot be read." : "No step recorded yet."));
  }
  const axis = makeAxis(w.steps);
  const lines = stepTree(w.steps);
  const shown = v.showAll ? lines : lines.slice(0, MAX_ROWS);
  const hasRuns = w.steps.some((s) => s.run !== null && s.run !== undefined);
  const rows = [];
  for (const line of shown) {
    const indent = Math.min(line.depth, 12) * 14;
    if (line.step === null) {
      const row = el("div", { class: "trow placeholder" },
        el("span", { class: "label" }, el("span", { class: "name" }, visible(line.name) + " (in progress or interrupted; not recorded)")),
        el("span", { class: "track" }));
      row.firstChild.style.paddingLeft = indent + "px";
      rows.push(row);
      continue;
    }
    const s = line.step;
    const earlier = hasRuns && s.run !== null && s.run < w.runs;
    const label = stepLabel(s);
    const bar = el("span", { class: `bar ${statusClass(s.status)}${earlier ? " earlier" : ""}`, "aria-hidden": "true" });
    if (axis) {
      const start = Date.parse(s.started);
      const left = isNaN(start) ? 0 : axis.x(start);
      const right = isNaN(start) ? 0 : axis.x(start + s.duration * 1000);
      bar.style.left = left + "%";
      bar.style.width = Math.max(0, right - left) + "%";
    }
    const track = el("span", { class: "track" }, bar, axis ? axis.breaks.map((b) => {
      const mark = el("span", { class: "gapmark", "aria-hidden": "true" });
      mark.style.left = b.pct + "%";
      return mark;
    }) : null);
    const id = "step-" + s.sid.replace(/[^0-9a-zA-Z]/g, "-");
    const open = v.open.has(s.sid);
    const row = el("button", {
      type: "button", class: "trow", "aria-expanded": String(open), "aria-controls": id,
      "aria-label": `${label}: ${s.status}, ${seconds(s.duration)}` + (s.run ? `, run ${s.run}` : ""),
    },
    el("span", { class: "label" },
      el("span", { class: "name", title: shorten(label, 2000) }, label),
      hasRuns && s.run !== null ? el("span", { class: "runtag" }, "run " + s.run) : null,
      el("span", { class: "dur" }, seconds(s.duration))),
    track);
    row.firstChild.style.paddingLeft = indent + "px";
    const info = el("div", { class: "stepinfo", id, hidden: !open });
    row.addEventListener("click", () => {
      const now = row.getAttribute("aria-expanded") !== "true";
      row.setAttribute("aria-expanded", String(now));
      info.hidden = !now;
      if (now) { v.open.add(s.sid); fillStep(v, w, s, info); } else v.open.delete(s.sid);
    });
    if (open) fillStep(v, w, s, info);
    rows.push(row, info);
  }
  const ticks = axis ? el("span", { class: "ticks" },
    el("span", { class: "tick first" }, when(new Date(axis.start).toISOString())),
    ...axis.breaks.map((b) => { const t = el("span", { class: "tick" }, seconds(b.gap / 1000) + " idle"); t.style.left = b.pct + "%"; return t; }),
    (() => { const t = el("span", { class: "tick last" }, seconds((axis.end - axis.start) / 1000) + " in all"); t.style.left = "100%"; return t; })()) : el("span");
  const legend = el("div", { class: "legend" },
    el("span", {}, el("span", { class: "sw st-completed", "aria-hidden": "true" }), "completed"),
    el("span", {}, el("span", { class: "sw st-failed", "aria-hidden": "true" }), "failed (runs again)"),
    hasRuns ? el("span", {}, el("span", { class: "sw st-completed earlier", "aria-hidden": "true" }), "executed in an earlier run, replayed since") : null,
    axis && axis.breaks.length ? el("span", {}, "\u2506 a long idle gap, shortened") : null);
  const more = lines.length > shown.length
    ? el("button", { type: "button", onclick: () => { v.showAll = true; v.last = ""; loadWorkflow(v); } }, `Show all ${lines.length.toLocaleString()} steps`)
    : null;
  return el("section", {},
    el("h2", {}, "Timeline"),
    el("p", { class: "note" }, "Each bar is a step on a time axis, nested under the step that called it. Select a step for its arguments, result and timings."),
    legend,
    el("div", { class: "timeline", role: "group", "aria-label": "Steps" },
      el("div", { class: "axis", "aria-hidden": "true" }, el("span", { class: "label" }, "Step"), ticks),
      rows),
    more);
}

function stepLabel(s) {
  let args;
  if (s.args && typeof s.args === "object" && !Array.isArray(s.args)) {
    args = Object.entries(s.args).map(([k, val]) => `${k}=${shorten(JSON.stringify(val), 40)}`).join(", ");
  } else {
    args = s.args === null ? "\u2026" : shorten(JSON.stringify(s.args), 60);
  }
  return visible(`${s.function}(${args})` + (s.occurrence ? ` #${s.occurrence}` : ""));
}

async function fillStep(v, w, s, box) {
  const facts = el("dl", { class: "facts" });
  const fact = (name, value) => facts.append(el("dt", {}, name), el("dd", { class: "wrap" }, value));
  fact("Status", badge(s.status));
  fact("Function", visible(s.function));
  if (s.path.length) fact("Called from", visible(s.path.join(" \u2192 ")));
  fact("Started", when(s.started));
  fact("Took", seconds(s.duration));
  if (s.run !== null && s.run !== undefined) {
    fact("Run", s.run < w.runs ? `executed in run ${s.run}; later runs replayed its result` : `executed in run ${s.run}`);
  }
  if (s.occurrence) fact("Occurrence", String(s.occurrence));
  fact("Step id", el("span", { class: "mono" }, visible(s.sid)));
  for (const [name, value] of Object.entries(s.extra || {})) {
    if (value !== null) fact(visible(name), visible(typeof value === "string" ? value : JSON.stringify(value)));
  }
  const content = el("div", {}, el("p", { class: "note" }, "Loading\u2026"));
  put(box, facts, content);
  let d;
  try {
    d = await api(`/api/workflows/${v.key}/steps/${encodeURIComponent(s.sid)}`);
  } catch (error) {
    put(content, el("p", { class: "error" }, "Could not read the step: " + error.message));
    return;
  }
  put(content, 
    el("h3", {}, "Arguments"),
    d.args === null ? el("p", { class: "note" }, "Not recorded (too long, or none).") : el("pre", {}, d.args),
    s.status === "completed" ? el("h3", {}, "Result") : null,
    s.status === "completed" ? el("pre", {}, d.result === null ? "" : d.result) : null,
    d.recorded !== null && d.recorded !== d.result
      ? el("details", {}, el("summary", {}, "As recorded (the serializer's JSON)"), el("pre", {}, d.recorded)) : null,
    d.error ? el("h3", {}, "Error (it runs again next time)") : null,
    d.error ? el("pre", { class: "error" }, visible(d.error)) : null,
  );
}

// --- actions --------------------------------------------------------------------------

function ask(question, fields) {
  const dialog = document.getElementById("ask");
  const ok = document.getElementById("ask-ok");
  const cancel = document.getElementById("ask-cancel");
  const error = document.getElementById("ask-error");
  document.getElementById("ask-text").textContent = question;
  error.textContent = "";
  const inputs = {};
  const boxes = fields.map((f) => {
    const id = "ask-field-" + f.name;
    const input = f.kind === "json"
      ? el("textarea", { id, rows: 4, spellcheck: "false", placeholder: "JSON, e.g. {\"approved\": true}" })
      : el("input", { id, type: "text", autocomplete: "off" });
    inputs[f.name] = { input, kind: f.kind };
    return el("div", {}, el("label", { for: id }, f.name + (f.kind === "json" ? " (JSON)" : "")), input);
  });
  put(document.getElementById("ask-fields"), ...boxes);
  return new Promise((resolve) => {
    const done = (value) => {
      ok.onclick = cancel.onclick = dialog.oncancel = null;
      dialog.close();
      resolve(value);
    };
    ok.onclick = () => {
      const values = {};
      for (const [name, { input, kind }] of Object.entries(inputs)) {
        if (kind === "json") {
          try { values[name] = JSON.parse(input.value || "null"); } catch (e) { error.textContent = `${name} is not valid JSON.`; input.focus(); return; }
        } else values[name] = input.value;
      }
      done(values);
    };
    cancel.onclick = () => done(null);
    dialog.oncancel = (event) => { event.preventDefault(); done(null); };
    dialog.showModal();
    (boxes.length ? boxes[0].querySelector("input, textarea") : cancel).focus();
  });
}

async function act(v, w, action, message) {
  const name = shorten(visible(w.id), 200);
  const values = await ask(action.confirm.replace("{id}", "\u201c" + name + "\u201d"), action.fields);
  if (values === null) return;
  put(message, el("p", { class: "note" }, action.label + "\u2026"));
  try {
    const result = await api(`/api/workflows/${v.key}/${action.name}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Duravoke-Token": TOKEN },
      body: JSON.stringify(values),
    });
    if (action.name === "forget") {
      location.hash = "#/";
      setLive("Forgot " + shorten(name, 60) + ". " + result.message);
      return;
    }
    put(message, el("p", {}, result.message));
    v.last = "";
    loadWorkflow(v);
  } catch (error) {
    put(message, el("p", { class: "error", role: "alert" }, error.message));
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => { if (!document.hidden && view) { clearTimeout(timer); (view.name === "list" ? loadList : loadWorkflow)(view); } });
route();
