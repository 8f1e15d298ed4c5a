// The latent explorer's page: asks the server (vae/app/server.py) for faces and keeps the current latent in the URL.
// What it shares with the exported page (messages, face codes, sliders, the address) is in faces.js.
import { $, GRID, clearMessage, currentFace, gridSettings, liveView, pickable, showMessage, showRunInfo, start }
  from "./faces.js";

let info = null, current = null; // the model's description (/api/info) and the current face (faces.js), once loaded
const state = { grid: [], image: null, a: null, b: null, morph: null, upload: null };

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

// Live views of the server's answers (faces.js): dragging a slider never builds a queue of requests.
const served = (path) => liveView((body) => api(path, body), (e) => showMessage(e.message));
const faceView = served("/api/decode");
const morphView = served("/api/morph");

// ---- the current face ----------------------------------------------------------------------------

function showFace(image) {
  state.image = image;
  $("face").src = image;
  $("download").href = image;
}

const decodeFace = (z) => faceView.request({ z }, (d) => showFace(d.image));

// A face opened to steer from: with its image it shows at once, else it is decoded.
function openFace(z, image) {
  if (image) { faceView.supersede(); showFace(image); } else decodeFace(z);
}

// ---- the grid ------------------------------------------------------------------------------------

async function reroll() {
  const settings = gridSettings();
  if (!settings) return;
  const data = await api("/api/sample", { ...settings, num: GRID });
  state.grid = data.latents.map((z, i) => ({ z, image: data.faces[i] }));
  $("grid").replaceChildren(...state.grid.map((face, i) => {
    const img = document.createElement("img");
    img.className = "pixelated";
    img.src = face.image;
    img.alt = `random face ${i + 1}`;
    return pickable(img, () => current.open(face.z, face.image));
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

// ---- the link ------------------------------------------------------------------------------------

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
  const shown = () => ({ z: current.z, image: state.image });
  $("to-a").addEventListener("click", () => setEnd("a", shown()));
  $("to-b").addEventListener("click", () => setEnd("b", shown()));
  $("morph-t").addEventListener("input", morph);
  $("morph-use").addEventListener("click", () => { if (state.morph) current.open(state.morph.z, state.morph.image); });
  $("file").addEventListener("change", upload);
  $("upload-use").addEventListener("click", () => current.open(state.upload.z, state.upload.image));
  $("upload-a").addEventListener("click", () => setEnd("a", state.upload));
  $("upload-b").addEventListener("click", () => setEnd("b", state.upload));
  $("copy").addEventListener("click", copyLink);
}

wire();
start(reroll, async () => {
  info = await api("/api/info");
  showRunInfo(info, info.prior === "normal" ? "N(0, I)" : `the run's latent mixture (${info.prior})`);
  current = currentFace({ ...info, dim: info.latent_dim }, openFace, decodeFace);
  await reroll();
  if (!current.openAddress("Showing a random face instead.")) current.open(state.grid[0].z, state.grid[0].image);
  setEnd("a", state.grid[0]);
  setEnd("b", state.grid[1]);
});
