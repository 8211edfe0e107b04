"""One image reader for training folders and the modes: EXIF orientation, bit depth,
crop and resize, decompression bombs."""

import numpy as np
import pytest
from PIL import Image

from jvae.data import DataError
from jvae.datasets.folders import load_folder
from jvae.datasets.images import DataWarning, walk_files
from jvae.datasets.pixels import to_float
from jvae.datasets.reader import ImageReadError, read_image
from jvae.inference import InferenceError, list_images, load_images, read_images

RNG = np.random.default_rng(0)
ORIENTATION = 0x0112


def _grey(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _upright_photo():
    """A tall RGB image, red in its top third, green below: which way is up is visible."""
    up = np.zeros((48, 24, 3), np.uint8)
    up[:16] = (230, 20, 20)
    up[16:] = (20, 200, 40)
    return up


def _save_rotated_jpeg(path, upright):
    """Stores ``upright`` turned a quarter, with EXIF orientation 6 ("rotate 90 clockwise
    to show"), as a phone does."""
    img = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    exif = img.getexif()
    exif[ORIENTATION] = 6
    img.save(path, exif=exif, quality=95)


@pytest.fixture
def photos(tmp_path):
    """A 16-bit PNG (with its 8-bit version), a phone JPEG stored sideways, a wide image,
    a few more, and a hidden AppleDouble file that is no image."""
    root = tmp_path / "photos"
    root.mkdir()
    grey = _grey(30, 40)
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "deep.png")
    Image.fromarray(grey).save(root / "deep8.png")
    _save_rotated_jpeg(root / "phone.jpg", _upright_photo())
    Image.fromarray(RNG.integers(0, 256, (20, 60, 3), dtype=np.uint8)).save(root / "wide.png")
    for i in range(4):
        Image.fromarray(_grey(24, 24, i + 1)).convert("RGB").save(root / f"x{i}.png")
    (root / "._phone.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    return root


def test_training_and_the_modes_read_the_same_pixels(photos):
    data = load_folder(photos, image_size=16, channels=3, cache=False, test_fraction=0.3)
    files = list_images(photos)
    # The modes take the files training takes (no hidden entries), in the same order.
    assert files == walk_files(photos, {".png", ".jpg"})
    assert data.data.shape == (len(files), 16, 16, 3) and data.info["skipped"] == 0
    np.testing.assert_array_equal(load_images(files, (16, 16, 3)), to_float(data.data))
    np.testing.assert_array_equal(np.stack(read_images(files, (99, 99, 3), size=(16, 16))),
                                  to_float(data.data))
    # Cropped, not stretched: the middle of the wide image at the training scale.
    wide = files.index(photos / "wide.png")
    own = read_image(photos / "wide.png", 3)
    np.testing.assert_array_equal(data.data[wide], read_image(photos / "wide.png", 3, (16, 16)))
    assert own.shape == (20, 60, 3)


def test_sixteen_bit_images_scale_by_their_bit_depth(photos, tmp_path):
    eight = read_images([photos / "deep8.png"], (1, 1, 1))[0]
    for shape, size in (((1, 1, 1), None), ((16, 16, 1), (16, 16))):
        deep, = read_images([photos / "deep.png"], shape, size)
        ref, = read_images([photos / "deep8.png"], shape, size)
        assert abs(deep.mean() - ref.mean()) <= 1 / 255
    np.testing.assert_array_equal(read_images([photos / "deep.png"], (1, 1, 1))[0], eight)
    # A dark 16-bit image stays dark: the scale is the format's, not the values'.
    dark = tmp_path / "dark.png"
    Image.fromarray(np.full((8, 8), 200, np.uint16)).save(dark)
    assert read_image(dark, 1).max() == 1
    assert load_folder(photos, image_size=30, channels=1, cache=False).data.max() > 0


def test_an_exif_rotated_photo_comes_out_upright(photos):
    up = _upright_photo() / 255.0
    for x in (read_images([photos / "phone.jpg"], (1, 1, 3))[0],
              to_float(read_image(photos / "phone.jpg", 3))):
        assert x.shape == up.shape
        # Away from the edge JPEG's chroma subsampling blurs: the red top, the green rest.
        for rows in (slice(0, 12), slice(20, None)):
            np.testing.assert_allclose(x[rows], up[rows], atol=12 / 255)
    # At the training size too: the crop of the tall image keeps its top red.
    small = read_image(photos / "phone.jpg", 3, (8, 8))
    assert small[0, 4, 0] > 150 and small[-1, 4, 1] > 150


@pytest.mark.parametrize("mode, want", [
    ("P", (200, 30, 60)), ("PA", (200, 30, 60)), ("LA", (90, 90, 90)), ("RGBA", (200, 30, 60)),
    ("L", (90, 90, 90)), ("1", (255, 255, 255)), ("CMYK", (200, 30, 60))])
def test_every_mode_reads_as_grey_rgb_and_rgba(tmp_path, mode, want):
    base = Image.new("RGB", (6, 4), want)
    if mode == "P":
        img = base.quantize(4)
        img.info["transparency"] = 3  # an unused entry: the palette has transparency
    elif mode == "PA":
        img = base.quantize(4).convert("PA")
    elif mode in ("LA", "RGBA"):
        img = base.convert(mode)
        img.putalpha(40)
    else:
        img = base.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "PA") else "x.png")
    img.save(path, transparency=3) if mode == "P" else img.save(path)
    rgb = read_image(path, 3)
    assert rgb.shape == (4, 6, 3)
    np.testing.assert_allclose(rgb[0, 0], want, atol=2)
    assert read_image(path, 4).shape == (4, 6, 4)
    grey = read_image(path, 1)[0, 0, 0]
    assert abs(int(grey) - round(0.299 * want[0] + 0.587 * want[1] + 0.114 * want[2])) <= 2


@pytest.fixture
def bombs(tmp_path, monkeypatch):
    """Pillow's decompression-bomb limit at 100 pixels: a 12x12 image warns, 20x20 fails."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    root = tmp_path / "bombs"
    root.mkdir()
    for name, side in (("warns.png", 12), ("fails.png", 20), ("ok0.png", 8), ("ok1.png", 8),
                       ("ok2.png", 8)):
        Image.fromarray(_grey(side, side)).save(root / name)
    return root


@pytest.mark.parametrize("name", ["warns.png", "fails.png"])
def test_a_decompression_bomb_is_a_one_line_error_naming_the_file(bombs, name):
    path = bombs / name
    with pytest.raises(ImageReadError, match="too large to read safely") as info:
        read_image(path, 1)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, DataError)
    with pytest.raises(InferenceError, match="too large") as info:
        read_images([bombs / "ok0.png", path], (8, 8, 1))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_training_skips_decompression_bombs_or_stops_under_strict(bombs):
    with pytest.warns(DataWarning, match="skipped 2 of 5 image files .*fails.png, warns.png"):
        data = load_folder(bombs, image_size=8, cache=False, test_fraction=0.4)
    assert data.info["skipped"] == 2
    with pytest.raises(DataError, match="2 of 5 image files cannot be read"):
        load_folder(bombs, image_size=8, cache=False, test_fraction=0.4, strict=True)
