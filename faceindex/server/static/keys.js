// faceindex web page: the keys page (admin): list, create (the token shown once, with a copy button), revoke.
import { $, api, confirmStep, fmtTime, h, signOut, state, status } from "./core.js";
import { fail, mountPage, rows } from "./admin.js";

const ROLES = ["investigator", "auditor", "privacy-officer", "admin"];

const page = mountPage({
  id: "keys",
  label: "Keys",
  perm: "keys",
  load: () => loadKeys(),
  reset: () => {
    $("#keys-rows").replaceChildren();
    hideToken();
  },
  html: `
  <div class="page-head">
    <h1 id="keys-title">Keys</h1>
    <p class="muted">Each person or program signs in with its own key; its name is the actor in the audit trail and
      its role decides what it may do. Only a hash is stored: a new key is shown once.</p>
  </div>
  <form class="card admin-form" id="key-form" novalidate aria-labelledby="key-form-title">
    <h2 class="card-title" id="key-form-title">New key</h2>
    <div class="field-row wrap-row">
      <div class="field grow">
        <label for="key-name">Key name</label>
        <input id="key-name" autocomplete="off" maxlength="64" required aria-describedby="key-name-hint">
        <p class="hint" id="key-name-hint">Who uses it, e.g. ada or the name of a program.</p>
      </div>
      <div class="field grow">
        <label for="key-role">Role</label>
        <select id="key-role"></select>
      </div>
    </div>
    <div class="alert alert-error" id="key-form-error" role="alert" hidden></div>
    <button type="submit" class="btn btn-primary" id="key-create">Create key</button>
  </form>
  <section class="card token-card" id="key-token" aria-labelledby="key-token-title" hidden tabindex="-1">
    <h2 class="card-title" id="key-token-title">Key created</h2>
    <p id="key-token-who"></p>
    <div class="token-row">
      <label for="key-token-value" class="visually-hidden">The new key</label>
      <input id="key-token-value" readonly spellcheck="false" class="mono">
      <button type="button" class="btn btn-primary" id="key-copy">Copy key</button>
    </div>
    <p class="callout-warn"><strong>Store it now: it is shown only this once.</strong> Give it to its user over a
      safe channel; anyone holding it acts under this name.</p>
    <button type="button" class="btn btn-quiet btn-small" id="key-token-done">Done, hide the key</button>
  </section>
  <div class="alert alert-error" id="keys-error" role="alert" hidden></div>
  <div class="card table-card">
    <div class="table-scroll">
      <table class="admin-table" id="keys-table">
        <caption class="visually-hidden">Keys, active first</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Key</th>
          <th scope="col">Created</th><th scope="col">Last used</th><th scope="col">State</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody id="keys-rows"></tbody>
      </table>
    </div>
  </div>`,
});

$("#key-role", page).replaceChildren(...ROLES.map((r) => h("option", { value: r }, r)));

async function loadKeys() {
  const err = $("#keys-error");
  let keys;
  try {
    keys = await api("v1/keys");
  } catch (e) {
    fail(err, `Could not list the keys: ${e.message}`);
    return;
  }
  fail(err, null);
  keys.sort((a, b) => (!!a.revoked_at - !!b.revoked_at) || b.id - a.id);
  rows($("#keys-rows"), keys, (k) => {
    const you = k.id === state.me?.key_id;
    return [
      ["Name", [h("strong", {}, k.name), you ? h("span", { class: "muted small" }, " (you)") : null]],
      ["Role", k.role],
      ["Key", h("code", {}, `fi_${k.prefix}_…`)],
      ["Created", [fmtTime(k.created_at), h("span", { class: "muted small block" }, `by ${k.created_by}`)]],
      ["Last used", k.last_used_at ? fmtTime(k.last_used_at) : "never"],
      ["State", k.revoked_at ? h("span", { class: "pill pill-bad" }, `revoked ${fmtTime(k.revoked_at)}`)
        : h("span", { class: "pill pill-ok" }, "active")],
      ["", k.revoked_at ? "" : h("button", { type: "button", class: "btn btn-small btn-danger-quiet",
        "aria-label": `Revoke key ${k.id} of ${k.name}`, onclick: (ev) => revoke(k, you, ev.currentTarget) }, "Revoke…")],
    ];
  });
}

function hideToken() {
  $("#key-token-value").value = "";
  $("#key-token").hidden = true;
}

async function create(ev) {
  ev.preventDefault();
  const err = $("#key-form-error");
  fail(err, null);
  const name = $("#key-name").value.trim();
  const role = $("#key-role").value;
  if (!name) {
    fail(err, "Give the key a name: who or what uses it.", { focus: $("#key-name") });
    return;
  }
  const btn = $("#key-create");
  btn.disabled = true;
  try {
    const k = await api("v1/keys", { method: "POST", json: { name, role } });
    $("#key-token-who").textContent = `Key ${k.id} for ${k.name} (${k.role}):`;
    $("#key-token-value").value = k.token;
    $("#key-token").hidden = false;
    $("#key-name").value = "";
    $("#key-token").focus();
    status(`Key for ${k.name} created; the creation is in the audit trail.`);
    loadKeys();
  } catch (e) {
    fail(err, e.message, { focus: $("#key-name") });
  } finally {
    btn.disabled = false;
  }
}

async function copyToken() {
  const input = $("#key-token-value");
  try {
    await navigator.clipboard.writeText(input.value);
    status("Key copied to the clipboard.");
  } catch {
    input.select(); // no clipboard access: leave it selected for Ctrl+C
    status("The key is selected: press Ctrl+C (or ⌘C) to copy it.");
  }
}

async function revoke(k, you, btn) {
  const ok = await confirmStep({
    title: `Revoke ${k.name}'s key?`,
    body: [h("p", {}, h("strong", {}, `Key ${k.id} (${k.role}, fi_${k.prefix}_…) stops working at once.`)),
      you ? "This is the key you are signed in with: you will be signed out." : "Whoever uses it is signed out.",
      "It cannot be restored; create a new key instead. The revocation is recorded in the audit trail."],
    ok: "Revoke key",
    danger: true,
  });
  if (!ok) {
    btn.focus();
    return;
  }
  try {
    await api(`v1/keys/${k.id}`, { method: "DELETE" });
    if (you) {
      signOut("Your key was revoked. Sign in with another key.");
      return;
    }
    status(`Key ${k.id} of ${k.name} revoked.`);
    await loadKeys();
    $("#key-name").focus();
  } catch (e) {
    fail($("#keys-error"), `Could not revoke key ${k.id}: ${e.message}`, { focus: btn });
  }
}

$("#key-form", page).addEventListener("submit", create);
$("#key-copy", page).addEventListener("click", copyToken);
$("#key-token-done", page).addEventListener("click", () => {
  hideToken();
  $("#key-name").focus();
});
