"""Quality at equal wall time: a train.py variant and the plain reference recipe (or other flags) trained at the same
time, one core each.

    python benchmarks/paired.py --name adversarial --minutes 10 -- --adversarial_weight 0.1 --disc_augment
    python benchmarks/paired.py --name few_wd --baseline "" --faces 1200 -- --weight_decay 1   # vs the defaults, few faces

The faces of ../shared/anime_faces are split once by name: a held-out slice of 600 that no run trains or tunes on,
and the rest, from which train.py takes its validation split. Both runs are then measured by evaluate.py on their
validation split and on the held-out slice; the figures, the variant's over the reference's, go to the terminal and
to RUNS/NAME.json. The reference is the keras.io recipe trained by train.py (docs/quality.md says why).
"""
import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from robustness import machine  # the CPU as /proc/cpuinfo names it, without loading TensorFlow

ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = ROOT.parent / "shared" / "anime_faces"
HELD_OUT = 600
REFERENCE = ["--beta", "1", "--batch_size", "128", "--kl_warmup_epochs", "0", "--lr_warmup_steps", "0", "--no_flip",
             "--lr_schedule", "constant", "--bn_momentum", "0.99"]


def split_faces(target: Path, faces: int | None = None) -> tuple[Path, Path]:
    """Folders of symbolic links: the faces to train on (all but the held-out slice, or the first `faces` of them) and
    a held-out slice, chosen by a hash of each name."""
    train, held = target / ("train" if faces is None else f"train_{faces}"), target / "held_out"
    names = sorted(p.name for p in SHARED_FACES.iterdir() if p.is_file())
    names.sort(key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    for folder, chosen in ((held, names[:HELD_OUT]), (train, names[HELD_OUT:][:faces])):
        if not folder.exists():
            staging = folder.with_name(folder.name + ".tmp")
            staging.mkdir(parents=True, exist_ok=True)
            for name in chosen:
                if not (staging / name).is_symlink():
                    (staging / name).symlink_to(SHARED_FACES / name)
            staging.rename(folder)
    return train, held


def evaluate(run: Path, data: Path | None, out: Path, samples: int, prior: str | None) -> dict:
    command = [sys.executable, "evaluate.py", "--model", str(run), "--num_samples", str(samples), "--out", str(out)]
    command += (["--data", str(data)] if data else []) + (["--prior", prior] if prior else [])
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "report.json").read_text())


def prior(label: str) -> str | None:
    """evaluate.py's --prior for an arm: the reference recipe knows no mixture."""
    return "normal" if label == "reference" else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the variant's run folder name under --runs")
    parser.add_argument("--minutes", type=float, default=10, help="wall time each run trains (train.py --max_minutes)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "paired"), help="folder for the runs and the face split")
    parser.add_argument("--samples", type=int, default=600, help="prior samples compared by SWD (evaluate.py --num_samples)")
    parser.add_argument("--baseline", help="train.py flags of the other arm, quoted as one string (\"\": the defaults); "
                        "default: the reference recipe, sampled from N(0, I)")
    parser.add_argument("--faces", type=int, help="train on only this many of the faces (a small folder, where "
                        "regularisation shows); default: all but the held-out slice")
    parser.add_argument("variant", nargs="*", help="train.py flags of the variant, after --")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    train, held = split_faces(runs / "faces", args.faces)
    other = "reference" if args.baseline is None else "baseline"
    flags = REFERENCE if args.baseline is None else shlex.split(args.baseline)
    arms = {other: (runs / f"{args.name}-{other}", flags), args.name: (runs / args.name, args.variant)}
    cpu = "{cpu} (family {family}, model {model}), {cores} cores".format(**machine())
    print(f"CPU: {cpu}; {args.minutes:g} minutes each, one core each (taskset -c 0 / -c 1)", flush=True)
    started = time.time()
    children = []
    for core, (run, flags) in enumerate(arms.values()):
        command = ["taskset", "-c", str(core), sys.executable, "train.py", "--data", str(train), "--val_split", "0.1",
                   "--num_epochs", "1000", "--max_minutes", f"{args.minutes:g}", "--out", str(run), *flags]
        print(" ".join(command[3:]), flush=True)
        with open(runs / f"{run.name}.log", "w") as log:  # the child keeps its own copy of the file
            children.append(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    codes = [child.wait() for child in children]
    if any(codes):
        sys.exit(f"training failed ({codes}); see the .log files in {runs}")
    print(f"trained in {(time.time() - started) / 60:.1f} min", flush=True)
    results = {"cpu": cpu, "minutes": args.minutes, "faces": args.faces, "variant": args.variant, "against": other,
               other + "_flags": flags}
    for label, (run, _) in arms.items():
        history = (run / "history.csv").read_text().splitlines()
        results[label] = {
            "epochs": len(history) - 1,
            "validation": evaluate(run, None, run / "evaluation", args.samples, prior(label)),
            "held_out": evaluate(run, held, run / "evaluation_held_out", args.samples, prior(label)),
        }
    ref, new = results[other], results[args.name]
    print(f"{'':24s} {other:>12s} {args.name:>14s} {'ratio/diff':>12s}")
    print(f"{'epochs':24s} {ref['epochs']:12d} {new['epochs']:14d}")
    for split in ("validation", "held_out"):
        a, b = ref[split], new[split]
        print(f"{split + ' PSNR dB':24s} {a['psnr']:12.2f} {b['psnr']:14.2f} {b['psnr'] - a['psnr']:+12.2f}")
        print(f"{split + ' SSIM':24s} {a['ssim']:12.3f} {b['ssim']:14.3f} {b['ssim'] - a['ssim']:+12.3f}")
        for level in a["swd_x1e3"]:
            x, y = a["swd_x1e3"][level], b["swd_x1e3"][level]
            print(f"{split + ' SWD ' + level:24s} {x:12.2f} {y:14.2f} {y / x:11.2f}x")
    (runs / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {runs / (args.name + '.json')}")


if __name__ == "__main__":
    main()
