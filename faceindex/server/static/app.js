// faceindex web page: a thin client over the /v1 API. No framework, no build step, no external resources.
// The API key lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer <key>`.

const KEY_STORE = "faceindex.key";
const PAGES = [
  { id: "search", perm: "search" },
  { id: "people", perm: "people" },
  { id: "audit", perm: "audit" },
  { id: "privacy", perm: "privacy" },
];

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  me: null, // {name, role, key_id, permissions}
  page: null,
  loaded: new Set(), // pages loaded since sign-in
  why: null, // {purpose, case} of the last search or privacy request: audited reads of faces carry them
};

// --- small DOM helper -----------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// --- formatting -------------------------------------------------------------------------------------------------
function sig2(n) {
  if (n >= 100) {
    const p = 10 ** (Math.floor(Math.log10(n)) - 1);
    return Math.round(n / p) * p;
  }
  return Math.round(n);
}

/** "1 in 12,000" for a false-match rate. */
export function oneIn(fmr) {
  if (!(fmr > 0)) return "below the table's resolution";
  if (fmr >= 0.5) return "1 in 2 or more";
  return `1 in ${sig2(1 / fmr).toLocaleString("en-US")}`;
}

function fmtExpected(x) {
  if (x === 0) return "0";
  if (x < 0.001) return "< 0.001";
  if (x < 1) return x.toPrecision(2).replace(/0+$/, "").replace(/\.$/, "");
  if (x < 10) return x.toFixed(1);
  return Math.round(x).toLocaleString("en-US");
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

/** A file name that may wrap after _ - . on narrow screens instead of in the middle of a word. */
function fileName(name) {
  const parts = String(name).split(/(?<=[_.\-])/);
  return parts.flatMap((p, i) => (i ? [h("wbr"), p] : [p]));
}

function labelClass(label) {
  if (label === "strong candidate") return "lbl-strong";
  if (label === "possible candidate") return "lbl-possible";
  return "lbl-weak";
}

// --- status and errors ------------------------------------------------------------------------------------------
let statusTimer = 0;
function status(text, { sticky = false } = {}) {
  const el = $("#status");
  clearTimeout(statusTimer);
  el.textContent = text || "";
  el.classList.toggle("show", !!text);
  if (text && !sticky) statusTimer = setTimeout(() => status(""), 4000);
}

function showError(el, err) {
  el = el || $("#global-error");
  if (!err) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.textContent = typeof err === "string" ? err : err.message || "Something went wrong.";
  el.hidden = false;
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// --- the API ------------------------------------------------------------------------------------------------------
// Reads that reveal faces (people, face crops, photos) are recorded in the audit trail with a purpose and a case:
// those of the last search or privacy request, else what the search form holds.
const AUDITED_READ = /^v1\/(people(\/|\?|$)|faces\/\d+\/(crop|image))/;

function withWhy(path) {
  if (!AUDITED_READ.test(path)) return path;
  const purpose = state.why?.purpose || $("#purpose")?.value.trim();
  const caseRef = state.why?.case || $("#case")?.value.trim();
  if (!purpose || !caseRef) {
    throw new ApiError(0, "why", "Give a purpose and a case reference on the Search page first: " +
      "viewing people and faces is recorded in the audit trail.");
  }
  const sep = path.includes("?") ? "&" : "?";
  return `${path}${sep}purpose=${encodeURIComponent(purpose)}&case=${encodeURIComponent(caseRef)}`;
}

async function rawFetch(path, { method = "GET", body = null, json = undefined, key = state.key } = {}) {
  path = withWhy(path);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: "omit", cache: "no-store" });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the faceindex server. Check that it is running.");
  }
  if (res.ok) return res;
  let code = "http_error";
  let message = `${res.status} ${res.statusText}`;
  try {
    const data = await res.json();
    if (data && data.error) {
      code = data.error.code || code;
      message = data.error.message || message;
    }
  } catch {
    /* not JSON: keep the status line */
  }
  const retry = res.headers.get("Retry-After");
  const retryAfter = retry && /^\d+$/.test(retry) ? Number(retry) : null;
  if (res.status === 429) {
    message = `Slow down — too many requests for this key. Retry in ${retryAfter ?? "a few"} s.`;
  }
  throw new ApiError(res.status, code, message, retryAfter);
}

/** Call the API; JSON back (null for 204). A 401 signs out and returns to the sign-in page. */
async function api(path, opts = {}) {
  try {
    const res = await rawFetch(path, opts);
    if (res.status === 204) return null;
    const type = res.headers.get("content-type") || "";
    return type.includes("json") ? res.json() : res.blob();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && !opts.noSignout) {
      signOut(`Signed out: ${e.message}. Sign in again.`);
    }
    if (e instanceof ApiError && e.status === 429) status(e.message, { sticky: true });
    throw e;
  }
}

// --- authenticated images: <img> cannot send headers, so fetch them and hand out blob URLs -----------------------
const blobCache = new Map(); // url -> Promise<objectURL>
const queue = [];
let active = 0;
const MAX_ACTIVE = 4;

function pump() {
  while (active < MAX_ACTIVE && queue.length) {
    const job = queue.shift();
    active++;
    job().finally(() => {
      active--;
      pump();
    });
  }
}

function authedImage(url) {
  if (blobCache.has(url)) return blobCache.get(url);
  const p = new Promise((resolve, reject) => {
    const run = async (attempt) => {
      try {
        const res = await rawFetch(url);
        resolve(URL.createObjectURL(await res.blob()));
      } catch (e) {
        if (e.status === 429 && attempt < 3) {
          status(e.message, { sticky: true });
          setTimeout(() => {
            queue.push(() => run(attempt + 1));
            pump();
          }, 1000 * (e.retryAfter || 2));
          return;
        }
        if (e.status === 401) signOut(`Signed out: ${e.message}. Sign in again.`);
        blobCache.delete(url);
        reject(e);
      }
    };
    queue.push(() => run(0));
    pump();
  });
  blobCache.set(url, p);
  return p;
}

function clearImages() {
  for (const p of blobCache.values()) p.then((u) => URL.revokeObjectURL(u)).catch(() => {});
  blobCache.clear();
  queue.length = 0;
}

