"""Files that are never seen half-written, left behind by the dead, or written by two trainers at once."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import time
from pathlib import Path

from vae.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

PARTIAL = ".partial-"
# What marks a folder train.py made (the names of vae/run.py, which sits above this layer): config.json beside any of these.
RUN_CONFIG, RUN_MARKERS = "config.json", ("state.json", "train.lock", "checkpoints", "manifest.json")
# Temporary names carry the writer's process id and host, so a later process can tell a dead writer's leftovers.
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary sibling path to write; it replaces `path` only if the block succeeds.

    The temporary name ends like the final one, because Keras and PIL choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PARTIAL}{os.getpid()}-{HOST}-{path.name}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        # A full disk names no file, and the temporary name means nothing to the user: name the file being written.
        if e.errno is not None and e.filename in (None, str(tmp)):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        # OSError, not only FileNotFoundError: on a read-only file system unlink() fails with EROFS even for a name that
        # was never created, and that must not replace the error naming the file being written.
        with contextlib.suppress(OSError):
            tmp.unlink()


def is_run_folder(folder: Path | str) -> bool:
    """Whether `folder` is a run folder of train.py: its config.json beside its state, lock or checkpoints."""
    folder = Path(folder)
    return (folder / RUN_CONFIG).is_file() and any((folder / name).exists() for name in RUN_MARKERS)


def refuse_inside(out_flag: str, out: Path | str, in_flag: str, folder: Path | str, names=("",)) -> None:
    """UserError if `out` (or any of `names` under it) is inside the input `folder`: the same folder, one inside it, or a
    way in through a symlink. A run folder inside it is not input (finding images skips it), so it may be written."""
    inside = Path(folder).resolve()
    for name in names:
        target = (Path(out) / name).resolve()
        if (target == inside or inside in target.parents) and not any(
                is_run_folder(p) for p in [target, *target.parents] if inside in p.parents):
            raise UserError(f"{out_flag} {out} would write {name or 'its files'} inside {in_flag} {folder}; "
                            "choose a folder outside it, the input is never written")


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(path: Path | str, rows: list[dict], columns: list[str] | None = None) -> None:
    """A CSV file of dict rows, atomically; columns default to every key in order of first appearance."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def link_atomic(source: Path, path: Path) -> None:
    """Make `path` hold the same bytes as `source` without writing them again (a hard link; a copy where links fail)."""
    with atomic_path(path) as tmp:
        try:
            os.link(source, tmp)
        except OSError:  # file systems without hard links (some network and FUSE mounts)
            shutil.copyfile(source, tmp)


def _fsync(path: Path) -> None:
    """Flush to disk so a power loss after the rename cannot expose an empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_dead_partials(folder: Path) -> int:
    """Delete the temporary files under `folder` whose writer, a process of this host, has ended; return how many.

    A file of this process's own id is dead too: it was left by an earlier process that had the same id.
    """
    removed = 0
    for tmp in Path(folder).rglob(PARTIAL + "*"):
        pid, host, _ = (tmp.name[len(PARTIAL):].split("-", 2) + ["", ""])[:3]
        if host == HOST and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user (or this platform cannot tell): keep its files
        return True
    return True


class FolderLock:
    """An exclusive lock on a file, held through an open descriptor: the kernel drops it when the process ends,
    however it ends (kill -9 included), so a lock is never left stale."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, what: str) -> None:
        """Take the lock (if this object does not hold it yet) or raise UserError naming its holder (pid, host, start
        time); `what` names the folder's use."""
        if self.fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{self.path.parent} is in use: {what} by {_describe(holder)}; wait for it to end, "
                            "stop it, or choose another --out")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder(fd: int) -> dict | None:
    """The lock holder's record; None if it stays unreadable for a second (a holder that locked an instant ago
    has not written it yet, so an empty file is read again)."""
    for attempt in range(20):
        time.sleep(0.05 if attempt else 0)
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            holder = json.loads(os.read(fd, 4096).decode(errors="replace"))
            if isinstance(holder, dict) and {"pid", "host", "started"} <= holder.keys():
                return holder
        except ValueError:
            pass
    return None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "another process"
    return f"process {holder['pid']} on {holder['host']}, started {holder['started']}"
