"""Explore a trained VAE's latent space: interpolate between faces, traverse dimensions, encode a folder, steer faces live."""
from vae.cli import add_model_flags, add_prior_flag, check_suffix, invoke, make_parser, positive_float, positive_int, seed_int
from vae.priors import DEFAULT, PRIORS


def main(argv):
    parser = make_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    shown = {"formatter_class": parser.formatter_class}  # sub-commands show their defaults too
    interpolate = commands.add_parser("interpolate", **shown,
                                      help="a strip PNG and a looping GIF along the great circle between two latents")
    which = interpolate.add_mutually_exclusive_group(required=True)
    which.add_argument("--images", nargs="+", metavar="IMAGE", help="two image files: interpolate between their encodings")
    which.add_argument("--random", type=positive_int, metavar="PAIRS",
                       help="this many pairs of random prior points, one per row (at most 32)")
    interpolate.add_argument("--steps", type=positive_int, default=10,
                             help="faces along each interpolation, ends included (2 to 100)")
    interpolate.add_argument("--seed", type=seed_int, default=0, help="seed of the prior points (with --random)")
    add_prior_flag(interpolate, "what the --random points are drawn from", PRIORS, DEFAULT)
    interpolate.add_argument("--out", default="interpolation.png", help="strip PNG; the GIF goes beside it with .gif")
    traverse = commands.add_parser("traverse", **shown, help="a grid moving the most informative latent dimensions one at a time")
    traverse.add_argument("--data", help="folder whose mean KL ranks the dimensions; default: the run's validation split")
    traverse.add_argument("--dims", type=positive_int, default=8,
                          help="rows: the dimensions with the largest mean KL (at most 32)")
    traverse.add_argument("--steps", type=positive_int, default=7, help="columns: values from -span to +span (2 to 100)")
    traverse.add_argument("--span", type=positive_float, default=3.0, help="farthest value, in prior standard deviations")
    traverse.add_argument("--image", help="traverse around this image's encoding instead of the prior mean (all zeros)")
    traverse.add_argument("--out", default="traversal.png", help="grid PNG to write")
    encode = commands.add_parser("encode", **shown, help="posterior means and log-variances of every image of a folder, as .npz")
    encode.add_argument("--data", required=True, help="folder of images, searched recursively")
    encode.add_argument("--out", default="latents.npz", help=".npz with names, mean, log_var")
    encode.add_argument("--batch_size", type=positive_int, default=256, help="images per forward pass")
    server = commands.add_parser("serve", **shown, help="a local web page to draw, steer and morph faces live")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 opens it (no password) to the network")
    server.add_argument("--port", type=positive_int, default=8000, help="port to listen on")
    add_prior_flag(server, "what the page's random faces are drawn from", PRIORS, DEFAULT)
    for command in (interpolate, traverse, encode, server):
        add_model_flags(command)
        command.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    args = parser.parse_args(argv)
    if args.command == "serve":
        from vae.app import serve

        serve(args.model, args.host, args.port, args.prior, args.image_size, args.latent_dim, args.debug)
        return
    out = check_suffix("--out", args.out, ".npz" if args.command == "encode" else ".png", f"explore.py {args.command}")

    from vae.evaluation import latent
    from vae.pictures import save_gif, save_png
    from vae.run import Run

    run = Run.open(args.model)
    outs = [("--out", out), *([("--out", out.with_suffix(".gif"))] if args.command == "interpolate" else [])]
    inputs = [("--images", image) for image in getattr(args, "images", None) or []]
    latent.check_outputs(run, outs, inputs + [(flag, getattr(args, flag[2:], None)) for flag in ("--data", "--image")])
    model = run.load_model(args.image_size, args.latent_dim)
    if args.command == "interpolate":
        latent.check_interpolation(args.random, args.steps)
        if args.images is not None:
            strip, frames = latent.interpolate_images(model, args.images, args.steps)
        else:
            strip, frames = latent.interpolate_prior(model, args.random, args.steps, args.seed, run.prior(model, args.prior))
        gif = out.with_suffix(".gif")
        save_png(strip, out, min_side=256)
        save_gif(frames, gif)
        print(f"wrote {out} and {gif}")
    elif args.command == "traverse":
        from vae.evaluation.report import evaluation_images

        latent.check_traversal(model, args.dims, args.steps, args.span)
        faces, described = evaluation_images(run, args.data, model.image_size)
        rows = latent.traverse(model, faces, out, args.dims, args.steps, args.span, args.image)
        print(f"wrote {out}; rows, by mean KL over {len(faces)} images ({described}): "
              + ", ".join(f"z{d} ({kl:.2f} nats)" for d, kl in rows))
    else:
        faces = latent.encode_folder(model, args.data, out, args.batch_size)
        print(f"wrote names, mean and log_var of {len(faces)} images to {out}"
              + (f" ({len(faces.skipped)} unreadable files skipped)" if faces.skipped else ""))


if __name__ == "__main__":
    invoke(main)
