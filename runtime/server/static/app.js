// The search page: talks to API v1 only (the same calls any app makes). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("dagnn-key") || "", labels: [], filter: new Set(), query: null,
                blobUrls: [] };

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  const res = await fetch(path, { ...options, headers });
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

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
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
    if (res && body.code === "load_failed") { setStatus("not ready", "bad"); showError(body.message); return; }
    setStatus(res ? "loading model…" : "server unreachable", "wait");
    await new Promise((r) => setTimeout(r, 1000 * Number((res && res.headers.get("Retry-After")) || 1)));
  }
}

async function loadInfo() {
  try {
    const [info, labels] = await Promise.all([api("/v1/info").then((r) => r.json()),
                                              api("/v1/labels").then((r) => r.json())]);
    const sizes = info.indexes;
    const parts = [];
    if (sizes.image) parts.push(`${sizes.image.items.toLocaleString()} photos`);
    if (sizes.text) parts.push(`${sizes.text.items.toLocaleString()} tag sets`);
    setStatus(parts.join(" · ") || "no index", "ok");
    if (!sizes.image) document.querySelector("input[name=target][value=text]").checked = true;
    $("empty-text").textContent = `Drop a photo on the left, or type a few tags like “sky, clouds”, to search ${
      parts.join(" and ") || "the index"}.`;
    state.labels = labels.labels.map((l) => l.label);
    renderChips();
    showError("");
    $("key-box").hidden = true;
  } catch (e) {
    if (e.status !== 401) showError(e.message);
    setStatus(e.status === 401 ? "needs key" : "error", e.status === 401 ? "wait" : "bad");
  }
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

function rerun() { if (state.query) state.query.kind === "image" ? searchImage(state.query.blob, false) : searchText(state.query.text); }

function skeleton() {
  $("empty").hidden = true;
  $("grid").replaceChildren(...Array.from({ length: Math.min(k(), 12) }, () => el("div", { class: "skeleton" })));
}

async function searchText(text) {
  text = text.trim();
  if (!text) return;
  state.query = { kind: "text", text };
  $("tags").hidden = true;
  clearQueryImage();
  skeleton();
  try {
    const res = await api("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, target: target(), k: k(), labels: [...state.filter] }) });
    const data = await res.json();
    const ignored = data.ignored_tags && data.ignored_tags.length ? ` (ignored, not known: ${data.ignored_tags.join(", ")})` : "";
    render(data, `tags “${data.query || text}”${ignored}`);
  } catch (e) { fail(e); }
}

async function searchImage(blob, withTags = true) {
  state.query = { kind: "image", blob };
  showQueryImage(blob);
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
    if (tags) renderTags(tags);
    render(res, "this photo");
  } catch (e) { fail(e); }
}

function fail(e) {
  $("grid").replaceChildren();
  $("summary").textContent = "";
  $("empty").hidden = false;
  showError(e.status === 401 ? "" : e.message);
}

// ---- rendering ------------------------------------------------------------------------------------------
function itemLabels(meta) { return [...new Set([...(meta.labels || []), ...(meta.predicted_labels || [])])]; }

function render(data, what) {
  showError("");
  state.blobUrls.forEach((u) => URL.revokeObjectURL(u));
  state.blobUrls = [];
  const n = data.results.length;
  const noun = data.target === "image" ? (n === 1 ? "photo" : "photos") : (n === 1 ? "tag set" : "tag sets");
  const filter = state.filter.size ? ` with label ${[...state.filter].join(" or ")}` : "";
  $("summary").replaceChildren(el("strong", {}, `${n} ${noun}`), ` for ${what}${filter} · ${Math.round(data.took_ms)} ms`);
  $("empty").hidden = n > 0;
  if (!n) $("empty-text").textContent = "Nothing matched. Try other tags, or remove the label filter.";
  $("grid").replaceChildren(...data.results.map((hit) => card(hit, data.target)));
}

function card(hit, kind) {
  const labels = itemLabels(hit.metadata);
  const chips = labels.slice(0, 4).map((l) => el("span", { class: "mini" + (state.filter.has(l) ? " hit" : "") }, l));
  let top;
  if (kind === "image") {
    top = el("img", { class: "thumb", alt: hit.id, loading: "lazy" });
    setImage(top, `/v1/items/${encodeURIComponent(hit.id)}/image`);
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
  } catch (_) { img.alt = "image unavailable"; }
}

async function openHit(hit, kind) {
  window.scrollTo({ top: 0, behavior: "smooth" });
  if (kind === "text") {
    $("text").value = (hit.metadata.tags || []).join(", ") || hit.metadata.text || "";
    return searchText($("text").value);
  }
  try {
    const blob = await (await api(`/v1/items/${encodeURIComponent(hit.id)}/image`)).blob();
    blob.name = hit.id;
    $("text").value = "";
    searchImage(blob);
  } catch (e) { fail(e); }
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

function showQueryImage(blob) {
  const img = $("query-img");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
  $("drop").classList.add("has-img");
}

function clearQueryImage() {
  const img = $("query-img");
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
    else showError("Drop an image file (JPEG, PNG, WebP…).");
  });
  $("text-form").addEventListener("submit", (e) => { e.preventDefault(); searchText($("text").value); });
  document.querySelectorAll("input[name=target]").forEach((r) => r.addEventListener("change", rerun));
  $("k").addEventListener("change", rerun);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("key").value.trim();
    sessionStorage.setItem("dagnn-key", state.key);
    loadInfo().then(rerun);
  });
}

wire();
waitReady().then(loadInfo);
