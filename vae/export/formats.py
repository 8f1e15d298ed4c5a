"""The three export formats: a SavedModel, ONNX files, and the static web page; each writes into a folder it is given.

Every format carries the same two functions, so their outputs can be compared with the Keras model's directly:
decode, latents z float32 (n, latent_dim) -> faces uint8 (n, size, size, 3), rounded as vae.pictures.to_uint8
rounds; encode, faces uint8 (n, size, size, 3) -> posterior mean and log-variance float32 (n, latent_dim).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vae.app import pages
from vae.backend import quiet_native_stderr
from vae.errors import UserError

ONNX_OPSET = 17  # onnxruntime 1.17+ and onnxruntime-web 1.22 run it; tf2onnx converts every op of these models to it
MATCH = 1 / 255  # ONNX against Keras: faces within one grey level, latent means within 1/255, ...
MATCH_SHARE = 0.999  # ... on at least this share of the numbers
CHECK_NUM = 64  # latents and faces each check runs through both
# The exported page's own files: its script and style, copied, and in index.html its parts of the template that it
# shares, as it shares the script faces.js, with the latent explorer's page (vae.app.pages).
WEB_PAGE = Path(__file__).with_name("web")
PAGE_FILES = ("app.js", "app.css")


def needs_onnx_tools():
    """(tf2onnx, onnxruntime), or UserError in one line saying what to install."""
    try:
        with quiet_native_stderr():  # tf2onnx imports TensorFlow, whose native notices are noise
            import onnxruntime
            import tf2onnx
    except ImportError as e:
        raise UserError(f"exporting to ONNX needs {e.name or 'tf2onnx'}: pip install -r requirements-export.txt") from None
    return tf2onnx, onnxruntime


def _functions(model):
    """(decode, encode) as plain functions of TensorFlow tensors, and their input signatures."""
    import tensorflow as tf

    def decode(z):
        faces = model.decoder(z, training=False)
        faces = tf.where(tf.math.is_nan(faces), tf.zeros_like(faces), faces)  # as to_uint8: a diverged model draws black
        return {"images": tf.cast(tf.clip_by_value(faces, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)}

    def encode(images):
        mean, log_var = model.encoder(tf.cast(images, tf.float32) / 255.0, training=False)
        return {"mean": mean, "log_var": log_var}

    size, dim = model.image_size, model.latent_dim
    return ((decode, [tf.TensorSpec([None, dim], tf.float32, name="z")]),
            (encode, [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")]))


def write_saved_model(model, folder: Path) -> None:
    """A SavedModel with the signatures "decode" (also "serving_default") and "encode".

    tf.saved_model.save of a module that holds the networks' TensorFlow variables, rather than Keras' ExportArchive,
    which stored every weight twice (23.7 MB of variables against 11.8 for a 64 px default model, the same faces).
    """
    import tensorflow as tf

    (decode, decode_spec), (encode, encode_spec) = _functions(model)
    module = tf.Module()
    module.weights = [v.value for v in model.encoder.variables + model.decoder.variables]  # what the functions capture
    module.decode = tf.function(decode, input_signature=decode_spec)
    module.encode = tf.function(encode, input_signature=encode_spec)
    decode_fn = module.decode.get_concrete_function()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": decode_fn, "decode": decode_fn,
                                                         "encode": module.encode.get_concrete_function()})


def write_onnx(model, folder: Path, parts=("decoder", "encoder")) -> list[Path]:
    """decoder.onnx and encoder.onnx (or those of `parts`) converted by tf2onnx, each checked against Keras."""
    import tensorflow as tf

    tf2onnx, _ = needs_onnx_tools()
    functions = dict(zip(("decoder", "encoder"), _functions(model)))
    files = []
    for part in parts:
        fn, spec = functions[part]
        file = folder / f"{part}.onnx"
        tf2onnx.convert.from_function(tf.function(fn, input_signature=spec), input_signature=spec, opset=ONNX_OPSET,
                                      output_path=str(file))
        check_onnx(model, file, part)
        files.append(file)
    return files


def check_inputs(model, part: str) -> np.ndarray:
    """What a check feeds `part`: N(0, I) latents, or the faces the decoder draws for them (no data needed)."""
    from vae.model.vae import decode

    z = np.random.default_rng(0).standard_normal((CHECK_NUM, model.latent_dim)).astype(np.float32)
    return z if part == "decoder" else decode(model, z)


def keras_outputs(model, part: str, inputs: np.ndarray) -> np.ndarray:
    """What the Keras model gives for `inputs`: uint8 faces from the decoder, latent means from the encoder."""
    from vae.model.vae import decode, encode

    return decode(model, inputs) if part == "decoder" else encode(model, inputs)[0]


def share_within(a, b, tolerance: float) -> float:
    """Share of the numbers of a and b (uint8 faces: in grey levels of 255) that differ by at most `tolerance`."""
    a, b = np.asarray(a), np.asarray(b)
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64)) <= tolerance * scale + 1e-9))


def run_onnx(file: Path, inputs: np.ndarray) -> np.ndarray:
    """decoder.onnx's faces or encoder.onnx's means for `inputs`, by onnxruntime on the CPU."""
    _, onnxruntime = needs_onnx_tools()
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    output = "images" if "decoder" in file.name else "mean"
    return session.run([output], {name: inputs})[0]


def check_onnx(model, file: Path, part: str) -> None:
    """Raise (exit 1: a fault of the converter, not of the user) unless `file` gives the Keras model's outputs."""
    inputs = check_inputs(model, part)
    share = share_within(run_onnx(file, inputs), keras_outputs(model, part, inputs), MATCH)
    if share < MATCH_SHARE:
        raise RuntimeError(f"{file.name} disagrees with the Keras {part}: only {share:.2%} of its outputs are within 1/255; "
                           "nothing was written")


def write_web(model, folder: Path, page: dict, runtime: Path) -> None:
    """The static page: its sources, decoder.onnx, model.json (`page`: the run and its prior), the runtime's files."""
    write_onnx(model, folder, parts=("decoder",))
    (folder / "index.html").write_text(pages.render(WEB_PAGE / "index.html"), encoding="utf-8")
    for file in (*(WEB_PAGE / name for name in PAGE_FILES), pages.SCRIPT):
        shutil.copyfile(file, folder / file.name)
    for file in sorted(runtime.iterdir()):
        shutil.copyfile(file, folder / file.name)
    (folder / "model.json").write_text(json.dumps(page, separators=(",", ":")), encoding="utf-8")
