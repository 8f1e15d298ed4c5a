// The latent explorer's page: asks the server (vae/app/server.py) for faces and keeps the current latent in the URL.
"use strict";

const $ = (id) => document.getElementById(id);
const GRID = 16;
const SPAN = 3; // sliders reach this many standard deviations either way

let info = null;
const state = { grid: [], base: null, offsets: [], z: null, image: null, a: null, b: null, morph: null, upload: null };

// ---- talking to the server -------------------------------------------------------------------

async function api(path, body) {
  const init = body === undefined ? {} : body instanceof FormData ? { method: "POST", body }
    : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Error("the server does not answer: is explore.py serve still running?");
  }
  let data = null;
  try { data = await response.json(); } catch (e) { /* a reply without JSON: the status says enough */ }
  if (!response.ok) throw new Error((data && data.error) || `the server answered ${response.status}`);
  return data;
}

// A live view: at most one request in flight; while it runs, only the newest next request waits, and an
// answer older than what is already shown is dropped. Dragging a slider so never builds a queue.
function liveView(path) {
  let issued = 0, shown = 0, busy = false, waiting = null;
  async function send(job) {
    busy = true;
    try {
      const data = await api(path, job.body);
      if (job.version > shown) { shown = job.version; job.show(data); }
    } catch (e) {
      if (job.version > shown) showMessage(e.message);
    } finally {
      busy = false;
      if (waiting) { const next = waiting; waiting = null; send(next); }
    }
  }
  return {
    request(body, show) {
      const job = { version: ++issued, body, show };
      if (busy) waiting = job; else send(job);
    },
    supersede() { shown = ++issued; waiting = null; }, // something newer was shown without asking
  };
}

const faceView = liveView("/api/decode");
const morphView = liveView("/api/morph");

// ---- messages ----------------------------------------------------------------------------------

function showMessage(text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}

function clearMessage() { $("message").hidden = true; }

// ---- face codes: base64url of the latent's float32 bytes (little-endian) --------------------------

function encodeLatent(z) {
  const view = new DataView(new ArrayBuffer(4 * z.length));
  z.forEach((v, i) => view.setFloat32(4 * i, v, true));
  let text = "";
  new Uint8Array(view.buffer).forEach((b) => { text += String.fromCharCode(b); });
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function decodeLatent(code) {
  if (!/^[A-Za-z0-9_-]+$/.test(code)) throw new Error("it is empty or holds characters other than A-Z a-z 0-9 - _");
  let bytes;
  try {
    bytes = atob(code.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (code.length % 4)) % 4));
  } catch (e) {
    throw new Error("it is not valid base64url");
  }
  if (bytes.length !== 4 * info.latent_dim) {
    throw new Error(`it holds ${bytes.length} bytes, and a face of this model takes ${4 * info.latent_dim}`);
  }
  const view = new DataView(Uint8Array.from(bytes, (c) => c.charCodeAt(0)).buffer);
  const z = Array.from({ length: info.latent_dim }, (_, i) => view.getFloat32(4 * i, true));
  if (!z.every(Number.isFinite)) throw new Error("it holds numbers that are not finite");
  return z;
}

// ---- the current face ----------------------------------------------------------------------------

function showFace(image) {
  state.image = image;
  $("face").src = image;
  $("download").href = image;
}

function recordLatent(z) {
  state.z = z;
  const code = encodeLatent(z);
  $("code").value = code;
  $("download").download = `face-${code.slice(0, 8)}.png`;
  history.replaceState(null, "", `#z=${code}`); // replaces: a slider drag must not fill the history
}

// A new face to steer from; with its image it shows at once, else it is decoded.
function setCurrent(z, image) {
  state.base = z.slice();
  state.offsets = state.offsets.map(() => 0);
  document.querySelectorAll("#sliders input").forEach((s) => { s.value = 0; updateSliderText(s); });
  recordLatent(z);
  if (image) { faceView.supersede(); showFace(image); } else faceView.request({ z }, (d) => showFace(d.image));
}

function steered() {
  const z = state.base.slice();
  state.offsets.forEach((offset, k) => {
    const step = offset * info.sigmas[k];
    info.directions[k].forEach((u, i) => { z[i] += step * u; });
  });
  return z;
}

function updateSliderText(slider) {
  const v = Number(slider.value);
  slider.parentElement.querySelector("output").textContent = `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(2)}σ`;
}

