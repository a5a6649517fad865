// faceindex web page: the privacy page.
import { $, $$, api, authedImg, baseName, confirmStep, cropUrl, fileName, fmtTime, h, oneIn, registerPage, showError, showFaceImage, state, status } from "./core.js";

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

registerPage({
  id: "privacy",
  perm: "privacy",
  load: loadOptouts,
  reset() {
    for (const id of ["access-out", "optout-out", "erase-out"]) $(`#${id}`).replaceChildren();
    $("#optout-rows").replaceChildren();
    for (const f of $$(".privacy-form")) {
      f.reset();
      $(".thumbs", f).replaceChildren();
    }
  },
});
