// faceindex web page: the overview, the landing page of every role (GET /v1/overview, filtered by role on the
// server): gallery, model pack, index kind, sources, recent jobs, the audit chain; for the admin what needs attention.
import { $, allowedPages, api, fmtTime, h, registerPage, showError, state, status } from "./core.js";

const PAGE_NAMES = { photos: "Add photos", collections: "Collections", audit: "Audit" };
const POLL_MS = 5000; // while an ingest job runs (or the chain's first check) and the overview is shown

const body = h("div", { id: "ov-body", "aria-live": "polite", "aria-busy": "false" });
const error = h("div", { class: "alert alert-error", id: "ov-error", role: "alert", hidden: true });
const refresh = h("button", { type: "button", class: "btn btn-small btn-quiet", id: "ov-refresh" }, "Refresh");
const intro = h("p", { class: "muted", id: "ov-intro" });
$("#main").append(h("section", { class: "page", id: "page-overview", "aria-labelledby": "ov-title", hidden: true },
  h("div", { class: "page-head ov-head" },
    h("div", {}, h("h1", { id: "ov-title" }, "Overview"), intro),
    refresh),
  error,
  body));

let timer = 0;
let loading = 0;

async function load() {
  clearTimeout(timer);
  const mine = ++loading;
  showError(error, null);
  body.setAttribute("aria-busy", "true");
  refresh.disabled = true;
  try {
    const o = await api("v1/overview");
    if (mine !== loading || !state.me) return;
    render(o);
    const busy = o.audit.ok === null || (o.jobs || []).some((j) => j.state === "queued" || j.state === "running");
    if (busy) timer = setTimeout(() => state.page === "overview" && state.me && load(), POLL_MS);
  } catch (e) {
    if (mine === loading && e.status !== 401) showError(error, `Could not load the overview: ${e.message}`);
  } finally {
    if (mine === loading) {
      body.setAttribute("aria-busy", "false");
      refresh.disabled = false;
    }
  }
}

const num = (n) => Number(n).toLocaleString("en-US");

function stat(k, v, id, title) {
  return h("div", { class: "ov-stat", title }, h("dt", {}, k), h("dd", { id }, v));
}

/** A link to another page of the app, when this role has it (else plain text). */
function pageLink(page, text) {
  return page && allowedPages().includes(page) ? h("a", { href: `#${page}` }, text) : null;
}

function render(o) {
  intro.textContent = `What this faceindex holds, as your role (${o.role}) may see it.`;
  const parts = [];
  if (o.attention) parts.push(attention(o.attention));
  parts.push(h("dl", { class: "card ov-stats", "aria-label": "Gallery" },
    stat("Gallery", `${num(o.gallery_faces)} faces`, "ov-gallery", "Faces searchable (above the quality bar)"),
    stat("Photos", num(o.images), "ov-images"),
    stat("Model pack", o.model_pack, "ov-model", "The model pack that made the embeddings"),
    stat("Index", o.index_kind, "ov-index", "The kind of vector index"),
    stat("Sources", num(o.source_count), "ov-sources-count")));
  parts.push(chain(o.audit));
  if (o.sources) parts.push(sources(o.sources));
  else if (!o.source_count) parts.push(h("div", { class: "card empty" }, h("p", {}, h("strong", {}, "No photos yet."),
    " An admin adds photo collections; searches find nothing until then.")));
  if (o.jobs) parts.push(jobs(o.jobs));
  body.replaceChildren(...parts);
}

function attention(items) {
  if (!items.length) {
    return h("div", { class: "card ov-attention ov-ok", id: "ov-attention" },
      h("span", { class: "pill pill-ok" }, "✓ Nothing needs attention"),
      h("span", { class: "muted small" }, "No failed jobs, no expired files held, audit chain intact."));
  }
  return h("div", { class: "card ov-attention ov-warn", id: "ov-attention", role: "region", "aria-labelledby": "ov-att-title" },
    h("h2", { class: "card-title", id: "ov-att-title" }, `⚠ Needs attention (${items.length})`),
    h("ul", { class: "ov-att-list" }, items.map((a) => h("li", { dataset: { kind: a.kind } }, a.message, " ",
      pageLink(a.page, `Open ${PAGE_NAMES[a.page] || a.page}`)))));
}

