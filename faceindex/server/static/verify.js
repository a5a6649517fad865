// faceindex web page: the verify page (1:1). Two photos, one face picked in each, then POST /v1/verify with
// face_a / face_b: similarity, false-match rate and decision, with both faces side by side. Audited like a search
// (purpose and case); the photos are not kept.
import { $, api, dropZone, h, labelClass, oneIn, registerPage, showError, state, status } from "./core.js";
import { faceCanvas, facePicker, largest } from "./facepicker.js";

const CASE_PATTERN = "[A-Za-z0-9_.:\\-]{1,100}";

/** One photo slot (A or B): a drop zone / file chooser, the photo with its face boxes, and its own error line. */
function photoSlot(key) {
  const id = (s) => `vf-${key}-${s}`;
  const input = h("input", { type: "file", id: id("file"), accept: "image/*", class: "visually-hidden",
    "aria-describedby": id("hint") });
  const img = h("img", { id: id("img"), alt: `Photo ${key.toUpperCase()}` });
  const layer = h("div", { class: "face-boxes", role: "group", "aria-label": `Faces in photo ${key.toUpperCase()}: choose one` });
  const stage = h("div", { class: "probe-stage" }, img, layer);
  const name = h("span", { class: "vf-name" });
  const count = h("span", {});
  const drop = h("div", { class: "dropzone" }, input,
    h("label", { for: id("file"), class: "dropzone-label" },
      h("span", { class: "dz-main" }, "Drop a photo here or ", h("u", {}, "choose a file")),
      h("span", { class: "dz-hint", id: id("hint") }, "JPEG, PNG or WebP. Faces are found on the server; nothing is stored.")));
  const change = h("button", { type: "button", class: "btn btn-link" }, "Change photo");
  const view = h("div", { class: "probe-view", hidden: true }, stage,
    h("p", { class: "probe-caption" }, name, " · ", count, change));
  const error = h("div", { class: "alert alert-error", id: id("error"), role: "alert", hidden: true });
  const title = `Photo ${key.toUpperCase()}`;
  const card = h("div", { class: "card vf-photo", role: "group", "aria-labelledby": id("title") },
    h("h2", { class: "card-title", id: id("title") }, title), drop, view, error);

  const slot = { key, card, img, file: null, url: null, token: 0, error };
  slot.picker = facePicker({
    img, layer, name: "Face",
    onChange: (selected, announced) => {
      updateSubmit();
      if (announced !== null) {
        clearResult(); // a comparison of the faces chosen before would be misleading next to the new choice
        status(`${title}: face ${slot.picker.number(announced)} selected.`);
      }
    },
  });
  slot.reset = () => {
    if (slot.url) URL.revokeObjectURL(slot.url);
    Object.assign(slot, { file: null, url: null, token: slot.token + 1 });
    slot.picker.clear();
    input.value = "";
    img.removeAttribute("src");
    view.hidden = true;
    drop.hidden = false;
    showError(error, null);
  };
  slot.set = async (file) => {
    if (!file) return;
    showError(error, null);
    if (file.type && !file.type.startsWith("image/")) {
      showError(error, `${file.name} is not an image.`);
      return;
    }
    slot.reset();
    clearResult();
    const token = slot.token;
    slot.file = file;
    slot.url = URL.createObjectURL(file);
    img.src = slot.url;
    name.textContent = file.name;
    count.textContent = "finding faces…";
    drop.hidden = true;
    view.hidden = false;
    stage.classList.add("busy");
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      const faces = await api("v1/detect", { method: "POST", body: form });
      if (token !== slot.token) return;
      slot.picker.show(faces);
      if (!faces.length) {
        count.textContent = "no faces";
        showError(error, `No face found in ${file.name}. Try a sharper or larger photo where the face is frontal.`);
      } else {
        slot.picker.select(largest(faces).index);
        count.textContent = faces.length === 1 ? "1 face" : `${faces.length} faces — choose one`;
        status(`${title}: ${faces.length === 1 ? "1 face found" : `${faces.length} faces found; the largest is selected`}.`);
      }
    } catch (e) {
      if (token !== slot.token) return;
      count.textContent = "could not read faces";
      showError(error, e);
    } finally {
      stage.classList.remove("busy");
      updateSubmit();
    }
  };
  input.addEventListener("change", () => slot.set(input.files[0]));
  change.addEventListener("click", () => input.click());
  dropZone(drop, (dt) => slot.set(dt?.files?.[0]));
  return slot;
}

// a photo dropped on the verify page outside both drop zones is ignored (instead of the browser opening it)
for (const t of ["dragover", "drop"]) {
  document.addEventListener(t, (e) => {
    if (state.page === "verify" && e.dataTransfer?.types?.includes("Files")) e.preventDefault();
  });
}

const A = photoSlot("a");
const B = photoSlot("b");

const purpose = h("input", { id: "vf-purpose", name: "purpose", list: "purposes", required: true, autocomplete: "off",
  placeholder: "e.g. investigation" });
const caseRef = h("input", { id: "vf-case", name: "case", required: true, autocomplete: "off", maxlength: 100,
  pattern: CASE_PATTERN, placeholder: "e.g. C-2024-017", "aria-describedby": "vf-case-hint" });
