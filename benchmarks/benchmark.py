"""Speed and memory of the package on this machine, each figure beside its target; writes JSON too.

    python benchmarks/benchmark.py                  # everything (about 10 minutes on 2 cores)
    python benchmarks/benchmark.py --skip memory    # without the 60,000-image memory run

Run it on an otherwise idle machine: every figure is wall-clock time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vae.model  # noqa: E402,F401  (quiet TensorFlow start)
from vae.config import Config  # noqa: E402
from vae.data import dataset as data  # noqa: E402
from vae.evaluation.reconstruction import reconstruct_folder  # noqa: E402
from vae.model.flops import TRAINING_FACTOR, model_flops, vae_training_flops  # noqa: E402
from vae.model.prior import prior_latents  # noqa: E402
from vae.model.vae import decode  # noqa: E402
from vae.training.trainer import build_model  # noqa: E402

SHARED_FACES = ROOT.parent / "shared" / "anime_faces"
SECTIONS = ("matmul", "training", "options", "reference", "pipeline", "sampling", "synthetic", "memory")


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


def random_faces(num: int, size: int = 64) -> data.FaceSet:
    """A FaceSet of random uint8 images (speed does not depend on content)."""
    rng = np.random.default_rng(0)
    images = tf.Variable(rng.integers(0, 256, (num, size, size, 3), dtype=np.uint8), trainable=False)
    return data.FaceSet([f"{i}.png" for i in range(num)], images)


def package_training_rate(cfg: Config, steps: int = 30) -> tuple[float, object]:
    """Steady-state training images/s through the package's pipeline, train_step and fit (warm-up excluded)."""
    faces = random_faces(cfg.batch_size * steps)
    model = build_model(cfg, steps)
    indices = np.arange(len(faces))
    model.fit(data.train_batches(faces, indices, cfg.batch_size, 0, 0), steps_per_epoch=4, verbose=0)  # traces
    epoch = iter(range(1, 100))
    rate = best_rate(lambda: model.fit(data.train_batches(faces, indices, cfg.batch_size, 0, next(epoch)), verbose=0),
                     steps * cfg.batch_size, repeats=2)
    return rate, model


def plain_reference_rate(steps: int = 20) -> tuple[float, int]:
    """The keras.io-style reference, fed from in-memory float32 arrays by model.fit; and its training FLOPs."""
    from reference import ReferenceVAE

    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    model = ReferenceVAE()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(0).random((128 * steps, 64, 64, 3), dtype=np.float32)
    model.fit(images[:512], batch_size=128, verbose=0)
    rate = best_rate(lambda: model.fit(images, batch_size=128, verbose=0, shuffle=True), len(images), repeats=2)
    flops = TRAINING_FACTOR * (model_flops(model.encoder) + model_flops(model.decoder))
    return rate, flops