function chain(a) {
  if (a.ok === null) {
    return h("div", { class: "card verify-card" }, h("div", { class: "verify-state" },
      h("span", { class: "pill", id: "ov-chain" }, "Checking…"),
      h("span", { class: "verify-text" }, `The audit chain (${num(a.records)} records) is being verified.`)));
  }
  const pill = a.ok ? h("span", { class: "pill pill-ok", id: "ov-chain" }, "✓ Audit chain intact")
    : h("span", { class: "pill pill-bad", id: "ov-chain" }, "✕ Audit chain broken");
  const text = [`${num(a.records)} records checked`];
  if (a.checked_at) text.push(" ", h("time", { datetime: a.checked_at }, fmtTime(a.checked_at)));
  if (!a.ok && a.first_bad_seq) text.push(` · first bad record #${a.first_bad_seq}`);
  if (!a.ok && a.problem) text.push(` · ${a.problem}`);
  if (a.head) text.push(" · head ", h("code", { title: "Keep this elsewhere to detect a rewritten log" }, a.head));
  return h("div", { class: "card verify-card" },
    h("div", { class: "verify-state" }, pill, h("span", { class: "verify-text" }, ...text)),
    pageLink("audit", "Open the audit trail"));
}

function sources(list) {
  if (!list.length) {
    return h("div", { class: "card empty", id: "ov-no-sources" }, h("p", {}, h("strong", {}, "No sources yet."),
      " Photos are added to a source (a collection with its legal basis and retention)."),
    pageLink("photos", "Add photos"));
  }
  const rows = list.map((s) => h("tr", { dataset: { source: s.name } },
    h("td", { "data-label": "Source" }, h("strong", {}, s.name)),
    h("td", { "data-label": "Legal basis" }, s.basis || h("span", { class: "muted" }, "not recorded")),
    h("td", { "data-label": "Retention" }, s.retention_days ? `${num(s.retention_days)} days` : "kept"),
    h("td", { "data-label": "Files", class: "num" }, num(s.files)),
    h("td", { "data-label": "Next expiry" }, s.next_expiry ? fmtTime(s.next_expiry) : "—",
      s.expired ? h("span", { class: "badge badge-wait ov-expired" }, "expired, not purged") : null)));
  return h("div", { class: "card table-card" },
    h("h2", { class: "card-title table-caption" }, "Sources"),
    h("div", { class: "table-scroll" }, h("table", { class: "ov-table", id: "ov-sources" },
      h("thead", {}, h("tr", {}, ["Source", "Legal basis", "Retention", "Files", "Next expiry"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
}

function jobs(list) {
  if (!list.length) {
    return h("div", { class: "card small-empty", id: "ov-no-jobs" }, "No ingest jobs yet.");
  }
  const rows = list.map((j) => {
    const progress = j.total ? `${num(j.done)} of ${num(j.total)}` : num(j.done);
    return h("tr", { dataset: { state: j.state } },
      h("td", { "data-label": "Started" }, fmtTime(j.created_at)),
      h("td", { "data-label": "Source" }, j.source || "—"),
      h("td", { "data-label": "By" }, j.started_by || "—"),
      h("td", { "data-label": "State" }, h("span", { class: `badge ov-state-${j.state}` }, j.state),
        j.error ? h("span", { class: "ov-job-error" }, j.error) : null),
      h("td", { "data-label": "Files", class: "num" }, progress),
      h("td", { "data-label": "Faces", class: "num" }, num(j.faces)),
      h("td", { "data-label": "Errors", class: "num" }, num(j.errors)));
  });
  return h("div", { class: "card table-card" },
    h("h2", { class: "card-title table-caption" }, "Recent ingest jobs"),
    h("div", { class: "table-scroll" }, h("table", { class: "ov-table", id: "ov-jobs" },
      h("thead", {}, h("tr", {}, ["Started", "Source", "By", "State", "Files", "Faces", "Errors"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
}

refresh.addEventListener("click", async () => {
  await load();
  if (!error.hidden) return;
  status("Overview refreshed.");
});
// core.js loads a page once per sign-in; the overview is reloaded on every visit (it is a summary of now)
window.addEventListener("hashchange", () => {
  if (state.page === "overview" && state.loaded.has("overview") && body.getAttribute("aria-busy") !== "true") load();
});

registerPage({
  id: "overview",
  perm: null, // every role: the server filters what each role sees
  load,
  reset: () => {
    clearTimeout(timer);
    loading++;
    body.replaceChildren();
    intro.textContent = "";
  },
});
