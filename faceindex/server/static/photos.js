// faceindex web page: the "Add photos" page (admin). Photos (many files or a whole folder) are uploaded into one
// job in bounded chunks, one request at a time, each chunk retried on its own; or a server folder is named. The
// job's progress is polled; jobs are listed from the server, so they survive a reload or a server restart.
import { $, api, confirmStep, dropZone, fmtTime, h, state, status } from "./core.js";
import { bytes, fail, mountPage, plural, rows, sleep } from "./admin.js";

export const CHUNK_FILES = 20; // files per request
export const CHUNK_BYTES = 8_000_000; // bytes per request (below the server's limit, see /v1/ingest/limits)
const RETRIES = 4; // tries per chunk
const IMAGE_NAME = /\.(jpe?g|jpe|png|webp|bmp|tiff?|gif)$/i; // what the server indexes
const ACTIVE = new Set(["uploading", "queued", "running"]);

const page = mountPage({
  id: "photos",
  label: "Add photos",
  perm: "ingest",
  load: () => loadPage(),
  reset: () => {
    picked = [];
    watching = null;
    $("#job-view").hidden = true;
    $("#jobs-rows").replaceChildren();
    renderPicked();
  },
  html: `
  <div class="page-head">
    <h1 id="photos-title">Add photos</h1>
    <p class="muted">Faces in the photos are found and indexed in a background job. Photos already indexed are
      skipped; every batch is recorded in the audit trail.</p>
  </div>
  <div class="photos-layout">
    <div class="photos-forms">
      <form class="card" id="up-form" novalidate aria-labelledby="up-title">
        <h2 class="card-title" id="up-title">Upload photos</h2>
        <div class="field">
          <label for="up-source">Source</label>
          <input id="up-source" list="up-sources" autocomplete="off" maxlength="200" required
                 aria-describedby="up-source-hint">
          <datalist id="up-sources"></datalist>
          <p class="hint" id="up-source-hint">An existing source, or a new name (then register its legal basis
            under Collections).</p>
        </div>
        <div class="dropzone" id="up-drop">
          <input type="file" id="up-files" accept="image/*" multiple class="visually-hidden"
                 aria-describedby="up-drop-hint">
          <label for="up-files" class="dropzone-label">
            <svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" class="dz-icon">
              <path d="M12 16V4m0 0-4 4m4-4 4 4M4 16v3a1 1 0 0 0 1 1h14a1 1 0 0 0 1-1v-3" fill="none"
                    stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/>
            </svg>
            <span class="dz-main">Drop photos or a folder here, or <u>choose photos</u></span>
            <span class="dz-hint" id="up-drop-hint">JPEG, PNG, WebP, BMP, TIFF or GIF; as many as you like.</span>
          </label>
        </div>
        <p class="small folder-row"><input type="file" id="up-folder" webkitdirectory multiple class="visually-hidden">
          <label for="up-folder" class="btn btn-small btn-quiet folder-btn">Choose a folder…</label></p>
        <p class="small" id="up-picked" aria-live="polite"></p>
        <div class="alert alert-error" id="up-error" role="alert" hidden></div>
        <button type="submit" class="btn btn-primary" id="up-submit" disabled>Upload and index</button>
      </form>
      <form class="card" id="path-form" novalidate aria-labelledby="path-title">
        <h2 class="card-title" id="path-title">Index a folder on the server</h2>
        <p class="muted small" id="path-roots"></p>
        <div class="field">
          <label for="path-path">Folder on the server</label>
          <input id="path-path" autocomplete="off" maxlength="4096" required spellcheck="false">
        </div>
        <div class="field">
          <label for="path-source">Source of the folder's photos</label>
          <input id="path-source" list="up-sources" autocomplete="off" maxlength="200" required>
        </div>
        <div class="alert alert-error" id="path-error" role="alert" hidden></div>
        <button type="submit" class="btn" id="path-submit">Index folder</button>
      </form>
    </div>
    <div class="photos-jobs">
      <section class="card job-view" id="job-view" aria-labelledby="job-title" hidden tabindex="-1">
        <div class="card-title-row">
          <h2 class="card-title" id="job-title">Job</h2>
          <span class="pill" id="job-state"></span>
        </div>
        <label for="job-bar" class="job-label" id="job-phase"></label>
        <progress id="job-bar" max="1" value="0"></progress>
        <dl class="kv job-kv" id="job-kv"></dl>
        <div class="alert alert-error" id="job-error" role="alert" hidden></div>
        <div id="job-files"></div>
        <div class="form-actions">
          <button type="button" class="btn btn-danger" id="job-cancel">Cancel job</button>
          <button type="button" class="btn btn-primary" id="job-start" hidden>Index the photos received</button>
        </div>
      </section>
      <div class="card table-card">
        <div class="card-title-row table-caption">
          <h2 class="card-title">Jobs</h2>
          <button type="button" class="btn btn-small btn-quiet" id="jobs-refresh">Refresh</button>
        </div>
        <div class="alert alert-error" id="jobs-error" role="alert" hidden></div>
        <div class="table-scroll">
          <table class="admin-table" id="jobs-table">
            <caption class="visually-hidden">Ingest jobs, newest first</caption>
            <thead><tr><th scope="col">Started</th><th scope="col">Source</th><th scope="col">State</th>
              <th scope="col">Photos</th><th scope="col">Faces</th><th scope="col">Errors</th>
              <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody id="jobs-rows"></tbody>
          </table>
        </div>
        <div class="empty small-empty" id="jobs-empty" hidden>No jobs yet: upload photos or name a folder.</div>
      </div>
    </div>
  </div>`,
});

