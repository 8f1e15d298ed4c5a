"""export.py: SavedModel and ONNX files that give the Keras model's numbers, a web page that draws its faces in a real
browser from nothing but a static server, and one-line refusals that leave --out as it was."""
import base64
import functools
import http.server
import io
import os
import runpy
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, blob_images, changed, from_code, in_process_probe, ready_page, vivid_keras

EXPORT = runpy.run_path(str(ROOT / "export.py"), run_name="export")["main"]
PAGE_MATCH, PAGE_SHARE = 2 / 255, 0.99  # the page's faces against Keras': within 2 grey levels on 99% of pixels


def export(capsys, *args) -> tuple[int, str, str]:
    """export.py's command line in-process, as vae.cli.invoke runs it: (exit code, stdout, stderr)."""
    from vae.cli import invoke

    capsys.readouterr()
    try:
        invoke(EXPORT, [str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def exported(capsys, model, fmt, out):
    code, stdout, err = export(capsys, "--model", model, "--format", fmt, "--out", out)
    assert code == 0, err
    assert stdout.startswith(f"wrote {fmt} of {model} to {out}/ (")
    return Path(out)


@pytest.fixture(scope="module")
def vivid(tmp_path_factory):
    """conftest's vivid .keras file, whose faces differ at a glance."""
    return vivid_keras(tmp_path_factory.mktemp("vivid"))


@pytest.fixture(scope="module")
def vivid_model(vivid):
    from vae.model.vae import load_vae

    return load_vae(vivid)


def latents(num, dim, seed=0):
    return np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32)


def share_within(a, b, tolerance):
    from vae.export.formats import share_within

    return share_within(a, b, tolerance)


# ---- SavedModel and ONNX ------------------------------------------------------------------------------------


def test_onnx_files_give_the_keras_models_faces_and_means(vivid, vivid_model, tmp_path, capsys):
    from vae.export.formats import run_onnx
    from vae.model.vae import decode, encode

    out = exported(capsys, vivid, "onnx", tmp_path / "onnx")
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    z = latents(256, 8, seed=1)
    faces, keras_faces = run_onnx(out / "decoder.onnx", z), decode(vivid_model, z)
    assert faces.dtype == np.uint8 and faces.shape == (256, 32, 32, 3)
    assert keras_faces.std() > 20  # faces that differ, so agreeing means something
    assert share_within(faces, keras_faces, 1 / 255) >= 0.999
    images = blob_images(128, 32, seed=2)
    means, keras_means = run_onnx(out / "encoder.onnx", images), encode(vivid_model, images)[0]
    assert means.shape == (128, 8) and keras_means.std() > 0.01
    assert share_within(means, keras_means, 1 / 255) >= 0.999
    # The comparison can fail: another model's decoder is far off.
    assert share_within(faces, decode(vivid_model, z[::-1]), 1 / 255) < 0.5


def test_saved_model_has_decode_and_encode_signatures_that_give_the_keras_models_numbers(vivid, vivid_model, tmp_path,
                                                                                         capsys):
    import tensorflow as tf

    from vae.model.vae import decode, encode

    out = exported(capsys, vivid, "saved_model", tmp_path / "saved")
    loaded = tf.saved_model.load(str(out))
    assert set(loaded.signatures) == {"decode", "encode", "serving_default"}
    decode_sig, encode_sig = loaded.signatures["decode"], loaded.signatures["encode"]
    assert decode_sig.structured_input_signature[1]["z"].shape.as_list() == [None, 8]
    assert encode_sig.structured_input_signature[1]["images"].dtype == tf.uint8
    assert encode_sig.structured_input_signature[1]["images"].shape.as_list() == [None, 32, 32, 3]
    z = latents(128, 8, seed=3)
    faces = decode_sig(z=tf.constant(z))["images"].numpy()
    assert faces.dtype == np.uint8 and share_within(faces, decode(vivid_model, z), 1 / 255) >= 0.999
    assert np.array_equal(loaded.signatures["serving_default"](z=tf.constant(z))["images"].numpy(), faces)
    images = blob_images(64, 32, seed=4)
    means = encode_sig(images=tf.constant(images))["mean"].numpy()
    assert share_within(means, encode(vivid_model, images)[0], 1 / 255) >= 0.999


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")  # the converter is what is tested
def test_the_litert_converter_converts_the_saved_model(vivid, vivid_model, tmp_path, capsys):
    import tensorflow as tf

    from vae.model.vae import decode

    out = exported(capsys, vivid, "saved_model", tmp_path / "saved")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(out), signature_keys=["decode"])
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    z = latents(4, 8, seed=5)
    faces = interpreter.get_signature_runner("decode")(z=z)["images"]
    assert faces.dtype == np.uint8 and share_within(faces, decode(vivid_model, z), 1 / 255) >= 0.999


