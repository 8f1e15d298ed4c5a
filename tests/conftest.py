"""Shared fixtures: tiny image folders, the real faces when present, and running the scripts."""
import base64
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: each worker trains its own trained_run
    fcntl = None

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = ROOT.parent / "shared" / "anime_faces"

# The files that take longest on 2 cores, longest first. pytest-xdist's --dist loadfile hands out whole files in
# collection order; left to its own order (most tests first) the few-test long files came last, and one worker ran
# them for 77 s while the other had finished. The rest keep their order, to fill the gaps.
LONGEST_FIRST = ["test_sharp.py", "test_distribute.py", "test_kills.py", "test_model.py", "test_training.py",
                 "test_run_folder.py", "test_old_checkpoints.py", "test_export.py", "test_bad_input.py", "test_device.py",
                 "test_signals.py", "test_app.py", "test_untouched.py", "test_careless.py", "test_real_faces.py", "test_cli.py",
                 "test_evaluate.py", "test_readme.py"]


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist present
        config.option.loadscopereorder = False  # hand out files in the order below


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a file, and the rest, as collected


def blob_images(num: int, size: int, seed: int = 0) -> np.ndarray:
    """Structured test images: a coloured disc on a plain background, varying in position, radius and colours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((num, size, size, 3), np.uint8)
    for i in range(num):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)[..., None]
        images[i] = np.where(disc, rng.integers(0, 256, 3), rng.integers(0, 256, 3))
    return images


def write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{prefix}_{i:04d}.png")
    return folder


def vivid_keras(folder: Path) -> Path:
    """folder/vivid.keras: a bare .keras file (so N(0, I) and the first axes as sliders) whose faces differ at a glance,
    an untrained 32 px model with its last layer's weights scaled up. The 2-epoch fixture run decodes every latent to
    all but the same grey, which a pixel-change check could not tell from a page that never redraws, and against which
    a comparison of faces would prove little."""
    import keras

    from vae.model.vae import VAE

    keras.utils.set_random_seed(0)
    model = VAE(32, 8, 8)
    rgb = model.decoder.get_layer("rgb")
    rgb.kernel.assign(rgb.kernel * 40.0)
    file = folder / "vivid.keras"
    model.save(file)
    return file


def face_code(z) -> str:
    """The pages' face code of a latent: base64url of its little-endian float32 bytes."""
    return base64.urlsafe_b64encode(np.asarray(z, "<f4").tobytes()).decode().rstrip("=")


def from_code(code: str) -> np.ndarray:
    return np.frombuffer(base64.urlsafe_b64decode(code + "=" * (-len(code) % 4)), "<f4")