/** An <img> that fills in from an authenticated URL, with a placeholder until then. */
function authedImg(url, alt, cls = "crop") {
  const img = h("img", { class: `${cls} loading`, alt, decoding: "async", width: 160, height: 160 });
  authedImage(url)
    .then((u) => {
      img.src = u;
      img.classList.remove("loading");
    })
    .catch(() => {
      img.classList.remove("loading");
      img.classList.add("broken");
      img.alt = `${alt} (could not be loaded)`;
    });
  return img;
}

const cropUrl = (faceId, size = 160) => `v1/faces/${faceId}/crop?size=${size}`;

// --- dialogs ------------------------------------------------------------------------------------------------------
/** A modal confirmation step; resolves true when confirmed. */
function confirmStep({ title, body, ok = "Confirm", danger = false }) {
  const dlg = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  const b = $("#confirm-body");
  b.replaceChildren(...(Array.isArray(body) ? body : [body]).map((x) => (x instanceof Node ? x : h("p", {}, x))));
  const okBtn = $("#confirm-ok");
  okBtn.textContent = ok;
  okBtn.className = `btn ${danger ? "btn-danger" : "btn-primary"}`;
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.showModal();
    $("#confirm-cancel").focus();
  });
}

async function showFaceImage(faceId, title, caption = "") {
  const dlg = $("#image-dialog");
  const img = $("#image-full");
  $("#image-title").textContent = title;
  $("#image-caption").textContent = caption;
  img.removeAttribute("src");
  img.alt = `${title}, with the face outlined`;
  img.classList.add("loading");
  dlg.showModal();
  try {
    img.src = await authedImage(`v1/faces/${faceId}/image`);
  } catch (e) {
    $("#image-caption").textContent = `Could not load the image: ${e.message}`;
  } finally {
    img.classList.remove("loading");
  }
}

// --- sign in / out, navigation ---------------------------------------------------------------------------------------
function allowedPages() {
  const perms = new Set(state.me?.permissions || []);
  return PAGES.filter((p) => perms.has(p.perm)).map((p) => p.id);
}

function showPage(id) {
  for (const s of $$(".page")) s.hidden = s.id !== `page-${id}`;
  for (const a of $$("#nav a")) {
    if (a.dataset.page === id) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  state.page = id;
  document.title = `${id === "signin" ? "Sign in" : id[0].toUpperCase() + id.slice(1)} · faceindex`;
}

function route() {
  if (!state.me) {
    showPage("signin");
    return;
  }
  const allowed = allowedPages();
  if (!allowed.length) {
    $("#none-role").textContent = state.me.role;
    showPage("none");
    return;
  }
  let id = location.hash.replace(/^#\/?/, "");
  if (!allowed.includes(id)) {
    id = allowed[0];
    history.replaceState(null, "", `#${id}`);
  }
  if (id !== state.page) status("");
  showPage(id);
  showError(null);
  if (!state.loaded.has(id)) {
    state.loaded.add(id);
    ({ people: loadPeople, audit: loadAudit, privacy: loadOptouts })[id]?.();
  }
}

function renderWho() {
  const me = state.me;
  $("#nav").hidden = !me;
  $("#who").hidden = !me;
  if (!me) return;
  const perms = new Set(me.permissions);
  for (const a of $$("#nav a")) a.hidden = !perms.has(a.dataset.perm);
  $("#who-name").textContent = me.name;
  $("#who-role").textContent = me.role;
}

async function signIn(key) {
  const me = await api("v1/me", { key, noSignout: true });
  state.key = key;
  state.me = me;
  sessionStorage.setItem(KEY_STORE, key);
  renderWho();
}

function resetPages() {
  resetSearch(true);
  $("#people-grid").replaceChildren();
  $("#person-view").hidden = true;
  $("#people-list-view").hidden = false;
  $("#audit-rows").replaceChildren();
  $("#verify-pill").textContent = "Not checked";
  $("#verify-pill").className = "pill";
  $("#verify-text").textContent = "";
  for (const id of ["access-out", "optout-out", "erase-out"]) $(`#${id}`).replaceChildren();
  $("#optout-rows").replaceChildren();
  for (const f of $$(".privacy-form")) {
    f.reset();
    $(".thumbs", f).replaceChildren();
  }
  for (const el of $$(".alert")) showError(el, null);
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORE);
  state.key = "";
  state.me = null;
  state.loaded.clear();
  state.why = null;
  clearImages();
  resetPages();
  renderWho();
  showPage("signin");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  showError($("#signin-error"), message || null);
  const input = $("#api-key");
  input.value = "";
  input.focus();
}

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("#api-key").value.trim();
  const err = $("#signin-error");
  if (!key) {
    showError(err, "Enter your API key.");
    $("#api-key").focus();
    return;
  }
  const btn = $("#signin-submit");
  btn.disabled = true;
  btn.textContent = "Signing in…";
  showError(err, null);
  try {
    await signIn(key);
    for (const el of $$(".alert")) showError(el, null); // errors left behind by a previous session
    $("#api-key").value = "";
    status(`Signed in as ${state.me.name} (${state.me.role}).`);
    route();
    $("#main").focus();
  } catch (e) {
    showError(err, e.status === 401 ? `That key was not accepted: ${e.message}.` : e.message);
    $("#api-key").select();
  } finally {
    btn.disabled = false;
    btn.textContent = "Sign in";
  }
});

$("#signout").addEventListener("click", () => {
  signOut();
  status("Signed out.");
});

window.addEventListener("hashchange", route);

// --- search ---------------------------------------------------------------------------------------------------------
const search = { file: null, url: null, faces: [], selected: null, token: 0 };

function resetSearch(all = false) {
  if (search.url) URL.revokeObjectURL(search.url);
  Object.assign(search, { file: null, url: null, faces: [], selected: null, token: search.token + 1 });
  $("#probe-file").value = "";
  $("#probe-view").hidden = true;
  $("#probe-noface").hidden = true;
  $("#dropzone").hidden = false;
  $("#face-boxes").replaceChildren();
  $("#search-submit").disabled = true;
  showError($("#search-error"), null);
  if (all) {
    $("#search-form").reset();
    clearResults();
  }
}