const submit = h("button", { type: "submit", class: "btn btn-primary", id: "vf-submit", disabled: true }, "Compare faces");
const formError = h("div", { class: "alert alert-error", id: "vf-error", role: "alert", hidden: true });
const form = h("form", { class: "card vf-form", id: "vf-form", novalidate: true },
  h("h2", { class: "card-title" }, "Purpose and case"),
  h("div", { class: "field-row vf-fields" },
    h("div", { class: "field grow" }, h("label", { for: "vf-purpose" }, "Purpose"), purpose),
    h("div", { class: "field grow" }, h("label", { for: "vf-case" }, "Case reference"), caseRef)),
  h("p", { class: "hint", id: "vf-case-hint" }, "Letters, digits and - _ . : — recorded in the audit trail with the comparison."),
  formError,
  submit);
const result = h("div", { id: "vf-result", "aria-live": "polite" });

const section = h("section", { class: "page", id: "page-verify", "aria-labelledby": "vf-title", hidden: true },
  h("div", { class: "page-head" },
    h("h1", { id: "vf-title" }, "Verify"),
    h("p", { class: "muted" }, "Compare one face in each of two photos (1:1). The photos are not kept; each comparison ",
      "is audited with its purpose and case.")),
  h("div", { class: "vf-photos" }, A.card, B.card),
  form,
  result);
$("#main").append(section);

function updateSubmit() {
  submit.disabled = !(A.picker.list().length && B.picker.list().length);
}

function clearResult() {
  result.replaceChildren();
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError(formError, null);
  const p = purpose.value.trim();
  const c = caseRef.value.trim();
  for (const slot of [A, B]) {
    if (!slot.file || !slot.picker.list().length) {
      showError(slot.error, `Choose photo ${slot.key.toUpperCase()} and a face in it first.`);
      return;
    }
  }
  if (!p) {
    purpose.focus();
    return showError(formError, "Give the purpose of this comparison.");
  }
  if (!c || !caseRef.checkValidity()) {
    caseRef.focus();
    return showError(formError, "Give a case reference: 1–100 letters, digits and - _ . :");
  }
  const [fa] = A.picker.list();
  const [fb] = B.picker.list();
  const body = new FormData();
  body.append("a", A.file, A.file.name);
  body.append("b", B.file, B.file.name);
  body.append("purpose", p);
  body.append("case", c);
  body.append("face_a", String(fa));
  body.append("face_b", String(fb));
  const tokens = [A.token, B.token];
  submit.disabled = true;
  submit.textContent = "Comparing…";
  result.setAttribute("aria-busy", "true");
  status("Comparing the two faces…", { sticky: true });
  try {
    const v = await api("v1/verify", { method: "POST", body });
    if (tokens[0] !== A.token || tokens[1] !== B.token) return; // a photo changed meanwhile
    state.why = { purpose: p, case: c };
    renderResult(v, p, c);
    status(`Similarity ${v.similarity.toFixed(3)}: ${v.decision}.`);
  } catch (e) {
    clearResult();
    showError(formError, e);
    status("");
  } finally {
    submit.textContent = "Compare faces";
    updateSubmit();
    result.setAttribute("aria-busy", "false");
  }
});

function renderResult(v, p, c) {
  const side = (slot, face, label) => h("figure", { class: "vf-face" },
    faceCanvas(slot.img, face.box, `${label}: face ${slot.picker.number(face.index)} of ${slot.file.name}`),
    h("figcaption", { class: "small" }, h("strong", {}, label), ` · face ${slot.picker.number(face.index)}`,
      h("br"), h("span", { class: "muted vf-file" }, slot.file.name)));
  const same = v.same_person_candidate;
  const pct = Math.max(0, Math.min(1, -Math.log10(Math.max(v.fmr, 1e-9)) / 8)) * 100;
  result.replaceChildren(h("div", { class: "card vf-out" },
    h("h2", { tabindex: "-1", id: "vf-out-title" }, "Comparison"),
    h("p", { class: "muted small" }, "Purpose ", h("strong", {}, p), " · case ", h("strong", {}, c), " · model ",
      h("strong", { id: "vf-model" }, v.model)),
    h("div", { class: "vf-pair" },
      side(A, v.face_a, "Photo A"),
      h("div", { class: "vf-score" },
        h("span", { class: `label ${labelClass(v.decision)}`, id: "vf-decision" }, v.decision),
        h("div", { class: "simbar" },
          h("div", { class: `simbar-track ${labelClass(v.decision)}`, role: "meter", "aria-valuemin": "0",
            "aria-valuemax": "1", "aria-valuenow": String(v.similarity), "aria-label": "Similarity",
            title: "Similarity; the bar shows its false-match rate (empty: 1 in 1, full: 1 in 100 million)" },
          h("div", { class: "simbar-fill", style: { width: `${pct.toFixed(1)}%` } })),
          h("span", { class: "simbar-val", id: "vf-similarity" }, v.similarity.toFixed(3))),
        h("dl", { class: "cand-stats" },
          h("div", {}, h("dt", {}, "False-match rate"), h("dd", { id: "vf-fmr", title: String(v.fmr) }, oneIn(v.fmr))))),
      side(B, v.face_b, "Photo B")),
    h("p", { class: "vf-explain" }, same
      ? "These faces may be the same person: a lead for a person to review, never an identification."
      : "Not similar enough to be a candidate for the same person."),
  ));
  $("#vf-out-title").focus({ preventScroll: true });
}

registerPage({
  id: "verify",
  perm: "verify",
  reset: () => {
    A.reset();
    B.reset();
    form.reset();
    clearResult();
    showError(formError, null);
    updateSubmit();
  },
});
