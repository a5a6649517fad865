// faceindex web page: a thin client over the /v1 API. No framework, no build step, no external resources.
// The API key lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer <key>`.

const KEY_STORE = "faceindex.key";
// Each page module registers itself: {id, perm, load (first visit after sign-in), reset (on sign-out)}.
// The order of registration is the order of the navigation (app.js imports the pages in that order).
const PAGES = [];
export function registerPage(page) {
  PAGES.push(page);
}

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

// --- drop zones -----------------------------------------------------------------------------------------------------
// Highlights `el` while files are dragged over it and hands the drop's DataTransfer to `onDrop` (the browser would
// otherwise open the dropped file).
export function dropZone(el, onDrop) {
  for (const t of ["dragenter", "dragover"]) {
    el.addEventListener(t, (e) => {
      e.preventDefault();
      el.classList.add("over");
    });
  }
  for (const t of ["dragleave", "drop"]) el.addEventListener(t, () => el.classList.remove("over"));
  el.addEventListener("drop", (e) => {
    e.preventDefault();
    onDrop(e.dataTransfer);
  });
}

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
  return PAGES.filter((p) => !p.perm || perms.has(p.perm)).map((p) => p.id); // no perm: every role
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
    PAGES.find((p) => p.id === id).load?.();
  }
}

function renderWho() {
  const me = state.me;
  $("#nav").hidden = !me;
  $("#who").hidden = !me;
  if (!me) return;
  const perms = new Set(me.permissions);
  for (const a of $$("#nav a")) a.hidden = !!a.dataset.perm && !perms.has(a.dataset.perm);
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
  for (const p of PAGES) p.reset?.();
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

export {
  $,
  $$,
  AUDITED_READ,
  MAX_ACTIVE,
  active,
  allowedPages,
  api,
  authedImage,
  authedImg,
  baseName,
  blobCache,
  clearImages,
  confirmStep,
  cropUrl,
  fileName,
  fmtExpected,
  fmtTime,
  h,
  labelClass,
  pump,
  queue,
  rawFetch,
  renderWho,
  resetPages,
  route,
  showError,
  showFaceImage,
  showPage,
  sig2,
  signIn,
  signOut,
  state,
  status,
  statusTimer,
  withWhy,
};