function clearResults() {
  $("#results").replaceChildren();
  $("#results-empty").hidden = false;
}

async function setProbe(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError($("#search-error"), `${file.name} is not an image.`);
    return;
  }
  resetSearch();
  clearResults(); // results of another probe would be misleading next to this one
  const token = search.token;
  search.file = file;
  search.url = URL.createObjectURL(file);
  const img = $("#probe-img");
  img.src = search.url;
  $("#probe-name").textContent = file.name;
  $("#probe-faces").textContent = "finding faces…";
  $("#dropzone").hidden = true;
  $("#probe-view").hidden = false;
  $("#probe-stage").classList.add("busy");
  status("Finding faces in the probe photo…", { sticky: true });
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const faces = await api("v1/detect", { method: "POST", body: form });
    if (token !== search.token) return;
    search.faces = faces;
    renderFaceBoxes();
    if (!faces.length) {
      $("#probe-faces").textContent = "no faces";
      $("#probe-noface").hidden = false;
      status("No faces found in this photo.");
    } else {
      // the largest face is the usual subject; the user can pick another
      const largest = faces.reduce((a, b) => (area(b.box) > area(a.box) ? b : a));
      selectFace(largest.index, false);
      $("#probe-faces").textContent = faces.length === 1 ? "1 face" : `${faces.length} faces — choose one`;
      status(faces.length === 1 ? "1 face found." : `${faces.length} faces found; the largest is selected.`);
    }
  } catch (e) {
    if (token !== search.token) return;
    $("#probe-faces").textContent = "could not read faces";
    showError($("#search-error"), e);
    status("");
  } finally {
    $("#probe-stage").classList.remove("busy");
  }
}

const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);

function renderFaceBoxes() {
  const img = $("#probe-img");
  const draw = () => {
    const W = img.naturalWidth;
    const H = img.naturalHeight;
    const layer = $("#face-boxes");
    layer.replaceChildren();
    if (!W || !H) return;
    search.faces.forEach((f, i) => {
      const [x1, y1, x2, y2] = f.box;
      // percentages of the natural size: the boxes follow the image at any displayed size
      const btn = h("button", {
        type: "button",
        class: "face-box",
        "aria-pressed": String(f.index === search.selected),
        "aria-label": `Face ${i + 1} of ${search.faces.length}`,
        title: `Face ${i + 1}`,
        dataset: { index: f.index },
        style: {
          left: `${(100 * Math.max(0, x1)) / W}%`,
          top: `${(100 * Math.max(0, y1)) / H}%`,
          width: `${(100 * (Math.min(W, x2) - Math.max(0, x1))) / W}%`,
          height: `${(100 * (Math.min(H, y2) - Math.max(0, y1))) / H}%`,
        },
        onclick: () => selectFace(f.index, true),
      }, h("span", { class: "face-num", "aria-hidden": "true" }, String(i + 1)));
      layer.append(btn);
    });
  };
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener("load", draw, { once: true });
}

function selectFace(index, announce) {
  search.selected = index;
  for (const b of $$("#face-boxes .face-box")) b.setAttribute("aria-pressed", String(Number(b.dataset.index) === index));
  $("#search-submit").disabled = false;
  if (announce) {
    const n = search.faces.findIndex((f) => f.index === index) + 1;
    status(`Face ${n} selected.`);
  }
}

const dz = $("#dropzone");
$("#probe-file").addEventListener("change", (e) => setProbe(e.target.files[0]));
$("#probe-change").addEventListener("click", () => $("#probe-file").click());
for (const t of ["dragenter", "dragover"]) {
  dz.addEventListener(t, (e) => {
    e.preventDefault();
    dz.classList.add("over");
  });
}
for (const t of ["dragleave", "drop"]) dz.addEventListener(t, () => dz.classList.remove("over"));
dz.addEventListener("drop", (e) => {
  e.preventDefault();
  const f = e.dataTransfer?.files?.[0];
  if (f) setProbe(f);
});
// a photo dropped anywhere on the search page is taken as the probe (instead of the browser opening it)
for (const t of ["dragover", "drop"]) {
  document.addEventListener(t, (e) => {
    if (state.page !== "search" || !e.dataTransfer?.types?.includes("Files")) return;
    e.preventDefault();
    if (t === "drop" && e.dataTransfer.files[0]) setProbe(e.dataTransfer.files[0]);
  });
}

$("#search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = $("#search-error");
  showError(err, null);
  const purpose = $("#purpose").value.trim();
  const caseRef = $("#case").value.trim();
  const top = Math.min(200, Math.max(1, Number($("#top").value) || 10));
  if (!search.file) return showError(err, "Choose a probe photo first.");
  if (search.selected === null) return showError(err, "Choose a face in the photo first.");
  if (!purpose) {
    $("#purpose").focus();
    return showError(err, "Give the purpose of this search.");
  }
  if (!caseRef || !$("#case").checkValidity()) {
    $("#case").focus();
    return showError(err, "Give a case reference: 1–100 letters, digits and - _ . :");
  }
  state.why = { purpose, case: caseRef };
  const form = new FormData();
  form.append("probe", search.file, search.file.name);
  form.append("purpose", purpose);
  form.append("case", caseRef);
  form.append("top", String(top));
  form.append("face", String(search.selected));
  const btn = $("#search-submit");
  btn.disabled = true;
  btn.textContent = "Searching…";
  $("#results-empty").hidden = true;
  $("#results").replaceChildren(h("div", { class: "card empty searching" }, h("p", {}, h("strong", {}, "Searching…"),
    " Comparing the face with every face in the gallery.")));
  $("#results").setAttribute("aria-busy", "true");
  status("Searching…", { sticky: true });
  try {
    const out = await api("v1/search", { method: "POST", body: form });
    renderResults(out);
    const n = out.results.reduce((s, r) => s + r.candidates.length, 0);
    status(`${n} candidate lead${n === 1 ? "" : "s"} found for case ${out.case}.`);
  } catch (e) {
    clearResults();
    showError(err, e);
    status("");
  } finally {
    btn.disabled = false;
    btn.textContent = "Search";
    $("#results").setAttribute("aria-busy", "false");
  }
});

