"""Train the VAE on a folder of face images, or on built-in synthetic faces when --data is not given."""
from vae.cli import invoke, make_parser
from vae.config import add_config_flags, config_from_args, parse_config_args
from vae.run import Run


def main(argv):
    parser = make_parser(__doc__)
    add_config_flags(parser)
    parser.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    args = parse_config_args(parser, argv)
    cfg = config_from_args(args)
    run = Run(cfg.out)
    if cfg.strategy != "multiworker":  # one process, so the one writer: a second trainer is refused before TensorFlow loads
        run.claim(cfg, args.overwrite)

    from vae.training.trainer import train

    train(cfg, overwrite=args.overwrite, run=run)


if __name__ == "__main__":
    invoke(main)
