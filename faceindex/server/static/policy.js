// faceindex web page: the policy page (admin): what a search must declare, and the opt-out and subject-access
// thresholds with the leak and over-removal rates measured for this model (served by /v1/policy).
import { $, api, confirmStep, h, oneIn, status } from "./core.js";
import { fail, mountPage, pct, rows } from "./admin.js";

const page = mountPage({
  id: "policy",
  label: "Policy",
  perm: "policy",
  load: () => loadPolicy(),
  reset: () => {
    current = null;
  },
  html: `
  <div class="page-head">
    <h1 id="policy-title">Policy</h1>
    <p class="muted">The rules every search and privacy request follows. A change is saved to the data folder's
      policy file and recorded in the audit trail with the policy before and after.</p>
  </div>
  <form class="card admin-form policy-form" id="pol-form" novalidate aria-labelledby="pol-form-title">
    <h2 class="card-title" id="pol-form-title">Searches</h2>
    <div class="field">
      <label for="pol-purposes">Allowed purposes</label>
      <textarea id="pol-purposes" rows="6" aria-describedby="pol-purposes-hint"></textarea>
      <p class="hint" id="pol-purposes-hint">One per line. Empty: any purpose.</p>
    </div>
    <div class="checks">
      <label class="check"><input type="checkbox" id="pol-purpose"> A search must give a purpose</label>
      <label class="check"><input type="checkbox" id="pol-case"> A search must give a case reference</label>
      <label class="check"><input type="checkbox" id="pol-basis"> Photos may only be added to a source with a legal
        basis</label>
    </div>
    <h2 class="card-title section-title">Privacy thresholds</h2>
    <div class="field">
      <label for="pol-optout">Opt-out threshold</label>
      <select id="pol-optout" aria-describedby="pol-optout-hint"></select>
      <p class="hint" id="pol-optout-hint"></p>
    </div>
    <div class="field">
      <label for="pol-access">Subject access threshold</label>
      <select id="pol-access" aria-describedby="pol-access-hint"></select>
      <p class="hint" id="pol-access-hint"></p>
    </div>
    <div class="alert alert-error" id="pol-error" role="alert" hidden></div>
    <button type="submit" class="btn btn-primary" id="pol-save">Review and save…</button>
  </form>
  <div class="card table-card">
    <div class="table-caption">
      <h2 class="card-title" id="pol-rates-title">Measured rates of each threshold</h2>
      <p class="muted small" id="pol-rates-source"></p>
    </div>
    <div class="table-scroll">
      <table class="admin-table" id="pol-rates" aria-labelledby="pol-rates-title">
        <thead><tr><th scope="col">False-match rate</th><th scope="col">Similarity</th>
          <th scope="col">Leak rate</th><th scope="col">Over-removal</th><th scope="col">In use for</th></tr></thead>
        <tbody id="pol-rates-rows"></tbody>
      </table>
    </div>
    <p class="muted small table-foot">Leak rate: share of a person's own photos still found after their opt-out.
      Over-removal: share of everybody else's faces deleted by one opt-out. A lower false-match rate deletes fewer
      bystanders and leaks more of the person.</p>
  </div>`,
});

let current = null;

// An opt-out deletes: its cost is the leak and the bystanders removed. Subject access deletes nothing: what it misses
// of the person, and how many others it lists for review.
const rateText = (r, kind) => `${oneIn(r.fmr)} · similarity ${r.similarity?.toFixed(3) ?? "?"} · ` + (kind === "optout"
  ? `leak ${pct(r.leak_rate)} · over-removal ${pct(r.over_removal)}`
  : `misses ${pct(r.leak_rate)} · lists ${pct(r.over_removal)} of others`);

function options(select, rates, value, kind) {
  const list = rates.some((r) => Math.abs(r.fmr - value.fmr) <= value.fmr * 1e-6) ? rates : [value, ...rates];
  select.replaceChildren(...list.map((r) => h("option", { value: String(r.fmr) }, rateText(r, kind))));
  select.value = String(list.find((r) => Math.abs(r.fmr - value.fmr) <= value.fmr * 1e-6).fmr);
}

