// faceindex web page: what the admin pages (collections, photos, keys, policy) share. Not a page itself.
// Each admin page builds its own <section> and navigation link here, so index.html stays as it is.
import { $, h, registerPage, showError } from "./core.js";

/** Add a page: its navigation link (after the others), its section in <main> (static markup only: data goes in
 *  with textContent) and its registration. Returns the section. */
export function mountPage({ id, label, perm, html, load, reset }) {
  $("#nav").append(h("a", { href: `#${id}`, dataset: { page: id, perm } }, label));
  const section = h("section", { class: "page page-admin", id: `page-${id}`, "aria-labelledby": `${id}-title`,
    hidden: true });
  section.innerHTML = html;
  $("#main").append(section);
  registerPage({ id, perm, load, reset });
  return section;
}

/** Show an API error (or a string) in the alert next to what caused it, and move focus there when asked. */
export function fail(el, err, { focus = null } = {}) {
  showError(el, err);
  if (err && focus) focus.focus();
}

/** A table's body rows from data; `cells(row)` returns [label, content] pairs (labels stack the cells at 390 px,
 *  where a cell is a two-column grid: a cell of several parts keeps them together in one span). */
export function rows(tbody, data, cells) {
  tbody.replaceChildren(...data.map((row) => h("tr", {}, ...cells(row).map(([label, content, cls]) =>
    h("td", { "data-label": label, class: cls || null }, Array.isArray(content) ? h("span", {}, ...content) : content)))));
}

export const plural = (n, one, many = `${one}s`) => `${Number(n).toLocaleString("en-US")} ${n === 1 ? one : many}`;

export function pct(x) {
  if (x === null || x === undefined) return "not measured";
  return `${Number((x * 100).toPrecision(2))}%`; // two significant digits: 0.42%, 0.049%, 1.4%
}

export function bytes(n) {
  if (n < 1e6) return `${Math.max(1, Math.round(n / 1e3))} kB`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