let limits = null;
let picked = []; // {file, name}
let skipped = []; // {name, reason}
let watching = null; // the job id shown in the job view
let uploading = null; // {job, chunks, sent, files, cancelled}

// --- choosing files ------------------------------------------------------------------------------------------------
function take(files) {
  const max = limits?.max_upload_bytes ?? Infinity;
  picked = [];
  skipped = [];
  for (const f of files) {
    const name = f.webkitRelativePath || f.relativePath || f.name;
    if (!(f.type.startsWith("image/") || IMAGE_NAME.test(f.name))) skipped.push({ name, reason: "not an image" });
    else if (f.size === 0) skipped.push({ name, reason: "empty file" });
    else if (f.size > max) skipped.push({ name, reason: `larger than the server's limit (${bytes(max)})` });
    else picked.push({ file: f, name });
  }
  renderPicked();
}

function renderPicked() {
  const total = picked.reduce((n, p) => n + p.file.size, 0);
  const out = $("#up-picked");
  out.replaceChildren(picked.length ? `${plural(picked.length, "photo")} chosen (${bytes(total)}).` : "",
    skipped.length ? ` ${plural(skipped.length, "file")} will not be sent: ` +
      skipped.slice(0, 5).map((s) => `${s.name} (${s.reason})`).join(", ") + (skipped.length > 5 ? ", …" : "") : "");
  $("#up-submit").disabled = !picked.length || !!uploading;
}

// Folders dropped in are walked (files, then sub-folders); the File objects carry their relative path.
async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    file.relativePath = prefix + file.name;
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await walk(e, `${prefix}${entry.name}/`, out);
    }
  }
}

async function dropped(dt) {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return take([...dt.files]);
  const files = [];
  for (const e of entries) await walk(e, "", files);
  take(files);
}

