"""Image and .wav folders: files, splits, labels, bad files, the cache, chunks, WAV output."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jvae.data import DataError
from jvae.datasets import audio
from jvae.datasets.folders import load_folder
from jvae.datasets.images import DataWarning, decode_image, holdout_is_test, index_folder, walk_files

RNG = np.random.default_rng(0)


def _image(path, size=(12, 10), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr, "RGB")
    im = im.convert(mode) if mode != "RGB" else im
    im.save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    """Two class folders of mixed formats and modes, a symlinked folder with a loop."""
    root = tmp_path / "pics"
    for i in range(6):
        _image(root / "cat" / f"c{i}.png")
        _image(root / "dog" / f"d{i}.jpg", mode="RGB")
    _image(root / "cat" / "palette.gif", mode="P")
    _image(root / "dog" / "alpha.webp", mode="RGBA")
    outside = tmp_path / "elsewhere"
    _image(outside / "e0.bmp")
    _image(outside / "e1.tiff", mode="L")
    os.symlink(outside, root / "dog" / "linked")
    os.symlink(root, outside / "loop")  # back up the tree
    (root / "notes.txt").write_text("not an image")
    return root


def test_walk_follows_symlinked_folders_once(folder):
    files = [p.relative_to(folder).as_posix() for p in walk_files(folder, {".bmp", ".tiff"})]
    assert files == ["dog/linked/e0.bmp", "dog/linked/e1.tiff"]


def test_labels_follow_class_folders_and_all_formats_decode(folder, tmp_path):
    data = load_folder(folder, image_size=8, test_fraction=0.3, cache_dir=tmp_path / "c")
    assert data.classes == ("cat", "dog")
    assert data.data.shape == (16, 8, 8, 3) and data.info["skipped"] == 0
    index = index_folder(folder, {".png", ".jpg", ".gif", ".webp", ".bmp", ".tiff"})
    for rel, label in zip(index.files, data.labels):
        assert data.classes[label] == rel.split("/")[0]
    assert len(data.train) + len(data.test) == 16 and len(set(data.train) & set(data.test)) == 0


def test_holdout_split_is_stable_when_files_are_added(tmp_path):
    root = tmp_path / "flat"
    for i in range(30):
        _image(root / f"{i:03d}.png", size=(4, 4))
    before = index_folder(root, {".png"}, test_fraction=0.25)
    for i in range(30, 60):
        _image(root / f"{i:03d}.png", size=(4, 4))
    after = index_folder(root, {".png"}, test_fraction=0.25)
    old = dict(zip(before.files, before.split))
    assert all(old[f] == s for f, s in zip(after.files, after.split) if f in old)
    assert 0 < after.split.sum() < 60 and after.classes == ()
    assert holdout_is_test("a.png", 1.0) and not holdout_is_test("a.png", 0.0)


def test_split_folders_are_the_splits(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("x", "y"):
            for i in range(n):
                _image(tmp_path / "d" / split / cls / f"{i}.png", size=(4, 4))
    index = index_folder(tmp_path / "d", {".png"})
    assert list(index.split) == [0] * 6 + [1] * 4  # sorted paths: train/ before val/
    assert index.classes == ("x", "y") and list(index.labels[:3]) == [0, 0, 0]


def test_truncated_jpeg_is_skipped_and_counted_or_fatal_when_strict(folder, tmp_path):
    bad = folder / "dog" / "d0.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.warns(DataWarning, match=r"skipped 1 of 16 image files .*dog/d0\.jpg"):
        data = load_folder(folder, image_size=8, cache=False, test_fraction=0.3)
    assert data.info["skipped"] == 1
    assert 15 == len(data.train) + len(data.test)
    with pytest.raises(DataError, match="--strict"):
        load_folder(folder, image_size=8, cache=False, test_fraction=0.3, strict=True)


def test_a_skipped_file_notice_is_one_line_outside_the_command_line_too(folder, capfd):
    """A script or notebook shows Python's own warning display, which adds the line of
    source that issued it; the notice is one line there as under ``jvae``."""
    (folder / "cat" / "broken.png").write_bytes(b"not a png")
    script = ("from jvae.datasets.folders import load_folder\n"
              f"load_folder({str(folder)!r}, image_size=8, cache=False, test_fraction=0.3)\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].endswith("DataWarning: skipped 1 of 17 image files that cannot be read: "
                           "cat/broken.png")


def test_cache_is_reused_then_rebuilt_when_a_file_changes(folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_folder(folder, image_size=8, cache_dir=cache)
    assert isinstance(first.data, np.memmap)
    files = sorted(cache.glob("*.npy"))
    again = load_folder(folder, image_size=8, cache_dir=cache)
    assert sorted(cache.glob("*.npy")) == files
    np.testing.assert_array_equal(first.data, again.data)
    # Rewrite one file with new content (and a new mtime): a new cache entry.
    target = folder / "cat" / "c0.png"
    Image.new("RGB", (12, 10), (255, 0, 0)).save(target)
    os.utime(target, ns=(1, 1))
    changed = load_folder(folder, image_size=8, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == len(files) + 2
    diff = np.flatnonzero((changed.data != first.data).reshape(16, -1).any(1))
    assert len(diff) == 1
    np.testing.assert_array_equal(changed.data[diff[0]], np.full((8, 8, 3), (255, 0, 0)))


def test_decode_modes_sizes_and_defaults(tmp_path):
    p16 = tmp_path / "g16.png"
    Image.fromarray(np.full((20, 40), 65535, np.uint16)).save(p16)
    assert decode_image(p16, (10, 10), 1).max() == 255
    big = tmp_path / "big.jpg"
    Image.new("RGB", (400, 200), (10, 200, 30)).save(big, quality=95)
    out = decode_image(big, (16, 16), 3)  # drafted JPEG, short side then crop
    assert out.shape == (16, 16, 3) and abs(int(out[8, 8, 1]) - 200) <= 3
    grey = tmp_path / "grey"
    for i in range(3):
        _image(grey / f"{i}.png", size=(30, 20), mode="L")
    data = load_folder(grey, test_fraction=0.5, cache=False)
    assert data.data.shape[1:] == (20, 20, 1)


def test_empty_or_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        load_folder(tmp_path / "nope")


def _tone(seconds, rate, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_audio_folder_chunks_resampled_to_the_common_rate(tmp_path):
    sf = pytest.importorskip("soundfile")
    root = tmp_path / "wavs"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    sf.write(root / "train" / "a.wav", _tone(1.0, 8000), 8000, subtype="PCM_16")
    sf.write(root / "train" / "b.wav", _tone(0.45, 8000), 8000, subtype="PCM_24")
    stereo = np.stack([_tone(1.0, 16000), -_tone(1.0, 16000)], 1)
    sf.write(root / "train" / "c.wav", stereo, 16000, subtype="FLOAT")  # averages to silence
    sf.write(root / "train" / "d.wav", _tone(0.01, 8000), 8000, subtype="PCM_U8")  # short
    (root / "train" / "e.wav").write_bytes(b"RIFF not a wav")
    sf.write(root / "test" / "f.wav", _tone(1.0, 8000), 8000, subtype="PCM_32")
    with pytest.warns(DataWarning, match="skipped 1 of 6 .wav files that cannot be read: "
                                         "train/e.wav"):
        data = load_folder(root, chunk_size=1000)
    # 8000 Hz is the most common rate. Rows follow sorted paths: test/f (8
    # chunks), train/a (8), train/b (4, the last padded), train/c (8,
    # resampled from 16 kHz), train/d (1, padded): no file is dropped for its length.
    assert data.modality == "audio" and data.info["sample_rate"] == 8000
    assert data.data.shape == (29, 1000, 1) and data.data.dtype == np.float32
    assert list(data.test) == list(range(8)) and list(data.train) == list(range(8, 29))
    assert data.lengths.tolist() == [1000] * 19 + [600] + [1000] * 8 + [80]
    assert not data.data[19, 600:].any() and not data.data[28, 80:].any()
    assert np.abs(data.data[20:28]).max() < 1e-3 and np.abs(data.data[8:16]).max() > 0.45
    assert data.split("train")["length"].tolist() == data.lengths[8:].tolist()


def test_chunks_cover_every_sample_and_join_back(tmp_path):
    x = np.arange(1, 11, dtype=np.float32)
    for size, hop in ((4, 4), (4, 2), (16, 16), (3, 1)):
        chunks, lengths = audio.chunk(x, size, hop)
        offsets = np.arange(len(chunks)) * hop
        assert (lengths > 0).all() and (offsets + lengths).max() == len(x)
        for c, o, n in zip(chunks, offsets, lengths):
            np.testing.assert_array_equal(c[:n], x[o:o + n])
            assert not c[n:].any()
        np.testing.assert_array_equal(audio.join_chunks(chunks, offsets, len(x)), x)


def test_default_chunk_covers_the_90th_percentile_within_bounds():
    assert audio.default_chunk_size([3000] * 19 + [100_000]) == 4096
    assert audio.default_chunk_size([5000] * 8 + [7000, 9000]) == 8192
    assert audio.default_chunk_size([10] * 10) == audio.CHUNK_BOUNDS[0]
    assert audio.default_chunk_size([10**7] * 10) == audio.CHUNK_BOUNDS[1]


def test_written_wav_reads_back_exactly(tmp_path):
    sf = pytest.importorskip("soundfile")
    x = np.round(RNG.uniform(-1, 1, 3000) * 32767) / 32767
    audio.write_wav(tmp_path / "x.wav", x, 11025)
    back, rate = sf.read(tmp_path / "x.wav", dtype="int16")
    assert rate == 11025
    np.testing.assert_array_equal(back, np.round(x * 32767).astype(np.int16))
    joined = audio.join_clips([x[:10], x[:10]], 100, gap_s=0.05)
    assert len(joined) == 25 and not joined[10:15].any()
    assert audio.snr_db(x, x + 0.001) > 40
