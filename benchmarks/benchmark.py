"""Speed and memory of the package on this machine, each figure beside its target; writes benchmarks/results.json.

    python benchmarks/benchmark.py                      # everything but the 60,000-image memory run (about 17 min on 2 cores)
    python benchmarks/benchmark.py --only whole         # one section
    python benchmarks/benchmark.py --only memory

Whole processes are timed from outside, alternated with the plain reference and the best of --repeats runs kept,
because these shared hosts drift (the same step measured 250 or 446 img/s from one run to the next). Rates inside a
process come from the package's own code paths: the training step rate is what train.py logs per epoch. The psnr
section checks that the speed measures leave validation PSNR after a fixed number of epochs unchanged; the layers
section shows what TensorFlow's convolution kernels reach here, the ceiling of the training step.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import vae.backend  # noqa: E402,F401  (first: TensorFlow starts quietly)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from vae.config import Config  # noqa: E402
from vae.data import dataset  # noqa: E402
from vae.data.dataset import epoch_order  # noqa: E402
from vae.model import decoder  # noqa: E402
from vae.model.flops import TRAINING_FACTOR, layer_flops, model_flops, vae_training_flops  # noqa: E402
from vae.model.vae import decode  # noqa: E402
from vae.priors import StandardNormal, prior_latents  # noqa: E402
from vae.training.device import describe_device, resolve_jit, resolve_precision  # noqa: E402
from vae.training.trainer import build_model  # noqa: E402

SHARED_FACES = ROOT.parent / "shared" / "anime_faces"
SECTIONS = ("matmul", "whole", "psnr", "layers", "sampling", "pipeline", "synthetic", "memory")
WHOLE_FACES, WHOLE_EPOCHS = 3000, 4


def best_rate(work, count: int, repeats: int = 3) -> float:
    """Items per second of the fastest of `repeats` timed calls of work() (each handles `count` items)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return count / min(times)


def matmul_gflops(dtype: str, n: int = 2048) -> float:
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    product()
    return best_rate(lambda: [product().numpy() for _ in range(10)], 10 * 2 * n**3, repeats=5) / 1e9


def face_folder(num: int) -> Path:
    """A folder of `num` 64x64 JPEGs: the real faces when present (symlinked, repeated), else synthetic ones."""
    folder = Path(tempfile.mkdtemp(prefix="vae-bench-"))
    if SHARED_FACES.is_dir():
        sources = sorted(SHARED_FACES.glob("*.jpg"))
        for i in range(num):
            (folder / f"{i:06d}.jpg").symlink_to(sources[i % len(sources)])
    else:
        from PIL import Image

        from vae.data.synthetic import render_face

        for i in range(num):
            Image.fromarray(render_face(0, i)).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of a whole child process, and its stdout."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return seconds, result.stdout


def train_py(folder: Path, run: Path, extra: list[str]) -> tuple[float, list[dict], str]:
    """Wall seconds, history rows and stdout of train.py for WHOLE_EPOCHS epochs on `folder`, writing to `run`."""
    seconds, stdout = timed([sys.executable, "train.py", "--data", str(folder), "--out", str(run),
                             "--num_epochs", str(WHOLE_EPOCHS), *extra])
    return seconds, list(csv.DictReader(open(run / "history.csv"))), stdout


def whole_process(repeats: int, extra: list[str]) -> dict:
    """train.py with default flags against the plain reference script, alternated, on WHOLE_FACES faces x WHOLE_EPOCHS."""
    folder = face_folder(WHOLE_FACES)
    ours, plain, rates, spent, psnrs = [], [], [], None, []
    with tempfile.TemporaryDirectory() as out:
        for i in range(repeats):
            seconds, _ = timed([sys.executable, "benchmarks/reference.py", "--data", str(folder), "--num", str(WHOLE_FACES),
                                "--epochs", str(WHOLE_EPOCHS)])
            plain.append(seconds)
            seconds, history, stdout = train_py(folder, Path(out) / f"run{i}", extra)
            ours.append(seconds)
            rates += [float(r["images_per_second"]) for r in history[1:]]  # the first epoch holds the tracing
            psnrs.append(float(history[-1]["val_psnr"]))
            spent = re.search(r"^time: (.*)$", stdout, re.M).group(1)
    return {"ours": ours, "plain": plain, "steady_img_s": max(rates), "spent": spent, "val_psnr": psnrs, "folder": folder}


