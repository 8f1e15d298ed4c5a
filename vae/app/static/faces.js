// What the two face pages share: the latent explorer's (app.js beside this file, served by vae/app/server.py) and the
// exported page's (vae/export/web/app.js, beside which the web export copies this file). Their markup is one
// template too, faces.html (vae/app/pages.py fills it in). Each page makes its faces its own way, the explorer by
// asking its server and the exported page in the browser; messages, face codes, the sliders, the code box and the
// address work the same on both.

export const $ = (id) => document.getElementById(id);
export const GRID = 16; // faces in the random grid
const SPAN = 3; // sliders reach this many standard deviations either way

// ---- messages and starting --------------------------------------------------------------------------

export function showMessage(text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}

export function clearMessage() { $("message").hidden = true; }

// Wires the message's close button and the grid's controls (Reroll: the next seed; a new seed or temperature), each
// calling reroll(), then runs load(): the body is marked ready when it is done, or a message says why it failed.
export async function start(reroll, load) {
  const again = () => reroll().catch((e) => showMessage(e.message));
  $("message-close").addEventListener("click", clearMessage);
  $("reroll").addEventListener("click", () => { $("seed").value = Number($("seed").value) + 1; again(); });
  ["seed", "temperature"].forEach((id) => $(id).addEventListener("change", again));
  try {
    await load();
    document.body.dataset.ready = "true";
  } catch (e) {
    showMessage(`The page could not start: ${e.message}`);
  }
}

// The line under the title: the run, its faces' size, its latent dimension, and what the random faces come from.
export function showRunInfo(info, source) {
  $("run-info").textContent = `${info.name}: ${info.image_size} px faces, latent dimension ${info.latent_dim}, `
    + `random faces from ${source}`;
}

// ---- a live view --------------------------------------------------------------------------------------

// At most one request in flight; while it runs, only the newest next request waits, and an answer older than what is
// already shown is dropped. Dragging a slider so never builds a queue. work(input) answers a request; fail(error)
// reports a request that failed.
export function liveView(work, fail) {
  let issued = 0, shown = 0, busy = false, waiting = null;
  async function send(job) {
    busy = true;
    try {
      const answer = await work(job.input);
      if (job.version > shown) { shown = job.version; job.show(answer); }
    } catch (e) {
      if (job.version > shown) fail(e);
    } finally {
      busy = false;
      if (waiting) { const next = waiting; waiting = null; send(next); }
    }
  }
  return {
    request(input, show) {
      const job = { version: ++issued, input, show };
      if (busy) waiting = job; else send(job);
    },
    supersede() { shown = ++issued; waiting = null; }, // something newer was shown without asking
  };
}

// ---- the grid -------------------------------------------------------------------------------------------

// The seed and temperature typed for the grid, or null once a message has said what is wrong with them.
export function gridSettings(maxSeed = Infinity) {
  const seed = Number($("seed").value), temperature = Number($("temperature").value);
  if (!Number.isInteger(seed) || seed < 0 || seed > maxSeed) {
    showMessage(`the seed must be a whole number ${maxSeed === Infinity ? "of at least 0" : `from 0 to ${maxSeed}`}`);
    return null;
  }
  if (!(temperature > 0 && temperature <= 10)) {
    showMessage("the temperature must be a number above 0, at most 10");
    return null;
  }
  return { seed, temperature };
}

// A face of the grid: focusable, and picked by a click, Enter or Space (pick() after any message is cleared).
export function pickable(element, pick) {
  const picked = () => { clearMessage(); pick(); };
  element.title = "steer this face";
  element.tabIndex = 0;
  element.addEventListener("click", picked);
  element.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") picked(); });
  return element;
}

// ---- face codes: base64url of the latent's float32 bytes (little-endian) ---------------------------------