def jpeg_folder(num: int) -> Path:
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"), help="JSON file to write")
    args = parser.parse_args(argv)
    todo = [s for s in SECTIONS if s not in args.skip]
    results = {"machine": machine()}

    def report(name, value, unit, target=None, ok=None):
        results[name] = value
        mark = "" if ok is None else ("met" if ok else "MISSED")
        shown = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
        print(f"{name:58s} {shown:>12s} {unit:10s} {target or '':>24s} {mark}", flush=True)

    print(f"{'figure':58s} {'value':>12s} {'':10s} {'target':>24s}")
    if "matmul" in todo or "training" in todo:
        report("matmul float32 GFLOP/s (2048x2048)", matmul_gflops("float32"), "GFLOP/s")
        report("matmul bfloat16 GFLOP/s (2048x2048)", matmul_gflops("bfloat16"), "GFLOP/s")
    if "training" in todo:
        for precision in ("float32", "mixed_bfloat16"):
            cfg = Config(precision=precision)
            rate, model = package_training_rate(cfg)
            flops = vae_training_flops(model)
            achieved = rate * flops / 1e9
            report(f"default model {precision}: training images/s", rate, "img/s")
            if precision == "float32":
                report("default model: training GFLOP per image", flops / 1e9, "GFLOP")
                ratio = achieved / results["matmul float32 GFLOP/s (2048x2048)"]
                report("default model float32: achieved GFLOP/s", achieved, "GFLOP/s")
                report("default model float32: achieved / matmul float32", ratio, "x", ">= 0.7", ratio >= 0.7)
    if "options" in todo:
        # The measurements behind the defaults --jit_compile auto (off on a CPU) and --steps_per_execution 1.
        for name, cfg in [("XLA on (--jit_compile on)", Config(jit_compile="on")),
                          ("--steps_per_execution 8", Config(steps_per_execution=8))]:
            rate, _ = package_training_rate(cfg)
            report(f"default model float32, {name}: training images/s", rate, "img/s")
    if "reference" in todo:
        plain, ref_flops = plain_reference_rate()
        report("plain keras.io reference (in-memory fit): images/s", plain, "img/s")
        report("plain reference: achieved GFLOP/s", plain * ref_flops / 1e9, "GFLOP/s")
        ours, _ = package_training_rate(Config(batch_size=128))
        report("reference architecture through this package: images/s", ours, "img/s")
        report("package loop speed-up over the plain reference", ours / plain, "x", ">= 1.3", ours / plain >= 1.3)
    if "pipeline" in todo:
        folder = jpeg_folder(6000)
        start = time.perf_counter()
        faces = data.load_faces(folder, 64, progress=False)
        cold = len(faces) / (time.perf_counter() - start)
        report("cold decode of 64x64 JPEGs: images/s", cold, "img/s", ">= 3,000", cold >= 3000)
        indices = np.arange(len(faces))
        epoch = iter(range(100))
        cached = best_rate(lambda: [None for _ in data.train_batches(faces, indices, 64, 0, next(epoch))],
                           len(faces) // 64 * 64)
        train_rate = results.get("default model float32: training images/s")
        report("cached pipeline (gather + flip + batch): images/s", cached, "img/s",
               ">= 10x training" if train_rate else None, cached >= 10 * train_rate if train_rate else None)
    if "sampling" in todo:
        model = build_model(Config(), 1)
        z = prior_latents(4096, model.latent_dim, seed=0)
        decode(model, z[:512])
        sampling = best_rate(lambda: decode(model, z, batch_size=512), len(z))
        report("sampling (decoder only): faces/s", sampling, "faces/s", ">= 3,000", sampling >= 3000)
        folder = jpeg_folder(2000)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = reconstruct_folder(model, folder, Path(out) / "rec", progress=False)
            rate = result["images"] / (time.perf_counter() - start)
        report("reconstruct (decode, forward, PNG + metrics): images/s", rate, "img/s")
    if "synthetic" in todo:
        from vae.data.synthetic import render_face

        counter = iter(range(10**6))
        rate = best_rate(lambda: [render_face(0, next(counter)) for _ in range(300)], 300)
        report("synthetic faces rendered, one core: faces/s", rate, "faces/s", ">= 500", rate >= 500)
    if "memory" in todo:
        peak = training_peak_memory(60_000)
        report("peak resident memory, training over 60,000 64x64 images", peak, "MB", "<= 2,048 MB", peak <= 2048)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


def training_peak_memory(num: int) -> float:
    """Peak RSS (MB) of train.py over `num` images for one minute of training, in a child process."""
    folder = jpeg_folder(num)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(ROOT / "train.py"), "--data", str(folder), "--out", str(Path(out) / "run"),
                   "--num_epochs", "1", "--max_minutes", "1"]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def machine() -> dict:
    flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0].split() if Path("/proc/cpuinfo").exists() else []
    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "avx512": any(f.startswith("avx512") for f in flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


if __name__ == "__main__":
    main()
