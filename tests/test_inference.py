"""Inference modes on two tiny trained MNIST runs (a vae and a cvae, trained once)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jvae.app.config import make_config
from jvae.app.flags import int_range
from jvae.app.modes.inference import load_run
from jvae.inference import encode_all, interpolate_latents, load_images, reconstruct_all, sample_all, traverse_latents
from jvae.train import train_and_evaluate

from helpers import run_cli

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("inference")


@pytest.fixture(scope="module")
def runs(tiny_mnist_dir, tmp_path_factory):
    """``{"vae": workdir, "cvae": workdir}``: one epoch on 512 images, 4 latent dims."""
    common = {"data_dir": str(tiny_mnist_dir), "epochs": 1, "batch_size": 64,
              "eval_batch_size": 64, "hidden": [32], "latent_dim": 4, "num_images": 16,
              "data_placement": "host"}  # host: no on-device epoch loop to compile
    out = {}
    for model in ("vae", "cvae"):
        out[model] = tmp_path_factory.mktemp(model)
        train_and_evaluate(make_config(common, {"model": model}), out[model], quiet=True)
    return out


@pytest.fixture(scope="module")
def loaded(runs):
    return {name: load_run(path, batch_size=100) for name, path in runs.items()}


@pytest.fixture(scope="module")
def image_dir(loaded, tmp_path_factory):
    """Five test digits as PNGs, plus a larger RGB JPEG in a subfolder."""
    folder = tmp_path_factory.mktemp("images")
    test = loaded["vae"].test["image"]
    for i in range(5):
        Image.fromarray((test[i, :, :, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "sub").mkdir()
    Image.fromarray((test[5, :, :, 0] * 255).astype(np.uint8)).resize((40, 40)).convert(
        "RGB").save(folder / "sub" / "5.jpg")
    return folder


def _size(path):
    with Image.open(path) as img:
        return img.size


_run = run_cli


def test_encode_folder_writes_means_scales_and_files(runs, loaded, image_dir, tmp_path, capsys):
    out = tmp_path / "codes.npz"
    code, cap = _run(["encode", "--workdir", str(runs["vae"]), "--input", str(image_dir),
                      "--output", str(out), "--batch-size", "4"], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["count"] == 6
    saved = np.load(out)
    assert sorted(saved.files) == ["files", "mean", "scale"]
    assert saved["files"].tolist() == ["0.png", "1.png", "2.png", "3.png", "4.png", "sub/5.jpg"]
    assert saved["mean"].shape == saved["scale"].shape == (6, 4)
    # The means are what the encoder gives on the same (resized, greyed) images.
    run = loaded["vae"]
    images = load_images(sorted(image_dir.rglob("*.*")), run.data_shape)
    direct = run.inference.vae.encode(run.params, jnp.asarray(images))
    np.testing.assert_allclose(saved["mean"], direct["loc"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved["scale"], direct["scale"], rtol=1e-5, atol=1e-5)
    # The first five files are the test images themselves (PNG round trip is exact to 1/255).
    np.testing.assert_allclose(images[:5], run.test["image"][:5], atol=1 / 255)


def test_encode_dataset_pads_without_recompiling(runs, loaded, tmp_path, capsys):
    npz, npy = tmp_path / "test.npz", tmp_path / "test.npy"
    for out in (npz, npy):
        code, cap = _run(["encode", "--workdir", str(runs["cvae"]), "--dataset", "mnist",
                          "--output", str(out), "--batch-size", "100"], capsys)
        assert code == 0, cap.err
    saved, stacked = np.load(npz), np.load(npy)
    run = loaded["cvae"]  # batch size 100: 256 test images = two full batches and one padded
    assert saved["labels"].tolist() == run.test["label"].tolist()
    assert stacked.shape == (2, 256, 4)
    np.testing.assert_array_equal(stacked[0], saved["mean"])
    np.testing.assert_array_equal(stacked[1], saved["scale"])
    codes = encode_all(run.inference, run.params, run.test["image"], run.test["cond"])
    assert run.inference.encode._cache_size() == 1
    np.testing.assert_allclose(codes["mean"], saved["mean"], atol=1e-6)
    whole = run.inference.vae.encode(run.params, jnp.asarray(run.test["image"]),
                                     jnp.asarray(run.test["cond"]))
    np.testing.assert_allclose(saved["mean"], whole["loc"], rtol=1e-4, atol=1e-5)


def test_reconstruct_writes_one_side_by_side_png_per_input(runs, loaded, image_dir, tmp_path,
                                                           capsys):
    out = tmp_path / "recon"
    code, cap = _run(["reconstruct", "--workdir", str(runs["vae"]), "--input", str(image_dir),
                      "--output", str(out)], capsys)
    assert code == 0, cap.err
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["0.png", "1.png", "2.png", "3.png", "4.png", "sub/5.png"]
    with Image.open(out / "2.png") as img:
        pair = np.asarray(img, np.float32) / 255
    assert pair.shape == (28, 56)
    run = loaded["vae"]
    recon = reconstruct_all(run.inference, run.params, run.test["image"][2:3])[0, :, :, 0]
    np.testing.assert_allclose(pair[:, :28], run.test["image"][2, :, :, 0], atol=1 / 255)
    np.testing.assert_allclose(pair[:, 28:], recon, atol=1 / 255)


def test_decode_writes_one_png_per_code_named_after_its_file(runs, loaded, image_dir, tmp_path,
                                                             capsys):
    """An MLP is not fully convolutional: its codes decode at the training size, each PNG
    named after the file it was encoded from; an .npy of codes gets numbered names."""
    codes = tmp_path / "codes.npz"
    code, cap = _run(["encode", "--workdir", str(runs["vae"]), "--input", str(image_dir),
                      "--output", str(codes)], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["native"] is False
    out = tmp_path / "decoded"
    code, cap = _run(["decode", "--workdir", str(runs["vae"]), "--input", str(codes),
                      "--output", str(out)], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out) == {"output": str(out), "count": 6, "for_diffusion": False,
                                   "native": False, "tiled": False, "tile": None}
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["0.png", "1.png", "2.png", "3.png", "4.png", "sub/5.png"]
    run = loaded["vae"]
    images = load_images(sorted(image_dir.rglob("*.*")), run.data_shape)
    recon = reconstruct_all(run.inference, run.params, images)
    with Image.open(out / "sub" / "5.png") as img:
        np.testing.assert_allclose(np.asarray(img, np.float32) / 255, recon[5, :, :, 0],
                                   atol=1 / 255 + 1e-6)
    np.save(tmp_path / "z.npy", np.load(codes)["mean"][:2])
    code, cap = _run(["decode", "--workdir", str(runs["vae"]), "--input", str(tmp_path / "z.npy"),
                      "--output", str(tmp_path / "n")], capsys)
    assert code == 0, cap.err
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["00000.png", "00001.png"]


def test_sample_follows_num_and_label(runs, loaded, tmp_path, capsys):
    out = tmp_path / "s.png"
    code, cap = _run(["sample", "--workdir", str(runs["cvae"]), "--num", "12", "--label", "3",
                      "--output", str(out), "--npy"], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["labels"] == [3] * 12
    images, z = np.load(tmp_path / "s.npy"), np.load(tmp_path / "s_z.npy")
    assert images.shape == (12, 28, 28, 1) and z.shape == (12, 4)
    run = loaded["cvae"]
    cond = np.eye(10, dtype=np.float32)[np.full(12, 3)]
    np.testing.assert_allclose(images, run.inference.decode(run.params, z, cond), atol=1e-6)
    # Sample i does not depend on how many are drawn.
    z3, _ = sample_all(run.inference, run.params, jax.random.key(0), 3, cond[:3])
    np.testing.assert_array_equal(z3, z[:3])
    # Without --label a cvae draws one row per class.
    code, cap = _run(["sample", "--workdir", str(runs["cvae"]), "--num", "20", "--output",
                      str(tmp_path / "rows.png")], capsys)
    assert code == 0 and json.loads(cap.out)["labels"] == np.repeat(np.arange(10), 2).tolist()
    assert _size(tmp_path / "rows.png") == (2 * (2 * 30 + 2), 2 * (10 * 30 + 2))


@pytest.mark.parametrize("slerp", [False, True])
def test_interpolation_ends_are_the_two_reconstructions(runs, loaded, tmp_path, capsys, slerp):
    out = tmp_path / "strip.png"
    code, cap = _run(["interpolate", "--workdir", str(runs["vae"]), "--from", "7", "--to", "11",
                      "--steps", "6", "--output", str(out), "--npy"] + ["--slerp"] * slerp,
                     capsys)
    assert code == 0, cap.err
    strip = np.load(tmp_path / "strip.npy")
    assert strip.shape == (6, 28, 28, 1)
    assert _size(out) == (2 * (6 * 30 + 2), 2 * 32)
    run = loaded["vae"]
    ends = reconstruct_all(run.inference, run.params, run.test["image"][[7, 11]])
    np.testing.assert_allclose(strip[[0, -1]], ends, atol=1e-5)
    assert np.abs(strip[2] - strip[0]).mean() > 1e-3  # the middle differs from the ends


def test_slerp_and_lerp_share_ends_and_differ_in_norm():
    a, b = jnp.array([3.0, 0.0, 0.0]), jnp.array([0.0, 3.0, 0.0])
    lerp, slerp = interpolate_latents(a, b, 5), interpolate_latents(a, b, 5, slerp=True)
    for path in (lerp, slerp):
        np.testing.assert_allclose(path[0], a, atol=1e-6)
        np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(slerp, axis=1), 3.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(lerp[2]), 3 / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(lerp[1], 0.75 * a + 0.25 * b, atol=1e-6)
    # Parallel codes: slerp falls back to the straight line instead of dividing by sin(0).
    np.testing.assert_allclose(interpolate_latents(a, 2 * a, 3, slerp=True),
                               interpolate_latents(a, 2 * a, 3), atol=1e-6)


def test_traverse_moves_one_dimension_per_row(runs, tmp_path, capsys):
    centre = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    grid = np.asarray(traverse_latents(centre, [2, 0], 3.0, 5))
    assert grid.shape == (2, 5, 4)
    np.testing.assert_allclose(grid[0, :, 2], 2.0 + jnp.linspace(-3, 3, 5))
    np.testing.assert_allclose(grid[1, :, 0], 0.5 + jnp.linspace(-3, 3, 5))
    np.testing.assert_array_equal(grid[0][:, [0, 1, 3]], np.tile(centre[[0, 1, 3]], (5, 1)))
    assert int_range("0-2,5") == (0, 1, 2, 5)
    out = tmp_path / "t.png"
    code, cap = _run(["traverse", "--workdir", str(runs["vae"]), "--dims", "0-3", "--range", "2",
                      "--steps", "7", "--from", "3", "--output", str(out)], capsys)
    assert code == 0, cap.err
    assert _size(out) == (2 * (7 * 30 + 2), 2 * (4 * 30 + 2))


def test_modes_reject_bad_input_in_one_line(runs, image_dir, tmp_path, capsys):
    (tmp_path / "bad.png").write_text("not an image")
    no_ckpt = tmp_path / "fresh"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text((runs["vae"] / "config.json").read_text())
    vae, cvae, out = str(runs["vae"]), str(runs["cvae"]), str(tmp_path / "o.png")
    cases = [
        (["sample", "--workdir", str(tmp_path / "none"), "--output", out], "config.json"),
        (["sample", "--workdir", str(no_ckpt), "--output", out], "no checkpoint"),
        (["interpolate", "--workdir", vae, "--from", "0", "--to", "256", "--output", out],
         "test index out of range"),
        (["encode", "--workdir", vae, "--input", str(tmp_path), "--output",
          str(tmp_path / "c.npz")], "cannot read image"),
        (["sample", "--workdir", vae, "--label", "1", "--output", out], "conditional model"),
        (["sample", "--workdir", cvae, "--label", "10", "--output", out], "out of range"),
        (["reconstruct", "--workdir", cvae, "--input", str(image_dir), "--output",
          str(tmp_path / "r")], "add --label"),
        (["traverse", "--workdir", vae, "--dims", "0-4", "--output", out], "out of range"),
        (["sample", "--workdir", vae, "--output", str(tmp_path / "o.jpg")], "must end in .png"),
        (["sample", "--workdir", vae, "--num", "0", "--output", out], "not positive"),
        (["reconstruct", "--workdir", vae, "--input", str(image_dir), "--output",
          str(tmp_path / "r"), "--tile", "32"], "not fully convolutional (drop --tile)"),
        (["encode", "--workdir", vae, "--input", str(image_dir), "--output",
          str(tmp_path / "c.npz"), "--image-size", "40"], "only at its training size 28x28"),
        (["decode", "--workdir", vae, "--input", str(tmp_path / "bad.png"), "--output",
          str(tmp_path / "d")], "must be an existing .npz or .npy"),
    ]
    for argv, message in cases:
        code, cap = _run(argv, capsys)
        assert code == 2, argv
        assert message in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err
        assert "Traceback" not in cap.err