export function encodeLatent(z) {
  const view = new DataView(new ArrayBuffer(4 * z.length));
  z.forEach((v, i) => view.setFloat32(4 * i, v, true));
  let text = "";
  new Uint8Array(view.buffer).forEach((b) => { text += String.fromCharCode(b); });
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The latent of a face code for a model of latent dimension `dim`; an Error saying what is wrong with a bad one.
export function decodeLatent(code, dim) {
  if (!/^[A-Za-z0-9_-]+$/.test(code)) throw new Error("it is empty or holds characters other than A-Z a-z 0-9 - _");
  let bytes;
  try {
    bytes = atob(code.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (code.length % 4)) % 4));
  } catch (e) {
    throw new Error("it is not valid base64url");
  }
  if (bytes.length !== 4 * dim) throw new Error(`it holds ${bytes.length} bytes, and a face of this model takes ${4 * dim}`);
  const view = new DataView(Uint8Array.from(bytes, (c) => c.charCodeAt(0)).buffer);
  const z = Array.from({ length: dim }, (_, i) => view.getFloat32(4 * i, true));
  if (!z.every(Number.isFinite)) throw new Error("it holds numbers that are not finite");
  return z;
}

// ---- the current face -------------------------------------------------------------------------------------

// The current face: the latent it was opened at (base), moved by the sliders along the prior's principal directions
// (each in its standard deviations), kept in the code box, the download's name and the address. Builds the sliders
// and wires them, Reset sliders, the code box and the address. show(z, ...how) shows a face opened at z (how: what
// open() was given after z); moved(z, started) one a slider moved to (started: the time of its input event).
export function currentFace({ dim, labels, directions, sigmas }, show, moved) {
  const offsets = labels.map(() => 0);
  let base = null, z = null;

  function record(latent) {
    z = latent;
    const code = encodeLatent(latent);
    $("code").value = code;
    $("download").download = `face-${code.slice(0, 8)}.png`;
    history.replaceState(null, "", `#z=${code}`); // replaces: a slider drag must not fill the history
  }

  function steered() {
    const latent = base.slice();
    offsets.forEach((offset, k) => {
      const step = offset * sigmas[k];
      directions[k].forEach((u, i) => { latent[i] += step * u; });
    });
    return latent;
  }

  const rows = labels.map((label, k) => {
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span class="name"></span><input type="range" min="${-SPAN}" max="${SPAN}" step="0.05" value="0"><output></output>`;
    row.querySelector(".name").textContent = label;
    const slider = row.querySelector("input");
    slider.dataset.index = k;
    slider.addEventListener("input", () => {
      const started = performance.now();
      offsets[k] = Number(slider.value);
      showOffset(slider);
      record(steered());
      moved(z, started);
    });
    showOffset(slider);
    return row;
  });
  $("sliders").replaceChildren(...rows);
  const sliders = rows.map((row) => row.querySelector("input"));

  // A new face to steer from, the sliders back at 0.
  function open(latent, ...how) {
    base = latent.slice();
    offsets.fill(0);
    sliders.forEach((slider) => { slider.value = 0; showOffset(slider); });
    record(latent);
    show(latent, ...how);
  }

  // Opens the face of the code that read() gives: true if it did, else a message starting with `failure` says why.
  function openCode(read, failure, after = "") {
    try {
      open(decodeLatent(read(), dim));
      clearMessage();
      return true;
    } catch (e) {
      showMessage(`${failure}: ${e.message}.${after}`);
      return false;
    }
  }

  // The face in the address, if any: true when one was opened; a malformed one is reported, not thrown.
  function openAddress(fallback) {
    const match = location.hash.match(/^#z=(.*)$/);
    return match !== null
      && openCode(() => decodeURIComponent(match[1]), "The face code in this link cannot be read", ` ${fallback}`);
  }

  const openTyped = () => openCode(() => $("code").value.trim().replace(/^.*#z=/, ""), "That face code cannot be read");
  $("reset").addEventListener("click", () => { if (base !== null) open(base); });
  $("open-code").addEventListener("click", openTyped);
  $("code").addEventListener("keydown", (e) => { if (e.key === "Enter") openTyped(); });
  window.addEventListener("hashchange", () => {
    if (z === null || location.hash !== `#z=${encodeLatent(z)}`) openAddress("The current face stays.");
  });
  return { open, openAddress, get z() { return z; } };
}

function showOffset(slider) {
  const v = Number(slider.value);
  slider.parentElement.querySelector("output").textContent = `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(2)}σ`;
}