def test_prior_json_carries_the_runs_mixture(trained, model):
    from vae.export import open_run, prior_json

    run, _ = open_run(trained[1])
    prior = prior_json(run, model)
    mixture = run.prior(model, progress=False)
    assert prior["kind"] == "mixture" and np.isclose(sum(prior["weights"]), 1.0)
    k, d = mixture.means.shape
    cholesky = np.zeros((k, d, d))
    cholesky[:, *np.tril_indices(d)] = np.frombuffer(base64.b64decode(prior["cholesky"]), "<f4").reshape(k, -1)
    assert np.allclose(cholesky @ cholesky.transpose(0, 2, 1), mixture.covariances, atol=1e-5)
    assert np.allclose(prior["means"], mixture.means)
    assert np.allclose(prior["directions"], mixture.principal_directions()[0][:8], atol=1e-6)
    assert prior["labels"][0].startswith("PC1 (σ=")


# ---- bad input ------------------------------------------------------------------------------------------------


def refused(capsys, *args) -> str:
    """export.py's one error line for `args`, after asserting exit code 2."""
    code, out, err = export(capsys, *args)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, err)
    return err


def test_a_folder_that_holds_no_model_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no model here")
    err = refused(capsys, "--model", tmp_path, "--format", "onnx", "--out", tmp_path / "out")
    assert "holds no model_best.keras or model_last.keras" in err
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    err = refused(capsys, "--model", tmp_path / "broken.keras", "--format", "saved_model", "--out", tmp_path / "out")
    assert "is damaged or not a model" in err
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["broken.keras", "notes.txt"]