// --- uploading in chunks -------------------------------------------------------------------------------------------
/** Split into requests of at most CHUNK_FILES files and CHUNK_BYTES bytes (one big photo goes alone). */
export function chunk(items, maxFiles, maxBytes) {
  const out = [];
  let cur = [];
  let size = 0;
  for (const it of items) {
    if (cur.length && (cur.length >= maxFiles || size + it.file.size > maxBytes)) {
      out.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(it);
    size += it.file.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

async function sendChunk(jobId, index, items) {
  for (let attempt = 1; ; attempt++) {
    const form = new FormData();
    for (const it of items) form.append("files", it.file, it.file.name);
    try {
      return await api(`v1/ingest/uploads/${jobId}/files?chunk=${index}`, { method: "POST", body: form });
    } catch (e) {
      // a dropped connection, a busy or failing server, or a rate limit: wait and send the same chunk again
      const transient = e.status === 0 || e.status === 429 || e.status >= 500;
      if (!transient || attempt >= RETRIES || uploading?.cancelled) throw e;
      const wait = e.retryAfter ? e.retryAfter * 1000 : 1000 * 2 ** (attempt - 1);
      phase(`Chunk ${index + 1} failed (${e.message}); retrying in ${Math.ceil(wait / 1000)} s (try ${attempt + 1} of ${RETRIES})…`);
      await sleep(wait);
    }
  }
}

async function upload(ev) {
  ev.preventDefault();
  const err = $("#up-error");
  fail(err, null);
  const source = $("#up-source").value.trim();
  if (!/^[\w.\- ]{1,200}$/.test(source)) {
    fail(err, "Name the source: letters, digits, spaces and . _ - only.", { focus: $("#up-source") });
    return;
  }
  if (!picked.length) {
    fail(err, "Choose photos or a folder first.", { focus: $("#up-files") });
    return;
  }
  const maxBytes = Math.min(CHUNK_BYTES, limits.max_request_bytes - 100_000);
  const chunks = chunk(picked, Math.min(CHUNK_FILES, limits.max_files_per_request), maxBytes);
  let job;
  try {
    job = await api("v1/ingest/uploads", { method: "POST", json: { source } });
  } catch (e) {
    fail(err, e.message, { focus: $("#up-submit") });
    return;
  }
  uploading = { job: job.id, chunks: chunks.length, sent: 0, files: picked.length, cancelled: false };
  renderPicked();
  watch(job, { focus: true });
  let received = 0;
  try {
    for (let i = 0; i < chunks.length; i++) {
      if (uploading.cancelled) return;
      phase(`Uploading chunk ${i + 1} of ${chunks.length}…`);
      received = (await sendChunk(job.id, i, chunks[i])).received;
      uploading.sent = i + 1;
      bar(received / uploading.files);
      phase(`Uploaded ${received} of ${uploading.files} photos (chunk ${i + 1} of ${chunks.length}).`);
    }
    if (uploading.cancelled) return;
    const started = await api(`v1/ingest/uploads/${job.id}/start`, { method: "POST" });
    picked = [];
    skipped = [];
    $("#up-files").value = "";
    $("#up-folder").value = "";
    status(`Uploaded ${plural(received, "photo")}; indexing.`);
    uploading = null;
    renderPicked();
    watch(started);
  } catch (e) {
    if (uploading?.cancelled) return;
    uploading = null;
    renderPicked();
    fail($("#job-error"), `Upload stopped: ${e.message}. ${received ? `${plural(received, "photo")} arrived: ` +
      "index them, or cancel the job." : "Cancel the job and try again."}`);
    refreshJob(job.id);
  }
}

// --- a server folder -----------------------------------------------------------------------------------------------
async function indexFolder(ev) {
  ev.preventDefault();
  const err = $("#path-error");
  fail(err, null);
  const path = $("#path-path").value.trim();
  const source = $("#path-source").value.trim();
  if (!path) return fail(err, "Name a folder on the server.", { focus: $("#path-path") });
  if (!/^[\w.\- ]{1,200}$/.test(source)) {
    return fail(err, "Name the source: letters, digits, spaces and . _ - only.", { focus: $("#path-source") });
  }
  try {
    watch(await api("v1/ingest/path", { method: "POST", json: { path, source } }), { focus: true });
  } catch (e) {
    fail(err, e.message, { focus: $("#path-submit") });
  }
}

// --- the job view --------------------------------------------------------------------------------------------------
const phase = (text) => {
  $("#job-phase").textContent = text;
};
const bar = (x) => {
  $("#job-bar").value = Math.max(0, Math.min(1, x || 0));
};

const STATE_TEXT = { uploading: "uploading", queued: "queued", running: "indexing", done: "done", failed: "failed",
  cancelled: "cancelled" };
const stateClass = (s) => ({ done: "pill-ok", failed: "pill-bad", cancelled: "pill-bad" }[s] || "pill-busy");

function renderJob(job) {
  $("#job-title").textContent = `Job ${job.id.slice(0, 8)} · ${job.source || ""}`;
  const pill = $("#job-state");
  pill.textContent = STATE_TEXT[job.state] || job.state;
  pill.className = `pill ${stateClass(job.state)}`;
  const mine = uploading && uploading.job === job.id;
  if (job.state === "uploading" && !mine) {
    phase(`${plural(job.received || 0, "photo")} received; the upload was interrupted. Index them, or cancel.`);
    bar(0);
  } else if (job.state === "queued") {
    phase("Waiting to start…");
  } else if (job.state === "running") {
    phase(job.total ? `Indexed ${job.done} of ${plural(job.total, "photo")}` +
      (job.images_per_second ? ` · ${job.images_per_second.toFixed(1)} photos/s` : "") : "Looking for photos…");
    bar(job.total ? job.done / job.total : 0);
  } else if (!ACTIVE.has(job.state)) {
    phase(job.state === "done" ? "Finished." : job.state === "cancelled" ? "Cancelled." : "Failed.");
    bar(job.state === "done" ? 1 : job.total ? job.done / job.total : 0);
  }
  const r = job.result || {};
  const kv = [["Photos", job.total != null ? `${job.done} of ${job.total}` : job.state === "uploading" ? `${job.received || 0} received` : "—"],
    ["Faces found", job.faces], ["Errors", job.errors]];
  if (job.images_per_second) kv.push(["Speed", `${job.images_per_second.toFixed(1)} photos/s`]);
  if (job.state === "done") {
    kv.push(["Indexed", r.images_indexed ?? "—"], ["Already indexed", (r.unchanged ?? 0) + (r.moved_or_copied ?? 0)],
      ["Without faces", r.images_without_faces ?? 0]);
    if (job.seconds) kv.push(["Time", `${job.seconds.toFixed(1)} s`]);
  }
  $("#job-kv").replaceChildren(...kv.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v)))));
  fail($("#job-error"), job.error ? `${job.state === "cancelled" ? "" : "The job failed: "}${job.error}` : null);
  const files = job.error_files || [];
  $("#job-files").replaceChildren(...(files.length ? [h("details", { open: files.length <= 10 || null },
    h("summary", {}, `${plural(files.length, "file")} could not be indexed`),
    h("ul", { class: "error-files" }, ...files.map((f) => h("li", {}, h("strong", {}, f.file),
      ` — ${f.reason || "the reason is given when the job ends"}`))))] : []));
  $("#job-cancel").hidden = !ACTIVE.has(job.state);
  $("#job-start").hidden = !(job.state === "uploading" && !mine && job.received);
}

