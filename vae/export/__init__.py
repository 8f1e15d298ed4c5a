"""Sharing a trained model (export.py): a TensorFlow SavedModel, ONNX files, or a static web page that draws faces.

The output is written into a temporary folder beside --out and renamed to it only when complete, so a failed
or interrupted export leaves --out as it was.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from vae.errors import UserError
from vae.files import HOST

FORMATS = ("saved_model", "onnx", "web")
# Not vae.files.PARTIAL: remove_dead_partials() unlinks what bears that prefix as files, and these are folders.
PARTIAL_FOLDER = ".export-partial-"
SLIDERS = 8  # the page's sliders: the prior's most spread-out directions, as in the latent explorer


def open_run(path):
    """The run of --model and its trained VAE: the one place this package touches vae.run."""
    from vae.run import Run

    run = Run.open(path)
    return run, run.load_model()


def prior_json(run, model) -> dict:
    """The run's prior as the page samples it (its page_json), with the SLIDERS most spread-out directions, their
    standard deviations and labels."""
    prior = run.prior(model, progress=False)
    directions, sigmas = (a[:SLIDERS] for a in prior.principal_directions())
    return {**prior.page_json(), "directions": directions.tolist(), "sigmas": sigmas.tolist(),
            "labels": [prior.direction_label(i, s) for i, s in enumerate(sigmas)]}


def check_out(out: Path, overwrite: bool) -> None:
    """UserError unless --out can be (re)placed: absent or an empty folder (any folder with --overwrite), in a folder
    this process can write. Checked before the model is loaded, so a mistake costs no time."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder to write")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} exists and is not empty; pass --overwrite to replace it, or choose another --out")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: its folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {parent} (permission denied); choose another --out")


def _partial(out: Path, pid: int, role: str = "new") -> Path:
    return out.with_name(f"{PARTIAL_FOLDER}{role}-{pid}-{HOST}-{out.name}")


def _remove_dead_leftovers(out: Path) -> None:
    """Temporary folders of exports to `out` by processes of this host that have ended (killed mid-export)."""
    for path in out.parent.glob(f"{PARTIAL_FOLDER}*-{HOST}-{out.name}"):
        role, pid = (path.name[len(PARTIAL_FOLDER):].split("-") + ["", ""])[:2]
        if role == "new" and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return pid != os.getpid()


@contextlib.contextmanager
def building(out: Path, overwrite: bool):
    """Yield a new temporary folder beside `out`; when the block succeeds it becomes `out` (what was there is
    removed only then); when it fails it is deleted. Named, as vae.files names partial files, with its writer's id."""
    _remove_dead_leftovers(out)
    tmp = _partial(out, os.getpid())
    try:
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write in {out.resolve().parent} ({e.strerror}); choose another --out") from e
    try:
        yield tmp
        old = _partial(out, os.getpid(), "old")
        if out.exists():
            if any(out.iterdir()) and not overwrite:  # filled while the export ran
                raise UserError(f"--out {out} was filled during the export; pass --overwrite to replace it")
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old.exists():  # put back what was there
                os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def export(model_path, fmt: str, out, overwrite: bool = False) -> int:
    """Write the model of `model_path` (a run folder or .keras file) as `fmt` into the folder `out`; its size in bytes."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt}")
    out = Path(out)
    check_out(out, overwrite)
    from vae.export import formats, runtime  # TensorFlow loads here, once the flags are known to be usable

    if fmt != "saved_model":  # what is missing is said before the model is loaded
        formats.needs_onnx_tools()
    files = runtime.runtime_files() if fmt == "web" else None
    run, model = open_run(model_path)
    with building(out, overwrite) as tmp:
        if fmt == "saved_model":
            formats.write_saved_model(model, tmp)
        elif fmt == "onnx":
            formats.write_onnx(model, tmp)
        else:
            page = {"name": Path(str(run)).name, "image_size": model.image_size, "latent_dim": model.latent_dim,
                    "runtime": f"{runtime.PACKAGE} {runtime.VERSION}", "prior": prior_json(run, model)}
            formats.write_web(model, tmp, page, files)
        size = folder_size(tmp)
    return size
