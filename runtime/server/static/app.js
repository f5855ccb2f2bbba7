// The search page: talks to API v1 only (the same calls any app makes). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("dagnn-key") || "", labels: [], filter: new Set(), query: null,
                blobUrls: [], sizes: {}, seq: 0 };
// one column below this width: the photo box sits above the results (the same width as app.css's @media)
const narrow = window.matchMedia("(max-width: 860px)");
const NOUNS = { image: ["photo", "photos"], text: ["tag set", "tag sets"] };
const noun = (target, n) => NOUNS[target][n === 1 ? 0 : 1];

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  let res;
  try { res = await fetch(path, { ...options, headers }); }
  catch (e) { throw new ApiError(0, "network", `${e.message} (${path})`); }
  if (res.ok) return res;
  let err = {};
  try { err = (await res.json()).error || {}; } catch (_) { /* not JSON */ }
  if (res.status === 401) $("key-box").hidden = false;
  throw new ApiError(res.status, err.code || "http_" + res.status, err.message || `HTTP ${res.status}`);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

// ---- errors: a sentence for a person first; the API's code and message under "Details" ------------------
const PLAIN = {
  invalid_image: "That file isn't a photo this server can read. Try a JPEG, PNG or WebP.",
  too_large: "That file is too large for this server. Try a smaller photo.",
  unsupported_media_type: "The server could not take that upload. Try a JPEG, PNG or WebP photo.",
  loading: "The server is still starting up. Try again in a moment.",
  unavailable: "The server can't answer right now. Try again in a moment.",
  too_many_requests: "The server is busy. Wait a moment and try again.",
  load_failed: "The server could not load its model or its index, so it cannot search. Whoever runs it can find why in its log.",
  network: "Can't reach the server. Check that it is running and try again.",
  unknown_label: "The server does not know that label. Reload the page and choose the filter again.",
  unknown_id: "That photo is no longer in the index.",
  no_file: "That photo's file is no longer on the server.",
  forbidden: "The server refused this request from the page.",
  misdirected: "The server does not answer to the address in the address bar. Open it by the name it was started with.",
};

function plainError(e, query) {
  if (e.code === "invalid_input" && query && query.kind === "text") {
    const close = [...new Set([...e.message.matchAll(/\(closest: ([^)]*)\)/g)].flatMap((m) => m[1].split(", ")))];
    return "None of those words are tags this search knows." + (close.length ? ` Close ones: ${close.slice(0, 6).join(", ")}.`
                                                                             : " Try other words, like sky or clouds.");
  }
  if (e.code === "invalid_input" || e.code === "invalid_field") return "The server could not use that search. Try other tags or another photo.";
  return PLAIN[e.code] || "Something went wrong on the server. Try again in a moment.";
}

function showError(text, detail = "") {
  $("error-text").textContent = text;
  $("error-text").title = detail;
  $("error-detail").textContent = detail;
  $("error-details").hidden = !detail;
  $("error-details").open = false;
  $("error").hidden = !text;
}

function showApiError(e, query) {
  if (e.status === 401) {  // the key box asks for what is missing
    showError(state.key ? "The server did not accept that API key. Check it and try again." : "");
    return;
  }
  showError(plainError(e, query), `${e.code}${e.status ? " (HTTP " + e.status + ")" : ""}: ${e.message}`);
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = "pill pill-" + kind;
}

// ---- startup: wait until the model and index are loaded -------------------------------------------------
async function waitReady() {
  for (;;) {
    const res = await fetch("/readyz").catch(() => null);
    if (res && res.ok) return;
    let body = {};
    try { body = (await res.json()).error || {}; } catch (_) { /* down */ }
    if (res && body.code === "load_failed") { setStatus("not ready", "bad"); showApiError(new ApiError(503, body.code, body.message)); return; }
    setStatus(res ? "loading model…" : "server unreachable", "wait");
    await new Promise((r) => setTimeout(r, 1000 * Number((res && res.headers.get("Retry-After")) || 1)));
  }
}

