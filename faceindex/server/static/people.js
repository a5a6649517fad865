// faceindex web page: the people page.
import { $, api, authedImg, baseName, confirmStep, cropUrl, fileName, h, oneIn, registerPage, showError, showFaceImage, status } from "./core.js";

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

registerPage({
  id: "people",
  perm: "people",
  load: loadPeople,
  reset() {
    $("#people-grid").replaceChildren();
    $("#person-view").hidden = true;
    $("#people-list-view").hidden = false;
  },
});
