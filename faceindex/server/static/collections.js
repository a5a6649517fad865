// faceindex web page: the collections page (admin): sources with their legal basis, notice, retention and counts.
import { $, api, confirmStep, fmtTime, h, status } from "./core.js";
import { fail, mountPage, plural, rows } from "./admin.js";

const page = mountPage({
  id: "collections",
  label: "Collections",
  perm: "ingest",
  load: () => loadSources(),
  reset: () => {
    $("#src-rows").replaceChildren();
    closeForm();
  },
  html: `
  <div class="page-head">
    <h1 id="collections-title">Collections</h1>
    <p class="muted">Each source is a collection of photos with its legal basis, the notice people were given and how
      long its photos are kept. Changes are recorded in the audit trail.</p>
  </div>
  <div class="toolbar">
    <button type="button" class="btn btn-primary" id="src-new">New source</button>
    <a class="btn" href="#photos">Add photos</a>
    <span class="toolbar-spacer"></span>
  </div>
  <form class="card admin-form" id="src-form" novalidate hidden aria-labelledby="src-form-title">
    <h2 class="card-title" id="src-form-title">New source</h2>
    <div class="field-row wrap-row">
      <div class="field grow">
        <label for="src-name">Source name</label>
        <input id="src-name" autocomplete="off" maxlength="200" required pattern="[\\w.\\- ]+"
               aria-describedby="src-name-hint">
        <p class="hint" id="src-name-hint">Letters, digits, spaces and . _ - (it cannot be renamed later).</p>
      </div>
      <div class="field grow">
        <label for="src-basis">Legal basis</label>
        <select id="src-basis"></select>
      </div>
      <div class="field narrow-wide">
        <label for="src-retention">Keep photos for (days)</label>
        <input id="src-retention" type="number" min="0" max="36500" step="1" inputmode="numeric"
               aria-describedby="src-retention-hint">
        <p class="hint" id="src-retention-hint">0 or empty: keep until deleted.</p>
      </div>
    </div>
    <div class="field">
      <label for="src-notice">Notice given to the people in the photos</label>
      <textarea id="src-notice" rows="2" maxlength="2000"></textarea>
    </div>
    <div class="alert alert-error" id="src-form-error" role="alert" hidden></div>
    <div class="form-actions">
      <button type="submit" class="btn btn-primary" id="src-save">Save source</button>
      <button type="button" class="btn btn-quiet" id="src-cancel">Cancel</button>
    </div>
  </form>
  <div class="alert alert-error" id="src-error" role="alert" hidden></div>
  <div class="card table-card">
    <div class="table-scroll">
      <table class="admin-table" id="src-table">
        <caption class="visually-hidden">Sources</caption>
        <thead><tr><th scope="col">Source</th><th scope="col">Legal basis</th><th scope="col">Retention</th>
          <th scope="col">Images</th><th scope="col">Faces</th><th scope="col">Next expiry</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody id="src-rows"></tbody>
      </table>
    </div>
    <div class="empty" id="src-empty" hidden>
      <strong>No sources yet.</strong>
      <p>Add photos to start a collection, or register a source with its legal basis first.</p>
      <p><a class="btn btn-primary" href="#photos">Add photos</a></p>
    </div>
  </div>`,
});

let sources = [];
let bases = [];
let editing = null; // the source being edited (null: a new one)
let opener = null; // the button that opened the form: focus returns there

async function loadSources() {
  const err = $("#src-error");
  fail(err, null);
  try {
    if (!bases.length) bases = (await api("v1/ingest/limits")).bases;
    sources = await api("v1/sources/summary");
  } catch (e) {
    fail(err, `Could not load the sources: ${e.message}`);
    return;
  }
  $("#src-empty").hidden = sources.length > 0;
  $("#src-table").hidden = sources.length === 0;
  rows($("#src-rows"), sources, (s) => [
    ["Source", [h("strong", {}, s.name), s.notice ? h("span", { class: "muted small block" }, s.notice) : null]],
    ["Legal basis", s.basis === "unspecified" ? h("span", { class: "pill pill-warn" }, "unspecified") : s.basis],
    ["Retention", s.retention_days ? plural(s.retention_days, "day") : "kept until deleted"],
    ["Images", s.images.toLocaleString("en-US"), "num"],
    ["Faces", s.faces.toLocaleString("en-US"), "num"],
    ["Next expiry", s.next_expiry
      ? [fmtTime(s.next_expiry), s.expired ? h("span", { class: "pill pill-bad block-pill" }, "expired, not yet purged") : null]
      : "—"],
    ["", h("div", { class: "row-actions" },
      h("button", { type: "button", class: "btn btn-small", onclick: (ev) => openForm(s, ev.currentTarget),
        "aria-label": `Edit ${s.name}` }, "Edit"),
      h("button", { type: "button", class: "btn btn-small btn-danger-quiet", disabled: s.files === 0 || null,
        onclick: (ev) => deleteImages(s, ev.currentTarget), "aria-label": `Delete the images of ${s.name}` },
      "Delete images…"))],
  ]);
}

