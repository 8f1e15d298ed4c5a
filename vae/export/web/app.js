// The exported page: decodes faces in the browser with onnxruntime-web (decoder.onnx), samples the run's prior
// (model.json) with a seeded generator, and keeps the current face's latent in the URL. Loads nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const GRID = 16;
const SPAN = 3; // sliders reach this many standard deviations either way

let info = null, session = null;
const state = { grid: [], base: null, offsets: [], z: null };
// What tests and curious visitors can read: milliseconds from navigation start to the first grid, and per slider move.
const timings = { firstGrid: null, moves: [] };

function showMessage(text) { $("message-text").textContent = text; $("message").hidden = false; }
function clearMessage() { $("message").hidden = true; }

// ---- loading -------------------------------------------------------------------------------------

async function fetchOk(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path} could not be loaded (${response.status})`);
  return response;
}

async function loadRuntime() {
  // The runtime's WebAssembly file is stored gzipped (2.9 MB instead of 11.2): inflated here, since a plain
  // static file server sends no Content-Encoding.
  const response = await fetchOk("ort-wasm-simd-threaded.wasm.gz");
  const binary = await new Response(response.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
  ort.env.wasm.wasmBinary = binary;
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give
  ort.env.wasm.proxy = false;
  session = await ort.InferenceSession.create("decoder.onnx", { executionProviders: ["wasm"] });
}

// ---- decoding ------------------------------------------------------------------------------------

// uint8 RGB faces (n, size, size, 3) for latents (n arrays of latent_dim numbers).
async function decode(latents) {
  const d = info.latent_dim, flat = new Float32Array(latents.length * d);
  latents.forEach((z, i) => flat.set(z, i * d));
  const input = new ort.Tensor("float32", flat, [latents.length, d]);
  const output = await session.run({ [session.inputNames[0]]: input });
  return output[session.outputNames[0]].data;
}

function draw(canvas, pixels, index) {
  const s = info.image_size, image = new ImageData(s, s), rgb = pixels.subarray(index * s * s * 3, (index + 1) * s * s * 3);
  for (let p = 0; p < s * s; p++) {
    image.data[4 * p] = rgb[3 * p];
    image.data[4 * p + 1] = rgb[3 * p + 1];
    image.data[4 * p + 2] = rgb[3 * p + 2];
    image.data[4 * p + 3] = 255;
  }
  canvas.width = canvas.height = s;
  canvas.getContext("2d").putImageData(image, 0, 0);
}

// At most one decode of the current face in flight; while it runs only the newest request waits, so dragging
// a slider never builds a queue.
const faceView = (() => {
  let busy = false, waiting = null;
  async function send(job) {
    busy = true;
    try {
      draw($("face"), await decode([job.z]), 0);
      showDrawn(job.started);
    } catch (e) {
      showMessage(`decoding failed: ${e.message}`);
    } finally {
      busy = false;
      if (waiting) { const next = waiting; waiting = null; send(next); }
    }
  }
  return { request(z, started) { const job = { z, started }; if (busy) waiting = job; else send(job); } };
})();

function showDrawn(started) {
  $("download").href = $("face").toDataURL("image/png");
  if (started !== undefined) {
    const ms = performance.now() - started;
    timings.moves.push(ms);
    $("timing").textContent = `decoded in ${ms.toFixed(0)} ms`;
  }
  $("face").dispatchEvent(new Event("drawn"));
}

// ---- the prior: a seeded generator, N(0, I) or the run's latent mixture ---------------------------

function generator(seed) { // mulberry32: 32-bit state, plenty for faces
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normals(random, n) { // Box-Muller
  const out = [];
  while (out.length < n) {
    const r = Math.sqrt(-2 * Math.log(1 - random())), angle = 2 * Math.PI * random();
    out.push(r * Math.cos(angle), r * Math.sin(angle));
  }
  return out.slice(0, n);
}

// The mixture's Cholesky factors: base64 of float32 little-endian lower triangles, row by row, one per component.
function unpackTriangles(text, k) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0)), all = new Float32Array(bytes.buffer);
  const size = all.length / k;
  return Array.from({ length: k }, (_, i) => all.subarray(i * size, (i + 1) * size));
}

// `num` latents from the prior, the same for the same seed and temperature (this page's own stream, not sample.py's).
function samplePrior(num, seed, temperature) {
  const prior = info.prior, d = info.latent_dim, random = generator(seed), latents = [];
  for (let i = 0; i < num; i++) {
    const eps = normals(random, d);
    if (prior.kind === "normal") { latents.push(eps.map((e) => temperature * e)); continue; }
    let k = 0, u = random(), total = prior.weights[0];
    while (u > total && k < prior.weights.length - 1) total += prior.weights[++k];
    const L = prior.lower[k];
    latents.push(prior.means[k].map((m, r) => {
      let sum = 0;
      for (let c = 0, at = (r * (r + 1)) / 2; c <= r; c++) sum += L[at + c] * eps[c];
      return m + temperature * sum;
    }));
  }
  return latents;
}

// ---- face codes: base64url of the latent's float32 bytes (little-endian), as in the latent explorer ---------

function encodeLatent(z) {
  const bytes = new Uint8Array(new Float32Array(z).buffer);
  let text = "";
  bytes.forEach((b) => { text += String.fromCharCode(b); });
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
  const z = Array.from(new Float32Array(Uint8Array.from(bytes, (c) => c.charCodeAt(0)).buffer));
  if (!z.every(Number.isFinite)) throw new Error("it holds numbers that are not finite");
  return z;
}

// ---- the current face and its sliders --------------------------------------------------------------

function recordLatent(z) {
  state.z = z;
  const code = encodeLatent(z);
  $("code").value = code;
  $("download").download = `face-${code.slice(0, 8)}.png`;
  history.replaceState(null, "", `#z=${code}`); // replaces: a slider drag must not fill the history
}