function confirmationBadge(c) {
  if (c.confirmation === "confirmed") {
    return h("span", { class: "badge badge-ok", title: `Confirmed by ${c.confirmed_by.join(" and ")}` }, "✓ confirmed");
  }
  if (c.confirmed_by && c.confirmed_by.length) {
    return h("span", { class: "badge badge-wait", title: `Confirmed by ${c.confirmed_by.join(", ")}` }, c.confirmation);
  }
  return h("span", { class: "badge badge-none" }, "not confirmed");
}

function renderResults(out) {
  const root = $("#results");
  $("#results-empty").hidden = true;
  root.replaceChildren();
  const head = h("div", { class: "results-head" },
    h("h2", { tabindex: "-1", id: "results-title" }, "Candidate leads"),
    h("p", { class: "muted small" }, `Purpose `, h("strong", {}, out.purpose), ` · case `, h("strong", {}, out.case),
      ` · model `, h("strong", { id: "results-model", title: "The model pack that made the embeddings" }, out.model)),
  );
  root.append(head);
  for (const r of out.results) {
    const meta = h("div", { class: "probe-summary card" },
      h("div", { class: "summary-item" }, h("span", { class: "summary-k" }, "Gallery"),
        h("span", { class: "summary-v" }, `${r.gallery_size.toLocaleString("en-US")} faces`)),
      h("div", {
        class: "summary-item",
        title: "How many different people are expected to reach the 'possible candidate' bar in this gallery by "
          + "chance: that bar's false-match rate × gallery size.",
      }, h("span", { class: "summary-k" }, "Expected false candidates at the possible bar"),
        h("span", { class: "summary-v" }, fmtExpected(r.expected_false_candidates))),
      h("div", { class: "summary-item" }, h("span", { class: "summary-k" }, "Probe quality"),
        h("span", { class: "summary-v" }, qualityText(r.face.quality))),
    );
    root.append(meta);
    if (!r.candidates.length) {
      root.append(h("div", { class: "card empty" }, h("p", {}, h("strong", {}, "No candidates."),
        " Nothing in the gallery is similar enough to list.")));
      continue;
    }
    const list = h("ol", { class: "cand-list", "aria-label": "Candidates, most similar first" });
    for (const c of r.candidates) list.append(candidateCard(c, out.case));
    root.append(list);
  }
  $("#results-title")?.focus({ preventScroll: true });
}

function qualityText(q) {
  if (!q) return "—";
  const parts = [];
  if (typeof q.score === "number") parts.push(q.score.toFixed(2));
  if (typeof q.size === "number") parts.push(`${Math.round(q.size)} px face`);
  return parts.join(" · ") || "—";
}

function candidateCard(c, caseRef) {
  // the bar shows how rare the score is among different people (calibrated, the same for every model pack):
  // FMR 1 -> empty, 1 in 100 million -> full; raw similarities are on each model's own scale
  const pct = Math.max(0, Math.min(1, -Math.log10(Math.max(c.fmr, 1e-9)) / 8)) * 100;
  const file = baseName(c.path);
  const badgeSlot = h("span", { class: "badge-slot" }, confirmationBadge(c));
  const confirmBtn = h("button", { type: "button", class: "btn btn-small" }, "Confirm");
  const setConfirmState = (cc) => {
    badgeSlot.replaceChildren(confirmationBadge(cc));
    const byMe = (cc.confirmed_by || []).includes(state.me?.actor);
    if (cc.confirmation === "confirmed") {
      confirmBtn.disabled = true;
      confirmBtn.textContent = "Confirmed";
    } else if (byMe) {
      confirmBtn.disabled = true;
      confirmBtn.textContent = "You confirmed";
    }
  };
  setConfirmState({ ...c, confirmed_by: c.confirmed_by || [] });
  confirmBtn.addEventListener("click", async () => {
    const ok = await confirmStep({
      title: `Confirm candidate #${c.rank} for case ${caseRef}?`,
      body: [
        `You are confirming that ${file} shows the person in the probe photo, for case ${caseRef}.`,
        "It counts as confirmed only after a second, different investigator confirms it too. Your confirmation is audited.",
      ],
      ok: "Confirm candidate",
    });
    if (!ok) return;
    confirmBtn.disabled = true;
    try {
      const res = await api("v1/confirmations", { method: "POST", json: { case: caseRef, face_id: c.face_id } });
      const cc = { confirmation: res.status, confirmed_by: res.confirmed_by };
      setConfirmState(cc);
      status(res.status === "confirmed" ? `Candidate #${c.rank} confirmed.` : `Candidate #${c.rank}: ${res.status}.`);
    } catch (e) {
      confirmBtn.disabled = false;
      showError($("#search-error"), e);
      status(`Could not confirm: ${e.message}`);
    }
  });
  const person = c.person_name ? c.person_name : c.person_id != null ? `person #${c.person_id}` : null;
  return h("li", { class: "cand", dataset: { faceId: c.face_id } },
    h("div", { class: "cand-media" },
      authedImg(cropUrl(c.face_id), `Face crop of candidate ${c.rank}, ${file}`),
      h("span", { class: "rank", "aria-hidden": "true" }, `#${c.rank}`),
    ),
    h("div", { class: "cand-body" },
      h("div", { class: "cand-top" },
        h("span", { class: `label ${labelClass(c.label)}` }, c.label),
        badgeSlot,
      ),
      h("h3", { class: "cand-file", title: c.path }, h("span", { class: "visually-hidden" }, `Candidate ${c.rank}: `), fileName(file)),
      h("p", { class: "cand-meta" }, `source ${c.source}`, person ? ` · ${person}` : ""),
      h("div", { class: "simbar" },
        h("div", {
          class: `simbar-track ${labelClass(c.label)}`, role: "meter", "aria-valuemin": "0", "aria-valuemax": "1",
          "aria-valuenow": String(c.similarity), "aria-label": "Similarity",
          title: "Similarity; the bar shows its false-match rate (empty: 1 in 1, full: 1 in 100 million)",
        }, h("div", { class: "simbar-fill", style: { width: `${pct.toFixed(1)}%` } })),
        h("span", { class: "simbar-val" }, c.similarity.toFixed(3)),
      ),
      h("dl", { class: "cand-stats" },
        h("div", {}, h("dt", {}, "False-match rate"), h("dd", { title: String(c.fmr) }, oneIn(c.fmr))),
        h("div", { title: "False-match rate at this score × gallery size" }, h("dt", {}, "Expected false candidates"),
          h("dd", {}, fmtExpected(c.expected_false))),
      ),
      h("div", { class: "cand-actions" },
        h("button", {
          type: "button", class: "btn btn-small btn-quiet",
          onclick: () => showFaceImage(c.face_id, file, `Candidate #${c.rank} · similarity ${c.similarity.toFixed(3)} · ${oneIn(c.fmr)} · source ${c.source}`),
        }, "View in photo"),
        confirmBtn,
      ),
    ),
  );
}