function openForm(source, from) {
  editing = source;
  opener = from;
  const form = $("#src-form");
  $("#src-form-title").textContent = source ? `Edit ${source.name}` : "New source";
  $("#src-basis").replaceChildren(...bases.map((b) => h("option", { value: b }, b)));
  $("#src-name").value = source ? source.name : "";
  $("#src-name").readOnly = !!source;
  $("#src-basis").value = source ? source.basis : "consent";
  $("#src-retention").value = source?.retention_days || "";
  $("#src-notice").value = source?.notice || "";
  fail($("#src-form-error"), null);
  form.hidden = false;
  (source ? $("#src-basis") : $("#src-name")).focus();
}

function closeForm() {
  $("#src-form").hidden = true;
  editing = null;
  if (opener?.isConnected) opener.focus();
  opener = null;
}

async function saveSource(ev) {
  ev.preventDefault();
  const err = $("#src-form-error");
  const name = $("#src-name").value.trim();
  const retention = $("#src-retention").value.trim();
  const body = { basis: $("#src-basis").value, notice: $("#src-notice").value.trim() || null,
    retention_days: retention === "" ? 0 : Number(retention) };
  if (!editing) {
    if (!/^[\w.\- ]{1,200}$/.test(name)) {
      fail(err, "Give the source a name: letters, digits, spaces and . _ - only.", { focus: $("#src-name") });
      return;
    }
    if (sources.some((s) => s.name === name)) {
      fail(err, `A source named ${name} already exists: edit it instead.`, { focus: $("#src-name") });
      return;
    }
  }
  if (!Number.isInteger(body.retention_days) || body.retention_days < 0 || body.retention_days > 36500) {
    fail(err, "Retention must be a whole number of days from 0 (keep) to 36500.", { focus: $("#src-retention") });
    return;
  }
  const btn = $("#src-save");
  btn.disabled = true;
  try {
    if (editing) await api(`v1/sources/${encodeURIComponent(editing.name)}`, { method: "PUT", json: body });
    else await api("v1/sources", { method: "POST", json: { name, ...body } });
    status(`Source ${editing ? editing.name : name} saved; the change is in the audit trail.`);
    closeForm();
    await loadSources();
  } catch (e) {
    fail(err, e.message, { focus: btn });
  } finally {
    btn.disabled = false;
  }
}

async function deleteImages(source, btn) {
  const err = $("#src-error");
  fail(err, null);
  let usage;
  try {
    usage = await api(`v1/sources/${encodeURIComponent(source.name)}/images`);
  } catch (e) {
    fail(err, `Could not check what would be deleted: ${e.message}`, { focus: btn });
    return;
  }
  const shared = usage.images - usage.images_only_here;
  const ok = await confirmStep({
    title: `Delete the images of ${source.name}?`,
    body: [
      h("p", {}, h("strong", {}, `${plural(usage.images_only_here, "image")} and ${plural(usage.faces_only_here, "face")} ` +
        "will be deleted from the index. This cannot be undone.")),
      `${plural(usage.files, "file")} of this source will be forgotten` +
        (shared ? `; ${plural(shared, "image")} also held by another source stay${shared === 1 ? "s" : ""} there.` : "."),
      "The source itself (legal basis, notice, retention) stays, and the deletion is recorded in the audit trail.",
    ],
    ok: "Delete images",
    danger: true,
  });
  if (!ok) {
    btn.focus();
    return;
  }
  try {
    const r = await api(`v1/sources/${encodeURIComponent(source.name)}/images`, { method: "DELETE" });
    status(`Deleted ${plural(r.images, "image")} and ${plural(r.faces, "face")} of ${source.name}.`);
    await loadSources();
    $("#src-new").focus();
  } catch (e) {
    fail(err, `Could not delete the images of ${source.name}: ${e.message}`, { focus: btn });
  }
}

$("#src-new", page).addEventListener("click", (ev) => openForm(null, ev.currentTarget));
$("#src-cancel", page).addEventListener("click", closeForm);
$("#src-form", page).addEventListener("submit", saveSource);
$("#src-form", page).addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") closeForm();
});

export { loadSources };