def changed(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute difference of two uint8 pictures, in grey levels."""
    return float(np.abs(before.astype(int) - after.astype(int)).mean())


def ready_page(browser, url: str, viewport=(1320, 900)):
    """A browser page at `url` once it is ready (body[data-ready=true]); its list of requests to anything but the
    server at `url`, and of its script and console errors (failed loads and policy violations included)."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    outside, errors, origin = [], [], url.split("#")[0]
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((origin, "data:", "blob:")) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    return page, outside, errors


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (never a downloaded browser); skipped where either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -r requirements-app.txt)")
    from benchmarks.explorer import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} does not exist (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Training sets Keras' global dtype policy (mixed_bfloat16 under --precision auto on a CPU with native bfloat16);
    reset it, so no later test in the same worker builds or loads its models in bfloat16."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].config.set_dtype_policy("float32")


@pytest.fixture
def image_folder(tmp_path):
    """40 PNG images of 32x32 in a temporary folder."""
    return write_pngs(tmp_path / "images", blob_images(40, 32))


@pytest.fixture
def real_faces():
    if not SHARED_FACES.is_dir():
        pytest.skip("../shared/anime_faces is not present")
    return SHARED_FACES


def run_script(*args, cwd=ROOT, timeout=300, env=None):
    """Run a script of the project in a fresh Python process; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def in_process_probe(command: list[str]) -> str:
    """Python code that runs a command line of the project (a script and its flags, or -m and a module) in the process
    that runs the code, then prints how it exited and whether it loaded TensorFlow: "exit CODE, tensorflow loaded: BOOL"."""
    module = command[0] == "-m"
    target, argv = (command[1], [command[1].rsplit(".", 1)[-1], *command[2:]]) if module else (command[0], command)
    return (f"import runpy, sys\nsys.argv = {argv!r}\ncode = 0\ntry:\n"
            f"    runpy.run_{'module' if module else 'path'}({target!r}, run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code or 0\n"
            "print(f'exit {code}, tensorflow loaded:', 'tensorflow' in sys.modules)\n")


# Each script's main(argv), to run a command line in-process (vae.cli.invoke) where a fresh process proves nothing more.
MAIN = {name: runpy.run_path(str(ROOT / f"{name}.py"), run_name=name)["main"]
        for name in ("train", "sample", "reconstruct", "evaluate", "explore", "export")}

# The model size of the tiny runs: 16 px traces a third faster than 32 px, and no behaviour these tests check depends on it.
SIZE = 16
TINY = ["--image_size", str(SIZE), "--width", "8", "--latent_dim", "8", "--batch_size", "8"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(images, run folder, train.py's command line, stdout and stderr): 40 generated 32x32 PNGs and a 2-epoch run of a
    32 px model, once per session; 32 px as the readers' tests (pages, grids, exports) have it. Under pytest-xdist the
    first worker to ask trains it, under a file lock, in the folder the session's workers share, and the others read it:
    readers never write into a run folder.

    Run in-process, as vae.cli.invoke runs train.py's main: the fresh processes of the kill and signal tests are the
    ones that prove a real train.py ends cleanly."""
    from vae.cli import invoke

    shared = os.environ.get("PYTEST_XDIST_WORKER") and fcntl is not None
    base = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.mktemp("session")
    images, run, printed = base / "trained_run" / "images", base / "trained_run" / "run", base / "trained_run.json"
    args = [str(a) for a in ["--data", images, "--out", run, "--num_epochs", "2", "--val_split", "0.2", *TINY,
                             "--image_size", "32"]]
    with open(base / "trained_run.lock", "w") as lock:
        if shared:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not printed.exists():
            write_pngs(images, blob_images(40, 32))
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    invoke(MAIN["train"], args)
                except SystemExit as e:
                    raise AssertionError(f"train.py exited with {e.code}: {stderr.getvalue()}") from e
            printed.write_text(json.dumps([stdout.getvalue(), stderr.getvalue()]))
    stdout, stderr = json.loads(printed.read_text())
    return images, run, subprocess.CompletedProcess(["train.py", *args], 0, stdout, stderr)


@pytest.fixture(scope="session")
def trained(trained_run):
    """(images, run folder) of trained_run."""
    return trained_run[:2]


@pytest.fixture(scope="session")
def model(trained):
    """trained_run's best model, loaded once."""
    from vae.run import Run

    return Run.open(trained[1]).load_model()


def cli(capsys, script: str, *args) -> tuple[str, str]:
    """Run a script's command line in-process as vae.cli.invoke would; assert it succeeded; return (stdout, stderr)."""
    from vae.cli import invoke

    capsys.readouterr()
    try:
        invoke(MAIN[script], [str(a) for a in args])
    except SystemExit as e:
        raise AssertionError(f"{script}.py exited with {e.code}: {capsys.readouterr().err}") from e
    return capsys.readouterr()


def kill_when(args, ready, timeout=240, env=None):
    """Start a project script, SIGKILL it as soon as ready() is true (polled every 10 ms); return ready()'s last value."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline and proc.poll() is None:
        value = ready()
        if value:
            break
        time.sleep(0.01)
    proc.kill()
    _, stderr = proc.communicate()
    assert value, f"the condition never held before the process ended: {stderr.decode()[-2000:]}"
    return value


def read_state(run):
    """A run folder's state.json, or None while it does not exist yet."""
    path = Path(run) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def tiny_config(data, out, **overrides):
    """A checked Config for a tiny run (SIZE px, width 8, latent 8, batch 8, 2 epochs) of `data` into `out`."""
    from vae.config import Config

    values = dict(data=str(data), out=str(out), image_size=SIZE, width=8, latent_dim=8, batch_size=8,
                  num_epochs=2, val_split=0.2, lr_warmup_steps=5, save_every_steps=0)
    return Config(**{**values, **overrides}).validate()


def started(cfg, overwrite=False) -> dict:
    """What train.py does up to its first step (take the folder, check it, build, load the checkpoint or save the first);
    the state it would train from, as a dict."""
    from vae.training.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.start(overwrite)
        return dataclasses.asdict(trainer.state)
    finally:
        trainer.close()


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def epochs_in_history(run):
    """The epoch column of a run's history.csv."""
    return [int(r["epoch"]) for r in csv.DictReader(open(Path(run) / "history.csv"))]
