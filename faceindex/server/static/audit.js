// faceindex web page: the audit page.
import { $, api, fmtTime, h, registerPage, showError } from "./core.js";

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
      const face = d.face !== null && d.face !== undefined ? ` · face index ${d.face}` : ""; // one face of the probe
      return `${n} candidate${n === 1 ? "" : "s"}${face}${probe}`;
    }
    case "verify": {
      const faces = `faces ${d.face_a ?? "largest"} / ${d.face_b ?? "largest"}`;
      if (d.error) return `${faces} · ${d.error}`;
      return `${d.decision} · similarity ${Number(d.similarity).toFixed(3)} · ${faces}`;
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

registerPage({
  id: "audit",
  perm: "audit",
  load: loadAudit,
  reset() {
    $("#audit-rows").replaceChildren();
    $("#verify-pill").textContent = "Not checked";
    $("#verify-pill").className = "pill";
    $("#verify-text").textContent = "";
  },
});
