"""Robustness of the package on this machine, each figure beside its target; writes benchmarks/robustness.json.

    python benchmarks/robustness.py                          # all four sections (a few minutes on 2 cores)
    python benchmarks/robustness.py --only mixture sigterm   # some of them
    python benchmarks/robustness.py --repeats 2 --out /tmp/robustness.json

mixture: the end-of-run latent mixture fit, alone and next to a process running TensorFlow matmuls on every core.
keras_bomb: peak memory of sample.py given a real model whose config.json inflates to 2 GiB. uploads: the explorer
server's memory under ten parallel uploads of a 9400x9400 PNG and of one at the pixel limit. sigterm: seconds from
SIGTERM to the exit of a training run. Everything measured runs in a fresh child process, so this one never loads
TensorFlow and its thread pools are the ones a user gets.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from vae.data.image_files import MAX_SIDE  # noqa: E402  (numpy and PIL only: no TensorFlow here)
from vae.pictures import blank_png  # noqa: E402

SHARED_FACES = ROOT.parent / "shared" / "anime_faces"
SECTIONS = ("mixture", "keras_bomb", "uploads", "sigterm")
NUM_FACES, MB = 600, 2**20
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}  # children's lines arrive as they are printed
FIT = """import sys, time, json
import vae.backend, keras
from vae.data.dataset import load_faces
from vae.priors.mixture import GaussianMixture
from vae.run import Run
keras.config.set_dtype_policy("float32")  # as the trainer does before its fit
model, faces = Run.open(sys.argv[1]).load_model(None, None), load_faces(sys.argv[2], 64, progress=False)
start = time.perf_counter()
GaussianMixture.fit(model, faces, None, progress=False)
print(json.dumps(time.perf_counter() - start))
"""
# Bounded memory: the same input each time and the product dropped at once.
NEIGHBOUR = """import tensorflow as tf
a = tf.random.normal((1024, 1024))
print("ready", flush=True)
while True:
    tf.linalg.matmul(a, a)
"""


def machine() -> dict:
    """The CPU as /proc/cpuinfo names it (model name, family, model), as benchmark.py's machine() does without TensorFlow."""
    fields = {}
    if Path("/proc/cpuinfo").exists():
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(), "family": fields.get("cpu family"),
            "model": fields.get("model"), "cores": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def face_folder(folder: Path) -> Path:
    """NUM_FACES of the shared faces, symlinked (never copied into the repository)."""
    folder.mkdir()
    for i, source in enumerate(sorted(SHARED_FACES.glob("*.jpg"))[:NUM_FACES]):
        (folder / f"{i:06d}.jpg").symlink_to(source)
    return folder