async function loadInfo() {
  try {
    const [info, labels] = await Promise.all([api("/v1/info").then((r) => r.json()),
                                              api("/v1/labels").then((r) => r.json())]);
    state.sizes = info.indexes;
    const held = ["image", "text"].filter((m) => state.sizes[m]);
    setStatus(held.map((m) => `${state.sizes[m].items.toLocaleString()} ${noun(m, state.sizes[m].items)}`).join(" · ")
              || "no index", "ok");
    offerTargets(held);
    renderEmptyText();
    state.labels = labels.labels.map((l) => l.label);
    renderChips();
    showError("");
    $("key-box").hidden = true;
  } catch (e) {
    showApiError(e);
    setStatus(e.status === 401 ? "needs key" : "error", e.status === 401 ? "wait" : "bad");
  }
}

// "Find photos / tag sets": only what the server holds; with one index, it is said, not asked
function offerTargets(held) {
  for (const m of ["image", "text"]) {
    const radio = document.querySelector(`input[name=target][value=${m}]`);
    radio.disabled = held.length > 0 && !held.includes(m);
    $("find-" + m).hidden = radio.disabled;
  }
  if (held.length && !held.includes(target())) document.querySelector(`input[name=target][value=${held[0]}]`).checked = true;
  $("find").classList.toggle("single", held.length === 1);
  $("find").setAttribute("role", held.length === 1 ? "group" : "radiogroup");
}

function renderEmptyText() {
  const held = ["image", "text"].filter((m) => state.sizes[m]);
  const what = held.map((m) => `${state.sizes[m].items.toLocaleString()} ${noun(m, state.sizes[m].items)}`).join(" and ");
  $("empty-text").textContent = `${narrow.matches ? "Choose or drop a photo above" : "Drop a photo on the left"
    }, or type a few tags like “sky, clouds”, to search ${what || "the index"}.`;
}

function renderChips() {
  const box = $("label-chips");
  box.replaceChildren(...state.labels.map((label) => el("button", {
    class: "chip", type: "button", "aria-pressed": String(state.filter.has(label)),
    onclick: () => { state.filter.has(label) ? state.filter.delete(label) : state.filter.add(label); renderChips(); rerun(); },
  }, label)));
  $("filter-count").textContent = state.filter.size ? `(${state.filter.size})` : "";
}

// ---- searching -------------------------------------------------------------------------------------------
const target = () => document.querySelector("input[name=target]:checked").value;
const k = () => Number($("k").value);

// the same query again (new target, count or filter); the page scrolls to the answer only when it is out of view
function rerun() {
  if (!state.query) return;
  if (state.query.kind === "image") searchImage(state.query.blob, { withTags: false, again: true });
  else searchText(state.query.text, { again: true });
}

function show(which) {  // "empty" (first visit, or after an error), "no-hits", "results" or "loading"
  $("empty").hidden = which !== "empty";
  $("no-hits").hidden = which !== "no-hits";
}

function skeleton() {
  show("loading");
  $("grid").replaceChildren(...Array.from({ length: Math.min(k(), 12) }, () => el("div", { class: "skeleton" })));
}

