"""The browser's ONNX runtime: onnxruntime-web's JavaScript and WebAssembly files, fetched once from the npm registry
(with npm) into the ignored cache folder .cache/ of the checkout, which every web export then copies.

    python -m vae.export.runtime      # fetch it now (CI does, before the tests), else the first web export does
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from vae.errors import UserError
from vae.files import HOST

PACKAGE, VERSION = "onnxruntime-web", "1.22.0"  # 1.23 and later grew the WebAssembly file from 11.2 to 14.2 MB
CACHE = Path(__file__).resolve().parents[2] / ".cache" / f"{PACKAGE}-{VERSION}"
# The WebAssembly-only build (no WebGL or WebGPU code): its loader, the module it imports, and the binary.
FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# The binary is 11.2 MB and gzip makes it 2.9 MB; the page inflates it with the browser's DecompressionStream, since
# a plain static server (python -m http.server) sends no Content-Encoding.
COMPRESSED = "ort-wasm-simd-threaded.wasm"


def cached_name(name: str) -> str:
    return name + ".gz" if name == COMPRESSED else name


def runtime_files(fetch: bool = True) -> Path:
    """The cache folder, holding every file the page needs (fetched now if it does not and `fetch`); else UserError."""
    if all((CACHE / cached_name(n)).is_file() for n in FILES):
        return CACHE
    if not fetch:
        raise UserError(f"{CACHE} does not hold {PACKAGE} {VERSION}; fetch it with python -m vae.export.runtime")
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(f"the web export needs {PACKAGE} {VERSION} from the npm registry, and npm is not installed: "
                        "apt-get install -y npm (then rerun; it is fetched once into .cache/)")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetching-{os.getpid()}-{HOST}-", dir=CACHE.parent) as tmp:
        done = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"],
                              capture_output=True, text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            why = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise UserError(f"npm could not fetch {PACKAGE}@{VERSION} ({why[:200]}); check the npm registry is reachable")
        folder = Path(tmp) / "files"
        folder.mkdir()
        with tarfile.open(tarballs[0]) as archive:
            for name in FILES:
                data = archive.extractfile(f"package/dist/{name}").read()
                if name == COMPRESSED:  # mtime 0: the same bytes every time
                    data = gzip.compress(data, compresslevel=9, mtime=0)
                (folder / cached_name(name)).write_bytes(data)
        if CACHE.exists():  # a damaged or partial cache
            shutil.rmtree(CACHE)
        os.replace(folder, CACHE)
    return CACHE


def main() -> None:
    from vae.cli import invoke

    def fetch(argv):
        folder = runtime_files()
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{PACKAGE} {VERSION} is in {folder} ({size / 1e6:.1f} MB)")

    invoke(fetch, sys.argv[1:])


if __name__ == "__main__":
    main()
