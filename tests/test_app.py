"""The latent explorer (explore.py serve): its JSON API on a tiny trained run, and the page itself in a real browser."""
import base64
import http.client
import io
import json
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from benchmarks.explorer import MOVE, slider_latencies

from conftest import MAIN, ROOT, blob_images, changed, face_code, from_code, ready_page, vivid_keras

LATENCY_TARGET_MS = 150  # slider move to new face, median (the target for 64 px faces on a 2-core CPU)


def pixels(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


@contextmanager
def serving(server):
    """A werkzeug server answering from a thread of this process, until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def service(trained, model):
    from vae.app.server import LatentService
    from vae.run import Run

    return LatentService(model, Run.open(trained[1]).prior(model, progress=False), "tiny run")


@pytest.fixture(scope="module")
def client(service):
    from vae.app.server import create_app

    return create_app(service).test_client()


def post(client, path, body):
    return client.post(path, data=body if isinstance(body, str) else json.dumps(body), content_type="application/json")


def upload(client, data: bytes):
    return client.post("/api/encode", data={"image": (io.BytesIO(data), "face.png")}, content_type="multipart/form-data")


# ---- the API ------------------------------------------------------------------------------------------------


def test_info_offers_the_mixtures_principal_directions(client, service):
    info = client.get("/api/info").get_json()
    assert (info["image_size"], info["latent_dim"], info["name"]) == (32, 8, "tiny run")
    assert info["prior"].startswith("gmm (")
    assert len(info["labels"]) == 8 and info["labels"][0].startswith("PC1 (σ=")
    directions = np.array(info["directions"])
    assert np.allclose(directions @ directions.T, np.eye(8), atol=1e-5)  # orthonormal
    assert info["sigmas"] == sorted(info["sigmas"], reverse=True)


def test_without_a_mixture_the_sliders_are_the_first_axes(model):
    from vae.app.server import LatentService
    from vae.priors import StandardNormal

    info = LatentService(model, StandardNormal(model.latent_dim), "bare").info()
    assert info["prior"] == "normal" and info["labels"] == [f"z{i}" for i in range(8)]
    assert info["directions"] == np.eye(8).tolist() and info["sigmas"] == [1.0] * 8


def test_sampling_is_reproducible_and_matches_decoding(client):
    first = post(client, "/api/sample", {"seed": 3, "temperature": 0.8, "num": 5}).get_json()
    assert len(first["faces"]) == 5 and np.array(first["latents"]).shape == (5, 8)
    assert pixels(first["faces"][0]).shape == (32, 32, 3)
    assert post(client, "/api/sample", {"seed": 3, "temperature": 0.8, "num": 5}).get_json() == first
    other = post(client, "/api/sample", {"seed": 4, "temperature": 0.8, "num": 5}).get_json()
    assert other["latents"] != first["latents"] and other["faces"] != first["faces"]
    # A grid face and its latent decoded on its own are the same picture.
    one = post(client, "/api/decode", {"z": first["latents"][2]}).get_json()
    assert np.array_equal(pixels(one["image"]), pixels(first["faces"][2]))


def test_morph_walks_the_great_circle(client, service):
    from vae.evaluation.latent import slerp

    a, b = post(client, "/api/sample", {"seed": 0, "num": 2}).get_json()["latents"]
    half = post(client, "/api/morph", {"a": a, "b": b, "t": 0.5}).get_json()
    assert np.allclose(half["z"], slerp(a, b, [0.5])[0], atol=1e-6)
    assert np.array_equal(pixels(half["image"]), service.decode(np.array([half["z"]], np.float32))[0])


BAD_REQUESTS = [
    ("/api/decode", {"z": [0.0] * 7}, "z must be a list of 8 numbers (the model's latent dimension), got a list of 7"),
    ("/api/decode", '{"z": [0, 0, 0, 0, 0, 0, 0, NaN]}', "z[7] must be a finite number, got nan"),
    ("/api/decode", '{"z": [0, 0, 0, Infinity, 0, 0, 0, 0]}', "z[3] must be a finite number, got inf"),
    ("/api/decode", '{"z": [0, 0, 0, 0, 0, 0, 0, 1e400]}', "z[7] must be a finite number"),
    ("/api/decode", {"z": [0, 0, 0, 0, 0, 0, 0, 10**400]}, "z[7] must be a finite number"),
    ("/api/decode", {"z": [0, 0, 0, 0, 0, 0, 0, 1e39]}, "too large for a latent"),
    ("/api/decode", {"z": "0,0,0,0,0,0,0,0"}, 'z must be a list of 8 numbers'),
    ("/api/decode", {"z": [True] * 8}, "z[0] must be a finite number, got true"),
    ("/api/decode", {"z": ["1"] * 8}, 'z[0] must be a finite number, got "1"'),
    ("/api/decode", {}, "z must be a list of 8 numbers (the model's latent dimension), got null"),
    ("/api/decode", "{not json", "the request body must be a JSON object"),
    ("/api/decode", "[1, 2, 3]", "the request body must be a JSON object"),
    ("/api/sample", {"seed": -1}, "seed must be a whole number from 0 to"),
    ("/api/sample", {"seed": 1.5}, "seed must be a whole number"),
    ("/api/sample", {"seed": True}, "seed must be a whole number"),
    ("/api/sample", {"temperature": 0}, "temperature must be a finite number from 0.01 to 10, got 0"),
    ("/api/sample", {"temperature": "hot"}, "temperature must be a finite number"),
    ("/api/sample", {"num": 65}, "num must be a whole number from 1 to 64, got 65"),
    ("/api/sample", {"num": 0}, "num must be a whole number from 1 to 64, got 0"),
    ("/api/morph", {"a": [0] * 8, "b": [1] * 8, "t": 2}, "t must be a finite number from 0 to 1, got 2"),
    ("/api/morph", {"a": [0] * 8, "b": [1] * 9, "t": 0.5}, "b must be a list of 8 numbers"),
]


@pytest.mark.parametrize("path, body, message", BAD_REQUESTS)
def test_bad_input_gets_400_with_a_message_and_the_server_goes_on(client, path, body, message):
    response = post(client, path, body)
    assert response.status_code == 400 and message in response.get_json()["error"]
    assert post(client, "/api/decode", {"z": [0.0] * 8}).status_code == 200


def test_an_upload_is_reconstructed_with_its_psnr(client, service):
    from vae.model.objective import psnr

    image = blob_images(1, 32, seed=7)[0]
    answer = upload(client, png_bytes(image)).get_json()
    assert np.array_equal(pixels(answer["original"]), image)
    reconstruction = pixels(answer["reconstruction"])
    assert np.array_equal(reconstruction, service.decode(np.array([answer["z"]], np.float32))[0])
    assert answer["psnr"] == pytest.approx(float(np.asarray(psnr(image[None], reconstruction[None]))[0]), abs=0.01)


def bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (its CRC fixed up), as a decompression bomb would."""
    data = bytearray(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("data, message", [
    (b"this is not an image", "cannot use this image: not an image PIL can read"),
    (b"", "cannot use this image: empty file"),
    (png_bytes(np.zeros((8, 8, 3), np.uint8)), "cannot use this image: 8x8 is below half the model's 32px"),
    (png_bytes(np.zeros((64, 64, 3), np.uint8))[:60], "cannot use this image:"),
    (bomb_png(30_000, 30_000), "cannot use this image: it has too many pixels to decode safely"),
])
def test_unusable_uploads_get_400_with_a_message(client, data, message):
    response = upload(client, data)
    assert response.status_code == 400 and message in response.get_json()["error"]
    assert client.get("/api/info").status_code == 200


def test_an_image_over_the_pixel_limit_is_refused(service, monkeypatch):
    from vae.app.server import create_app

    # Above MAX_IMAGE_PIXELS PIL only warns (up to twice that it raises): the app, made here since pytest resets
    # warning filters between tests, makes that warning an error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    response = upload(create_app(service).test_client(), png_bytes(np.zeros((40, 40, 3), np.uint8)))
    assert response.status_code == 400 and "too many pixels" in response.get_json()["error"]


def test_an_upload_over_10_mb_gets_413(client):
    response = upload(client, b"\0" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.get_json()["error"] == "the upload is larger than 10 MB; choose a smaller image"
    assert client.post("/api/encode").get_json()["error"] == "send the image as the multipart form field 'image'"


@pytest.fixture(scope="module")
def live(trained):
    """The trained run's explorer as `explore.py serve` opens it, on a free port: its address."""
    from vae.app.server import open_server

    server, url = open_server(str(trained[1]), "127.0.0.1", 0)
    with serving(server):
        yield url


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client-side clean-up of '..')."""
    connection = http.client.HTTPConnection(url.split("/")[2], timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.parametrize("path", ["/static/../vae/run.py", "/../vae/run.py", "/app.js/../../vae/run.py", "/api/../../etc/passwd",
                                  "/%2e%2e/%2e%2e/etc/passwd", "/static/app.js", "/vae/app/server.py", "/index.html/.."])
def test_no_route_serves_a_path_from_the_request(live, path):
    status, body = raw_get(live, path)
    assert status == 404 and json.loads(body) == {"error": "no such page"}
    assert raw_get(live, "/api/info")[0] == 200


def test_the_page_and_its_files_are_served_with_a_strict_policy(live):
    status, page = raw_get(live, "/")
    assert status == 200 and b"<h1>Latent explorer</h1>" in page
    for name in ("app.js", "app.css", "faces.js"):
        assert raw_get(live, f"/{name}")[0] == 200
    # Nothing on the page comes from elsewhere.
    for name in ("index.html", "app.js", "app.css", "faces.js", "faces.html"):
        text = (ROOT / "vae" / "app" / "static" / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    connection = http.client.HTTPConnection(live.split("/")[2], timeout=30)
    connection.request("GET", "/")
    assert "default-src 'self'" in connection.getresponse().getheader("Content-Security-Policy")


def test_a_pages_parts_must_fill_each_slot_of_the_template_once(tmp_path):
    from vae.app import pages

    parts = tmp_path / "index.html"
    parts.write_text('<template data-slot="title">A page</template>\n<template data-slot="footer">?</template>\n')
    with pytest.raises(ValueError, match="must fill each slot of .*faces.html once: .*footer.*head"):
        pages.render(parts)


def test_serve_refuses_a_port_out_of_range_and_a_port_in_use(live, trained, capsys):
    from vae.cli import invoke
    from vae.errors import UserError

    with pytest.raises(SystemExit) as exit_:
        invoke(MAIN["explore"], ["serve", "--model", str(trained[1]), "--port", "70000"])
    assert exit_.value.code == 2 and "--port must be from 1 to 65535, got 70000" in capsys.readouterr().err
    from vae.app.server import open_server

    with pytest.raises(UserError, match="cannot listen on 127.0.0.1 port .*; choose another --port"):
        open_server(str(trained[1]), "127.0.0.1", int(live.split(":")[2].strip("/")))


def test_serve_without_flask_says_what_to_install(trained, monkeypatch, capsys):
    from vae.cli import invoke

    monkeypatch.setitem(sys.modules, "flask", None)  # import flask now fails as if it were not installed
    with pytest.raises(SystemExit) as exit_:
        invoke(MAIN["explore"], ["serve", "--model", str(trained[1])])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: the latent explorer needs Flask: pip install -r requirements-app.txt\n"


@pytest.mark.slow
def test_the_serve_command_prints_its_address_and_stops_on_ctrl_c(trained):
    with socket.socket() as probe:  # a port free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Python keeps SIGINT ignored if it started so (as a background job's children do): Ctrl-C restored first.
    ctrl_c = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv = sys.argv[1:]; "
              "runpy.run_path('explore.py', run_name='__main__')")
    command = ["explore.py", "serve", "--model", str(trained[1]), "--port", str(port)]
    process = subprocess.Popen([sys.executable, "-c", ctrl_c, *command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        url = f"http://127.0.0.1:{port}/"
        assert line == f"serving the latent explorer of {trained[1]} at {url} (Ctrl-C stops it)\n", process.stderr.read()
        assert raw_get(url, "/api/info")[0] == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and out == "stopped\n" and err == "", err


# ---- the page in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vivid(tmp_path_factory):
    """(address, service) of an explorer on conftest's vivid .keras file, whose faces differ at a glance."""
    from werkzeug.serving import make_server

    from vae.app.server import LatentService, create_app
    from vae.model.vae import load_vae
    from vae.priors import StandardNormal

    file = vivid_keras(tmp_path_factory.mktemp("vivid"))
    service = LatentService(load_vae(file), StandardNormal(8), str(file))
    server = make_server("127.0.0.1", 0, create_app(service), threaded=True)
    with serving(server):
        yield f"http://127.0.0.1:{server.server_port}/", service


# The RGB pixels, at their natural size, of every <img> that `selector` matches.
IMAGE_PIXELS = """(selector) => Array.from(document.querySelectorAll(selector)).map((img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
})"""

def shown(page, selector: str) -> np.ndarray:
    """(n, h, w, 3) pixels of the images `selector` matches, once they have all loaded."""
    page.wait_for_function("(s) => Array.from(document.querySelectorAll(s)).every((i) => i.complete && i.naturalWidth > 1)",
                           arg=selector)
    arrays = [np.array(a, np.uint8) for a in page.evaluate(IMAGE_PIXELS, selector)]
    side = int(np.sqrt(len(arrays[0]) // 4))
    return np.stack([a.reshape(side, side, 4)[..., :3] for a in arrays])


@pytest.mark.slow
def test_the_page_draws_steers_morphs_and_uploads(browser, vivid, tmp_path):
    url, service = vivid
    page, outside, errors = ready_page(browser, url)
    grid = shown(page, "#grid img")
    assert grid.shape == (16, 32, 32, 3)
    page.locator("#grid").screenshot(path=tmp_path / "grid.png")

    # Reroll: new faces, not merely new elements.
    first = page.get_attribute("#grid img", "src")
    page.click("#reroll")
    page.wait_for_function("(s) => document.querySelector('#grid img').src !== s", arg=first)
    assert page.input_value("#seed") == "1"
    assert changed(grid, shown(page, "#grid img")) > 5

    # Pick a face: it is shown large, and the address holds its latent.
    page.click("#grid img:nth-child(3)")
    face = shown(page, "#face")[0]
    assert np.array_equal(face, shown(page, "#grid img:nth-child(3)")[0])
    assert page.eval_on_selector("#face", "(i) => getComputedStyle(i).imageRendering") == "pixelated"

    # A slider redraws it; the address holds the new latent, and reopening that address shows the same face.
    page.evaluate(MOVE, ["#sliders input[data-index='1']", "#face", "2.5"])
    steered = shown(page, "#face")[0]
    assert changed(face, steered) > 5
    code = page.evaluate("location.hash").removeprefix("#z=")
    assert page.input_value("#code") == code
    assert np.array_equal(steered, service.decode(from_code(code)[None])[0])
    again, _, _ = ready_page(browser, f"{url}#z={code}")
    assert np.array_equal(shown(again, "#face")[0], steered)
    again.close()
    assert page.get_attribute("#download", "href") == page.get_attribute("#face", "src")

    # Morph: A and B are the first two faces of the first grid; the slider walks from one to the other.
    middle = shown(page, "#morph-face")[0]
    page.evaluate(MOVE, ["#morph-t", "#morph-face", "0"])
    start = shown(page, "#morph-face")[0]
    assert changed(middle, start) > 5 and changed(start, shown(page, "#morph-a")[0]) < 1
    assert page.text_content("#morph-caption") == "t = 0.00"

    # Upload: something that is no image gets a message; an image is shown as the model sees it, beside its
    # reconstruction and its PSNR.
    (tmp_path / "notes.png").write_text("not an image")
    page.set_input_files("#file", tmp_path / "notes.png")
    page.wait_for_selector("#message", state="visible")
    assert "cannot use this image: not an image PIL can read" in page.text_content("#message")
    assert errors == ["Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"]
    errors.clear()
    image = blob_images(1, 32, seed=11)[0]
    Image.fromarray(image).save(tmp_path / "mine.png")
    page.set_input_files("#file", tmp_path / "mine.png")
    page.wait_for_function("() => /^PSNR -?\\d+\\.\\d+ dB$/.test(document.getElementById('psnr').textContent)")
    assert np.array_equal(shown(page, "#upload-original")[0], image)
    assert page.get_attribute("#upload-recon", "src").startswith("data:image/png;base64,")
    page.click("#upload-use")
    page.wait_for_function("(s) => document.getElementById('face').src === s", arg=page.get_attribute("#upload-recon", "src"))

    # Latency: slider input event to the new face's load event.
    page.click("#grid img:nth-child(5)")
    times = slider_latencies(page, 20)
    median, p90 = statistics.median(times), float(np.percentile(times, 90))
    print(f"slider to new face, 32 px model, {len(times)} moves: median {median:.1f} ms, 90th percentile {p90:.1f} ms")
    assert median < LATENCY_TARGET_MS

    page.screenshot(path=tmp_path / "page.png", full_page=True)
    assert not page.is_visible("#message"), page.text_content("#message")
    assert outside == [] and errors == []
    page.close()


@pytest.mark.slow
@pytest.mark.parametrize("code, message", [
    ("not*base64", "it is empty or holds characters other than"),
    ("AAAA", "it holds 3 bytes, and a face of this model takes 32"),
    (face_code([np.nan] * 8), "it holds numbers that are not finite"),
])
def test_a_malformed_face_code_in_the_address_shows_a_message(browser, vivid, code, message):
    url, _ = vivid
    page, outside, errors = ready_page(browser, f"{url}#z={code}")
    assert page.is_visible("#message")
    assert f"The face code in this link cannot be read: {message}" in page.text_content("#message")
    assert shown(page, "#face").shape == (1, 32, 32, 3)  # a random face instead
    assert raw_get(url, "/api/info")[0] == 200 and errors == [] and outside == []
    page.close()
