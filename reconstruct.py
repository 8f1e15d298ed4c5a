"""Reconstruct every image of a folder with a trained VAE: PNGs, a comparison grid and per-image metrics."""
from vae.cli import add_model_flags, invoke, make_parser, positive_int


def main(argv):
    parser = make_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--input", required=True, help="folder of images, searched recursively; never written to")
    parser.add_argument("--output", required=True, help="folder for reconstructions (same relative paths, .png), comparison.png, "
                        "and metrics.csv, written last: a folder without it is incomplete")
    parser.add_argument("--batch_size", type=positive_int, default=128, help="images per forward pass")
    args = parser.parse_args(argv)

    from vae.data.image_files import skipped_summary
    from vae.evaluation.reconstruction import reconstruct_folder
    from vae.run import Run

    model = Run.open(args.model).load_model(args.image_size, args.latent_dim)
    result = reconstruct_folder(model, args.input, args.output, args.batch_size)
    if result["skipped"]:
        print(f"warning: {skipped_summary(result['skipped'], result['images'] + len(result['skipped']))}")
    print(f"reconstructed {result['images']} images into {args.output}: "
          f"mean L1 {result['l1']:.4f}, PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}")


if __name__ == "__main__":
    invoke(main)
