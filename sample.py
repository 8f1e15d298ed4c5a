"""Draw random faces from a trained VAE's latent prior: a grid PNG, and optionally one PNG per face."""
import math
from pathlib import Path

from vae.cli import add_model_flags, add_prior_flag, make_parser, run


def main(argv):
    parser = make_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--num", type=int, default=64, help="number of faces")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent draws; the same seed gives the same faces")
    parser.add_argument("--temperature", type=float, default=1.0, help="scale of the prior's standard deviation; below 1 gives cleaner, less varied faces")
    add_prior_flag(parser, "what the faces are drawn from")
    parser.add_argument("--out", default="samples.png", help="grid PNG to write")
    parser.add_argument("--individual", metavar="DIR", help="also write each face as DIR/face_NNNN.png")
    args = parser.parse_args(argv)

    from vae.density import prior_density
    from vae.images import make_grid, save_png
    from vae.prior import decode, prior_latents
    from vae.run_folder import load_model

    model = load_model(args.model, args.image_size, args.latent_dim)
    density = prior_density(model, args.model, args.prior)
    faces = decode(model, prior_latents(args.num, model.latent_dim, args.seed, args.temperature, density))
    if args.individual:
        for i, face in enumerate(faces):
            save_png(face, Path(args.individual) / f"face_{i:04d}.png")
    # The grid comes last: once it exists, everything asked for was written.
    save_png(make_grid(faces, cols=math.ceil(math.sqrt(args.num))), args.out, min_side=256)
    print(f"wrote {args.num} faces to {args.out}" + (f" and {args.individual}/" if args.individual else ""))


if __name__ == "__main__":
    run(main)
