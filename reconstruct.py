"""Reconstruct every image of a folder with a trained VAE: PNGs, a comparison grid and per-image metrics."""
from vae.cli import make_parser, run


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--model", required=True, help="run folder (its best model) or a .keras file")
    parser.add_argument("--input", required=True, help="folder of images, searched recursively; never written to")
    parser.add_argument("--output", required=True, help="folder for reconstructions (same relative paths, .png), comparison.png, metrics.csv")
    parser.add_argument("--batch_size", type=int, default=128, help="images per forward pass")
    args = parser.parse_args(argv)

    from vae.reconstruction import reconstruct_folder
    from vae.run_folder import load_model

    result = reconstruct_folder(load_model(args.model), args.input, args.output, args.batch_size)
    if result["skipped"]:
        shown = ", ".join(f"{n} ({why})" for n, why in result["skipped"][:5])
        print(f"warning: skipped {len(result['skipped'])} files that could not be read: {shown}")
    print(f"reconstructed {result['images']} images into {args.output}: "
          f"mean L1 {result['l1']:.4f}, PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}")


if __name__ == "__main__":
    run(main)