def test_a_non_empty_out_is_refused_unless_overwrite(vivid, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    err = refused(capsys, "--model", vivid, "--format", "onnx", "--out", out)
    assert f"--out {out} exists and is not empty; pass --overwrite" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    err = refused(capsys, "--model", vivid, "--format", "onnx", "--out", out / "mine.txt")
    assert "is a file" in err
    code, _, err = export(capsys, "--model", vivid, "--format", "onnx", "--out", out, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it


def test_an_export_that_fails_midway_leaves_out_as_it_was(vivid, tmp_path, capsys, monkeypatch):
    from vae.export import formats

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("the previous export")

    def half(model, folder, parts=("decoder", "encoder")):
        (folder / "decoder.onnx").write_bytes(b"half")
        raise OSError(28, "No space left on device", str(folder / "encoder.onnx"))

    monkeypatch.setattr(formats, "write_onnx", half)
    code, _, err = export(capsys, "--model", vivid, "--format", "onnx", "--out", out, "--overwrite")
    assert code == 2 and "no space left on device" in err.lower() and err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["old.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(vivid, tmp_path, capsys):
    from vae.export import PARTIAL_FOLDER
    from vae.files import HOST

    dead = tmp_path / f"{PARTIAL_FOLDER}new-4999999-{HOST}-out"  # above Linux's largest process id: no such process
    dead.mkdir()
    (dead / "decoder.onnx").write_bytes(b"half")
    exported(capsys, vivid, "onnx", tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_unwritable_out_is_refused_in_one_line(vivid, tmp_path, capsys):
    file = tmp_path / "a_file"
    file.write_text("")
    err = refused(capsys, "--model", vivid, "--format", "onnx", "--out", file / "out")
    assert "does not exist" in err
    # A folder this user may not write in. Root writes anywhere, so the command then runs as root without the
    # capability to override file permissions.
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    probe = in_process_probe(["export.py", "--model", str(vivid), "--format", "onnx", "--out", str(locked / "out")])
    try:
        result = subprocess.run([*drop, sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
        # Refused before TensorFlow loads: a mistake costs no time.
        assert result.returncode == 0 and result.stdout == "exit 2, tensorflow loaded: False\n", result.stderr
        expected = f"error: --out {locked / 'out'}: cannot write in {locked} (permission denied); choose another --out\n"
        assert result.stderr == expected
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_missing_tools_are_named_with_what_to_install(vivid, tmp_path, capsys, monkeypatch):
    from vae.export import runtime

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now fails as if it were not installed
    err = refused(capsys, "--model", vivid, "--format", "onnx", "--out", tmp_path / "out")
    assert err == "error: exporting to ONNX needs tf2onnx: pip install -r requirements-export.txt\n"
    monkeypatch.delitem(sys.modules, "tf2onnx")
    monkeypatch.setattr(runtime, "CACHE", tmp_path / "empty_cache")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    err = refused(capsys, "--model", vivid, "--format", "web", "--out", tmp_path / "out")
    assert "needs onnxruntime-web 1.22.0 from the npm registry, and npm is not installed: apt-get install -y npm" in err
    assert not (tmp_path / "out").exists()


# ---- the web page in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_cached():
    from vae.errors import UserError
    from vae.export.runtime import runtime_files

    try:
        runtime_files(fetch=False)  # tests never download: .ci/run fetches it up front
    except UserError as e:
        pytest.skip(str(e))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path):
    """A plain static file server on 127.0.0.1 (python -m http.server's handler) for `folder`: (server, address)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def open_page(browser, url):
    """(page, requests to anything but this server, script and console errors), with the page's first face drawn."""
    page, outside, errors = ready_page(browser, url, (1120, 760))
    page.wait_for_function("() => document.getElementById('download').href.startsWith('data:image/png')")
    return page, outside, errors


CANVAS_PIXELS = """(selector) => Array.from(document.querySelectorAll(selector)).map((c) =>
  Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data))"""

# Move a slider; resolve when the face it redraws has been drawn.
MOVE = """([index, value]) => new Promise((resolve, reject) => {
  const input = document.querySelector(`#sliders input[data-index='${index}']`);
  setTimeout(() => reject(new Error("no new face within 20 s")), 20000);
  document.getElementById("face").addEventListener("drawn", () => resolve(), { once: true });
  input.value = value;
  input.dispatchEvent(new Event("input", { bubbles: true }));
})"""


def drawn(page, selector):
    """(n, size, size, 3) RGB pixels of the canvases `selector` matches."""
    arrays = [np.array(a, np.uint8) for a in page.evaluate(CANVAS_PIXELS, selector)]
    side = int(np.sqrt(len(arrays[0]) // 4))
    return np.stack([a.reshape(side, side, 4)[..., :3] for a in arrays])


@pytest.mark.slow
def test_the_page_draws_the_keras_models_faces_in_the_browser(browser, runtime_cached, vivid, vivid_model, tmp_path, capsys):
    import statistics

    from vae.model.vae import decode

    out = exported(capsys, vivid, "web", tmp_path / "site")
    size = sum(f.stat().st_size for f in out.iterdir())
    assert size < 15e6
    server, url = serve(out)
    try:
        page, outside, errors = open_page(browser, url)
        # The grid: the page's own faces for its latents against the Keras decoder's.
        grid = drawn(page, "#grid canvas")
        codes = page.eval_on_selector_all("#grid canvas", "(cs) => cs.map((c) => c.dataset.code)")
        z = np.stack([from_code(c) for c in codes])
        assert grid.shape == (16, 32, 32, 3) and z.shape == (16, 8)
        keras_faces = decode(vivid_model, z)
        assert share_within(grid, keras_faces, PAGE_MATCH) >= PAGE_SHARE
        assert changed(grid[0], grid[1]) > 5  # different faces, so the match means something
        first_grid = page.evaluate("facePage.timings.firstGrid")

        # Pick a face, then steer it: the face changes, the address holds its latent, and that latent's Keras face is it.
        page.click("#grid canvas:nth-child(3)")
        page.wait_for_function("(c) => location.hash === '#z=' + c", arg=codes[2])
        page.evaluate(MOVE, [0, "0"])  # the picked face drawn (its decode may still have been running)
        face = drawn(page, "#face")[0]
        assert share_within(face, keras_faces[2], PAGE_MATCH) >= PAGE_SHARE
        page.evaluate(MOVE, [1, "2.5"])
        steered = drawn(page, "#face")[0]
        assert changed(face, steered) > 5
        code = page.evaluate("location.hash").removeprefix("#z=")
        assert page.input_value("#code") == code
        steered_z = from_code(code)
        assert np.allclose(steered_z, z[2] + 2.5 * np.eye(8)[1], atol=1e-5)  # N(0, I): the slider moves z1 by 2.5 sigma
        assert share_within(steered, decode(vivid_model, steered_z[None])[0], PAGE_MATCH) >= PAGE_SHARE

        # Download: a PNG of the face as drawn.
        href = page.get_attribute("#download", "href")
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB"))
        assert np.array_equal(png, steered)

        # Reroll: a new seed, new faces.
        page.click("#reroll")
        page.wait_for_function("(c) => document.querySelector('#grid canvas').dataset.code !== c", arg=codes[0])
        assert page.input_value("#seed") == "1" and changed(grid, drawn(page, "#grid canvas")) > 5

        # Opening the address again shows the same face.
        again, again_outside, again_errors = open_page(browser, f"{url}#z={code}")
        assert np.array_equal(drawn(again, "#face")[0], steered)
        again.close()

        for i in range(21):
            page.evaluate(MOVE, [0, str(-2.5 + 5 * i / 20)])
        moves = page.evaluate("facePage.timings.moves")[-20:]
        print(f"32 px page: first grid {first_grid:.0f} ms after navigation; slider move to drawn face: median "
              f"{statistics.median(moves):.1f} ms over {len(moves)} moves; folder {size / 1e6:.2f} MB")
        assert not page.is_visible("#message"), page.text_content("#message")
        assert outside == [] and again_outside == [] and errors == [] and again_errors == []
        page.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_the_page_samples_the_runs_mixture(browser, runtime_cached, trained, model, tmp_path, capsys):
    from vae.export import open_run

    out = exported(capsys, trained[1], "web", tmp_path / "site")
    mixture = open_run(trained[1])[0].prior(model, progress=False)
    server, url = serve(out)
    try:
        page, outside, errors = open_page(browser, url)
        assert "latent mixture" in page.text_content("#run-info")
        z = np.array(page.evaluate("facePage.samplePrior(4000, 7, 1)"))
        assert z.shape == (4000, 8)
        # The mixture's mean and covariance (temperature scaling each draw's offset from its component's mean); the
        # 4,000 draws' differ from them by sampling noise only.
        w = mixture.weights / mixture.weights.sum()
        mean = w @ mixture.means
        centred = mixture.means - mean
        between = (w[:, None] * centred).T @ centred

        def moments_match(draws, temperature):
            cov = temperature**2 * np.einsum("k,kij->ij", w, mixture.covariances) + between
            sd = np.sqrt(np.diag(cov))
            return (np.all(np.abs(draws.mean(0) - mean) < 5 * sd / np.sqrt(len(draws)))
                    and np.allclose(np.cov(draws, rowvar=False) / np.outer(sd, sd), cov / np.outer(sd, sd), atol=0.1))

        cold = np.array(page.evaluate("facePage.samplePrior(4000, 7, 0.5)"))
        assert moments_match(z, 1.0) and moments_match(cold, 0.5) and not moments_match(cold, 1.0)
        assert np.allclose(np.array(page.evaluate("facePage.samplePrior(4000, 7, 1)")), z)  # a seed, the same draws
        assert outside == [] and errors == []
        page.close()
    finally:
        server.shutdown()
        server.server_close()
