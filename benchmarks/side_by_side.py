"""One picture comparing runs: a column per run, its prior samples above built-in synthetic faces and their reconstructions.

    python benchmarks/side_by_side.py --runs runs/reference runs/ours --labels reference ours --out docs/sharper_faces.png

Each run needs `evaluate.py --model RUN` first (the top rows of its evaluation/samples.png are shown). The faces
reconstructed are rendered by vae.data.synthetic, never seen in training, so the picture holds no one's images.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from vae.data.synthetic import render_face  # noqa: E402
from vae.pictures import pairs_grid, save_png  # noqa: E402

TILE, GAP, HEADER, MARGIN = 64, 2, 22, 12


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="evaluated run folders, one column each")
    parser.add_argument("--labels", nargs="+", required=True, help="a caption per run")
    parser.add_argument("--rows", type=int, default=4, help="rows of samples, and of faces over reconstructions")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    if len(args.labels) != len(args.runs):
        parser.error("give one label per run")

    from vae.model.vae import decode, encode
    from vae.run import Run

    faces = np.stack([render_face(1234, i) for i in range(args.rows // 2 * 8)])
    columns = []
    for run in map(Path, args.runs):
        samples = run / "evaluation" / "samples.png"
        if not samples.is_file():
            parser.error(f"{samples} not found; run evaluate.py --model {run} first")
        grid = Image.open(samples).convert("RGB")
        model = Run.open(run).load_model(image_size=TILE)
        pairs = pairs_grid(faces, decode(model, encode(model, faces)[0]))
        columns.append((grid.crop((0, 0, grid.width, args.rows * (TILE + GAP) + GAP)), Image.fromarray(pairs)))
    width, height = columns[0][0].size
    sheet = Image.new("RGB", (len(columns) * (width + MARGIN) + MARGIN, 2 * (height + HEADER) + MARGIN), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, (samples, reconstructions)) in enumerate(zip(args.labels, columns)):
        x = MARGIN + i * (width + MARGIN)
        draw.text((x, 5), f"{label}: samples", fill="black")
        sheet.paste(samples, (x, HEADER))
        draw.text((x, HEADER + height + 5), f"{label}: unseen synthetic faces over their reconstructions", fill="black")
        sheet.paste(reconstructions, (x, 2 * HEADER + height))
    save_png(np.asarray(sheet), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
