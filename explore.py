"""Explore a trained VAE's latent space: interpolate between faces, traverse dimensions, encode a folder."""
from vae.cli import add_model_flags, add_prior_flag, make_parser, run


def main(argv):
    parser = make_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    shown = {"formatter_class": parser.formatter_class}  # sub-commands show their defaults too
    interpolate = commands.add_parser("interpolate", **shown, help="a strip PNG and a looping GIF along the great circle between two latents")
    which = interpolate.add_mutually_exclusive_group(required=True)
    which.add_argument("--images", nargs="+", metavar="IMAGE", help="two image files: interpolate between their encodings")
    which.add_argument("--random", type=int, metavar="PAIRS", help="this many pairs of random prior points, one per row")
    interpolate.add_argument("--steps", type=int, default=10, help="faces along each interpolation, ends included")
    interpolate.add_argument("--seed", type=int, default=0, help="seed of the prior points (with --random)")
    add_prior_flag(interpolate, "what the --random points are drawn from")
    interpolate.add_argument("--out", default="interpolation.png", help="strip PNG; the GIF goes beside it with .gif")
    traverse = commands.add_parser("traverse", **shown, help="a grid moving the most informative latent dimensions one at a time")
    traverse.add_argument("--data", help="folder whose mean KL ranks the dimensions; default: the run's validation split")
    traverse.add_argument("--dims", type=int, default=8, help="rows: the dimensions with the largest mean KL")
    traverse.add_argument("--steps", type=int, default=7, help="columns: values from -span to +span")
    traverse.add_argument("--span", type=float, default=3.0, help="farthest value, in prior standard deviations")
    traverse.add_argument("--image", help="traverse around this image's encoding instead of the prior mean (all zeros)")
    traverse.add_argument("--out", default="traversal.png", help="grid PNG to write")
    encode = commands.add_parser("encode", **shown, help="posterior means and log-variances of every image of a folder, as .npz")
    encode.add_argument("--data", required=True, help="folder of images, searched recursively")
    encode.add_argument("--out", default="latents.npz", help=".npz with names, mean, log_var")
    encode.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    for command in (interpolate, traverse, encode):
        add_model_flags(command)
        command.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    args = parser.parse_args(argv)

    from pathlib import Path

    from vae import latent
    from vae.density import prior_density
    from vae.errors import UserError
    from vae.images import save_gif, save_png
    from vae.run_folder import load_model

    if args.command == "interpolate" and Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--out {args.out} must end in .png; the GIF is written beside it with .gif")
    model = load_model(args.model, args.image_size, args.latent_dim)
    if args.command == "interpolate":
        if args.images is not None:
            strip, frames = latent.interpolate_images(model, args.images, args.steps)
        else:
            density = prior_density(model, args.model, args.prior)
            strip, frames = latent.interpolate_prior(model, args.random, args.steps, args.seed, density)
        gif = Path(args.out).with_suffix(".gif")
        save_png(strip, args.out, min_side=256)
        save_gif(frames, gif)
        print(f"wrote {args.out} and {gif}")
    elif args.command == "traverse":
        from vae.evaluation import evaluation_images

        faces, described = evaluation_images(args.model, args.data, model.image_size)
        rows = latent.traverse(model, faces, args.out, args.dims, args.steps, args.span, args.image)
        print(f"wrote {args.out}; rows, by mean KL over {len(faces)} images ({described}): "
              + ", ".join(f"z{d} ({kl:.2f} nats)" for d, kl in rows))
    else:
        faces = latent.encode_folder(model, args.data, args.out, args.batch_size)
        print(f"wrote names, mean and log_var of {len(faces)} images to {args.out}"
              + (f" ({len(faces.skipped)} unreadable files skipped)" if faces.skipped else ""))


if __name__ == "__main__":
    run(main)
