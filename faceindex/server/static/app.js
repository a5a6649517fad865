// faceindex web page: a thin client over the /v1 API. No framework, no build step, no external resources.
// The API key lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer <key>`.
// core.js holds the shared helpers, the API client and the navigation; each page is its own module and registers
// itself; the imports below fix the order of the pages.
import { $, api, route, signIn, signOut, state } from "./core.js";
import "./overview.js";
import "./search.js";
import "./verify.js";
import "./people.js";
import "./audit.js";
import "./privacy.js";
import "./collections.js"; // the admin pages
import "./photos.js";
import "./keys.js";
import "./policy.js";

// --- start -----------------------------------------------------------------------------------------------------------------
async function start() {
  if (state.key) {
    try {
      await signIn(state.key);
    } catch (e) {
      signOut(e.status === 401 ? `Signed out: ${e.message}. Sign in again.` : e.message);
      return;
    }
  }
  route();
  if (!state.me) $("#api-key").focus();
}

start();