// --- people ------------------------------------------------------------------------------------------------------------
const people = { selected: new Set(), current: null, split: new Set(), observer: null };

async function loadPeople() {
  const err = $("#people-error");
  showError(err, null);
  const min = $("#people-singletons").checked ? 1 : 2;
  const sort = $("#people-sort").value === "weakest" ? "weakest" : "size";
  $("#people-count").textContent = "Loading…";
  try {
    const list = await api(`v1/people?min_faces=${min}&limit=200&sort=${sort}`);
    renderPeople(list);
  } catch (e) {
    $("#people-count").textContent = "";
    showError(err, e);
  }
}

function renderPeople(list) {
  people.selected.clear();
  updateMerge();
  people.observer?.disconnect();
  const grid = $("#people-grid");
  grid.replaceChildren();
  $("#people-empty").hidden = list.length > 0;
  $("#people-count").textContent = list.length ? `${list.length} ${list.length === 1 ? "person" : "people"}` : "";
  people.observer = new IntersectionObserver((entries) => {
    for (const en of entries) {
      if (!en.isIntersecting) continue;
      people.observer.unobserve(en.target);
      fillMosaic(en.target);
    }
  }, { rootMargin: "200px" });
  for (const p of list) {
    const title = p.name || `Unnamed person #${p.id}`;
    const mosaic = h("div", { class: "mosaic", dataset: { person: p.id }, "aria-hidden": "true" });
    const cb = h("input", { type: "checkbox", id: `sel-${p.id}`, value: p.id });
    cb.addEventListener("change", () => {
      if (cb.checked) people.selected.add(p.id);
      else people.selected.delete(p.id);
      card.classList.toggle("selected", cb.checked);
      updateMerge();
    });
    const card = h("li", { class: "person-card", dataset: { person: p.id } },
      h("button", { type: "button", class: "person-open", onclick: () => openPerson(p.id) },
        mosaic,
        h("span", { class: "person-name" }, title),
        h("span", { class: "person-meta muted small" },
          `${p.faces} face${p.faces === 1 ? "" : "s"} · ${p.images} photo${p.images === 1 ? "" : "s"}`),
        cohesionLine(p),
      ),
      h("label", { class: "check person-select", for: `sel-${p.id}` }, cb, "Select to merge",
        h("span", { class: "visually-hidden" }, ` ${title}`)),
    );
    grid.append(card);
    people.observer.observe(mosaic);
  }
}

// How sure the grouping is: the weakest merge that formed the group, as a false-match rate.
export function cohesionText(p) {
  if (p.cohesion_fmr == null) return "";
  return `weakest link ${oneIn(p.cohesion_fmr)} between strangers (similarity ${p.cohesion.toFixed(3)})`;
}

function cohesionLine(p) {
  const text = cohesionText(p);
  return text ? h("span", { class: "person-cohesion muted small", title: "Groups with the weakest links are the "
    + "most likely to mix two people: check them first (sort: weakest first)." }, text) : "";
}

async function fillMosaic(mosaic) {
  const id = mosaic.dataset.person;
  try {
    const d = await api(`v1/people/${id}`);
    const faces = d.face_list.slice(0, 4);
    mosaic.classList.add(`n${faces.length}`);
    mosaic.replaceChildren(...faces.map((f) => authedImg(cropUrl(f.face_id, 128), "", "tile")));
  } catch {
    mosaic.classList.add("broken");
  }
}

function updateMerge() {
  const n = people.selected.size;
  const btn = $("#merge-btn");
  btn.disabled = n < 2;
  btn.textContent = n >= 2 ? `Merge ${n} selected` : "Merge selected";
}

async function runClustering() {
  const err = $("#people-error");
  showError(err, null);
  for (const b of [$("#cluster-btn"), $("#cluster-btn-empty")]) b.disabled = true;
  status("Clustering faces into people…", { sticky: true });
  try {
    const list = await api("v1/people/cluster", { method: "POST" });
    await loadPeople();
    const many = list.filter((p) => p.faces > 1).length;
    status(`Clustering done: ${list.length} ${list.length === 1 ? "person" : "people"}, ${many} with two or more faces.`);
  } catch (e) {
    showError(err, e);
    status("");
  } finally {
    for (const b of [$("#cluster-btn"), $("#cluster-btn-empty")]) b.disabled = false;
  }
}

$("#cluster-btn").addEventListener("click", runClustering);
$("#cluster-btn-empty").addEventListener("click", runClustering);
$("#people-singletons").addEventListener("change", loadPeople);
$("#people-sort").addEventListener("change", loadPeople);