function render(p) {
  current = p;
  $("#pol-purposes").value = p.allowed_purposes.join("\n");
  $("#pol-purpose").checked = p.require_purpose;
  $("#pol-case").checked = p.require_case;
  $("#pol-basis").checked = p.require_source_basis;
  options($("#pol-optout"), p.rates, p.optout, "optout");
  options($("#pol-access"), p.rates, p.access, "access");
  $("#pol-optout-hint").textContent = `Now: leak ${pct(p.optout.leak_rate)}, over-removal ` +
    `${pct(p.optout.over_removal)} per opt-out (model ${p.model}).`;
  $("#pol-access-hint").textContent = `Now: a subject access report misses ${pct(p.access.leak_rate)} of the ` +
    "person's faces; nothing is deleted, so a looser threshold only lists more for review.";
  $("#pol-rates-source").textContent = p.rates_source;
  rows($("#pol-rates-rows"), p.rates, (r) => {
    const uses = [Math.abs(r.fmr - p.optout_fmr) < r.fmr * 1e-6 ? "opt-out" : null,
      Math.abs(r.fmr - p.access_fmr) < r.fmr * 1e-6 ? "subject access" : null].filter(Boolean);
    return [
      ["FMR", oneIn(r.fmr)],
      ["Similarity", r.similarity?.toFixed(3) ?? "?", "num"],
      ["Leak rate", pct(r.leak_rate), "num"],
      ["Over-removal", pct(r.over_removal), "num"],
      ["In use", uses.length ? h("strong", {}, uses.join(", ")) : ""],
    ];
  });
}

async function loadPolicy() {
  const err = $("#pol-error");
  try {
    render(await api("v1/policy"));
    fail(err, null);
  } catch (e) {
    fail(err, `Could not load the policy: ${e.message}`);
  }
}

function changes() {
  const purposes = $("#pol-purposes").value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  const next = {
    allowed_purposes: [...new Set(purposes)],
    require_purpose: $("#pol-purpose").checked,
    require_case: $("#pol-case").checked,
    require_source_basis: $("#pol-basis").checked,
    optout_fmr: Number($("#pol-optout").value),
    access_fmr: Number($("#pol-access").value),
  };
  const out = {};
  for (const [k, v] of Object.entries(next)) {
    if (JSON.stringify(v) !== JSON.stringify(current[k])) out[k] = v;
  }
  return out;
}

const LABELS = { allowed_purposes: "Allowed purposes", require_purpose: "Purpose required",
  require_case: "Case reference required", require_source_basis: "Legal basis required to add photos",
  optout_fmr: "Opt-out threshold", access_fmr: "Subject access threshold" };

function show(k, v) {
  if (Array.isArray(v)) return v.length ? v.join(", ") : "any purpose";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (k.endsWith("_fmr")) {
    const r = current.rates.find((x) => Math.abs(x.fmr - v) <= v * 1e-6);
    return r ? `FMR ${oneIn(v)} (leak ${pct(r.leak_rate)}, over-removal ${pct(r.over_removal)})` : `FMR ${oneIn(v)}`;
  }
  return String(v);
}

async function save(ev) {
  ev.preventDefault();
  const err = $("#pol-error");
  fail(err, null);
  if (!current) return;
  const diff = changes();
  if (!Object.keys(diff).length) {
    fail(err, "Nothing has changed.", { focus: $("#pol-save") });
    return;
  }
  const ok = await confirmStep({
    title: "Change the policy?",
    body: [h("ul", { class: "change-list" }, ...Object.entries(diff).map(([k, v]) =>
      h("li", {}, h("strong", {}, `${LABELS[k]}: `), `${show(k, current[k])} → ${show(k, v)}`))),
    "It applies to every request from now on and is recorded in the audit trail."],
    ok: "Save policy",
  });
  if (!ok) {
    $("#pol-save").focus();
    return;
  }
  try {
    render(await api("v1/policy", { method: "PUT", json: diff }));
    status("Policy saved; the change is in the audit trail.");
    $("#pol-save").focus();
  } catch (e) {
    fail(err, `The policy was not changed: ${e.message}`, { focus: $("#pol-save") });
  }
}

$("#pol-form", page).addEventListener("submit", save);