function setCurrent(z) {
  state.base = z.slice();
  state.offsets = state.offsets.map(() => 0);
  document.querySelectorAll("#sliders input").forEach((s) => { s.value = 0; sliderText(s); });
  recordLatent(z);
  faceView.request(z);
}

function steered() {
  const z = state.base.slice(), prior = info.prior;
  state.offsets.forEach((offset, k) => {
    const step = offset * prior.sigmas[k];
    prior.directions[k].forEach((u, i) => { z[i] += step * u; });
  });
  return z;
}

function sliderText(slider) {
  const v = Number(slider.value);
  slider.parentElement.querySelector("output").textContent = `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(2)}σ`;
}

function buildSliders() {
  state.offsets = info.prior.labels.map(() => 0);
  $("sliders").replaceChildren(...info.prior.labels.map((label, k) => {
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span class="name"></span><input type="range" min="${-SPAN}" max="${SPAN}" step="0.05" value="0"><output></output>`;
    row.querySelector(".name").textContent = label;
    const slider = row.querySelector("input");
    slider.dataset.index = k;
    slider.addEventListener("input", () => {
      const started = performance.now();
      state.offsets[k] = Number(slider.value);
      sliderText(slider);
      const z = steered();
      recordLatent(z);
      faceView.request(z, started);
    });
    sliderText(slider);
    return row;
  }));
}

// ---- the grid ------------------------------------------------------------------------------------

async function reroll() {
  const seed = Number($("seed").value), temperature = Number($("temperature").value);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) return showMessage("the seed must be a whole number from 0 to 4294967295");
  if (!(temperature > 0 && temperature <= 10)) return showMessage("the temperature must be a number above 0, at most 10");
  const latents = samplePrior(GRID, seed, temperature), pixels = await decode(latents);
  state.grid = latents;
  $("grid").replaceChildren(...latents.map((z, i) => {
    const canvas = document.createElement("canvas");
    draw(canvas, pixels, i);
    canvas.dataset.code = encodeLatent(z);
    canvas.title = "steer this face";
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "button");
    canvas.setAttribute("aria-label", `random face ${i + 1}`);
    const pick = () => {
      clearMessage();
      document.querySelectorAll("#grid canvas").forEach((c) => c.classList.toggle("picked", c === canvas));
      setCurrent(z);
    };
    canvas.addEventListener("click", pick);
    canvas.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") pick(); });
    return canvas;
  }));
}

// ---- the address ---------------------------------------------------------------------------------

function openFromAddress(fallback) {
  const match = location.hash.match(/^#z=(.*)$/);
  if (!match) return false;
  try {
    setCurrent(decodeLatent(decodeURIComponent(match[1])));
    return true;
  } catch (e) {
    showMessage(`The face code in this link cannot be read: ${e.message}. ${fallback}`);
    return false;
  }
}

function openCode() {
  try {
    setCurrent(decodeLatent($("code").value.trim().replace(/^.*#z=/, "")));
    clearMessage();
  } catch (e) {
    showMessage(`That face code cannot be read: ${e.message}.`);
  }
}

// ---- start ---------------------------------------------------------------------------------------

function wire() {
  const again = () => reroll().catch((e) => showMessage(e.message));
  $("message-close").addEventListener("click", clearMessage);
  $("reroll").addEventListener("click", () => { $("seed").value = Number($("seed").value) + 1; again(); });
  ["seed", "temperature"].forEach((id) => $(id).addEventListener("change", again));
  $("reset").addEventListener("click", () => setCurrent(state.base));
  $("open-code").addEventListener("click", openCode);
  $("code").addEventListener("keydown", (e) => { if (e.key === "Enter") openCode(); });
  window.addEventListener("hashchange", () => { if (location.hash !== `#z=${encodeLatent(state.z)}`) openFromAddress("The current face stays."); });
}

async function start() {
  wire();
  try {
    if (typeof ort === "undefined") throw new Error("ort.wasm.min.js (the ONNX runtime) did not load");
    if (typeof DecompressionStream === "undefined") throw new Error("this browser lacks DecompressionStream; use a current one");
    info = await (await fetchOk("model.json")).json();
    if (info.prior.kind === "mixture") info.prior.lower = unpackTriangles(info.prior.cholesky, info.prior.weights.length);
    await loadRuntime();
    $("run-info").textContent = `${info.name}: ${info.image_size} px faces, latent dimension ${info.latent_dim}, `
      + `random faces from ${info.prior.name}; decoded here by ${info.runtime}`;
    buildSliders();
    await reroll();
    timings.firstGrid = performance.now();
    if (!openFromAddress("Showing a random face instead.")) setCurrent(state.grid[0]);
    document.body.dataset.ready = "true";
  } catch (e) {
    showMessage(`The page could not start: ${e.message}`);
  }
}

window.facePage = { samplePrior, decode, encodeLatent, timings };
start();
