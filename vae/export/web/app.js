// The exported page: decodes faces in the browser with onnxruntime-web (decoder.onnx), samples the run's prior
// (model.json) with a seeded generator, and keeps the current face's latent in the URL. Loads nothing from elsewhere.
// What it shares with the latent explorer's page (messages, face codes, sliders, the address) is in faces.js, which the
// web export copies beside it.
import { $, GRID, currentFace, encodeLatent, gridSettings, liveView, pickable, showMessage, showRunInfo, start }
  from "./faces.js";

let info = null, session = null, current = null; // model.json, the decoder's session, the current face (faces.js)
let grid = []; // the grid's latents
// What tests and curious visitors can read: milliseconds from navigation start to the first grid, and per slider move.
const timings = { firstGrid: null, moves: [] };

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

// At most one decode of the current face in flight (faces.js): dragging a slider never builds a queue.
const faceView = liveView((z) => decode([z]), (e) => showMessage(`decoding failed: ${e.message}`));

function drawFace(z, started) {
  faceView.request(z, (pixels) => { draw($("face"), pixels, 0); showDrawn(started); });
}

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

// ---- the grid ------------------------------------------------------------------------------------

async function reroll() {
  const settings = gridSettings(2 ** 32 - 1);
  if (!settings) return;
  const latents = samplePrior(GRID, settings.seed, settings.temperature), pixels = await decode(latents);
  grid = latents;
  $("grid").replaceChildren(...latents.map((z, i) => {
    const canvas = document.createElement("canvas");
    draw(canvas, pixels, i);
    canvas.dataset.code = encodeLatent(z);
    canvas.setAttribute("role", "button");
    canvas.setAttribute("aria-label", `random face ${i + 1}`);
    return pickable(canvas, () => {
      document.querySelectorAll("#grid canvas").forEach((c) => c.classList.toggle("picked", c === canvas));
      current.open(z);
    });
  }));
}

// ---- start ---------------------------------------------------------------------------------------

window.facePage = { samplePrior, decode, encodeLatent, timings };
start(reroll, async () => {
  if (typeof ort === "undefined") throw new Error("ort.wasm.min.js (the ONNX runtime) did not load");
  if (typeof DecompressionStream === "undefined") throw new Error("this browser lacks DecompressionStream; use a current one");
  info = await (await fetchOk("model.json")).json();
  if (info.prior.kind === "mixture") info.prior.lower = unpackTriangles(info.prior.cholesky, info.prior.weights.length);
  await loadRuntime();
  showRunInfo(info, `${info.prior.name}; decoded here by ${info.runtime}`);
  current = currentFace({ ...info.prior, dim: info.latent_dim }, drawFace, drawFace);
  await reroll();
  timings.firstGrid = performance.now();
  if (!current.openAddress("Showing a random face instead.")) current.open(grid[0]);
});
