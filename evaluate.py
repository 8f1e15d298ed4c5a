"""Evaluate a trained VAE on a folder (default: its run's validation split): L1, PSNR, SSIM, bits/dim, KL, active units, SWD."""
from vae.cli import add_model_flags, add_prior_flag, invoke, make_parser, positive_float, positive_int, seed_int
from vae.priors import DEFAULT, PRIORS


def main(argv):
    parser = make_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--data", help="folder of images, searched recursively; default: the run's validation split")
    parser.add_argument("--out", help="folder for report.json, report.md and its grids; default: evaluation/ in the run folder")
    parser.add_argument("--num_samples", type=positive_int, default=2048,
                        help="prior samples and real images compared by SWD (at most the folder's size)")
    add_prior_flag(parser, "what the SWD samples are drawn from", PRIORS, DEFAULT)
    parser.add_argument("--temperature", type=positive_float, default=1.0,
                        help="scale of the prior's standard deviation for those samples, as in sample.py")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the prior samples, sampled z, image subset and SWD")
    parser.add_argument("--batch_size", type=positive_int, default=128, help="images per forward pass")
    args = parser.parse_args(argv)

    from vae.evaluation.report import evaluate, report_table, write_report
    from vae.files import refuse_inside
    from vae.run import Run

    run = Run.open(args.model)
    out = args.out or run.evaluation
    data = args.data or run.data_folder
    if data is not None:  # now, not after an evaluation of minutes
        refuse_inside("--out", out, "--data" if args.data else "the run's data folder", data)
    model = run.load_model(args.image_size, args.latent_dim)
    report, grids = evaluate(model, run, args.data, args.num_samples, args.seed, args.batch_size, prior=args.prior,
                             temperature=args.temperature)
    write_report(report, grids, out)
    print(report_table(report))
    if report["swd_warning"]:
        print(f"warning: {report['swd_warning']}")
    print(f"wrote report.json, report.md and its grids to {out}")


if __name__ == "__main__":
    invoke(main)
