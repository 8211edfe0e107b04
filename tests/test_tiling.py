"""Tiled and native-size inference: the tiling core, a Stable Diffusion layout in tiles,
and the modes on an imported (random-weight) AutoencoderKL run.

The SD layout is diffusers' AutoencoderKL at 8 channels a level: 4 levels (stride 8),
GroupNorm and the mid-block attention as in the real one, random weights.
"""

import json
import shutil
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jvae.app.config import make_config
from jvae.app.latents import DIFFUSERS_RECORD
from jvae.app.modes.weights import SIDECAR_FILE
from jvae.app.native import NativeNet, Tiling, total_stride
from jvae.devices.budget import compiled_bytes
from jvae.inference import InferenceError, make_inference
from jvae.layers.diffusers import WEIGHTS_FILE, diffusers_layout, params_to_tensors
from jvae.layers.tiling import fit_tile, plan_axis, tiled_apply
from jvae.training.experiment import DataSpec, build

from helpers import run_cli

# Its module-scoped fixtures import a run and compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("tiling")

SD_CONFIG = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
             "latent_channels": 4, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1,
             "norm_num_groups": 4, "down_block_types": ["DownEncoderBlock2D"] * 4,
             "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 64,
             "scaling_factor": 0.18215, "shift_factor": 0.1}


# --- the tiling core ---------------------------------------------------------------------------