async function searchText(text, { again = false } = {}) {
  text = text.trim();
  if (!text) return;
  const query = state.query = { kind: "text", text, again, seq: ++state.seq };
  $("tags").hidden = true;
  clearQueryImage();
  skeleton();
  try {
    const res = await api("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, target: target(), k: k(), labels: [...state.filter] }) });
    const data = await res.json();
    if (query.seq !== state.seq) return;  // a newer search has started: its answer counts
    const ignored = data.ignored_tags && data.ignored_tags.length ? ` (ignored, not known: ${data.ignored_tags.join(", ")})` : "";
    render(data, `tags “${data.query || text}”${ignored}`, query);
  } catch (e) { if (query.seq === state.seq) fail(e, query); }
}

async function searchImage(blob, { withTags = true, again = false } = {}) {
  const query = state.query = { kind: "image", blob, again, seq: ++state.seq };
  if (!again) showQueryImage(blob);
  skeleton();
  const form = () => { const f = new FormData(); f.append("image", blob, blob.name || "photo"); return f; };
  const search = form();
  search.append("target", target());
  search.append("k", String(k()));
  if (state.filter.size) search.append("labels", [...state.filter].join(","));
  try {
    const [res, tags] = await Promise.all([
      api("/v1/search", { method: "POST", body: search }).then((r) => r.json()),
      withTags ? api("/v1/tag", { method: "POST", body: form() }).then((r) => r.json()) : null]);
    if (query.seq !== state.seq) return;
    if (tags) renderTags(tags);
    render(res, "this photo", query);
  } catch (e) { if (query.seq === state.seq) fail(e, query); }
}

// a failed search: no results, the first-visit state, the drop zone as it was, and the error in words
function fail(e, query) {
  if (query.kind === "image") {
    clearQueryImage();
    $("tags").hidden = true;
    state.query = null;  // nothing to search again with
  }
  $("grid").replaceChildren();
  $("summary").textContent = "";
  show("empty");
  showApiError(e, query);
  if (!$("error").hidden) reveal($("error"), !query.again);
}

// at one column the results lie below the photo box: scroll them up to the user (under the sticky header)
function reveal(node, always) {
  if (!narrow.matches) return;
  const top = node.getBoundingClientRect().top, header = document.querySelector(".top").offsetHeight;
  if (!always && top >= header && top < window.innerHeight - 40) return;  // already in view
  const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  window.scrollTo({ top: window.scrollY + top - header - 10, behavior: smooth ? "smooth" : "auto" });
}

// ---- rendering ------------------------------------------------------------------------------------------
// the item's labels, those the filter asked for first (so a card shows why it was kept)
function itemLabels(meta) {
  const all = [...new Set([...(meta.labels || []), ...(meta.predicted_labels || [])])];
  return [...all.filter((l) => state.filter.has(l)), ...all.filter((l) => !state.filter.has(l))];
}

function render(data, what, query) {
  showError("");
  state.blobUrls.forEach((u) => URL.revokeObjectURL(u));
  state.blobUrls = [];
  const n = data.results.length;
  const filter = state.filter.size ? ` with label ${[...state.filter].join(" or ")}` : "";
  $("summary").replaceChildren(el("strong", {}, `${n} ${noun(data.target, n)}`), ` for ${what}${filter} · ${Math.round(data.took_ms)} ms`);
  $("grid").replaceChildren(...data.results.map((hit) => card(hit, data.target)));
  if (!n) renderNoHits(data.target, query);
  show(n ? "results" : "no-hits");
  reveal($("summary"), !query.again);
}

function renderNoHits(kind, query) {
  const plural = NOUNS[kind][1], size = state.sizes[kind] ? state.sizes[kind].items : null;
  const other = query.kind === "image" ? "another photo" : "other tags";
  let text;
  if (state.filter.size) {
    const labels = [...state.filter].join(" or ");
    text = `No ${plural} with the label ${labels} were found. Remove the label filter, or choose another label.`;
  } else if (size === 0) {
    text = `The index holds no ${plural} yet: there is nothing to find.`;
  } else {
    text = `Nothing matched. Try ${other}.`;
  }
  $("no-hits-text").textContent = text;
}

function card(hit, kind) {
  const labels = itemLabels(hit.metadata);
  const chips = labels.slice(0, 4).map((l) => el("span", { class: "mini" + (state.filter.has(l) ? " hit" : "") }, l));
  let top;
  if (kind === "image") {
    const img = el("img", { class: "thumb", alt: hit.id, loading: "lazy" });
    top = el("div", { class: "thumb-box" }, img);
    img.addEventListener("error", () => img.replaceWith(el("span", { class: "thumb-missing" }, "photo unavailable")));
    setImage(img, `/v1/items/${encodeURIComponent(hit.id)}/image`);
  } else {
    top = el("div", { class: "text-thumb" }, (hit.metadata.tags || []).join(", ") || hit.metadata.text || hit.id);
  }
  const title = kind === "image" ? "Search with this photo" : "Search with these tags";
  return el("button", { class: "card", type: "button", title, onclick: () => openHit(hit, kind) }, top,
    el("div", { class: "meta" },
      el("div", { class: "meta-top" }, el("span", { class: "item-id" }, hit.id), el("span", { class: "score" }, hit.score.toFixed(3))),
      el("div", { class: "mini-chips" }, ...chips)));
}

async function setImage(img, url) {
  if (!state.key) { img.src = url; return; }
  try {  // an <img> cannot send the Authorization header: fetch it
    const blobUrl = URL.createObjectURL(await (await api(url)).blob());
    state.blobUrls.push(blobUrl);
    img.src = blobUrl;
  } catch (_) { img.replaceWith(el("span", { class: "thumb-missing" }, "photo unavailable")); }
}

async function openHit(hit, kind) {
  if (!narrow.matches) window.scrollTo({ top: 0, behavior: "smooth" });  // one column: the answer is scrolled to
  if (kind === "text") {
    $("text").value = (hit.metadata.tags || []).join(", ") || hit.metadata.text || "";
    return searchText($("text").value);
  }
  try {
    const blob = await (await api(`/v1/items/${encodeURIComponent(hit.id)}/image`)).blob();
    blob.name = hit.id;
    $("text").value = "";
    searchImage(blob);
  } catch (e) { showApiError(e); reveal($("error"), true); }  // the results shown still stand
}

function renderTags(data) {
  $("tags").hidden = false;
  const values = data.scores.flatMap((s) => (s.threshold === null ? [s.score] : [s.score, s.threshold]));
  const lo = Math.min(0, ...values), hi = Math.max(...values, lo + 1e-6);  // one scale for scores and ticks
  const pos = (x) => `${(100 * (x - lo)) / (hi - lo)}%`;
  $("tag-list").replaceChildren(...data.scores.slice(0, 10).map((s) => {
    const fill = el("div", { class: "bar-fill" });
    fill.style.width = pos(s.score);
    const bar = el("div", { class: "bar", title: `threshold ${s.threshold === null ? "none" : s.threshold.toFixed(3)}` }, fill);
    if (s.threshold !== null) { const tick = el("div", { class: "bar-tick" }); tick.style.left = pos(s.threshold); bar.append(tick); }
    return el("li", { class: s.passes ? "pass" : "" }, el("span", {}, s.label), bar, el("span", { class: "num" }, s.score.toFixed(2)));
  }));
}

// the photo being searched with, shown in the drop zone once it has decoded (a file that is no photo never is)
function showQueryImage(blob) {
  clearQueryImage();
  const img = $("query-img");
  img.onload = () => { img.hidden = false; $("drop").classList.add("has-img"); };
  img.onerror = clearQueryImage;
  img.src = URL.createObjectURL(blob);
}

function clearQueryImage() {
  const img = $("query-img");
  img.onload = img.onerror = null;
  if (img.src) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  img.hidden = true;
  $("drop").classList.remove("has-img");
}

// ---- wiring ---------------------------------------------------------------------------------------------
function wire() {
  const drop = $("drop"), file = $("file");
  drop.addEventListener("click", () => file.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); } });
  file.addEventListener("change", () => { if (file.files[0]) { $("text").value = ""; searchImage(file.files[0]); } file.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f && f.type.startsWith("image/")) { $("text").value = ""; searchImage(f); }
    else showError("That isn't a photo. Drop a JPEG, PNG or WebP file.", f ? `dropped ${f.name} (${f.type || "unknown type"})` : "");
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (narrow.matches) $("text").blur();  // a phone's keyboard would cover the results
    searchText($("text").value);
  });
  document.querySelectorAll("input[name=target]").forEach((r) => r.addEventListener("change", rerun));
  $("k").addEventListener("change", rerun);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("key").value.trim();
    sessionStorage.setItem("dagnn-key", state.key);
    loadInfo().then(rerun);
  });
  narrow.addEventListener("change", renderEmptyText);
  renderEmptyText();
}

wire();
waitReady().then(loadInfo);