let pollTimer = 0;
async function refreshJob(id) {
  clearTimeout(pollTimer);
  if (watching !== id || !state.me) return;
  let job;
  try {
    job = await api(`v1/jobs/${id}`);
  } catch (e) {
    fail($("#job-error"), `Could not read the job: ${e.message}`);
    return;
  }
  if (watching !== id) return;
  renderJob(job);
  if (ACTIVE.has(job.state) && !(job.state === "uploading" && !(uploading?.job === id))) {
    pollTimer = setTimeout(() => refreshJob(id), 700);
  } else if (!ACTIVE.has(job.state)) {
    status(`Job ${job.state}: ${plural(job.done, "photo")}, ${plural(job.faces, "face")} found.`);
    loadJobs();
  }
}

function watch(job, { focus = false } = {}) {
  watching = job.id;
  const view = $("#job-view");
  view.hidden = false;
  renderJob(job);
  loadJobs();
  if (focus) view.focus();
  if (job.state !== "uploading") refreshJob(job.id);
}

async function cancelJob() {
  const id = watching;
  const ok = await confirmStep({
    title: "Cancel this job?",
    body: ["Photos not yet indexed are left out; what was indexed stays (delete it under Collections).",
      "The cancellation is recorded in the audit trail."],
    ok: "Cancel job",
    danger: true,
  });
  if (!ok) {
    $("#job-cancel").focus();
    return;
  }
  if (uploading?.job === id) uploading.cancelled = true;
  try {
    const job = await api(`v1/jobs/${id}/cancel`, { method: "POST" });
    if (uploading?.job === id) uploading = null;
    renderPicked();
    renderJob(job);
    refreshJob(id);
    loadJobs();
    $("#job-view").focus();
  } catch (e) {
    fail($("#job-error"), `Could not cancel: ${e.message}`, { focus: $("#job-cancel") });
  }
}

