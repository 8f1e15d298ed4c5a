"""Draw random faces from a trained VAE's latent prior: a grid PNG, and optionally one PNG per face."""
from pathlib import Path

from vae.cli import add_model_flags, add_prior_flag, check_suffix, invoke, make_parser, positive_float, positive_int, seed_int
from vae.errors import UserError
from vae.priors import DEFAULT, PRIORS

GRID_MAX = 1024  # faces shown in the grid at most (32 x 32); --individual writes every face


def main(argv):
    parser = make_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--num", type=positive_int, default=64,
                        help=f"number of faces; the grid shows the first {GRID_MAX} at most")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the latent draws; the same seed gives the same faces")
    parser.add_argument("--temperature", type=positive_float, default=1.0,
                        help="scale of the prior's standard deviation; below 1 gives cleaner, less varied faces")
    add_prior_flag(parser, "what the faces are drawn from", PRIORS, DEFAULT)
    parser.add_argument("--out", default="samples.png", help="grid PNG to write")
    parser.add_argument("--individual", metavar="DIR", help="also write each face as DIR/face_NNNNNN.png")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out, and the face_*.png files of the same names in --individual, if they exist "
                             "(else they are refused); no other file is ever deleted")
    args = parser.parse_args(argv)
    out = check_suffix("--out", args.out, ".png", "sample.py")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it, or choose another --out")

    from vae.evaluation.latent import check_individual, check_outputs, face_name, sample_faces
    from vae.run import Run

    run = Run.open(args.model)
    check_outputs(run, [("--out", out), *([("--individual", Path(args.individual))] if args.individual else [])])
    older = check_individual(args.individual, args.overwrite) if args.individual else []
    model = run.load_model(args.image_size, args.latent_dim)
    sample_faces(model, run.prior(model, args.prior), out, args.num, args.seed, args.temperature, args.individual, GRID_MAX)
    shown = f" (the grid shows the first {GRID_MAX})" if args.num > GRID_MAX else ""
    written = {face_name(i, args.num) for i in range(args.num)} if older else set()
    left = sum(p.name not in written for p in older)
    print(f"wrote {args.num} faces to {out}{shown}" + (f" and {args.individual}/" if args.individual else "")
          + (f"; {left} older face_*.png files there were left as they were" if left else ""))


if __name__ == "__main__":
    invoke(main)
