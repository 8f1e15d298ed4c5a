"""Share a trained model: a TensorFlow SavedModel, ONNX files, or a static web page that draws faces in the browser."""
from pathlib import Path

from vae.cli import invoke, make_parser
from vae.errors import UserError
from vae.files import is_run_folder, refuse_inside

FORMATS = {
    "saved_model": "a TensorFlow SavedModel with the signatures decode (serving_default) and encode, for TF Serving and "
                   "the LiteRT converter",
    "onnx": "encoder.onnx and decoder.onnx, each checked with onnxruntime against the Keras model",
    "web": "a static folder (index.html, the decoder in ONNX, onnxruntime-web) that draws faces in the visitor's browser; "
           "serve it with any static file server, e.g. python -m http.server",
}


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--model", required=True, help="run folder (its best model) or a .keras file")
    parser.add_argument("--format", required=True, choices=list(FORMATS),
                        help="; ".join(f"{name}: {what}" for name, what in FORMATS.items()))
    parser.add_argument("--out", required=True, help="folder to write; it must not exist or be empty, unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it holds anything (only once the export is complete)")
    args = parser.parse_args(argv)
    refuse_out_over_model(Path(args.model), Path(args.out))

    from vae.export import export

    size = export(args.model, args.format, args.out, args.overwrite)
    hint = f"; serve it with: python -m http.server -d {args.out}" if args.format == "web" else ""
    print(f"wrote {args.format} of {args.model} to {args.out}/ ({size / 1e6:.1f} MB){hint}")


def refuse_out_over_model(model: Path, out: Path) -> None:
    """UserError if --out would land inside the run folder of --model (train.py's) or, replaced, would take the model
    with it."""
    folder = model if model.is_dir() else model.parent
    if is_run_folder(folder):
        refuse_inside("--out", out, "the run folder of --model", folder)
    if out.resolve() == model.resolve() or out.resolve() in model.resolve().parents:
        raise UserError(f"--out {out} holds --model {model}: replacing --out would delete the model; choose another --out")


if __name__ == "__main__":
    invoke(main)
