// faceindex web page: the search page.
import { $, $$, api, authedImg, baseName, confirmStep, cropUrl, fileName, fmtExpected, h, labelClass, oneIn, registerPage, showError, showFaceImage, state, status } from "./core.js";

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

registerPage({ id: "search", perm: "search", reset: () => resetSearch(true) });
