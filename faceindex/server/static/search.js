// faceindex web page: the search page.
import { $, api, authedImg, baseName, confirmStep, cropUrl, dropZone, fileName, fmtExpected, h, labelClass, oneIn, registerPage, showError, showFaceImage, state, status } from "./core.js";
import { faceCanvas, facePicker, largest } from "./facepicker.js";

// --- search ---------------------------------------------------------------------------------------------------------
// Several faces of one probe may be selected: each is searched with its own call (and audited on its own), and the
// candidates are shown in one group per face.
const search = { file: null, url: null, token: 0 };
const picker = facePicker({
  img: $("#probe-img"),
  layer: $("#face-boxes"),
  multiple: true,
  onChange: (selected, announced) => {
    $("#search-submit").disabled = !selected.length;
    $("#search-submit").textContent = selected.length > 1 ? `Search ${selected.length} faces` : "Search";
    if (announced !== null) {
      const n = picker.number(announced);
      const on = selected.includes(announced);
      status(`Face ${n} ${on ? "selected" : "deselected"}; ${selected.length} of ${picker.faces.length} selected.`);
    }
  },
});

function resetSearch(all = false) {
  if (search.url) URL.revokeObjectURL(search.url);
  Object.assign(search, { file: null, url: null, token: search.token + 1 });
  picker.clear();
  $("#probe-file").value = "";
  $("#probe-view").hidden = true;
  $("#probe-noface").hidden = true;
  $("#dropzone").hidden = false;
  $("#search-submit").disabled = true;
  $("#search-submit").textContent = "Search";
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
    picker.show(faces);
    if (!faces.length) {
      $("#probe-faces").textContent = "no faces";
      $("#probe-noface").hidden = false;
      status("No faces found in this photo.");
    } else {
      // the largest face is the usual subject; the user can pick others too
      picker.select(largest(faces).index, false);
      $("#probe-faces").textContent = faces.length === 1 ? "1 face" : `${faces.length} faces — choose one or more`;
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

const dz = $("#dropzone");
$("#probe-file").addEventListener("change", (e) => setProbe(e.target.files[0]));
$("#probe-change").addEventListener("click", () => $("#probe-file").click());
dropZone(dz, (dt) => {
  const f = dt?.files?.[0];
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
  const faces = picker.list();
  if (!search.file) return showError(err, "Choose a probe photo first.");
  if (!faces.length) return showError(err, "Choose a face in the photo first.");
  if (!purpose) {
    $("#purpose").focus();
    return showError(err, "Give the purpose of this search.");
  }
  if (!caseRef || !$("#case").checkValidity()) {
    $("#case").focus();
    return showError(err, "Give a case reference: 1–100 letters, digits and - _ . :");
  }
  state.why = { purpose, case: caseRef };
  const token = search.token;
  const btn = $("#search-submit");
  const label = btn.textContent;
  btn.disabled = true;
  btn.textContent = "Searching…";
  const root = $("#results");
  $("#results-empty").hidden = true;
  root.replaceChildren(h("div", { class: "card empty searching" }, h("p", {}, h("strong", {}, "Searching…"),
    faces.length > 1 ? ` Comparing ${faces.length} faces, one after the other, with every face in the gallery.`
      : " Comparing the face with every face in the gallery.")));
  root.setAttribute("aria-busy", "true");
  status("Searching…", { sticky: true });
  let found = 0;
  let failed = 0;
  try {
    // one call per face: each search is audited on its own, and one failing does not hide the others
    for (const [i, face] of faces.entries()) {
      if (token !== search.token) return; // another photo was chosen meanwhile
      const form = new FormData();
      form.append("probe", search.file, search.file.name);
      form.append("purpose", purpose);
      form.append("case", caseRef);
      form.append("top", String(top));
      form.append("face", String(face));
      const group = faces.length > 1 ? faceGroup(face) : null;
      if (group) {
        if (i === 0) root.replaceChildren(resultsHead({ purpose, case: caseRef, model: "…" }));
        root.append(group.el);
      }
      try {
        const out = await api("v1/search", { method: "POST", body: form });
        if (token !== search.token) return;
        if (!group) {
          root.replaceChildren(resultsHead(out));
          renderProbe(root, out.results[0], out.case, 3);
        } else {
          $("#results-model").textContent = out.model;
          group.fill(out.results[0], out.case);
        }
        found += out.results.reduce((s, r) => s + r.candidates.length, 0);
      } catch (e) {
        if (e.status === 401) return;
        failed += 1;
        if (!group) {
          clearResults();
          showError(err, e);
        } else {
          group.fail(e);
        }
      }
    }
    const what = `${found} candidate lead${found === 1 ? "" : "s"} found for case ${caseRef}`;
    if (failed < faces.length) {
      status(failed ? `${what}; ${failed} of ${faces.length} faces could not be searched.` : `${what}.`);
      $("#results-title")?.focus({ preventScroll: true });
    } else {
      status("");
    }
  } finally {
    btn.disabled = !picker.list().length;
    btn.textContent = token === search.token ? label : btn.textContent;
    root.setAttribute("aria-busy", "false");
  }
});

function resultsHead(out) {
  return h("div", { class: "results-head" },
    h("h2", { tabindex: "-1", id: "results-title" }, "Candidate leads"),
    h("p", { class: "muted small" }, `Purpose `, h("strong", {}, out.purpose), ` · case `, h("strong", {}, out.case),
      ` · model `, h("strong", { id: "results-model", title: "The model pack that made the embeddings" }, out.model)),
  );
}

/** One group of the results: the probe face it is for, then its candidates (or why it could not be searched). */
function faceGroup(face) {
  const n = picker.number(face);
  const id = `face-group-${face}`;
  const body = h("div", { class: "face-group-body" }, h("p", { class: "muted" }, "Searching…"));
  const el = h("section", { class: "face-group", "aria-labelledby": id, dataset: { face } },
    h("div", { class: "face-group-head" },
      faceCanvas($("#probe-img"), picker.face(face).box, `Face ${n} of the probe photo`, 64),
      h("h3", { id }, `Face ${n}`)),
    body);
  return {
    el,
    fill(r, caseRef) {
      body.replaceChildren();
      renderProbe(body, r, caseRef, 4);
    },
    fail(e) {
      const alert = h("div", { class: "alert alert-error", role: "alert" });
      showError(alert, `Face ${n} could not be searched: ${e.message}`);
      body.replaceChildren(alert);
    },
  };
}

function confirmationBadge(c) {
  if (c.confirmation === "confirmed") {
    return h("span", { class: "badge badge-ok", title: `Confirmed by ${c.confirmed_by.join(" and ")}` }, "✓ confirmed");
  }
  if (c.confirmed_by && c.confirmed_by.length) {
    return h("span", { class: "badge badge-wait", title: `Confirmed by ${c.confirmed_by.join(", ")}` }, c.confirmation);
  }
  return h("span", { class: "badge badge-none" }, "not confirmed");
}

function renderProbe(root, r, caseRef, level) {
  root.append(h("div", { class: "probe-summary card" },
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
  ));
  if (!r.candidates.length) {
    root.append(h("div", { class: "card empty" }, h("p", {}, h("strong", {}, "No candidates."),
      " Nothing in the gallery is similar enough to list.")));
    return;
  }
  const list = h("ol", { class: "cand-list", "aria-label": "Candidates, most similar first" });
  for (const c of r.candidates) list.append(candidateCard(c, caseRef, level));
  root.append(list);
}

function qualityText(q) {
  if (!q) return "—";
  const parts = [];
  if (typeof q.score === "number") parts.push(q.score.toFixed(2));
  if (typeof q.size === "number") parts.push(`${Math.round(q.size)} px face`);
  return parts.join(" · ") || "—";
}

function candidateCard(c, caseRef, level = 3) {
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
      h(`h${level}`, { class: "cand-file", title: c.path }, h("span", { class: "visually-hidden" }, `Candidate ${c.rank}: `), fileName(file)),
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