def convolution_rates(model, batch: int) -> list[tuple[str, float, float, float]]:
    """(name, forward GFLOP per batch, forward GFLOP/s, forward + backward GFLOP/s) of each convolution of the model
    alone, on `batch` random inputs: what TensorFlow's kernels reach here, the ceiling of a training step made of them."""
    rates = []
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose):
            continue
        x = tf.random.normal((batch, *layer.input.shape[1:]))
        forward = tf.function(lambda x, layer=layer: tf.reduce_sum(layer(x, training=True)))

        @tf.function
        def both(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(tf.square(layer(x, training=True)))
            return [tf.reduce_sum(g) for g in tape.gradient(y, [x, layer.kernel])]

        flops = layer_flops(layer) * batch / 1e9
        rates.append((layer.name, flops, best_rate(lambda f=forward, x=x: f(x).numpy(), flops, repeats=7),
                      best_rate(lambda f=both, x=x: [g.numpy() for g in f(x)], TRAINING_FACTOR * flops, repeats=7)))
    return rates




def plain_way_psnr(folder: Path) -> float:
    """Validation PSNR after WHOLE_EPOCHS epochs of the default model trained as train.py trains it, but without any of
    its speed measures: float32, no XLA, each batch gathered and flipped in NumPy and fed to the model's train_step
    from a Python loop, and Keras' own transposed convolutions in the decoder at validation too. Same faces, split,
    initial weights, data order, flips and noise, so the difference from train.py's figure is what the speed measures
    cost in quality."""
    cfg = Config(data=str(folder), num_epochs=WHOLE_EPOCHS, precision="float32", jit_compile="off")
    faces = dataset.load_faces(folder, cfg.image_size, progress=False)
    train_idx, val_idx = faces.split(cfg.val_split)
    steps = len(train_idx) // cfg.batch_size
    model = build_model(cfg, steps)
    for layer in model.decoder.layers:
        if isinstance(layer, decoder.Conv2DTranspose):  # the sub-pixel inference off: Keras' own call, always
            layer.call = lambda inputs, training=None, layer=layer: keras.layers.Conv2DTranspose.call(layer, inputs)
    val = dataset.eval_batches(faces, val_idx, cfg.batch_size)
    train_step = tf.function(model.train_step)
    for epoch in range(cfg.num_epochs):
        order, flips = epoch_order(len(train_idx), cfg.seed, epoch)
        for step in range(steps):
            rows = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
            batch = faces.numpy(train_idx[order[rows]])
            train_step(tf.constant(np.where(flips[rows, None, None, None], batch[:, :, ::-1], batch)))
        logs = model.evaluate(val, return_dict=True, verbose=0)  # as train.py does: it draws noise, like training
    keras.config.set_dtype_policy("float32")
    return float(logs["psnr"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="sections to run (default: all but memory)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each whole process, alternated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"), help="JSON file to write")
    args = parser.parse_args(argv)
    todo = args.only or [s for s in SECTIONS if s != "memory"]
    results = {"machine": machine()}

    def report(name, value, unit, target=None, ok=None):
        results[name] = value
        mark = "" if ok is None else ("met" if ok else "MISSED")
        shown = f"{value:.2f}" if unit == "dB" else (f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}")
        print(f"{name:62s} {shown:>10s} {unit:8s} {target or '':>14s} {mark}", flush=True)

    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; {describe_device()}")
    print(f"{'figure':62s} {'value':>10s} {'':8s} {'target':>14s}")
    precision = resolve_precision("auto")
    matmul_dtype = "float16" if precision == "mixed_float16" else ("bfloat16" if precision == "mixed_bfloat16" else "float32")
    if {"matmul", "whole", "layers", "sampling"} & set(todo):
        report("matmul float32 (2048x2048)", matmul_gflops("float32"), "GFLOP/s")
        if matmul_dtype != "float32":
            report(f"matmul {matmul_dtype} (2048x2048)", matmul_gflops(matmul_dtype), "GFLOP/s")
    if "whole" in todo:
        flops = vae_training_flops(build_model(Config(), 1))
        keras.config.set_dtype_policy("float32")
        whole = whole_process(args.repeats, [])
        speedup = min(whole["plain"]) / min(whole["ours"])
        report(f"plain reference, {WHOLE_FACES} faces x {WHOLE_EPOCHS} epochs, best of {args.repeats}", min(whole["plain"]), "s")
        report(f"train.py, defaults, same faces and epochs, best of {args.repeats}", min(whole["ours"]), "s")
        report("whole process: train.py speed over the plain reference", speedup, "x", ">= 1.3", speedup >= 1.3)
        print("    each run, in the order run: reference " + ", ".join(f"{t:.1f}" for t in whole["plain"])
              + " s; train.py " + ", ".join(f"{t:.1f}" for t in whole["ours"]) + " s")
        results["whole process runs (s)"] = {"reference": whole["plain"], "train.py": whole["ours"]}
        print(f"    train.py's own account of its best run: {whole['spent']}")
        report("training step, as train.py logs it (best epoch after the first)", whole["steady_img_s"], "img/s")
        report("default model: training FLOPs per image (forward x3)", flops / 1e9, "GFLOP")
        achieved = whole["steady_img_s"] * flops / 1e9
        ratio = achieved / results[f"matmul {matmul_dtype} (2048x2048)"]
        report(f"training step in {precision}: achieved", achieved, "GFLOP/s")
        report(f"training step / matmul {matmul_dtype}", ratio, "x", ">= 0.7", ratio >= 0.7)
    if "psnr" in todo:
        folder = whole["folder"] if "whole" in todo else face_folder(WHOLE_FACES)
        if "whole" in todo:
            ours = whole["val_psnr"][0]
        else:
            with tempfile.TemporaryDirectory() as out:
                ours = float(train_py(folder, Path(out) / "run", [])[1][-1]["val_psnr"])
        plain = plain_way_psnr(folder)
        xla = "XLA" if resolve_jit("auto") else "no XLA"
        report(f"validation PSNR after {WHOLE_EPOCHS} epochs: train.py, defaults ({precision}, {xla})", ours, "dB")
        report("  same model, data and noise, trained without the speed measures", plain, "dB")
        report("  difference made by the speed measures", ours - plain, "dB", "within 0.1", abs(ours - plain) <= 0.1)
        if "whole" in todo and len(whole["val_psnr"]) > 1:
            print(f"    train.py's {len(whole['val_psnr'])} runs: " + ", ".join(f"{v:.3f}" for v in whole["val_psnr"]) + " dB")
    if "layers" in todo:
        model = build_model(Config(), 1)
        keras.config.set_dtype_policy("float32")
        rates = convolution_rates(model, Config().batch_size)
        print(f"    each convolution alone, batch {Config().batch_size}, GFLOP/s forward | forward + backward: "
              + ", ".join(f"{name} {f:.0f} | {b:.0f}" for name, _, f, b in rates))
        ceiling = sum(flops for _, flops, _, _ in rates) / sum(flops / b for _, flops, _, b in rates)
        report("the model's convolutions alone, forward + backward", ceiling, "GFLOP/s")
        report("  over matmul float32: the step's ceiling on this machine", ceiling / results["matmul float32 (2048x2048)"], "x")
    if "sampling" in todo:
        model = build_model(Config(), 1)
        keras.config.set_dtype_policy("float32")
        z = prior_latents(StandardNormal(model.latent_dim), 8192, seed=0)
        decode(model, z[:1024])
        rate = best_rate(lambda: decode(model, z), len(z))
        achieved = rate * model_flops(model.decoder) / 1e9
        report("sampling: faces decoded per second (8,192, as sample.py does)", rate, "faces/s")
        report("sampling: decoder GFLOP/s / matmul float32", achieved / results["matmul float32 (2048x2048)"], "x", ">= 0.5",
               achieved / results["matmul float32 (2048x2048)"] >= 0.5)
    if "pipeline" in todo:
        folder = face_folder(6000)
        start = time.perf_counter()
        faces = dataset.load_faces(folder, 64, progress=False)
        report("cold decode of 64x64 JPEGs", len(faces) / (time.perf_counter() - start), "img/s")
        indices = np.arange(len(faces))
        epoch = iter(range(100))
        report("cached pipeline (gather, flip, batch)",
               best_rate(lambda: [None for _ in dataset.train_batches(faces, indices, 64, 0, next(epoch))],
                         len(faces) // 64 * 64),
               "img/s")
    if "synthetic" in todo:
        from vae.data.synthetic import render_face

        counter = iter(range(10**6))
        report("synthetic faces rendered, one core", best_rate(lambda: [render_face(0, next(counter)) for _ in range(300)], 300),
               "faces/s")
    if "memory" in todo:
        peak = training_peak_memory(60_000)
        report("peak resident memory, training over 60,000 64x64 images", peak, "MB", "<= 2,048", peak <= 2048)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


def training_peak_memory(num: int) -> float:
    """Peak RSS (MB) of train.py over `num` images for one minute of training, in a child process."""
    folder = face_folder(num)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(ROOT / "train.py"), "--data", str(folder), "--out", str(Path(out) / "run"),
                   "--num_epochs", "1", "--max_minutes", "1"]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))}


if __name__ == "__main__":
    main()