def _conv_stack(seed=0, layers=3, channels=3):
    """``layers`` 3x3 'SAME' convolutions with tanh: each output pixel sees a radius of
    ``layers`` input pixels, and zero padding at the border."""
    kernels = 0.4 * jax.random.normal(jax.random.key(seed), (layers, 3, 3, channels, channels))

    def fn(x):
        for k in kernels:
            x = jnp.tanh(jax.lax.conv_general_dilated(
                x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return x
    return jax.jit(fn)


@pytest.mark.parametrize("size,tile,overlap,scale,margin", [
    (100, 32, 8, 1, 2),      # regular tiles, the last aligned to the far edge
    (37, 16, 5, 1, 1),       # odd size and overlap
    (30, 16, 8, 1, 0),       # the aligned last tile overlaps two others
    (10, 16, 4, 1, 0),       # an axis shorter than one tile
    (13, 4, 2, 8, 3),        # a decoder: latent tiles to image tiles 8 times larger
    (96, 32, 8, Fraction(1, 8), 0),  # an encoder: image tiles to latent tiles
])
def test_blend_weights_sum_to_one_and_keep_the_margin(size, tile, overlap, scale, margin):
    plan = plan_axis(size, tile, overlap, scale, margin)
    assert plan.out_size == size * scale and plan.out_tile == min(tile, size) * scale
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.tile == size
    total = np.zeros(plan.out_size)
    for i, (start, w) in enumerate(zip(plan.out_starts, plan.weights)):
        assert (w >= 0).all() and (w <= 1).all()
        if i > 0:  # an inner edge on the left: zero across the margin, then rising
            assert not w[:margin].any() and w[margin] <= 0.5
        if i < len(plan.starts) - 1:  # and on the right
            assert not w[len(w) - margin:].any() and w[-1 - margin] <= 0.5
        total[start:start + plan.out_tile] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    if size == 30:
        assert len(plan.starts) == 3 and plan.starts[2] < plan.starts[0] + plan.tile


def test_tiles_equal_the_whole_image_where_the_margin_covers_the_receptive_field():
    """Three 3x3 convolutions see 3 pixels around: with margin >= 3 every output pixel comes
    from tiles that saw its whole neighbourhood (the border tiles share the image's border),
    so tiles equal the whole image everywhere, to float rounding; without a margin they do
    not."""
    fn = _conv_stack()
    x = np.random.default_rng(0).standard_normal((2, 45, 61, 3)).astype(np.float32)
    whole = np.asarray(fn(x))
    exact = tiled_apply(fn, x, 20, overlap=8, margin=3)
    assert exact.shape == whole.shape and exact.dtype == np.float32
    np.testing.assert_allclose(exact, whole, atol=1e-6)
    assert np.abs(tiled_apply(fn, x, 20, overlap=8, margin=0) - whole).max() > 1e-2
    # A batch of tile positions per call gives the same result.
    np.testing.assert_allclose(tiled_apply(fn, x, (20, 24), overlap=(8, 9), margin=3, batch=4),
                               whole, atol=1e-6)

    # With a change of scale the margin counts output pixels: 2x upsampling doubles the radius.
    def up(t):
        return jnp.repeat(jnp.repeat(fn(t), 2, axis=1), 2, axis=2)
    big = tiled_apply(up, x, 20, overlap=8, scale=2, margin=6)
    np.testing.assert_allclose(big, np.asarray(up(x)), atol=1e-6)

    def down(t):  # every 4th pixel: radius 3 input pixels, under one output pixel
        return fn(t)[:, ::4, ::4]
    x4 = x[:, :44, :60]
    small = tiled_apply(down, x4, 24, overlap=12, scale=Fraction(1, 4), margin=1)
    assert small.shape == (2, 11, 15, 3)
    np.testing.assert_allclose(small, np.asarray(down(x4)), atol=1e-6)


def test_an_image_smaller_than_a_tile_is_one_call_and_outputs_may_be_dicts():
    fn = _conv_stack(layers=1)
    calls = []

    def both(t):
        calls.append(t.shape)
        y = fn(t)
        return {"a": y, "b": 2 * y}
    x = np.random.default_rng(1).standard_normal((1, 10, 7, 3)).astype(np.float32)
    out = tiled_apply(both, x, 16, overlap=4)
    assert calls == [(1, 10, 7, 3)]
    np.testing.assert_array_equal(out["a"], np.asarray(fn(x)))
    np.testing.assert_array_equal(out["b"], 2 * np.asarray(fn(x)))
    calls.clear()
    wide = np.random.default_rng(2).standard_normal((1, 10, 40, 3)).astype(np.float32)
    tiled_apply(both, wide, 16, overlap=4, margin=1)
    assert set(calls) == {(1, 10, 16, 3)} and len(calls) == 3  # W only: starts 0, 12, 24


def test_tiling_refuses_what_it_cannot_blend():
    with pytest.raises(ValueError, match="fewer than 2 \\* margin"):
        plan_axis(64, 16, 4, 1, 3)
    with pytest.raises(ValueError, match="multiples of 8"):
        plan_axis(60, 32, 8, Fraction(1, 8))
    with pytest.raises(ValueError, match="overlap < tile"):
        plan_axis(64, 0, 0)


# --- a Stable Diffusion layout ------------------------------------------------------------------

def _sd_cfg():
    layout = diffusers_layout(SD_CONFIG)
    return layout, make_config({"net": "spec", "encoder_spec": json.dumps(layout.architecture),
                                "posterior_scale": "logvar", "likelihood": "gaussian"})


@pytest.fixture(scope="module")
def sd():
    """``(cfg, vae at 64x64, params)`` of the narrow SD layout, randomly initialised."""
    _, cfg = _sd_cfg()
    vae = build(cfg, DataSpec((64, 64, 3))).vae
    params = jax.jit(vae.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return cfg, vae, params


def test_the_sd_layout_is_fully_convolutional_and_an_mlp_is_not(sd):
    cfg, vae, _ = sd
    assert total_stride(cfg, vae, (64, 64, 3)) == 8
    mlp_cfg = make_config({"net": "mlp", "hidden": [16], "latent_dim": 4})
    mlp = build(mlp_cfg, DataSpec((8, 8, 1))).vae
    assert total_stride(mlp_cfg, mlp, (8, 8, 1)) is None


def _band_mask(size, plan, width):
    """Pixels within ``width`` of a line where a tile starts or ends inside the image."""
    lines = {s for s in plan.out_starts[1:]} | {s + plan.out_tile for s in plan.out_starts[:-1]}
    band = np.zeros(size, bool)
    for line in lines:
        band[max(line - width, 0):line + width] = True
    return band[:, None] | band[None, :]


@pytest.mark.slow
def test_tiled_sd_decode_at_512_matches_the_whole_image_without_seams(sd):
    """A 64x64x4 code decoded to 512x512 in tiles of at most 256 pixels overlapping by 64
    (three of 216 a side, starting at 0, 152 and 296) against the whole image. GroupNorm and
    the mid-block attention see one tile, not the image, so tiles differ a little everywhere:
    32 pixels from the border, measured mean |tiled - whole| 0.019 (max 0.16) on images of
    standard deviation 0.26; the tolerances are 0.03 for the mean and 0.1 for the 99th
    percentile. In bands of 4 pixels on each side of the lines where tiles start and end the
    mean error is no larger than elsewhere (measured 0.0167 against 0.0176; tolerance 1.1
    times): no seam. Tiles side by side without overlap put 6 times the error in those bands
    (0.166 against 0.026), which the same measure catches."""
    cfg, vae, params = sd
    z = np.random.default_rng(0).standard_normal((64, 64, 4)).astype(np.float32)

    def net(tile, overlap=0.25):
        return NativeNet(cfg, params, vae, (64, 64, 3), 8, tiling=Tiling(tile, overlap))
    whole = net(0).decode(z)
    tiled_net = net(256)
    tiled = tiled_net.decode(z)
    assert whole.shape == tiled.shape == (512, 512, 3) and tiled_net.tiles == [256]
    err = np.abs(tiled - whole).mean(-1)
    inner = err[32:-32, 32:-32]
    print(f"tiled vs whole: mean {inner.mean():.4f}, max {inner.max():.4f}, "
          f"image std {whole.std():.3f}")
    assert inner.mean() < 0.03 and np.percentile(inner, 99) < 0.1
    tile = fit_tile(512, 256, 64, 8)  # the tiles NativeNet runs: 3 of 216 pixels a side
    assert tile == 216
    band = _band_mask(512, plan_axis(64, tile // 8, 8, 8), 4)
    print(f"band {err[band].mean():.4f}, elsewhere {err[~band].mean():.4f}")
    assert err[band].mean() <= 1.1 * err[~band].mean()
    naive = np.abs(net(256, 0.0).decode(z) - whole).mean(-1)
    naive_band = _band_mask(512, plan_axis(64, 32, 0, 8), 4)
    print(f"without overlap: band {naive[naive_band].mean():.4f}, "
          f"elsewhere {naive[~naive_band].mean():.4f}")
    assert naive[naive_band].mean() > 3 * naive[~naive_band].mean()


@pytest.mark.slow
def test_automatic_tiling_follows_the_compiled_memory_plan(sd):
    """No --tile: an image is tiled when its whole program's planned bytes exceed the
    budget, with the largest tile whose program fits."""
    cfg, vae, params = sd
    z = np.random.default_rng(1).standard_normal((32, 32, 4)).astype(np.float32)
    probe = NativeNet(cfg, params, vae, (64, 64, 3), 8, tiling=Tiling(0))
    sizes = {}
    for side in (256, 128):
        decoder = make_inference(probe.vae((side, side, 3)), 1).decode
        sizes[side] = compiled_bytes(decoder.lower(
            params, jax.ShapeDtypeStruct((1, side // 8, side // 8, 4), jnp.float32)).compile())
    assert sizes[128] < sizes[256]
    roomy = NativeNet(cfg, params, vae, (64, 64, 3), 8, budget=sizes[256])
    whole = roomy.decode(z)
    assert roomy.tiles == [0] and not roomy.tiled
    tight = NativeNet(cfg, params, vae, (64, 64, 3), 8, budget=sizes[128])
    tiled = tight.decode(z)
    assert tight.tiles == [128] and tight.tiled
    assert np.abs(tiled - whole).mean() < 0.05
    with pytest.raises(InferenceError, match="does not fit the device's memory"):
        NativeNet(cfg, params, vae, (64, 64, 3), 8, budget=1000).decode(z)


# --- the modes on an imported run ---------------------------------------------------------------

@pytest.fixture(scope="module")
def imported(sd, tiny_mnist_dir, tmp_path_factory):
    """``{"run", "bare", "images"}``: the SD layout's weights imported with ``jvae
    import-weights`` (its data: MNIST at 64x64 RGB), the same run without its
    diffusers.json, and a folder with a 50x37 and a 64x64 image."""
    from safetensors.numpy import save_file

    from jvae.app.cli import main
    _, _, params = sd
    root = tmp_path_factory.mktemp("imported")
    src = root / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(SD_CONFIG))
    save_file(params_to_tensors(diffusers_layout(SD_CONFIG), jax.device_get(params)),
              str(src / WEIGHTS_FILE))
    run = root / "run"
    assert main(["import-weights", "--from", str(src), "--workdir", str(run), "--data-shape",
                 "64,64,3", "--data-dir", str(tiny_mnist_dir), "--image-size", "64",
                 "--channels", "3", "--batch-size", "4"]) == 0
    bare = root / "bare"
    bare.mkdir()
    shutil.copy(run / "config.json", bare / "config.json")
    shutil.copytree(run / "checkpoints", bare / "checkpoints")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 37, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(images / "sub" / "b.png")
    return {"run": run, "bare": bare, "images": images}


def _direct(sd, image, what):
    """The model built for the reflect-padded image, run on it, cropped back."""
    cfg, _, params = sd
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % 8), (0, -w % 8), (0, 0)), mode="reflect")[None]
    vae = build(cfg, DataSpec(padded.shape[1:])).vae
    post = jax.jit(vae.encode)(params, padded)
    if what == "mean":
        return np.asarray(post["loc"])[0]
    return np.asarray(jax.jit(vae.decode)(params, post["loc"])["loc"])[0, :h, :w]


def _read(path):
    with Image.open(path) as img:
        return np.asarray(img, np.float32) / 255


def test_sidecar_name_is_the_one_import_writes():
    assert DIFFUSERS_RECORD == SIDECAR_FILE


@pytest.fixture(scope="module")
def encoded(imported, tmp_path_factory):
    """``(path, result)`` of ``jvae encode`` of the image folder at the images' own sizes."""
    from jvae.app.cli import main
    out = tmp_path_factory.mktemp("encoded") / "z.npz"
    with pytest.MonkeyPatch.context() as mp:
        printed = []
        mp.setattr("builtins.print", lambda *a, **k: printed.append(a[0]))
        assert main(["encode", "--workdir", str(imported["run"]), "--input",
                     str(imported["images"]), "--output", str(out), "--tile", "0"]) == 0
    return out, json.loads(printed[-1])


def test_encode_runs_at_each_images_own_size(sd, imported, encoded):
    """A 50x37 image (not a multiple of the stride 8, not the training 64x64) is encoded at
    its own size: what the model built for the reflect-padded 56x40 image gives."""
    out, result = encoded
    assert (result["native"], result["tiled"], result["latent_shape"]) == (True, False, None)
    saved = np.load(out)
    assert saved["files"].tolist() == ["a.png", "sub/b.png"]
    assert saved["sizes"].tolist() == [[50, 37], [64, 64]]
    assert saved["mean/00000"].shape == saved["scale/00000"].shape == (7, 5, 4)
    assert saved["mean/00001"].shape == (8, 8, 4)
    a = _read(imported["images"] / "a.png")
    np.testing.assert_allclose(saved["mean/00000"], _direct(sd, a, "mean"), atol=1e-5)


def test_reconstruct_runs_at_each_images_own_size(sd, imported, tmp_path, capsys):
    """The reconstruction PNG of the 50x37 image is 50x37 beside the original: the padded
    image's reconstruction cropped back."""
    code, cap = run_cli(["reconstruct", "--workdir", str(imported["run"]), "--input",
                         str(imported["images"]), "--output", str(tmp_path), "--tile", "0"],
                        capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["native"] and not json.loads(cap.out)["tiled"]
    pair, a = _read(tmp_path / "a.png"), _read(imported["images"] / "a.png")
    assert pair.shape == (50, 74, 3) and _read(tmp_path / "sub" / "b.png").shape == (64, 128, 3)
    np.testing.assert_allclose(pair[:, :37], a, atol=1e-6)
    expected = np.clip(_direct(sd, a, "recon"), 0, 1)
    np.testing.assert_allclose(pair[:, 37:], expected, atol=1 / 255 + 1e-6)


def test_for_diffusion_latents_decode_back_to_the_plain_decode(imported, encoded, tmp_path,
                                                               capsys):
    """encode --for-diffusion writes (mean - shift) * scale with the factors recorded;
    decode undoes it, so its PNGs are those of decoding the plain means, each cropped back
    to its image's size."""
    run, images = str(imported["run"]), str(imported["images"])
    code, cap = run_cli(["encode", "--workdir", run, "--input", images, "--output",
                         str(tmp_path / "diff.npz"), "--tile", "0", "--for-diffusion"], capsys)
    assert code == 0, cap.err
    plain, diff = np.load(encoded[0]), np.load(tmp_path / "diff.npz")
    assert bool(diff["for_diffusion"]) and "mean/00000" not in diff.files
    assert float(diff["scaling_factor"]) == 0.18215 and float(diff["shift_factor"]) == 0.1
    np.testing.assert_allclose(diff["latent/00001"], (plain["mean/00001"] - 0.1) * 0.18215,
                               rtol=1e-6)
    outs = {}
    for name, source in (("plain", encoded[0]), ("diff", tmp_path / "diff.npz")):
        code, cap = run_cli(["decode", "--workdir", run, "--input", str(source),
                             "--output", str(tmp_path / name), "--tile", "0"], capsys)
        assert code == 0, cap.err
        assert json.loads(cap.out)["for_diffusion"] == (name == "diff")
        outs[name] = [_read(tmp_path / name / f) for f in ("a.png", "sub/b.png")]
    assert outs["plain"][0].shape == (50, 37, 3) and outs["plain"][1].shape == (64, 64, 3)
    for p, d in zip(outs["plain"], outs["diff"]):
        assert np.abs(p - d).max() <= 1 / 255 + 1e-6


def test_bare_diffusion_latents_decode_in_tiles(imported, tmp_path, capsys):
    """Resized to one size (--image-size) the codes stack into an .npy; decode
    --for-diffusion takes its bare latents, in tiles of 32 pixels when asked."""
    run, images = str(imported["run"]), str(imported["images"])
    code, cap = run_cli(["encode", "--workdir", run, "--input", images, "--output",
                         str(tmp_path / "d.npy"), "--image-size", "64", "--for-diffusion"], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["latent_shape"] == [8, 8, 4]
    assert np.load(tmp_path / "d.npy").shape == (2, 8, 8, 4)
    code, cap = run_cli(["decode", "--workdir", run, "--input", str(tmp_path / "d.npy"),
                         "--output", str(tmp_path / "d"), "--for-diffusion", "--tile", "32"],
                        capsys)
    assert code == 0, cap.err
    result = json.loads(cap.out)
    assert (result["count"], result["tiled"], result["tile"]) == (2, True, 32)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["00000.png", "00001.png"]
    assert _read(tmp_path / "d" / "00001.png").shape == (64, 64, 3)


def test_bfloat16_reconstructs_files_without_the_runs_data(sd, imported, tmp_path, capsys):
    """--dtype bfloat16 runs the nets in bfloat16 (close to float32, not equal), and a mode
    that reads files builds an imported run from diffusers.json: a missing data folder is
    never read."""
    argv = ["reconstruct", "--workdir", str(imported["run"]), "--input",
            str(imported["images"]), "--tile", "0", "--data-dir", str(tmp_path / "no-data")]
    pairs = {}
    for dtype in ("float32", "bfloat16"):
        code, cap = run_cli([*argv, "--output", str(tmp_path / dtype), "--dtype", dtype], capsys)
        assert code == 0, cap.err
        pairs[dtype] = _read(tmp_path / dtype / "a.png")[:, 37:]
    err = np.abs(pairs["bfloat16"] - pairs["float32"])
    assert 0 < err.max() < 0.1, err.max()


def test_sample_and_traverse_at_other_sizes(sd, imported, tmp_path, capsys):
    """sample --image-size 48x40 draws 6x5 codes and decodes them at 48x40 (--npy: the images
    are the decodes of the saved codes); traverse --from a 50x37 file moves a dimension of
    its own 7x5 code and decodes at 50x37."""
    cfg, _, params = sd
    run = str(imported["run"])
    code, cap = run_cli(["sample", "--workdir", run, "--num", "2", "--image-size", "48x40",
                         "--output", str(tmp_path / "s.png"), "--npy"], capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["native"]
    images, z = np.load(tmp_path / "s.npy"), np.load(tmp_path / "s_z.npy")
    assert images.shape == (2, 48, 40, 3) and z.shape == (2, 6, 5, 4)
    vae = build(cfg, DataSpec((48, 40, 3))).vae
    np.testing.assert_allclose(images, np.asarray(jax.jit(vae.decode)(params, z)["loc"]),
                               atol=1e-5)
    code, cap = run_cli(["traverse", "--workdir", run, "--from", str(imported["images"] / "a.png"),
                         "--dims", "0,139", "--steps", "3", "--output", str(tmp_path / "t.png")],
                        capsys)
    assert code == 0, cap.err
    assert json.loads(cap.out)["native"]
    # Two rows of three 50x37 images with 2-pixel gaps, enlarged twice.
    assert _read(tmp_path / "t.png").shape[:2] == (2 * (2 * 52 + 2), 2 * (3 * 39 + 2))


def test_refusals_are_one_line(imported, tmp_path, capsys):
    """A run without diffusers.json refuses --for-diffusion naming the file and the fix;
    images of several sizes cannot stack into an .npy; a tile must be a multiple of the
    stride."""
    run, bare, images = str(imported["run"]), str(imported["bare"]), str(imported["images"])
    np.savez(tmp_path / "evil.npz", mean=np.zeros((1, 8, 8, 4), np.float32),
             files=np.array(["../../evil.png"]))
    cases = [
        (["decode", "--workdir", run, "--input", str(tmp_path / "evil.npz"), "--output",
          str(tmp_path / "out")], "names an output outside --output"),
        (["encode", "--workdir", bare, "--input", images, "--output", str(tmp_path / "x.npz"),
          "--for-diffusion"], "diffusers.json"),
        (["decode", "--workdir", bare, "--input", str(tmp_path / "x.npy"), "--output",
          str(tmp_path / "x"), "--for-diffusion"], "jvae import-weights"),
        (["encode", "--workdir", run, "--input", images, "--output", str(tmp_path / "x.npy")],
         "cannot stack"),
        (["reconstruct", "--workdir", run, "--input", images, "--output", str(tmp_path / "x"),
          "--tile", "12"], "multiple of the net's total stride 8"),
    ]
    for argv, message in cases:
        code, cap = run_cli(argv, capsys)
        assert code == 2, argv
        assert message in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err
    assert not (tmp_path.parent / "evil.png").exists() and not (tmp_path / "out").exists()


# --- TAESD: a bounded receptive field, so tiles join exactly -------------------------------------

@pytest.fixture(scope="module")
def taesd_net():
    """TAESD's layout (diffusers' AutoencoderTiny block counts) at 16 channels a level, random
    weights: the same receptive field as the real one (145 image pixels for the encoder,
    19.9 latent pixels for the decoder) at a fraction of the cost."""
    from jvae.layers.diffusers import TINY_CONFIG
    from jvae.layers.spec_shapes import receptive_radius

    layout = diffusers_layout({**TINY_CONFIG, "encoder_block_out_channels": [16] * 4,
                               "decoder_block_out_channels": [16] * 4})
    arch = layout.architecture
    assert (receptive_radius(arch["encoder"]), receptive_radius(arch["decoder"])) == (145, 19.875)
    cfg = make_config({"net": "spec", "encoder_spec": json.dumps(arch), "model": "ae",
                       "likelihood": "gaussian"})
    vae = build(cfg, DataSpec((64, 64, 3))).vae
    # Random weights of the init's shapes, drawn directly (no compiled init): kernels
    # scaled by 1 / sqrt(fan-in), as LeCun's normal.
    shapes = jax.eval_shape(vae.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (rng.standard_normal(a.shape) / np.sqrt(
        np.prod(a.shape[:-1]) if a.ndim > 1 else 10.0)).astype(np.float32), shapes)
    return cfg, vae, params


def test_taesd_tiles_equal_the_whole_image_once_the_overlap_covers_its_reach(taesd_net):
    """384x384 images in 352-pixel tiles (two a side). With a 320-pixel overlap the margin is
    the receptive radius (decoder 159 image pixels, encoder 19 latent pixels) and tiles equal
    the whole image to float rounding everywhere; with the default quarter overlap the
    margin is capped at half the overlap and they do not."""
    cfg, vae, params = taesd_net
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(384, 384, 3)).astype(np.float32)
    z = rng.standard_normal((48, 48, 4)).astype(np.float32)

    def net(tile, overlap):
        return NativeNet(cfg, params, vae, (64, 64, 3), 8, tiling=Tiling(tile, overlap),
                         budget=1 << 40)

    whole = net(0, 0.25)
    exact = net(352, 40 / 44)
    np.testing.assert_allclose(exact.decode(z), whole.decode(z), atol=2e-5)
    np.testing.assert_allclose(exact.encode(image)["mean"], whole.encode(image)["mean"],
                               atol=2e-5)
    assert exact.tiles == [352, 352]
    assert np.abs(net(352, 0.25).decode(z) - whole.decode(z)).max() > 1e-3