async function startReceived() {
  try {
    watch(await api(`v1/ingest/uploads/${watching}/start`, { method: "POST" }));
  } catch (e) {
    fail($("#job-error"), e.message, { focus: $("#job-start") });
  }
}

// --- the jobs list -------------------------------------------------------------------------------------------------
async function loadJobs() {
  const err = $("#jobs-error");
  let jobs;
  try {
    jobs = await api("v1/jobs?limit=20");
  } catch (e) {
    fail(err, `Could not list the jobs: ${e.message}`);
    return;
  }
  fail(err, null);
  $("#jobs-empty").hidden = jobs.length > 0;
  $("#jobs-table").hidden = jobs.length === 0;
  rows($("#jobs-rows"), jobs, (j) => [
    ["Started", fmtTime(j.created_at)],
    ["Source", j.source || "—"],
    ["State", h("span", { class: `pill ${stateClass(j.state)}` }, STATE_TEXT[j.state] || j.state)],
    ["Photos", j.total != null ? `${j.done} / ${j.total}` : j.state === "uploading" ? `${j.received || 0} received` : "—", "num"],
    ["Faces", String(j.faces), "num"],
    ["Errors", String(j.errors), "num"],
    ["", h("button", { type: "button", class: "btn btn-small", "aria-label": `Show job ${j.id.slice(0, 8)}`,
      onclick: () => watch(j, { focus: true }) }, "Show")],
  ]);
}

async function loadPage() {
  try {
    limits = await api("v1/ingest/limits");
    const sources = await api("v1/sources/summary");
    $("#up-sources").replaceChildren(...sources.map((s) => h("option", { value: s.name })));
    const roots = limits.ingest_roots;
    $("#path-roots").textContent = roots.length
      ? `Allowed: ${roots.join(", ")} and the folders below.`
      : "The server allows no folders. Start it with --ingest-root FOLDER to index photos already on the server.";
    for (const el of [$("#path-path"), $("#path-source"), $("#path-submit")]) el.disabled = !roots.length;
  } catch (e) {
    fail($("#up-error"), `Could not load the upload settings: ${e.message}`);
  }
  renderPicked();
  await loadJobs();
}

$("#up-files", page).addEventListener("change", (e) => take([...e.target.files]));
$("#up-folder", page).addEventListener("change", (e) => take([...e.target.files]));
$("#up-form", page).addEventListener("submit", upload);
$("#path-form", page).addEventListener("submit", indexFolder);
$("#job-cancel", page).addEventListener("click", cancelJob);
$("#job-start", page).addEventListener("click", startReceived);
$("#jobs-refresh", page).addEventListener("click", loadJobs);
const dz = $("#up-drop", page);
dropZone(dz, (dt) =>
  dropped(dt).catch((x) => fail($("#up-error"), `Could not read what was dropped: ${x.message}`)));