function buildSliders() {
  const box = $("sliders");
  state.offsets = info.labels.map(() => 0);
  info.labels.forEach((label, k) => {
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span class="name"></span><input type="range" min="${-SPAN}" max="${SPAN}" step="0.05" value="0"><output></output>`;
    row.querySelector(".name").textContent = label;
    const slider = row.querySelector("input");
    slider.dataset.index = k;
    slider.addEventListener("input", () => {
      state.offsets[k] = Number(slider.value);
      updateSliderText(slider);
      const z = steered();
      recordLatent(z);
      faceView.request({ z }, (d) => showFace(d.image));
    });
    updateSliderText(slider);
    box.appendChild(row);
  });
}

// ---- the grid ------------------------------------------------------------------------------------

async function reroll() {
  const seed = Number($("seed").value), temperature = Number($("temperature").value);
  if (!Number.isInteger(seed) || seed < 0) return showMessage("the seed must be a whole number of at least 0");
  if (!(temperature > 0 && temperature <= 10)) return showMessage("the temperature must be a number above 0, at most 10");
  const data = await api("/api/sample", { seed, temperature, num: GRID });
  state.grid = data.latents.map((z, i) => ({ z, image: data.faces[i] }));
  const grid = $("grid");
  grid.replaceChildren(...state.grid.map((face, i) => {
    const img = document.createElement("img");
    img.className = "pixelated";
    img.src = face.image;
    img.alt = `random face ${i + 1}`;
    img.title = "steer this face";
    img.tabIndex = 0;
    const pick = () => { clearMessage(); setCurrent(face.z, face.image); };
    img.addEventListener("click", pick);
    img.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") pick(); });
    return img;
  }));
}

// ---- morph -----------------------------------------------------------------------------------------

function setEnd(which, face) {
  state[which] = { z: face.z.slice(), image: face.image };
  $(`morph-${which}`).src = face.image;
  morph();
}

function morph() {
  const t = Number($("morph-t").value);
  $("morph-caption").textContent = `t = ${t.toFixed(2)}`;
  if (!state.a || !state.b) return;
  morphView.request({ a: state.a.z, b: state.b.z, t }, (d) => {
    state.morph = { z: d.z, image: d.image };
    $("morph-face").src = d.image;
  });
}

// ---- upload ----------------------------------------------------------------------------------------

async function upload() {
  const file = $("file").files[0];
  if (!file) return;
  if (file.size > info.max_upload) {
    return showMessage(`${file.name} is larger than ${info.max_upload / 2 ** 20} MB; choose a smaller image`);
  }
  const form = new FormData();
  form.append("image", file);
  $("psnr").textContent = "encoding…";
  try {
    const data = await api("/api/encode", form);
    state.upload = { z: data.z, image: data.reconstruction };
    $("upload-original").src = data.original;
    $("upload-recon").src = data.reconstruction;
    $("psnr").textContent = `PSNR ${data.psnr.toFixed(2)} dB`;
    ["upload-use", "upload-a", "upload-b"].forEach((id) => { $(id).disabled = false; });
    clearMessage();
  } catch (e) {
    $("psnr").textContent = "";
    showMessage(e.message);
  }
}

// ---- the address --------------------------------------------------------------------------------

// The face in the address, if any: true when one was opened; a malformed one is reported, not thrown.
function openFromAddress(fallback) {
  const match = location.hash.match(/^#z=(.*)$/);
  if (!match) return false;
  try {
    setCurrent(decodeLatent(decodeURIComponent(match[1])));
    clearMessage();
    return true;
  } catch (e) {
    showMessage(`The face code in this link cannot be read: ${e.message}. ${fallback}`);
    return false;
  }
}

function openCode() {
  const code = $("code").value.trim().replace(/^.*#z=/, "");
  try {
    setCurrent(decodeLatent(code));
    clearMessage();
  } catch (e) {
    showMessage(`That face code cannot be read: ${e.message}.`);
  }
}

async function copyLink() {
  try {
    await navigator.clipboard.writeText(location.href);
    $("copy").textContent = "Copied";
  } catch (e) { // no clipboard permission: leave the code selected for Ctrl-C
    $("code").select();
    $("copy").textContent = "Press Ctrl-C";
  }
  setTimeout(() => { $("copy").textContent = "Copy link"; }, 1500);
}

// ---- start ---------------------------------------------------------------------------------------

function wire() {
  $("message-close").addEventListener("click", clearMessage);
  $("reroll").addEventListener("click", () => {
    $("seed").value = Number($("seed").value) + 1;
    reroll().catch((e) => showMessage(e.message));
  });
  ["seed", "temperature"].forEach((id) => $(id).addEventListener("change", () => reroll().catch((e) => showMessage(e.message))));
  $("reset").addEventListener("click", () => setCurrent(state.base, null));
  $("to-a").addEventListener("click", () => setEnd("a", state));
  $("to-b").addEventListener("click", () => setEnd("b", state));
  $("morph-t").addEventListener("input", morph);
  $("morph-use").addEventListener("click", () => { if (state.morph) setCurrent(state.morph.z, state.morph.image); });
  $("file").addEventListener("change", upload);
  $("upload-use").addEventListener("click", () => setCurrent(state.upload.z, state.upload.image));
  $("upload-a").addEventListener("click", () => setEnd("a", state.upload));
  $("upload-b").addEventListener("click", () => setEnd("b", state.upload));
  $("open-code").addEventListener("click", openCode);
  $("code").addEventListener("keydown", (e) => { if (e.key === "Enter") openCode(); });
  $("copy").addEventListener("click", copyLink);
  window.addEventListener("hashchange", () => openFromAddress("The current face stays."));
}

async function start() {
  wire();
  try {
    info = await api("/api/info");
    $("run-info").textContent = `${info.name}: ${info.image_size} px faces, latent dimension ${info.latent_dim}, `
      + `random faces from ${info.prior === "normal" ? "N(0, I)" : `the run's latent mixture (${info.prior})`}`;
    buildSliders();
    await reroll();
    if (!openFromAddress("Showing a random face instead.")) setCurrent(state.grid[0].z, state.grid[0].image);
    setEnd("a", state.grid[0]);
    setEnd("b", state.grid[1]);
    document.body.dataset.ready = "true";
  } catch (e) {
    showMessage(`The page could not start: ${e.message}`);
  }
}

start();
