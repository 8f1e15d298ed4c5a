"""Finding, decoding, splitting and streaming images."""
import numpy as np
import pytest
from PIL import Image

from vae.data import dataset, image_files
from vae.errors import UserError

from conftest import blob_images, write_pngs


def test_find_images_is_recursive_and_ignores_case_and_other_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["x.PNG", "a/y.jpeg", "a/b/z.JpG", "a/b/w.webp", "notes.txt", ".DS_Store", "Thumbs.db"]:
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in image_files.find_images(tmp_path)]
    assert found == ["x.PNG", "a/y.jpeg", "a/b/w.webp", "a/b/z.JpG"]


def test_find_images_survives_a_symlink_loop(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "sub" / "a.png")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    found = image_files.find_images(tmp_path)
    assert [p.name for p in found] == ["a.png"]


@pytest.mark.parametrize("target", ["missing", "file"])
def test_bad_data_folder_is_a_user_error(tmp_path, target):
    path = tmp_path / "x"
    if target == "file":
        path.write_text("hi")
    with pytest.raises(UserError, match="x"):
        image_files.find_images(path)


def test_load_image_crops_to_center_square_and_resizes(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre square is white, the sides black
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = image_files.load_image(tmp_path / "wide.png", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out.min() >= 250


def test_load_image_converts_grayscale_and_alpha(tmp_path):
    Image.new("L", (32, 32), 100).save(tmp_path / "g.png")
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    rgba.save(tmp_path / "t.png")
    np.testing.assert_array_equal(image_files.load_image(tmp_path / "g.png", 32), np.full((32, 32, 3), 100))
    # Fully transparent pixels become the white background.
    np.testing.assert_array_equal(image_files.load_image(tmp_path / "t.png", 32), np.full((32, 32, 3), 255))


def test_split_is_deterministic_and_stable_when_files_are_added():
    names = [f"face_{i}.png" for i in range(2000)]
    val = {n for n in names if image_files.is_validation(n, 0.1)}
    assert 150 < len(val) < 250
    more = names + [f"new_{i}.png" for i in range(500)]
    val_more = {n for n in more if image_files.is_validation(n, 0.1)}
    assert val_more & set(names) == val


def test_load_faces_caches_uint8_and_splits(image_folder):
    faces = dataset.load_faces(image_folder, 32, progress=False)
    assert len(faces) == 40 and faces.skipped == []
    assert faces.images.dtype.name == "uint8"
    np.testing.assert_array_equal(faces.numpy([0, 1]), blob_images(40, 32)[:2])
    train, val = faces.split(0.2)
    assert len(train) + len(val) == 40 and len(val) >= 1
    assert set(train).isdisjoint(val)


def test_train_batches_are_full_shuffled_deterministic_and_resumable(image_folder):
    faces = dataset.load_faces(image_folder, 32, progress=False)
    indices = np.arange(40)
    first = [b.numpy() for b in dataset.train_batches(faces, indices, 8, seed=1, epoch=0, flip=False)]
    again = [b.numpy() for b in dataset.train_batches(faces, indices, 8, seed=1, epoch=0, flip=False)]
    other_epoch = [b.numpy() for b in dataset.train_batches(faces, indices, 8, seed=1, epoch=1, flip=False)]
    resumed = [b.numpy() for b in dataset.train_batches(faces, indices, 8, seed=1, epoch=0, skip_batches=3, flip=False)]
    assert len(first) == 5 and all(b.shape == (8, 32, 32, 3) and b.dtype == np.uint8 for b in first)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other_epoch))
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(first[3:]))
    # Every image exactly once per epoch.
    all_images = faces.numpy(indices).reshape(40, -1)
    seen = np.concatenate(first).reshape(40, -1)
    assert sorted(map(bytes, seen)) == sorted(map(bytes, all_images))


def test_flips_mirror_about_half_the_images(image_folder):
    faces = dataset.load_faces(image_folder, 32, progress=False)
    batches = np.concatenate([b.numpy() for b in dataset.train_batches(faces, np.arange(40), 8, seed=3, epoch=0)])
    order, flips = dataset.epoch_order(40, seed=3, epoch=0)
    originals = faces.numpy(order)
    np.testing.assert_array_equal(batches[flips], originals[flips][:, :, ::-1])
    np.testing.assert_array_equal(batches[~flips], originals[~flips])
    assert 8 <= flips.sum() <= 32


def test_eval_batches_keep_order_and_remainder(image_folder):
    faces = dataset.load_faces(image_folder, 32, progress=False)
    batches = [b.numpy() for b in dataset.eval_batches(faces, [5, 1, 7], 2)]
    assert [len(b) for b in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), faces.numpy([5, 1, 7]))


def test_unreadable_files_are_skipped_and_named(tmp_path):
    write_pngs(tmp_path, blob_images(3, 32))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    faces = dataset.load_faces(tmp_path, 32, progress=False)
    assert len(faces) == 3
    assert [name for name, _ in faces.skipped] == ["broken.jpg"]


def test_a_folder_with_nothing_usable_is_a_user_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nothing")
    with pytest.raises(UserError, match="none of the 1 image files"):
        dataset.load_faces(tmp_path, 32, progress=False)