$("#merge-btn").addEventListener("click", async () => {
  const ids = [...people.selected];
  if (ids.length < 2) return;
  const ok = await confirmStep({
    title: `Merge ${ids.length} people?`,
    body: [`People ${ids.map((i) => `#${i}`).join(", ")} become one person (#${ids[0]}, whose name is kept).`,
      "You can split faces off again later. The merge is audited."],
    ok: "Merge",
  });
  if (!ok) return;
  try {
    const p = await api("v1/people/merge", { method: "POST", json: { person_ids: ids } });
    status(`Merged into ${p.name || `person #${p.id}`} (${p.faces} faces).`);
    await loadPeople();
  } catch (e) {
    showError($("#people-error"), e);
  }
});

async function openPerson(id) {
  const err = $("#people-error");
  showError(err, null);
  try {
    const d = await api(`v1/people/${id}`);
    people.current = d;
    people.split.clear();
    renderPerson(d);
    $("#people-list-view").hidden = true;
    $("#people-toolbar").hidden = true;
    $("#person-view").hidden = false;
    $("#person-title").focus();
  } catch (e) {
    showError(err, e);
  }
}

function renderPerson(d) {
  $("#person-title").textContent = d.name || `Unnamed person #${d.id}`;
  $("#person-meta").textContent = `Person #${d.id} · ${d.faces} face${d.faces === 1 ? "" : "s"} in ${d.images} photo${d.images === 1 ? "" : "s"}` + (cohesionText(d) ? ` · ${cohesionText(d)}` : "");
  $("#person-name").value = d.name || "";
  const grid = $("#person-faces");
  grid.replaceChildren();
  for (const f of d.face_list) {
    const file = baseName(f.path);
    const toggle = h("button", {
      type: "button", class: "face-toggle", "aria-pressed": "false",
      "aria-label": `Select ${file} to split off`,
    }, authedImg(cropUrl(f.face_id), "", "tile"), h("span", { class: "tick", "aria-hidden": "true" }, "✓"));
    toggle.addEventListener("click", () => {
      const on = !people.split.has(f.face_id);
      if (on) people.split.add(f.face_id);
      else people.split.delete(f.face_id);
      toggle.setAttribute("aria-pressed", String(on));
      updateSplit();
    });
    grid.append(h("li", { class: "face-tile" }, toggle,
      h("span", { class: "face-file", title: f.path }, fileName(file)),
      h("span", { class: "muted small" }, `${f.source} · q ${f.quality.toFixed(2)}`),
      h("button", { type: "button", class: "btn btn-link small",
        onclick: () => showFaceImage(f.face_id, file, `Person #${d.id} · source ${f.source}`) }, "View in photo"),
    ));
  }
  updateSplit();
}

function updateSplit() {
  const n = people.split.size;
  const total = people.current?.face_list.length || 0;
  const btn = $("#split-btn");
  btn.disabled = n === 0 || n >= total;
  btn.textContent = n ? `Split ${n} selected into new person` : "Split selected into new person";
}

$("#person-back").addEventListener("click", () => {
  $("#person-view").hidden = true;
  $("#people-list-view").hidden = false;
  $("#people-toolbar").hidden = false;
  loadPeople();
});

$("#rename-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const d = people.current;
  const name = $("#person-name").value.trim();
  if (!d) return;
  if (!name) return showError($("#people-error"), "A name must not be empty.");
  try {
    const p = await api(`v1/people/${d.id}/name`, { method: "PUT", json: { name } });
    d.name = p.name;
    $("#person-title").textContent = p.name || `Unnamed person #${p.id}`;
    showError($("#people-error"), null);
    status(`Person #${p.id} is now named ${p.name}.`);
  } catch (e) {
    showError($("#people-error"), e);
  }
});

$("#split-btn").addEventListener("click", async () => {
  const d = people.current;
  const ids = [...people.split];
  if (!d || !ids.length) return;
  const ok = await confirmStep({
    title: `Split ${ids.length} face${ids.length === 1 ? "" : "s"} off?`,
    body: `The selected face${ids.length === 1 ? "" : "s"} move${ids.length === 1 ? "s" : ""} from person #${d.id} into a new person. The split is audited.`,
    ok: "Split",
  });
  if (!ok) return;
  try {
    const p = await api(`v1/people/${d.id}/split`, { method: "POST", json: { face_ids: ids } });
    status(`Split into new person #${p.id} (${p.faces} face${p.faces === 1 ? "" : "s"}).`);
    await openPerson(d.id);
  } catch (e) {
    showError($("#people-error"), e);
  }
});

// --- audit --------------------------------------------------------------------------------------------------------------
async function loadAudit() {
  verifyAudit();
  await queryAudit();
}

async function verifyAudit() {
  const pill = $("#verify-pill");
  const text = $("#verify-text");
  pill.className = "pill";
  pill.textContent = "Checking…";
  text.textContent = "";
  try {
    const v = await api("v1/audit/verify");
    if (v.ok) {
      pill.className = "pill pill-ok";
      pill.textContent = "✓ Chain intact";
      text.replaceChildren(`${v.records.toLocaleString("en-US")} records checked · head `,
        h("code", { title: "Keep this elsewhere to detect a rewritten log" }, v.head));
    } else {
      pill.className = "pill pill-bad";
      pill.textContent = "✕ Tampering detected";
      text.textContent = `First bad record: #${v.first_bad_seq ?? "?"} — ${v.problem || "unknown problem"}`;
    }
  } catch (e) {
    pill.className = "pill pill-bad";
    pill.textContent = "Could not verify";
    text.textContent = e.message;
  }
}

async function queryAudit() {
  const err = $("#audit-error");
  showError(err, null);
  const q = new URLSearchParams();
  for (const [k, id] of [["case", "f-case"], ["actor", "f-actor"], ["action", "f-action"]]) {
    const v = $(`#${id}`).value.trim();
    if (v) q.set(k, v);
  }
  if ($("#f-since").value) q.set("since", $("#f-since").value);
  q.set("limit", $("#f-limit").value);
  $("#audit-count").textContent = "Loading…";
  try {
    const rows = await api(`v1/audit?${q}`);
    renderAudit(rows);
  } catch (e) {
    $("#audit-count").textContent = "";
    showError(err, e);
  }
}

