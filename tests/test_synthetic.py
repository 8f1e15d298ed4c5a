"""The procedural anime faces: determinism, variety, sizes, materialize and the command line."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae.data import synthetic

ROOT = Path(__file__).resolve().parents[1]
REAL_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "anime_faces"


def pixel_spread(images: np.ndarray) -> float:
    """Per-pixel standard deviation across images (scaled to [0, 1]), averaged over pixels and channels."""
    return float((images.astype(np.float64) / 255).std(axis=0).mean())


@pytest.fixture(scope="module")
def faces():
    return np.stack([synthetic.render_face(0, i) for i in range(200)])


@pytest.fixture(scope="module")
def attributes():
    return [synthetic.sample_attributes(0, i) for i in range(200)]


def quiet_materialize(out_dir, num, **kwargs):
    return synthetic.materialize(out_dir, num, progress=False, **{"workers": 1, **kwargs})


def test_same_seed_and_index_give_identical_bytes():
    first = synthetic.render_face(3, 17)
    synthetic.render_face(3, 18)
    assert synthetic.render_face(3, 17).tobytes() == first.tobytes()
    assert synthetic.sample_attributes(3, 17) == synthetic.sample_attributes(3, 17)


def test_different_seeds_and_indices_give_different_faces():
    face = synthetic.render_face(0, 0).astype(int)
    for other in (synthetic.render_face(1, 0), synthetic.render_face(0, 1)):
        assert np.abs(face - other).mean() > 20
    assert synthetic.sample_attributes(0, 0) != synthetic.sample_attributes(1, 0)


def test_attributes_are_plain_values_named_by_attributes():
    attributes = synthetic.sample_attributes(5, 9)
    assert tuple(attributes) == synthetic.ATTRIBUTES
    assert all(type(value) in (str, bool, float) for value in attributes.values())
    assert json.loads(json.dumps(attributes)) == attributes


def test_every_attribute_varies(attributes):
    for name in synthetic.ATTRIBUTES:
        values = [a[name] for a in attributes]
        if isinstance(values[0], bool):
            assert 0.05 < np.mean(values) < 0.95, name
        elif isinstance(values[0], str):
            counts = Counter(values)
            assert len(counts) >= 3 and max(counts.values()) < 0.6 * len(values), (name, counts)
        else:
            low, q1, q3, high = np.percentile(values, [0, 25, 75, 100])
            assert len(set(values)) > 150 and q3 - q1 > 0.35 * (high - low) > 0, name
    assert len({a["hair_color"] for a in attributes}) >= 12
    assert len({a["eye_color"] for a in attributes}) >= 8


def test_hair_colour_attribute_shows_in_the_pixels(faces, attributes):
    crown = faces[:, 2:10, 20:44].mean(axis=(1, 2, 3)) / 255
    dark = [crown[i] for i, a in enumerate(attributes) if a["hair_color"] in ("black", "dark_brown")]
    light = [crown[i] for i, a in enumerate(attributes) if a["hair_color"] in ("blonde", "platinum", "silver")]
    assert len(dark) >= 10 and len(light) >= 10
    assert max(dark) < 0.45 < 0.6 < min(light)


def test_faces_vary_pixel_by_pixel(faces):
    assert pixel_spread(faces) >= 0.12


def test_faces_vary_at_least_half_as_much_as_the_real_ones(faces):
    if not REAL_FACES.is_dir():
        pytest.skip(f"{REAL_FACES} is not present")
    paths = sorted(REAL_FACES.glob("*.jpg"))[:200]
    real = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in paths])
    assert len(paths) == 200
    assert pixel_spread(faces) >= 0.5 * pixel_spread(real)


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
def test_every_supported_size(size):
    face = synthetic.render_face(0, 7, size)
    assert face.shape == (size, size, 3) and face.dtype == np.uint8
    assert face.std() > 20


def test_sizes_draw_the_same_face():
    large = synthetic.render_face(2, 4, 128)
    halved = np.asarray(Image.fromarray(large).reduce(2)).astype(int)
    assert np.abs(halved - synthetic.render_face(2, 4, 64)).mean() < 0.03 * 255


@pytest.mark.parametrize("size", [0, 8, 48, 100, 512])
def test_unsupported_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="size"):
        synthetic.render_face(0, 0, size)


def test_materialize_writes_the_faces_and_a_manifest(tmp_path):
    out = quiet_materialize(tmp_path / "faces", 12, size=32, seed=1)
    assert out == tmp_path / "faces"
    assert sorted(p.name for p in out.iterdir()) == [f"face_{i:06d}.png" for i in range(12)] + ["manifest.json"]
    assert json.loads((out / "manifest.json").read_text()) == {
        "generator_version": synthetic.GENERATOR_VERSION, "num": 12, "size": 32, "seed": 1}
    saved = np.asarray(Image.open(out / "face_000011.png"))
    assert saved.tobytes() == synthetic.render_face(1, 11, 32).tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]


def test_materialize_is_deterministic_across_runs_and_worker_counts(tmp_path):
    one = quiet_materialize(tmp_path / "one", 16, size=32, seed=4)
    two = quiet_materialize(tmp_path / "two", 16, size=32, seed=4, workers=2)
    for name in ("face_000000.png", "face_000007.png", "face_000015.png"):
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_materialize_reuses_an_identical_set(tmp_path, capsys):
    out = quiet_materialize(tmp_path / "faces", 8, size=16)
    for path in out.iterdir():
        os.utime(path, (1_000_000, 1_000_000))
    quiet_materialize(out, 8, size=16)
    assert {path.stat().st_mtime for path in out.iterdir()} == {1_000_000}
    assert capsys.readouterr().out == ""


def test_materialize_regenerates_when_the_settings_differ(tmp_path, capsys):
    out = quiet_materialize(tmp_path / "faces", 10, size=32)
    (out / "notes.txt").write_text("mine")
    (out / "face_notes.txt").write_text("also mine")
    quiet_materialize(out, 6, size=16, seed=2)
    message = capsys.readouterr().out
    assert message == f"{out} holds 10 faces of 32px (seed 0); regenerating 6 faces of 16px (seed 2)\n"
    faces = sorted(p.name for p in out.glob("face_*.png"))
    assert faces == [f"face_{i:06d}.png" for i in range(6)]
    assert Image.open(out / "face_000005.png").size == (16, 16)
    assert (out / "notes.txt").read_text() == "mine" and (out / "face_notes.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["num"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


def test_materialize_replaces_a_missing_face(tmp_path, capsys):
    out = quiet_materialize(tmp_path / "faces", 5, size=16)
    (out / "face_000003.png").unlink()
    quiet_materialize(out, 5, size=16)
    assert "missing" in capsys.readouterr().out
    assert (out / "face_000003.png").is_file()


def test_an_interrupted_materialize_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    render = synthetic._render

    def failing(seed, index, size):
        if index == 5:
            raise KeyboardInterrupt
        return render(seed, index, size)

    monkeypatch.setattr(synthetic, "_render", failing)
    with pytest.raises(KeyboardInterrupt):
        quiet_materialize(tmp_path / "faces", 10, size=16)
    assert list(tmp_path.iterdir()) == []


def test_materialize_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num"):
        quiet_materialize(tmp_path / "faces", 0)
    with pytest.raises(ValueError, match="size"):
        quiet_materialize(tmp_path / "faces", 4, size=40)
    assert list(tmp_path.iterdir()) == []


def test_contact_sheet(tmp_path, capsys):
    assert synthetic.main(["--contact_sheet", str(tmp_path / "sheet.png"), "--size", "16"]) == 0
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size == (8 * 16 + 7 * 2, 8 * 16 + 7 * 2)
    first = np.asarray(sheet.convert("RGB"))[:16, :16]
    assert first.tobytes() == synthetic.render_face(0, 0, 16).tobytes()


@pytest.mark.parametrize("argv", [
    ["--num", "0", "--out", "x"], ["--num", "-3", "--out", "x"], ["--num", "5", "--out", "x", "--size", "48"],
    ["--num", "five", "--out", "x"], ["--num", "5"], [], ["--contact_sheet", "x.png", "--num", "5"],
    ["--num", "5", "--out", "x", "--workers", "0"], ["--num", "5", "--out", "x", "--seed", "-1"],
])
def test_bad_command_lines_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m vae.data.synthetic: error: ")


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "vae.data.synthetic", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_command_line_end_to_end(tmp_path):
    result = run_module("--num", 20, "--out", tmp_path / "tmp", "--size", 32, "--workers", 2)
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "tmp").glob("face_*.png"))
    assert len(written) == 20 and Image.open(written[-1]).size == (32, 32)
    assert json.loads((tmp_path / "tmp" / "manifest.json").read_text())["num"] == 20
    assert np.asarray(Image.open(written[3])).tobytes() == synthetic.render_face(0, 3, 32).tobytes()


def test_command_line_bad_flag(tmp_path):
    result = run_module("--num", 0, "--out", tmp_path / "tmp")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--num" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tmp").exists()
