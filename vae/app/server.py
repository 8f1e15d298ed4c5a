"""The latent explorer's server: the run's model loaded once, a small JSON API around it, and one static page.

Faces travel as PNG data URLs and latents as lists of numbers. Every input is checked: a bad one gets a 400 with a
message the page shows, and the server goes on serving. One lock serialises the model, so concurrent requests
never need a second copy of it; uploads are decoded by two threads of their own, so memory stays bounded too.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import math
import socket
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, request, send_file
from PIL import Image
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from vae.app import pages
from vae.data.image_files import load_image, skip_reason
from vae.errors import UserError

STATIC = Path(__file__).with_name("static")
# All the page there is; index.html holds the explorer's parts of the template it shares with the exported page.
FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css", "faces.js": "text/javascript"}
MAX_FACES = 64  # faces per /api/sample: a grid, not a batch job
MAX_UPLOAD = 10 * 1024 * 1024
MAX_JSON = 256 * 1024  # the largest body the page sends, two latents of 1,024 numbers, is under 50 KB
# Uploads are decoded by DECODE_SLOTS threads of their own and at most DECODE_QUEUE wait for them; more get a 503.
# Decoded in the requests' own threads, ten parallel uploads of a 9400x9400 PNG had taken the server from 0.6 to
# 4.0 GB, and even one at a time each thread kept what it had used; ten at load_image's pixel limit now add 0.3 GB.
DECODE_SLOTS = 2
DECODE_QUEUE = 16
DIRECTIONS = 8  # sliders: the mixture's most spread-out directions
# The page loads nothing from elsewhere; the browser enforces it.
POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
          "frame-ancestors 'none'")


class BadInput(ValueError):
    """A request refused with 400 (or `status`); the message says what to fix."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class LatentService:
    """The model and what random latents are drawn from; every call into the model holds one lock."""

    def __init__(self, model, prior, name: str = "model"):
        self.model, self.prior, self.name = model, prior, name
        self.image_size, self.latent_dim = model.image_size, model.latent_dim
        self._lock = threading.Lock()
        directions, sigmas = prior.principal_directions()
        self.directions, self.sigmas = directions[:DIRECTIONS], sigmas[:DIRECTIONS]
        self.labels = [prior.direction_label(i, s) for i, s in enumerate(self.sigmas)]
        self.decode(np.zeros((1, self.latent_dim), np.float32))  # trace now, so the first request is as quick as the rest

    def info(self) -> dict:
        return {"name": self.name, "image_size": self.image_size, "latent_dim": self.latent_dim, "prior": self.prior.describe(),
                "directions": self.directions.tolist(), "sigmas": self.sigmas.tolist(), "labels": self.labels,
                "max_faces": MAX_FACES, "max_upload": MAX_UPLOAD}

    def decode(self, z: np.ndarray) -> np.ndarray:
        """uint8 faces (n, size, size, 3) for latents (n, latent_dim)."""
        from vae.model.vae import decode

        with self._lock:
            return decode(self.model, z)

    def sample(self, num: int, seed: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """(latents, faces) drawn from the run's prior, the same for the same seed and temperature."""
        from vae.priors import prior_latents

        z = prior_latents(self.prior, num, seed, temperature)
        return z, self.decode(z)

    def encode(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(posterior mean, its reconstruction, PSNR in dB) of one uint8 image."""
        from vae.model.objective import psnr
        from vae.model.vae import encode

        with self._lock:
            z = encode(self.model, image[None])[0]
        reconstruction = self.decode(z)
        return z[0], reconstruction[0], float(np.asarray(psnr(image[None], reconstruction))[0])

    def morph(self, a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
        """The point at fraction t of the great circle from a to b."""
        from vae.evaluation.latent import slerp

        return slerp(a, b, [t])[0]


def png_url(face: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, "PNG", compress_level=1)  # 64 px: speed matters more than bytes
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def finite(value) -> bool:
    """Whether value is a JSON number (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float's range
        return False


def number(body: dict, key: str, default, low: float, high: float) -> float:
    """body[key] as a finite number from low to high; BadInput otherwise."""
    value = body.get(key, default)
    if not finite(value) or not low <= value <= high:
        raise BadInput(f"{key} must be a finite number from {low:g} to {high:g}, got {_show(value)}")
    return float(value)


def whole(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"{key} must be a whole number from {low} to {high}, got {_show(value)}")
    return value


def latent(body: dict, key: str, dim: int) -> np.ndarray:
    """body[key] as a float32 latent of length dim, every entry finite; BadInput otherwise."""
    value = body.get(key)
    if not isinstance(value, list) or len(value) != dim:
        got = f"a list of {len(value)}" if isinstance(value, list) else _show(value)
        raise BadInput(f"{key} must be a list of {dim} numbers (the model's latent dimension), got {got}")
    for i, v in enumerate(value):
        if not finite(v):
            raise BadInput(f"{key}[{i}] must be a finite number, got {_show(v)}")
    if np.abs(np.array(value, np.float64)).max() > np.finfo(np.float32).max:
        raise BadInput(f"{key} has entries too large for a latent (beyond float32)")
    return np.array(value, np.float32)


def json_body() -> dict:
    """The request's JSON object, read at most MAX_JSON bytes of it; BadInput (one line, no traceback) otherwise."""
    if not request.is_json:
        raise BadInput("the request body must be a JSON object")
    raw = request.stream.read(MAX_JSON + 1)
    if len(raw) > MAX_JSON:
        raise BadInput(f"the request body is larger than {MAX_JSON // 1024} KB; send one face's numbers at a time", 413)
    try:
        body = json.loads(raw)
    except RecursionError:  # json raises it for deep nesting, which is no number the API takes
        raise BadInput("the request body must be a JSON object: it is nested too deeply") from None
    except ValueError as e:  # malformed JSON or text that is not UTF-8
        raise BadInput(f"the request body must be a JSON object: it is not valid JSON ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object")
    return body


def read_upload(upload, size: int) -> np.ndarray:
    """An uploaded file as load_image decodes it; BadInput saying why it cannot be used."""
    # The safe loader of training takes a path: the upload lives in a private folder while it decodes.
    with tempfile.TemporaryDirectory(prefix="vae-upload-") as folder:
        path = Path(folder) / "upload"
        upload.save(path)
        try:
            return load_image(path, size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadInput(f"cannot use this image: it has too many pixels to decode safely ({e})") from e
        except Exception as e:  # noqa: BLE001 - whatever the decoder trips on, the upload is at fault
            raise BadInput(f"cannot use this image: {skip_reason(e)}") from e


class InMemoryRequest(Request):
    """Uploads stay in memory (they are at most MAX_UPLOAD): nothing uploaded lands on disk but the decoder's own copy."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def create_app(service: LatentService) -> Flask:
    """The Flask app around `service`: the page at /, its two files, and the JSON API under /api/."""
    # An image over PIL's pixel limit raises instead of warning: it is refused like any undecodable upload.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    app = Flask(__name__, static_folder=None)  # no route serves a path taken from the request
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD
    app.json.sort_keys = False
    upload_readers = ThreadPoolExecutor(DECODE_SLOTS, thread_name_prefix="vae-upload")
    queued = threading.BoundedSemaphore(DECODE_QUEUE)

    def static_file(name):
        body = io.BytesIO(pages.render(STATIC / name).encode()) if name == "index.html" else STATIC / name
        return send_file(body, mimetype=FILES[name], max_age=0)

    for url, name in (("/", "index.html"), ("/app.js", "app.js"), ("/app.css", "app.css"), ("/faces.js", "faces.js")):
        app.add_url_rule(url, name, partial(static_file, name))

    @app.get("/api/info")
    def info():
        return jsonify(service.info())

    @app.post("/api/sample")
    def sample():
        body = json_body()
        num = whole(body, "num", 16, 1, MAX_FACES)
        seed = whole(body, "seed", 0, 0, 2**63 - 1)
        temperature = number(body, "temperature", 1.0, 0.01, 10.0)
        z, faces = service.sample(num, seed, temperature)
        return jsonify(latents=z.tolist(), faces=[png_url(f) for f in faces])

    @app.post("/api/decode")
    def face_of_latent():
        z = latent(json_body(), "z", service.latent_dim)
        return jsonify(image=png_url(service.decode(z[None])[0]))

    @app.post("/api/morph")
    def morph():
        body = json_body()
        a, b = latent(body, "a", service.latent_dim), latent(body, "b", service.latent_dim)
        z = service.morph(a, b, number(body, "t", None, 0.0, 1.0))
        return jsonify(z=z.tolist(), image=png_url(service.decode(z[None])[0]))

    @app.post("/api/encode")
    def latent_of_upload():
        upload = request.files.get("image")
        if upload is None:
            raise BadInput("send the image as the multipart form field 'image'")
        if not queued.acquire(blocking=False):
            raise BadInput(f"the server is busy decoding {DECODE_QUEUE} other uploads; try again in a moment", 503)
        try:
            image = upload_readers.submit(read_upload, upload, service.image_size).result()
        finally:
            queued.release()
        z, reconstruction, db = service.encode(image)
        return jsonify(z=z.tolist(), original=png_url(image), reconstruction=png_url(reconstruction), psnr=round(db, 2))

    @app.errorhandler(BadInput)
    def bad_input(e):
        return jsonify(error=str(e)), e.status

    @app.errorhandler(HTTPException)
    def http_error(e):
        messages = {404: "no such page", 413: f"the upload is larger than {MAX_UPLOAD // 2**20} MB; choose a smaller image"}
        return jsonify(error=messages.get(e.code, e.description)), e.code

    @app.errorhandler(Exception)
    def unforeseen(e):
        app.logger.exception("unforeseen error")
        return jsonify(error=f"the server failed: {type(e).__name__}: {str(e)[:200]}"), 500

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app


def address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def open_server(model: str, host: str, port: int, prior: str | None = None, image_size: int | None = None,
                latent_dim: int | None = None, debug: bool = False):
    """Bind the address (port 0: a free one), then load the run once; (the threaded WSGI server, the page's address)."""
    from vae.run import Run

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be from 1 to 65535, got {port}")
    # Bound here, before the model loads, rather than by werkzeug, which answers a port in use with exit code 1.
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=128)
    except OSError as e:
        raise UserError(f"cannot listen on {host} port {port} ({e.strerror or e}); choose another --port or --host") from e
    with listener:  # the server holds its own duplicate of the socket
        run = Run.open(model)
        loaded = run.load_model(image_size, latent_dim)
        app = create_app(LatentService(loaded, run.prior(loaded, prior, progress=False), str(run)))
        if not debug:  # a line per request would bury the address under slider moves
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        port = listener.getsockname()[1]
        server = make_server(host, port, app, threaded=True, fd=listener.fileno())
    return server, address(host, port)


def serve(model: str, host: str, port: int, prior: str | None = None, image_size: int | None = None,
          latent_dim: int | None = None, debug: bool = False) -> None:
    """explore.py serve: answer requests until Ctrl-C."""
    server, url = open_server(model, host, port, prior, image_size, latent_dim, debug)
    print(f"serving the latent explorer of {model} at {url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()  # werkzeug's returns on Ctrl-C
    except KeyboardInterrupt:  # one that lands outside werkzeug's own catch
        pass
    finally:
        server.server_close()
    print("stopped")