function detailSummary(r) {
  const d = r.details || {};
  switch (r.action) {
    case "search": {
      // results: one list of [face_id, similarity] per probe face
      const res = Array.isArray(d.results) ? d.results : [];
      const n = res.reduce((s, x) => s + (Array.isArray(x) && Array.isArray(x[0]) ? x.length : 1), 0);
      const probe = d.probe_sha256 ? ` · probe ${String(d.probe_sha256).slice(0, 10)}…` : "";
      return `${n} candidate${n === 1 ? "" : "s"}${probe}`;
    }
    case "confirm":
      return `face ${d.face_id} · ${d.status}`;
    case "optout.add":
    case "erase":
      return `${d.faces_removed ?? 0} faces removed · ${d.images_affected ?? 0} images`;
    case "access":
    case "erase.access":
      return `${(d.results || []).length} faces listed`;
    case "people.merge":
      return `into #${d.into} from ${(d.merged || []).map((x) => `#${x}`).join(", ")}`;
    case "people.split":
      return `#${d.from} → #${d.to} (${(d.face_ids || []).length} faces)`;
    case "ingest":
      return d.images_indexed !== undefined ? `${d.images_indexed} images · ${d.faces_found ?? "?"} faces` : "";
    case "key.create":
      return `${d.name} (${d.role})`;
    default:
      return "";
  }
}

function renderAudit(rows) {
  const body = $("#audit-rows");
  body.replaceChildren();
  $("#audit-empty").hidden = rows.length > 0;
  $("#audit-count").textContent = `${rows.length} record${rows.length === 1 ? "" : "s"}, newest first`;
  const actors = new Set();
  const cases = new Set();
  for (const r of rows) {
    actors.add(r.actor);
    if (r.case_ref) cases.add(r.case_ref);
    const summary = detailSummary(r);
    body.append(h("tr", { dataset: { action: r.action } },
      h("td", { "data-label": "#", class: "num" }, String(r.seq)),
      h("td", { "data-label": "Time", class: "nowrap" }, h("time", { datetime: r.time }, fmtTime(r.time))),
      h("td", { "data-label": "Actor" }, r.actor),
      h("td", { "data-label": "Role" }, r.role || ""),
      h("td", { "data-label": "Action" }, h("span", { class: `act act-${r.action.split(".")[0]}` }, r.action)),
      h("td", { "data-label": "Purpose" }, r.purpose || "—"),
      h("td", { "data-label": "Case" }, r.case_ref || "—"),
      h("td", { "data-label": "Details", class: "details-cell" }, h("div", {},
        summary ? h("span", { class: "detail-sum" }, summary) : null,
        h("details", {}, h("summary", {}, "JSON"), h("pre", {}, JSON.stringify(r.details, null, 2))))),
    ));
  }
  const fill = (id, values) => $(id).replaceChildren(...[...values].sort().map((v) => h("option", { value: v })));
  fill("#dl-actors", actors);
  fill("#dl-cases", cases);
}

$("#audit-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  queryAudit();
});
$("#audit-clear").addEventListener("click", () => {
  for (const id of ["f-case", "f-actor", "f-action", "f-since"]) $(`#${id}`).value = "";
  queryAudit();
});
$("#verify-btn").addEventListener("click", verifyAudit);

// --- privacy ------------------------------------------------------------------------------------------------------------
const tabs = $$("#privacy-tabs [role=tab]");
function selectTab(tab, focus = true) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
  }
  if (focus) tab.focus();
}
for (const t of tabs) {
  t.addEventListener("click", () => selectTab(t));
  t.addEventListener("keydown", (e) => {
    const i = tabs.indexOf(t);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length]);
  });
}

const REF_RE = /^[A-Za-z0-9_.:-]{1,100}$/;

for (const form of $$(".privacy-form")) {
  const input = $("input[type=file]", form);
  const thumbs = $(".thumbs", form);
  input.addEventListener("change", () => {
    for (const img of $$("img", thumbs)) URL.revokeObjectURL(img.src);
    thumbs.replaceChildren(...[...input.files].map((f) =>
      h("li", {}, h("img", { src: URL.createObjectURL(f), alt: f.name, width: 56, height: 56 }))));
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    runPrivacy(form);
  });
}

const PRIVACY = {
  access: {
    path: "v1/access?format=json",
    title: (ref) => `Run subject access ${ref}?`,
    body: (ref, n) => [`Every face held that matches the person in the ${n} photo${n === 1 ? "" : "s"} will be listed.`,
      `Nothing is deleted. The request is recorded in the audit trail under reference ${ref}.`],
    ok: "Run access",
    danger: false,
    out: "#access-out",
  },
  optout: {
    path: "v1/optouts",
    field: "photos",
    title: (ref) => `Register opt-out ${ref}?`,
    body: (ref, n) => [h("p", {}, h("strong", {}, "Every indexed face matching the person is deleted now. This cannot be undone.")),
      `The person in the ${n} photo${n === 1 ? "" : "s"} is also kept out of future indexing and search results. The receipt is audited under ${ref}.`],
    ok: "Delete faces and register opt-out",
    danger: true,
    out: "#optout-out",
  },
  erase: {
    path: "v1/erase",
    title: (ref) => `Erase ${ref}?`,
    body: (ref, n) => [h("p", {}, h("strong", {}, "The matching faces are listed, deleted and the person is opted out. This cannot be undone.")),
      `Uses ${n} photo${n === 1 ? "" : "s"} of the person. One receipt is kept and audited under ${ref}.`],
    ok: "Erase",
    danger: true,
    out: "#erase-out",
  },
};

async function runPrivacy(form) {
  const kind = form.dataset.action;
  const cfg = PRIVACY[kind];
  const err = $(".form-error", form);
  showError(err, null);
  const refInput = $("input[type=text], input:not([type])", form);
  const ref = refInput.value.trim();
  const files = [...$("input[type=file]", form).files];
  if (!REF_RE.test(ref) || ref.startsWith(".")) {
    refInput.focus();
    return showError(err, "Give a reference: 1–100 letters, digits and - _ . : (not starting with a dot).");
  }
  if (!files.length) {
    $("input[type=file]", form).focus();
    return showError(err, "Add at least one photo of the person.");
  }
  const ok = await confirmStep({ title: cfg.title(ref), body: cfg.body(ref, files.length), ok: cfg.ok, danger: cfg.danger });
  if (!ok) return;
  const body = new FormData();
  for (const f of files) body.append("photos", f, f.name);
  body.append("reference", ref);
  body.append("purpose", "data-subject-request");
  state.why = { purpose: "data-subject-request", case: ref };
  const btn = $("button[type=submit]", form);
  btn.disabled = true;
  status("Working…", { sticky: true });
  try {
    const res = await api(cfg.path, { method: "POST", body });
    const out = $(cfg.out);
    if (kind === "access") out.replaceChildren(renderAccess(res));
    else out.replaceChildren(renderReceipt(res, kind));
    out.firstElementChild?.focus?.();
    status(kind === "access" ? `Access ${ref}: ${res.faces.length} faces found.` : `${kind === "erase" ? "Erasure" : "Opt-out"} ${ref} done: ${res.faces_removed} faces removed.`);
    if (kind !== "access") loadOptouts();
  } catch (e) {
    showError(err, e);
    status("");
  } finally {
    btn.disabled = false;
  }
}

