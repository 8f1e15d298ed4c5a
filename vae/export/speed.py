"""Decoding speed, TensorFlow against onnxruntime, as sample.py decodes: the same latents, in batches of 256, the two
alternated, best of --repeats.

    python -m vae.export.speed --model runs/default --num 4096
"""
from __future__ import annotations

import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from vae.cli import add_model_flags, invoke, make_parser, positive_int

BATCH = 256  # vae.model.vae.decode's batch, which sample.py uses


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        name = platform.processor() or "unknown CPU"
    return name


def main(argv):
    parser = make_parser(__doc__.splitlines()[0])
    add_model_flags(parser)
    parser.add_argument("--num", type=positive_int, default=4096, help="faces decoded per timing")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timings of each runtime; the best counts")
    args = parser.parse_args(argv)

    from vae.export import open_run
    from vae.export.formats import needs_onnx_tools, share_within, write_onnx
    from vae.model.vae import decode

    _, onnxruntime = needs_onnx_tools()
    _, model = open_run(args.model)
    z = np.random.default_rng(0).standard_normal((args.num, model.latent_dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        file = write_onnx(model, Path(tmp), parts=("decoder",))[0]
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])

    def tensorflow():
        return decode(model, z, BATCH)

    def onnx():
        return np.concatenate([session.run(["images"], {"z": z[i : i + BATCH]})[0] for i in range(0, len(z), BATCH)])

    runtimes = {"tensorflow": tensorflow, "onnxruntime": onnx}
    faces = {name: fn() for name, fn in runtimes.items()}  # warm-up: tracing, first allocations
    best = {name: float("inf") for name in runtimes}
    for _ in range(args.repeats):
        for name, fn in runtimes.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: args.num / seconds for name, seconds in best.items()}
    print(f"{cpu_name()}, {model.image_size} px model, latent {model.latent_dim}, width {model.width}: decoding {args.num} faces "
          f"in batches of {BATCH}, best of {args.repeats}: TensorFlow {rates['tensorflow']:.0f} faces/s, onnxruntime "
          f"{rates['onnxruntime']:.0f} faces/s ({rates['onnxruntime'] / rates['tensorflow']:.2f}x); the same faces on "
          f"{share_within(faces['onnxruntime'], faces['tensorflow'], 1 / 255):.2%} of pixels within 1/255")


if __name__ == "__main__":
    invoke(main)