def measured(cmd: list, log: Path) -> tuple[int, float, float, str]:
    """(exit code, peak RSS in MB, seconds, last output line) of one fresh child; wait4 gives that child's own peak."""
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=err, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    return proc.returncode, usage.ru_maxrss / 1024, time.perf_counter() - start, last_line(log)


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def fit_seconds(run: Path, faces: Path, busy: bool) -> float:
    """Seconds of one mixture fit in a fresh process, next to a matmul loop on every core when `busy`."""
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=ENV, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True) if busy else None
    try:
        if neighbour is not None:
            neighbour.stdout.readline()  # its first matmul ran: it is busy before the fit starts
        out = subprocess.run([sys.executable, "-c", FIT, str(run), str(faces)], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def padded_keras(source: Path, path: Path, padding: int = 2 * 2**30) -> Path:
    """`source` rewritten with config.json followed by `padding` bytes of whitespace, streamed a MiB at a time."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in original.infolist():
            if info.filename != "config.json":
                archive.writestr(info.filename, original.read(info))
        with archive.open("config.json", "w", force_zip64=True) as stream:
            stream.write(original.read("config.json"))
            for _ in range(padding // MB):
                stream.write(b" " * MB)
    return path


def vm_mb(pid: int, field: str) -> float:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def parallel_uploads(url: str, png: bytes, pid: int, num: int = 10) -> tuple[dict, float]:
    """({status: count}, peak RSS in MB) of `num` simultaneous multipart uploads to /api/encode."""
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="face.png"\r\nContent-Type: image/png\r\n\r\n'
            + png + b"\r\n--XyZ--\r\n")
    codes, done = [], threading.Event()

    def send():
        request = urllib.request.Request(url + "/api/encode", body, {"Content-Type": "multipart/form-data; boundary=XyZ"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                codes.append(response.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)

    peak = [vm_mb(pid, "VmRSS")]

    def sample():  # VmHWM alone would do, but clear_refs may be refused outside root
        while not done.wait(0.01):
            peak[0] = max(peak[0], vm_mb(pid, "VmRSS"))

    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak restarts from the current size
    sampler, threads = threading.Thread(target=sample), [threading.Thread(target=send) for _ in range(num)]
    for thread in [sampler, *threads]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    return {code: codes.count(code) for code in sorted(set(codes))}, max(peak[0], vm_mb(pid, "VmHWM"))


def sigterm_once(faces: Path, out: Path) -> tuple[float, int, str]:
    """(seconds from SIGTERM to exit, exit code, last stderr line) of a training run stopped during its fourth epoch."""
    log, errors = out.with_suffix(".log"), out.with_suffix(".err")
    with open(log, "w") as lines, open(errors, "w") as err:  # epoch lines go to stdout, the stop message to stderr
        proc = subprocess.Popen([sys.executable, "train.py", "--data", str(faces), "--out", str(out), "--num_epochs", "50"],
                                cwd=ROOT, env=ENV, stdout=lines, stderr=err)
        deadline = time.monotonic() + 300

        def seen(text: str) -> float:
            while text not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            return time.monotonic()

        # An epoch line is printed last, after its checkpoint: the next epoch's steps start then. Epochs take 1-2 s
        # here, so a fixed delay can miss the steps; a third of the last epoch's length lands early in the fourth.
        second = seen("epoch 2/50")
        time.sleep((seen("epoch 3/50") - second) / 3)
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.perf_counter() - start, proc.returncode, last_line(errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "robustness.json"))
    args = parser.parse_args()
    results, began = {"machine": machine()}, time.perf_counter()

    def report(name, value, unit="", target=None, ok=None):
        results[name] = value
        mark = "" if ok is None else ("met" if ok else "MISSED")
        shown = value if isinstance(value, str) else (f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}")
        print(f"{name:62s} {shown:>10s} {unit:8s} {target or '':>14s} {mark}", flush=True)

    def note(name, text):  # one-line messages (errors, last lines) beside the figures, not instead of them
        results[name] = text
        print(f"    {name}: {text}", flush=True)

    cpu = results["machine"]
    print(f"machine: {cpu['cpu']} (family {cpu['family']}, model {cpu['model']}), {cpu['cores']} cores; "
          f"load average {' '.join(cpu['loadavg'])}")
    print(f"{'figure':62s} {'value':>10s} {'':8s} {'target':>14s}")
    with tempfile.TemporaryDirectory(prefix="vae-robust-") as tmp:
        tmp = Path(tmp)
        faces, run = face_folder(tmp / "faces"), tmp / "run"
        if set(args.only) - {"sigterm"}:
            subprocess.run([sys.executable, "train.py", "--data", str(faces), "--out", str(run), "--num_epochs", "2"],
                           cwd=ROOT, env=ENV, check=True, capture_output=True)

        if "mixture" in args.only:
            for busy, label in ((False, "alone"), (True, "beside all-core TF matmuls")):
                best = min(fit_seconds(run, faces, busy) for _ in range(args.repeats))
                report(f"mixture fit of {NUM_FACES} faces {label}, best of {args.repeats}", best, "s", "<= 5 s", best <= 5)

        if "keras_bomb" in args.only:
            (tmp / "bomb").mkdir()
            bomb = padded_keras(run / "model_best.keras", tmp / "bomb" / "model_best.keras")
            report("padded .keras file on disk", bomb.stat().st_size / MB, "MB")
            for label, model, expected in (("unpadded", run / "model_best.keras", 0), ("padded to 2 GiB", bomb, 2)):
                runs = [measured([sys.executable, "sample.py", "--model", str(model), "--num", "4", "--out",
                                  str(tmp / f"s{i}.png"), "--overwrite"], tmp / "sample.log") for i in range(args.repeats)]
                code, peak, seconds, line = max(runs, key=lambda r: r[1])
                report(f"sample.py peak RSS, {label} (worst of {args.repeats})", peak, "MB", "<= 1,024 MB", peak <= 1024)
                report(f"sample.py exit code, {label}", str(code), "", str(expected), code == expected)
                report(f"sample.py seconds, {label}", seconds, "s")
                note(f"sample.py last line, {label}", line)

        if "uploads" in args.only:
            port = 8600 + os.getpid() % 1000
            url = f"http://127.0.0.1:{port}"
            with open(tmp / "server.log", "w") as err:
                server = subprocess.Popen([sys.executable, "explore.py", "serve", "--model", str(run), "--port", str(port)],
                                          cwd=ROOT, env=ENV, stdout=err, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 180
                while True:
                    try:
                        urllib.request.urlopen(url + "/", timeout=5).read()
                        break
                    except OSError:
                        if server.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"explore.py serve did not answer: {last_line(tmp / 'server.log')}") from None
                        time.sleep(0.5)
                for width, channels in ((9400, 3), (MAX_SIDE, 4)):  # far over the pixel limit, then the largest accepted
                    png = blank_png(width, width, channels)
                    label = f"{width}x{width} {'RGB' if channels == 3 else 'RGBA'} PNG of {len(png) / MB:.2f} MB"
                    before = vm_mb(server.pid, "VmRSS")
                    codes, peak = parallel_uploads(url, png, server.pid)
                    after = vm_mb(server.pid, "VmRSS")
                    report(f"server RSS before 10 uploads of a {label}", before, "MB")
                    report(f"  server peak RSS during them ({width} px)", peak, "MB", "<= 1,024 MB", peak <= 1024)
                    report(f"  server peak rise over before ({width} px)", peak - before, "MB")
                    report(f"  server RSS after them ({width} px)", after, "MB")
                    note(f"status codes, {label}", json.dumps(codes))
            finally:
                server.terminate()
                server.wait()

        if "sigterm" in args.only:
            stops = [sigterm_once(faces, tmp / f"stopped{i}") for i in range(args.repeats)]
            seconds = [s for s, _, _ in stops]
            report(f"SIGTERM to exit of train.py, best of {args.repeats}", min(seconds), "s", "<= 30 s", min(seconds) <= 30)
            report(f"SIGTERM to exit of train.py, worst of {args.repeats}", max(seconds), "s", "<= 30 s", max(seconds) <= 30)
            for i, (s, code, line) in enumerate(stops):
                report(f"train.py exit code after SIGTERM, try {i + 1}", str(code), "", "143", code == 143)
                note(f"train.py last line, try {i + 1} ({s:.1f} s)", line)

    results["seconds"] = time.perf_counter() - began
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"took {results['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