function downloadJson(obj, name) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(obj, null, 2)], { type: "application/json" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null).map(([k, v]) =>
    h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function renderReceipt(r, kind) {
  const title = kind === "erase" ? "Erasure receipt" : "Opt-out receipt";
  return h("section", { class: "card receipt", tabindex: "-1", "aria-label": title },
    h("div", { class: "card-title-row" }, h("h2", { class: "card-title" }, title),
      h("button", { type: "button", class: "btn btn-small btn-quiet", onclick: () => downloadJson(r, `${r.reference}-receipt.json`) }, "Download JSON")),
    h("p", { class: "receipt-big" }, h("strong", {}, String(r.faces_removed)), ` face${r.faces_removed === 1 ? "" : "s"} removed from `,
      h("strong", {}, String(r.images_affected)), ` image${r.images_affected === 1 ? "" : "s"}`),
    kv([
      ["Reference", r.reference],
      ["Time", fmtTime(r.time)],
      ["By", r.actor],
      ["Template photos", String(r.templates)],
      ["Faces listed before deletion", r.faces_listed !== undefined ? String(r.faces_listed) : undefined],
      ["Matching threshold", `${r.threshold} (FMR ${oneIn(r.threshold_fmr)})`],
    ]),
  );
}

function renderAccess(r) {
  const list = h("ul", { class: "access-grid", "aria-label": "Faces held" });
  for (const f of r.faces) {
    const file = baseName(f.file ?? f.path);
    list.append(h("li", { class: "access-face card" },
      authedImg(cropUrl(f.face_id, 128), `Face ${f.face_id} in ${file}`, "tile"),
      h("div", { class: "access-body" },
        h("p", { class: "cand-file", title: file }, fileName(file)),
        h("p", { class: "muted small" }, `similarity ${f.similarity.toFixed(3)} · ${oneIn(f.fmr)}`),
        h("p", { class: "muted small" }, `source ${f.source} · basis ${f.basis || "unspecified"}`),
        h("p", { class: "muted small" }, `added ${fmtTime(f.added_at)}`),
        h("button", { type: "button", class: "btn btn-link small",
          onclick: () => showFaceImage(f.face_id, file, `Face ${f.face_id} · source ${f.source} · basis ${f.basis}`) }, "View in photo"),
      ),
    ));
  }
  return h("section", { class: "card receipt", tabindex: "-1", "aria-label": "Subject access report" },
    h("div", { class: "card-title-row" }, h("h2", { class: "card-title" }, `Subject access ${r.reference}`),
      h("button", { type: "button", class: "btn btn-small btn-quiet", onclick: () => downloadJson(r, `${r.reference}.json`) }, "Download JSON")),
    h("p", { class: "receipt-big" }, h("strong", {}, String(r.faces.length)), ` face${r.faces.length === 1 ? "" : "s"} held in `,
      h("strong", {}, String(r.images)), ` image${r.images === 1 ? "" : "s"}`),
    kv([
      ["Time", fmtTime(r.time)],
      ["By", r.actor],
      ["Template photos", String(r.templates)],
      ["Matching threshold", `${r.threshold} (FMR ${oneIn(r.threshold_fmr)}, inclusive)`],
    ]),
    r.faces.length ? list : h("div", { class: "empty small-empty" }, h("strong", {}, "No faces of this person are held.")),
  );
}

async function loadOptouts() {
  const err = $("#optout-list-error");
  showError(err, null);
  try {
    const rows = await api("v1/optouts");
    const body = $("#optout-rows");
    body.replaceChildren();
    $("#optout-empty").hidden = rows.length > 0;
    for (const o of rows) {
      const btn = h("button", { type: "button", class: "btn btn-small btn-quiet", "aria-label": `Withdraw opt-out ${o.reference}` }, "Withdraw");
      btn.addEventListener("click", () => withdrawOptout(o.reference));
      body.append(h("tr", {},
        h("td", { "data-label": "Reference" }, h("strong", {}, o.reference)),
        h("td", { "data-label": "Registered", class: "nowrap" }, fmtTime(o.created_at)),
        h("td", { "data-label": "By" }, o.actor),
        h("td", { "data-label": "Photos", class: "num" }, String(o.templates)),
        h("td", { "data-label": "Faces removed", class: "num" }, String(o.receipt?.faces_removed ?? "—")),
        h("td", {}, btn),
      ));
    }
  } catch (e) {
    showError(err, e);
  }
}

async function withdrawOptout(ref) {
  const ok = await confirmStep({
    title: `Withdraw opt-out ${ref}?`,
    body: ["New photos of this person will be indexed again and can appear in search results.",
      "Faces deleted by the opt-out are not restored. The withdrawal is audited."],
    ok: "Withdraw opt-out",
    danger: true,
  });
  if (!ok) return;
  try {
    await api(`v1/optouts/${encodeURIComponent(ref)}`, { method: "DELETE" });
    status(`Opt-out ${ref} withdrawn.`);
    loadOptouts();
  } catch (e) {
    showError($("#optout-list-error"), e);
  }
}
$("#optout-refresh").addEventListener("click", loadOptouts);

// --- start -----------------------------------------------------------------------------------------------------------------
async function start() {
  if (state.key) {
    try {
      await signIn(state.key);
    } catch (e) {
      signOut(e.status === 401 ? `Signed out: ${e.message}. Sign in again.` : e.message);
      return;
    }
  }
  route();
  if (!state.me) $("#api-key").focus();
}

start();
