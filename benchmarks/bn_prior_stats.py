"""Does re-estimating the decoder's BatchNorm statistics on prior draws (NVAE's practice) bring samples closer to faces?

    python benchmarks/bn_prior_stats.py --model runs/paired/default --data runs/paired/faces/held_out

The decoder's moving statistics describe its inputs during training: latents sampled from q(z|x) of training faces.
Samples decode latents drawn from the prior instead. This script draws --draws latents from the run's prior, sets each
decoder BatchNorm layer's statistics to those of its inputs over the draws (one pass in training mode, momentum 0), and
prints the sample SWD against --data before and after, with the same draws and seeds. Nothing is written.
"""
import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

import vae.backend  # noqa: E402,F401  (first: TensorFlow starts quietly)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402

from vae.data.dataset import load_faces  # noqa: E402
from vae.evaluation.quality import swd  # noqa: E402
from vae.model.vae import decode  # noqa: E402
from vae.priors import prior_latents  # noqa: E402
from vae.run import Run  # noqa: E402


def reestimate(decoder, z: np.ndarray) -> None:
    """Each BatchNorm layer's moving mean and variance := those of its inputs when `z` is decoded in one batch."""
    norms = [layer for layer in decoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    kept = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    decoder(z, training=True)
    for layer, momentum in zip(norms, kept):
        layer.momentum = momentum


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder")
    parser.add_argument("--data", required=True, help="folder of real faces the samples are compared with")
    parser.add_argument("--num", type=int, default=600, help="samples and real faces compared")
    parser.add_argument("--draws", type=int, default=2048, help="prior draws the statistics are estimated on")
    parser.add_argument("--prior", default=None, help="prior to draw from (default: the run's)")
    args = parser.parse_args(argv)
    run = Run.open(args.model)
    model = run.load_model()
    keras.config.set_dtype_policy("float32")
    prior = run.prior(model, args.prior)
    faces = load_faces(args.data, model.image_size, progress=False)
    real = faces.numpy(range(min(args.num, len(faces))))
    z = prior_latents(prior, args.num, seed=0)
    before = swd(real, decode(model, z), seed=0)
    reestimate(model.decoder, prior_latents(prior, args.draws, seed=1))
    after = swd(real, decode(model, z), seed=0)
    print(f"{args.model}: {prior.name} prior, {args.num} samples against {len(real)} faces of {args.data}")
    for level in before:
        print(f"SWD x1e3 {level:>4s}: {before[level]:8.2f} -> {after[level]:8.2f} ({after[level] / before[level]:.2f}x)")


if __name__ == "__main__":
    main()
